"""The hybrid target: every converter mechanism of the three papers on one array technology,
chosen layer by layer (targets/hybrid.hw), compiled, simulated and priced as one chip."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from imcc.backend.reference import run_graph
from imcc.backend.simulator import CrossbarInterpreter
from imcc.costmodel import estimate
from imcc.costmodel.converters import survey_adc_energy_pj
from imcc.frontend.hw import load_target
from imcc.ir.graph import Graph, GraphBuilder
from imcc.ir.io import parse_program
from imcc.ir.printer import print_graph
from imcc.ir.rebatch import rebatch
from imcc.ir.types import DType, TensorType
from imcc.passes.context import Context
from imcc.passes.layers import crossbar_layers
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import parse_pipeline

WIDTH = 96
LAYERS = ("mtj", "sar", "flash", "sa")
"""One layer per converter kind: a chip no single paper builds."""
MIXED = (
    "assign-input-precision{per_layer_slice=[4,3,1,1] "
    "per_layer_speculate=[false,true,false,false]},"
    "quantize,tile-crossbar,"
    "encode-weights{per_layer_scheme=[differential,center-offset,differential,differential] "
    "center_bits=4},"
    "select-adc{per_layer_converter=[mtj,sar,flash,sa] per_layer_bits=[1,7,4,1] "
    "per_layer_samples=[4,1,1,1]},"
    "calibrate-mtj,share-columns{per_layer=[1,128,8,1]},profile-converters,place"
)


@functools.cache
def hybrid():
    return load_target("hybrid")


def mlp(seed: int = 0) -> Graph:
    """Four float linears with ReLUs between them (96 wide)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("mlp")
    (h,) = [b.add_input("x", TensorType((1, WIDTH), DType.F32))]
    for index in range(len(LAYERS)):
        w = rng.normal(0, 1 / np.sqrt(WIDTH), (WIDTH, WIDTH)).astype(np.float32)
        (h,) = b.add_node("linear", [h, b.add_constant(w, f"w{index}")], {}, name=f"fc{index}")
        if index < len(LAYERS) - 1:
            (h,) = b.add_node("relu", [h], {}, name=f"relu{index}")
    return b.build([h])


def inputs(count: int = 16, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((count, WIDTH), dtype=np.float32)


@functools.cache
def mixed() -> Graph:
    ctx = Context(target=hybrid(), options={"calibration": inputs()})
    return PassManager(parse_pipeline(MIXED)).run(mlp(), ctx)


def test_one_chip_takes_a_different_mechanism_in_every_layer():
    layers = crossbar_layers(mixed())
    assert [n.attr("converter").name for n in layers] == list(LAYERS)
    assert [n.attr("converter").samples for n in layers] == [4, 1, 1, 1]
    assert [n.attr("weights").encoding for n in layers] == [
        "differential",
        "center-offset",
        "differential",
        "differential",
    ]
    assert [n.attr("input").speculate for n in layers] == [False, True, False, False]
    assert layers[0].attributes["ps_scale"] and "ps_scale" not in layers[2].attributes
    assert layers[1].attr("profile").speculation_failures >= 0  # the speculating one profiled
    assert print_graph(parse_program(print_graph(mixed()))) == print_graph(mixed())


def test_each_layer_is_priced_by_its_own_converter_model():
    target = hybrid()
    report = estimate(mixed(), target)
    layers = [layer for layer in report.layers if layer.conversions]
    assert len(layers) == len(LAYERS)
    per_conversion = [
        layer.energy_breakdown_j["converters"] / layer.conversions for layer in layers
    ]
    mtj, sar, flash, sense = per_conversion
    assert mtj == pytest.approx(30e-15)  # one SOT-MTJ sample; resets and counters apart
    assert sar == pytest.approx(survey_adc_energy_pj(7, 32, 1.28e9) * 1e-12)
    assert flash == pytest.approx(15 * 3.0875e-15)  # 2^4 - 1 comparators, no column term
    assert sense == pytest.approx(3.0875e-15)
    assert layers[0].conversions == 4 * layers[0].results  # four samples per result
    assert layers[1].recovery_conversions <= layers[1].conversions
    for value in (report.energy_j, report.latency_s, report.area_mm2):
        assert np.isfinite(value) and value > 0


def test_the_mixed_chip_is_the_quantized_network_bit_for_bit_with_lossless_converters():
    program = rebatch(mixed(), 8)
    x = {program.inputs[0].name: inputs(8, seed=2)}
    out = program.outputs[0]  # outputs are value names
    exact = CrossbarInterpreter(hybrid(), 0, lossless=True).run(program, x)[out]
    np.testing.assert_array_equal(exact, run_graph(program, x)[out])
    noisy = CrossbarInterpreter(hybrid(), 0).run(program, x)[out]
    assert np.isfinite(noisy).all() and not np.array_equal(noisy, exact)


def test_the_default_pipeline_is_isaacs_dataflow_on_this_chip():
    ctx = Context(target=hybrid(), options={"calibration": inputs()})
    graph = PassManager(parse_pipeline(hybrid().pipeline)).run(mlp(), ctx)
    for node in crossbar_layers(graph):
        assert node.attr("input").slices == (1,) * 8
        assert node.attr("weights").slices == (2, 2, 2, 2)
        assert (node.attr("converter").name, node.attr("converter").bits) == ("sar", 8)


def test_a_run_can_keep_one_layers_converters_and_make_the_others_exact():
    """CrossbarInterpreter(lossless=True, keep=...): what one layer's converters cost alone."""
    program = rebatch(mixed(), 8)
    x = {program.inputs[0].name: inputs(8, seed=3)}
    layers = [n.outputs[0] for n in crossbar_layers(program)]
    probe = program.replace(outputs=layers)
    exact = CrossbarInterpreter(hybrid(), 0, lossless=True).run(probe, x)
    mapped = CrossbarInterpreter(hybrid(), 0).run(probe, x)
    alone = CrossbarInterpreter(hybrid(), 0, lossless=True, keep=frozenset({layers[2]})).run(
        probe, x
    )
    for name in layers[:2]:  # before the kept (flash) layer: exact, not what the chip gives
        np.testing.assert_array_equal(alone[name], exact[name])
    assert not np.array_equal(mapped[layers[0]], exact[layers[0]])  # the MTJ layer is noisy
    assert not np.array_equal(alone[layers[2]], exact[layers[2]])  # the flash layer rounds


def test_simulate_only_one_layer_measures_that_layer_alone():
    from imcc.errors import UserError
    from imcc.frontend.datasets import Dataset
    from imcc.simulation import simulate

    program = mixed()
    x = inputs(24, seed=4)
    labels = (
        CrossbarInterpreter(hybrid(), 0, lossless=True)
        .run(rebatch(program, 24), {program.inputs[0].name: x})[program.outputs[0]]
        .argmax(axis=-1)
    )  # the exact network is right by construction
    data = Dataset("mlp", x, labels)
    layers = [n.outputs[0] for n in crossbar_layers(program)]
    exact_first = simulate(program, hybrid(), data, batch=8, only=layers[1])  # C+O, speculating
    assert exact_first.quantized_accuracy == 1.0
    assert exact_first.layers[0].rel_error == 0.0  # the MTJ layer ran exact
    sense = simulate(program, hybrid(), data, batch=8, only=layers[3])
    assert sense.layers[0].rel_error == 0.0 and sense.layers[3].rel_error > 0
    with pytest.raises(UserError, match="is not a crossbar layer"):
        simulate(program, hybrid(), data, only="nosuch")
