"""Data-movement ops: reshape, transpose, concat, pad, cast."""

from __future__ import annotations

import math

from imcc.ir.attributes import AttrKind, AttrSpec
from imcc.ir.ops import ShapeError, define_op
from imcc.ir.types import DType, TensorType


@define_op(
    "reshape",
    "same elements in row-major order under a new static shape",
    ["x"],
    [AttrSpec("shape", AttrKind.INTS, required=True)],
)
def _reshape(types, attrs, consts):
    x, shape = types[0], attrs["shape"]
    if any(d < 0 for d in shape) or math.prod(shape) != x.size:
        raise ShapeError(f"cannot reshape {x} ({x.size} elements) to {list(shape)}")
    return [x.with_shape(shape)]


@define_op(
    "transpose",
    "permute axes: result axis i is operand axis perm[i]",
    ["x"],
    [AttrSpec("perm", AttrKind.INTS, required=True)],
)
def _transpose(types, attrs, consts):
    x, perm = types[0], attrs["perm"]
    if sorted(perm) != list(range(x.rank)):
        raise ShapeError(f"perm {list(perm)} is not a permutation of the {x.rank} axes of {x}")
    return [x.with_shape(tuple(x.shape[p] for p in perm))]


@define_op(
    "concat",
    "join operands along one axis",
    ["xs*"],
    [AttrSpec("axis", AttrKind.INT, required=True)],
)
def _concat(types, attrs, consts):
    if not types:
        raise ShapeError("concat needs at least one operand")
    first = types[0]
    axis = attrs["axis"]
    if not 0 <= axis < first.rank:
        raise ShapeError(f"concat axis {axis} must be in [0, {first.rank}) (normalised)")
    for t in types[1:]:
        if (
            t.rank != first.rank
            or t.dtype != first.dtype
            or any(
                a != b
                for i, (a, b) in enumerate(zip(t.shape, first.shape, strict=True))
                if i != axis
            )
        ):
            raise ShapeError(f"concat operands {first} and {t} differ off axis {axis}")
    shape = list(first.shape)
    shape[axis] = sum(t.shape[axis] for t in types)
    return [first.with_shape(tuple(shape))]


PAD_MODES = ("constant", "reflect", "edge")


@define_op(
    "pad",
    "pad every axis: pads holds the begins of every axis, then the ends",
    ["x"],
    [
        AttrSpec("pads", AttrKind.INTS, required=True),
        AttrSpec("mode", AttrKind.STR, "constant", doc="constant, reflect or edge"),
        AttrSpec("value", AttrKind.FLOAT, 0.0, doc="fill value in constant mode"),
    ],
)
def _pad(types, attrs, consts):
    x, pads = types[0], attrs["pads"]
    if len(pads) != 2 * x.rank:
        raise ShapeError(f"pad of {x} needs {2 * x.rank} pads, got {len(pads)}")
    if attrs["mode"] not in PAD_MODES:
        raise ShapeError(f"pad mode must be one of {', '.join(PAD_MODES)}, got {attrs['mode']!r}")
    shape = tuple(d + pads[i] + pads[x.rank + i] for i, d in enumerate(x.shape))
    if any(d < 0 for d in shape):
        raise ShapeError(f"pads {list(pads)} remove more than {x} holds")
    return [x.with_shape(shape)]


@define_op(
    "cast",
    "convert elements to another type (float to int truncates toward zero)",
    ["x"],
    [AttrSpec("to", AttrKind.DTYPE, required=True)],
)
def _cast(types, attrs, consts):
    to: DType = attrs["to"]
    return [TensorType(types[0].shape, to)]


@define_op(
    "slice",
    "x[starts[0]:ends[0]:steps[0], ...] on every axis (normalised: 0 <= start <= end, step >= 1)",
    ["x"],
    [
        AttrSpec("starts", AttrKind.INTS, required=True),
        AttrSpec("ends", AttrKind.INTS, required=True),
        AttrSpec("steps", AttrKind.INTS, required=True),
    ],
)
def _slice(types, attrs, consts):
    x = types[0]
    starts, ends, steps = attrs["starts"], attrs["ends"], attrs["steps"]
    if not len(starts) == len(ends) == len(steps) == x.rank:
        raise ShapeError(f"slice of {x} needs {x.rank} starts, ends and steps")
    shape = []
    for size, start, end, step in zip(x.shape, starts, ends, steps, strict=True):
        if not (0 <= start <= end <= size and step >= 1):
            raise ShapeError(f"slice {start}:{end}:{step} is not normalised for an axis of {size}")
        shape.append(-(-(end - start) // step))
    return [x.with_shape(tuple(shape))]
