"""Does a mapped program fit its target? What the mapping passes guarantee, checked on a program.

The verifier (ir/mapping.py) makes sure a program's mapping is consistent in itself; whether it
is one the *target* can run is this module's question, because a program is mapped for one
target (its `target` graph attribute) and may be priced or simulated on it after being edited
by hand or by a tool. `check_program_target(graph, target)` holds a program to what the passes
would have chosen on that target, layer by layer:

- weights (tile-crossbar, encode-weights, slice-weights): an encoding the target can store and
  correct (`supported_schemes`), the target's devices per slice, slices of at most its bits
  per cell that cover its weight precision, weight codes within that precision (center-offset:
  every offset |w - c|);
- tiling (tile-crossbar): at most the target's crossbar rows and columns, and the column tiles
  the weight slices and devices need on that crossbar (`tile_layer`);
- input (assign-input-precision): a precision and slice widths the target's drivers stream,
  speculation only with a speculation unit;
- converter (select-adc): one the target offers, of its kind, at a legal precision and sample
  count; column_share (share-columns): a factor offered with that converter;
- ps_scale / ps_offset (calibrate-mtj): one entry per physical column of the datapath;
- full_scale (calibrate-adc): only on a converter whose references follow the `full-scale`
  range rule;

A violation is a MappingError naming the layer and the rule, with a hint to compile again.
"""

from __future__ import annotations

import numpy as np

from imcc.errors import MappingError
from imcc.ir.graph import Graph, Node
from imcc.ir.mapping import (
    ConverterChoice,
    InputStreaming,
    Tiling,
    WeightMapping,
)
from imcc.passes.encode_weights import supported_schemes
from imcc.passes.layers import MatrixShape, crossbar_layers, layer_label, matrix_shape
from imcc.passes.tile_crossbar import magnitude_bits, tile_layer
from imcc.plan import DATAPATH, plan_layer
from imcc.target import Target


def check_program_target(graph: Graph, target: Target, hint: str | None = None) -> None:
    """Raise MappingError naming the first crossbar layer whose mapping the target cannot run;
    `hint` says what to do (default: compile the model again for the target)."""
    for index, node in enumerate(crossbar_layers(graph)):
        where = layer_label(node, index)
        try:
            _check_layer(node, graph, target, where)
        except MappingError as exc:
            hint = hint or (
                f"compile the model again for target {target.name} (imcc compile MODEL "
                f"--target {target.name})"
            )
            raise MappingError(
                str(exc), hint=f"{exc.hint}; or {hint}" if exc.hint else hint
            ) from None


def _refuse(where: str, what: str, legal: object = None) -> MappingError:
    return MappingError(
        f"{where}: {what}", hint=None if legal is None else f"legal values: {legal}"
    )


def _spell(values: tuple[int, ...]) -> str:
    return ", ".join(map(str, values))


def _check_layer(node: Node, graph: Graph, target: Target, where: str) -> None:
    a = node.attributes
    shape = matrix_shape(node, graph)
    mapping = a.get("weights")
    if isinstance(mapping, WeightMapping):
        _check_weights(node, graph, target, mapping, where)
    tiling = a.get("tiling")
    if isinstance(tiling, Tiling) and isinstance(mapping, WeightMapping):
        _check_tiling(target, mapping, tiling, shape, where)
    streaming = a.get("input")
    if isinstance(streaming, InputStreaming):
        _check_input(target, streaming, where)
    choice = a.get("converter")
    if isinstance(choice, ConverterChoice):
        _check_converter(target, choice, a.get("column_share"), where)
        rule = target.converter(choice.name).range_rule
        if a.get("full_scale") is not None and rule != "full-scale":
            raise MappingError(
                f"{where}: full_scale is set, but converter {choice.name} of target "
                f"{target.name} has unit steps (range rule {rule}): nothing to calibrate",
                hint="drop full_scale, or select a converter with the full-scale range rule",
            )
    scale = a.get("ps_scale")
    if scale is not None and all(name in a for name in DATAPATH):
        # the datapath's converted columns: weight slices x devices x filters (the plan's)
        plan = plan_layer(node, target, shape, lossless=True)
        filters = plan.filters * plan.groups
        columns = plan.weight_slices * plan.devices * filters
        if len(scale) != columns:
            raise _refuse(
                where,
                f"ps_scale and ps_offset have {len(scale)} entries, but on "
                f"target {target.name} the layer has {columns} physical columns "
                f"({plan.weight_slices} slices x {plan.devices} x {filters} filters)",
            )


def _check_weights(
    node: Node, graph: Graph, target: Target, mapping: WeightMapping, where: str
) -> None:
    schemes = supported_schemes(target)
    if mapping.encoding not in schemes:
        raise _refuse(
            where,
            f"target {target.name} cannot store {mapping.encoding} weights",
            ", ".join(schemes),
        )
    devices = target.crossbar.devices_per_slice
    if mapping.devices != devices:
        raise _refuse(
            where,
            f"weights on {mapping.devices} device(s) per slice, but target "
            f"{target.name}'s crossbar has {devices}",
            devices,
        )
    data = graph.constant_data(node.inputs[1])
    if data is None:  # no weight file loaded (imcc opt): nothing to range-check
        return
    bits = target.weight_bits
    w = np.asarray(data, np.int64)
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if w.size and (int(w.min()) < low or int(w.max()) > high):
        raise _refuse(
            where,
            f"weight codes {int(w.min())}..{int(w.max())} exceed target "
            f"{target.name}'s {bits}-bit weights ({low}..{high})",
        )
    centers = node.attributes.get("centers")
    if mapping.encoding == "center-offset" and centers is not None and w.size:
        axis = 0 if node.op == "conv" else 1
        shape = [1] * w.ndim
        shape[axis] = -1
        offsets = np.abs(w - np.asarray(centers, np.int64).reshape(shape))
        # encode-weights clips each center so that every |w - c| fits the magnitude bits
        limit = 2 ** magnitude_bits(mapping.encoding, bits) - 1
        if int(offsets.max()) > limit:
            raise _refuse(
                where,
                f"an offset |w - c| of {int(offsets.max())} exceeds the "
                f"{limit} a {bits}-bit differential weight can store: the centers do "
                "not belong to these weights",
            )


def _check_tiling(
    target: Target, mapping: WeightMapping, tiling: Tiling, shape: MatrixShape, where: str
) -> None:
    crossbar = target.crossbar
    if tiling.rows > crossbar.rows or tiling.columns > crossbar.columns:
        raise _refuse(
            where,
            f"tiles of {tiling.rows}x{tiling.columns} are larger than target "
            f"{target.name}'s {crossbar.rows}x{crossbar.columns} crossbars",
        )
    # the slices must fit the target's cells and cover its weights (tile_layer's rule), and
    # the column tiles follow from them on this target (a subtracting pair takes one column)
    expected = tile_layer(mapping, shape, target, tiling.rows, tiling.columns, where)
    if tiling.column_tiles != expected.column_tiles:
        raise _refuse(
            where,
            f"tiling column_tiles = {tiling.column_tiles}, but on target "
            f"{target.name} the {shape.columns} columns x {len(mapping.slices)} "
            f"weight slices take {expected.column_tiles}",
        )


def _check_input(target: Target, streaming: InputStreaming, where: str) -> None:
    driver = target.input_driver
    if streaming.bits not in driver.input_bits:
        raise _refuse(
            where,
            f"input precision {streaming.bits} is not offered by target {target.name}",
            _spell(driver.input_bits),
        )
    for width in streaming.slices:
        if width not in driver.bits_per_cycle:
            raise _refuse(
                where,
                f"input slice width {width} is not one target {target.name}'s drivers stream",
                _spell(driver.bits_per_cycle),
            )
    if streaming.speculate and target.speculation is None:
        raise _refuse(
            where,
            f"input speculation needs a speculation unit, which target {target.name} does not have",
        )


def _check_converter(
    target: Target, choice: ConverterChoice, share: int | None, where: str
) -> None:
    try:
        spec = target.converter(choice.name)
    except KeyError:
        raise _refuse(
            where,
            f"target {target.name} has no converter '{choice.name}'",
            ", ".join(c.name for c in target.converters),
        ) from None
    if choice.kind != spec.kind.value:
        raise _refuse(
            where,
            f"converter {spec.name} of target {target.name} is a "
            f"{spec.kind.value}, not a {choice.kind}",
            spec.kind.value,
        )
    if choice.bits not in spec.bits:
        raise _refuse(
            where,
            f"{spec.name} precision {choice.bits} is not offered by target {target.name}",
            _spell(spec.bits),
        )
    if choice.samples not in spec.samples:
        raise _refuse(
            where,
            f"{spec.name} sample count {choice.samples} is not offered by target {target.name}",
            _spell(spec.samples),
        )
    legal = target.column_sharing_for(spec)
    if share is not None and share not in legal:
        raise _refuse(
            where,
            f"column sharing {share} is not offered with converter "
            f"{spec.name} on target {target.name}",
            _spell(legal),
        )
