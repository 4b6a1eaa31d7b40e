"""Stochastic MTJ converters: per-column normalisation from calibration data (calibrate-mtj),
the decoding rule, seeded sampling, select-adc by converter type, and allocate-samples."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from imcc.backend.datapath import Draws, Statistics, binomial_cdf, partial_sums, product
from imcc.errors import MappingError
from imcc.examples import example_path
from imcc.frontend.datasets import load_dataset
from imcc.frontend.hw import load_target
from imcc.frontend.onnx import import_onnx
from imcc.ir.mapping import InputStreaming, WeightMapping
from imcc.passes.allocate_samples import LayerCost, allocate
from imcc.passes.context import Context
from imcc.passes.layers import crossbar_layers
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline
from imcc.plan import Converter, LayerPlan, mtj_decoder
from imcc.simulation import simulate
from imcc.target import ConverterKind

DATA = load_dataset("digits-cnn")
SOTMTJ = load_target("sotmtj")
FRONT = f"{DEFAULT_PIPELINE},assign-input-precision,quantize,tile-crossbar"


@functools.cache
def compiled(passes: str):
    ctx = Context(target=SOTMTJ, options={"calibration": DATA.images[:64]})
    graph = PassManager(parse_pipeline(f"{FRONT},{passes}")).run(
        import_onnx(example_path("digits-cnn")), ctx
    )
    return graph, ctx.decisions.tables


def test_decoder_inverts_the_expected_counter_output():
    assert mtj_decoder(1, 4.0).tolist() == [-1.0, 1.0]
    decoded = mtj_decoder(16, 4.0)
    np.testing.assert_allclose(decoded, -decoded[::-1], atol=1e-7)  # odd around the middle
    assert decoded[8] == 0 and np.all(np.diff(decoded) > 0)
    # ones = 12 of 16: m = 0.5 = tanh(4 x / 2) -> x = atanh(0.5) / 2
    assert decoded[12] == pytest.approx(np.arctanh(0.5) / 2, rel=1e-6)


@pytest.mark.parametrize("samples", [2, 3, 4, 5, 7, 16])
def test_binomial_cdf_is_the_binomial_distribution(samples):
    """The MTJ counter's CDF, by which one uniform draws N samples, against the sum of
    math.comb terms."""
    import math

    import torch

    p = torch.tensor([0.018, 0.2, 0.5, 0.77, 0.982], dtype=torch.float64)
    got = torch.stack(list(binomial_cdf(p, samples)))
    for k in range(samples):
        want = [
            sum(math.comb(samples, i) * v**i * (1 - v) ** (samples - i) for i in range(k + 1))
            for v in p.tolist()
        ]
        np.testing.assert_allclose(got[k].numpy(), want, rtol=1e-12)


def _layer(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(200, 128)) * (rng.random((200, 128)) < 0.3)  # sparse
    w = rng.integers(-20, 21, size=(128, 6))
    return (
        x,
        w,
        InputStreaming(8, (1,) * 8, False, False),
        WeightMapping("differential", (2, 2, 2, 2), 2),
    )


def _plan(converter: Converter) -> LayerPlan:
    """The layer of `_layer` on 128 rows read at once, signed columns (one device per slice)."""
    *_, streaming, mapping = _layer()
    return LayerPlan("t", streaming, mapping, 8, True, 128, 6, 1, 128, 128, converter)


def _run(converter: Converter, seed: int = 0) -> tuple[np.ndarray, Statistics]:
    x, w, *_ = _layer()
    stats = Statistics()
    draws = Draws.per_sample(seed, "t", 0, 0, 1)  # the 200 positions drawn as one sample
    out = product(_plan(converter), x, w, stats=stats, draws=draws)
    return out, stats


def _calibrated(samples: int) -> Converter:
    """An MTJ normalised per column from the layer's own sums (2 standard deviations)."""
    x, w, *_ = _layer()
    plan = _plan(Converter(ConverterKind.MTJ, 1, samples))
    sums = partial_sums(plan, x, w)  # [1 chunk, J, P, I*1*N]
    sums = sums.reshape(-1, sums.shape[-1]).astype(np.float64)
    scale = 1 / (2 * np.maximum(sums.std(axis=0), 0.5))
    return Converter(
        ConverterKind.MTJ,
        1,
        samples,
        ps_scale=tuple(scale.tolist()),
        ps_offset=tuple((-sums.mean(axis=0) * scale).tolist()),
    )


def test_per_column_normalisation_beats_the_full_range_rule():
    x, w, *_ = _layer()
    exact = x @ w
    full, _ = _run(Converter(ConverterKind.MTJ, 1, 4))
    calibrated, stats = _run(_calibrated(4))
    error_full = np.abs(full - exact).mean() / np.abs(exact).mean()
    error_calibrated = np.abs(calibrated - exact).mean() / np.abs(exact).mean()
    assert error_calibrated < error_full / 4
    assert stats.samples == 4 * stats.conversions and 0.2 < stats.ones / stats.samples < 0.8


def test_calibrated_mtj_conversion_is_seeded():
    converter = _calibrated(1)  # one uniform draw per conversion
    first, again = _run(converter, 7)[0], _run(converter, 7)[0]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, _run(converter, 8)[0])
    four = _calibrated(4)
    np.testing.assert_array_equal(_run(four, 3)[0], _run(four, 3)[0])


def test_a_normalisation_of_the_wrong_width_is_a_mapping_error():
    bad = Converter(ConverterKind.MTJ, 1, 4, ps_scale=(1.0, 1.0), ps_offset=(0.0, 0.0))
    with pytest.raises(MappingError) as info:
        _run(bad)
    assert "rerun calibrate-mtj" in info.value.render()


def test_select_adc_by_type_takes_the_targets_mtj():
    graph, _ = compiled("select-adc{type=mtj samples=4}")
    assert {
        (n.attr("converter").name, n.attr("converter").samples) for n in crossbar_layers(graph)
    } == {("mtj", 4)}
    graph, _ = compiled("select-adc{type=sar}")
    assert {n.attr("converter").name for n in crossbar_layers(graph)} == {"adc8"}


@pytest.mark.parametrize(
    ("passes", "message", "hint"),
    [
        ("select-adc{type=flash}", "target sotmtj has no flash converter", "mtj (mtj), adc8 (sar)"),
        ("select-adc{converter=adc8 type=mtj}", "converter adc8 is not of type mtj", "not both"),
        ("calibrate-mtj", "has no converter", "run select-adc before calibrate-mtj"),
    ],
)
def test_bad_options_are_mapping_errors_with_a_hint(passes, message, hint):
    with pytest.raises(MappingError) as info:
        compiled(passes)
    assert message in str(info.value) and hint in info.value.render()


def test_calibrate_mtj_lifts_digits_accuracy_on_sotmtj():
    data = DATA.take(200)
    plain = simulate(*[compiled("select-adc{type=mtj samples=4}")[0], SOTMTJ], data, batch=100)
    graph, tables = compiled("select-adc{type=mtj samples=4},calibrate-mtj")
    calibrated = simulate(graph, SOTMTJ, data, batch=100)
    assert plain.accuracy < 0.2  # the full-range rule: every sample is a coin flip
    assert calibrated.accuracy > 0.6
    # the first conv reads few rows (a small full range to start from): its gain is the least
    assert all(
        a.rel_error < b.rel_error / 5 for a, b in zip(calibrated.layers, plain.layers, strict=True)
    )
    rows = tables["calibrate-mtj"]
    assert len(rows) == 3 and all(0 <= row["clamped"] < 0.2 for row in rows)
    first = crossbar_layers(graph)[0]
    weights, out_channels = first.attr("weights"), graph.types[first.outputs[0]].shape[1]
    assert len(first.attr("ps_scale")) == len(weights.slices) * out_channels


def test_calibrate_mtj_leaves_adc_layers_alone():
    graph, tables = compiled("select-adc{per_layer_converter=[mtj,adc8,adc8]},calibrate-mtj")
    layers = crossbar_layers(graph)
    assert layers[0].attributes.get("ps_scale") is not None
    assert all(n.attributes.get("ps_scale") is None for n in layers[1:])
    assert len(tables["calibrate-mtj"]) == 1


def test_allocate_honours_the_budget_and_favours_sensitive_layers():
    counts = (1, 2, 4, 8, 16)
    layers = [
        LayerCost(counts, 1000, 1.0),
        LayerCost(counts, 1000, 20.0),
        LayerCost(counts, 300, 5.0),
    ]
    for budget in (1.0, 2.0, 4.0, 5.5, 16.0):
        chosen = allocate(layers, budget)
        spent = sum(layer.conversions * n for layer, n in zip(layers, chosen, strict=True))
        assert spent <= budget * 2300 and all(n in counts for n in chosen)
    chosen = allocate(layers, 4.0)
    assert chosen[1] > chosen[0]
    predicted = sum(layer.sensitivity / n for layer, n in zip(layers, chosen, strict=True))
    assert predicted <= sum(layer.sensitivity / 4 for layer in layers)  # no worse than uniform
    assert allocate(layers, 16.0) == [16, 16, 16]


def test_allocate_samples_on_digits_keeps_total_samples_within_uniform():
    graph, tables = compiled(
        "select-adc{type=mtj samples=4},calibrate-mtj,allocate-samples{budget=4 samples=8}"
    )
    rows = tables["allocate-samples"]
    samples = [n.attr("converter").samples for n in crossbar_layers(graph)]
    assert samples == [row["samples"] for row in rows]
    spent = sum(row["conversions"] * row["samples"] for row in rows)
    assert spent <= 4 * sum(row["conversions"] for row in rows)
    assert all(row["sensitivity"] > 0 for row in rows)
    # the most sensitive layer per conversion does not get fewer samples than the least
    ratio = [row["sensitivity"] / row["conversions"] for row in rows]
    assert samples[int(np.argmax(ratio))] >= samples[int(np.argmin(ratio))]
