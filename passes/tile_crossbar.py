"""The `tile-crossbar` pass: split every quantized matrix product into crossbar tiles."""

from __future__ import annotations

import math
from dataclasses import dataclass

from imcc.errors import MappingError
from imcc.ir.graph import Graph
from imcc.ir.mapping import ENCODINGS, Tiling, WeightMapping
from imcc.passes.base import Pass, option
from imcc.passes.context import Context
from imcc.passes.layers import (
    MatrixShape,
    crossbar_layers,
    layer_label,
    matrix_shape,
    replace_nodes,
    require_quantized,
    require_target,
    with_attributes,
)
from imcc.plan import columns_per_slice
from imcc.target import Target


def default_slices(weight_bits: int, bits_per_cell: int) -> tuple[int, ...]:
    """Return the weight slices that fill whole cells, MSB first (8 bits, 2-bit cells: 2,2,2,2)."""
    slices = [bits_per_cell] * (weight_bits // bits_per_cell)
    if weight_bits % bits_per_cell:
        slices.append(weight_bits % bits_per_cell)
    return tuple(slices)


def magnitude_bits(encoding: str, weight_bits: int) -> int:
    """Return the bits a weight's stored value needs: offset stores w + 2^(b-1) (b bits);
    differential |w| <= 2^(b-1) - 1 and center-offset |w - c| within the same range (b-1)."""
    return weight_bits if encoding == "offset" else weight_bits - 1


def tile_layer(
    mapping: WeightMapping, shape: MatrixShape, target: Target, rows: int, columns: int, where: str
) -> Tiling:
    """Return the crossbar tiles of one layer's product under a weight mapping; raise
    MappingError when the slices do not fit the target's cells or cover the weights."""
    crossbar = target.crossbar
    needed = magnitude_bits(mapping.encoding, target.weight_bits)
    if sum(mapping.slices) < needed or max(mapping.slices) > crossbar.bits_per_cell:
        raise MappingError(
            f"{where}: weight slices {list(mapping.slices)} must cover {needed} bits with at "
            f"most {crossbar.bits_per_cell} bits per cell",
            hint=f"e.g. slices {list(default_slices(needed, crossbar.bits_per_cell))}",
        )
    per_weight = len(mapping.slices) * columns_per_slice(mapping, crossbar.signed_columns)
    return Tiling(
        rows,
        columns,
        math.ceil(shape.rows / rows),
        math.ceil(shape.columns * per_weight / columns),
        shape.groups,
    )


@dataclass(frozen=True, slots=True)
class TileCrossbar(Pass):
    """Split every quantized conv / linear into crossbar tiles, weight slices and devices.

    A layer computes, per output position and channel group, a K x N product (K = C_in/group x
    kernel size, N = C_out/group). Each weight is cut into `slices` (MSB first; default: whole
    cells of the target's bits per cell, e.g. 8 bits on 2-bit cells -> [2, 2, 2, 2]) and each
    slice takes `devices` devices (the target's devices per slice: 2 for a differential / 2T2R
    pair). One weight column then needs `len(slices)` crossbar columns (twice that for a pair
    whose columns are not subtracted in analog), so a group needs
    `row_tiles = ceil(K / rows)` x `column_tiles = ceil(N * columns_per_weight / columns)`
    crossbars. Sets `weights = #weights<...>` (unless an earlier pass chose them) and
    `tiling = #tiling<...>`. Layers must be quantized (i32 operands) first. `center-offset` is
    not an encoding this pass chooses (it needs centers from calibration data): tile, then run
    `encode-weights{scheme=center-offset}`; a layer that already carries it keeps it.

    ```
    // after: tile-crossbar on isaac (128 x 128, 2-bit cells), K = 72, N = 16
    %y.acc = conv(...) {..., weights = #weights<encoding = "offset", slices = [2, 2, 2, 2],
             devices = 1>, tiling = #tiling<rows = 128, columns = 128, row_tiles = 1,
             column_tiles = 1, groups = 1>} : i32[1,16,8,8]
    ```
    """

    name = "tile-crossbar"
    rows: int = option(0, "crossbar rows used (0: the target's)", minimum=0)
    columns: int = option(0, "crossbar columns used (0: the target's)", minimum=0)
    slices: tuple[int, ...] = option(
        (), "weight slice widths, MSB first (empty: whole cells)", minimum=1, maximum=16
    )
    encoding: str = option(
        "",
        "offset or differential (empty: from devices); center-offset comes from encode-weights",
        choices=("", *ENCODINGS),
    )

    def run(self, graph: Graph, ctx: Context) -> Graph:
        target = require_target(ctx, self.name)
        crossbar = target.crossbar
        rows, columns = self.rows or crossbar.rows, self.columns or crossbar.columns
        if not (0 < rows <= crossbar.rows and 0 < columns <= crossbar.columns):
            raise MappingError(
                f"tile-crossbar: {rows}x{columns} does not fit the target's "
                f"{crossbar.rows}x{crossbar.columns} crossbars"
            )
        devices = crossbar.devices_per_slice
        encoding = self.encoding or ("offset" if devices == 1 else "differential")
        if encoding == "center-offset":  # the datapath cannot run it without centers
            raise MappingError(
                "tile-crossbar cannot choose center-offset weights: their "
                "per-filter centers come from calibration data",
                hint="tile with offset or differential, then run "
                "encode-weights{scheme=center-offset}",
            )
        if encoding != "offset" and devices != 2:
            raise MappingError(
                f"{encoding} encoding needs two devices per slice; the target's crossbar has one",
                hint="use encoding=offset",
            )
        changed = {}
        for index, node in enumerate(crossbar_layers(graph)):
            where = layer_label(node, index)
            require_quantized(node, graph, where, self.name)
            mapping = node.attributes.get("weights")
            if not isinstance(mapping, WeightMapping):
                slices = self.slices or default_slices(target.weight_bits, crossbar.bits_per_cell)
                mapping = WeightMapping(encoding, tuple(slices), devices)
            shape = matrix_shape(node, graph)
            tiling = tile_layer(mapping, shape, target, rows, columns, where)
            changed[node.outputs[0]] = with_attributes(node, weights=mapping, tiling=tiling)
            ctx.decisions.record(
                self.name,
                where,
                K=shape.rows,
                N=shape.columns,
                groups=shape.groups,
                encoding=mapping.encoding,
                slices=list(mapping.slices),
                crossbars=tiling.crossbars,
            )
        return replace_nodes(graph, changed)

    def search_space(self, graph: Graph, ctx: Context) -> dict[str, list]:
        target = require_target(ctx, self.name)
        widths = range(1, target.crossbar.bits_per_cell + 1)
        return {"slices": [default_slices(target.weight_bits, w) for w in widths]}
