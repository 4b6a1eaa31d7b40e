"""Search quality on a space small enough to enumerate (a reduced benchmarks/search.py (a)).

digits-cnn on xpert.hw (timed as a pipeline, on packed tiles), per-layer converter type x column
sharing {1, 2, 4, 8, 16}: 1000 designs. Every design is priced for the optimum EDAP; the
strategy's TPE phase then runs with 10% of the space as its trial budget (trials quantize once:
the Evaluator's cache, checked against a full compile on the design found) and must come within
2% of the optimum, and at least as low as random sampling with the same budget and seed (drawn
over the same priced designs).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import shutil
import sys
import tempfile
from pathlib import Path

import optuna

from imcc.examples import resolve_model
from imcc.frontend.hw import load_target
from imcc.search import build_space
from imcc.search.evaluate import Evaluator, Problem
from imcc.search.strategies import make_sampler

ROOT = Path(__file__).resolve().parents[1]
SHARING = ("1", "2", "4", "8", "16")


def _benchmark():
    """Import benchmarks/search.py (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "search_benchmark", ROOT / "benchmarks" / "search.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _random_best(space, edaps: dict[str, float], budget: int, seed: int) -> float:
    """Return the best EDAP random sampling finds in `budget` draws over the priced designs."""
    study = optuna.create_study(direction="minimize", sampler=make_sampler("random", seed, budget))
    best = math.inf
    for _ in range(budget):
        trial = study.ask()
        choices = {d.key: trial.suggest_categorical(d.key, d.choices) for d in space.dimensions}
        edap = edaps[space.pipeline(choices)]
        study.tell(trial, edap)
        best = min(best, edap)
    return best


def test_search_finds_the_optimum_within_2_percent_with_10_percent_of_evaluations(
    tmp_path: Path,
) -> None:
    scratch = Path("/dev/shm")  # the trials' SQLite storage: no fsync waits on tmpfs
    work = Path(tempfile.mkdtemp(dir=scratch)) if scratch.is_dir() else tmp_path
    bench = _benchmark()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # xpert.hw runs on NeuroSim's synchronous clock, which couples every layer's choice through
    # the slowest layer, and lays a layer's copies out by its size (NeuroSim's floorplan); this
    # test measures the sampler on per-layer choices, so it prices them on the same target with
    # each layer at its own cycle (a pipeline) on packed tiles
    xpert = load_target("xpert")
    target = dataclasses.replace(
        xpert,
        timing="pipelined",
        hierarchy=dataclasses.replace(xpert.hierarchy, floorplan="packed"),
    )
    problem = Problem.load(
        resolve_model("digits-cnn"),
        target,
        "digits-cnn",
        search_samples=16,
        probe_samples=16,
        check_samples=16,
    )
    space = bench.restrict(
        build_space(problem.graph, target), {bench.CONVERTER: None, bench.SHARING: SHARING}
    )
    assert space.size() == 1000
    edaps = bench.enumerate_space(space, Evaluator(problem))
    optimum = min(edaps.values())
    budget = space.size() // 10
    found = bench.search(
        space,
        Evaluator(problem),
        sampler="tpe",
        seed=0,
        trials=budget,
        workdir=work,
        name="quality",
    )
    if work != tmp_path:
        shutil.rmtree(work)
    assert found.trials == budget and found.distinct <= budget
    assert found.best == edaps[bench._mapping(found.best_pipeline)]  # the trial's own costs
    assert found.best <= 1.02 * optimum, (found.best / optimum, found.best_pipeline)
    assert found.best <= _random_best(space, edaps, budget, seed=0)
    full = Evaluator(problem, cached_prefixes=0).evaluate(
        bench._mapping(found.best_pipeline), accuracy=False
    )
    assert full.metrics is not None and full.metrics.edap == found.best
