"""benchmarks/reproduce.py: the StoX-Net comparison's designs and its full-array level, checked
against the stox target's own converter constants (ISAAC's 8-bit ADC, the SOT-MTJ with its
reset and counter)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

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
        tail = f"select-adc{{converter={converter}}},calibrate-adc,share-columns,place"
        assert designs[name] == f"{expected},{tail}"


def test_sampling_schemes_keep_the_draws_of_uniform_sampling(stox) -> None:
    schemes = list(reproduce.sampling_schemes(stox).values())
    uniform, inhomogeneous, preset = schemes
    assert "first_samples" not in uniform and "first_samples" in preset
    assert inhomogeneous == uniform.replace(
        "calibrate-mtj{sigmas=1}", "calibrate-mtj{sigmas=1},allocate-samples{budget=4}"
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


# --- RAELLA (benchmarks/raella.py) ---------------------------------------------------------------

import raella  # noqa: E402

from imcc import driver  # noqa: E402
from imcc.examples import example_path  # noqa: E402
from imcc.frontend.datasets import load_dataset  # noqa: E402
from imcc.passes.layers import crossbar_layers  # noqa: E402
from imcc.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline  # noqa: E402
from imcc.passes.profile_converters import simulate_layers  # noqa: E402


def test_the_raella_chain_changes_the_weight_grid_in_every_step_alike() -> None:
    tensor = raella.steps("tensor")
    assert raella.steps() == raella.STEPS
    for name, (target, mapping) in raella.STEPS.items():
        assert tensor[name] == (
            target,
            mapping.replace(",quantize,", ",quantize{weight_granularity=tensor},"),
        )
        assert "weight_granularity=tensor" in tensor[name][1]
        parse_pipeline(tensor[name][1])


def test_each_failure_cause_changes_one_factor_of_the_typical_layer() -> None:
    typical = raella.TYPICAL.format(**raella.DEFAULTS)
    for label, change in raella.CAUSES.items():
        mapping = raella.TYPICAL.format(**(raella.DEFAULTS | change))
        parse_pipeline(mapping)
        differing = [k for k in change if change[k] != raella.DEFAULTS[k]]
        assert (mapping == typical) == (not differing), label


def test_the_converter_view_counts_the_failures_the_simulator_counts() -> None:
    """Two independent paths: the share of a layer's slice sums at the 7-bit ADC's extreme
    codes (`converter_view`, from the partial sums) and the speculative failures the
    bit-accurate simulator counts while it recovers them (the first layer: both see the same
    inputs)."""
    target = load_target("raella")
    data = load_dataset("digits-cnn", 24)
    calibration, held_out = data.images[:16], data.images[16:24]
    program = driver.compile(
        example_path("digits-cnn"),
        target,
        passes=f"{DEFAULT_PIPELINE},{raella.TYPICAL.format(**raella.DEFAULTS)}",
        calibration=calibration,
    )
    view = raella.converter_view(program, target, held_out)
    stats, _ = simulate_layers(program, target, held_out, seed=0)
    first = crossbar_layers(program)[0]
    counted = stats[first.outputs[0]]
    assert counted.speculative_failures > 0
    assert view[0]["saturated_centered"] == pytest.approx(
        counted.speculative_failures / counted.conversions
    )
    for layer in view:  # c = 0 is plain differential storage: the centers change the sums
        assert layer["mean_abs_differential"] > 0 and layer["mean_abs_centered"] > 0


def test_xpert_phase_two_table_puts_each_ratio_the_way_the_paper_states_it() -> None:
    """EDAP baseline / searched (lower is better, so > 1 is a gain); TOPS/W and TOPS/mm2
    searched / baseline (higher is better)."""
    import xpert

    def metrics(edap: float, tops_w: float, tops_mm2: float) -> dict:
        return {"edap": edap, "tops_per_w": tops_w, "tops_per_mm2": tops_mm2}

    def uniform(bits: int, input_bits: int) -> str:
        return (
            f"assign-input-precision{{per_layer_bits=[{input_bits},{input_bits}]}},"
            f"select-adc{{per_layer_bits=[{bits},{bits}]}}"
        )

    searched = (
        "assign-input-precision{per_layer_bits=[6,5,8]},"
        "select-adc{per_layer_converter=[flash,sar,sar] per_layer_bits=[7,6,8]},"
        "share-columns{per_layer=[8,4,2]}"
    )
    result = {
        "network": "models/vgg.onnx",
        "widths": [64, 128],
        "float_validation": 0.925,
        "floor": 0.92,
        "loss": 0.005,
        "confirmed": [
            {"accuracy": 0.9183, "samples": 3000, "float": 0.93, "floor": 0.925, "held": False},
            {"accuracy": 0.926, "samples": 3000, "float": 0.93, "floor": 0.925, "held": True},
        ],
        "samples": 2000,
        "test_images": 5000,
        "baselines": [
            {"role": "XPert code", "pipeline": uniform(6, 4), "accuracy": 0.85}
            | {"metrics": metrics(8.0, 2.0, 3.0)},
            {"role": "float matched", "pipeline": uniform(7, 6), "accuracy": 0.92}
            | {"metrics": metrics(16.0, 1.0, 2.0)},
        ],
        "searched": {"metrics": metrics(2.0, 3.0, 6.0), "accuracy": 0.918, "pipeline": searched}
        | {"validation_accuracy": 0.92},
    }
    text = xpert.phase_two_markdown(result)
    assert "Network: vgg.onnx. Accuracy floor (the first 2,000 validation images" in text
    assert "float 92.50%, less 0.5 point): 92.00%" in text
    assert "the searched design: 92.00% there. Held out: the next 3,000 validation images " in text
    assert "(float 93.00%, floor 92.50%), the feasible designs from the cheapest up: " in text
    assert "cheapest up: 91.83% (no), 92.60%. Accuracies below" in text
    old = {k: v for k, v in result.items() if k not in ("loss", "confirmed")}
    assert "less 1 point): 92.00%; the searched design: 92.00% there. Accuracies" in (
        xpert.phase_two_markdown(old)
    )  # a record from before the held-out check
    assert "| 1 | 64 | flash | 7 | 8 | 6 |\n| 2 | 128 | sar | 6 | 4 | 5 |" in text
    assert "| 2 | 128 | sar | 6 | 4 | 5 |\n| classifier | 10 | sar | 8 | 2 | 8 |" in text
    assert "imcc vs float matched (7-bit converters, 6-bit inputs) |" in text
    assert "| EDAP, baseline / searched | 10.24x | 4.00x | 8.00x |" in text
    assert "| TOPS/W, searched / baseline | 1.72x | 1.50x | 3.00x |" in text
    assert "| TOPS/mm2, searched / baseline | 1.93x | 2.00x | 3.00x |" in text
    assert "| accuracy, baseline |  | 85.00% | 92.00% |" in text
    assert "| accuracy, searched | 92.46% | 91.80% | 91.80% |" in text


import hybrid  # noqa: E402

from imcc.examples import resolve_model  # noqa: E402
from tests.onnx_models import CIFAR10_TRAIN  # noqa: E402


def test_the_hybrid_comparison_runs_resumes_and_beats_every_family_within_the_budget(
    tmp_path: Path,
) -> None:
    """reproduce hybrid on digits-cnn with a small menu: five families, the hybrid at least as
    good as every family design within the budget (designs verified on twice the images of the
    single-layer measurements, those with MTJ layers after a short PS-QAT), a plot, and a
    rerun that evaluates nothing anew (every evaluation and fine-tuned model is stored)."""
    kept = ["sar:8b", "sar:7b+co+spec", "flash:5b", "mtj:4x", "mtj:16x"]

    def run() -> dict:
        return hybrid.hybrid(
            16,
            16,
            5.0,
            tmp_path,
            model=Path(resolve_model("digits-cnn")),
            validation="digits-cnn,from=296",
            test="digits-cnn,from=296",
            mechanisms=kept,
            verify=32,
            psqat=32,
            training="digits-cnn",
            train=256,
        )

    result = run()
    assert result["verification_samples"] == 32
    (evaluations,) = tmp_path.glob("evaluations-*.json")  # one per network, target and data
    keys = json.loads(evaluations.read_text())["evaluations"]
    assert {key.split("|")[0] for key in keys} == {"16", "32"}
    rows = {row["family"]: row for row in result["families"]}
    assert list(rows) == list(hybrid.FAMILIES)
    assert rows["isaac"]["edap_vs_isaac"] == 1.0
    assert rows["stox"]["mechanisms"] == ("mtj:16x",) + ("mtj:4x",) * 2
    assert Path(rows["stox"]["finetuned"]).is_file()  # PS-QAT before its accuracy counts
    assert rows["isaac"]["finetuned"] is None
    base = rows["isaac"]["validation"]
    winner = rows["hybrid"]
    assert base - winner["validation"] <= 0.05 + 1e-9
    for row in rows.values():
        if base - row["validation"] <= 0.05 + 1e-9:
            assert winner["metrics"]["edap"] <= row["metrics"]["edap"]
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
    text = hybrid.markdown(result)
    assert text.count("\n| layer ") == 1 + 3 and "--target hybrid --passes 'canonicalize," in text
    stored = evaluations.read_text()
    assert run()["families"] == result["families"]
    assert evaluations.read_text() == stored


def test_xperts_quantizers_match_hand_computed_codes() -> None:
    """float_range_quantize at 2 bits: 3 steps over 0..1, half rounds up; LinearQuantizeOut at 2
    bits: steps of 1/4 from the minimum, floored, the maximum clamped to the top code."""
    import numpy as np
    import xpert

    x = np.array([0.0, 0.1, 0.5, 0.9, 1.0], dtype=np.float32)
    assert xpert.range_quantize(x, 2) == pytest.approx([0.0, 0.0, 2 / 3, 1.0, 1.0])
    assert xpert.output_quantize(x, 2) == pytest.approx([0.0, 0.0, 0.5, 0.75, 0.75])
    shifted = x * 4 - 2  # the codes follow the tensor's own range
    assert xpert.output_quantize(shifted, 2) == pytest.approx([-2.0, -2.0, 0.0, 1.0, 1.0])
    assert xpert.range_quantize(np.full(3, 0.7, np.float32), 4) == pytest.approx([0.7] * 3)
    with pytest.raises(ValueError):
        xpert.range_quantize(x, 1)


def test_xperts_accuracy_model_is_the_float_network_at_wide_precisions() -> None:
    """16-bit inputs, weights and outputs leave the float network's decisions alone; a 2-bit
    output quantization of every layer does not."""
    import xpert

    from imcc.backend.reference import run_graph
    from imcc.ir.rebatch import rebatch

    model = example_path("digits-cnn")
    graph = rebatch(driver.float_reference(model), 64)
    data = load_dataset("digits-cnn", 64)
    (logits,) = run_graph(graph, {graph.inputs[0].name: data.images}).values()
    expected = float((logits.argmax(axis=1) == data.labels).mean())
    layers = len(crossbar_layers(graph))
    wide = xpert.xpert_accuracy(model, "digits-cnn", 64, [16] * layers, [16] * layers, 16, 32)
    assert wide == pytest.approx(expected)
    assert expected > 0.8
    narrow = xpert.xpert_accuracy(model, "digits-cnn", 64, [16] * layers, [2] * layers, 16, 32)
    assert narrow < expected - 0.1
    with pytest.raises(ValueError):
        xpert.xpert_accuracy(model, "digits-cnn", 64, [16], [16], 16, 32)


def test_xpert_baselines_widen_converters_then_inputs_and_are_read_back_from_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The converters widen until they lose at most CONVERTER_LOSS against lossless ones, then
    the inputs until the design is within CONVERTER_LOSS of the float network; the code's
    design and the two that end a step are tested. What was measured is read back for the
    same network file and image counts; another network file is measured anew."""
    import xpert

    network = tmp_path / "vgg.onnx"
    network.write_bytes(b"one")
    validated, tested = [], []
    accuracy = {"6/4": 0.85, "7/4": 0.895, "7/5": 0.91, "7/6": 0.925}

    def design(pipeline: str, samples: int) -> dict:
        validated.append(pipeline)
        return {
            "pipeline": pipeline,
            "validation_accuracy": accuracy[pipeline],
            "validation_lossless": 0.9,
        }

    def tests(model: Path, pipeline: str, samples: int, test_images: int) -> dict:
        tested.append(pipeline)
        return {"accuracy": accuracy[pipeline] - 0.01, "test_images": test_images}

    monkeypatch.setattr(xpert, "BASELINE_MODEL", network)
    monkeypatch.setattr(xpert, "float_accuracy", lambda model, data, samples: 0.93)
    monkeypatch.setattr(
        xpert, "baseline", lambda model, bits, input_bits: (f"{bits}/{input_bits}", None)
    )
    monkeypatch.setattr(xpert, "baseline_design", design)
    monkeypatch.setattr(xpert, "design_tests", tests)
    priced = []

    def cost(model: Path, pipeline: str):
        priced.append(pipeline)
        return SimpleNamespace(to_dict=lambda: {"edap": accuracy[pipeline]})

    monkeypatch.setattr(xpert, "cost", cost)
    store = xpert.JsonStore(tmp_path / "baselines.json", {})
    first = xpert.baseline_designs(500, 5000, store)
    assert [d["pipeline"] for d in first] == ["6/4", "7/4", "7/5", "7/6"]
    assert [d["role"] for d in first] == [*xpert.ROLES[:2], "", xpert.ROLES[2]]
    assert tested == ["6/4", "7/4", "7/6"] and "accuracy" not in first[2]
    assert first[3]["accuracy"] == pytest.approx(0.915) and first[3]["float_validation"] == 0.93
    again = xpert.baseline_designs(500, 5000, xpert.JsonStore(tmp_path / "baselines.json", {}))
    assert again == first and len(validated) == 4 and len(tested) == 3
    network.write_bytes(b"two")
    xpert.baseline_designs(500, 5000, store)
    assert len(validated) == 8 and len(tested) == 6
    chip = tmp_path / "xpert.hw"  # another target file: measured anew too
    chip.write_text("changed")
    target = xpert.load_target("xpert")
    monkeypatch.setattr(
        xpert, "load_target", lambda name: dataclasses.replace(target, source=str(chip))
    )
    xpert.baseline_designs(500, 5000, store)
    assert len(validated) == 12 and len(tested) == 9
    monkeypatch.setattr(xpert, "FLOORPLAN", "neurosim")  # places, computes nothing: read back
    again = xpert.baseline_designs(500, 5000, store)
    assert len(validated) == 12 and len(tested) == 9
    assert len(priced) == 5 * 4 and again[0]["metrics"] == {"edap": 0.85}  # priced every call


def test_xpert_float_matched_baseline_must_hold_its_point_on_the_check_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a check, a design within a point of the float network on the search's images must
    hold it on the check's too (the float network measured there): 7/5 holds on 500 images
    and not on 2,000, so the inputs widen to 7/6. Checks are kept in the store and read back;
    the table names the checked designs."""
    import xpert

    network = tmp_path / "vgg.onnx"
    network.write_bytes(b"one")
    accuracy = {"6/4": 0.85, "7/4": 0.895, "7/5": 0.925, "7/6": 0.93}
    on_check = {"7/5": 0.905, "7/6": 0.915}
    checked = []

    def design(pipeline: str, samples: int) -> dict:
        return {
            "pipeline": pipeline,
            "validation_accuracy": accuracy[pipeline],
            "validation_lossless": 0.9,
            "validation_samples": samples,
        }

    def mapped(program, data: str, samples: int) -> float:
        assert data == xpert.VALIDATION and samples == 2000
        checked.append(program)
        return on_check[program]

    monkeypatch.setattr(xpert, "BASELINE_MODEL", network)
    monkeypatch.setattr(
        xpert, "float_accuracy", lambda model, data, samples: {500: 0.93, 2000: 0.92}[samples]
    )
    monkeypatch.setattr(
        xpert, "baseline", lambda model, bits, input_bits: (f"{bits}/{input_bits}", None)
    )
    monkeypatch.setattr(xpert, "baseline_design", design)
    monkeypatch.setattr(
        xpert,
        "design_tests",
        lambda model, pipeline, samples, n: {"accuracy": 0.9, "test_images": n},
    )
    monkeypatch.setattr(
        xpert,
        "cost",
        lambda model, pipeline: SimpleNamespace(
            to_dict=lambda: {"edap": 1.0, "tops_per_w": 1.0, "tops_per_mm2": 1.0}
        ),
    )
    monkeypatch.setattr(xpert, "compiled", lambda model, pipeline: pipeline)
    monkeypatch.setattr(xpert, "mapped_accuracy", mapped)
    monkeypatch.setattr(xpert, "design_label", lambda design: design["pipeline"])
    store = xpert.JsonStore(tmp_path / "baselines.json", {})
    designs = xpert.baseline_designs(500, 5000, store, check=2000)
    assert [d["role"] for d in designs] == [*xpert.ROLES[:2], "", xpert.ROLES[2]]
    assert checked == ["7/5", "7/6"]
    assert designs[3]["check"] == {"samples": 2000, "float": 0.92, "accuracy": 0.915}
    assert "check" not in designs[0]
    stored = xpert.JsonStore(tmp_path / "baselines.json", {})
    again = xpert.baseline_designs(500, 5000, stored, 2000)
    assert again == designs and checked == ["7/5", "7/6"]
    assert xpert.baseline_designs(500, 5000, store)[2]["role"] == xpert.ROLES[2]  # no check
    table = xpert.baselines_markdown(designs)
    assert "Checked on the first 2,000 validation images (float 92.00%)" in table
    assert "7/5 90.50%, 7/6 91.50%" in table


def test_xpert_phase_two_reads_the_searched_design_tests_back_from_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Phase 2 searches with the accuracy floor only (no area window: XPert's phase 2
    constrains the accuracy), then tests the design it found once: a second run with the same
    store reads its test accuracies back, and prices it again. With a check, the check's
    images decide the designs (the float network measured there), in a study of their own."""
    import xpert

    from imcc.search import channels

    network = tmp_path / "vgg.onnx"
    network.write_bytes(b"one")
    searches, tested, priced = [], [], []

    def search(model, target, data, storage, name, structure, trials, area, floor, *a, **k):
        searches.append((area, floor, a[0], name))
        assert not k["confirm"]("cheaper") and k["confirm"]("p")  # the held-out check
        return SimpleNamespace(pipeline="p", accuracy=0.92, walk=({"trial": 0},))

    def confirmation(out, model, images, digest, confirmed):
        def confirm(pipeline: str) -> bool:
            confirmed.append({"pipeline": pipeline, "held": pipeline == "p"})
            return pipeline == "p"

        return confirm

    def tests(model: Path, pipeline: str, samples: int, test_images: int) -> dict:
        tested.append(pipeline)
        return {"accuracy": 0.91, "test_images": test_images, "xpert_model": {}}

    def cost(model: Path, pipeline: str):
        priced.append(pipeline)
        return SimpleNamespace(to_dict=lambda: {"edap": 1.0})

    monkeypatch.setattr(channels, "cheapest_precisions", search)
    monkeypatch.setattr(channels, "inner_choices", lambda out, label: {})
    monkeypatch.setattr(xpert, "float_accuracy", lambda model, data, samples: 0.93 + samples / 1e5)
    monkeypatch.setattr(xpert, "design_tests", tests)
    monkeypatch.setattr(xpert, "cost", cost)
    monkeypatch.setattr(xpert, "conv_widths", lambda model: (64, 128))
    monkeypatch.setattr(xpert, "confirmation", confirmation)
    record = {"baselines": [], "chosen": {"widths": list(xpert.ChannelSpace("vgg16").baseline())}}
    store = xpert.JsonStore(tmp_path / "baselines.json", {})
    first = xpert.phase_two(tmp_path, record, 4, 500, 5000, network, store)
    ((area, floor, samples, name),) = searches  # float less SEARCH_LOSS, any area
    assert (area, floor, samples) == (None, pytest.approx(0.93), 500)
    assert first["searched"]["accuracy"] == 0.91 and first["searched"]["metrics"] == {"edap": 1.0}
    assert first["samples"] == 500 and first["floor"] == pytest.approx(0.93)
    assert [c["pipeline"] for c in first["confirmed"]] == ["cheaper", "p"]
    assert first["searched"]["held_out"] == {"pipeline": "p", "held": True}
    assert first["walk"] == [{"trial": 0}]  # every design the search measured, for the figure
    again = xpert.phase_two(tmp_path, record, 4, 500, 5000, network, store)
    assert again == first and tested == ["p"] and priced == ["p", "p"]
    checked = xpert.phase_two(tmp_path, record, 4, 500, 5000, network, store, check=2000)
    assert searches[-1][:3] == (None, pytest.approx(0.945), 2000)  # the float network there
    # a study per images, floor and results version
    assert searches[-1][3] != name
    assert name.endswith(f"-500-{xpert.SEARCH_LOSS}-r{xpert.RESULTS_VERSION}")
    assert checked["samples"] == 2000 and tested == ["p", "p"]  # tested anew: another key
    with pytest.raises(SystemExit):
        xpert.phase_two(tmp_path, record, 4, 500, 5000, network, store, check=100)


def test_xpert_figure_draws_phase_one_and_once_it_ran_phase_two(tmp_path: Path) -> None:
    """The figure has phase 1's panel alone until phase 2 ran, then both side by side; every
    kind of candidate and design is drawn (a network below the NASWOT floor, one with no
    design in the area window, designs above and below the floor, one the probe ruled out,
    held-out checks, the baselines' energies)."""
    import struct

    import xpert

    vgg16 = list(xpert.ChannelSpace("vgg16").baseline())
    chosen = {"widths": vgg16, "naswot": 10.0, "latency_s": 7e-5, "feasible": True}
    tried = [
        chosen,
        {"widths": [128] * 13, "naswot": 12.0, "latency_s": 2e-4, "feasible": True},
        {"widths": [512] * 13, "naswot": 13.0, "latency_s": 4e-4, "feasible": False},
        {"widths": [64] * 13, "naswot": 9.0, "latency_s": None, "feasible": False},
    ]
    result: dict = {"tried": tried, "chosen": chosen}

    def width(path: Path) -> int:
        header = path.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        return struct.unpack(">I", header[16:20])[0]

    xpert.plot(result, tmp_path / "one.png")
    walk = [
        {"accuracy": a, "energy_j": e, "feasible": f, "pruned": p, "pipeline": n}
        for a, e, f, p, n in (
            (0.93, 6e-5, True, False, "wide"),
            (0.925, 4e-5, True, False, "cheap"),
            (0.90, 3e-5, False, False, "low"),
            (0.70, 3.5e-5, False, True, "probe"),
        )
    ]
    result["phase2"] = {
        "walk": walk,
        "confirmed": [
            {"pipeline": "cheap", "accuracy": 0.92, "held": False, "samples": 3000, "floor": 0.925},
            {"pipeline": "wide", "accuracy": 0.93, "held": True, "samples": 3000, "floor": 0.925},
        ],
        "searched": {"validation_accuracy": 0.93, "metrics": {"energy_j": 6e-5}},
        "floor": 0.928,
        "float_validation": 0.933,
        "baselines": [{"role": "XPert code", "metrics": {"energy_j": 2e-5}}],
        "samples": 2000,
        "network": "models/vgg16_cifar10.onnx",
    }
    xpert.plot(result, tmp_path / "two.png")
    assert width(tmp_path / "two.png") == 2 * width(tmp_path / "one.png") == 2 * 6 * 150


def test_xpert_breakdown_splits_each_design_energy_and_puts_edap_against_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The components shown and `other` add up to the design's energy, and the last column is
    the first design's EDAP over each design's (the cost model's own EDAP)."""
    import xpert

    from imcc.costmodel import estimate

    target = load_target("xpert")
    model = example_path("digits-cnn")
    calibration = load_dataset("digits-cnn", 16).images

    def compiled(network: Path, pipeline: str):
        return driver.compile(network, target, passes=pipeline, calibration=calibration)

    monkeypatch.setattr(xpert, "compiled", compiled)
    designs = [
        (f"{bits} bits", model, xpert.baseline(model, "digits-cnn", bits)[0]) for bits in (6, 8)
    ]
    rows = xpert.breakdown_markdown(designs).splitlines()[-2:]
    reports = [estimate(compiled(model, pipeline), target) for _, _, pipeline in designs]
    for row, report in zip(rows, reports, strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) > 0  # the converters
        assert sum(float(c) for c in cells[1:5]) == pytest.approx(1e6 * report.energy_j, rel=2e-3)
        assert float(cells[7]) == pytest.approx(report.edap, rel=1e-3)
    ratio = float(rows[1].split("|")[-2].strip().rstrip("x"))
    assert ratio == pytest.approx(reports[0].edap / reports[1].edap, abs=0.01) and ratio < 1


@pytest.mark.skipif(
    not CIFAR10_TRAIN.is_file(), reason="needs the CIFAR-10 training set beside the checkout"
)
def test_xpert_shipped_design_replays_its_csv_per_layer(tmp_path: Path) -> None:
    """XPert's shipped design compiles with its widths, and every conv layer's converter,
    precision, sharing and input bits are the CSV's."""
    import xpert

    label, model, pipeline = xpert.shipped_design(tmp_path)
    assert "shipped" in label
    widths = [w for w, *_ in xpert.SHIPPED]
    rows = xpert.design_rows(pipeline, widths)
    assert [(w, c, int(b), int(s), int(i)) for w, c, b, s, i in rows] == [
        (w, c, b, s, i) for w, s, c, b, i in xpert.SHIPPED
    ]
    program = driver.compile(model, load_target("xpert"), passes=pipeline)
    assert len(crossbar_layers(program)) == len(widths) + 1  # and the classifier


@pytest.mark.skipif(not CIFAR10_TRAIN.is_file(), reason="needs the CIFAR-10 training set")
def test_xpert_confirmation_measures_held_out_validation_images_as_phase_two_compiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The held-out check simulates a design on the validation images after the deciding
    ones (at most `HELD_OUT`, never past the split), compiled with phase 2's calibration (the
    split's first images), against the float network there less `SEARCH_LOSS`; a second check
    reads the measurement back from its store; with no image left there is no check."""
    import xpert

    from imcc.search.channels import export_candidate

    network = export_candidate("vgg16", (8,) * 13, tmp_path / "net.onnx")
    pipeline, _ = xpert.baseline(network, bits=8, input_bits=8)
    monkeypatch.setattr(xpert, "HELD_OUT", 16)
    monkeypatch.setattr(xpert, "HELD_OUT_PROBE", 8)
    images = xpert.VALIDATION_IMAGES - 20  # 20 images left: HELD_OUT of them
    from imcc.search import evaluate

    calibrated: list[str] = []
    original = evaluate.calibration_data

    def spy(data: str, model: Path):
        calibrated.append(data)
        return original(data, model)

    monkeypatch.setattr(evaluate, "calibration_data", spy)
    confirmed: list[dict] = []
    confirm = xpert.confirmation(tmp_path, network, images, "d", confirmed)
    assert calibrated == [xpert.VALIDATION]  # phase 2's calibration, not the held-out images
    held = confirm(pipeline)
    data = f"{xpert.DATA},from={45_000 + images}"
    reference = xpert.float_accuracy(network, data, 16)
    expected = xpert.mapped_accuracy(xpert.compiled(network, pipeline), data, 16)
    (record,) = confirmed
    assert record["samples"] == 16 and record["accuracy"] == pytest.approx(expected)
    assert record["floor"] == pytest.approx(reference - xpert.SEARCH_LOSS)
    assert held == record["held"] == (expected >= reference - xpert.SEARCH_LOSS)
    monkeypatch.setattr(evaluate.Evaluator, "simulate", lambda *a, **k: pytest.fail("not stored"))
    again: list[dict] = []
    assert xpert.confirmation(tmp_path, network, images, "d", again)(pipeline) == held
    assert again == confirmed
    assert xpert.confirmation(tmp_path, network, xpert.VALIDATION_IMAGES, "d", []) is None


def test_xpert_phase_two_runs_on_the_network_of_the_chosen_widths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Phase 1 keeping VGG-16's own widths runs phase 2 on the trained baseline; other widths
    on the trained searched network only when its convolutions have them."""
    import xpert

    from imcc.search.channels import ChannelSpace, export_candidate

    widths = (8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64)
    trained = export_candidate("vgg16", widths, tmp_path / "searched.onnx")
    monkeypatch.setattr(xpert, "BASELINE_MODEL", trained)  # any file stands for it
    monkeypatch.setattr(xpert, "SEARCHED_MODEL", trained)
    assert xpert.conv_widths(trained) == widths
    assert xpert.searched_network(ChannelSpace("vgg16").baseline()) == xpert.BASELINE_MODEL
    assert xpert.searched_network(widths) == trained
    assert xpert.searched_network((16, *widths[1:])) is None


@pytest.mark.parametrize("kept", [True, False])
def test_xpert_cost_designs_name_phase_one_network_and_skip_its_rows_when_it_is_vgg16(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: bool
) -> None:
    """The breakdown's designs: the reported baselines, the widest uniform design, XPert's
    shipped one, the phase-1 network on the code design and on phase 1's (not when phase 1
    keeps VGG-16: they are the baseline's rows) and phase 2's design."""
    import xpert

    def baseline(model: Path, bits: int = 6, input_bits: int = 4):
        return (
            f"assign-input-precision{{per_layer_bits=[{input_bits}]}},"
            f"select-adc{{per_layer_bits=[{bits}]}}",
            None,
        )

    monkeypatch.setattr(xpert, "baseline", baseline)
    monkeypatch.setattr(xpert, "shipped_design", lambda out: ("shipped", out, "s"))
    space = xpert.ChannelSpace("vgg16")
    widths = list(space.baseline()) if kept else [64] * 13
    record = {
        "chosen": {"widths": widths, "pipeline": "phase1"},
        "baselines": [
            {"role": "XPert code", "pipeline": baseline(Path())[0]},
            {"role": "", "pipeline": "unreported"},
        ],
        "phase2": {"network": "vgg.onnx", "searched": {"pipeline": "phase2"}},
    }
    rows = xpert.cost_designs(tmp_path, record)
    labels = [label for label, _, _ in rows]
    network = "VGG-16 (phase 1's choice)" if kept else "phase-1 network"
    expected = [
        "VGG-16, XPert code (6-bit converters, 4-bit inputs)",
        "VGG-16, widest (8-bit converters, 8-bit inputs)",
        "shipped",
        *([] if kept else [f"{network}, XPert code design", f"{network}, phase 1's design"]),
        f"{network}, phase 2's design",
    ]
    assert labels == expected
    assert rows[-1][1:] == (xpert.ROOT / "vgg.onnx", "phase2")  # relative: the checkout's


def test_xpert_check_below_the_baselines_images_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--check` on fewer images than the baselines are chosen on is refused before any work:
    one message, exit 2."""
    import xpert

    monkeypatch.setattr(xpert, "phase_one", lambda *a, **k: pytest.fail("ran phase 1"))
    monkeypatch.setattr(sys, "argv", ["reproduce.py", "xpert", "--check", "100"])
    with pytest.raises(SystemExit) as exit_:
        reproduce.main()
    assert exit_.value.code == 2
    assert f"--check 100: give at least {xpert.SAMPLES}" in capsys.readouterr().err
