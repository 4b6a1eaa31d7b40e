"""Quantization ops: float tensors to integer codes and integer accumulators back to floats."""

from __future__ import annotations

import math

from imcc.ir.attributes import AttrKind, AttrSpec
from imcc.ir.mapping import ActivationStats
from imcc.ir.ops import ShapeError, define_op
from imcc.ir.types import DType, TensorType


@define_op(
    "quantize",
    "integer codes clamp(round_half_even(x / scale) + zero_point) in the range of bits / signed",
    ["x"],
    [
        AttrSpec("scale", AttrKind.FLOAT, required=True),
        AttrSpec("zero_point", AttrKind.INT, 0),
        AttrSpec("bits", AttrKind.INT, 8),
        AttrSpec("signed", AttrKind.BOOL, False),
        AttrSpec(
            "stats",
            AttrKind.STRUCT,
            optional=True,
            struct=ActivationStats,
            doc="calibration statistics of the codes",
        ),
    ],
)
def _quantize(types, attrs, consts):
    x = types[0]
    if not x.dtype.is_float:
        raise ShapeError(f"quantize takes a float tensor, got {x}")
    bits, signed = attrs["bits"], attrs["signed"]
    if not 1 <= bits <= 16 or not 0 < attrs["scale"] < math.inf:
        raise ShapeError("quantize needs 1 <= bits <= 16 and a finite scale > 0")
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if not low <= attrs["zero_point"] <= high:  # else every code clamps to one end
        raise ShapeError(
            f"quantize zero_point {attrs['zero_point']} is outside the "
            f"{bits}-bit {'signed' if signed else 'unsigned'} codes {low}..{high}"
        )
    stats = attrs.get("stats")
    if isinstance(stats, ActivationStats) and len(stats.bit_density) != bits:
        raise ShapeError(
            f"quantize stats: bit_density has {len(stats.bit_density)} entries, "
            f"one per bit of the {bits}-bit codes expected"
        )
    return [TensorType(x.shape, DType.I32)]


@define_op(
    "dequantize",
    "acc * scales + bias, scales and bias per channel along `axis` (the float result of a "
    "crossbar op)",
    ["acc", "scales", "bias?"],
    [AttrSpec("axis", AttrKind.INT, 1)],
)
def _dequantize(types, attrs, consts):
    acc, scales = types[0], types[1]
    axis = attrs["axis"]
    if acc.dtype is not DType.I32 or not 0 <= axis < acc.rank:
        raise ShapeError(f"dequantize takes an i32 tensor and an axis in range, got {acc}")
    channels = acc.shape[axis]
    for t in types[1:]:
        if t.shape != (channels,) or t.dtype is not DType.F32:
            raise ShapeError(f"dequantize scales and bias must be f32[{channels}], got {t}")
    del scales
    return [TensorType(acc.shape, DType.F32)]
