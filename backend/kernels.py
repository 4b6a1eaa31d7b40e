"""Vectorised numpy kernels of the reference interpreter: convolution, pooling, LRN.

Sliding windows are views (`sliding_window_view`), so no Python loop runs over pixels; a
convolution is one im2col copy and one BLAS GEMM per channel group.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from imcc.ir.ops.nn import window_output_shape


def _windows(
    x: np.ndarray,
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    out: tuple[int, ...],
) -> np.ndarray:
    """Return a view [N, C, *out, *kernel] of the windows of an already padded x[N, C, *S]."""
    spatial = len(kernel)
    extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilations, strict=True))
    view = sliding_window_view(x, extent, axis=tuple(range(2, 2 + spatial)))
    positions = tuple(slice(None, (o - 1) * s + 1, s) for o, s in zip(out, strides, strict=True))
    taps = tuple(slice(None, None, d) for d in dilations)
    return view[(slice(None), slice(None), *positions, *taps)]


_ROUNDED_ONCE: ContextVar[bool] = ContextVar("rounded_once", default=False)
"""Whether float32 products go through float64 BLAS (`rounded_once`)."""


@contextmanager
def rounded_once() -> Iterator[None]:
    """Inside the block, `exact_matmul` (the reference conv, linear and matmul) computes float32
    products through float64 BLAS and rounds each sum to float32 once: a product of two
    float32 values is exact in float64, so the result is the correctly rounded sum but for
    double rounding (about 2**-29 of the entries), whatever the BLAS's thread count. float32
    BLAS (sgemm) orders its partial sums by the thread count's blocking: calibration maxima
    moved by 1e-7 between 1 and 2 threads and changed 6 of a VGG-16's 13 input scales, so the
    calibration forward (`reference.collect`) runs in this block. Outside it float32 stays
    float32 BLAS, as onnxruntime computes (the oracle tests compare codes with its)."""
    token = _ROUNDED_ONCE.set(True)
    try:
        yield
    finally:
        _ROUNDED_ONCE.reset(token)


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return a @ b; integer operands go through float64 BLAS, exact while every partial sum
    stays below 2**53 (numpy's integer matmul does not use BLAS); float32 ones too inside
    `rounded_once`, with one rounding to float32."""
    if np.issubdtype(a.dtype, np.integer) or (a.dtype == np.float32 and _ROUNDED_ONCE.get()):
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)
    return np.matmul(a, b)


def _pad_spatial(x: np.ndarray, begins, ends, value) -> np.ndarray:
    if not any(begins) and not any(ends):
        return x
    widths = [(0, 0), (0, 0), *zip(begins, ends, strict=True)]
    return np.pad(x, widths, mode="constant", constant_values=value)


def im2col(
    x: np.ndarray,
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    pads: tuple[int, ...],
    dilations: tuple[int, ...],
    group: int,
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Return the patches [group, N * positions, taps * C/group] of x[N,C,*S] and the output
    spatial shape: row p of group g holds the inputs that output position p multiplies, ordered
    (kernel tap, channel) as `conv_filters` orders the weights.

    The input is padded once in channels-last order; then one strided copy per kernel tap (a
    loop over the taps, never over positions) fills the patch matrix.
    """
    spatial = x.ndim - 2
    out = window_output_shape(x.shape[2:], kernel, strides, pads, dilations, False)
    n, c = x.shape[:2]
    last = np.moveaxis(x, 1, -1)  # [N, *S, C]
    if any(pads):
        widths = [(0, 0), *zip(pads[:spatial], pads[spatial:], strict=True), (0, 0)]
        last = np.pad(last, widths)
    taps = math.prod(kernel)
    per_group = c // group
    cols = np.empty((n, *out, group, taps, per_group), x.dtype)
    for t, window in enumerate(tap_windows(kernel, strides, dilations, out)):
        cols[..., t, :] = last[(slice(None), *window)].reshape(n, *out, group, per_group)
    positions = n * math.prod(out)
    patches = cols.reshape(positions, group, taps * per_group).transpose(1, 0, 2)
    return patches, out


def tap_windows(
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    out: tuple[int, ...],
) -> list[tuple[slice, ...]]:
    """Return, per kernel tap (row-major, the (kernel tap, channel) row order's taps), the
    strided window of the padded input's spatial axes that the tap multiplies at every output
    position of the spatial shape `out`."""
    return [
        tuple(
            slice(o * d, o * d + (size - 1) * st + 1, st)
            for o, d, size, st in zip(offsets, dilations, out, strides, strict=True)
        )
        for offsets in itertools.product(*(range(k) for k in kernel))
    ]


def conv_filters(w: np.ndarray, group: int) -> np.ndarray:
    """Return conv weights w[M, C/group, *K] as matrices [group, taps * C/group, M/group],
    rows ordered (kernel tap, channel) as `im2col` orders the patches."""
    m = w.shape[0]
    by_tap = np.moveaxis(w, 1, -1)  # [M, *K, C/group]
    return by_tap.reshape(group, m // group, -1).transpose(0, 2, 1)


def col2im(result: np.ndarray, batch: int, out: tuple[int, ...]) -> np.ndarray:
    """Return per-group products [group, N * positions, M/group] as a tensor [N, M, *out]."""
    group, _, per_group = result.shape
    result = result.reshape(group, batch, math.prod(out), per_group).transpose(1, 0, 3, 2)
    return result.reshape(batch, group * per_group, *out)


def conv(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    strides: tuple[int, ...],
    pads: tuple[int, ...],
    dilations: tuple[int, ...],
    group: int,
) -> np.ndarray:
    """Return the grouped N-d convolution of x[N,C,*S] with w[M,C/group,*K] plus b[M]."""
    patches, out = im2col(x, w.shape[2:], strides, pads, dilations, group)
    result = col2im(exact_matmul(patches, conv_filters(w, group)), x.shape[0], out)
    if b is not None:
        result = result + b.reshape(1, -1, *([1] * len(out)))
    return result.astype(x.dtype, copy=False)


def _pool_geometry(x, kernel, strides, pads, dilations, ceil_mode):
    spatial = x.ndim - 2
    out = window_output_shape(x.shape[2:], kernel, strides, pads, dilations, ceil_mode)
    # ceil mode may need more than the explicit end padding for the last window
    needed = tuple(
        (o - 1) * s + d * (k - 1) + 1
        for o, s, d, k in zip(out, strides, dilations, kernel, strict=True)
    )
    extra = tuple(
        max(0, need - (x.shape[2 + i] + pads[i] + pads[spatial + i]))
        for i, need in enumerate(needed)
    )
    return spatial, out, extra


def max_pool(x, kernel, strides, pads, dilations, ceil_mode) -> np.ndarray:
    """Return the max over sliding windows; padding is -inf (the dtype's minimum for ints)."""
    spatial, out, extra = _pool_geometry(x, kernel, strides, pads, dilations, ceil_mode)
    low = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    ends = tuple(p + e for p, e in zip(pads[spatial:], extra, strict=True))
    padded = _pad_spatial(x, pads[:spatial], ends, low)
    windows = _windows(padded, kernel, strides, dilations, out)
    return windows.max(axis=tuple(range(2 + spatial, 2 + 2 * spatial)))


def avg_pool(x, kernel, strides, pads, dilations, ceil_mode, count_include_pad) -> np.ndarray:
    """Return the mean over sliding windows, divided as ONNX does: by the taps that fall in the
    input, or also in the explicit pads with count_include_pad (never in ceil-mode overhang)."""
    spatial, out, extra = _pool_geometry(x, kernel, strides, pads, dilations, ceil_mode)
    ends = tuple(p + e for p, e in zip(pads[spatial:], extra, strict=True))
    axes = tuple(range(2 + spatial, 2 + 2 * spatial))
    padded = _pad_spatial(x, pads[:spatial], ends, 0)
    total = _windows(padded, kernel, strides, dilations, out).sum(axis=axes, dtype=np.float64)
    mask = np.ones((1, 1, *x.shape[2:]))
    if count_include_pad:
        mask = _pad_spatial(mask, pads[:spatial], pads[spatial:], 1)
        mask = _pad_spatial(mask, (0,) * spatial, extra, 0)
    else:
        mask = _pad_spatial(mask, pads[:spatial], ends, 0)
    count = _windows(mask, kernel, strides, dilations, out).sum(axis=axes)
    return (total / count).astype(x.dtype)


def lrn(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """Return local response normalisation across channels (ONNX definition)."""
    squared = np.square(x.astype(np.float64))
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    widths = [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2)
    padded = np.pad(squared, widths)
    window_sum = sliding_window_view(padded, size, axis=1).sum(axis=-1)
    return (x / (bias + alpha / size * window_sum) ** beta).astype(x.dtype)
