"""Element-wise ops: activations and broadcasting arithmetic."""

from __future__ import annotations

import math

from imcc.ir.attributes import AttrKind, AttrSpec
from imcc.ir.ops import ShapeError, define_op
from imcc.ir.types import TensorType


def _same(types, attrs, consts):
    return [types[0]]


for _name, _summary in [
    ("relu", "max(x, 0)"),
    ("sigmoid", "1 / (1 + exp(-x))"),
    ("tanh", "hyperbolic tangent"),
    ("exp", "e to the power x"),
    ("neg", "-x"),
    ("abs", "|x|"),
    ("sqrt", "square root"),
]:
    define_op(_name, _summary, ["x"])(_same)


@define_op(
    "leaky_relu",
    "x if x >= 0 else alpha * x",
    ["x"],
    [AttrSpec("alpha", AttrKind.FLOAT, 0.01)],
)
def _leaky_relu(types, attrs, consts):
    if not math.isfinite(attrs["alpha"]):  # an infinite slope makes inf and nan (inf * 0)
        raise ShapeError(f"leaky_relu alpha must be finite, got {attrs['alpha']}")
    return [types[0]]


define_op(
    "clip",
    "min(max(x, min), max)",
    ["x"],
    [AttrSpec("min", AttrKind.FLOAT, -math.inf), AttrSpec("max", AttrKind.FLOAT, math.inf)],
)(_same)


def broadcast_shapes(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """Return the numpy/ONNX multidirectional broadcast of two shapes, or raise ShapeError."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and 1 not in (x, y):
            raise ShapeError(f"shapes {list(a)} and {list(b)} do not broadcast")
        out.append(y if x == 1 else x)
    return tuple(reversed(out))


def _broadcast(types, attrs, consts):
    a, b = types
    if a.dtype != b.dtype:
        raise ShapeError(f"operand element types differ: {a.dtype.value} and {b.dtype.value}")
    return [TensorType(broadcast_shapes(a.shape, b.shape), a.dtype)]


for _name, _summary in [
    ("add", "a + b with broadcasting"),
    ("sub", "a - b with broadcasting"),
    ("mul", "a * b with broadcasting"),
    ("div", "a / b with broadcasting (integer division truncates)"),
]:
    define_op(_name, _summary, ["a", "b"])(_broadcast)
