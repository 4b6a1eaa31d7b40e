"""The `quantize` pass: integer weights per output channel, integer inputs per tensor."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from imcc.backend.reference import code_range, collect
from imcc.errors import MappingError
from imcc.ir.graph import Graph, GraphBuilder, Node
from imcc.ir.io import require_weights
from imcc.ir.mapping import ActivationStats, InputStreaming
from imcc.passes.base import Pass, option
from imcc.passes.context import Context
from imcc.passes.layers import crossbar_layers, layer_label
from imcc.target import Target

MIN_INPUT_BITS, MAX_INPUT_BITS = 2, 16
"""The precisions the quantize pass gives codes of (a 1-bit code has no signed level)."""

MAX_LAYER_ELEMENTS = 2**31
"""The most elements a layer's padded input may hold per calibration batch (8 GiB of float32,
the ONNX import's bound): calibration materialises it, and a program beyond it comes from a
malformed dimension or padding (the import refuses such models; a textual program may not)."""

DEFAULT_SAMPLES = 4
"""Calibration samples drawn when no data is given: uniform in [0, 1), seeded from the context."""


def calibration_images(graph: Graph, ctx: Context, samples: int) -> np.ndarray:
    """Return the calibration inputs: `ctx.options["calibration"]` (an array of samples, e.g.
    from `--calib`), else `DEFAULT_SAMPLES` seeded uniform samples in [0, 1) of the input shape."""
    given = ctx.options.get("calibration")
    if given is not None:
        return np.asarray(given, np.float32)[:samples]
    value = graph.inputs[0]
    batch = value.type.shape[0] if value.type.rank else 1
    count = max(DEFAULT_SAMPLES, batch)
    shape = (count - count % batch, *value.type.shape[1:])
    return ctx.rng("quantize", "calibration").random(shape, dtype=np.float32)


def input_scale(
    values: np.ndarray, bits: int, method: str, percentile: float
) -> tuple[float, bool]:
    """Return the per-tensor scale and signedness that cover `values` with `bits`-bit codes."""
    signed = bool(values.min() < 0)
    magnitude = np.abs(values) if signed else values
    top = float(magnitude.max() if method == "minmax" else np.percentile(magnitude, percentile))
    levels = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    return (top / levels if top > 0 else 1.0), signed


def activation_stats(codes: np.ndarray, bits: int) -> ActivationStats:
    """Return the fraction of ones per bit (LSB first, two's complement) and of zero codes."""
    pattern = codes.astype(np.int64) & (2**bits - 1)
    density = tuple(round(float(np.mean((pattern >> b) & 1)), 6) for b in range(bits))
    return ActivationStats(density, round(float(np.mean(codes == 0)), 6), int(codes.shape[0]))


GRANULARITIES = ("channel", "tensor")
"""Weight scales: one per output channel, or one for the whole tensor."""


def quantize_weights(
    w: np.ndarray, axis: int, bits: int, granularity: str = "channel"
) -> tuple[np.ndarray, np.ndarray]:
    """Return symmetric integer weights (codes in +-(2^(bits-1) - 1)) and their scale per
    output channel (`axis`): each channel's own (`channel`), or the whole tensor's, repeated
    (`tensor`)."""
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    top = np.max(np.abs(w.astype(np.float64)), axis=reduce)
    if granularity == "tensor":
        top = np.full_like(top, top.max(initial=0.0))
    levels = 2 ** (bits - 1) - 1
    scales = np.where(top > 0, top / levels, 1.0)
    shape = [1] * w.ndim
    shape[axis] = -1
    codes = np.clip(np.rint(w / scales.reshape(shape)), -levels, levels)
    return codes.astype(np.int32), scales


@dataclass(frozen=True, slots=True)
class Quantize(Pass):
    """Quantize every crossbar layer: per-channel weights, per-tensor inputs from calibration.

    Rules: each conv / linear with constant float weights becomes `quantize` (its input, to
    integer codes), the same op on i32 operands (exact integer partial sums), and `dequantize`
    (per-channel scale `s_x * s_w[c]`, then the float bias), under the original result name.
    Weights are symmetric, codes in `+-(2^(b-1) - 1)`, with one scale per output channel
    (`weight_granularity=channel`) or per tensor (`tensor`: every filter on the same grid, so
    small filters use fewer levels: smaller codes, smaller partial sums). An input is unsigned
    (zero point 0) when its calibration minimum is >= 0, else signed symmetric; its scale covers
    the maximum (`method=minmax`) or a percentile of |x|. The input precision is the layer's
    `input` attribute (from assign-input-precision) or `input_bits`. The `quantize` op records
    the codes' bit densities (`stats`) for the cost model. Calibration data comes from `--calib`;
    without it, `DEFAULT_SAMPLES` seeded uniform [0, 1) inputs (state it in reports).

    ```
    // before
    %y = conv(%x, %w, %b) {...} : f32[1,8,8,8]
    // after
    %y.q = quantize(%x) {scale = 0.0039, zero_point = 0, bits = 8, signed = false, stats = ...}
    %y.acc = conv(%y.q, %w.q) {...} : i32[1,8,8,8]
    %y = dequantize(%y.acc, %w.scale, %b) {axis = 1} : f32[1,8,8,8]
    ```
    """

    name = "quantize"
    weight_bits: int = option(
        0, "weight precision (0: the target's, else 8)", minimum=0, maximum=16
    )
    input_bits: int = option(
        8, "input precision of layers without an input attribute", minimum=1, maximum=32
    )
    method: str = option(
        "minmax", "input range: minmax or percentile", choices=("minmax", "percentile")
    )
    percentile: float = option(
        99.99, "percentile of |x| that method=percentile covers", above=0.0, maximum=100.0
    )
    samples: int = option(64, "calibration samples used at most", minimum=1)
    weight_granularity: str = option(
        "channel", "one weight scale per output channel or per tensor", choices=GRANULARITIES
    )

    def run(self, graph: Graph, ctx: Context) -> Graph:
        require_weights(graph, "quantize")
        weight_bits = self.weight_bits or (
            ctx.target.weight_bits if isinstance(ctx.target, Target) else 8
        )
        layers = [n for n in crossbar_layers(graph) if graph.types[n.inputs[0]].dtype.is_float]
        if not layers:
            return graph
        for index, layer in enumerate(layers):
            _check_layer_size(graph, layer, index)
        images = calibration_images(graph, ctx, self.samples)
        values = collect(graph, images, [n.inputs[0] for n in layers])
        builder = GraphBuilder.like(graph)
        for constant in graph.constants.values():
            builder.keep_constant(constant)
        todo = {n.outputs[0]: (i, n) for i, n in enumerate(layers)}
        for node in graph.nodes:
            if node.outputs[0] in todo:
                index, layer = todo[node.outputs[0]]
                scale, signed, bits = self._rewrite(
                    builder, graph, layer, index, values[layer.inputs[0]], weight_bits
                )
                ctx.decisions.record(
                    self.name,
                    layer_label(layer, index),
                    input_bits=bits,
                    input_scale=scale,
                    signed=signed,
                    weight_bits=weight_bits,
                    weight_granularity=self.weight_granularity,
                )
            else:
                builder.keep_node(node, graph.types)
        ctx.logger.debug(
            "quantize: %d layers from %d calibration samples", len(layers), len(images)
        )
        return builder.build(graph.outputs)

    def _rewrite(
        self,
        builder: GraphBuilder,
        graph: Graph,
        node: Node,
        index: int,
        x: np.ndarray,
        weight_bits: int,
    ) -> tuple[float, bool, int]:
        """Replace one layer by quantize, the integer op and dequantize; return its input
        scale, signedness and bits."""
        streaming = node.attributes.get("input")
        bits = streaming.bits if isinstance(streaming, InputStreaming) else self.input_bits
        if not all(MIN_INPUT_BITS <= b <= MAX_INPUT_BITS for b in (bits, weight_bits)):
            raise MappingError(
                f"{layer_label(node, index)}: precisions must be "
                f"{MIN_INPUT_BITS}..{MAX_INPUT_BITS} bits, not {bits} (input) "
                f"and {weight_bits} (weights)",
                hint="a 1-bit code has no signed level; choose 2 bits or more",
            )
        if not np.isfinite(x).all():  # an overflow in the float model: no scale covers it
            raise MappingError(
                f"{layer_label(node, index)}: its input is NaN or infinite on the calibration "
                "data (the float model overflows before this layer)",
                hint="check the model's weights (`imcc run MODEL --input X` shows its outputs)",
            )
        scale, signed = input_scale(x, bits, self.method, self.percentile)
        low, high = code_range(bits, signed)
        codes = np.clip(np.rint(x.astype(np.float32) / np.float32(scale)), low, high)
        out = node.outputs[0]
        (xq,) = builder.add_node(
            "quantize",
            [node.inputs[0]],
            {
                "scale": scale,
                "zero_point": 0,
                "bits": bits,
                "signed": signed,
                "stats": activation_stats(codes, bits),
            },
            name=node.name,
            hint=f"{out}.q",
        )
        weights = graph.constant_data(node.inputs[1])
        axis = 0 if node.op == "conv" else 1
        wq, w_scales = quantize_weights(weights, axis, weight_bits, self.weight_granularity)
        wq_name = builder.add_constant(wq, f"{node.inputs[1]}.q")
        attributes = dict(node.attributes)
        if isinstance(streaming, InputStreaming):
            attributes["input"] = InputStreaming(
                bits, streaming.slices, signed, streaming.speculate
            )
        (acc,) = builder.add_node(
            node.op, [xq, wq_name], attributes, name=node.name, hint=f"{out}.acc"
        )
        scales = builder.add_constant((scale * w_scales).astype(np.float32), f"{out}.scale")
        operands = [acc, scales]
        if len(node.inputs) > 2:
            bias = graph.constant_data(node.inputs[2])
            if bias is None:
                raise MappingError(f"{layer_label(node, index)}: the bias must be a constant")
            operands.append(builder.add_constant(bias.astype(np.float32), f"{out}.bias"))
        rank = graph.types[out].rank
        builder.add_node(
            "dequantize",
            operands,
            {"axis": 1 if node.op == "conv" else rank - 1},
            name=node.name,
            outputs=[out],
        )
        return scale, signed, bits


def _check_layer_size(graph: Graph, node: Node, index: int) -> None:
    """Refuse a layer with an empty operand (no scale or range to calibrate) or a padded input
    too large to materialise, naming it, before calibration fails inside a kernel."""
    for value in (*node.inputs, *node.outputs):
        if 0 in graph.types[value].shape:
            raise MappingError(
                f"{layer_label(node, index)}: %{value} is {graph.types[value]}, "
                "a tensor with no elements; quantize needs data",
                hint="fix the dimension in the model or the program",
            )
    shape = list(graph.types[node.inputs[0]].shape)
    if node.op == "conv":
        pads = node.attributes.get("pads", ())
        spatial = len(pads) // 2
        for i in range(spatial):
            shape[2 + i] += pads[i] + pads[spatial + i]
    if math.prod(shape) > MAX_LAYER_ELEMENTS:
        raise MappingError(
            f"{layer_label(node, index)}: its padded input {shape} has "
            f"{math.prod(shape):,} elements, more than quantize handles (2^31)",
            hint="the padding or a dimension is malformed; fix it in the model",
        )
