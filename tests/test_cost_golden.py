"""Golden cost reports: every built-in target prices the CIFAR-10 ResNet-20 (models/
resnet20_cifar10.onnx, batch 1) mapped by its own default pipeline, calibrated on 16 seeded
uniform images; the totals, timing, areas and both breakdowns must equal tests/golden/costs/
TARGET.json, so a change to any constant or rule of the cost model is a visible diff. The
files pin `imcc.RESULTS_VERSION` (tests/pinned.py): new figures need a new version.

The figures depend on float32 calibration (quantization ranges, input bit densities, the
Center+Offset centers), whose rounding depends on the machine: the same code and packages
gave figures 1e-7 apart (raella's array energy 1e-4 apart, where one center changed) on two
machines of the same kind (numpy 2.4.5 and 2.4.6 agree on one machine), so numbers compare
to `RELATIVE`.

After a deliberate change, regenerate and review the diff:

    IMCC_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_cost_golden.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imcc import driver
from imcc.costmodel import estimate
from imcc.frontend.hw import load_target
from imcc.targets import BUILTIN_TARGETS
from tests.pinned import check_golden

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "resnet20_cifar10.onnx"
GOLDEN = Path(__file__).parent / "golden" / "costs"
RELATIVE = 1e-3
"""How close a figure must be: 10x the largest difference seen between machines, far below
what any constant or rule change of the cost model moves (percent)."""
KEYS = (
    "energy_j",
    "latency_s",
    "throughput_inferences_s",
    "timing",
    "clock_s",
    "area_mm2",
    "tiles",
    "chip_area_mm2",
    "utilization",
    "edap",
    "tops",
    "tops_per_w",
    "tops_per_mm2",
    "macs",
    "converts_per_mac",
    "energy_breakdown_j",
    "area_breakdown_mm2",
)


def report_of(name: str) -> dict:
    """Return the golden keys of the report of ResNet-20 on a built-in target."""
    images = np.random.default_rng(0).random((16, 3, 32, 32), dtype=np.float32)
    target = load_target(name)
    program = driver.compile(MODEL, target, calibration=images)
    record = estimate(program, target).to_dict()
    return {key: record[key] for key in KEYS}


@pytest.mark.parametrize("name", BUILTIN_TARGETS)
def test_the_cost_report_of_resnet20_matches_its_golden_file(name: str) -> None:
    check_golden(GOLDEN / f"{name}.json", report_of(name), RELATIVE)
