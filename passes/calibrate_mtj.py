"""The `calibrate-mtj` pass: per-column normalisation of the partial sums an MTJ converts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from imcc.backend.crossbar import input_planes, weight_planes
from imcc.errors import MappingError
from imcc.ir.graph import Graph, Node
from imcc.ir.mapping import ConverterChoice, InputStreaming, Tiling, WeightMapping
from imcc.passes.base import Pass, option
from imcc.passes.calibration import LayerProducts, layer_products
from imcc.passes.context import Context
from imcc.passes.layers import (
    crossbar_layers,
    layer_label,
    replace_nodes,
    require_target,
    with_attributes,
)
from imcc.target import ConverterKind, Target

MIN_SPREAD = 0.5
"""The smallest partial-sum spread a column is normalised for: integer sums that never vary
(e.g. a weight slice that is zero throughout) would otherwise get an unbounded scale."""


@dataclass(frozen=True, slots=True)
class ColumnSums:
    """A layer's crossbar partial sums on calibration data: `sums` [C, J, P, columns] (row
    chunk, input slice, position, physical column ordered [weight slice][device][filter]),
    the significance of each input slice [J], and the layer's filters (all groups)."""

    sums: np.ndarray
    input_weight: np.ndarray
    filters: int


def mapped_layer(
    node: Node, where: str, pass_name: str
) -> tuple[InputStreaming, WeightMapping, Tiling, ConverterChoice]:
    """Return a crossbar layer's input streaming, weight mapping, tiling and converter, or
    raise MappingError naming the pass that must run first."""
    streaming, mapping = node.attributes.get("input"), node.attributes.get("weights")
    tiling, choice = node.attributes.get("tiling"), node.attributes.get("converter")
    if not isinstance(choice, ConverterChoice):
        raise MappingError(
            f"{pass_name}: {where} has no converter", hint=f"run select-adc before {pass_name}"
        )
    if not (
        isinstance(streaming, InputStreaming)
        and isinstance(mapping, WeightMapping)
        and isinstance(tiling, Tiling)
    ):
        raise MappingError(
            f"{pass_name}: {where} is not mapped onto crossbars",
            hint=f"run assign-input-precision and tile-crossbar before {pass_name}",
        )
    return streaming, mapping, tiling, choice


def mtj_layers(graph: Graph) -> list[tuple[int, Node]]:
    """Return the crossbar layers (with their index) whose converter is an MTJ."""
    out = []
    for index, node in enumerate(crossbar_layers(graph)):
        choice = node.attributes.get("converter")
        if isinstance(choice, ConverterChoice) and choice.kind == ConverterKind.MTJ.value:
            out.append((index, node))
    return out


def column_sums(node: Node, products: LayerProducts, target: Target) -> ColumnSums:
    """Return the partial sums every physical column of a layer produces on the calibration
    products, exactly as the datapath forms them (slices, encoding, row chunks)."""
    streaming, mapping, tiling, _ = mapped_layer(
        node, node.name or node.outputs[0], "calibrate-mtj"
    )
    signed = target.crossbar.signed_columns
    centers = node.attributes.get("centers")
    parts, weight = [], np.ones(len(streaming.slices))
    for group in range(products.groups):
        x, w = products.patches[group], products.filters[group]
        columns = w.shape[1]
        group_centers = None
        if centers is not None:
            group_centers = np.asarray(centers[group * columns : (group + 1) * columns], np.int64)
        stored = weight_planes(w, mapping, target.weight_bits, signed, group_centers)
        planes = stored.planes.astype(np.float32)  # [I, D, K, N]
        rows = x.shape[1]
        per_sum = min(tiling.rows, target.crossbar.active_rows, rows)
        chunks = math.ceil(rows / per_sum)
        inputs, weight = input_planes(x, streaming)  # [J, P, K]
        chunk_sums = []
        for chunk in range(chunks):
            rows_of = slice(chunk * per_sum, (chunk + 1) * per_sum)
            b = (
                planes[:, :, rows_of]
                .transpose(2, 0, 1, 3)
                .reshape(planes[:, :, rows_of].shape[2], -1)
            )  # [R, I*D*N]
            chunk_sums.append(inputs[:, :, rows_of] @ b)  # [J, P, I*D*N], exact integers
        sums = np.stack(chunk_sums)
        slices, devices = planes.shape[:2]
        parts.append(sums.reshape(*sums.shape[:3], slices * devices, columns))
    # filters of all groups side by side: [C, J, P, I*D, groups*N] -> [..., I*D*groups*N]
    stacked = np.concatenate(parts, axis=-1)
    filters = stacked.shape[-1]
    return ColumnSums(stacked.reshape(*stacked.shape[:3], -1), weight, filters)


@dataclass(frozen=True, slots=True)
class CalibrateMtj(Pass):
    """Normalise each MTJ column's partial sums from calibration data (ps_scale, ps_offset).

    The aim: a layer's typical partial sums use the MTJ's sensitive range.

    StoX-Net's converter switches with `sigmoid(s * x)` of `x = clamp(a * PS + b, -1, 1)`.
    Normalising over the read's full range leaves `x` near 0 (real sums are far smaller than
    the range), so every sample is a coin flip. This pass measures, per physical column
    (weight slice, device, filter), the mean and spread of its partial sums over the
    calibration inputs, row chunks and input slices, and sets
    `ps_scale = 1 / (sigmas * std)` and `ps_offset = -mean * ps_scale`: sums within `sigmas`
    standard deviations of the mean map into [-1, 1], the rest clamp. A spread below
    `MIN_SPREAD` counts as `MIN_SPREAD`. Layers with other converters are left alone; rerun
    after any pass that changes a layer's slices, encoding or input streaming.

    ```
    // before: converter = #converter<name = "mtj", kind = "mtj", bits = 1, samples = 4>
    // after:  ..., ps_scale = [0.021, 0.018, ...], ps_offset = [-0.1, 0.03, ...], ...
    ```
    """

    name = "calibrate-mtj"
    sigmas: float = option(
        2.0, "standard deviations of a column's sums mapped onto [-1, 1]", above=0.0
    )
    samples: int = option(16, "calibration inputs measured", minimum=1)
    positions: int = option(
        1024, "output positions kept per layer and group (subsampled)", minimum=1
    )

    def run(self, graph: Graph, ctx: Context) -> Graph:
        target = require_target(ctx, self.name)
        layers = crossbar_layers(graph)
        for index, node in enumerate(layers):
            mapped_layer(node, layer_label(node, index), self.name)
        chosen = mtj_layers(graph)
        if not chosen:
            return graph
        products = layer_products(
            graph, ctx, [node for _, node in chosen], samples=self.samples, positions=self.positions
        )
        changed = {}
        for index, node in chosen:
            measured = column_sums(node, products[node.outputs[0]], target)
            sums = measured.sums.reshape(-1, measured.sums.shape[-1]).astype(np.float64)
            mean = sums.mean(axis=0)
            spread = np.maximum(sums.std(axis=0), MIN_SPREAD)
            scale = _rounded(1.0 / (self.sigmas * spread))
            offset = _rounded(-mean * scale)
            x = sums * scale + offset
            clamped = float(np.mean(np.abs(x) > 1.0))
            changed[node.outputs[0]] = with_attributes(
                node, ps_scale=tuple(scale.tolist()), ps_offset=tuple(offset.tolist())
            )
            ctx.decisions.record(
                self.name,
                layer_label(node, index),
                columns=len(scale),
                mean_scale=float(scale.mean()),
                clamped=clamped,
            )
        return replace_nodes(graph, changed)

    def search_space(self, graph: Graph, ctx: Context) -> dict[str, list]:
        return {"sigmas": [1.0, 1.5, 2.0, 3.0]} if mtj_layers(graph) else {}


def _rounded(values: np.ndarray) -> np.ndarray:
    """Round to 6 significant digits, so that the printed IR stays short and exact."""
    return np.array([float(f"{v:.6g}") for v in values], np.float64)
