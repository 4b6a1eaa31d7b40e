"""XPert's per-layer channel search (search/channels.py): a CI-sized run on a narrow VGG-11
whose chosen design replays exactly, resumes without recomputing, and respects its guards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imcc import driver
from imcc.costmodel import estimate
from imcc.errors import UserError
from imcc.frontend.hw import load_target
from imcc.search import channels
from imcc.search.channels import ChannelSpace, search_channels
from imcc.search.strategies import UNIFORM_STEPS
from tests.onnx_models import CIFAR10_TRAIN

pytestmark = pytest.mark.skipif(
    not CIFAR10_TRAIN.is_file(), reason="needs the CIFAR-10 training set beside the checkout"
)

DATA = f"cifar10:{CIFAR10_TRAIN}"
SPACE = ChannelSpace("vgg11", (8, 16), (16, 8, 16, 8, 16, 8, 16, 16))
AREA = 16.0  # mm², a window (+-25%) around the reference network's 17.7 and 17.9 mm² designs


def run(out: Path, **options):
    settings = dict(trials=4, inner_trials=14, window=0.25, seed=0)
    settings.update(options)
    return search_channels(
        SPACE, target=load_target("xpert"), data=DATA, area_mm2=AREA, out=out, **settings
    )


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Path, channels.ChannelChoice, list]:
    out = tmp_path_factory.mktemp("channels")
    best, tried = run(out)
    return out, best, tried


def test_chosen_design_meets_its_guards_and_replays(searched) -> None:
    out, best, tried = searched
    record = json.loads((out / channels.CHANNELS_JSON).read_text())
    floor = record["naswot_floor"]
    low, high = record["area_window_mm2"]
    assert (low, high) == pytest.approx((AREA * 0.75, AREA * 1.25))
    assert best.feasible and best.naswot >= floor and low <= best.structure.area_mm2 <= high
    feasible = [c for c in tried if c.feasible]
    assert best.structure.latency_s == min(c.structure.latency_s for c in feasible)
    for choice in tried:  # a candidate below the floor is never compiled
        assert (choice.naswot >= floor) == (choice.structure is not None)
    assert tried[0].widths == SPACE.baseline()  # the reference network comes first
    assert record["chosen"]["widths"] == list(best.widths)
    # the chosen pipeline, compiled from scratch on the candidate, prices the same
    label = SPACE.label(best.widths)
    model = out / "candidates" / f"{label}.onnx"
    calibration, _ = driver.calibration_data(DATA, model)
    target = load_target("xpert")
    program = driver.compile(model, target, passes=best.structure.pipeline, calibration=calibration)
    report = estimate(program, target)
    assert report.latency_s == best.structure.latency_s
    assert report.area_mm2 == best.structure.area_mm2


def test_a_second_run_resumes_without_recomputing(searched, monkeypatch) -> None:
    out, first, tried = searched

    def refuse(*args, **kwargs):
        raise AssertionError("a finished candidate was searched again")

    monkeypatch.setattr(channels, "fastest_structure", refuse)
    monkeypatch.setattr("imcc.search.naswot.naswot_score", refuse)
    again, tried_again = run(out)
    assert again == first and tried_again == tried


def test_uniform_designs() -> None:
    from imcc.search.space import Dimension

    dims = [
        Dimension("select-adc", "per_layer_converter", 0, ("sar", "flash")),
        Dimension("select-adc", "per_layer_converter", 1, ("flash", "sar")),
        Dimension("share-columns", "per_layer", 0, ("2", "4")),
        Dimension("share-columns", "per_layer", 1, ("2", "4", "8")),
        Dimension("place", "replicate", None, ("false", "true")),
    ]
    designs = channels.uniform_designs(dims)
    assert len(designs) == 4  # {sar, flash} x {2, 4}: what every layer offers
    assert designs[0] == {
        "select-adc.per_layer_converter[0]": "sar",
        "select-adc.per_layer_converter[1]": "sar",
        "share-columns.per_layer[0]": "2",
        "share-columns.per_layer[1]": "2",
    }


def test_guards(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="area window"):
        run(tmp_path, window=1.5)
    with pytest.raises(UserError, match="NASWOT floor"):
        run(tmp_path / "high", trials=2, margin=-1e6)  # a floor no network reaches
    with pytest.raises(UserError, match="reference widths"):
        search_channels(
            ChannelSpace("vgg11", (8, 16)),  # VGG-11's own widths are not among them
            target=load_target("xpert"),
            data=DATA,
            area_mm2=AREA,
            out=tmp_path / "ref",
            trials=1,
            inner_trials=1,
        )


def test_phase_two_lowers_precision_on_the_chosen_structure(searched) -> None:
    """Phase 2 on the chosen candidate: its phase-1 design fixed, input and converter bits
    searched for the least energy within the area window and the accuracy floor (bit-accurate
    on validation images); the first trial is the widest precisions, the choice replays."""
    out, best, _ = searched
    label = SPACE.label(best.widths)
    model = out / "candidates" / f"{label}.onnx"
    structure = channels.inner_choices(out, label)
    target = load_target("xpert")
    storage = channels.open_storage(f"sqlite:///{(out / 'phase2.db').resolve()}")
    window = (AREA * 0.75, AREA * 1.25)
    found = channels.cheapest_precisions(
        model, target, f"{DATA},from=45000", storage, "phase2", structure, 5, window, 0.0, 8
    )
    assert found is not None and window[0] <= found.area_mm2 <= window[1]
    study = channels.optuna.load_study(study_name="phase2/phase2", storage=storage)
    widest, second = study.trials[0].params, study.trials[1].params
    searched = {key.split("[")[0] for trial in study.trials for key in trial.params}
    assert searched == set(UNIFORM_STEPS)  # XPert's IP and AP: the slicing stays the default
    inputs = [k for k in widest if k.startswith("assign-input-precision.per_layer_bits[")]
    assert inputs and {widest[k] for k in inputs} == {"8"}  # every layer lowered at once
    assert {second[k] for k in inputs} == {"7"}
    assert {k: v for k, v in second.items() if k not in inputs} == {
        k: v for k, v in widest.items() if k not in inputs
    }
    first = study.trials[0].user_attrs["result"]["metrics"]
    assert found.energy_j <= first["energy_j"]  # never above the widest design it starts at
    assert found.latency_s <= best.structure.latency_s * 1.0001  # precision only lowers it
    # the walk: every design measured, in order, as the study holds it
    measured = [t for t in study.trials if "result" in t.user_attrs]
    assert [d["trial"] for d in found.walk] == [t.number for t in measured]
    assert found.walk[0]["energy_j"] == first["energy_j"]
    assert found.walk[0]["pipeline"] == measured[0].user_attrs["pipeline"]
    for design, trial in zip(found.walk, measured, strict=True):
        area = trial.user_attrs["result"]["metrics"]["area_mm2"]
        assert design["feasible"] == (window[0] <= area <= window[1]) and not design["pruned"]
        assert design["samples"] == 8 and design["accuracy"] is not None
    cheapest = min((d for d in found.walk if d["feasible"]), key=lambda d: d["energy_j"])
    assert (cheapest["pipeline"], cheapest["energy_j"]) == (found.pipeline, found.energy_j)
    calibration, _ = driver.calibration_data(f"{DATA},from=45000", model)
    program = driver.compile(model, target, passes=found.pipeline, calibration=calibration)
    report = estimate(program, target)
    assert report.energy_j == found.energy_j and report.area_mm2 == found.area_mm2


def any_area_phase_two(searched, storage, floor: float, samples: int, **options):
    """Phase 2 on the searched candidate with any area (XPert's phase 2 constrains the
    accuracy only), 3 trials."""
    out, best, _ = searched
    label = SPACE.label(best.widths)
    return channels.cheapest_precisions(
        out / "candidates" / f"{label}.onnx",
        load_target("xpert"),
        f"{DATA},from=45000",
        storage,
        "phase2",
        channels.inner_choices(out, label),
        3,
        None,
        floor,
        samples,
        **options,
    )


def test_phase_two_probe_drops_designs_the_first_images_rule_out(
    searched, tmp_path, capsys
) -> None:
    """With a probe, a design whose first images put it far below the floor is not simulated
    on the rest: above any reachable floor every trial stops at the probe's images. The bar
    counts the designs measured."""
    storage = channels.open_storage(f"sqlite:///{(tmp_path / 'phase2.db').resolve()}")
    found = any_area_phase_two(searched, storage, 1.5, 16, probe=4, progress=True)
    assert found is None  # 1.5: unreachable
    err = capsys.readouterr().err
    assert "precisions: 100%" in err and "3/3" in err and "best=none" in err
    study = channels.optuna.load_study(study_name="phase2/phase2", storage=storage)
    results = [t.user_attrs["result"] for t in study.trials if "result" in t.user_attrs]
    assert results and all(r["pruned"] and r["accuracy_samples"] == 4 for r in results)
    walk = channels.measured_designs(study)
    assert len(walk) == len(results)
    assert all(d["pruned"] and not d["feasible"] and d["samples"] == 4 for d in walk)


def test_phase_two_confirms_the_feasible_designs_from_the_cheapest_up(searched, tmp_path) -> None:
    """With a held-out check, the feasible designs are offered from the least energy up (each
    pipeline once) and the first it accepts is the result; when it accepts none, none is."""
    storage = channels.open_storage(f"sqlite:///{(tmp_path / 'phase2.db').resolve()}")
    offered: list[str] = []

    def second(pipeline: str) -> bool:
        offered.append(pipeline)
        return len(offered) == 2

    found = any_area_phase_two(searched, storage, 0.0, 8, confirm=second)
    study = channels.optuna.load_study(study_name="phase2/phase2", storage=storage)
    ranked = channels.feasible_by_value(study)
    energies = [t.values[0] for t in ranked]
    assert len(ranked) >= 2 and energies == sorted(energies)
    assert [t.user_attrs["pipeline"] for t in ranked][:2] == offered
    assert found is not None and found.pipeline == offered[1]
    assert found.energy_j == energies[1] > energies[0]  # not the cheapest: it was refused
    assert channels.best_feasible(study) is ranked[0]
    refused: list[str] = []
    none = any_area_phase_two(searched, storage, 0.0, 8, confirm=lambda p: refused.append(p))
    assert none is None and len(refused) == len(ranked) == len(set(refused))
