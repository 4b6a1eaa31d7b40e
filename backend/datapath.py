"""The crossbar datapath: the arithmetic of a `LayerPlan` (plan.py), in torch, written once.

`product` computes one group's integer product `x[P, K] @ w[K, N]` the way the crossbar does:
input slices, stored weight slices, one partial sum per (row chunk, input slice, weight slice,
device, column), the layer's converter on each, shift-and-add, the encoding's digital
correction. Simulation (backend/simulator.py), fine-tuning (`crossbar_product`, with autograd
through straight-through rules), calibration (`partial_sums`) and the data-aware passes run this
code; the model itself is stated in plan.py's docstring.

How it runs. Output positions are processed in blocks of about `BLOCK_ELEMENTS` partial sums,
so a block's sums stay in cache while they are converted and added, but no fewer than make
each GEMM `GEMM_ROWS` high. The input codes are laid
out by row chunk once per call (`chunked_inputs`); per block, every input slice is a shift and
a mask of those patterns (`input_planes`), and each row chunk is one float32 GEMM `[J * p, R]
@ [R, I * D * N]` (exact: the plan bounds every sum below 2**24), giving the block's partial
sums. An ADC converts them in place (scale by its step, round half to even, clip when its
range can be exceeded); an MTJ samples and decodes them (below). Shift-and-add is one batched
matrix-vector product over input slices (float32 while exact, else float64), then sums over
chunks, weight slices and devices in float64. A converter that is lossless over the read's
whole range skips the slicing: the result is the integer product (float64 GEMM).

MTJ draws. A conversion of N samples is one uniform draw `u` inverted through the Binomial(N,
p) CDF (exact in distribution). In simulation (`Draws.per_sample`) the uniforms of input sample
`b` come from a generator seeded by (seed, layer, group, b), so a sample's result does not
depend on the batch it runs in or on the samples before it. In training (`Draws.stream`) each
block of positions draws from generators seeded by the call's key and the block.

Gradients (`crossbar_product`). The forward computes what the hardware computes; the backward
is the straight-through estimator of the sliced datapath: input slice `j` carries the gradient
share `width_j / bits / 2^shift_j` of its code, weight slice `i` of device `d` the share
`sign_d * width_i / (W * 2^shift_i * D)` (W the slices' total width), an ADC passes the
gradient where the sum lies inside its range and blocks it where it clips (a speculative layer
passes it everywhere: its recovered conversions are exact), an MTJ passes it per its rule
(`clamp`: StoX-Net's, 1 where `a * PS + b` lies in [-1, 1]; `tanh`: `1 - tanh^2(s * x / 2)`),
and its per-column normalisation gets `d out / d a = -(out - mask * PS) / a`, `d out / d b =
(mask - 1) / a` (out = `(x_hat - b) / a`). With lossless converters the gradient is exactly
that of `x @ w`. The forward keeps, per partial sum, the converter's mask (one byte for the
clamp rule and ADCs) and an MTJ's residual `out - mask * PS` (four bytes); the backward
rebuilds the input slices from the codes and runs two GEMMs per row chunk.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from imcc.errors import MappingError
from imcc.plan import MAX_EXACT, LayerPlan, mtj_decoder, slice_shifts, stored_values

BLOCK_ELEMENTS = 1 << 20
"""Partial sums converted at once: a block of output positions (4 MB of float32 sums), so a
block's sums stay in cache while they are converted and added."""
GEMM_ROWS = 256
"""The fewest rows of a row chunk's GEMM (input slices x positions) a block is cut to, except
where MTJ draws stream (`Draws.stream`, training: its draws are drawn per block, so the block
is part of what a seeded fine-tune computes). A layer with many chunks and columns gets few
positions from `BLOCK_ELEMENTS` alone, and short GEMMs run far below the BLAS rate: the
CIFAR-10 VGG-16 on xpert.hw (6-bit inputs; 36 chunks of 1,024 columns in its 512-channel
layers: 4 positions a block, GEMMs 24 rows high) simulated 64 images in 17.8-18.4 s with
`BLOCK_ELEMENTS` alone, 13.2-14.6 s with 128 rows, 10.8-11.0 s with 256, 10.5-11.4 s with
512, 11.3-12.0 s with 1,024 (2 cores, two runs each); the ResNet-20 on isaac, raella and
stox, whose GEMMs are taller already, within 3% either way. The results do not depend on
the block."""

BACKWARDS = ("clamp", "tanh")
"""The MTJ straight-through estimators: StoX-Net's clamp mask, or the `1 - tanh^2` variant."""


@dataclass
class Statistics:
    """What a layer's converters did: conversions, saturated ones, MTJ samples drawn."""

    conversions: int = 0
    saturated: int = 0
    samples: int = 0
    ones: int = 0  # MTJ samples that switched
    speculative_failures: int = 0  # wide-slice conversions that hit a min / max code
    recoveries: int = 0  # 1-bit conversions that re-ran the failed wide slices
    lossless: bool = True


@dataclass(frozen=True)
class Draws:
    """Where a layer's MTJ uniforms come from (see the module docstring).

    With `samples` (`per_sample`), input sample `first + b` of the call draws from a generator
    seeded by `key` and its index; the call's positions are `samples` samples' worth. Without
    (`stream`), each (row chunk, input slice) row of the block of positions starting at
    `start` draws from a generator seeded by `key`, `start` and the row. Generators are
    numpy's PCG64."""

    key: int
    first: int = 0
    samples: int = 0

    @staticmethod
    def per_sample(seed: int, layer: str, group: int, first: int, samples: int) -> Draws:
        """Return the draws of `samples` input samples starting at index `first`."""
        return Draws(_digest(seed, layer, group), first, samples)

    @staticmethod
    def stream(key: int) -> Draws:
        """Return draws from generators seeded by `key` (and the block's first position)."""
        return Draws(key)

    def uniforms(
        self,
        shape: tuple[int, int, int, int],
        start: int,
        positions: int,
        workspace: Workspace | None = None,
    ) -> torch.Tensor:
        """Return uniforms [C, J, p, COLS] (float32, numpy's PCG64) for the block [start,
        start + p) of a call of `positions` positions (a block holds whole samples when draws
        are per sample)."""
        chunks, slices, block, columns = shape
        out = (workspace or Workspace()).take("uniforms", shape, torch.float32)
        if not self.samples:  # per (chunk, slice): a generator seeded by key, block and row
            rows = out.numpy().reshape(chunks * slices, -1)
            _fill([(row, _digest(self.key, start, r)) for r, row in enumerate(rows)])
            return out
        per = positions // self.samples
        parts = np.empty((block // per, chunks, slices, per, columns), np.float32)
        first = self.first + start // per
        _fill([(parts[b].reshape(-1), _digest(self.key, first + b)) for b in range(block // per)])
        out.copy_(torch.from_numpy(parts).permute(1, 2, 0, 3, 4).reshape(shape))
        return out


def _fill(jobs: list[tuple[np.ndarray, int]]) -> None:
    """Fill each array with uniforms [0, 1) from numpy's PCG64 seeded by its seed (faster
    than torch's CPU generator)."""
    for array, seed in jobs:
        np.random.Generator(np.random.PCG64(seed)).random(out=array, dtype=np.float32)


def _digest(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big") >> 1


# -- weights and inputs -----------------------------------------------------------------------
def stored_parts(plan: LayerPlan, w: np.ndarray | torch.Tensor, group: int = 0) -> list[np.ndarray]:
    """Return what each device stores for integer weight codes w[K, N] (`stored_values`), or
    a MappingError when a value does not fit the weight slices."""
    mapping = plan.mapping
    codes = w.detach().cpu().to(torch.int64).numpy() if isinstance(w, torch.Tensor) else w
    centers = plan.group_centers(group)
    parts = stored_values(
        mapping.encoding, codes, plan.offset_bias, None if centers is None else centers[None, :]
    )
    top = max((int(part.max()) for part in parts if part.size), default=0)
    if top > plan.stored_capacity:
        raise MappingError(
            f"layer {plan.name}: a stored weight value {top} does not fit the "
            f"{sum(mapping.slices)} bits of slices {list(mapping.slices)}",
            hint="use wider slices or centers that keep |w - c| small",
        )
    return parts


def stored_slices(plan: LayerPlan, w: np.ndarray | torch.Tensor, group: int = 0) -> torch.Tensor:
    """Return the stored weight slices [I, D, K, N] (int64) of integer weight codes w[K, N]."""
    parts = stored_parts(plan, w, group)
    split = [
        [(part >> shift) & (2**width - 1) for part in parts]
        for shift, width in zip(plan.weight_shifts, plan.mapping.slices, strict=True)
    ]
    if len(parts) == 2 and plan.signed_columns:  # the pair subtracts in the column
        return torch.from_numpy(np.stack([np.stack([p - n]) for p, n in split]))
    return torch.from_numpy(np.stack([np.stack(devices) for devices in split]))


def correction(plan: LayerPlan, group: int = 0) -> torch.Tensor | float:
    """Return the digital correction per unit of input sum: per filter (center-offset), one
    number (offset), or 0."""
    if plan.mapping.encoding == "offset":
        return -float(plan.offset_bias)
    if plan.mapping.encoding == "center-offset":
        return torch.from_numpy(plan.group_centers(group)).to(torch.float64)
    return 0.0


def weight_columns(plan: LayerPlan, w: torch.Tensor, group: int = 0) -> torch.Tensor:
    """Return the crossbar columns of integer weights w[K, N] laid out by row chunk: float32
    [C, R, I * D * N] (a short chunk's empty rows are zero)."""
    stored = stored_slices(plan, w, group).to(torch.float32)  # [I, D, K, N]
    flat = stored.permute(2, 0, 1, 3).reshape(plan.rows, -1)  # [K, I*D*N]
    flat = torch.cat([flat, flat.new_zeros(1, flat.shape[1])])  # row K: an empty slot
    index = torch.from_numpy(plan.row_index)
    return flat[index].reshape(plan.chunks, plan.rows_per_sum, -1).contiguous()


def input_slicing(
    plan: LayerPlan, slices: tuple[int, ...] | None = None
) -> tuple[tuple[int, int, bool], ...]:
    """Return (shift, width, read signed) of each input slice, MSB first: the top slice of a
    signed input is read as a signed number. `slices` replaces the plan's (speculation's
    1-bit re-run)."""
    widths = slices or plan.streaming.slices
    signed = plan.streaming.signed
    return tuple(
        (shift, width, signed and j == 0)
        for j, (width, shift) in enumerate(zip(widths, slice_shifts(widths), strict=True))
    )


def single_stream(plan: LayerPlan) -> bool:
    """Say whether a layer streams each input in one slice of all its bits (no speculation):
    that slice reads the code itself (a signed input's top slice reads it signed)."""
    return plan.input_slices == 1 and not plan.streaming.speculate


def chunked_inputs(plan: LayerPlan, x: torch.Tensor) -> torch.Tensor:
    """Return the code patterns `x mod 2^bits` of inputs x[P, K] laid out by row chunk:
    [P, C * R] in the narrowest integer type that holds them (an empty slot holds 0, which
    every slice reads as 0); for a `single_stream` layer, the codes themselves (float32,
    exact), which are its one slice's values: with contiguous chunks, x itself [P, K] (each
    chunk a column range, the last one short; `read` takes it so)."""
    bits = plan.streaming.bits
    if single_stream(plan):
        pattern = x.to(torch.float32)
        if plan.contiguous_chunks:
            return pattern
    elif bits <= 8:  # the narrowing cast keeps the low 8 bits (two's complement)
        pattern = x.to(torch.uint8)
        if bits < 8:
            pattern.bitwise_and_(2**bits - 1)
    else:
        dtype = torch.int16 if bits <= 15 else torch.int32
        pattern = (x.to(torch.int32) & (2**bits - 1)).to(dtype)
    total = plan.chunks * plan.rows_per_sum
    if plan.contiguous_chunks:
        return torch.nn.functional.pad(pattern, (0, total - plan.rows))
    padded = torch.cat([pattern, pattern.new_zeros(pattern.shape[0], 1)], dim=1)
    return padded[:, torch.from_numpy(plan.row_index)]


def input_planes(
    patterns: torch.Tensor,
    slicing: tuple[tuple[int, int, bool], ...],
    workspace: Workspace | None = None,
    scaled: bool = False,
) -> torch.Tensor:
    """Return the values each input slice streams, float32 [J, p, C * R], from chunked code
    patterns [p, C * R] (all slices in one shift, one mask and one conversion); `scaled`:
    times their significance 2^shift_j (the bits masked in place, no shift). A single
    stream's float32 codes (`chunked_inputs`) are its values already: returned as a view."""
    if patterns.dtype == torch.float32:
        return patterns.unsqueeze(0)
    count = len(slicing)
    shape = (count, *patterns.shape)
    shifts, masks = _slice_masks(slicing, patterns.dtype, scaled)
    space = workspace or Workspace()
    parts = space.take("parts", shape, patterns.dtype)
    if scaled:
        torch.bitwise_and(patterns.unsqueeze(0), masks, out=parts)
    else:
        torch.bitwise_right_shift(patterns.unsqueeze(0), shifts, out=parts)
        parts.bitwise_and_(masks)
    planes = space.take("planes", shape, torch.float32)
    planes.copy_(parts)
    for j, (shift, width, signed) in enumerate(slicing):
        if signed:  # two's complement of the top slice: subtract 2^width from the negatives
            top = 2 ** (width + shift) if scaled else 2**width
            planes[j].sub_((planes[j] >= top // 2).to(torch.float32), alpha=top)
    return planes


@lru_cache(maxsize=256)
def _slice_masks(
    slicing: tuple[tuple[int, int, bool], ...], dtype: torch.dtype, scaled: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the shift [J, 1, 1] and mask [J, 1, 1] of each input slice (masks in place when
    `scaled`)."""
    count = len(slicing)
    shifts = torch.tensor([s for s, _, _ in slicing], dtype=dtype).view(count, 1, 1)
    masks = [(2**w - 1) << (s if scaled else 0) for s, w, _ in slicing]
    return shifts, torch.tensor(masks, dtype=dtype).view(count, 1, 1)


class Workspace:
    """Buffers a layer's blocks reuse (a fresh multi-megabyte tensor per block costs page
    faults on every block): `take(name, shape, dtype)` returns a view of the named buffer,
    grown when too small. A view is valid until the next `take` of the same name."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """Return an uninitialised tensor of `shape` and `dtype` backed by buffer `name`."""
        size = math.prod(shape)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < size:
            buffer = self.buffers[name] = torch.empty(size, dtype=dtype)
        return buffer[:size].view(shape)


def read(
    plan: LayerPlan,
    patterns: torch.Tensor,
    columns: torch.Tensor,
    slicing: tuple[tuple[int, int, bool], ...],
    workspace: Workspace | None = None,
    name: str = "sums",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the partial sums [C, J * p, COLS] of chunked input patterns [p, C * R] (float32,
    exact: one GEMM per row chunk) and the input planes [J, p, C * R] they were read from
    (in `workspace`'s buffers when given; `name` is the sums' buffer)."""
    space = workspace or Workspace()
    planes = input_planes(patterns, slicing, space)
    slices, positions = planes.shape[:2]
    chunks, rows, width = columns.shape
    sums = space.take(name, (chunks, slices * positions, width), torch.float32)
    for c in range(chunks):
        a = planes[:, :, c * rows : (c + 1) * rows]  # short when the planes hold only the rows
        torch.mm(a.reshape(slices * positions, -1), columns[c, : a.shape[-1]], out=sums[c])
    return sums, planes


# -- converters -----------------------------------------------------------------------------
def convert_adc(
    sums: torch.Tensor,
    levels: tuple[int, int, float],
    stats: Statistics,
    saturable: bool = True,
) -> None:
    """Convert partial sums in place to ADC codes (in units of the step: multiply by `step`
    to get partial-sum units)."""
    levels_low, levels_high, step = levels
    stats.conversions += sums.numel()
    if step != 1.0:  # a power of two scales exactly; another step divides (correctly rounded)
        (sums.mul_(1.0 / step) if math.log2(step).is_integer() else sums.div_(step)).round_()
        stats.lossless = False
    if not saturable or not sums.numel():
        return
    low, high = (float(v) for v in torch.aminmax(sums))
    if high > levels_high or low < levels_low:
        count = int(torch.count_nonzero(sums > levels_high))
        count += int(torch.count_nonzero(sums < levels_low))
        stats.saturated += count
        stats.lossless = False
        sums.clamp_(levels_low, levels_high)


def binomial_cdf(p: torch.Tensor, samples: int) -> Iterator[torch.Tensor]:
    """Yield P(K <= k) for k = 0 .. samples - 1 of K ~ Binomial(`samples`, p), elementwise
    (the pmf by the recurrence `pmf(k + 1) = pmf(k) * p / q * (samples - k) / (k + 1)`)."""
    q = 1.0 - p
    ratio = p / q  # p <= sigmoid(s) < 1: finite
    pmf = _power(q, samples)
    cdf = pmf
    for k in range(samples):
        yield cdf
        if k + 1 < samples:
            pmf = pmf * ratio * ((samples - k) / (k + 1))
            cdf = cdf + pmf


def _power(q: torch.Tensor, n: int) -> torch.Tensor:
    """Return q**n (n >= 1) by repeated squaring: a few elementwise products, where torch's pow
    evaluates a general power per element."""
    out, base = None, q
    while True:
        if n & 1:
            out = base if out is None else out * base
        n >>= 1
        if not n:
            return out
        base = base * base


def convert_mtj(
    sums: torch.Tensor,
    scale: torch.Tensor,
    offset: torch.Tensor,
    plan: LayerPlan,
    uniform: torch.Tensor,
    stats: Statistics,
    backward: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Convert partial sums [..., COLS] in place through stochastic MTJs (per-column `scale`
    a, `offset` b), with one `uniform` per conversion. With `backward` the sums are kept and
    the converted values returned after what the straight-through rule needs: the gradient
    mask (clamp: bool; tanh: float) and the residual `out - mask * PS` of `d out / d a`."""
    converter = plan.converter
    s, samples = converter.sensitivity, converter.samples
    # y = s * (a * PS + b), the normalised sum times the sensitivity, clamped to [-s, s]
    y = torch.addcmul(offset * s, sums, scale * s)
    mask = None
    if backward == "clamp":
        mask = torch.abs(y) <= s
    elif backward == "tanh":
        mask = torch.tanh(y * 0.5)
        mask = mask.mul_(mask).neg_().add_(1.0)
    p = y.clamp_(-s, s).sigmoid_()
    table = mtj_decoder(samples, s).tolist()
    # decoded sums per count: (x_hat_k - b) / a, per column
    levels = [(value - offset) / scale for value in table]
    out = sums if backward is None else torch.empty_like(sums)  # training keeps PS
    if samples == 1:  # Binomial(1, p): one switch when u < p
        switched = torch.lt(uniform, p)
        ones = int(switched.sum())
        torch.mul(switched, levels[1] - levels[0], out=out).add_(levels[0])
    else:  # count = #{k < N : u > P(K <= k)}, decoded as it counts
        ones = 0
        out.copy_(levels[0].expand_as(p))
        for k, cdf in enumerate(binomial_cdf(p, samples)):
            above = torch.gt(uniform, cdf)
            ones += int(above.sum())
            out.addcmul_(above, levels[k + 1] - levels[k])
    del p
    stats.conversions += sums.numel()
    stats.samples += sums.numel() * samples
    stats.ones += ones
    stats.lossless = False
    if backward is None:
        return None
    weight = mask.to(sums.dtype) if mask.dtype == torch.bool else mask
    residual = torch.addcmul(out, weight, sums, value=-1.0)  # out - mask * PS
    return mask, residual, out


# -- shift-and-add ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Significance:
    """The shift-and-add weights of a plan: per input slice [J] and per (weight slice, device)
    [I * D] (times the ADC step); the second stage as a matrix [I * D * N, N] (float32 when
    the whole sum stays exact in it, else float64), and whether the first stage, the sum over
    row chunks and input slices, stays exact in float32."""

    inputs: torch.Tensor
    columns: torch.Tensor
    merge: torch.Tensor
    float32: bool
    chunked: torch.Tensor  # `inputs` once per row chunk (float64 [C * J])
    chunked32: torch.Tensor  # the same in float32 (exact: powers of two)

    @property
    def dtype(self) -> torch.dtype:
        """The type of the shift-and-add's result: float32 when the whole sum stays exact."""
        return self.merge.dtype


def _significance(plan: LayerPlan, step: float) -> _Significance:
    inputs = torch.tensor([2.0**s for s in plan.input_shifts])
    columns = torch.tensor(
        [2.0**s * sign * step for s in plan.weight_shifts for sign in plan.device_signs]
    )
    low, high = plan.sum_range  # converted codes are at most the sums (ADC: in step units)
    code = max(abs(low), abs(high), 2.0**plan.converter.bits)
    bound = plan.chunks * float(inputs.abs().sum()) * code
    # the second stage in float32 too when the whole sum stays exact
    exact = bound * float(columns.abs().sum()) < MAX_EXACT and step == float(int(step))
    merge = torch.kron(
        columns.to(torch.float64).view(-1, 1), torch.eye(plan.filters, dtype=torch.float64)
    ).to(torch.float32 if exact else torch.float64)
    chunked = inputs.repeat(plan.chunks).to(torch.float64)
    return _Significance(
        inputs, columns, merge, bound < MAX_EXACT, chunked, chunked.to(torch.float32)
    )


def shift_add(
    converted: torch.Tensor,
    plan: LayerPlan,
    weights: _Significance,
    positions: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return the product [p, N] (of type `weights.dtype`, written into `out` when given) from
    converted sums [C, J * p, COLS]: one matrix-vector product over row chunks and input
    slices (float32 while exact, else float64), then one small GEMM over weight slices and
    devices (float32 when the whole sum stays exact, else float64)."""
    values = converted.view(weights.chunked.shape[0], -1)
    if weights.float32:  # every partial result of the first stage below 2**24: exact
        merged = torch.mv(values.t(), weights.chunked32)
        if weights.dtype == torch.float64:
            merged = merged.to(torch.float64)
    else:
        merged = torch.mv(values.t().to(torch.float64), weights.chunked)
    return torch.mm(merged.view(positions, -1), weights.merge, out=out)


# -- the product --------------------------------------------------------------------------------
def _block(plan: LayerPlan, positions: int, draws: Draws | None) -> int:
    """Return the output positions per block: about `BLOCK_ELEMENTS` partial sums, whole
    samples when draws are per sample, and unless the draws stream, GEMMs at least
    `GEMM_ROWS` high."""
    per_position = plan.chunks * plan.input_slices * max(plan.columns, plan.rows_per_sum)
    block = max(1, BLOCK_ELEMENTS // per_position)
    per = 1  # positions per sample where the draws are per sample
    if draws is not None and draws.samples:
        per = max(1, positions // draws.samples)
        block = max(per, block // per * per)
    if draws is None or draws.samples:  # not streamed: the block is free
        tall = -(-GEMM_ROWS // plan.input_slices)
        block = max(block, -(-tall // per) * per)
    return min(block, positions)


def _recover(
    values: torch.Tensor,
    plan: LayerPlan,
    patterns: torch.Tensor,
    columns: torch.Tensor,
    levels: tuple[int, int, float],
    stats: Statistics,
    workspace: Workspace | None = None,
) -> torch.Tensor:
    """RAELLA's speculation: a wide-slice conversion that hit the lowest or highest code is
    discarded and its input bits re-run as 1-bit slices (through the same ADC); only those
    columns are converted again. `values` are codes [C, J * p, COLS]."""
    levels_low, levels_high, _ = levels
    low, _ = plan.sum_range
    failed = values >= levels_high
    if low < 0:
        failed |= values <= levels_low
    flagged = int(torch.count_nonzero(failed))
    stats.speculative_failures += flagged
    if not flagged:
        return values
    streaming = plan.streaming
    bitwise = (1,) * streaming.bits
    bits, _ = read(plan, patterns, columns, input_slicing(plan, bitwise), workspace, "bits")
    convert_adc(bits, levels, Statistics())  # the re-run's codes; counted as recoveries
    chunks, positions = values.shape[0], values.shape[1] // plan.input_slices
    bits = bits.reshape(chunks, streaming.bits, positions, -1)
    wide = values.reshape(chunks, plan.input_slices, positions, -1)
    failed = failed.reshape(wide.shape)
    for j, (width, shift) in enumerate(zip(streaming.slices, plan.input_shifts, strict=True)):
        recovered = torch.zeros_like(wide[:, j])
        for q in range(shift, shift + width):
            recovered.add_(bits[:, streaming.bits - 1 - q], alpha=2.0 ** (q - shift))
        wide[:, j] = torch.where(failed[:, j], recovered, wide[:, j])
        stats.recoveries += width * int(torch.count_nonzero(failed[:, j]))
    return values


def product(
    plan: LayerPlan,
    x: np.ndarray | torch.Tensor,
    w: np.ndarray | torch.Tensor,
    group: int = 0,
    *,
    stats: Statistics | None = None,
    draws: Draws | None = None,
) -> np.ndarray:
    """Return `x @ w` for integer codes x[P, K] and w[K, N] of one group as the crossbar
    computes it (int64 [P, N]); exact when every partial sum fits the converter. MTJ layers
    need `draws`."""
    stats = stats if stats is not None else Statistics()
    x, w = _tensor(x), _tensor(w)
    positions = x.shape[0]
    factor = correction(plan, group)
    with torch.no_grad():
        if plan.lossless:  # every partial sum converts exactly: the shift-and-add is the product
            stats.conversions += plan.chunks * plan.input_slices * plan.columns * positions
            out = _lossless(plan, x, w, group)
        else:
            out = _run(plan, x, w, group, stats, draws, factor)
    return torch.round(out).to(torch.int64).numpy()


def _lossless(plan: LayerPlan, x: torch.Tensor, w: torch.Tensor, group: int) -> torch.Tensor:
    """Return the integer product x @ w of a lossless plan: a float32 GEMM while |x| * |w| *
    K stays below 2**24 (exact), else float64; the stored weights are checked as the sliced
    path checks them."""
    stored_parts(plan, w, group)
    bound = 2.0**plan.streaming.bits * 2.0 ** (plan.weight_bits - 1) * plan.rows
    dtype = torch.float32 if bound < MAX_EXACT else torch.float64
    return x.to(dtype) @ w.to(dtype)


@dataclass
class _Kept:
    """What a training forward keeps of one block of positions [start, start + positions) for
    the backward: the converter's gradient mask per partial sum (a 0-d True when it passes
    everywhere) and, for an MTJ, the residual of `d out / d a`."""

    start: int
    positions: int
    mask: torch.Tensor
    residual: torch.Tensor | None = None


def _run(
    plan: LayerPlan,
    x: torch.Tensor,
    w: torch.Tensor,
    group: int,
    stats: Statistics,
    draws: Draws | None,
    factor: torch.Tensor | float,
    scale: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
    keep: list[_Kept] | None = None,
    backward: str = "clamp",
) -> torch.Tensor:
    """The sliced datapath of `product` (float64 [P, N], no gradient); with `keep`, each
    block's straight-through state is appended to it (`backward`: the MTJ rule)."""
    positions = x.shape[0]
    columns = weight_columns(plan, w, group)
    table = input_slicing(plan)
    chunked = chunked_inputs(plan, x)
    mtj = plan.converter.is_mtj
    if mtj:
        if draws is None:
            raise ValueError("an MTJ layer needs its draws")
        if draws.samples and positions % draws.samples:
            raise ValueError(f"{positions} positions are not {draws.samples} samples' worth")
        if scale is None or offset is None:
            scale_np, offset_np = plan.normalisation(group)
            scale, offset = torch.from_numpy(scale_np), torch.from_numpy(offset_np)
        levels = (0, 0, 1.0)
    else:
        levels = plan.adc
    low, high = levels[0] * levels[2], levels[1] * levels[2]
    saturable = not mtj and (plan.can_saturate or plan.streaming.speculate)
    weights = _significance(plan, levels[2])
    out = torch.empty((positions, plan.filters), dtype=weights.dtype)
    block = _block(plan, positions, draws)
    space = Workspace()
    for start in range(0, positions, block):
        xb = x[start : start + block]
        p = xb.shape[0]
        patterns = chunked[start : start + block]
        sums, _ = read(plan, patterns, columns, table, space)
        if mtj:
            uniform = draws.uniforms(
                (plan.chunks, plan.input_slices, p, plan.columns), start, positions
            )
            rule = backward if keep is not None else None
            kept = convert_mtj(sums, scale, offset, plan, uniform.view(sums.shape), stats, rule)
            if kept is not None:
                mask, residual, sums = kept
                keep.append(_Kept(start, p, mask, residual))
        else:
            if keep is not None:  # the ADC passes the gradient where the sum is in range
                if plan.streaming.speculate:  # recovered conversions are exact: everywhere
                    keep.append(_Kept(start, p, torch.ones((), dtype=torch.bool)))
                elif saturable:
                    keep.append(_Kept(start, p, (sums >= low) & (sums <= high)))
                else:
                    keep.append(_Kept(start, p, torch.ones((), dtype=torch.bool)))
            convert_adc(sums, levels, stats, saturable)
            if plan.streaming.speculate:
                sums = _recover(sums, plan, patterns, columns, levels, stats, space)
        shift_add(sums, plan, weights, p, out=out[start : start + p])
    out = out.to(torch.float64)
    if isinstance(factor, torch.Tensor) or factor:
        out += _row_sums(x, plan) * factor
    return out


def _row_sums(x: torch.Tensor, plan: LayerPlan) -> torch.Tensor:
    """Return each position's input sum (float64 [P, 1], exact for integer codes)."""
    if not x.dtype.is_floating_point and 2.0**plan.streaming.bits * plan.rows < 2**31:
        # integer codes whose sums fit int32: a native int32 sum, far faster than a cast
        return x.sum(dim=1, keepdim=True, dtype=torch.int32).to(torch.float64)
    return x.to(torch.float64).sum(dim=1, keepdim=True)


def _tensor(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Return an array as a tensor (sharing memory when it can be written)."""
    if isinstance(a, torch.Tensor):
        return a
    a = np.asarray(a)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def partial_sums(
    plan: LayerPlan, x: np.ndarray | torch.Tensor, w: np.ndarray | torch.Tensor, group: int = 0
) -> np.ndarray:
    """Return the partial sums the converters of one group see for input codes x[P, K]:
    float32 [C, J, P, I * D * N] (columns ordered [weight slice][device][filter])."""
    x, w = _tensor(x), _tensor(w)
    with torch.no_grad():
        sums, _ = read(
            plan, chunked_inputs(plan, x), weight_columns(plan, w, group), input_slicing(plan)
        )
    return sums.reshape(plan.chunks, plan.input_slices, x.shape[0], -1).numpy()


def chunk_products(plan: LayerPlan, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the full-precision products of each row chunk, [P, C, N] (float64), and the
    inputs each chunk sums, [P, C]: what the column of an unsliced weight would add per read
    (encode-weights chooses centers on them)."""
    x64 = np.concatenate([x.astype(np.float64), np.zeros((x.shape[0], 1))], axis=1)
    w64 = np.concatenate([w.astype(np.float64), np.zeros((1, w.shape[1]))], axis=0)
    index = plan.row_index.reshape(plan.chunks, plan.rows_per_sum)
    xs = x64[:, index]  # [P, C, R]
    ws = w64[index]  # [C, R, N]
    return np.einsum("pcr,crn->pcn", xs, ws), xs.sum(axis=2)


# -- training: the product with straight-through gradients --------------------------------------
def crossbar_product(
    x: torch.Tensor,
    w: torch.Tensor,
    plan: LayerPlan,
    group: int = 0,
    scale: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
    backward: str = "clamp",
    key: int | None = None,
    integral: bool = False,
) -> torch.Tensor:
    """Return `x @ w` for integer-valued codes x[P, K], w[K, N] (float tensors, possibly
    requiring grad) as the crossbar computes it, differentiable by the straight-through rules
    of the module docstring. An MTJ layer normalises with `scale` / `offset` [I * D * N] (its
    learnable `a`, `b`; the plan's when None) and draws from generators seeded by `key` (one
    drawn from torch's global generator when None, so torch.manual_seed makes runs
    repeatable). The codes are rounded first unless the caller states they are exact integers
    (`integral`: a straight-through `v + (round(v) - v).detach()` is one, by Sterbenz's
    lemma). The result has x's dtype."""
    if backward not in BACKWARDS:
        raise ValueError(f"unknown MTJ backward {backward!r}; one of {', '.join(BACKWARDS)}")
    if plan.converter.is_mtj:
        if scale is None or offset is None:
            scale_np, offset_np = plan.normalisation(group)
            scale, offset = torch.from_numpy(scale_np), torch.from_numpy(offset_np)
        if key is None:
            key = int(torch.randint(0, 2**62, (1,)).item())
    else:
        scale = offset = torch.zeros(0)
    return _CrossbarProduct.apply(x, w, scale, offset, plan, group, backward, key or 0, integral)


class _CrossbarProduct(torch.autograd.Function):
    """The sliced product as one autograd node: the forward runs the datapath and keeps, per
    partial sum, the converter's gradient mask (and an MTJ's residual); the backward applies
    the straight-through rules with two GEMMs per row chunk."""

    @staticmethod
    def forward(ctx, x, w, scale, offset, plan, group, backward, key, integral):
        stats = Statistics()
        x_codes, w_codes = x.detach(), w.detach()
        if not integral:
            x_codes, w_codes = torch.round(x_codes), torch.round(w_codes)
        factor = correction(plan, group)
        kept: list[_Kept] = []
        if plan.lossless:
            out = _lossless(plan, x_codes, w_codes, group)
        else:
            mtj = plan.converter.is_mtj
            out = _run(
                plan,
                x_codes,
                w_codes,
                group,
                stats,
                Draws.stream(key) if mtj else None,
                factor,
                scale.detach().to(torch.float32) if mtj else None,
                offset.detach().to(torch.float32) if mtj else None,
                kept if any(ctx.needs_input_grad) else None,
                backward,
            )
        ctx.save_for_backward(x_codes, w_codes, scale, offset)
        ctx.plan, ctx.group, ctx.kept = plan, group, kept
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x_codes, w_codes, scale, _ = ctx.saved_tensors
        plan, group = ctx.plan, ctx.group
        g = grad.to(torch.float32)
        factor = correction(plan, group)
        if plan.lossless:
            gx = g @ w_codes.to(torch.float32).t()
            gw = x_codes.to(torch.float32).t() @ g
            return gx.to(grad.dtype), gw.to(grad.dtype), *(None,) * 7
        if ctx.kept is None:  # the forward's masks and residuals went to the first backward
            raise RuntimeError("the crossbar product's backward runs once per forward")
        gx, gw, ga, gb = _backward(plan, group, x_codes, w_codes, scale, g, ctx.kept)
        ctx.kept = None
        if isinstance(factor, torch.Tensor):  # the digital input-sum correction
            gx += (g @ factor.to(torch.float32))[:, None]
        elif factor:
            gx += factor * g.sum(dim=1, keepdim=True)
        needs = ctx.needs_input_grad
        return (
            gx.to(grad.dtype) if needs[0] else None,
            gw.to(grad.dtype) if needs[1] else None,
            ga if needs[2] else None,
            gb if needs[3] else None,
            None,
            None,
            None,
            None,
            None,
        )


def _backward(plan, group, x_codes, w_codes, scale, g, kept: list[_Kept]):
    """Return the straight-through gradients of `_CrossbarProduct` in x, w, and an MTJ's
    normalisation `a`, `b` (see the module docstring), block by block from the forward's
    kept masks and residuals."""
    positions = x_codes.shape[0]
    columns = weight_columns(plan, w_codes, group)  # [C, R, COLS]
    table = input_slicing(plan)
    chunked = chunked_inputs(plan, x_codes)
    mtj = plan.converter.is_mtj
    weights = _significance(plan, 1.0)
    share_in = torch.tensor([w / plan.streaming.bits for w in plan.streaming.slices])
    total = sum(plan.mapping.slices)
    share_w = torch.tensor(
        [wd / (total * plan.devices) for wd in plan.mapping.slices for _ in plan.device_signs]
    )
    scaled = columns * weights.columns.to(torch.float32).repeat_interleave(plan.filters)
    chunks, rows, width = columns.shape
    slices, ids, filters = plan.input_slices, plan.weight_slices * plan.devices, plan.filters
    # with contiguous chunks, chunk c's gradient is columns [c R, c R + R) of the rows' (the last
    # chunk short), each written once (beta=0): no zero fill, no padded slots; else slots
    contiguous = plan.contiguous_chunks
    gx = torch.empty((positions, plan.rows if contiguous else chunks * rows), dtype=torch.float32)
    gw = torch.zeros((chunks, rows, width), dtype=torch.float32)
    ga = torch.zeros((slices, width), dtype=torch.float64) if mtj else None
    gb = torch.zeros((slices, width), dtype=torch.float64) if mtj else None
    space = Workspace()
    for part in kept:
        start, p = part.start, part.positions
        planes = input_planes(chunked[start : start + p], table, space, scaled=True)
        gp = g[start : start + p].reshape(1, 1, p, 1, filters)
        shape = (chunks, slices, p, ids, filters)
        if part.mask.dim():
            h = torch.mul(part.mask.view(shape), gp)  # M * g per partial sum
        else:
            h = gp.expand(shape).contiguous()
        if mtj:  # g does not depend on the chunk: sum over chunks first, then positions
            residual = part.residual.view(shape).sum(dim=0)  # [J, p, ID, N]
            ga -= torch.mul(residual, gp[0]).sum(dim=1).reshape(slices, width)
            if part.mask.dtype == torch.bool:  # chunks outside the range, an exact count
                outside = chunks - part.mask.view(shape).sum(dim=0, dtype=torch.int32)
            else:
                outside = (1.0 - part.mask.view(shape)).sum(dim=0)
            gb -= torch.mul(outside, gp[0]).sum(dim=1).reshape(slices, width)  # (M - 1) * g
        h = h.view(chunks, slices, p * width)
        rows_of = gx[start : start + p]
        for c in range(chunks):
            # x: (sum_j width_j / bits * H_c,j) @ (W_c * 2^shift_i * sign_d)^T
            merged = torch.mv(h[c].t(), share_in).view(p, width)
            target = rows_of[:, c * rows : (c + 1) * rows]
            n = target.shape[1]
            target.addmm_(merged, scaled[c, :n].t(), beta=0)
            # w: sum_j (2^shift_j * X_j)^T @ H_c,j, one GEMM over the slices
            inputs = planes[:, :, c * rows : (c + 1) * rows]
            n = inputs.shape[-1]
            gw[c, :n].addmm_(inputs.reshape(slices * p, n).t(), h[c].view(slices * p, width))
    # back from chunk slots to rows; weight columns (i, d, n) to filters with their shares
    grad_w_slots = (gw.view(chunks * rows, ids, filters) * share_w.view(1, -1, 1)).sum(1)
    if contiguous:  # slot k holds row k: the rows are the first slots
        grad_x, grad_w = gx, grad_w_slots[: plan.rows]
    else:  # index plan.rows marks an empty slot: summed into a row dropped after
        index = torch.from_numpy(plan.row_index)
        grad_x = torch.zeros((positions, plan.rows + 1), dtype=torch.float32)
        grad_x = grad_x.index_add_(1, index, gx)[:, :-1]
        grad_w = torch.zeros((plan.rows + 1, filters), dtype=torch.float32)
        grad_w = grad_w.index_add_(0, index, grad_w_slots)[:-1]
    if mtj:  # d out / d a = -r / a and d out / d b = (mask - 1) / a, times 2^shift_j etc.
        column = weights.columns.repeat_interleave(filters).to(torch.float64)
        inputs = weights.inputs.to(torch.float64).view(-1, 1)
        a64 = scale.detach().to(torch.float64)
        ga = ((ga * inputs).sum(0) * column / a64).to(scale.dtype)
        gb = ((gb * inputs).sum(0) * column / a64).to(scale.dtype)
    return grad_x, grad_w, ga, gb
