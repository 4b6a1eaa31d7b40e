"""The hybrid chip's co-search: per-layer mechanisms (search/mechanisms.py) and the
sensitivity-first composition (search/sensitivity.py)."""

from __future__ import annotations

import functools
import itertools
import math

import pytest

from imcc import driver
from imcc.errors import MappingError
from imcc.examples import resolve_model
from imcc.frontend.hw import load_target
from imcc.ir.printer import print_graph
from imcc.passes.context import Context
from imcc.passes.layers import crossbar_layers
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline
from imcc.search.evaluate import Evaluator, Metrics, Problem
from imcc.search.mechanisms import CENTER_BITS, Mechanism, menu, pipeline, uniform
from imcc.search.sensitivity import (
    Measured,
    Sensitivity,
    best,
    compose,
    measure,
    predicted,
    search,
    tune_sharing,
)
from imcc.search.space import build_space
from tests.test_hybrid import inputs, mlp


@functools.cache
def hybrid():
    return load_target("hybrid")


def test_the_hybrid_menu_has_every_papers_mechanism_baseline_first():
    names = [m.name for m in menu(hybrid())]
    assert names[0] == "sar:8b"
    assert {"sar:7b+co", "sar:7b+co+spec", "flash:5b", "sar_fs:6b", "sa", "mtj:16x"} <= set(names)
    assert {m.family for m in menu(hybrid())} == {"isaac", "raella", "xpert", "stox", "sense-amp"}
    # a target without Center+Offset or speculation units offers none of RAELLA's mechanisms
    assert not {m.family for m in menu(load_target("xpert"))} & {"raella", "stox"}


@pytest.mark.parametrize("mechanism", menu(load_target("hybrid")), ids=lambda m: m.name)
def test_every_mechanism_compiles_to_what_it_names(mechanism: Mechanism):
    graph = mlp()
    text = uniform(build_space(graph, hybrid()), mechanism)
    ctx = Context(target=hybrid(), options={"calibration": inputs()})
    mapped = PassManager(parse_pipeline(text)).run(graph, ctx)
    slice_, speculate, scheme, converter, bits, samples, slices, sharing = mechanism.entries
    for node in crossbar_layers(mapped):
        choice, streaming = node.attr("converter"), node.attr("input")
        assert (choice.name, str(choice.bits), str(choice.samples)) == (converter, bits, samples)
        assert streaming.speculate == (speculate == "true")
        assert streaming.slices[0] == int(slice_)
        assert node.attr("weights").encoding == scheme
        if slices != "auto":
            assert "-".join(map(str, node.attr("weights").slices)) == slices
        assert str(node.attr("column_share")) == sharing
    if "+co" in mechanism.name:
        assert f"center_bits={CENTER_BITS}" in text


def test_a_mixed_design_replays_with_imcc_compile():
    graph = mlp()
    space = build_space(graph, hybrid())
    by_name = {m.name: m for m in menu(hybrid())}
    chosen = [by_name[n] for n in ("mtj:16x", "sar:7b+co+spec", "flash:5b", "sar:8b")]
    text = pipeline(space, chosen)
    ctx = Context(target=hybrid(), options={"calibration": inputs()})
    direct = PassManager(parse_pipeline(text)).run(graph, ctx)
    replayed = driver.compile(
        mlp(), hybrid(), passes=f"{DEFAULT_PIPELINE},{text}", calibration=inputs()
    )
    assert print_graph(replayed) == print_graph(direct)
    with pytest.raises(MappingError, match="3 mechanisms for 4 crossbar layers"):
        pipeline(space, chosen[:3])


# --- composition on a synthetic table ---------------------------------------------------------

MENU = (
    Mechanism("base", "isaac", ("1",) * 8),
    Mechanism("cheap", "raella", ("1",) * 8),
    Mechanism("cheaper", "stox", ("1",) * 8),
)
COSTS = {  # (layer, mechanism): (drop, energy, latency, area) changes from the baseline
    (0, "cheap"): (0.00, -2.0, -0.1, -0.1),
    (0, "cheaper"): (0.05, -3.0, -0.2, -0.2),
    (1, "cheap"): (0.01, -1.0, -0.1, -0.1),
    (1, "cheaper"): (0.02, -1.5, -0.1, -0.2),
    (2, "cheap"): (0.03, -0.5, 0.0, 0.0),
    (2, "cheaper"): (0.30, -4.0, -0.5, -0.5),
}


def synthetic() -> Sensitivity:
    base = Measured(("base",) * 3, "", Metrics(10.0, 2.0, 2.0, 40.0, 1.0, 1.0), 0.9)
    table = Sensitivity(MENU, base)
    for (layer, name), (drop, e, lat, a) in COSTS.items():
        metrics = Metrics(10.0 + e, 2.0 + lat, 2.0 + a, 0.0, 1.0, 1.0)
        table.single[(layer, name)] = Measured((), "", metrics, 0.9 - drop)
    return table


def brute_force(table: Sensitivity, budget: float) -> float:
    """The lowest predicted EDAP of all designs within the budget."""
    names = [m.name for m in MENU]
    return min(
        edap
        for design in itertools.product(names, repeat=3)
        for drop, edap in [predicted(table, design)]
        if drop <= budget + 1e-12
    )


@pytest.mark.parametrize("budget", [0.0, 0.01, 0.03, 0.06, 0.5])
def test_composition_stays_within_the_budget_and_near_the_brute_force_optimum(budget):
    table = synthetic()
    design = compose(table, budget)
    drop, edap = predicted(table, design)
    assert drop <= budget + 1e-12
    assert edap <= 1.1 * brute_force(table, budget)  # greedy: within 10% of the optimum here
    if budget == 0.0:
        assert design == ("cheap", "base", "base")  # the one free change
    if budget == 0.5:
        assert design == ("cheaper", "cheaper", "cheaper")  # everything cheapest fits


def test_a_penalty_per_changed_layer_makes_the_composition_more_careful():
    table = synthetic()
    assert predicted(table, ("cheap", "cheap", "base"), penalty=0.01)[0] == pytest.approx(0.03)
    loose, careful = compose(table, 0.03), compose(table, 0.03, penalty=0.01)
    changed = [sum(n != "base" for n in d) for d in (loose, careful)]
    assert changed[1] <= changed[0] and predicted(table, careful, 0.01)[0] <= 0.03 + 1e-12


def half_drops(table: Sensitivity, log: list | None = None):
    """Return a stand-in for `evaluated` on the synthetic table: a design's costs add its
    layers' changes, and its real drop is half the sum of their single-layer drops (which
    therefore overestimate); each design evaluated is appended to `log`."""

    def measured(evaluator, space, chosen, **_):
        names = tuple(m.name for m in chosen)
        if log is not None:
            log.append(names)
        drop, _ = predicted(table, names)
        energy, latency, area = 10.0, 2.0, 2.0
        for layer, name in enumerate(names):
            if name != "base":
                _, e, lat, a = COSTS[(layer, name)]
                energy, latency, area = energy + e, latency + lat, area + a
        metrics = Metrics(energy, latency, area, energy * latency * area, 1.0, 1.0)
        return Measured(names, ",".join(names), metrics, 0.9 - drop / 2)

    return measured


def test_a_design_verified_within_the_budget_is_the_origin_of_the_next_composition(
    monkeypatch,
):
    """The single-layer drops overestimate (here: the real drop is half their sum): the first
    verified design leaves budget unspent, and the search goes on from it, to a cheaper design
    still within the budget."""
    import imcc.search.sensitivity as sensitivity

    table = synthetic()

    monkeypatch.setattr(sensitivity, "evaluated", half_drops(table))
    verified = search(None, None, table, 0.04)
    assert verified[0].mechanisms == compose(table, 0.04) == ("cheap", "cheaper", "base")
    assert len(verified) >= 2, "the search stopped at its first design within the budget"
    found = best(table, verified, 0.04)
    assert found.mechanisms == ("cheap", "cheaper", "cheap")  # predicted 0.05, measured 0.025
    assert found.metrics.edap < verified[0].metrics.edap
    assert table.baseline.accuracy - found.accuracy <= 0.04 + 1e-12


def test_an_origin_beyond_the_budget_is_repaired_where_accuracy_costs_least():
    """All-cheaper, measured 0.37 below the baseline: the repair takes layer 2 back (its 0.30
    is bought back for the least EDAP), then the descent goes on within the budget."""
    table = synthetic()
    origin = Measured(("cheaper",) * 3, "", Metrics(1.5, 1.2, 1.1, 1.98, 1.0, 1.0), 0.53)
    design = compose(table, 0.1, origin=origin)
    drop, edap = predicted(table, design, origin=origin)
    assert drop <= 0.1 + 1e-12
    assert design[:2] == ("cheaper", "cheaper") and design[2] != "cheaper"
    assert edap < predicted(table, ("base",) * 3)[1]
    hopeless = Measured(("cheaper",) * 3, "", Metrics(1.5, 1.2, 1.1, 1.98, 1.0, 1.0), 0.0)
    assert compose(table, 0.1, origin=hopeless) == hopeless.mechanisms  # nothing repairs it
    # at a budget of 0.04, layer 2's `cheaper` alone costs more than 5 budgets: no repair
    assert compose(table, 0.04, origin=origin) == origin.mechanisms
    assert compose(table, 0.07, origin=origin) != origin.mechanisms


def test_explore_measures_uniform_origins_within_range_and_searches_the_cheap_ones(monkeypatch):
    """`cheap` costs at most 0.03 in a layer (within 5 budgets of 0.04): its uniform design is
    measured; `cheaper` costs 0.30 in layer 2 and is not. The uniform design is dearer than
    what the search from the baseline found, so nothing is searched from it."""
    import imcc.search.sensitivity as sensitivity

    table = synthetic()
    evaluations: list[tuple[str, ...]] = []

    class Space:
        layers = (0, 1, 2)

    monkeypatch.setattr(sensitivity, "evaluated", half_drops(table, evaluations))
    found = sensitivity.explore(None, Space(), table, 0.04)
    assert ("cheap",) * 3 in evaluations and ("cheaper",) * 3 not in evaluations
    chosen = best(table, found, 0.04)
    assert chosen.mechanisms == ("cheap", "cheaper", "cheap")
    assert evaluations.index(("cheap",) * 3) == len(evaluations) - 1  # not searched from


# --- measure and search on a real model ---------------------------------------------------


@functools.cache
def digits_problem() -> Problem:
    return Problem.load(
        resolve_model("digits-cnn"),
        hybrid(),
        "digits-cnn",
        search_samples=48,
        probe_samples=48,
        check_samples=48,
    )


def test_measure_and_search_on_digits_cnn():
    problem = digits_problem()
    evaluator = Evaluator(problem)
    space = build_space(problem.graph, hybrid())
    by_name = {m.name: m for m in menu(hybrid())}
    small = [by_name[n] for n in ("sar:8b", "sar:7b+co", "flash:5b", "mtj:16x", "sa")]
    seen: list[Measured] = []
    table = measure(evaluator, space, small, report=seen.append)
    layers = len(space.layers)
    assert len(seen) == 1 + layers * (len(small) - 1) and len(table.single) == layers * 4
    assert table.baseline.mechanisms == ("sar:8b",) * layers
    assert table.baseline.quantized is not None
    for (layer, name), found in table.single.items():
        assert found.mechanisms[layer] == name and found.illegal is None
        assert found.metrics is not None and found.metrics.edap > 0
        assert table.drop(layer, name) is not None and table.drop(layer, name) >= 0
    assert table.drop(0, "sar:8b") == 0.0
    # a 1-bit sense amplifier on 1-bit inputs and 4-bit slices loses the network somewhere
    assert max(table.drop(layer, "sa") for layer in range(layers)) > 0.3
    verified = search(evaluator, space, table, 0.05)
    assert verified and all(v.metrics is not None for v in verified)
    chosen = best(table, verified, 0.05)
    assert table.baseline.accuracy - chosen.accuracy <= 0.05
    assert chosen.metrics.edap <= table.baseline.metrics.edap
    assert math.isfinite(chosen.metrics.edap)


def test_predictions_from_a_measured_origin_start_at_its_measured_figures():
    """A paper's design, measured, is an origin: its own prediction is what was measured
    (not the sum of its layers' single drops), and a change adds the two mechanisms'
    difference."""
    table = synthetic()
    origin = Measured(
        ("cheaper", "cheap", "base"), "", Metrics(6.0, 1.7, 1.7, 17.34, 1.0, 1.0), 0.88
    )
    assert predicted(table, origin.mechanisms, origin=origin) == (
        pytest.approx(0.02),
        pytest.approx(6.0 * 1.7 * 1.7),
    )
    drop, edap = predicted(table, ("cheap", "cheap", "base"), origin=origin)
    assert drop == pytest.approx(0.02 + 0.00 - 0.05)  # layer 0: cheaper -> cheap
    assert edap == pytest.approx((6.0 + 1.0) * (1.7 + 0.1) * (1.7 + 0.1))
    design = compose(table, 0.03, origin=origin)
    assert predicted(table, design, origin=origin)[0] <= 0.03 + 1e-12
    assert predicted(table, design, origin=origin)[1] <= 6.0 * 1.7 * 1.7


def test_tuned_sharing_lowers_edap_keeps_accuracy_and_replays():
    """Column sharing changes no result (sample-and-hold), only the cost: the tuned design has
    the same accuracy, an EDAP no higher, and its pipeline names the new sharing."""
    problem = digits_problem()
    evaluator = Evaluator(problem)
    space = build_space(problem.graph, hybrid())
    by_name = {m.name: m for m in menu(hybrid())}
    small = [by_name[n] for n in ("sar:8b", "flash:5b", "sar_fs:6b")]
    table = measure(evaluator, space, small, layers=[])
    chosen = [by_name["flash:5b"], by_name["sar_fs:6b"], by_name["sar:8b"]]
    text = pipeline(space, chosen)
    design = Measured.of(chosen, text, evaluator.evaluate(text))
    tuned = tune_sharing(evaluator, space, table, design)
    assert tuned.accuracy == design.accuracy
    assert tuned.metrics.edap <= design.metrics.edap
    if tuned is not design:
        assert tuned.pipeline != design.pipeline and tuned.metrics.edap < design.metrics.edap
        assert "share-columns{factor=0 per_layer=[8,8,128]}" not in tuned.pipeline
