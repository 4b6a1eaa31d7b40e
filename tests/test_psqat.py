"""PS-QAT before a design's accuracy counts (search/psqat.py): a searched design with MTJ
layers is fine-tuned through its datapath, its accuracy and costs are those of the fine-tuned
model as `imcc compile` maps it (the learned normalisation included), the fine-tuned model is
cached per design, and designs without MTJ layers or single-layer measurements are not
fine-tuned."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from imcc import driver
from imcc.driver import calibration_data
from imcc.errors import UserError
from imcc.examples import resolve_model
from imcc.finetune.export import learned_normalisation, with_learned_normalisation
from imcc.frontend.datasets import load_dataset
from imcc.frontend.hw import load_target
from imcc.passes.pipeline import DEFAULT_PIPELINE
from imcc.search.evaluate import Evaluator, Metrics, Problem
from imcc.search.mechanisms import menu, pipeline
from imcc.search.psqat import PsQat
from imcc.search.space import build_space
from imcc.simulation import simulate


@functools.cache
def _problem() -> Problem:
    return Problem.load(
        resolve_model("digits-cnn"),
        load_target("hybrid"),
        "digits-cnn,from=296",  # accuracy on images never trained on
        search_samples=64,
        probe_samples=64,
        check_samples=64,
    )


def _design(names: tuple[str, ...]) -> str:
    problem = _problem()
    by_name = {m.name: m for m in menu(problem.target)}
    return pipeline(build_space(problem.graph, problem.target), [by_name[n] for n in names])


def test_a_design_with_mtj_layers_is_fine_tuned_once_and_replays(tmp_path: Path) -> None:
    psqat = PsQat("digits-cnn", images=256, train=256, folder=tmp_path / "psqat")
    design = _design(("mtj:4x", "sar:8b", "mtj:4x"))
    evaluation = Evaluator(_problem(), psqat=psqat).evaluate(design)
    assert evaluation.finetuned is not None and evaluation.accuracy is not None
    model = Path(evaluation.finetuned)
    assert model.is_file() and model.parent.parent == tmp_path / "psqat"
    assert learned_normalisation(model)  # the MTJ normalisation learned
    untuned = Evaluator(_problem()).evaluate(design)
    assert untuned.finetuned is None
    # the replay: imcc compile of the fine-tuned model with the design's pipeline
    target = load_target("hybrid")
    calibration, _ = calibration_data("digits-cnn,from=296", model)
    program = driver.compile(
        model, target, passes=f"{DEFAULT_PIPELINE},{design}", calibration=calibration
    )
    program, layers = with_learned_normalisation(program, model)
    assert layers == 2
    data = load_dataset("digits-cnn,from=296", 64)
    replay = simulate(program, target, data, batch=64, seed=0)
    assert replay.accuracy == evaluation.accuracy
    stamp = model.stat().st_mtime_ns
    again = Evaluator(_problem(), psqat=psqat).evaluate(design)  # cached: not trained again
    assert again == evaluation and model.stat().st_mtime_ns == stamp


def test_designs_without_mtj_and_single_layers_are_not_fine_tuned(tmp_path: Path) -> None:
    psqat = PsQat("digits-cnn", images=64, train=256, folder=tmp_path / "psqat")
    evaluator = Evaluator(_problem(), psqat=psqat)
    plain = evaluator.evaluate(_design(("sar:7b+co+spec", "sar:8b", "flash:5b")))
    alone = evaluator.evaluate(_design(("mtj:16x", "sar:8b", "sar:8b")), only=0)
    assert plain.finetuned is None and alone.finetuned is None
    assert not (tmp_path / "psqat").exists()
    assert isinstance(plain.metrics, Metrics)


def test_psqat_settings_are_checked() -> None:
    with pytest.raises(UserError, match="at least one image"):
        PsQat("digits-cnn", images=0)


def test_the_sensitivity_search_fine_tunes_its_mtj_designs_and_replays_them(
    tmp_path: Path, capsys
) -> None:
    """`imcc search --strategy sensitivity --psqat N`: the best design (a wide budget makes it
    an MTJ one) names the model fine-tuned for it, and its replay command, run on that model,
    gives the same cost; --psqat is refused without the sensitivity strategy or data."""
    import json
    import shlex

    from imcc.cli import main

    flags = [
        "search", "digits-cnn", "--target", "hybrid", "--data", "digits-cnn,from=296",
        "--limit", "32", "--probe", "32", "--check", "32", "--max-accuracy-drop", "60",
    ]  # fmt: skip
    psqat = ["--psqat", "64", "--psqat-data", "digits-cnn", "--psqat-train", "256"]
    out = tmp_path / "out"
    assert main([*flags, "--strategy", "sensitivity", *psqat, "--out", str(out)]) == 0
    record = json.loads((out / "pareto.json").read_text())
    best = record["best"]
    assert best["model"].startswith(str(out / "psqat"))
    replay = shlex.split(record["replay"])
    assert replay[2] == best["model"]
    capsys.readouterr()
    report = tmp_path / "replay.json"
    assert main([*replay[1:-2], "--report", str(report)]) == 0
    assert json.loads(report.read_text())["edap"] == pytest.approx(best["edap"], rel=1e-12)
    assert main([*flags, "--strategy", "pareto", *psqat, "--out", str(tmp_path / "x")]) == 2
    assert "--psqat fine-tunes the designs" in capsys.readouterr().err
    assert main([*flags, "--strategy", "sensitivity", "--psqat", "64", "--out", str(out)]) == 2
    assert "--psqat-data" in capsys.readouterr().err
