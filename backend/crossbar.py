"""The bit-accurate crossbar datapath of one matrix product: slices, partial sums, converters.

One documented model, executed exactly (all sums are integers; float32 GEMMs are exact while a
partial sum stays below 2**24, which `MAX_EXACT` checks; reconstruction runs in float64):

1. Inputs. An input code `x` of `b` bits (two's complement when signed) streams as slices, most
   significant first (`#input<slices = [3, 3, 2]>`): slice `j` carries the bits
   `[shift_j, shift_j + width_j)` of `x mod 2^b` as an unsigned value, except that the top slice
   of a signed input is read as a signed `width`-bit number (bipolar drivers), so that
   `x = sum_j slice_j * 2^shift_j` holds exactly.
2. Weights. A weight code `w` (symmetric, `|w| <= 2^(B-1) - 1`) is stored by its encoding:
   `offset` stores `w + 2^(B-1)` (unsigned) on one device per slice, and the digital datapath
   subtracts `2^(B-1) * sum_k x_k` (from a running input sum); `differential` stores `max(w, 0)`
   and `max(-w, 0)` on a device pair: with `signed_columns` the pair's currents subtract in the
   column (one signed partial sum per slice), otherwise both columns are converted and
   subtracted digitally. `center-offset` (RAELLA) stores the signed offset `w - c_n` from the
   filter's center `c_n` (the op's `centers`) on the pair as `differential` does, and the
   digital datapath adds `c_n * sum_k x_k`. Each stored value splits into the weight slices of
   `#weights<...>`; a value wider than the slices is a mapping error, never truncated.
3. Partial sums. Rows are summed in chunks of the crossbar's active rows (the last chunk may be
   shorter): per (row chunk, input slice, weight slice, device, position, column) one integer
   partial sum, exactly what the column converter sees.
4. Converters act on each partial sum (see `Converter` below): a B-bit ADC (full-scale: a
   power-of-two step so the largest sum the read can produce fits, rounding to nearest; or
   saturate: unit step, clip), a 1-bit sense amplifier (a 1-bit full-scale ADC), or a stochastic
   SOT-MTJ (StoX-Net). The MTJ normalises each sum, `x = clamp(a * PS + b, -1, 1)`, with the
   per-column `a`, `b` of the layer's `ps_scale` / `ps_offset` (calibrate-mtj) or, without them,
   over the read's full range (`a = 1 / radius`, `b = -middle / radius`); it switches to +1 with
   `p = sigmoid(s * x)`, N samples are one Binomial(N, p) draw (one uniform draw when N = 1),
   and the counter's mean `m = 2 * ones / N - 1` is decoded by inverting its expectation
   `E[m] = tanh(s * x / 2)`: `x_hat = clip(2 * atanh(m) / s, -1, 1)`, `PS_hat = (x_hat - b) / a`.
5. Shift-and-add: `acc = sum 2^shift_j * 2^wshift_i * sign_d * converted` over chunks, slices and
   devices, plus the encoding's digital correction. With lossless converters `acc == x @ w`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from imcc.errors import MappingError
from imcc.ir.mapping import InputStreaming, WeightMapping
from imcc.target import ConverterKind

MAX_EXACT = 2**24
"""float32 represents every integer below this exactly, so GEMMs whose sums stay below it are."""

BLOCK_ELEMENTS = 1 << 22
"""Partial sums materialised at once (positions are processed in blocks to bound memory)."""


def slice_shifts(widths: tuple[int, ...]) -> list[int]:
    """Return the bit offset of each slice, most significant slice first ([3, 3, 2] -> 5, 2, 0)."""
    return [sum(widths[i + 1 :]) for i in range(len(widths))]


def input_planes(
    x: np.ndarray, streaming: InputStreaming, dtype: type = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Return the input slices [J, ...] (values streamed per array cycle, as `dtype`) and their
    weights."""
    codes = np.arange(2**streaming.bits)  # every bit pattern, to build one table per slice
    pattern = x & (2**streaming.bits - 1)
    planes = np.empty((len(streaming.slices), *x.shape), dtype)
    significance = []
    for j, (width, shift) in enumerate(
        zip(streaming.slices, slice_shifts(streaming.slices), strict=True)
    ):
        table = (codes >> shift) & (2**width - 1)
        if streaming.signed and j == 0:  # the top slice carries the sign: read it signed
            table = table - ((table >> (width - 1)) << width)
        planes[j] = table.astype(dtype)[pattern]  # a gather is faster than shifts here
        significance.append(2**shift)
    return planes, np.array(significance, np.float64)


@dataclass(frozen=True)
class WeightPlanes:
    """Stored weight slices [I, D, K, N], their significance, the sign of each device's column,
    and the digital correction per unit of input sum (per column, or one for all)."""

    planes: np.ndarray
    significance: np.ndarray
    device_signs: np.ndarray
    input_sum_factor: np.ndarray | float


def weight_planes(
    w: np.ndarray,
    mapping: WeightMapping,
    weight_bits: int,
    signed_columns: bool,
    centers: np.ndarray | None = None,
) -> WeightPlanes:
    """Encode integer weights [K, N] (with per-column `centers` for center-offset) and split
    them into slices (MSB first)."""
    shifts = slice_shifts(mapping.slices)
    masks = [2**width - 1 for width in mapping.slices]
    w = w.astype(np.int64)
    capacity = 2 ** sum(mapping.slices) - 1

    def split(stored: np.ndarray) -> np.ndarray:
        if stored.size and int(stored.max()) > capacity:
            raise MappingError(
                f"a stored weight value {int(stored.max())} does not fit the "
                f"{sum(mapping.slices)} bits of slices {list(mapping.slices)}",
                hint="use wider slices or centers that keep |w - c| small",
            )
        return np.stack([(stored >> s) & m for s, m in zip(shifts, masks, strict=True)])

    significance = np.array([2.0**s for s in shifts])
    if mapping.encoding == "offset":
        bias = 2 ** (weight_bits - 1)
        return WeightPlanes(split(w + bias)[:, None], significance, np.array([1.0]), -bias)
    factor: np.ndarray | float = 0.0
    if mapping.encoding == "center-offset":
        if centers is None:
            raise MappingError(
                "center-offset weights need their per-filter centers",
                hint="run encode-weights{scheme=center-offset}, which sets them",
            )
        w = w - np.asarray(centers, np.int64)[None, :]
        factor = np.asarray(centers, np.float64)
    positive, negative = split(np.maximum(w, 0)), split(np.maximum(-w, 0))
    if signed_columns:  # the pair subtracts in analog: one signed sum per slice
        return WeightPlanes((positive - negative)[:, None], significance, np.array([1.0]), factor)
    return WeightPlanes(
        np.stack([positive, negative], axis=1), significance, np.array([1.0, -1.0]), factor
    )


@dataclass(frozen=True)
class Converter:
    """A column converter as the datapath applies it: kind, bits, samples, range rule, and an
    MTJ's per-column normalisation.

    `ps_scale` / `ps_offset` (MTJ only; empty: normalise over the read's full range) hold one
    entry per column of the product as the datapath lays them out, [weight slice][device]
    [filter], so `x = clamp(ps_scale * PS + ps_offset, -1, 1)` column by column.
    """

    kind: ConverterKind
    bits: int
    samples: int = 1
    range_rule: str = "full-scale"
    sensitivity: float = 4.0
    ps_scale: tuple[float, ...] = ()
    ps_offset: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.ps_scale) != len(self.ps_offset):
            raise ValueError("ps_scale and ps_offset need one entry per column each")
        if any(not a > 0 for a in self.ps_scale):  # also rejects nan
            raise ValueError("ps_scale entries must be positive")

    def normalisation(self, low: float, high: float, columns: int) -> tuple[np.ndarray, np.ndarray]:
        """Return an MTJ's scale and offset per column (float32 [columns]) for sums that can
        range over [low, high]: the calibrated ones, else the read's full range."""
        if not self.ps_scale:
            middle, radius = (high + low) / 2, max((high - low) / 2, 1.0)
            return (
                np.full(columns, 1 / radius, np.float32),
                np.full(columns, -middle / radius, np.float32),
            )
        if len(self.ps_scale) != columns:
            raise MappingError(
                f"the MTJ normalisation has {len(self.ps_scale)} columns but the "
                f"product has {columns}",
                hint="rerun calibrate-mtj after the weight slicing and encoding passes",
            )
        return np.asarray(self.ps_scale, np.float32), np.asarray(self.ps_offset, np.float32)


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
    gemms: list[tuple[int, int, int, int]] = field(default_factory=list)  # (batch, M, K, N)

    def add(self, other: Statistics) -> None:
        """Accumulate another block's counts."""
        self.conversions += other.conversions
        self.saturated += other.saturated
        self.samples += other.samples
        self.ones += other.ones
        self.speculative_failures += other.speculative_failures
        self.recoveries += other.recoveries
        self.lossless &= other.lossless
        self.gemms.extend(other.gemms)


def adc_levels(converter: Converter, low: float, high: float) -> tuple[int, int, float]:
    """Return an ADC's lowest and highest code and its step for sums in [low, high]."""
    bits = 1 if converter.kind is ConverterKind.SENSE_AMP else converter.bits
    signed = low < 0
    levels_low, levels_high = (
        (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    )
    step = 1.0
    if converter.range_rule == "full-scale":
        span = max(abs(low), abs(high))
        needed = math.ceil(math.log2(span + 1)) + (1 if signed else 0)
        step = 2.0 ** max(0, needed - bits)
    return levels_low, levels_high, step


def convert(
    sums: np.ndarray,
    low: float,
    high: float,
    converter: Converter,
    rng: np.random.Generator,
    stats: Statistics,
) -> np.ndarray:
    """Apply a converter to partial sums that can range over [low, high]; return the values the
    digital side reconstructs (in partial-sum units). ADCs work in place on float32 sums
    (integers below 2**24, power-of-two steps: exact)."""
    stats.conversions += sums.size
    if converter.kind is ConverterKind.MTJ:
        return _mtj(sums, low, high, converter, rng, stats)
    levels_low, levels_high, step = adc_levels(converter, low, high)
    codes = sums
    if step != 1.0:
        codes = np.multiply(sums, 1.0 / step, out=sums)
        np.rint(codes, out=codes)
        stats.lossless = False
    saturated = 0
    if codes.size and (codes.max() > levels_high or codes.min() < levels_low):  # rare: count
        saturated = int(np.count_nonzero(codes > levels_high))
        saturated += int(np.count_nonzero(codes < levels_low))
    if saturated:
        stats.saturated += saturated
        stats.lossless = False
        np.clip(codes, levels_low, levels_high, out=codes)
    if step != 1.0:
        codes *= step
    return codes


def mtj_decoder(samples: int, sensitivity: float) -> np.ndarray:
    """Return the normalised value `x_hat` an MTJ's counter decodes to, per count of ones
    (0..samples): the inverse of `E[m] = tanh(s * x / 2)` at `m = 2 * ones / samples - 1`,
    clipped to [-1, 1]."""
    m = 2.0 * np.arange(samples + 1) / samples - 1.0
    with np.errstate(divide="ignore"):
        x = 2.0 * np.arctanh(m) / sensitivity
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def _mtj(
    sums: np.ndarray,
    low: float,
    high: float,
    converter: Converter,
    rng: np.random.Generator,
    stats: Statistics,
) -> np.ndarray:
    """Convert partial sums (float32, columns on the last axis) through stochastic MTJs."""
    scale, offset = converter.normalisation(low, high, sums.shape[-1])
    x = np.multiply(sums, scale, out=sums)
    x += offset
    np.clip(x, -1.0, 1.0, out=x)
    x *= np.float32(-converter.sensitivity)
    np.exp(x, out=x)
    x += 1.0
    p = np.reciprocal(x, out=x)  # sigmoid(s * x)
    if converter.samples == 1:  # Binomial(1, p): one uniform draw, much faster than binomial
        counts = (rng.random(p.shape, dtype=np.float32) < p).astype(np.intp)
    else:
        counts = rng.binomial(converter.samples, p)
    stats.samples += sums.size * converter.samples
    stats.ones += int(counts.sum())
    stats.lossless = False
    decoded = mtj_decoder(converter.samples, converter.sensitivity)[counts]
    decoded -= offset
    decoded /= scale
    return decoded


def lossless(converter: Converter, low: float, high: float) -> bool:
    """Say whether a converter reproduces every partial sum in [low, high] exactly."""
    if converter.kind is ConverterKind.MTJ:
        return False
    bits = 1 if converter.kind is ConverterKind.SENSE_AMP else converter.bits
    if low < 0:
        return -(2 ** (bits - 1)) <= low and high <= 2 ** (bits - 1) - 1
    return high <= 2**bits - 1


def partial_sum_range(
    streaming: InputStreaming, mapping: WeightMapping, rows_per_sum: int, signed_columns: bool
) -> tuple[float, float]:
    """Return the smallest and largest partial sum one read of `rows_per_sum` rows can
    produce: the converter's full scale is set for it (a property of the mapped layer and the
    hardware, not of the data)."""
    in_high = max(2**s - 1 for s in streaming.slices)
    in_low = -(2 ** (streaming.slices[0] - 1)) if streaming.signed else 0
    w_high = max(2**s - 1 for s in mapping.slices)
    w_low = -w_high if mapping.encoding != "offset" and signed_columns else 0
    corners = [a * b * rows_per_sum for a in (in_low, in_high) for b in (w_low, w_high)]
    return float(min(corners)), float(max(corners))


@dataclass
class _Reader:
    """Reads one block of positions through the crossbars: slice planes, one GEMM per row
    chunk, the converter; returns converted sums [C, J, p, I*D*N] and the slice weights."""

    b: np.ndarray
    chunks: int
    rows_per_sum: int
    pad: int
    low: float
    high: float
    converter: Converter
    rng: np.random.Generator
    stats: Statistics

    def __call__(
        self, x: np.ndarray, streaming: InputStreaming, stats: Statistics | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        part, input_weight = input_planes(x, streaming)  # [J, p, K]
        if self.pad:
            part = np.concatenate([part, np.zeros((*part.shape[:2], self.pad), np.float32)], axis=2)
        planes, p = part.shape[:2]
        part = part.reshape(planes, p, self.chunks, self.rows_per_sum).transpose(2, 0, 1, 3)
        part = part.reshape(self.chunks, planes * p, self.rows_per_sum)
        sums = np.matmul(part, self.b)  # [C, J*p, I*D*N], exact integers in float32
        counter = self.stats if stats is None else stats
        counter.gemms.append((self.chunks, planes * p, self.rows_per_sum, self.b.shape[2]))
        values = convert(sums, self.low, self.high, self.converter, self.rng, counter)
        return values.reshape(self.chunks, planes, p, self.b.shape[2]), input_weight


def _recover(
    values: np.ndarray,
    read: _Reader,
    x: np.ndarray,
    streaming: InputStreaming,
    bitwise: InputStreaming,
    stats: Statistics,
) -> np.ndarray:
    """RAELLA's speculation: a wide-slice conversion that hit the lowest or highest code is
    discarded and its input bits re-run as 1-bit slices; only those columns are converted."""
    levels_low, levels_high, step = adc_levels(read.converter, read.low, read.high)
    failed = values >= levels_high * step
    if read.low < 0:
        failed |= values <= levels_low * step
    flagged = int(np.count_nonzero(failed))
    stats.speculative_failures += flagged
    if not flagged:
        return values
    scratch = Statistics()
    bits, _ = read(x, bitwise, scratch)  # [C, B, p, I*D*N], bit b at index B - 1 - b
    widths, shifts = streaming.slices, slice_shifts(streaming.slices)
    recovered = np.zeros_like(values)
    for j, (width, shift) in enumerate(zip(widths, shifts, strict=True)):
        for q in range(shift, shift + width):
            recovered[:, j] += 2.0 ** (q - shift) * bits[:, streaming.bits - 1 - q]
        stats.recoveries += width * int(np.count_nonzero(failed[:, j]))
    stats.gemms.extend(scratch.gemms)
    return np.where(failed, recovered, values)


def crossbar_matmul(
    x: np.ndarray,
    w: np.ndarray,
    streaming: InputStreaming,
    mapping: WeightMapping,
    weight_bits: int,
    rows_per_sum: int,
    signed_columns: bool,
    converter: Converter,
    rng: np.random.Generator,
    stats: Statistics,
    fast: bool = True,
    centers: np.ndarray | None = None,
) -> np.ndarray:
    """Return `x @ w` for integer codes x[P, K] and w[K, N] as the crossbar datapath computes
    it (int64 [P, N]); exact when every partial sum fits the converter. `centers` [N] are the
    filters' centers of a center-offset encoding. With `fast`, a
    converter that is lossless over the whole partial-sum range skips the slicing (the result
    is the same integer product)."""
    positions, rows = x.shape
    columns = w.shape[1]
    stored = weight_planes(w, mapping, weight_bits, signed_columns, centers)  # [I, D, K, N]
    slices, devices = stored.planes.shape[:2]
    # the converter's full scale is set per layer for the rows one read drives: a layer of
    # fewer rows than the crossbar's (a first conv of 27) reads sums that many rows can make
    rows_per_sum = min(rows_per_sum, rows)
    low, high = partial_sum_range(streaming, mapping, rows_per_sum, signed_columns)
    chunks = math.ceil(rows / rows_per_sum)
    pad = chunks * rows_per_sum - rows
    if max(abs(low), abs(high)) >= MAX_EXACT:
        raise MappingError(
            f"partial sums up to {max(abs(low), abs(high)):.0f} exceed the "
            "2**24 the simulator keeps exact",
            hint="use fewer rows per sum or narrower slices",
        )
    correction: np.ndarray | float = 0.0
    if np.any(stored.input_sum_factor):  # the digital input-sum term of offset encodings
        correction = np.asarray(stored.input_sum_factor, np.float64) * x.astype(np.float64).sum(
            axis=1, keepdims=True
        )
    if fast and lossless(converter, low, high):
        # fast path: every partial sum converts exactly, so the shift-and-add is the product
        stats.conversions += chunks * len(streaming.slices) * slices * devices * positions * columns
        stats.gemms.append((1, positions, rows, columns))
        return np.rint(x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
    b = stored.planes.astype(np.float32)
    if pad:
        b = np.concatenate([b, np.zeros((slices, devices, pad, columns), np.float32)], axis=2)
    # [C, R, I*D*N]: every slice and device of a chunk side by side, so one GEMM per chunk
    b = b.reshape(slices, devices, chunks, rows_per_sum, columns)
    b = b.transpose(2, 3, 0, 1, 4).reshape(chunks, rows_per_sum, slices * devices * columns)
    weights = np.einsum("i,d->id", stored.significance, stored.device_signs).reshape(-1)
    out = np.empty((positions, columns), np.float64)
    # stage 1 (weight slices and devices) stays in float32 while its sums are exact
    bound = float(np.abs(weights).sum()) * max(abs(low), abs(high))
    stage = np.float32 if bound < MAX_EXACT else np.float64
    weights = weights.astype(stage)
    per_position = chunks * len(streaming.slices) * max(slices * devices * columns, rows_per_sum)
    block = max(1, BLOCK_ELEMENTS // per_position)
    if streaming.speculate and converter.kind is ConverterKind.MTJ:
        raise MappingError(
            "speculation needs an ADC that flags saturated codes, not an MTJ",
            hint="select an ADC for speculative layers",
        )
    bitwise = InputStreaming(streaming.bits, (1,) * streaming.bits, streaming.signed, False)
    read = _Reader(b, chunks, rows_per_sum, pad, low, high, converter, rng, stats)
    for start in range(0, positions, block):
        block_x = x[start : start + block]
        values, input_weight = read(block_x, streaming)  # [C, J, p, I*D, N]
        if streaming.speculate:
            values = _recover(values, read, block_x, streaming, bitwise, stats)
        p = block_x.shape[0]
        values = values.astype(stage, copy=False).reshape(-1, slices * devices, columns)
        merged = np.matmul(weights, values)  # [C*J*p, N]: shift-and-add over weight slices
        merged = merged.reshape(chunks, len(streaming.slices), p, columns).astype(np.float64)
        out[start : start + p] = np.einsum("cjpn,j->pn", merged, input_weight)
    out += correction if np.ndim(correction) else 0.0
    return np.rint(out).astype(np.int64)
