"""benchmarks/reproduce.py: the StoX-Net comparison's designs and its full-array level, checked
against the stox target's own converter constants (ISAAC's 8-bit ADC, the SOT-MTJ with its
reset and counter)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from imcc.frontend.hw import load_target

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import reproduce  # noqa: E402


@pytest.fixture(scope="module")
def stox():
    return load_target("stox")


def test_the_adc_designs_differ_from_the_mtj_design_only_in_converter_and_slicing(stox) -> None:
    designs = reproduce.stox_designs(stox)
    assert set(designs) == {"mtj", *reproduce.BASELINES}
    mtj = designs["mtj"]
    head = mtj[: mtj.index(",select-adc")]
    for name, (converter, width) in reproduce.BASELINES.items():
        expected = head.replace("slice=4", f"slice={width}")
        assert (
            designs[name] == f"{expected},select-adc{{converter={converter}}},share-columns,place"
        )


def test_sampling_schemes_keep_the_draws_of_uniform_sampling(stox) -> None:
    schemes = list(reproduce.sampling_schemes(stox).values())
    uniform, inhomogeneous, preset = schemes
    assert "first_samples" not in uniform and "first_samples" in preset
    assert inhomogeneous == uniform.replace(
        "calibrate-mtj", "calibrate-mtj,allocate-samples{budget=4}"
    )


def test_full_array_bank_ratios_follow_from_the_converter_constants(stox) -> None:
    """One read of a full 128x128 array: the ADC design converts 128 columns per input slice,
    the MTJ design 128 columns of `samples` samples, each a switch, a reset and a count."""
    samples = 4
    reports = reproduce.full_array(stox, reproduce.stox_designs(stox), samples)
    adc, _ = reproduce.BASELINES["adc8"]
    adc8, mtj = stox.converter(adc), stox.converter("mtj")
    columns, slices = stox.crossbar.columns, 4 // reproduce.BASELINES["adc8"][1]
    adc_energy = slices * columns * adc8.energy_j
    mtj_energy = columns * samples * (mtj.energy_j + mtj.reset_energy_j + mtj.counter_energy_j)
    assert reproduce.bank(reports["adc8"], "energy") == pytest.approx(adc_energy)
    assert reproduce.bank(reports["mtj"], "energy") == pytest.approx(mtj_energy)
    # the ADC converts the 128 held columns in turn; the MTJs sample all columns at once
    adc_time = slices * columns * adc8.latency_s
    mtj_time = samples * (mtj.latency_s + mtj.reset_latency_s)
    assert reproduce.array_time(reports["adc8"]) == pytest.approx(adc_time)
    assert reproduce.array_time(reports["mtj"]) == pytest.approx(mtj_time)
    # one ADC against a column's MTJ and counter, per crossbar
    assert reproduce.bank(reports["adc8"], "area") == pytest.approx(adc8.area_m2 * 1e6)
    assert reproduce.bank(reports["mtj"], "area") == pytest.approx(
        columns * (mtj.area_m2 + mtj.counter_area_m2) * 1e6
    )
