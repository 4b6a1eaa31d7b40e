"""Golden simulations: the built-in example (the digits CNN) mapped on every built-in target by
its default pipeline, and by pipelines that reach the mechanisms the defaults leave out
(speculative input slices with adaptive weight slicing, calibrated Flash converters shared by
eight columns at chosen precisions), calibrated on its own data and simulated bit-accurately on
its first 64 test samples (seed 0). The accuracies and every crossbar layer's converter
statistics must equal tests/golden/simulations/CASE.json, so a change to the datapath's
arithmetic, a calibration rule or the MTJ sampling is a visible diff; the files pin
`imcc.RESULTS_VERSION` (tests/pinned.py): new figures need a new version.

The integer datapath computes the same codes on every machine; calibration rounds once
(backend/kernels.py `rounded_once`), so the figures compare to `RELATIVE` only as a margin.

After a deliberate change, raise the version, regenerate and review the diff:

    IMCC_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_simulation_golden.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

from imcc import driver
from imcc.examples import resolve_model
from imcc.frontend.datasets import load_dataset
from imcc.frontend.hw import load_target
from imcc.passes.pipeline import DEFAULT_PIPELINE
from imcc.simulation import simulate
from imcc.targets import BUILTIN_TARGETS
from tests.pinned import check_golden

GOLDEN = Path(__file__).parent / "golden" / "simulations"
SAMPLES = 64
RELATIVE = 1e-6
"""How close a figure must be: the figures are ratios of integer counts and norms of integer
errors, equal on every machine but for the last bits of a norm."""
EXTRA = {
    "raella-speculative": (
        "raella",
        "assign-input-precision{speculate=true slices=3,3,2},quantize,tile-crossbar,"
        "encode-weights{scheme=center-offset center_bits=4},select-adc,"
        "slice-weights{adaptive=true error_budget=0.09},share-columns,place",
    ),
    "xpert-flash": (
        "xpert",
        "assign-input-precision{bits=6},quantize,tile-crossbar,select-adc{type=flash bits=5},"
        "calibrate-adc,share-columns{factor=8},place",
    ),
}
"""Cases beyond the targets' default pipelines: name -> (target, mapping passes)."""
CASES = {**{name: (name, None) for name in BUILTIN_TARGETS}, **EXTRA}
LAYER_KEYS = (
    "conversions",
    "saturation_rate",
    "rel_error",
    "mtj_samples",
    "mtj_switch_rate",
    "speculative_failures",
    "recovery_conversions",
)


def figures(case: str) -> dict:
    """Return a case's simulated accuracies and per-layer converter statistics."""
    name, passes = CASES[case]
    model = resolve_model("digits-cnn")
    calibration, _ = driver.calibration_data(None, model)
    target = load_target(name)
    pipeline = None if passes is None else f"{DEFAULT_PIPELINE},{passes}"
    program = driver.compile(model, target, passes=pipeline, calibration=calibration)
    report = simulate(program, target, load_dataset("digits-cnn", SAMPLES)).to_dict()
    return {
        "accuracy": report["accuracy"],
        "quantized_accuracy": report["quantized_accuracy"],
        "agreement_quantized": report["agreement_quantized"],
        "layers": [{key: layer[key] for key in LAYER_KEYS} for layer in report["layers"]],
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_simulation_of_the_digits_cnn_matches_its_golden_file(case: str) -> None:
    check_golden(GOLDEN / f"{case}.json", figures(case), RELATIVE)


def test_the_extra_cases_reach_the_mechanisms_the_defaults_leave_out() -> None:
    """The speculative case fails and recovers some reads, the Flash case saturates none of
    its conversions at 5 bits after calibration but loses against lossless converters: the
    golden figures cover those paths (and a case that reached none would pin nothing)."""
    speculative = figures("raella-speculative")["layers"]
    assert sum(layer["speculative_failures"] for layer in speculative) > 0
    assert all(layer["recovery_conversions"] >= 0 for layer in speculative)
    flash = figures("xpert-flash")
    assert any(layer["rel_error"] > 0 for layer in flash["layers"])


def test_a_golden_file_is_not_rewritten_with_other_figures_under_the_same_version(
    tmp_path, monkeypatch
):
    """`check_golden`: compares within the tolerance, and with IMCC_UPDATE_GOLDEN writes a new
    file or the same figures again, other figures only under a raised results version."""
    from imcc import RESULTS_VERSION

    path = tmp_path / "case.json"
    figures_now = {"accuracy": 0.5, "layers": [{"conversions": 10, "rel_error": 0.25}]}
    with pytest.raises(AssertionError, match="no golden file"):
        check_golden(path, figures_now, 1e-6)
    monkeypatch.setenv("IMCC_UPDATE_GOLDEN", "1")
    check_golden(path, figures_now, 1e-6)
    check_golden(path, figures_now, 1e-6)  # the same figures: written again
    moved = {"accuracy": 0.5, "layers": [{"conversions": 11, "rel_error": 0.25}]}
    with pytest.raises(pytest.fail.Exception, match=r"raise imcc.RESULTS_VERSION[\s\S]*conv"):
        check_golden(path, moved, 1e-6)
    monkeypatch.delenv("IMCC_UPDATE_GOLDEN")
    check_golden(path, {"accuracy": 0.5 + 1e-9, "layers": figures_now["layers"]}, 1e-6)
    with pytest.raises(AssertionError, match=r"layers\[0\].rel_error"):
        check_golden(
            path, {"accuracy": 0.5, "layers": [{"conversions": 10, "rel_error": 0.3}]}, 1e-6
        )
    # a file of an older version: refused as it is, rewritten by an update
    path.write_text(
        path.read_text().replace(f'"results_version": {RESULTS_VERSION}', '"results_version": 0')
    )
    with pytest.raises(AssertionError, match="holds results version 0"):
        check_golden(path, figures_now, 1e-6)
    monkeypatch.setenv("IMCC_UPDATE_GOLDEN", "1")
    check_golden(path, moved, 1e-6)
    monkeypatch.delenv("IMCC_UPDATE_GOLDEN")
    check_golden(path, moved, 1e-6)
