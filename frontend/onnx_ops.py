"""Converters from ONNX nodes to IR ops: dense products, normalisation, element-wise ops.

Each converter reads the current node from a `Context` and appends IR nodes through it; the
last IR node of a converter takes the ONNX output's name. Converters normalise ONNX's many
spellings (defaults, `auto_pad`, opset-dependent attributes versus inputs, old `broadcast`
attributes) into the one explicit form each IR op has.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from imcc.frontend.onnx_context import (
    ONNX_DTYPES,
    Context,
    NodeError,
    Unsupported,
    converter,
    scalar,
)
from imcc.frontend.onnx_context import first_input as _x

# --- dense products -------------------------------------------------------------------------


def _scalar(ctx: Context, value: float, like: str) -> str:
    return ctx.constant(np.array(value, dtype=ctx.type(like).dtype.numpy), f"{ctx.node_name}.k")


def _gemm_weight(ctx: Context, b: np.ndarray, transposed: bool, alpha: float) -> str:
    """Return the `linear` weight [K,N] of a constant Gemm operand B (kept when unchanged)."""
    if not transposed and alpha == 1.0:
        return ctx.value(ctx.node.input[1])
    weight = b.T if transposed else b
    if alpha != 1.0:
        with np.errstate(over="ignore", invalid="ignore"):  # ctx.constant refuses inf / NaN
            weight = (weight * np.asarray(alpha, dtype=weight.dtype)).astype(weight.dtype)
    suffix = (".T" if transposed else "") + (".scaled" if alpha != 1.0 else "")
    return ctx.constant(weight, ctx.node.input[1] + suffix)


@converter("Gemm")
def gemm(ctx: Context) -> None:
    """Gemm: `linear` with a transposed/scaled constant weight, else transpose/matmul/mul/add."""
    attrs = ctx.attrs()
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    trans_a, trans_b = int(attrs.get("transA", 0)), int(attrs.get("transB", 0))
    a = _x(ctx)
    if trans_a:
        a = ctx.emit("transpose", [a], {"perm": (1, 0)})
    b_const = ctx.const(1)
    b = None if b_const is not None else ctx.input(1)
    b_shape = b_const.shape if b_const is not None else ctx.type(b).shape if b else None
    if b_shape is None or len(b_shape) != 2:
        raise NodeError(f"input B must be a matrix, got shape {b_shape}")
    n = b_shape[0 if trans_b else 1]
    has_c = len(ctx.node.input) > 2 and bool(ctx.node.input[2]) and beta != 0.0
    c_const = ctx.const(2) if has_c else None
    last = None if has_c else 0
    if b_const is not None:
        operands = [a, _gemm_weight(ctx, b_const, bool(trans_b), alpha)]
        if c_const is not None and c_const.size in (1, n) and c_const.shape[:-1] in ((), (1,)):
            if beta == 1.0 and c_const.shape == (n,):
                operands.append(ctx.value(ctx.node.input[2]))
            else:
                bias = np.broadcast_to(c_const.reshape(-1) * np.asarray(beta, c_const.dtype), (n,))
                operands.append(ctx.constant(bias.astype(c_const.dtype), f"{ctx.node_name}.bias"))
            last = 0
        y = ctx.emit("linear", operands, output=last)
        if last == 0:
            return
    else:
        assert b is not None
        if trans_b:
            b = ctx.emit("transpose", [b], {"perm": (1, 0)})
        y = ctx.emit("matmul", [a, b], output=None if alpha != 1.0 else last)
        if alpha != 1.0:
            y = ctx.emit("mul", [y, _scalar(ctx, alpha, y)], output=last)
    if not has_c:
        return
    if c_const is not None:
        scaled = (c_const * np.asarray(beta, c_const.dtype)).astype(c_const.dtype)
        c = ctx.constant(scaled, f"{ctx.node_name}.c") if beta != 1.0 else ctx.input(2)
    else:
        c = ctx.input(2)
        if beta != 1.0:
            c = ctx.emit("mul", [c, _scalar(ctx, beta, c)])
    ctx.emit("add", [y, c], output=0)


@converter("MatMul")
def matmul(ctx: Context) -> None:
    """MatMul: a constant 2-D right operand makes a bias-free `linear`, else `matmul`."""
    a, b = _x(ctx), ctx.input(1)
    if b is None:
        raise NodeError("input B is missing")
    b_const = ctx.const(1)
    op = "linear" if b_const is not None and b_const.ndim == 2 else "matmul"
    ctx.emit(op, [a, b], output=0)


@converter("BatchNormalization")
def batch_norm(ctx: Context) -> None:
    """BatchNormalization in inference form only (folding it is the fold-batchnorm pass)."""
    attrs = ctx.attrs()
    if attrs.get("training_mode", 0) or (ctx.opset < 7 and attrs.get("is_test", 0) == 0):
        raise Unsupported("training-mode BatchNormalization is not supported")
    if attrs.get("spatial", 1) != 1:
        raise Unsupported("BatchNormalization with spatial=0 is not supported")
    if any(ctx.has_output(i) for i in range(1, len(ctx.node.output))):
        raise Unsupported("the running-statistics outputs are not supported")
    operands = [ctx.input(i) for i in range(5)]
    if any(o is None for o in operands):
        raise NodeError("BatchNormalization needs five inputs")
    ctx.emit("batch_norm", operands, {"epsilon": float(attrs.get("epsilon", 1e-5))}, output=0)


# --- aliases and element-wise ops -----------------------------------------------------------


@converter("Identity", "Dropout")
def identity(ctx: Context) -> None:
    """Identity and inference Dropout disappear: their output is another name of the input."""
    if ctx.node.op_type == "Dropout":
        if ctx.has_output(1):
            raise Unsupported("the Dropout mask output is not supported")
        training = ctx.const(2)
        if ctx.input(2) is not None and (training is None or bool(training)):
            raise Unsupported("training-mode Dropout is not supported")
        if ctx.opset < 7 and ctx.attrs().get("is_test", 0) == 0:
            raise Unsupported("training-mode Dropout (is_test=0) is not supported")
    ctx.bind(0, _x(ctx))


UNARY = {
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Exp": "exp",
    "Neg": "neg",
    "Abs": "abs",
    "Sqrt": "sqrt",
}


@converter(*UNARY)
def unary(ctx: Context) -> None:
    """Activations and unary math map one to one."""
    ctx.emit(UNARY[ctx.node.op_type], [_x(ctx)], output=0)


@converter("LeakyRelu")
def leaky_relu(ctx: Context) -> None:
    """LeakyRelu with its alpha (default 0.01)."""
    ctx.emit("leaky_relu", [_x(ctx)], {"alpha": float(ctx.attrs().get("alpha", 0.01))}, output=0)


@converter("Clip")
def clip(ctx: Context) -> None:
    """Clip: bounds are attributes before opset 11 and constant optional inputs after."""
    if ctx.opset < 11:
        attrs = ctx.attrs()
        low, high = attrs.get("min", -math.inf), attrs.get("max", math.inf)
    else:
        low_in, high_in = ctx.require_const(1, "min"), ctx.require_const(2, "max")
        low = -math.inf if low_in is None else scalar(low_in, "min", infinite=True)
        high = math.inf if high_in is None else scalar(high_in, "max", infinite=True)
    ctx.emit("clip", [_x(ctx)], {"min": float(low), "max": float(high)}, output=0)


BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}


@converter(*BINARY)
def binary(ctx: Context) -> None:
    """Add/Sub/Mul/Div; the `broadcast`/`axis` form of opset < 7 reshapes the right operand."""
    a, b = _x(ctx), ctx.input(1)
    if b is None:
        raise NodeError("the second input is missing")
    _check_same_dtype(ctx, [a, b])
    attrs = ctx.attrs()
    if ctx.opset < 7 and attrs.get("broadcast", 0) and "axis" in attrs:
        rank_a, shape_b = ctx.type(a).rank, ctx.type(b).shape
        axis = attrs["axis"] + rank_a if attrs["axis"] < 0 else attrs["axis"]
        trailing = rank_a - axis - len(shape_b)
        if trailing < 0:
            raise NodeError(f"broadcast axis {attrs['axis']} does not fit {ctx.type(b)}")
        if trailing:
            shape = (*shape_b, *([1] * trailing))
            b_const = ctx.const(1)
            if b_const is not None:
                b = ctx.constant(b_const.reshape(shape), f"{ctx.node_name}.b")
            else:
                b = ctx.emit("reshape", [b], {"shape": shape})
    ctx.emit(BINARY[ctx.node.op_type], [a, b], output=0)


def _check_same_dtype(ctx: Context, values: list[str]) -> None:
    dtypes = {ctx.type(v).dtype for v in values}
    if len(dtypes) > 1:
        spelled = ", ".join(sorted(d.value for d in dtypes))
        raise NodeError(f"operands have different element types ({spelled})")


@converter("Sum")
def sum_(ctx: Context) -> None:
    """Sum: a chain of `add` (a single operand is an alias)."""
    values = [ctx.value(name) for name in ctx.node.input if name]
    if not values:
        raise NodeError("Sum needs at least one input")
    _check_same_dtype(ctx, values)
    if len(values) == 1:
        ctx.bind(0, values[0])
        return
    acc = values[0]
    for i, value in enumerate(values[1:], start=2):
        acc = ctx.emit("add", [acc, value], output=0 if i == len(values) else None)


@converter("Cast")
def cast(ctx: Context) -> None:
    """Cast to an IR element type."""
    code = int(ctx.attrs().get("to", 0))
    if code not in ONNX_DTYPES:  # named by the importer, with the model (dtype_of would not)
        name = (
            onnx.TensorProto.DataType.Name(code)
            if code in onnx.TensorProto.DataType.values()
            else str(code)
        )
        raise Unsupported(f"cast to element type {name} is not supported")
    ctx.emit("cast", [_x(ctx)], {"to": ONNX_DTYPES[code]}, output=0)
