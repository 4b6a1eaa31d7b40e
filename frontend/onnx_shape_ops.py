"""Converters for ONNX shape and data-movement ops: reshapes, softmax, pad, transpose, concat."""

from __future__ import annotations

import math

from imcc.frontend.onnx_context import Context, NodeError, Unsupported, converter, scalar
from imcc.frontend.onnx_context import first_input as _x


def reshape_target(
    shape: tuple[int, ...], requested: list[int], allowzero: bool = False
) -> tuple[int, ...]:
    """Resolve an ONNX Reshape shape (0 copies a dimension unless allowzero, -1 is inferred)."""
    out: list[int] = []
    unknown = None
    for i, d in enumerate(requested):
        if d == 0 and not allowzero:
            if i >= len(shape):
                raise NodeError(f"shape {requested}: entry {i} copies a dimension {shape} lacks")
            out.append(shape[i])
        elif d == -1:
            if unknown is not None:
                raise NodeError(f"shape {requested} has more than one -1")
            unknown = i
            out.append(1)
        elif d < 0:
            raise NodeError(f"shape {requested} has a negative entry {d}")
        else:
            out.append(d)
    total = math.prod(shape)
    if unknown is not None:
        known = math.prod(out)
        if known == 0 or total % known:
            raise NodeError(f"cannot reshape {list(shape)} to {requested}")
        out[unknown] = total // known
    if math.prod(out) != total:
        raise NodeError(f"cannot reshape {list(shape)} ({total} elements) to {requested}")
    return tuple(out)


def _reshape(ctx: Context, x: str, shape: tuple[int, ...]) -> None:
    ctx.emit("reshape", [x], {"shape": shape}, output=0)


@converter("Reshape")
def reshape(ctx: Context) -> None:
    """Reshape with a constant shape input -> `reshape` with the static result shape."""
    x = _x(ctx)
    requested = ctx.require_const(1, "shape")
    if requested is None:
        raise NodeError("the shape input is missing")
    allowzero = bool(ctx.attrs().get("allowzero", 0))
    target = reshape_target(ctx.type(x).shape, [int(d) for d in requested.reshape(-1)], allowzero)
    _reshape(ctx, x, target)


@converter("Flatten")
def flatten(ctx: Context) -> None:
    """Flatten -> 2-D `reshape` split at `axis`."""
    x = _x(ctx)
    shape = ctx.type(x).shape
    axis = int(ctx.attrs().get("axis", 1))
    axis = axis + len(shape) if axis < 0 else axis
    if not 0 <= axis <= len(shape):
        raise NodeError(f"axis {axis} out of range for {ctx.type(x)}")
    _reshape(ctx, x, (math.prod(shape[:axis]), math.prod(shape[axis:])))


def _axes(ctx: Context) -> list[int] | None:
    if ctx.opset >= 13:
        axes = ctx.require_const(1, "axes")
        return None if axes is None else [int(a) for a in axes.reshape(-1)]
    axes = ctx.attrs().get("axes")
    return None if axes is None else [int(a) for a in axes]


@converter("Squeeze")
def squeeze(ctx: Context) -> None:
    """Squeeze -> `reshape` (no axes: drop every dimension of size 1)."""
    x = _x(ctx)
    shape = ctx.type(x).shape
    axes = _axes(ctx)
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = sorted({a + len(shape) if a < 0 else a for a in axes})
    for a in axes:
        if not 0 <= a < len(shape) or shape[a] != 1:
            raise NodeError(f"cannot squeeze axis {a} of {ctx.type(x)}")
    _reshape(ctx, x, tuple(d for i, d in enumerate(shape) if i not in axes))


@converter("Unsqueeze")
def unsqueeze(ctx: Context) -> None:
    """Unsqueeze -> `reshape` (axes count in the result's rank)."""
    x = _x(ctx)
    shape = list(ctx.type(x).shape)
    axes = _axes(ctx)
    if not axes:
        raise NodeError("Unsqueeze needs axes")
    rank = len(shape) + len(axes)
    axes = sorted(a + rank if a < 0 else a for a in axes)
    if len(set(axes)) != len(axes) or any(not 0 <= a < rank for a in axes):
        raise NodeError(f"bad axes {axes} for a result of rank {rank}")
    for a in axes:
        shape.insert(a, 1)
    _reshape(ctx, x, tuple(shape))


@converter("Softmax", "LogSoftmax")
def softmax(ctx: Context) -> None:
    """Softmax/LogSoftmax; before opset 13 the input is coerced to 2-D at `axis`."""
    op = "softmax" if ctx.node.op_type == "Softmax" else "log_softmax"
    x = _x(ctx)
    shape = ctx.type(x).shape
    rank = len(shape)
    axis = int(ctx.attrs().get("axis", 1 if ctx.opset < 13 else -1))
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < max(rank, 1):
        raise NodeError(f"axis {axis} out of range for {ctx.type(x)}")
    if ctx.opset >= 13 or all(d == 1 for d in shape[axis + 1 :]):
        ctx.emit(op, [x], {"axis": axis}, output=0)
        return
    flat = (math.prod(shape[:axis]), math.prod(shape[axis:]))
    y = ctx.emit("reshape", [x], {"shape": flat})
    y = ctx.emit(op, [y], {"axis": 1})
    ctx.emit("reshape", [y], {"shape": shape}, output=0)


@converter("Pad")
def pad(ctx: Context) -> None:
    """Pad: attributes before opset 11, constant inputs (pads, value, axes) after."""
    x = _x(ctx)
    rank = ctx.type(x).rank
    attrs = ctx.attrs()
    mode = attrs.get("mode", "constant")
    if ctx.opset < 11:
        pads = [int(p) for p in attrs.get("pads", attrs.get("paddings", []))]
        value = float(attrs.get("value", 0.0))
    else:
        given = ctx.require_const(1, "pads")
        if given is None:
            raise NodeError("the pads input is missing")
        pads = [int(p) for p in given.reshape(-1)]
        fill = ctx.require_const(2, "constant_value")
        value = 0.0 if fill is None or fill.size == 0 else scalar(fill, "constant_value")
        axes = ctx.require_const(3, "axes")
        if axes is not None:
            axes_list = [int(a) + rank if a < 0 else int(a) for a in axes.reshape(-1)]
            full = [0] * (2 * rank)
            for i, a in enumerate(axes_list):
                full[a], full[rank + a] = pads[i], pads[len(axes_list) + i]
            pads = full
    if mode not in ("constant", "reflect", "edge"):
        raise Unsupported(f"Pad mode {mode!r} is not supported")
    if len(pads) != 2 * rank:
        raise NodeError(f"{len(pads)} pads do not fit {ctx.type(x)}")
    # Each pad is bounded by the size of the axis it pads (reflect needs less): more only
    # surrounds the data with filler, and pads=[10^6, ...] would not fit in memory.
    for i, size in enumerate(ctx.type(x).shape):
        if max(pads[i], pads[rank + i]) > size:
            raise NodeError(
                f"pads {pads}: axis {i} of size {size} is padded by more than its "
                "size; imcc accepts pads up to the size of the axis"
            )
    ctx.emit("pad", [x], {"pads": tuple(pads), "mode": mode, "value": value}, output=0)


@converter("Transpose")
def transpose(ctx: Context) -> None:
    """Transpose (no perm: reverse the axes)."""
    x = _x(ctx)
    perm = ctx.attrs().get("perm") or list(reversed(range(ctx.type(x).rank)))
    ctx.emit("transpose", [x], {"perm": tuple(int(p) for p in perm)}, output=0)


@converter("Concat")
def concat(ctx: Context) -> None:
    """Concat with the axis normalised to be non-negative."""
    values = [ctx.value(name) for name in ctx.node.input if name]
    if not values:
        raise NodeError("Concat needs at least one input")
    rank = ctx.type(values[0]).rank
    axis = int(ctx.attrs().get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    dtypes = {ctx.type(v).dtype for v in values}
    if len(dtypes) > 1:
        raise NodeError(f"operands have different element types ({len(dtypes)} kinds)")
    ctx.emit("concat", values, {"axis": axis}, output=0)


@converter("Slice")
def slice_(ctx: Context) -> None:
    """Slice with constant starts / ends / axes / steps (attributes before opset 10), clamped
    and normalised per axis; negative steps are unsupported."""
    x = _x(ctx)
    shape = ctx.type(x).shape
    rank = len(shape)
    if ctx.opset < 10:
        attrs = ctx.attrs()
        starts, ends = list(attrs["starts"]), list(attrs["ends"])
        axes = list(attrs.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        values = []
        for index, what in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")):
            given = ctx.require_const(index, what)
            values.append(None if given is None else [int(v) for v in given.reshape(-1)])
        starts, ends, axes, steps = values
        if starts is None or ends is None:
            raise NodeError("the starts and ends inputs are missing")
        axes = axes if axes is not None else list(range(len(starts)))
        steps = steps if steps is not None else [1] * len(starts)
    begin, end, step = [0] * rank, list(shape), [1] * rank
    for start, stop, axis, stride in zip(starts, ends, axes, steps, strict=True):
        axis = axis + rank if axis < 0 else axis
        size = shape[axis]
        if stride < 1:
            raise Unsupported("Slice with a negative step is not supported")
        start = start + size if start < 0 else start
        stop = stop + size if stop < 0 else stop
        begin[axis] = min(max(start, 0), size)
        end[axis] = max(min(stop, size), begin[axis])
        step[axis] = stride
    ctx.emit(
        "slice", [x], {"starts": tuple(begin), "ends": tuple(end), "steps": tuple(step)}, output=0
    )
