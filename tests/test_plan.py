"""A LayerPlan and the datapath that executes it against a direct evaluation of plan.py's model.

`reference` below restates the model of plan.py's docstring element by element in plain
numpy / Python integers (row chunks, input slices, stored weight slices per device, one integer
partial sum each, the converter's codes, shift-and-add, the digital correction), without using
backend/datapath.py or the plan's derived quantities; hypothesis draws small layers of every
encoding, slicing, tiling and converter, and `product`, `partial_sums` and the converters'
counts must agree with it exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imcc.backend import datapath
from imcc.backend.datapath import Draws, Statistics, partial_sums, product
from imcc.ir.mapping import InputStreaming, WeightMapping
from imcc.plan import LOSSLESS, Converter, LayerPlan
from imcc.target import ConverterKind

CHECK = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,  # CI is repeatable, as tests/test_fuzz.py's fixed seeds
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class SlicedPlan(LayerPlan):
    """A plan that never declares itself lossless: `product` runs the sliced datapath even for
    a lossless converter instead of the integer product's shortcut."""

    lossless = False


# -- the model, element by element -------------------------------------------------------------
def chunks_of(rows: int, tile_rows: int, active_rows: int) -> list[tuple[int, int]]:
    """Row tiles of `tile_rows` rows, each read `active_rows` rows at a time (model item 3)."""
    bounds = []
    tile_start = 0
    while tile_start < rows:
        tile_end = min(tile_start + tile_rows, rows)
        start = tile_start
        while start < tile_end:
            stop = min(start + active_rows, tile_end)
            bounds.append((start, stop))
            start = stop
        tile_start = tile_end
    return bounds


def shifts_of(widths: tuple[int, ...]) -> list[int]:
    """Bit offset of each slice, most significant slice first."""
    return [sum(widths[j + 1 :]) for j in range(len(widths))]


def input_slice_values(x: int, bits: int, widths: tuple[int, ...], signed: bool) -> list[int]:
    """What each input slice streams for code x (model item 1)."""
    pattern = x % 2**bits
    values = []
    for j, (width, shift) in enumerate(zip(widths, shifts_of(widths), strict=True)):
        value = (pattern >> shift) % 2**width
        if signed and j == 0 and value >= 2 ** (width - 1):
            value -= 2**width
        values.append(value)
    assert sum(v * 2**s for v, s in zip(values, shifts_of(widths), strict=True)) == x
    return values


def stored_devices(
    w: int, encoding: str, weight_bits: int, signed_columns: bool, center: int
) -> list[tuple[list[int] | None, int]]:
    """The converted devices of weight code w: per device, the values to split into slices
    (or the pair whose slices subtract in the column) and the sign it is added with (item 2)."""
    if encoding == "offset":
        return [([w + 2 ** (weight_bits - 1)], 1)]
    value = w - (center if encoding == "center-offset" else 0)
    positive, negative = max(value, 0), max(-value, 0)
    if signed_columns:
        return [([positive, negative], 1)]
    return [([positive], 1), ([negative], -1)]


def weight_slice_values(stored: list[int], widths: tuple[int, ...]) -> list[int]:
    """Each weight slice's value of one device (a pair's slices subtract in the column)."""
    out = []
    for width, shift in zip(widths, shifts_of(widths), strict=True):
        parts = [(v >> shift) % 2**width for v in stored]
        out.append(parts[0] - (parts[1] if len(parts) == 2 else 0))
    return out


def read_range(
    streaming: InputStreaming, mapping: WeightMapping, signed_columns: bool, rows: int
) -> tuple[int, int]:
    """The smallest and largest partial sum a read of `rows` rows can produce."""
    inputs = []
    for j, width in enumerate(streaming.slices):
        if streaming.signed and j == 0:
            inputs.append((-(2 ** (width - 1)), 2 ** (width - 1) - 1))
        else:
            inputs.append((0, 2**width - 1))
    pair = mapping.encoding != "offset" and signed_columns
    weights = [(-(2**width - 1) if pair else 0, 2**width - 1) for width in mapping.slices]
    corners = [a * b for ins in inputs for ws in weights for a in ins for b in ws]
    return rows * min(corners), rows * max(corners)


def adc_model(converter: Converter, low: int, high: int) -> tuple[int, int, int]:
    """The lowest and highest code and the (power-of-two) step of an ADC for sums in
    [low, high] (item 4): a sense amplifier is a 1-bit ADC; codes are two's complement when
    sums can be negative; `full-scale` takes the smallest step at which the largest sum's
    magnitude fits the code's magnitude bits, `saturate` a unit step."""
    bits = 1 if converter.kind is ConverterKind.SENSE_AMP else converter.bits
    signed = low < 0
    lowest, highest = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    step = 1
    if converter.range_rule == "full-scale":
        magnitude_bits = bits - 1 if signed else bits
        span = max(abs(low), abs(high))
        while span >= 2**magnitude_bits * step:
            step *= 2
    return lowest, highest, step


def reference(
    x: np.ndarray,
    w: np.ndarray,
    streaming: InputStreaming,
    mapping: WeightMapping,
    weight_bits: int,
    signed_columns: bool,
    tile_rows: int,
    active_rows: int,
    converter: Converter,
    centers: list[int] | None,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Return the product [P, N], the partial sums [C, J, P, I * D * N], the conversions and
    the saturated conversions of the model."""
    positions, rows = x.shape
    filters = w.shape[1]
    bounds = chunks_of(rows, tile_rows, active_rows)
    longest = max(stop - start for start, stop in bounds)
    low, high = read_range(streaming, mapping, signed_columns, longest)
    lowest, highest, step = adc_model(converter, low, high)
    in_shifts, w_shifts = shifts_of(streaming.slices), shifts_of(mapping.slices)
    xs = np.array(
        [
            [
                input_slice_values(int(v), streaming.bits, streaming.slices, streaming.signed)
                for v in r
            ]
            for r in x
        ],
        np.int64,
    ).reshape(positions, rows, len(streaming.slices))  # [P, K, J]
    center = [centers[n] if centers is not None else 0 for n in range(filters)]
    devices = [
        [
            stored_devices(int(w[k, n]), mapping.encoding, weight_bits, signed_columns, center[n])
            for n in range(filters)
        ]
        for k in range(rows)
    ]  # [K][N][D]: (stored values, sign)
    signs = [
        sign for _, sign in stored_devices(0, mapping.encoding, weight_bits, signed_columns, 0)
    ]
    ws = np.array(
        [
            [[weight_slice_values(stored, mapping.slices) for stored, _ in row] for row in per_k]
            for per_k in devices
        ],
        np.int64,
    ).reshape(rows, filters, len(signs), len(mapping.slices))  # [K, N, D, I]
    # one integer partial sum per (chunk, input slice, position, weight slice, device, filter)
    sums = np.stack(
        [np.einsum("pkj,kndi->jpidn", xs[:, start:stop], ws[start:stop]) for start, stop in bounds]
    )
    codes = np.round(sums / step)  # half to even; exact: integers over a power of two
    saturated = int(np.count_nonzero((codes < lowest) | (codes > highest)))
    converted = np.clip(codes, lowest, highest).astype(np.int64) * step
    significance = np.einsum(
        "j,i,d->jid",
        np.array([2**s for s in in_shifts], np.int64),
        np.array([2**s for s in w_shifts], np.int64),
        np.array(signs, np.int64),
    )
    out = np.einsum("cjpidn,jid->pn", converted, significance)
    input_sums = x.astype(np.int64).sum(axis=1, keepdims=True)
    if mapping.encoding == "offset":
        out = out - 2 ** (weight_bits - 1) * input_sums
    elif mapping.encoding == "center-offset":
        out = out + np.array(center, np.int64)[None, :] * input_sums
    conversions = sums.size
    flat = sums.reshape(len(bounds), len(streaming.slices), positions, -1)
    return out, flat, conversions, saturated


# -- hypothesis ----------------------------------------------------------------------------------
@st.composite
def slicings(draw, total: int, widest: int) -> tuple[int, ...]:
    """A slicing of `total` bits into slices of 1..widest bits, most significant first."""
    parts, left = [], total
    while left:
        part = draw(st.integers(1, min(widest, left)))
        parts.append(part)
        left -= part
    return tuple(parts)


ROWS = st.one_of(st.sampled_from([1, 2, 3, 8, 16, 64, 128, 256, 512]), st.integers(1, 300))


@st.composite
def converters(draw) -> Converter:
    kind = draw(st.sampled_from(["adc", "adc", "adc", "sense-amp", "lossless"]))
    if kind == "lossless":
        return LOSSLESS
    rule = draw(st.sampled_from(["full-scale", "saturate"]))
    if kind == "sense-amp":
        return Converter(ConverterKind.SENSE_AMP, 1, range_rule=rule)
    adc = draw(st.sampled_from([ConverterKind.SAR, ConverterKind.FLASH]))
    return Converter(adc, draw(st.integers(1, 14)), range_rule=rule)


@st.composite
def layers(draw, converter: st.SearchStrategy[Converter] | None = None):
    """A one-group product of a plan (x, w, plan, group, the group's centers)."""
    input_bits = draw(st.integers(1, 8))
    signed = draw(st.booleans())
    input_widths = draw(slicings(input_bits, 5))
    weight_bits = draw(st.integers(2, 8))
    encoding = draw(st.sampled_from(["offset", "differential", "center-offset"]))
    signed_columns = draw(st.booleans())
    needed = weight_bits if encoding == "offset" else weight_bits - 1
    weight_widths = draw(slicings(needed + draw(st.integers(0, 2)), 4))
    devices = draw(st.sampled_from([1, 2])) if encoding == "offset" else 2
    positions, rows, filters = (draw(st.integers(1, n)) for n in (6, 300, 5))
    groups = draw(st.integers(1, 2))
    group = draw(st.integers(0, groups - 1))
    tile_rows, active_rows = draw(ROWS), draw(ROWS)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    extremes = draw(st.booleans())  # codes at the ends of their range: saturate often

    def codes(lo: int, hi: int, shape) -> np.ndarray:
        if extremes:
            return rng.choice(np.array([lo, 0, hi]), size=shape)
        return rng.integers(lo, hi + 1, size=shape)

    x = codes(
        *(
            (-(2 ** (input_bits - 1)), 2 ** (input_bits - 1) - 1)
            if signed
            else (0, 2**input_bits - 1)
        ),
        (positions, rows),
    )
    limit = 2 ** (weight_bits - 1) - 1
    w = codes(-limit, limit, (rows, filters))
    centers = None
    if encoding == "center-offset":  # centers that keep |w - c| within 2^(B-1) - 1
        centers = rng.integers(-limit, limit + 1, size=filters * groups)
        mine = centers[group * filters : (group + 1) * filters]
        w = np.clip(mine + codes(-limit, limit, (rows, filters)), mine - limit, mine + limit)
        w = np.clip(w, -limit, limit)
    plan = LayerPlan(
        "L",
        InputStreaming(input_bits, input_widths, signed, False),
        WeightMapping(encoding, weight_widths, devices),
        weight_bits,
        signed_columns,
        rows,
        filters,
        groups,
        tile_rows,
        active_rows,
        draw(converter if converter is not None else converters()),
        None if centers is None else tuple(int(c) for c in centers),
    )
    group_centers = None
    if centers is not None:
        group_centers = [int(c) for c in centers[group * filters : (group + 1) * filters]]
    return x, w, plan, group, group_centers


def evaluate(x, w, plan: LayerPlan, centers):
    return reference(
        x,
        w,
        plan.streaming,
        plan.mapping,
        plan.weight_bits,
        plan.signed_columns,
        plan.tile_rows,
        plan.active_rows,
        plan.converter,
        centers,
    )


@CHECK
@given(layer=layers())
def test_the_datapath_computes_the_model(layer):
    x, w, plan, group, centers = layer
    assert list(plan.chunk_bounds) == chunks_of(plan.rows, plan.tile_rows, plan.active_rows)
    expected, sums, conversions, saturated = evaluate(x, w, plan, centers)
    stats = Statistics()
    got = product(plan, x, w, group, stats=stats)
    np.testing.assert_array_equal(got, expected)
    assert stats.conversions == conversions
    assert stats.conversions * plan.groups == plan.conversions_per_position * len(x)
    assert stats.saturated == saturated
    np.testing.assert_array_equal(partial_sums(plan, x, w, group), sums.astype(np.float32))


@CHECK
@given(layer=layers(st.just(LOSSLESS)))
def test_lossless_converters_give_the_integer_product(layer):
    x, w, plan, group, _ = layer
    assert plan.lossless
    for kind in (LayerPlan, SlicedPlan):  # the shortcut and the sliced datapath
        stats = Statistics()
        sliced = kind(*(getattr(plan, f) for f in plan.__dataclass_fields__))
        np.testing.assert_array_equal(product(sliced, x, w, group, stats=stats), x @ w)
        assert stats.saturated == 0 and stats.lossless


@pytest.mark.parametrize(
    ("bits", "slices", "rows"), [(2, (2,), 1), (8, (8,), 128), (8, (4, 4), 16), (8, (5, 3), 16)]
)
def test_the_converter_range_is_the_range_a_read_can_produce(bits, slices, rows):
    """A signed input's top slice is a signed number: at most 2^(width-1) - 1, not 2^width - 1,
    so the converter's full scale is not set for sums no read produces."""
    streaming = InputStreaming(bits, slices, True, False)
    mapping = WeightMapping("offset", (4, 4), 1)
    plan = LayerPlan(
        "L", streaming, mapping, 8, False, rows, 1, 1, rows, rows, Converter(ConverterKind.SAR, 8)
    )
    assert plan.sum_range == read_range(streaming, mapping, False, rows)


MTJ = Converter(ConverterKind.MTJ, 1, samples=4, sensitivity=4.0)


def _differential_plan(rows: int, filters: int, converter: Converter) -> LayerPlan:
    """Return the small plan the block and draw tests share (4-bit inputs in two 2-bit slices,
    a differential weight mapping, 16-row chunks) with `converter`."""
    return LayerPlan(
        "L",
        InputStreaming(4, (2, 2), False, False),
        WeightMapping("differential", (3,), 2),
        4,
        False,
        rows,
        filters,
        1,
        16,
        16,
        converter,
    )


@pytest.mark.parametrize("block", [datapath.BLOCK_ELEMENTS, 64])
def test_mtj_draws_do_not_depend_on_the_batch(monkeypatch, block):
    """Per-sample draws: a sample's result is the same in a batch of 3 or 8, first or not
    (and whatever the datapath's block of positions)."""
    monkeypatch.setattr(datapath, "BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(11)
    rows, filters, samples = 40, 3, 8
    x = rng.integers(0, 16, size=(samples, rows))
    w = rng.integers(-7, 8, size=(rows, filters))
    plan = _differential_plan(rows, filters, MTJ)

    def run(first, count, key=5):
        draws = Draws.per_sample(key, "L", 0, first, count)
        return product(plan, x[first : first + count], w, draws=draws)

    every = run(0, samples)
    np.testing.assert_array_equal(run(0, 3), every[:3])
    np.testing.assert_array_equal(run(3, 5), every[3:])
    assert not np.array_equal(run(0, samples, key=6), every)  # the draws do matter


def test_blocks_keep_gemms_tall_but_streamed_draws_keep_their_block(monkeypatch) -> None:
    """A block holds at least `GEMM_ROWS` GEMM rows (input slices x positions), whole samples
    when the draws are per sample, and the result does not depend on it; a training forward's
    streamed MTJ draws are drawn per block, so there the block stays what `BLOCK_ELEMENTS`
    alone makes it (a seeded fine-tune draws as before), and another block would draw
    otherwise."""
    import torch

    from imcc.backend.datapath import crossbar_product

    rng = np.random.default_rng(12)
    rows, filters, positions = 40, 3, 64
    plan = _differential_plan(rows, filters, MTJ)
    x = torch.tensor(rng.integers(0, 16, size=(positions, rows)), dtype=torch.float64)
    w = torch.tensor(rng.integers(-7, 8, size=(rows, filters)), dtype=torch.float64)
    per_position = plan.chunks * plan.input_slices * max(plan.columns, plan.rows_per_sum)
    monkeypatch.setattr(datapath, "BLOCK_ELEMENTS", per_position * 2)  # 2 positions
    monkeypatch.setattr(datapath, "GEMM_ROWS", 4 * plan.input_slices + 1)  # 5 positions
    assert datapath._block(plan, positions, None) == 5
    assert datapath._block(plan, positions, Draws.per_sample(7, "L", 0, 0, 16)) == 8
    assert datapath._block(plan, positions, Draws.stream(7)) == 2
    with torch.no_grad():
        streamed = crossbar_product(x, w, plan, key=7)
        monkeypatch.setattr(datapath, "GEMM_ROWS", 1)
        assert torch.equal(crossbar_product(x, w, plan, key=7), streamed)
        monkeypatch.setattr(datapath, "BLOCK_ELEMENTS", per_position * 4)
        assert not torch.equal(crossbar_product(x, w, plan, key=7), streamed)
    adc = _differential_plan(rows, filters, Converter(ConverterKind.SAR, 4))
    codes, weights = x.long().numpy(), w.long().numpy()
    for gemm_rows in (1, 9, 10_000):  # blocks of 2, 3 and all 64 positions
        monkeypatch.setattr(datapath, "GEMM_ROWS", gemm_rows)
        stats = Statistics()
        got = product(adc, codes, weights, stats=stats)
        if gemm_rows == 1:
            first, first_stats = got, stats
        np.testing.assert_array_equal(got, first)
        assert stats == first_stats


@pytest.mark.parametrize(
    ("filters", "slices", "column_tiles", "tile_columns", "share", "turns"),
    [
        (16, (2, 2, 2, 2), 1, 512, 128, 16),  # RAELLA: 64 columns over 4 converters
        (128, (2, 2, 2, 2), 1, 512, 128, 128),  # a full crossbar: every column of a converter
        (16, (2, 2, 2, 2), 1, 128, 128, 64),  # ISAAC: one converter, half its columns used
        (64, (2, 2, 2, 2), 2, 128, 128, 128),  # 256 columns over two crossbars: both full
        (40, (2, 2, 2, 2), 2, 128, 8, 5),  # 80 columns a crossbar over 16 converters: 5 each
        (30, (4, 4), 1, 128, 8, 4),  # 60 columns over 16 converters: 4 each
        (16, (2, 2, 2, 2), 1, 0, 8, 8),  # no tiling known: every column of a converter
        (200, (4, 4), 1, 512, 8, 7),  # 400 columns over 64 converters: 7 (of 8) each
    ],
)
def test_converter_turns_count_the_columns_that_hold_weights(
    filters, slices, column_tiles, tile_columns, share, turns
):
    """The busiest converter converts the crossbar's weight columns spread over its
    converters (tile columns / share), never more than the share it serves."""
    plan = LayerPlan(
        "L",
        InputStreaming(8, (1,) * 8, False, False),
        WeightMapping("center-offset", slices, 2),
        8,
        True,
        144,
        filters,
        1,
        512,
        512,
        Converter(ConverterKind.SAR, 7),
        column_tiles=column_tiles,
        tile_columns=tile_columns,
        share=share,
    )
    assert plan.columns == filters * len(slices)
    assert plan.converter_turns == turns
