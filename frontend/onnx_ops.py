"""Converters from ONNX nodes to IR ops, one function per ONNX op type.

Each converter reads the current node from a `Context` and appends IR nodes through it; the
last IR node of a converter takes the ONNX output's name. Converters normalise ONNX's many
spellings (defaults, `auto_pad`, opset-dependent attributes versus inputs, old `broadcast`
attributes) into the one explicit form each IR op has.
"""

from __future__ import annotations

import math

import numpy as np

from imcc.frontend.onnx_context import Context, NodeError, Unsupported, converter, dtype_of
from imcc.frontend.onnx_context import first_input as _x

# --- windows: convolution and pooling -------------------------------------------------------


def explicit_pads(
    auto_pad: str,
    pads: list[int] | None,
    sizes: tuple[int, ...],
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
) -> tuple[int, ...]:
    """Return explicit pads (all begins, then all ends) for an ONNX `auto_pad` setting."""
    spatial = len(sizes)
    if auto_pad in ("", "NOTSET"):
        pads = list(pads) if pads else [0] * (2 * spatial)
        if len(pads) != 2 * spatial:
            raise NodeError(f"pads {pads} do not fit {spatial} spatial axes")
        return tuple(int(p) for p in pads)
    if auto_pad == "VALID":
        return (0,) * (2 * spatial)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise NodeError(f"unknown auto_pad {auto_pad!r}")
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin, end = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        begins.append(begin)
        ends.append(end)
    return tuple(begins + ends)


def _window(ctx: Context, x: str, kernel: tuple[int, ...]) -> dict:
    attrs = ctx.attrs()
    spatial = ctx.type(x).rank - 2
    if spatial < 1:
        raise NodeError(f"input must have rank >= 3, got {ctx.type(x)}")
    if len(kernel) != spatial:
        raise NodeError(f"kernel {list(kernel)} does not fit {spatial} spatial axes")
    strides = tuple(attrs.get("strides") or (1,) * spatial)
    dilations = tuple(attrs.get("dilations") or (1,) * spatial)
    pads = explicit_pads(
        attrs.get("auto_pad", "NOTSET"),
        attrs.get("pads"),
        ctx.type(x).shape[2:],
        kernel,
        strides,
        dilations,
    )
    return {"strides": strides, "pads": pads, "dilations": dilations}


@converter("Conv")
def conv(ctx: Context) -> None:
    """Conv: explicit strides, pads (from auto_pad) and dilations, group; kernel from W."""
    x, w, b = _x(ctx), ctx.input(1), ctx.input(2)
    if w is None:
        raise NodeError("the weight input is missing")
    kernel = ctx.type(w).shape[2:]
    given = ctx.attrs().get("kernel_shape")
    if given and tuple(given) != kernel:
        raise NodeError(f"kernel_shape {list(given)} differs from the weights {ctx.type(w)}")
    attrs = _window(ctx, x, kernel)
    attrs["group"] = int(ctx.attrs().get("group", 1))
    ctx.emit("conv", [x, w] + ([b] if b else []), attrs, output=0)


def _pool_common(ctx: Context, x: str, op: str) -> dict:
    attrs = ctx.attrs()
    if "kernel_shape" not in attrs:
        raise NodeError("kernel_shape is missing")
    kernel = tuple(attrs["kernel_shape"])
    window = _window(ctx, x, kernel)
    auto = attrs.get("auto_pad", "NOTSET") not in ("", "NOTSET")
    ceil = bool(attrs.get("ceil_mode", 0)) and not auto
    return {"kernel": kernel, **window, "ceil_mode": ceil}


@converter("MaxPool")
def max_pool(ctx: Context) -> None:
    """MaxPool: explicit window; the Indices output and storage_order=1 are unsupported."""
    if ctx.has_output(1):
        raise Unsupported("the Indices output is not supported")
    if ctx.attrs().get("storage_order", 0) == 1:
        raise Unsupported("storage_order=1 is not supported")
    x = _x(ctx)
    ctx.emit("max_pool", [x], _pool_common(ctx, x, "max_pool"), output=0)


@converter("AveragePool")
def avg_pool(ctx: Context) -> None:
    """AveragePool: explicit window, count_include_pad; dilations other than 1 unsupported."""
    x = _x(ctx)
    attrs = _pool_common(ctx, x, "avg_pool")
    if any(d != 1 for d in attrs.pop("dilations")):
        raise Unsupported("AveragePool with dilations is not supported")
    attrs["count_include_pad"] = bool(ctx.attrs().get("count_include_pad", 0))
    ctx.emit("avg_pool", [x], attrs, output=0)


@converter("GlobalAveragePool", "GlobalMaxPool")
def global_pool(ctx: Context) -> None:
    """GlobalAveragePool / GlobalMaxPool map one to one."""
    op = "global_avg_pool" if ctx.node.op_type == "GlobalAveragePool" else "global_max_pool"
    ctx.emit(op, [_x(ctx)], output=0)


@converter("LRN")
def lrn(ctx: Context) -> None:
    """LRN maps one to one."""
    a = ctx.attrs()
    attrs = {
        "size": int(a["size"]),
        "alpha": a.get("alpha", 1e-4),
        "beta": a.get("beta", 0.75),
        "bias": a.get("bias", 1.0),
    }
    ctx.emit("lrn", [_x(ctx)], attrs, output=0)


# --- dense products -------------------------------------------------------------------------


def _scalar(ctx: Context, value: float, like: str) -> str:
    return ctx.constant(np.array(value, dtype=ctx.type(like).dtype.numpy), f"{ctx.node_name}.k")


def _gemm_weight(ctx: Context, b: np.ndarray, transposed: bool, alpha: float) -> str:
    """Return the `linear` weight [K,N] of a constant Gemm operand B (kept when unchanged)."""
    if not transposed and alpha == 1.0:
        return ctx.value(ctx.node.input[1])
    weight = b.T if transposed else b
    if alpha != 1.0:
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
        low = -math.inf if low_in is None else low_in.item()
        high = math.inf if high_in is None else high_in.item()
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
    to = dtype_of(int(ctx.attrs()["to"]), f"Cast node '{ctx.node_name}'")
    ctx.emit("cast", [_x(ctx)], {"to": to}, output=0)
