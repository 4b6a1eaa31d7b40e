"""The crossbar datapath of backend/crossbar.py in torch, with straight-through gradients.

The forward pass computes what the hardware computes, step by step as backend/crossbar.py
documents it: input codes stream as slices (two's complement, the top slice of a signed input
read signed), weight codes are stored by their encoding and split into weight slices, rows are
summed in chunks of the crossbar's active rows (one exact integer partial sum per row chunk,
input slice, weight slice, device and column: float32 is exact below 2**24), each partial sum
goes through the layer's converter, and shift-and-add rebuilds the product (plus the encoding's
digital input-sum correction).

The backward pass is a straight-through estimator (STE): a value `q(v)` computed in the forward
carries `v`'s gradient (`v + (q(v) - v).detach()`).

- Slices. Slice `j` of an input code `x` carries the gradient share `width_j / bits / 2^shift_j`
  of `x` (so the lossless shift-and-add of the slices has gradient exactly 1 in `x`); weight
  slices likewise, device `d` of a pair with its column sign.
- ADC / sense amplifier: gradient 1 where the sum is inside the converter's range, 0 where it
  saturates.
- MTJ (StoX-Net, Rogers et al., arXiv 2407.12378): forward `x = clamp(a * PS + b, -1, 1)`,
  `Binomial(N, sigmoid(s * x))` samples, tanh-inverse decoding `PS_hat = (x_hat - b) / a` exactly
  as the simulator; backward `clamp`: StoX-Net's STE, `x_hat` takes the gradient of the clamped
  `x` (1 inside [-1, 1], 0 outside); `tanh`: the earlier variant, `x_hat` takes the gradient of
  `(2 / s) * tanh(s * x / 2)`, i.e. `1 - tanh^2(s * x / 2)`. The per-column `a` (as `log a`, so it
  stays positive) and `b` are parameters; with the `clamp` STE their gradient comes from the
  clamped sums (inside the range the decoded sum does not depend on them).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from imcc.backend.crossbar import (
    Converter,
    adc_levels,
    mtj_decoder,
    partial_sum_range,
    slice_shifts,
)
from imcc.errors import MappingError
from imcc.ir.mapping import InputStreaming, WeightMapping
from imcc.target import ConverterKind

BACKWARDS = ("clamp", "tanh")
"""The MTJ straight-through estimators: StoX-Net's clamp mask, or the `1 - tanh^2` variant."""


@dataclass(frozen=True)
class Datapath:
    """One crossbar layer's mapping as the datapath applies it: input streaming, weight
    mapping and precision, active rows per partial sum, signed columns, and the converter
    (its `ps_scale` / `ps_offset` are only the initial normalisation: the layer learns them)."""

    streaming: InputStreaming
    mapping: WeightMapping
    weight_bits: int
    rows_per_sum: int
    signed_columns: bool
    converter: Converter
    centers: tuple[int, ...] | None = None

    def sum_range(self) -> tuple[float, float]:
        """Return the smallest and largest partial sum one read can produce."""
        return partial_sum_range(
            self.streaming, self.mapping, self.rows_per_sum, self.signed_columns
        )

    def for_rows(self, rows: int) -> Datapath:
        """Return this datapath for a product of `rows` rows: one read drives at most that
        many, and the converter's full scale is set for them (backend/crossbar.py)."""
        return self if rows >= self.rows_per_sum else replace(self, rows_per_sum=rows)

    def columns(self, filters: int) -> int:
        """Return the physical columns of a product with `filters` outputs: slices x devices x
        filters (devices: 1 when a pair subtracts in the column)."""
        devices = 2 if self.mapping.encoding != "offset" and not self.signed_columns else 1
        return len(self.mapping.slices) * devices * filters


def ste(value: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """Return `forward` in the forward pass and `value`'s gradient in the backward pass."""
    return value + (forward - value).detach()


def input_planes(x: torch.Tensor, streaming: InputStreaming) -> tuple[torch.Tensor, list[float]]:
    """Return the input slices [J, *x.shape] of integer codes `x` (float, integer-valued) and
    their significance; slice j carries the gradient share width_j / bits / 2^shift_j."""
    pattern = torch.round(x.detach()).to(torch.int64) & (2**streaming.bits - 1)
    planes, significance = [], []
    for j, (width, shift) in enumerate(
        zip(streaming.slices, slice_shifts(streaming.slices), strict=True)
    ):
        part = (pattern >> shift) & (2**width - 1)
        if streaming.signed and j == 0:  # the top slice carries the sign: read it signed
            part = part - ((part >> (width - 1)) << width)
        share = width / streaming.bits / 2**shift
        planes.append(part.to(x.dtype) + (x - x.detach()) * share)
        significance.append(float(2**shift))
    return torch.stack(planes), significance


@dataclass(frozen=True)
class TorchWeightPlanes:
    """Stored weight slices [I, D, *w.shape], their significance [I], the sign of each device's
    column [D], and the digital correction per unit of input sum (0, or per filter)."""

    planes: torch.Tensor
    significance: list[float]
    device_signs: list[float]
    input_sum_factor: torch.Tensor | float


def weight_planes(w: torch.Tensor, path: Datapath, filter_axis: int) -> TorchWeightPlanes:
    """Encode integer weight codes `w` (float, integer-valued; filters along `filter_axis`) and
    split them into slices (MSB first), as backend/crossbar.py's `weight_planes` does."""
    mapping = path.mapping
    shifts = slice_shifts(mapping.slices)
    total = sum(mapping.slices)
    capacity = 2**total - 1
    codes = torch.round(w.detach()).to(torch.int64)

    def split(stored: torch.Tensor) -> list[torch.Tensor]:
        if stored.numel() and int(stored.max()) > capacity:
            raise MappingError(
                f"a stored weight value {int(stored.max())} does not fit the "
                f"{total} bits of slices {list(mapping.slices)}"
            )
        return [
            (stored >> s) & (2**width - 1) for s, width in zip(shifts, mapping.slices, strict=True)
        ]

    factor: torch.Tensor | float = 0.0
    if mapping.encoding == "offset":
        bias = 2 ** (path.weight_bits - 1)
        devices, signs = [split(codes + bias)], [1.0]
        factor = -float(bias)
    else:
        if mapping.encoding == "center-offset":
            if path.centers is None:
                raise MappingError("center-offset weights need their per-filter centers")
            shape = [1] * w.dim()
            shape[filter_axis] = -1
            centers = torch.tensor(path.centers, dtype=torch.int64, device=w.device)
            codes = codes - centers.reshape(shape)
            factor = centers.to(w.dtype)
        positive, negative = split(torch.clamp(codes, min=0)), split(torch.clamp(-codes, min=0))
        if path.signed_columns:  # the pair subtracts in analog: one signed sum per slice
            devices, signs = [[p - n for p, n in zip(positive, negative, strict=True)]], [1.0]
        else:
            devices, signs = [positive, negative], [1.0, -1.0]
    grad = w - w.detach()
    planes = torch.stack(
        [
            torch.stack(
                [
                    device[i].to(w.dtype) + grad * (sign * width / total / 2**shift / len(devices))
                    for device, sign in zip(devices, signs, strict=True)
                ]
            )
            for i, (width, shift) in enumerate(zip(mapping.slices, shifts, strict=True))
        ]
    )
    return TorchWeightPlanes(planes, [float(2**s) for s in shifts], signs, factor)


def convert(
    sums: torch.Tensor,
    path: Datapath,
    scale: torch.Tensor | None,
    offset: torch.Tensor | None,
    generator: torch.Generator | None,
    backward: str = "clamp",
) -> torch.Tensor:
    """Apply the layer's converter to partial sums (columns on axis 1, ordered [weight slice]
    [device][filter]) in the forward pass, with the straight-through gradient of the module
    docstring; an MTJ normalises with the per-column `scale` / `offset` [columns]."""
    converter = path.converter
    low, high = path.sum_range()
    if converter.kind is not ConverterKind.MTJ:
        levels_low, levels_high, step = adc_levels(converter, low, high)
        clipped = torch.clamp(sums, levels_low * step, levels_high * step)
        codes = torch.clamp(torch.round(sums.detach() / step), levels_low, levels_high)
        return ste(clipped, codes * step)
    if scale is None or offset is None:
        raise ValueError("an MTJ converter needs its per-column normalisation")
    if backward not in BACKWARDS:
        raise ValueError(f"unknown MTJ backward {backward!r}; one of {', '.join(BACKWARDS)}")
    shape = [1, -1] + [1] * (sums.dim() - 2)
    return MTJConversion.apply(
        sums, scale.reshape(shape), offset.reshape(shape), converter, generator, backward
    )


def binomial_cdf(p: torch.Tensor, samples: int) -> Iterator[torch.Tensor]:
    """Yield P(K <= k) for k = 0 .. samples - 1 of K ~ Binomial(`samples`, p), elementwise
    (the pmf by the recurrence `pmf(k + 1) = pmf(k) * p / q * (samples - k) / (k + 1)`)."""
    q = 1.0 - p
    ratio = p / q  # p <= sigmoid(s) < 1: finite
    pmf = q**samples
    cdf = pmf
    for k in range(samples):
        yield cdf
        if k + 1 < samples:
            pmf = pmf * ratio * ((samples - k) / (k + 1))
            cdf = cdf + pmf


def mtj_counts(p: torch.Tensor, samples: int, generator: torch.Generator | None) -> torch.Tensor:
    """Draw Binomial(`samples`, p) counts (uint8): the sum of `samples` Bernoulli draws for
    few samples, one uniform through the binomial CDF for many (both far faster than
    `torch.binomial`, and exact in distribution)."""
    counts = torch.zeros(p.shape, dtype=torch.uint8, device=p.device)
    if samples <= 4:
        for _ in range(samples):
            counts += torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p
        return counts
    uniform = torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype)
    for cdf in binomial_cdf(p, samples):  # counts = #{k < samples : u > P(K <= k)}
        counts += uniform > cdf
    return counts


_FUSED = {"on": False, "function": None}


def fuse_converters(enabled: bool) -> None:
    """Run MTJ conversions (without an explicit generator) as one compiled kernel
    (`torch.compile`): sampling, decoding and the backward's tensors in one pass over the
    sums, several times faster on a CPU than the elementwise ops one by one. The draws come
    from torch's global generator, one uniform per conversion through the binomial CDF."""
    _FUSED["on"] = enabled


def _mtj_fusable(
    sums: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    table: torch.Tensor,
    s: float,
    samples: int,
    tanh: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (decoded sums, STE mask or `1 - tanh^2`, residual) of an MTJ conversion, the
    count drawn by inverting Binomial(samples, p)'s CDF at one uniform (see mtj_counts)."""
    x = sums * a + b
    p = torch.sigmoid(x.clamp(-1.0, 1.0) * s)
    if tanh:
        g = torch.tanh(x * (s / 2.0))
        mask = 1.0 - g * g
    else:
        mask = ((x >= -1.0) & (x <= 1.0)).to(sums.dtype)
    uniform = torch.rand_like(p)
    decoded = torch.zeros_like(p) + table[0]
    for k, cdf in enumerate(binomial_cdf(p, samples)):
        decoded = decoded + (uniform > cdf).to(sums.dtype) * (table[k + 1] - table[k])
    out = (decoded - b) / a
    return out, mask, out - sums * mask


def _fused_mtj():
    if _FUSED["function"] is None:
        _FUSED["function"] = torch.compile(_mtj_fusable, dynamic=True)
    return _FUSED["function"]


class MTJConversion(torch.autograd.Function):
    """The MTJ converter of the module docstring as one autograd node: the forward samples and
    decodes in place, the backward applies the straight-through rule directly, so that the
    graph keeps two tensors per conversion instead of a chain of elementwise ops.

    With `r = out - mask * PS` (clamp: `mask` is 1 inside [-1, 1]; tanh: `g = 1 - tanh^2(s *
    x / 2)` in its place) and `out = (x_hat - b) / a` the gradients are `d out / d PS = mask`,
    `d out / d a = -r / a` and `d out / d b = (mask - 1) / a`, the derivatives of `(ste(
    surrogate, x_hat) - b) / a` (tests check them against that expression under autograd).
    """

    @staticmethod
    def forward(
        ctx,
        sums: torch.Tensor,
        a: torch.Tensor,
        b: torch.Tensor,
        converter: Converter,
        generator: torch.Generator | None,
        backward: str,
    ) -> torch.Tensor:
        s = converter.sensitivity
        table = torch.from_numpy(mtj_decoder(converter.samples, s)).to(sums.device, sums.dtype)
        if _FUSED["on"] and generator is None:
            try:
                out, mask, residual = _fused_mtj()(
                    sums, a, b, table, s, converter.samples, backward == "tanh"
                )
            except Exception as error:  # no working compiler here: the same node, eager
                warnings.warn(
                    f"finetune: MTJ conversions run eager ({error.__class__.__name__}"
                    f": {str(error)[:200]})",
                    RuntimeWarning,
                    stacklevel=2,
                )
                _FUSED["on"] = False
            else:
                ctx.save_for_backward(mask, residual, a)
                return out
        x = sums * a
        x += b
        if backward == "clamp":
            mask = (x >= -1.0) & (x <= 1.0)
            x.clamp_(-1.0, 1.0)
            p = torch.sigmoid(x * s)
        else:
            p = torch.sigmoid(x.clamp(-1.0, 1.0) * s)
            mask = torch.tanh(x * (s / 2.0))
            mask = 1.0 - mask * mask
        del x
        counts = mtj_counts(p, converter.samples, generator)
        del p
        out = torch.take(table, counts.to(torch.int64))
        out -= b
        out /= a
        residual = out - sums * mask
        ctx.save_for_backward(mask, residual, a)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        mask, residual, a = ctx.saved_tensors
        grad_sums = grad * mask if ctx.needs_input_grad[0] else None
        dims = [d for d in range(grad.dim()) if a.shape[d] == 1]
        grad_a = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_a = -(grad * residual).sum(dim=dims, keepdim=True) / a
        if ctx.needs_input_grad[2]:
            grad_b = (grad * (mask.to(grad.dtype) - 1.0)).sum(dim=dims, keepdim=True) / a
        return grad_sums, grad_a, grad_b, None, None, None


def _shift_add(
    converted: torch.Tensor, significance: list[float], stored: TorchWeightPlanes, batch: int
) -> torch.Tensor:
    """Rebuild the product from converted sums [C, J*B, I*D*N, *S] -> [B, N, *S]."""
    chunks, _, columns = converted.shape[:3]
    slices, devices = len(stored.significance), len(stored.device_signs)
    spatial = converted.shape[3:]
    values = converted.reshape(
        chunks, len(significance), batch, slices, devices, columns // (slices * devices), *spatial
    )
    dtype, device = converted.dtype, converted.device
    j = torch.tensor(significance, dtype=dtype, device=device)
    i = torch.tensor(stored.significance, dtype=dtype, device=device)
    d = torch.tensor(stored.device_signs, dtype=dtype, device=device)
    extra = [1] * len(spatial)
    weights = (
        j.reshape(-1, 1, 1, 1, 1, *extra)
        * i.reshape(1, 1, -1, 1, 1, *extra)
        * d.reshape(1, 1, 1, -1, 1, *extra)
    )
    return (values.sum(0) * weights).sum(dim=(0, 2, 3))


def crossbar_linear(
    x: torch.Tensor,
    w: torch.Tensor,
    path: Datapath,
    scale: torch.Tensor | None,
    offset: torch.Tensor | None,
    generator: torch.Generator | None,
    backward: str = "clamp",
) -> torch.Tensor:
    """Return x[B, K] @ w[K, N] for integer codes as the crossbar datapath computes it."""
    rows = x.shape[1]
    path = path.for_rows(rows)
    _check_exact(path)
    per_sum = path.rows_per_sum
    planes, significance = input_planes(x, path.streaming)  # [J, B, K]
    stored = weight_planes(w, path, filter_axis=1)  # [I, D, K, N]
    columns = stored.planes.permute(2, 0, 1, 3).reshape(rows, -1)  # [K, I*D*N]
    flat = planes.reshape(-1, rows)
    sums = torch.stack(
        [
            flat[:, start : start + per_sum] @ columns[start : start + per_sum]
            for start in range(0, rows, per_sum)
        ]
    )  # [C, J*B, I*D*N]
    converted = _convert_columns(sums, path, scale, offset, generator, backward)
    out = _shift_add(converted, significance, stored, x.shape[0])
    if isinstance(stored.input_sum_factor, torch.Tensor) or stored.input_sum_factor:
        out = out + x.sum(dim=1, keepdim=True) * stored.input_sum_factor
    return out


def _convert_columns(
    sums: torch.Tensor,
    path: Datapath,
    scale: torch.Tensor | None,
    offset: torch.Tensor | None,
    generator: torch.Generator | None,
    backward: str,
) -> torch.Tensor:
    """Convert sums [C, J*B, columns, *S] (columns on axis 2)."""
    chunks, rows = sums.shape[:2]
    converted = convert(
        sums.reshape(chunks * rows, *sums.shape[2:]), path, scale, offset, generator, backward
    )
    return converted.reshape(sums.shape)


def crossbar_conv(
    x: torch.Tensor,
    w: torch.Tensor,
    path: Datapath,
    strides: tuple[int, ...],
    pads: tuple[int, ...],
    dilations: tuple[int, ...],
    scale: torch.Tensor | None,
    offset: torch.Tensor | None,
    generator: torch.Generator | None,
    backward: str = "clamp",
) -> torch.Tensor:
    """Return the 2-d convolution (one group) of integer codes x[B, C, H, W] with w[M, C, kh,
    kw] as the crossbar datapath computes it: rows ordered (kernel tap, channel) as
    backend/kernels.py's im2col orders them, summed in chunks of the active rows."""
    if x.dim() != 4:
        raise MappingError(
            "finetune maps 2-d convolutions only",
            hint="1-d and 3-d convolutions are not supported by finetune yet",
        )
    batch, channels = x.shape[:2]
    kh, kw = w.shape[2:]
    path = path.for_rows(channels * kh * kw)
    _check_exact(path)
    padded = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
    planes, significance = input_planes(padded, path.streaming)  # [J, B, C, H, W]
    flat = planes.reshape(-1, *padded.shape[1:])
    stored = weight_planes(w, path, filter_axis=0)  # [I, D, M, C, kh, kw]
    taps = kh * kw
    rows = channels * taps
    per_sum = path.rows_per_sum
    chunks = -(-rows // per_sum)
    pad = chunks * per_sum - rows
    # rows ordered (kernel tap, channel) as backend/kernels.py's im2col orders them, padded to
    # whole chunks: one batched GEMM per chunk gives exactly that chunk's partial sums
    columns = F.unfold(flat, (kh, kw), dilation=dilations, stride=strides)  # [J*B, C*T, L]
    positions = columns.shape[-1]
    columns = columns.reshape(flat.shape[0], channels, taps, positions).transpose(1, 2)
    columns = F.pad(columns.reshape(flat.shape[0], rows, positions), (0, 0, 0, pad))
    columns = columns.reshape(flat.shape[0], chunks, per_sum, positions).transpose(0, 1)
    kernels = stored.planes.reshape(-1, channels, taps).transpose(1, 2).reshape(-1, rows)
    kernels = F.pad(kernels, (0, pad)).reshape(-1, chunks, per_sum).transpose(0, 1)
    sums = torch.matmul(kernels[:, None], columns)  # [C, J*B, I*D*M, L]
    out_h = (padded.shape[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    out_w = (padded.shape[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    sums = sums.reshape(*sums.shape[:3], out_h, out_w)
    converted = _convert_columns(sums, path, scale, offset, generator, backward)
    out = _shift_add(converted, significance, stored, batch)
    factor = stored.input_sum_factor
    if isinstance(factor, torch.Tensor) or factor:
        ones = torch.ones((1, channels, kh, kw), dtype=x.dtype, device=x.device)
        input_sum = F.conv2d(padded, ones, stride=strides, dilation=dilations)
        factor = factor.reshape(1, -1, 1, 1) if isinstance(factor, torch.Tensor) else factor
        out = out + input_sum * factor
    return out


def _check_exact(path: Datapath) -> None:
    low, high = path.sum_range()
    if max(abs(low), abs(high)) >= 2**24:
        raise MappingError(
            f"partial sums up to {max(abs(low), abs(high)):.0f} exceed the "
            "2**24 float32 keeps exact",
            hint="use fewer rows per sum or narrower slices",
        )


def initial_normalisation(path: Datapath, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Return an MTJ layer's starting per-column scale and offset: the program's calibrated
    ones, else the read's full range (as the simulator does)."""
    low, high = path.sum_range()
    scale, offset = path.converter.normalisation(low, high, columns)
    return scale.astype(np.float64), offset.astype(np.float64)
