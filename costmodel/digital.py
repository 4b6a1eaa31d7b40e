"""Cost of the layers that do not run on crossbars: digital units and data movement.

- Digital ops (activations, element-wise arithmetic, quantize, dequantize, batch_norm, lrn,
  softmax, cast): one operation of `target.digital` per output element. Pooling: one per window
  element (output elements x prod(kernel)); global pooling: one per input element. A `matmul`
  of two activations (it cannot live on a crossbar): one operation per MAC, and its MACs count.
- Data movement (reshape, transpose, concat, pad): no arithmetic, only buffer traffic, the result
  read and written once at the first tile-level buffer's energy per byte.
- Latency: operations / the chip's digital units (`count` per level, over the tiles the
  mapping uses) * `digital.latency_s`; data movement: bytes at the buffer's bandwidth (0 when
  the target declares none). Both are stages of the chip's timing (costmodel/timing.py).
- Element widths for traffic: integer codes at the bits of the quantize that made them (8 when
  unknown), float tensors (dequantized, digital domain) as 16-bit fixed point (ISAAC's datapath).
"""

from __future__ import annotations

import math

from imcc.costmodel.layer import LayerCost
from imcc.costmodel.timing import LayerTiming, output_rows
from imcc.ir.graph import Node
from imcc.ir.types import TensorType
from imcc.target import Target

FLOAT_BITS = 16
"""Bits per element of a float (dequantized) tensor moved between digital units."""

DATA_MOVEMENT = frozenset({"reshape", "transpose", "concat", "pad", "slice"})
PER_OUTPUT = frozenset(
    {
        "relu",
        "sigmoid",
        "tanh",
        "exp",
        "neg",
        "abs",
        "sqrt",
        "leaky_relu",
        "clip",
        "add",
        "sub",
        "mul",
        "div",
        "quantize",
        "dequantize",
        "batch_norm",
        "lrn",
        "softmax",
        "log_softmax",
        "cast",
    }
)
WINDOWED = frozenset({"max_pool", "avg_pool"})
GLOBAL_POOLS = frozenset({"global_avg_pool", "global_max_pool"})
DIGITAL_OPS = PER_OUTPUT | WINDOWED | GLOBAL_POOLS | {"matmul"}


def _buffer(target: Target):
    """Return the buffer that holds activations: the first tile-level one, else any."""
    held = [b for b in target.buffers if b.role == "activations"]
    tile = next((b for b in held if b.level == "tile"), None)
    return tile or (held[0] if held else None)


def digital_layer(
    node: Node,
    target: Target,
    in_types: list[TensorType],
    out_type: TensorType,
    units: int = 1,
) -> LayerCost:
    """Return the cost of a digital op: one unit operation per output (or window) element."""
    macs = 0
    if node.op in WINDOWED:
        operations = out_type.size * math.prod(node.attributes["kernel"])
    elif node.op in GLOBAL_POOLS:
        operations = in_types[0].size
    elif node.op == "matmul":
        inner = in_types[0].shape[-1]
        macs = operations = out_type.size * inner
    else:
        operations = out_type.size
    unit = target.digital
    energy = {"digital": operations * unit.energy_j}
    latency = operations / max(units, 1) * unit.latency_s
    if node.op in WINDOWED:
        window = float(node.attributes["kernel"][0])
    elif node.op in GLOBAL_POOLS or node.op == "matmul":
        window = math.inf  # needs its whole input
    else:
        window = 1.0
    timing = LayerTiming(other_s=latency, rows=output_rows(out_type.shape), window=window)
    return LayerCost(
        name=node.name or node.outputs[0],
        op=node.op,
        macs=macs,
        energy_j=energy["digital"],
        latency_s=latency,
        energy_breakdown_j=energy,
        timing=timing,
    )


def movement_layer(node: Node, target: Target, out_type: TensorType, bits: int) -> LayerCost:
    """Return the cost of a data-movement op: its result read and written once in a buffer."""
    buffer = _buffer(target)
    moved = 2 * out_type.size * bits / 8
    energy = {"buffers": moved * buffer.energy_per_byte_j if buffer else 0.0}
    bandwidth = buffer.bandwidth_bytes_per_s if buffer else 0.0
    latency = moved / bandwidth if bandwidth else 0.0
    rows = output_rows(out_type.shape)
    return LayerCost(
        name=node.name or node.outputs[0],
        op=node.op,
        macs=0,
        energy_j=energy["buffers"],
        latency_s=latency,
        energy_breakdown_j=energy,
        timing=LayerTiming(other_s=latency, rows=rows, window=1.0 if rows > 1 else math.inf),
    )
