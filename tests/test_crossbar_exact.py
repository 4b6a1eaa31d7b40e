"""The crossbar datapath with lossless converters reproduces the integer product exactly, for
any slicing, encoding, row chunk, input sign and shape (hypothesis); lossy converters behave as
documented."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from imcc.backend.datapath import Draws, Statistics, input_planes, input_slicing, product
from imcc.ir.mapping import InputStreaming, WeightMapping
from imcc.plan import LOSSLESS, Converter, LayerPlan
from imcc.target import ConverterKind
from tests.test_plan import slicings


class SlicedPlan(LayerPlan):
    """A plan that never declares itself lossless, so `product` runs the sliced datapath (input
    slices, weight slices, row chunks, converters, shift-and-add) even with a lossless
    converter, instead of the integer product's shortcut."""

    lossless = False


def make_plan(
    streaming: InputStreaming,
    mapping: WeightMapping,
    weight_bits: int,
    rows: int,
    filters: int,
    rows_per_sum: int,
    signed_columns: bool,
    converter: Converter,
    centers=None,
    kind: type[LayerPlan] = LayerPlan,
) -> LayerPlan:
    """A one-group plan whose partial sums add `rows_per_sum` rows (tiles of that many rows,
    each read at once)."""
    return kind(
        "L",
        streaming,
        mapping,
        weight_bits,
        signed_columns,
        rows,
        filters,
        1,
        rows_per_sum,
        rows_per_sum,
        converter,
        None if centers is None else tuple(int(c) for c in centers),
    )


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_lossless_datapath_is_the_integer_product(data):
    input_bits = data.draw(st.integers(2, 8))
    weight_bits = data.draw(st.integers(2, 8))
    signed = data.draw(st.booleans())
    encoding = data.draw(st.sampled_from(["offset", "differential", "center-offset"]))
    signed_columns = encoding != "offset" and data.draw(st.booleans())
    magnitude = weight_bits if encoding == "offset" else weight_bits - 1
    weight_slices = data.draw(slicings(magnitude, 4))
    input_slices = data.draw(slicings(input_bits, 4))
    positions, rows, columns = (data.draw(st.integers(1, n)) for n in (9, 300, 12))
    rows_per_sum = data.draw(st.sampled_from([1, 7, 32, 128, 512]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    low, high = (-(2 ** (input_bits - 1)), 2 ** (input_bits - 1)) if signed else (0, 2**input_bits)
    x = rng.integers(low, high, size=(positions, rows))
    limit = 2 ** (weight_bits - 1) - 1
    w = rng.integers(-limit, limit + 1, size=(rows, columns))
    centers = None
    if encoding == "center-offset":  # any centers that keep |w - c| within the weight range
        centers = rng.integers(-limit, limit + 1, size=columns)
        w = np.clip(centers + rng.integers(-limit, limit + 1, size=(rows, columns)), -limit, limit)
    streaming = InputStreaming(input_bits, input_slices, signed, False)
    mapping = WeightMapping(encoding, weight_slices, 2 if encoding != "offset" else 1)
    plan = make_plan(
        streaming,
        mapping,
        weight_bits,
        rows,
        columns,
        rows_per_sum,
        signed_columns,
        LOSSLESS,
        centers,
        kind=SlicedPlan,  # the sliced datapath, not the shortcut
    )
    stats = Statistics()
    got = product(plan, x, w, stats=stats)
    np.testing.assert_array_equal(got, x @ w)
    assert stats.lossless and stats.saturated == 0
    chunks = -(-rows // rows_per_sum)
    devices = 1 if encoding == "offset" or signed_columns else 2
    assert stats.conversions == (
        chunks * len(input_slices) * len(weight_slices) * devices * positions * columns
    )


@settings(max_examples=60, deadline=None)
@given(
    bits=st.integers(2, 9),
    slices=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    signed=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_input_slices_recompose_the_input(bits, slices, signed, seed):
    total = sum(slices)
    streaming = InputStreaming(total, tuple(slices), signed, False)
    plan = make_plan(streaming, WeightMapping("offset", (8,), 1), 8, 1, 1, 1, False, LOSSLESS)
    rng = np.random.default_rng(seed)
    low, high = (-(2 ** (total - 1)), 2 ** (total - 1)) if signed else (0, 2**total)
    x = rng.integers(low, high, size=50)
    slicing = input_slicing(plan)
    patterns = torch.from_numpy(x % 2**total)[None, :]  # the code patterns the rows hold
    planes = input_planes(patterns, slicing)[:, 0].numpy().astype(np.int64)  # [J, 50]
    weights = np.array([2**shift for shift, _, _ in slicing])
    np.testing.assert_array_equal(np.tensordot(weights, planes, axes=1), x)


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_speculation_recovers_every_failed_read_exactly(data):
    """RAELLA's speculation with an ADC whose codes hold every 1-bit read: whatever the wide
    slices' sums do (saturate or not), the recovered product is the integer product bit for
    bit, for any input and weight slicing, encoding, centers, input sign and ADC width."""
    input_bits = data.draw(st.integers(2, 8))
    signed = data.draw(st.booleans())
    encoding = data.draw(st.sampled_from(["differential", "center-offset"]))
    weight_slices = data.draw(slicings(7, 4))
    input_slices = data.draw(slicings(input_bits, 4))
    adc_bits = data.draw(st.integers(3, 8))
    widest = 2 ** max(weight_slices) - 1
    rows_per_sum = max(1, (2 ** (adc_bits - 1) - 1) // widest)  # every 1-bit read fits
    if rows_per_sum * widest > 2 ** (adc_bits - 1) - 1:
        adc_bits = (rows_per_sum * widest).bit_length() + 1
    positions, rows, columns = (data.draw(st.integers(1, n)) for n in (9, 200, 10))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    low, high = (-(2 ** (input_bits - 1)), 2 ** (input_bits - 1)) if signed else (0, 2**input_bits)
    x = rng.integers(low, high, size=(positions, rows))
    w = rng.integers(-127, 128, size=(rows, columns))
    centers = None
    if encoding == "center-offset":
        centers = rng.integers(-127, 128, size=columns)
        w = np.clip(centers + rng.integers(-127, 128, size=(rows, columns)), -127, 127)
    adc = Converter(ConverterKind.SAR, adc_bits, range_rule="saturate")
    plan = make_plan(
        InputStreaming(input_bits, input_slices, signed, True),
        WeightMapping(encoding, weight_slices, 2),
        8,
        rows,
        columns,
        rows_per_sum,
        True,
        adc,
        centers,
    )
    stats = Statistics()
    np.testing.assert_array_equal(product(plan, x, w, stats=stats), x @ w)
    widths = {width for width in input_slices}
    assert stats.recoveries <= max(widths) * stats.speculative_failures


def test_a_narrow_adc_saturates_and_a_full_scale_one_rounds():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 128))
    w = rng.integers(-127, 128, size=(128, 16))
    streaming = InputStreaming(8, (1,) * 8, False, False)
    mapping = WeightMapping("offset", (2, 2, 2, 2), 1)
    saturate = Converter(ConverterKind.SAR, 6, range_rule="saturate")
    stats = Statistics()
    got = product(
        make_plan(streaming, mapping, 8, 128, 16, 128, False, saturate), x, w, stats=stats
    )
    assert stats.saturated > 0 and not stats.lossless
    assert not np.array_equal(got, x @ w)
    full = Converter(ConverterKind.SAR, 8)  # 128 rows x 1 x 3 = 384 needs 9 bits: step 2
    stats = Statistics()
    got = product(make_plan(streaming, mapping, 8, 128, 16, 128, False, full), x, w, stats=stats)
    assert stats.saturated == 0 and not stats.lossless
    error = np.abs(got - x @ w).mean() / np.abs(x @ w).mean()
    assert 0 < error < 0.1  # rounding one LSB of 2 per read, weighted by the shifts


def test_mtj_conversion_is_seeded_and_converges_with_samples():
    x = np.random.default_rng(1).integers(0, 256, size=(30, 128))
    w = np.random.default_rng(2).integers(-127, 128, size=(128, 8))
    streaming = InputStreaming(8, (1,) * 8, False, False)
    mapping = WeightMapping("differential", (4, 3), 2)

    def run(samples, seed):
        stats = Statistics()
        mtj = Converter(ConverterKind.MTJ, 1, samples=samples, sensitivity=4.0)
        plan = make_plan(streaming, mapping, 8, 128, 8, 128, True, mtj)
        out = product(plan, x, w, stats=stats, draws=Draws.per_sample(seed, "L", 0, 0, len(x)))
        return out, stats

    first, stats = run(4, 7)
    again, _ = run(4, 7)
    np.testing.assert_array_equal(first, again)
    assert stats.samples == 4 * stats.conversions
    exact = x @ w
    errors = [np.abs(run(n, 3)[0] - exact).mean() for n in (1, 16)]
    assert errors[1] < errors[0]


def test_speculation_recovers_saturated_wide_slices():
    """RAELLA: 3-3-2 input slices into a 7-bit signed ADC; saturated reads re-run bit by bit.
    With a unit-step ADC the recovered result is exact unless a 1-bit read saturates too."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, size=(64, 512))
    w = rng.integers(-40, 41, size=(512, 32))
    mapping = WeightMapping("differential", (4, 4), 2)
    adc = Converter(ConverterKind.SAR, 7, range_rule="saturate")
    wide = InputStreaming(8, (3, 3, 2), False, False)
    speculative = InputStreaming(8, (3, 3, 2), False, True)
    plain_stats, spec_stats = Statistics(), Statistics()
    plain = product(make_plan(wide, mapping, 8, 512, 32, 512, True, adc), x, w, stats=plain_stats)
    recovered = product(
        make_plan(speculative, mapping, 8, 512, 32, 512, True, adc), x, w, stats=spec_stats
    )
    exact = x @ w
    assert plain_stats.saturated > 0 and spec_stats.speculative_failures > 0
    assert np.abs(recovered - exact).mean() < np.abs(plain - exact).mean()
    # every failed wide read costs its width in 1-bit conversions
    assert 0 < spec_stats.recoveries <= 3 * spec_stats.speculative_failures
