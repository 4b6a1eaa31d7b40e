"""`imcc search`: the space the passes declare, the strategies, storage and resume, the outputs,
and the replay of the best pipeline string by `imcc compile --passes`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import optuna
import pytest

from imcc.cli import main
from imcc.errors import UserError
from imcc.examples import resolve_model
from imcc.frontend.hw import load_target
from imcc.frontend.onnx import import_onnx
from imcc.passes.context import Context
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline, print_pipeline
from imcc.search import SearchConfig, build_space, run_search
from imcc.search.evaluate import Evaluator, Problem
from imcc.search.storage import ILLEGAL, PIPELINE, finished
from imcc.search.strategies import widest_design
from imcc.target import Target

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--limit", "32", "--probe", "16", "--check", "64"]
"""Small accuracy subsets: a trial takes a few tens of milliseconds on digits-cnn."""

COST_KEYS = ("energy_j", "latency_s", "area_mm2", "edap", "tops_per_w", "tops_per_mm2")


def _digits_problem(target: Target, search: int, probe: int, check: int) -> Problem:
    """The digits-cnn search problem on `target` with these subset sizes."""
    return Problem.load(
        resolve_model("digits-cnn"),
        target,
        "digits-cnn",
        search_samples=search,
        probe_samples=probe,
        check_samples=check,
    )


def _replay(tmp: Path, target: str, pipeline: str) -> dict:
    """Return the cost report of `imcc compile digits-cnn --passes PIPELINE` (a search's
    replay command)."""
    report = tmp / "replay.json"
    replay = ["compile", "digits-cnn", "--target", target, "--passes", pipeline]
    code = main([*replay, "--calib", "digits-cnn", "--report", str(report)])
    assert code == 0
    return json.loads(report.read_text())


def _search(
    tmp: Path, *flags: str, strategy: str = "random", trials: int = 6, target: str = "xpert"
) -> dict:
    code = main(
        [
            "search",
            "digits-cnn",
            "--target",
            target,
            "--data",
            "digits-cnn",
            "--trials",
            str(trials),
            "--strategy",
            strategy,
            "--out",
            str(tmp),
            "--max-accuracy-drop",
            "60",
            *FAST,
            *flags,
        ]
    )
    assert code == 0
    return json.loads((tmp / "pareto.json").read_text())


def _study(record: dict, name: str | None = None) -> optuna.Study:
    return optuna.load_study(study_name=name or record["study"], storage=record["storage"])


def _cleaned(target: str):
    graph = import_onnx(str(resolve_model("digits-cnn")))
    return PassManager(parse_pipeline(DEFAULT_PIPELINE)).run(graph, Context()), load_target(target)


def test_space_covers_every_tunable_pass_per_layer_on_xpert() -> None:
    graph, target = _cleaned("xpert")
    space = build_space(graph, target)
    keys = {d.key for d in space.searched()}
    assert len(space.layers) == 3
    for layer in range(3):
        for option in (
            "assign-input-precision.per_layer_bits",
            "select-adc.per_layer_converter",
            "select-adc.per_layer_bits",
            "slice-weights.per_layer_slices",
            "share-columns.per_layer",
        ):
            assert f"{option}[{layer}]" in keys
    dims = {d.key: d for d in space.dimensions}
    assert dims["select-adc.per_layer_converter[0]"].choices == ("sar", "flash")
    assert dims["share-columns.per_layer[1]"].choices == ("1", "2", "4", "8", "16", "32")
    # xpert.hw offers 1..8 input bits; the quantize pass gives 2 bits or more
    assert dims["assign-input-precision.per_layer_bits[2]"].choices == tuple(
        str(b) for b in range(2, 9)
    )
    # uniform options superseded by a per-layer list are not searched twice
    assert "assign-input-precision.bits" not in keys and "slice-weights.adaptive" not in keys
    choices = {d.key: d.choices[-1] for d in space.searched()}
    pipeline = space.pipeline(choices)
    assert print_pipeline(parse_pipeline(pipeline)) == pipeline
    assert "per_layer_converter=[flash,flash,flash]" in pipeline
    assert "per_layer=[32,32,32]" in pipeline and "per_layer_slices=[1-1-1-1-1-1-1-1," in pipeline


def test_pass_declares_per_layer_counterparts() -> None:
    graph, target = _cleaned("xpert")
    select = parse_pipeline("select-adc")[0]
    layers = select.layer_search_space(graph, Context(target=target))
    assert layers["per_layer_bits"] == [[4, 5, 6, 7, 8]] * 3
    slices = parse_pipeline("slice-weights")[0].layer_search_space(graph, Context(target=target))
    assert slices["per_layer_slices"][0][0] == "4-4"


def test_cached_quantized_prefix_compiles_what_a_full_compile_does() -> None:
    """Trials that share their passes up to quantize reuse its graph: the same programs (and
    constants) as compiling every pass anew, and the cache stays bounded."""
    from imcc.ir.printer import print_graph

    target = load_target("xpert")
    problem = _digits_problem(target, 32, 16, 32)
    cached, plain = Evaluator(problem, cached_prefixes=2), Evaluator(problem, cached_prefixes=0)
    for bits, sharing in [(8, 8), (6, 2), (8, 4), (4, 8), (6, 1), (8, 8)]:
        pipeline = (
            f"assign-input-precision{{bits={bits}}},quantize,tile-crossbar,"
            f"select-adc,share-columns{{factor={sharing}}},place"
        )
        a, b = cached.compile(pipeline), plain.compile(pipeline)
        assert print_graph(a) == print_graph(b)
        for name in a.constants:
            assert np.array_equal(a.constant_data(name), b.constant_data(name))
        assert len(cached.prefixes) <= 2 and not plain.prefixes


def test_a_probed_evaluation_draws_as_one_simulation_of_all_its_samples() -> None:
    """An MTJ design evaluated with a probe (its first images, then the rest) draws each
    image's MTJs as one simulation of all the images does: the rest's images are not drawn as
    if they were the first again, so the accuracy does not depend on where the probe ends."""
    from imcc.search.mechanisms import menu, pipeline

    target = load_target("hybrid")
    problems = {
        probe: _digits_problem(target, 64, probe, 64)
        for probe in (64, 8, 16, 32)  # 64: one simulation of every image
    }
    mtj = {m.name: m for m in menu(target)}["mtj:4x"]
    design = pipeline(build_space(problems[64].graph, target), [mtj, mtj, mtj])
    found = {probe: Evaluator(problem).evaluate(design) for probe, problem in problems.items()}
    assert all(e.samples == 64 and not e.pruned for e in found.values())
    whole = found[64].accuracy
    assert [e.accuracy for e in found.values()] == pytest.approx([whole] * 4, abs=1e-12)


def test_what_a_design_below_the_floor_kept_is_dropped_first() -> None:
    """The simulations of a design that fails the floor (pruned by its probe, or measured
    below it) leave their prefix-cache entries first in line to be dropped; a design that
    meets the floor leaves its own among the most recently used."""
    problem = _digits_problem(load_target("xpert"), 32, 16, 32)
    evaluator = Evaluator(problem)
    design = (
        "assign-input-precision{per_layer_bits=[%s]},quantize,tile-crossbar,select-adc,"
        "share-columns,place"
    )
    cache = evaluator.reuse
    for bits, floor, rejected in [
        ("8,8,8", 0.0, False),
        ("8,6,8", 1.5, True),  # pruned by its probe
        ("8,8,6", 0.0, False),
        ("8,5,8", 1.0 / 32, False),
        ("8,4,8", 1.05, True),  # within the probe's slack: measured, below the floor
    ]:
        since = cache.puts
        evaluation = evaluator.evaluate(design % bits, floor=floor)
        assert evaluation is not None and evaluation.pruned == (floor > 1.1)
        new = {k for k, n in cache.added.items() if n >= since}
        assert new  # resumed before its second layer, it kept what it made before its third
        order, older = list(cache.entries), len(cache.entries) - len(new)
        if rejected:
            assert set(order[: len(new)]) == new
        else:  # behind the older entries the designs since have not touched
            assert not new & set(order[: min(older, len(new))])


def test_illegal_trial_is_a_reason_not_a_crash() -> None:
    target = load_target("xpert")
    problem = _digits_problem(target, 32, 16, 64)
    evaluation = Evaluator(problem).evaluate(
        "assign-input-precision{per_layer_bits=[1,8,8]},quantize,tile-crossbar,select-adc,"
        "share-columns,place"
    )
    assert evaluation.metrics is None
    assert evaluation.illegal is not None and evaluation.illegal.startswith("quantize: layer 0")


def test_search_writes_outputs_counts_illegal_and_replays_exactly(tmp_path: Path, capsys) -> None:
    # xpert.hw with Flash ADCs of 4-6 bits only: a Flash ADC of 7 or 8 bits is illegal
    hw = (ROOT / "targets" / "xpert.hw").read_text()
    flash = hw.index("converter flash")
    hw = hw[:flash] + hw[flash:].replace("bits = [4, 5, 6, 7, 8]", "bits = [4, 5, 6]", 1)
    target = tmp_path / "xpert_flash6.hw"
    target.write_text(hw)
    record = _search(tmp_path, "--seed", "3", strategy="pareto", trials=14, target=str(target))
    out = capsys.readouterr().out
    assert "Pareto front" in out and "replay: imcc compile" in out
    for name in ("pareto.json", "pareto.png", "best.imcir", "best.npz", "search.db"):
        assert (tmp_path / name).is_file(), name
    assert record["trials"]["finished"] == 14 + 3  # and the random comparison's trials // 4
    study = _study(record)
    illegal = [t for t in study.trials if ILLEGAL in t.user_attrs]
    assert record["trials"]["illegal"] == len(illegal) + sum(
        ILLEGAL in t.user_attrs for t in _study(record, record["study"] + "/random").trials
    )
    assert illegal and all(t.state.name == "FAIL" for t in illegal)
    assert record["trials"]["illegal_by_pass"]["select-adc"] >= len(illegal)  # 7-8-bit Flash
    assert record["accuracy"]["reference"] == "float"
    front = record["pareto"]
    assert front and all(p["checked"] for p in front)
    assert [p["edap"] for p in front] == sorted(p["edap"] for p in front)
    best = record["best"]
    assert best is not None and best["meets_floor"]
    replayed = _replay(tmp_path, str(target), best["pipeline"])
    for key in COST_KEYS:
        assert replayed[key] == best[key], key


def test_resume_continues_to_the_total_without_touching_finished_trials(tmp_path: Path) -> None:
    record = _search(tmp_path, trials=4)
    before = {t.number: (t.params, t.user_attrs, t.state) for t in _study(record).trials}
    assert len(before) == 4
    record = _search(tmp_path, trials=8)
    trials = _study(record).trials
    assert sum(finished(t) for t in trials) == 8 and record["trials"]["finished"] == 8
    for t in trials[:4]:
        assert (t.params, t.user_attrs, t.state) == before[t.number]
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params)  # the resumed sampler does not replay old draws


def _finished_in(database: Path) -> int:
    """Count finished trials by reading the SQLite file directly (opening it through optuna
    would race the search process creating its tables)."""
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            done = connection.execute(
                "SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')"
            ).fetchone()
            illegal = connection.execute(
                "SELECT COUNT(*) FROM trial_user_attributes WHERE key = ?", (ILLEGAL,)
            ).fetchone()
        return done[0] + illegal[0]
    except sqlite3.Error:  # the tables do not exist yet
        return 0


def _start(tmp: Path, trials: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "imcc",
        "search",
        "digits-cnn",
        "--target",
        "xpert",
        "--data",
        "digits-cnn",
        "--trials",
        str(trials),
        "--strategy",
        "random",
        "--out",
        str(tmp),
        "--max-accuracy-drop",
        "60",
        *FAST,
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(process: subprocess.Popen, database: Path, count: int) -> None:
    deadline = time.monotonic() + 120
    while _finished_in(database) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killed_search_resumes_without_losing_trials(tmp_path: Path, sig: int) -> None:
    database = tmp_path / "search.db"
    process = _start(tmp_path, 500)
    _wait_for(process, database, 3)
    os.kill(process.pid, sig)
    _, err = process.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert process.returncode == 130 and "run the same command again" in err
        assert "Traceback" not in err
    else:
        assert process.returncode == -signal.SIGKILL
    kept = _finished_in(database)
    assert kept >= 3
    storage = f"sqlite:///{database}"
    name = optuna.get_all_study_summaries(storage)[0].study_name
    snapshot = {
        t.number: t.params
        for t in optuna.load_study(study_name=name, storage=storage).trials
        if finished(t)
    }
    rerun = _start(tmp_path, kept + 2)
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert sum(finished(t) for t in trials) == kept + 2
    assert {t.number: t.params for t in trials if t.number in snapshot} == snapshot
    assert all(PIPELINE in t.user_attrs for t in trials if finished(t))


def test_xpert_runs_both_phases_within_the_area_budget(tmp_path: Path) -> None:
    # a budget that binds: on xpert.hw's NeuroSim floorplan (a tile of 64 crossbars per layer)
    # digits-cnn's phase-1 designs take 5.5-80 mm²
    record = _search(
        tmp_path, "--area-budget", "10.0", "--random-trials", "0", strategy="xpert", trials=10
    )
    phase1 = _study(record, record["study"] + "/phase1")
    phase2 = _study(record, record["study"] + "/phase2")
    assert sum(finished(t) for t in phase1.trials) == 5
    assert sum(finished(t) for t in phase2.trials) == 5
    assert all(
        set(t.params)
        <= {
            "share-columns.per_layer[0]",
            "share-columns.per_layer[1]",
            "share-columns.per_layer[2]",
            "place.replicate",
        }
        | {f"select-adc.per_layer_converter[{i}]" for i in range(3)}
        for t in phase1.trials
    )
    structure = [
        t
        for t in phase1.trials
        if t.state.name == "COMPLETE" and t.user_attrs["result"]["metrics"]["area_mm2"] <= 10.0
    ]
    best1 = min(structure, key=lambda t: t.values[0])
    sharing = ",".join(str(best1.params[f"share-columns.per_layer[{i}]"]) for i in range(3))
    assert all(f"per_layer=[{sharing}]" in t.user_attrs[PIPELINE] for t in phase2.trials)
    assert record["objective"] == "energy" and record["area_budget_mm2"] == 10.0
    assert all(p["area_mm2"] <= 10.0 for p in record["pareto"])
    assert record["best"] is None or record["best"]["area_mm2"] <= 10.0
    # phase 2 starts at the widest design: 8-bit inputs and converters, the cells' 4-bit slices
    first = min(phase2.trials, key=lambda t: t.number)
    assert first.params["assign-input-precision.per_layer_bits[0]"] == "8"
    assert first.params["select-adc.per_layer_bits[2]"] == "8"
    assert first.params["slice-weights.per_layer_slices[1]"] == "4-4"


def test_widest_design_takes_the_widest_precisions_and_the_finest_slicing() -> None:
    space = build_space(*_cleaned("xpert"))
    corner = widest_design(space.dimensions)
    by_key = {d.key: d for d in space.dimensions}
    assert (
        corner["select-adc.per_layer_bits[0]"]
        == max(by_key["select-adc.per_layer_bits[0]"].choices, key=int)
        == "8"
    )
    assert corner["assign-input-precision.per_layer_bits[2]"] == "8"
    assert corner["slice-weights.per_layer_slices[0]"] == "4-4"
    assert "select-adc.per_layer_converter[0]" not in corner  # no order: the sampler's
    assert all(by_key[k].searched and v in by_key[k].choices for k, v in corner.items())
    assert not {k for k in corner if k.startswith("share-columns")}  # structure: phase 1's


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--strategy", "grid"], "error: unknown strategy 'grid'"),
        (["--objective", "speed"], "error: unknown objective 'speed'"),
        (["--area-budget", "-1"], "error: --area-budget must be a positive area in mm2, not -1"),
        (["--max-accuracy-drop", "-0.5"], "error: --max-accuracy-drop must be between 0 and 100"),
        (["--trials", "0"], "error: --trials must be at least 1, not 0"),
        (
            ["--storage", "nosuchdb://x/y"],
            "error: --storage: unknown database URL scheme 'nosuchdb'",
        ),
    ],
)
def test_bad_flags_exit_2_with_one_message(
    tmp_path: Path, capsys, flags: list[str], message: str
) -> None:
    code = main(
        [
            "search",
            "digits-cnn",
            "--target",
            "xpert",
            "--data",
            "digits-cnn",
            "--out",
            str(tmp_path),
            *flags,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(message) and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1


def test_resuming_with_other_flags_is_refused(tmp_path: Path) -> None:
    run_search(
        SearchConfig(
            "digits-cnn",
            "xpert",
            "digits-cnn",
            trials=1,
            strategy="random",
            study="s",
            out=tmp_path,
            search_samples=16,
            probe_samples=16,
            check_samples=16,
        )
    )
    with pytest.raises(Exception, match="created for another search"):
        run_search(
            SearchConfig(
                "digits-cnn",
                "xpert",
                "digits-cnn",
                trials=2,
                strategy="random",
                study="s",
                objective="latency",
                out=tmp_path,
                search_samples=16,
                probe_samples=16,
                check_samples=16,
            )
        )


def test_resuming_with_other_weights_under_the_same_file_name_is_refused(tmp_path: Path) -> None:
    """A study records the digest of the model's weights: a model retrained into the same file
    does not resume the study of the old weights (its trials' accuracies are the old ones)."""
    import shutil

    model = tmp_path / "net.onnx"
    shutil.copy(resolve_model("digits-cnn"), model)

    def config(trials: int) -> SearchConfig:
        return SearchConfig(
            str(model),
            "xpert",
            "digits-cnn",
            trials=trials,
            strategy="random",
            study="s",
            out=tmp_path / "out",
            search_samples=16,
            probe_samples=16,
            check_samples=16,
        )

    run_search(config(1))
    run_search(config(2))  # the same weights resume
    graph = onnx.load(model)
    weight = graph.graph.initializer[0]
    values = onnx.numpy_helper.to_array(weight).copy()
    values.flat[0] += 1.0  # retrained, in effect
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    onnx.save(graph, model)
    with pytest.raises(UserError, match="created for another search: weights="):
        run_search(config(3))


def test_mtj_trials_are_calibrated_and_adc_only_targets_are_not() -> None:
    graph, target = _cleaned("sotmtj")
    space = build_space(graph, target)
    names = [step.name for step in space.steps]
    assert (
        names.index("select-adc")
        < names.index("slice-weights")
        < names.index("calibrate-mtj")
        < names.index("share-columns")
    )
    converters = {d.key: d for d in space.dimensions}["select-adc.per_layer_converter[0]"]
    assert "mtj" in converters.choices
    choices = {f"select-adc.per_layer_converter[{i}]": "mtj" for i in range(3)}
    problem = _digits_problem(target, 16, 16, 16)
    mapped = Evaluator(problem).compile(space.pipeline(choices))
    layers = [n for n in mapped.nodes if "converter" in n.attributes]
    assert len(layers) == 3
    for node in layers:
        assert node.attributes["converter"].kind == "mtj"
        assert len(node.attributes["ps_scale"]) > 0  # calibrate-mtj normalised every column
    assert "calibrate-mtj" not in [step.name for step in build_space(*_cleaned("xpert")).steps]


def test_limits_area_window() -> None:
    from imcc.search.evaluate import Evaluation, Metrics
    from imcc.search.strategies import Limits

    def at(area: float, accuracy: float | None = None) -> Evaluation:
        return Evaluation(Metrics(1.0, 1.0, area, 1.0, 1.0, 1.0), accuracy)

    window = Limits(10.5, 0.9, area_floor_mm2=9.5)
    assert window.constraints(at(10.0, 0.95)) == [-0.5, pytest.approx(-0.05)]
    assert window.constraints(at(11.0))[0] == pytest.approx(0.5)  # over the top
    assert window.constraints(at(9.0))[0] == pytest.approx(0.5)  # under the floor
    assert Limits(10.5, None).constraints(at(1.0)) == [-9.5, 0.0]  # a budget, no floor


def test_the_sensitivity_strategy_searches_hybrid_resumes_and_replays(tmp_path: Path, capsys):
    """`--strategy sensitivity` (search/sensitivity.py) on the hybrid target: the usual
    outputs, its evaluations stored so that a rerun runs none, a best design within the floor
    below the baseline's EDAP that `imcc compile --passes` replays to the same cost; a target
    without the mechanisms' options is refused with exit 2."""
    flags = ["--max-accuracy-drop", "8", "--probe", "32"]
    first = _search(tmp_path, *flags, strategy="sensitivity", target="hybrid")
    assert (tmp_path / "sensitivity.json").is_file() and (tmp_path / "best.imcir").is_file()
    assert not (tmp_path / "search.db").exists()
    layers = len(first["space"]["layers"])
    assert first["trials"]["this_run"] >= 1 + layers  # the baseline and every single change
    best, baseline = first["best"], first["baseline"]
    assert best["meets_floor"] and best["edap"] < baseline["edap"]
    again = _search(tmp_path, *flags, strategy="sensitivity", target="hybrid")
    assert again["trials"]["this_run"] == 0 and again["best"] == best
    capsys.readouterr()
    assert _replay(tmp_path, "hybrid", best["pipeline"])["edap"] == pytest.approx(
        best["edap"], rel=1e-12
    )
    refused = ["search", "digits-cnn", "--target", "xpert", "--data", "digits-cnn"]
    code = main([*refused, "--strategy", "sensitivity", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "search space has no assign-input-precision" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_point_whose_trial_a_killed_run_left_is_asked_again(tmp_path: Path) -> None:
    """run_point on a resumed study (phase 2's uniform steps): a trial of the point that a
    killed run left failed and `interrupted` does not count, and the point is evaluated anew,
    not replaced by a sampler's draw (optuna's skip_if_exists would skip it)."""
    from optuna.trial import TrialState

    from imcc.search.storage import INTERRUPTED, RESULT, open_storage
    from imcc.search.strategies import Limits, run_point, search_phases

    problem = _digits_problem(load_target("xpert"), 16, 16, 16)
    space = build_space(problem.graph, problem.target)
    phase = search_phases("xpert", "resume", space, None, 8, 0)[1]
    storage = open_storage(f"sqlite:///{(tmp_path / 'resume.db').resolve()}")
    study = optuna.create_study(storage=storage, study_name=phase.study)
    point = widest_design(phase.dimensions)
    study.enqueue_trial(point)
    killed = study.ask()  # the killed run had taken the point and was told nothing more
    for dimension in phase.dimensions:
        if dimension.searched:
            killed.suggest_categorical(dimension.key, dimension.choices)
    killed.set_user_attr(INTERRUPTED, "no heartbeat")
    study.tell(killed, state=TrialState.FAIL)
    trial = run_point(study, phase, space, Evaluator(problem), Limits(None, None), point)
    assert trial is not None and trial.state is TrialState.COMPLETE and RESULT in trial.user_attrs
    assert trial.number == killed.number + 1
    assert all(trial.params[k] == v for k, v in point.items())
    again = run_point(study, phase, space, Evaluator(problem), Limits(None, None), point)
    assert again is not None and again.number == trial.number  # read back, not evaluated
    assert len(study.trials) == 2
