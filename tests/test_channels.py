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
from tests.onnx_models import CIFAR10_TRAIN

pytestmark = pytest.mark.skipif(
    not CIFAR10_TRAIN.is_file(), reason="needs the CIFAR-10 training set beside the checkout"
)

DATA = f"cifar10:{CIFAR10_TRAIN}"
SPACE = ChannelSpace("vgg11", (8, 16), (16, 8, 16, 8, 16, 8, 16, 16))
AREA = 2.0  # mm², about the reference network's fastest design on xpert.hw


def run(out: Path, **options):
    settings = dict(trials=4, inner_trials=4, window=0.25, seed=0)
    settings.update(options)
    return search_channels(
        SPACE, target=load_target("xpert"), data=DATA, area_mm2=AREA, out=out, **settings
    )


def test_chosen_design_meets_its_guards_and_replays(tmp_path: Path) -> None:
    best, tried = run(tmp_path)
    record = json.loads((tmp_path / channels.CHANNELS_JSON).read_text())
    floor = record["naswot_floor"]
    low, high = record["area_window_mm2"]
    assert (low, high) == pytest.approx((AREA * 0.75, AREA * 1.25))
    assert best.feasible and best.naswot >= floor and low <= best.structure.area_mm2 <= high
    feasible = [c for c in tried if c.feasible]
    assert best.structure.latency_s == min(c.structure.latency_s for c in feasible)
    for choice in tried:  # a candidate below the floor is never compiled
        assert (choice.naswot >= floor) == (choice.structure is not None)
    assert record["chosen"]["widths"] == list(best.widths)
    # the chosen pipeline, compiled from scratch on the candidate, prices the same
    label = SPACE.label(best.widths)
    model = tmp_path / "candidates" / f"{label}.onnx"
    calibration, _ = driver.calibration_data(DATA, model)
    target = load_target("xpert")
    program = driver.compile(model, target, passes=best.structure.pipeline, calibration=calibration)
    report = estimate(program, target)
    assert report.latency_s == best.structure.latency_s
    assert report.area_mm2 == best.structure.area_mm2


def test_a_second_run_resumes_without_recomputing(tmp_path: Path, monkeypatch) -> None:
    first, _ = run(tmp_path, trials=3)

    def refuse(*args, **kwargs):
        raise AssertionError("a finished candidate was searched again")

    monkeypatch.setattr(channels, "fastest_structure", refuse)
    monkeypatch.setattr("imcc.search.naswot.naswot_score", refuse)
    again, tried = run(tmp_path, trials=3)
    assert again == first and len(tried) == 3


def test_guards(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="area window"):
        run(tmp_path, window=1.5)
    with pytest.raises(UserError, match="NASWOT floor"):
        run(tmp_path / "high", trials=2, margin=-1e6)  # a floor no network reaches
