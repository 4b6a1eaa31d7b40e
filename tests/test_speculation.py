"""RAELLA's speculation end to end: explicit input slices, converter profiles measured by the
bit-accurate simulator, and a cost model that prices the measured recoveries (references.md §3).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from imcc.backend.simulator import CrossbarInterpreter
from imcc.costmodel import estimate
from imcc.errors import MappingError, PipelineError
from imcc.frontend.hw import load_target
from imcc.ir.graph import Graph, GraphBuilder
from imcc.ir.mapping import ConverterProfile, InputStreaming
from imcc.ir.rebatch import rebatch
from imcc.ir.types import DType, TensorType
from imcc.passes.context import Context
from imcc.passes.layers import crossbar_layers, replace_nodes, with_attributes
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import parse_pipeline
from imcc.passes.registry import load_pass

K, N = 512, 64
MAPPING = "quantize,tile-crossbar{slices=[4,2,2]},select-adc,share-columns"
SPECULATIVE = "assign-input-precision{speculate=true slices=3,3,2}"
BIT_SERIAL = "assign-input-precision{slice=1}"


@functools.cache
def raella():
    return load_target("raella")


def float_linear(k: int = K, n: int = N, sigma: float = 0.01, seed: int = 0) -> Graph:
    """A float linear layer whose columns hold small weights and one large one (the large one
    sets each filter's quantization scale, so most weight codes are small, as after training)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, sigma, (k, n)).astype(np.float32)
    w[rng.integers(0, k, n), np.arange(n)] = 1.0
    b = GraphBuilder("syn")
    x = b.add_input("x", TensorType((1, k), DType.F32))
    (y,) = b.add_node("linear", [x, b.add_constant(w, "w")], {}, name="fc")
    return b.build([y])


def activations(zeros: float, count: int = 16, k: int = K, seed: int = 1) -> np.ndarray:
    """ReLU-like calibration inputs: a share `zeros` of exact zeros, the rest uniform."""
    rng = np.random.default_rng(seed)
    x = rng.random((count, k), dtype=np.float32)
    x[rng.random((count, k)) < zeros] = 0
    return x


def compile_linear(pipeline: str, zeros: float = 0.8, **changes) -> tuple[Graph, Context]:
    ctx = Context(target=raella(), options={"calibration": activations(zeros)})
    graph = PassManager(parse_pipeline(pipeline)).run(float_linear(**changes), ctx)
    return graph, ctx


def the_layer(graph: Graph):
    (node,) = crossbar_layers(graph)
    return node


def crossbar_cost(graph: Graph):
    return next(layer for layer in estimate(graph, raella()).layers if layer.conversions)


# --- assign-input-precision{slices=...} ----------------------------------------------------


def test_slices_option_sets_every_layer_and_prints_canonically():
    (spec,) = parse_pipeline(SPECULATIVE)
    assert "slices=[3,3,2] per_layer_speculate=[]}" in str(spec)
    graph, ctx = compile_linear(f"{SPECULATIVE},{MAPPING}")
    assert the_layer(graph).attr("input") == InputStreaming(8, (3, 3, 2), False, True)
    assert ctx.decisions.tables["assign-input-precision"][0]["slices"] == [3, 3, 2]


def test_per_layer_slice_overrides_slices():
    graph, _ = compile_linear(
        "assign-input-precision{slices=[3,3,2] per_layer_slice=[4]}," + MAPPING
    )
    assert the_layer(graph).attr("input").slices == (4, 4)


@pytest.mark.parametrize(
    ("slices", "message"),
    [
        ("[3,3,3]", r"input slices \[3, 3, 3\] add up to 9 bits, not the layer's 8"),
        ("[5,3]", "input slice width 5 is not offered by the target"),
    ],
)
def test_illegal_slices_are_mapping_errors(slices, message):
    with pytest.raises(MappingError, match=message):
        compile_linear(f"assign-input-precision{{slices={slices}}}")


def test_search_space_offers_speculative_slicings_only_with_a_speculation_unit():
    graph = float_linear()
    space = load_pass("assign-input-precision")().search_space(graph, Context(target=raella()))
    assert space["speculate"] == [False, True]
    assert space["slices"][0] == () and (3, 3, 2) in space["slices"]
    assert all(sum(cut) == 8 and len(cut) <= 4 for cut in space["slices"][1:])
    isaac = load_target("isaac")
    plain = load_pass("assign-input-precision")().search_space(graph, Context(target=isaac))
    assert set(plain) == {"bits", "slice"}


def two_linears() -> Graph:
    """Two float linears in a row (512 -> 64 -> 64)."""
    rng = np.random.default_rng(0)
    b = GraphBuilder("two")
    x = b.add_input("x", TensorType((1, K), DType.F32))
    (h,) = b.add_node(
        "linear",
        [x, b.add_constant(rng.normal(0, 0.05, (K, N)).astype(np.float32), "w1")],
        {},
        name="fc1",
    )
    (y,) = b.add_node(
        "linear",
        [h, b.add_constant(rng.normal(0, 0.05, (N, N)).astype(np.float32), "w2")],
        {},
        name="fc2",
    )
    return b.build([y])


def test_per_layer_speculate_decides_layer_by_layer():
    pipeline = "assign-input-precision{per_layer_slice=[3,1] per_layer_speculate=[true,false]}"
    (spec,) = parse_pipeline(pipeline)
    assert "per_layer_speculate=[true,false]" in str(spec)
    assert parse_pipeline(str(spec)) == [spec]  # the spelling reads back
    ctx = Context(target=raella(), options={"calibration": activations(0.8)})
    graph = PassManager(parse_pipeline(f"{pipeline},{MAPPING}")).run(two_linears(), ctx)
    first, second = (node.attr("input") for node in crossbar_layers(graph))
    assert (first.slices, first.speculate) == ((3, 3, 2), True)
    assert (second.slices, second.speculate) == ((1,) * 8, False)
    assert [row["speculate"] for row in ctx.decisions.tables["assign-input-precision"]] == [
        True,
        False,
    ]


def test_per_layer_speculate_is_checked():
    ctx = Context(target=raella())
    with pytest.raises(MappingError, match="per_layer_speculate has 1 entries but the model has 2"):
        PassManager(parse_pipeline("assign-input-precision{per_layer_speculate=[true]}")).run(
            two_linears(), ctx
        )
    isaac = Context(target=load_target("isaac"))
    with pytest.raises(MappingError, match="has no speculation unit"):
        PassManager(parse_pipeline("assign-input-precision{per_layer_speculate=[false,true]}")).run(
            two_linears(), isaac
        )
    with pytest.raises(PipelineError, match=r"per_layer_speculate.*expects a list of true/false"):
        parse_pipeline("assign-input-precision{per_layer_speculate=[yes]}")


def test_search_space_speculates_layer_by_layer():
    from imcc.search.space import build_space

    space = build_space(two_linears(), raella())
    keys = {d.key: d.choices for d in space.dimensions}
    assert keys["assign-input-precision.per_layer_speculate[0]"] == ("false", "true")
    assert keys["assign-input-precision.per_layer_speculate[1]"] == ("false", "true")
    assert "assign-input-precision.speculate" not in keys
    pipeline = space.pipeline(
        {
            **space.uniform({"assign-input-precision.per_layer_slice": "3"}),
            "assign-input-precision.per_layer_speculate[0]": "true",
            "assign-input-precision.per_layer_speculate[1]": "false",
        }
    )
    assert "per_layer_speculate=[true,false]" in pipeline


# --- profile-converters --------------------------------------------------------------------


@functools.cache
def profiled(zeros: float = 0.8) -> tuple[Graph, Graph, Context]:
    """The speculative layer before and after profile-converters."""
    mapped, _ = compile_linear(f"{SPECULATIVE},{MAPPING}", zeros)
    ctx = Context(target=raella(), options={"calibration": activations(zeros)})
    return (
        mapped,
        PassManager(parse_pipeline("profile-converters{samples=16}")).run(mapped, ctx),
        ctx,
    )


def test_profile_matches_a_direct_simulation():
    mapped, graph, ctx = profiled()
    profile = the_layer(graph).attr("profile")
    machine = CrossbarInterpreter(raella(), 0)
    machine.run(rebatch(mapped, 16), {"x": activations(0.8)})
    (record,) = machine.layers.values()
    stats = record.stats
    assert profile.samples == 16
    assert profile.saturation == pytest.approx(stats.saturated / stats.conversions, abs=1e-6)
    assert profile.speculation_failures == pytest.approx(
        stats.speculative_failures / stats.conversions, abs=1e-6
    )
    assert profile.recoveries == pytest.approx(stats.recoveries / stats.conversions, abs=1e-6)
    # RAELLA observes 4-10% of speculative conversions failing on real layers; so does this one
    assert 0.02 < profile.speculation_failures < 0.10
    # a failed s-bit slice re-runs as s 1-bit conversions: between 2 and 3 per failure here
    assert 2 * profile.speculation_failures <= profile.recoveries
    assert profile.recoveries <= 3 * profile.speculation_failures
    (row,) = ctx.decisions.tables["profile-converters"]
    assert row["conversions"] == stats.conversions
    assert row["failure_pct"] == pytest.approx(100 * profile.speculation_failures, abs=1e-3)


def test_profile_of_a_plain_layer_reports_saturation_only():
    graph, _ = compile_linear(
        f"{BIT_SERIAL},{MAPPING},profile-converters{{samples=4}}", 0.5, sigma=0.04
    )
    profile = the_layer(graph).attr("profile")
    assert profile.samples == 4 and profile.saturation > 0
    assert profile.speculation_failures == profile.recoveries == 0.0


def test_profile_needs_a_mapped_graph():
    with pytest.raises(MappingError, match="has no 'weights', 'tiling', 'input', 'converter'"):
        compile_linear("quantize,profile-converters")


# --- the cost model prices the measured recoveries -----------------------------------------


def test_recovery_conversions_are_the_profiled_rate_not_a_constant():
    costs = {}
    for zeros in (0.8, 0.5):
        _, graph, _ = profiled(zeros)
        profile = the_layer(graph).attr("profile")
        cost = crossbar_cost(graph)
        speculative = cost.conversions - cost.recovery_conversions
        # 3 wide input slices x 3 weight slices per column and position, one row tile
        assert speculative == 3 * 3 * N
        assert cost.recovery_conversions == pytest.approx(profile.recoveries * speculative)
        assert cost.energy_breakdown_j["speculation"] == pytest.approx(
            speculative * raella().speculation.energy_j
        )
        costs[zeros] = (profile.recoveries, cost.recovery_conversions)
    # denser inputs fail more often, and the cost model follows the measurement
    assert costs[0.5][0] > costs[0.8][0] and costs[0.5][1] > costs[0.8][1]
    record = estimate(profiled()[1], raella()).to_dict()["layers"]
    (layer,) = [entry for entry in record if entry["conversions"]]
    assert (
        layer["profile"]["speculation_failure_rate"]
        == the_layer(profiled()[1]).attr("profile").speculation_failures
    )
    assert layer["recovery_conversions"] > 0


def test_speculation_beats_bit_serial_converts_per_mac_when_failures_are_rare():
    """RAELLA (§3): with 3 weight slices on 512 rows, 8 x 1-bit inputs take 8 x 3 / 512 =
    0.047 converts/MAC; speculative 3-3-2 inputs about 0.02 (0.375-0.75 of the 1-bit count)."""
    bit_serial, _ = compile_linear(f"{BIT_SERIAL},{MAPPING},profile-converters")
    plain = crossbar_cost(bit_serial)
    spec = crossbar_cost(profiled()[1])
    assert plain.converts_per_mac == pytest.approx(8 * 3 / 512)
    assert spec.converts_per_mac < 0.6 * plain.converts_per_mac
    assert 0.375 <= spec.conversions / plain.conversions <= 0.75
    assert spec.converts_per_mac == pytest.approx(0.02, abs=0.004)
    # the array runs 3 + 8 = 11 cycles instead of 8 (RAELLA), so speculation costs latency
    assert spec.latency_s == pytest.approx(plain.latency_s * 11 / 8)


def test_no_failures_measured_means_no_recovery_cycles():
    _, graph, _ = profiled()
    node = the_layer(graph)
    clean = replace_nodes(
        graph, {node.outputs[0]: with_attributes(node, profile=ConverterProfile(16, 0.0, 0.0, 0.0))}
    )
    busy, quiet = crossbar_cost(graph), crossbar_cost(clean)
    assert quiet.recovery_conversions == 0
    assert quiet.latency_s == pytest.approx(busy.latency_s * 3 / 11)
    assert quiet.energy_breakdown_j["buffers"] < busy.energy_breakdown_j["buffers"]


def test_speculation_without_a_profile_is_a_mapping_error():
    mapped, _, _ = profiled()
    with pytest.raises(MappingError, match="no 'profile' attribute") as error:
        estimate(mapped, raella())
    assert "profile-converters" in error.value.hint
