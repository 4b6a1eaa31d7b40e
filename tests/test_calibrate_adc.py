"""Full-scale ADCs with a calibrated range (calibrate-adc): the step rule, exact rounding by a
step that is not a power of two, the measured range against a brute-force partial sum, the
accuracy it buys, and where the attribute is refused."""

from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np
import pytest
import torch

from imcc.backend import kernels
from imcc.backend.datapath import Statistics, convert_adc
from imcc.backend.reference import collect
from imcc.errors import MappingError, VerificationError
from imcc.examples import example_path
from imcc.frontend.datasets import load_dataset
from imcc.frontend.hw import load_target
from imcc.frontend.onnx import import_onnx
from imcc.ir.parser import parse_graph
from imcc.ir.printer import print_graph
from imcc.ir.verifier import verify
from imcc.passes.context import Context
from imcc.passes.layers import crossbar_layers, replace_nodes, with_attributes
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline
from imcc.passes.program_target import check_program_target
from imcc.plan import Converter, adc_levels
from imcc.search.space import template
from imcc.simulation import simulate
from imcc.target import ConverterKind

DATA = load_dataset("digits-cnn")
XPERT = load_target("xpert")
FRONT = f"{DEFAULT_PIPELINE},assign-input-precision{{bits=%d}},quantize,tile-crossbar"
FLASH4 = "select-adc{type=flash bits=4}"


@functools.cache
def compiled(passes: str, target_name: str = "xpert"):
    target = load_target(target_name)
    ctx = Context(target=target, options={"calibration": DATA.images[:64]})
    front = FRONT % (4 if target_name == "xpert" else 8)  # xpert streams 1-8 bits, the others 8
    graph = PassManager(parse_pipeline(f"{front},{passes}")).run(
        import_onnx(example_path("digits-cnn")), ctx
    )
    return graph, ctx.decisions.tables


@pytest.mark.parametrize(
    ("full_scale", "low", "high", "bits", "expected"),
    [
        (0, 0, 1920, 6, (0, 63, 32.0)),  # uncalibrated: the power of two that fits 1,920
        (412, 0, 1920, 6, (0, 63, 7.0)),  # ceil(412 / 63)
        (63, 0, 1920, 6, (0, 63, 1.0)),
        (64, 0, 1920, 6, (0, 63, 2.0)),
        (5000, 0, 1920, 6, (0, 63, 31.0)),  # never wider than the read's range: ceil(1920 / 63)
        (300, -1920, 1920, 5, (-16, 15, 20.0)),  # signed: the top code is 15
    ],
)
def test_calibrated_step_is_the_smallest_integer_that_reaches_full_scale(
    full_scale, low, high, bits, expected
):
    converter = Converter(ConverterKind.FLASH, bits, full_scale=full_scale)
    assert adc_levels(converter, low, high) == expected


def test_saturating_converters_ignore_a_full_scale():
    converter = Converter(ConverterKind.SAR, 6, range_rule="saturate", full_scale=100)
    assert adc_levels(converter, 0, 1920) == (0, 63, 1.0)


@pytest.mark.parametrize("step", [3.0, 7.0, 9.0, 10.0, 12.0])
def test_a_step_that_is_not_a_power_of_two_rounds_exactly(step):
    """Codes are round-half-to-even of sum / step in exact arithmetic (as Python rounds a
    Fraction), then clipped."""
    sums = torch.arange(-700, 701, dtype=torch.float32)
    rounded = [round(Fraction(int(s), int(step))) for s in sums.tolist()]
    codes = sums.clone()
    stats = Statistics()
    convert_adc(codes, (-32, 31, step), stats)
    assert codes.tolist() == [min(31, max(-32, r)) for r in rounded]
    assert stats.saturated == sum(1 for r in rounded if not -32 <= r <= 31)


def _brute_force_largest_sum(graph, images) -> dict[str, int]:
    """The largest partial sum of every layer on `images`, by loops over the definition: offset
    weights `w + 128` cut into 4-bit slices, 4-bit inputs read one bit at a time, 128 rows per
    read."""
    layers = crossbar_layers(graph)
    values = collect(graph, images, [n.inputs[0] for n in layers])
    largest = {}
    for node in layers:
        x = values[node.inputs[0]].astype(np.int64)
        w = graph.constant_data(node.inputs[1]).astype(np.int64)
        if node.op == "conv":
            patches, _ = kernels.im2col(
                x, w.shape[2:], node.attr("strides"), node.attr("pads"), node.attr("dilations"), 1
            )
            x2, w2 = patches[0], kernels.conv_filters(w, 1)[0]
        else:
            x2, w2 = x.reshape(-1, x.shape[-1]), w
        stored = w2 + 128
        top = 0
        for shift in (4, 0):
            part = (stored >> shift) & 15
            for bit in range(4):
                ones = (x2 >> bit) & 1
                for start in range(0, x2.shape[1], 128):
                    sums = ones[:, start : start + 128] @ part[start : start + 128]
                    top = max(top, int(sums.max()))
        largest[node.outputs[0]] = top
    return largest


def test_full_scale_is_the_largest_calibration_sum():
    """quantile = 1 on every position: full_scale is the largest sum a column produced on the
    calibration inputs, measured independently of the datapath."""
    passes = f"{FLASH4},calibrate-adc{{positions=100000 samples=16}}"
    graph, tables = compiled(passes)
    expected = _brute_force_largest_sum(graph, DATA.images[:16])
    for node in crossbar_layers(graph):
        assert node.attributes["full_scale"] == expected[node.outputs[0]]
    rows = tables["calibrate-adc"]
    assert len(rows) == 3 and all(row["clipped"] == 0 for row in rows)


def test_a_lower_quantile_narrows_the_range_and_clips():
    _, wide = compiled(f"{FLASH4},calibrate-adc")
    _, narrow = compiled(f"{FLASH4},calibrate-adc{{quantile=0.99}}")
    for row, other in zip(narrow["calibrate-adc"], wide["calibrate-adc"], strict=True):
        assert row["full_scale"] <= other["full_scale"]
        assert 0 < row["clipped"] <= 0.011


def test_calibration_lifts_a_6_bit_flash_on_digits():
    """Uncalibrated, a 6-bit flash's step is 16-32 units and a quarter of the predictions
    change (72% against 96% lossless); with the calibrated range (steps of 1-7) it stays near
    the lossless network."""
    plain, _ = compiled("select-adc{type=flash bits=6}")
    tuned, _ = compiled("select-adc{type=flash bits=6},calibrate-adc")
    data = load_dataset("digits-cnn", 300)
    before = simulate(plain, XPERT, data)
    after = simulate(tuned, XPERT, data)
    assert after.accuracy >= before.accuracy + 0.15
    assert after.agreement_quantized >= 0.95


def test_the_attribute_prints_and_parses():
    graph, _ = compiled(f"{FLASH4},calibrate-adc")
    text = print_graph(graph)
    assert "full_scale = " in text
    assert print_graph(parse_graph(text)) == text


def test_full_scale_on_a_unit_step_converter_is_refused():
    graph, _ = compiled("select-adc", "isaac")
    node = crossbar_layers(graph)[0]
    edited = replace_nodes(graph, {node.outputs[0]: with_attributes(node, full_scale=50)})
    with pytest.raises(MappingError) as info:
        check_program_target(edited, load_target("isaac"))
    assert "nothing to calibrate" in str(info.value)
    assert "full-scale range rule" in info.value.render()


def test_full_scale_on_an_mtj_layer_fails_verification():
    graph, _ = compiled("select-adc{type=mtj samples=4}", "sotmtj")
    text = print_graph(graph)
    first = text.index("converter = #converter")
    edited = text[:first] + "full_scale = 40, " + text[first:]
    with pytest.raises(VerificationError, match="converter to be an ADC"):
        verify(parse_graph(edited))


def test_searches_calibrate_full_scale_adcs_only():
    assert "calibrate-adc" in [s.name for s in template(XPERT)]
    assert "calibrate-adc" in [s.name for s in template(load_target("hybrid"))]
    assert "calibrate-adc" not in [s.name for s in template(load_target("isaac"))]


def test_an_evaluation_of_cost_alone_skips_the_calibrations_and_prices_the_same(monkeypatch):
    """calibrate-adc and calibrate-mtj set ranges only (`Pass.priced`): a cost-only evaluation
    leaves them out, and its cost is the full compile's."""
    from imcc.costmodel import estimate
    from imcc.examples import resolve_model
    from imcc.search.evaluate import Evaluator, Metrics, Problem
    from imcc.search.space import build_space

    target = load_target("hybrid")
    problem = Problem.load(
        resolve_model("digits-cnn"),
        target,
        "digits-cnn",
        search_samples=16,
        probe_samples=16,
        check_samples=16,
    )
    space = build_space(problem.graph, target)
    choices = space.uniform({"select-adc.per_layer_converter": "flash"})
    choices["select-adc.per_layer_converter[1]"] = "mtj"
    pipeline = space.pipeline(choices)
    assert "calibrate-adc" in pipeline and "calibrate-mtj" in pipeline
    evaluator = Evaluator(problem)
    full = evaluator.compile(pipeline)
    assert "full_scale" in crossbar_layers(full)[0].attributes
    assert "ps_scale" in crossbar_layers(full)[1].attributes
    from imcc.passes.calibrate_adc import CalibrateAdc
    from imcc.passes.calibrate_mtj import CalibrateMtj

    def refuse(self, graph, ctx):
        raise AssertionError(f"{self.name} ran for a cost-only evaluation")

    monkeypatch.setattr(CalibrateAdc, "run", refuse)
    monkeypatch.setattr(CalibrateMtj, "run", refuse)
    cost_only = Evaluator(problem).evaluate(pipeline, accuracy=False)
    assert cost_only.metrics == Metrics.of(estimate(full, target))
