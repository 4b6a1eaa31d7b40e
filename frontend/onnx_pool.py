"""Converters of ONNX window ops: convolution, pooling and LRN, with explicit windows.

`auto_pad` becomes explicit pads; strides and dilations get their defaults; the kernel of a
convolution comes from its weights.
"""

from __future__ import annotations

from imcc.frontend.onnx_context import Context, NodeError, Unsupported, converter
from imcc.frontend.onnx_context import first_input as _x


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


def check_window_pads(
    pads: tuple[int, ...],
    sizes: tuple[int, ...],
    kernel: tuple[int, ...],
    dilations: tuple[int, ...],
) -> None:
    """Refuse a padding beyond both the axis it pads and the kernel's reach.

    The bound on each side of spatial axis i is max(size_i, reach_i), reach = (k-1)*d: SAME
    padding never adds more than the reach on one side, and no exporter pads more than the
    data itself. A larger pad only adds windows that see nothing but padding, and its real
    use is a corrupt or hostile model (pads=[10^6, ...]) whose result would not fit in memory.
    """
    spatial = len(sizes)
    for i, size in enumerate(sizes):
        reach = (kernel[i] - 1) * dilations[i]
        for side, pad in (("begin", pads[i]), ("end", pads[spatial + i])):
            if pad < 0:
                raise NodeError(
                    f"pads {list(pads)}: the {side} pad of spatial axis {i} is negative"
                )
            if pad > max(size, reach):
                raise NodeError(
                    f"pads {list(pads)}: the {side} pad {pad} of spatial axis {i} exceeds both "
                    f"its size {size} and the kernel's reach {reach}; imcc accepts pads up to "
                    "the larger of the two"
                )


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
    if len(strides) != spatial or len(dilations) != spatial:
        raise NodeError(
            f"strides {list(strides)} or dilations {list(dilations)} do not fit "
            f"{spatial} spatial axes"
        )
    if any(k < 1 for k in kernel) or any(s < 1 for s in strides) or any(d < 1 for d in dilations):
        raise NodeError(
            f"kernel {list(kernel)}, strides {list(strides)} and dilations "
            f"{list(dilations)} must be positive"
        )
    check_window_pads(pads, ctx.type(x).shape[2:], kernel, dilations)
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
    channels = ctx.type(x).shape[1]
    if attrs["group"] < 1 or channels % attrs["group"]:
        raise NodeError(f"group {attrs['group']} does not divide the {channels} input channels")
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
    """AveragePool: explicit window (dilations included), count_include_pad."""
    x = _x(ctx)
    attrs = _pool_common(ctx, x, "avg_pool")
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
