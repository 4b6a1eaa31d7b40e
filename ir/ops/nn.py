"""Neural-network ops: convolution, dense products, normalisation, pooling, softmax."""

from __future__ import annotations

import math

from imcc.ir.attributes import AttrKind, AttrSpec
from imcc.ir.mapping import MAPPING_ATTRIBUTES
from imcc.ir.ops import ShapeError, define_op
from imcc.ir.ops.elementwise import broadcast_shapes
from imcc.ir.types import TensorType

_WINDOW = [
    AttrSpec("strides", AttrKind.INTS, required=True, doc="step per spatial axis"),
    AttrSpec("pads", AttrKind.INTS, required=True, doc="begins of every axis, then ends"),
    AttrSpec("dilations", AttrKind.INTS, required=True, doc="kernel element spacing per axis"),
]


def _check_window(spatial: int, attrs: dict, op: str) -> None:
    for key, length in (("strides", spatial), ("pads", 2 * spatial), ("dilations", spatial)):
        if key in attrs and len(attrs[key]) != length:
            raise ShapeError(f"'{op}' on {spatial} spatial axes needs {length} {key}")
    if any(s < 1 for s in attrs.get("strides", ())) or any(
        d < 1 for d in attrs.get("dilations", ())
    ):
        raise ShapeError(f"'{op}' strides and dilations must be >= 1")
    if any(p < 0 for p in attrs.get("pads", ())):
        raise ShapeError(f"'{op}' pads must be >= 0")


def window_output_size(
    size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int, ceil: bool
) -> int:
    """Return the output length of a sliding window along one axis (ONNX rule)."""
    span = size + pad_begin + pad_end - dilation * (kernel - 1) - 1
    if span < 0:
        raise ShapeError(f"window of {kernel} (dilation {dilation}) exceeds padded input {size}")
    if not ceil:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + pad_begin:  # the last window would start in the end padding
        out -= 1
    return out


def window_output_shape(
    sizes: tuple[int, ...],
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    pads: tuple[int, ...],
    dilations: tuple[int, ...],
    ceil: bool,
) -> tuple[int, ...]:
    """Return the output shape of a sliding window over every spatial axis (pads: all begins,
    then all ends)."""
    spatial = len(sizes)
    return tuple(
        window_output_size(
            sizes[i], kernel[i], strides[i], pads[i], pads[spatial + i], dilations[i], ceil
        )
        for i in range(spatial)
    )


@define_op(
    "conv",
    "N-d convolution (cross-correlation) with groups: x[N,C,*S] * w[M,C/group,*K] + b[M]",
    ["x", "w", "b?"],
    [
        *_WINDOW,
        AttrSpec("group", AttrKind.INT, 1, doc="number of channel groups"),
        *MAPPING_ATTRIBUTES,
    ],
)
def _conv(types, attrs, consts):
    x, w = types[0], types[1]
    if x.rank < 3 or w.rank != x.rank:
        raise ShapeError(f"conv needs x of rank >= 3 and w of the same rank, got {x} and {w}")
    spatial = x.rank - 2
    _check_window(spatial, attrs, "conv")
    group = attrs["group"]
    channels, filters = x.shape[1], w.shape[0]
    if group < 1 or channels % group or filters % group or w.shape[1] * group != channels:
        raise ShapeError(f"conv with group={group}: x has {channels} channels but w is {w}")
    if len(types) == 3 and types[2].shape != (filters,):
        raise ShapeError(f"conv bias must be [{filters}], got {types[2]}")
    if any(t.dtype != x.dtype for t in types):
        raise ShapeError("conv operands must share one element type")
    out = window_output_shape(
        x.shape[2:], w.shape[2:], attrs["strides"], attrs["pads"], attrs["dilations"], False
    )
    return [TensorType((x.shape[0], filters, *out), x.dtype)]


@define_op(
    "linear", "x[...,K] @ w[K,N] + b[N]: a dense layer", ["x", "w", "b?"], MAPPING_ATTRIBUTES
)
def _linear(types, attrs, consts):
    x, w = types[0], types[1]
    if x.rank < 1 or w.rank != 2 or x.shape[-1] != w.shape[0]:
        raise ShapeError(f"linear needs x[...,K] and w[K,N], got {x} and {w}")
    if len(types) == 3 and types[2].shape != (w.shape[1],):
        raise ShapeError(f"linear bias must be [{w.shape[1]}], got {types[2]}")
    if any(t.dtype != x.dtype for t in types):
        raise ShapeError("linear operands must share one element type")
    return [TensorType((*x.shape[:-1], w.shape[1]), x.dtype)]


@define_op("matmul", "a @ b with numpy matmul semantics (batched, broadcasting)", ["a", "b"])
def _matmul(types, attrs, consts):
    a, b = types
    if a.dtype != b.dtype:
        raise ShapeError(f"matmul operand element types differ: {a} and {b}")
    if a.rank == 0 or b.rank == 0:
        raise ShapeError("matmul operands must have rank >= 1")
    ash = (1, *a.shape) if a.rank == 1 else a.shape
    bsh = (*b.shape, 1) if b.rank == 1 else b.shape
    if ash[-1] != bsh[-2]:
        raise ShapeError(f"matmul inner dimensions differ: {a} and {b}")
    batch = broadcast_shapes(ash[:-2], bsh[:-2])
    shape = (*batch, ash[-2], bsh[-1])
    if a.rank == 1:
        shape = shape[:-2] + shape[-1:]
    if b.rank == 1:
        shape = shape[:-1]
    return [TensorType(shape, a.dtype)]


@define_op(
    "batch_norm",
    "inference batch normalisation over axis 1: (x - mean) / sqrt(var + epsilon) * scale + bias",
    ["x", "scale", "bias", "mean", "var"],
    [AttrSpec("epsilon", AttrKind.FLOAT, 1e-5)],
)
def _batch_norm(types, attrs, consts):
    x = types[0]
    if x.rank < 2:
        raise ShapeError(f"batch_norm needs x of rank >= 2, got {x}")
    if not 0.0 <= attrs["epsilon"] < math.inf:  # sqrt(var + epsilon) of a zero variance
        raise ShapeError(f"batch_norm epsilon must be finite and >= 0, got {attrs['epsilon']}")
    for t in types[1:]:
        if t.shape != (x.shape[1],):
            raise ShapeError(f"batch_norm parameters must be [{x.shape[1]}], got {t}")
    return [x]


def _pool(types, attrs, consts, op: str):
    x = types[0]
    spatial = x.rank - 2
    if spatial < 1:
        raise ShapeError(f"{op} needs x of rank >= 3, got {x}")
    kernel = attrs["kernel"]
    if len(kernel) != spatial or any(k < 1 for k in kernel):
        raise ShapeError(f"{op} needs {spatial} kernel sizes >= 1, got {list(kernel)}")
    _check_window(spatial, attrs, op)
    out = window_output_shape(
        x.shape[2:], kernel, attrs["strides"], attrs["pads"], attrs["dilations"], attrs["ceil_mode"]
    )
    return [TensorType((*x.shape[:2], *out), x.dtype)]


_KERNEL = AttrSpec("kernel", AttrKind.INTS, required=True, doc="window size per spatial axis")
_CEIL = AttrSpec("ceil_mode", AttrKind.BOOL, False, doc="round the output size up")

define_op(
    "max_pool",
    "maximum over sliding windows (padding never wins)",
    ["x"],
    [_KERNEL, *_WINDOW, _CEIL],
)(lambda t, a, c: _pool(t, a, c, "max_pool"))
define_op(
    "avg_pool",
    "mean over sliding windows",
    ["x"],
    [
        _KERNEL,
        *_WINDOW,
        _CEIL,
        AttrSpec("count_include_pad", AttrKind.BOOL, False, doc="divide by the full window"),
    ],
)(lambda t, a, c: _pool(t, a, c, "avg_pool"))


def _global_pool(types, attrs, consts):
    x = types[0]
    if x.rank < 3:
        raise ShapeError(f"global pooling needs x of rank >= 3, got {x}")
    return [TensorType((*x.shape[:2], *([1] * (x.rank - 2))), x.dtype)]


define_op("global_avg_pool", "mean over all spatial positions", ["x"])(_global_pool)
define_op("global_max_pool", "maximum over all spatial positions", ["x"])(_global_pool)


@define_op(
    "lrn",
    "local response normalisation across channels",
    ["x"],
    [
        AttrSpec("size", AttrKind.INT, required=True),
        AttrSpec("alpha", AttrKind.FLOAT, 1e-4),
        AttrSpec("beta", AttrKind.FLOAT, 0.75),
        AttrSpec("bias", AttrKind.FLOAT, 1.0),
    ],
)
def _lrn(types, attrs, consts):
    if types[0].rank < 3:
        raise ShapeError(f"lrn needs x of rank >= 3, got {types[0]}")
    if attrs["size"] < 1:  # the window of channels summed: at least the channel itself
        raise ShapeError(f"lrn size must be >= 1, got {attrs['size']}")
    for key in ("alpha", "beta", "bias"):
        if not math.isfinite(attrs[key]):
            raise ShapeError(f"lrn {key} must be finite, got {attrs[key]}")
    return [types[0]]


def _axis_op(types, attrs, consts):
    x = types[0]
    if not -x.rank <= attrs["axis"] < max(x.rank, 1):
        raise ShapeError(f"axis {attrs['axis']} out of range for {x}")
    return [x]


_AXIS = [AttrSpec("axis", AttrKind.INT, -1)]
define_op("softmax", "exp(x) / sum(exp(x)) along one axis", ["x"], _AXIS)(_axis_op)
define_op("log_softmax", "log of softmax along one axis", ["x"], _AXIS)(_axis_op)
