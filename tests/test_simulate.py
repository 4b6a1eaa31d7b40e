"""The crossbar simulator: with lossless converters it is the quantized network bit for bit;
with the targets' converters it shows the documented losses; runs are seeded; the CLI reports."""

from __future__ import annotations

import functools
import json
import re

import numpy as np
import pytest

from imcc.backend.reference import run_graph
from imcc.backend.simulator import CrossbarInterpreter
from imcc.cli import main
from imcc.driver import default_pipeline
from imcc.examples import example_path
from imcc.frontend.datasets import load_dataset
from imcc.frontend.hw import load_target
from imcc.frontend.onnx import import_onnx
from imcc.ir.rebatch import rebatch
from imcc.passes.context import Context
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import parse_pipeline
from imcc.simulation import PrefixCache, _Resume, simulate

DATA = load_dataset("digits-cnn")


@functools.cache
def mapped(target: str, pipeline: str | None = None):
    hardware = load_target(target)
    graph = import_onnx(example_path("digits-cnn"))
    ctx = Context(target=hardware, options={"calibration": DATA.images[:64]})
    program = PassManager(parse_pipeline(pipeline or default_pipeline(hardware))).run(graph, ctx)
    return program, hardware


@pytest.mark.parametrize(
    "target", ["isaac", "xpert", "raella", "sotmtj", "hybrid", "neurosim-rram22"]
)
def test_lossless_simulation_is_the_quantized_network_bit_for_bit(target):
    program, hardware = mapped(target)
    batched = rebatch(program, 40)
    images = DATA.images[:40]
    machine = CrossbarInterpreter(hardware, np.random.default_rng(0), lossless=True)
    got = machine.run(batched, {"image": images})["logits"]
    expected = run_graph(batched, {"image": images})["logits"]
    np.testing.assert_array_equal(got, expected)


def test_raella_two_bit_slices_are_lossless_and_four_bit_slices_saturate():
    slices = 'tile-crossbar{rows=0 columns=0 slices=[2,2,2,2] encoding=""}'
    pipeline = default_pipeline(load_target("raella")).replace("tile-crossbar", slices)
    two_bit = simulate(*mapped("raella", pipeline), DATA, batch=120)
    assert two_bit.accuracy == two_bit.quantized_accuracy
    four_bit = simulate(*mapped("raella"), DATA, batch=120)  # default slices [4, 4]
    assert four_bit.layers[-1].saturation_rate > 0.1  # the classifier's sums are wide
    assert four_bit.layers[0].saturation_rate < 0.01
    assert four_bit.accuracy <= four_bit.quantized_accuracy


def test_mtj_runs_are_seeded():
    program, hardware = mapped("sotmtj")
    first = simulate(program, hardware, DATA, batch=90, seed=3)
    again = simulate(program, hardware, DATA, batch=90, seed=3)
    other = simulate(program, hardware, DATA, batch=90, seed=4)
    assert first == again
    assert first.layers[0].mtj_samples > 0 and 0.3 < first.layers[0].mtj_switch_rate < 0.7
    assert [layer.rel_error for layer in other.layers] != [
        layer.rel_error for layer in first.layers
    ]


@pytest.mark.parametrize(
    "target, option",
    [
        ("xpert", "select-adc{type=flash per_layer_bits=[%s]}"),  # calibrated Flash converters
        ("sotmtj", "select-adc{per_layer_samples=[%s]}"),  # MTJ draws per sample
        ("xpert", "assign-input-precision{per_layer_bits=[%s]}"),  # the inputs' codes
        # speculative input slices, recovered where they saturate
        ("raella", "assign-input-precision{slices=[3,3,2] per_layer_speculate=[%s]}"),
    ],
)
def test_a_simulation_resumed_from_shared_leading_layers_is_the_same(target, option):
    """With a PrefixCache, designs that share leading layers resume from what an earlier
    simulation made there, and every report equals a fresh simulation's: accuracies,
    predictions and every layer's converter statistics and errors (whole batches, a partial
    one, and a data set simulated in two parts). A design that differs in its first layer
    resumes nowhere; a budget too small keeps nothing and changes nothing."""
    pipeline = default_pipeline(load_target(target))
    values = {
        "select-adc{type=flash per_layer_bits=[%s]}": ("5", "4"),
        "select-adc{per_layer_samples=[%s]}": ("4", "2"),
        "assign-input-precision{per_layer_bits=[%s]}": ("6", "4"),
    }.get(option, ("true", "false"))
    first, other = values
    designs = [  # the crossbar layers' settings: three layers
        (first, first, first),
        (first, first, other),  # resumes before the last layer
        (first, other, first),  # before the second
        (first, first, first),  # the first again: before the last
        (other, first, first),  # nowhere
    ]
    data = load_dataset("digits-cnn", 120)
    cache, starved = PrefixCache(), PrefixCache(budget=1)
    for design in designs:
        passes = pipeline.replace(option.split("{")[0], option % ",".join(design), 1)
        program, hardware = mapped(target, passes)
        fresh = simulate(program, hardware, data, batch=50)  # two batches and a partial one
        resumed_before = cache.resumed
        assert simulate(program, hardware, data, batch=50, reuse=cache) == fresh
        assert simulate(program, hardware, data, batch=50, reuse=starved) == fresh
        if design[0] == other:
            assert cache.resumed == resumed_before  # its first layer differs
        head, tail = data.take(50), type(data)(data.name, data.images[50:], data.labels[50:])
        parts = [
            simulate(program, hardware, head, batch=50, reuse=cache),
            simulate(program, hardware, tail, batch=50, first=50, reuse=cache),
        ]
        whole = [
            simulate(program, hardware, head, batch=50),
            simulate(program, hardware, tail, batch=50, first=50),
        ]
        assert parts == whole
    assert cache.resumed >= 3 * 3 and cache.skipped > cache.resumed  # resumed, some deep
    assert 0 < cache.size <= cache.budget and len(cache.entries) > 0
    assert starved.resumed == 0 and starved.size == 0 and not starved.entries


def test_prefix_cache_drops_a_demoted_design_first():
    """Beyond its budget the cache drops the least recently used entry, except that what a
    demoted simulation added (a design a search rejected) goes before everything else."""

    def entry() -> _Resume:  # 800 bytes
        return _Resume({"x": (np.zeros(100), np.dtype(np.float64))}, {}, {}, {})

    cache = PrefixCache(budget=2400)
    cache.put("base", entry())
    cache.put("older", entry())
    since = cache.puts
    cache.put("rejected", entry())
    assert cache.get("base") is not None  # now the most recently used; "older" the least
    cache.demote(since)
    cache.put("next", entry())
    assert list(cache.entries) == ["older", "base", "next"] and cache.size == 2400
    cache.put("last", entry())  # plain LRU again
    assert list(cache.entries) == ["base", "next", "last"]
    assert set(cache.added) == set(cache.entries)


def test_cli_simulate_reports_accuracies(tmp_path, capsys):
    program = tmp_path / "p.imcir"
    assert main(["compile", "digits-cnn", "--target", "raella", "-o", str(program)]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "simulate",
                str(program),
                "--data",
                "digits-cnn",
                "--limit",
                "120",
                "--batch",
                "60",
                "--json",
            ]
        )
        == 0
    )
    record = json.loads(capsys.readouterr().out)
    assert record["samples"] == 120 and record["float_accuracy"] is not None
    assert {"accuracy", "quantized_accuracy", "layers"} <= set(record)
    assert {"saturation_rate", "rel_error"} <= set(record["layers"][0])
    assert main(["simulate", str(program), "--data", "digits-cnn", "--limit", "60"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("simulate: 60 samples of digits-cnn, seed 0\nfloat accuracy ")


def test_cli_compile_simulate_adds_accuracy_to_the_report(tmp_path, capsys):
    report = tmp_path / "r.json"
    assert (
        main(
            [
                "compile",
                "digits-cnn",
                "--target",
                "xpert",
                "--simulate",
                "digits-cnn",
                "--limit",
                "64",
                "--report",
                str(report),
            ]
        )
        == 0
    )
    record = json.loads(report.read_text())
    assert {"energy_j", "accuracy", "float_accuracy", "quantized_accuracy", "samples"} <= set(
        record
    )
    assert record["samples"] == 64


def test_simulate_needs_labels_and_a_target(tmp_path, capsys):
    program = tmp_path / "p.imcir"
    assert main(["compile", "digits-cnn", "-o", str(program)]) == 0
    capsys.readouterr()
    assert main(["simulate", str(program), "--data", "digits-cnn"]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {program} does not say which target it is mapped for"
    )
    np.savez(tmp_path / "x.npz", image=DATA.images[:8])
    mapped_file = tmp_path / "m.imcir"
    assert main(["compile", "digits-cnn", "--target", "isaac", "-o", str(mapped_file)]) == 0
    capsys.readouterr()
    assert main(["simulate", str(mapped_file), "--data", f"npz:{tmp_path / 'x.npz'}"]) == 2
    assert "has no labels" in capsys.readouterr().err


def test_lossless_crossbars_match_onnxruntime_on_the_qdq_model():
    """The oracle end to end: crossbar datapath (lossless) vs onnxruntime's QDQ model."""
    import onnxruntime as ort

    from imcc.backend.qdq import export_qdq

    program, hardware = mapped("raella")
    batched = rebatch(program, 60)
    images = DATA.images[:60]
    machine = CrossbarInterpreter(hardware, np.random.default_rng(0), lossless=True)
    ours = machine.run(batched, {"image": images})["logits"]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(
        export_qdq(batched).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    (theirs,) = session.run(None, {"image": images})
    step = np.abs(ours).max() / 127  # one 8-bit output step
    assert np.abs(ours - theirs).max() <= step
    assert (ours.argmax(1) == theirs.argmax(1)).all()


def test_an_encoding_the_datapath_cannot_run_is_a_clear_error(tmp_path, capsys):
    # tile-crossbar does not choose center-offset: its centers come from encode-weights
    pipeline = default_pipeline(load_target("raella")).replace(
        "tile-crossbar", "tile-crossbar{rows=0 columns=0 slices=[] encoding=center-offset}"
    )
    assert main(["compile", "digits-cnn", "--target", "raella", "--passes", pipeline]) == 2
    err = capsys.readouterr().err
    assert "tile-crossbar cannot choose center-offset weights" in err
    assert "encode-weights{scheme=center-offset}" in err and "Traceback" not in err
    # a center-offset program that lost its centers is a clear error of the simulator
    program = tmp_path / "c.imcir"
    pipeline = default_pipeline(load_target("raella")).replace(
        "tile-crossbar", "tile-crossbar,encode-weights"
    )
    assert (
        main(
            [
                "compile",
                "digits-cnn",
                "--target",
                "raella",
                "--passes",
                pipeline,
                "-o",
                str(program),
            ]
        )
        == 0
    )
    text = program.read_text()
    assert "centers = [" in text
    program.write_text(re.sub(r"centers = \[[-0-9, ]*\], ", "", text))
    capsys.readouterr()
    assert main(["simulate", str(program), "--data", "digits-cnn", "--limit", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: center-offset weights need their per-filter centers (layer ")
    assert "encode-weights" in err
    assert "Traceback" not in err


def test_simulate_rejects_data_of_another_shape():
    from imcc.errors import UserError

    program, hardware = mapped("isaac")
    wrong = load_dataset("digits-cnn")
    wrong = type(wrong)(wrong.name, wrong.images[:, :, :4, :4], wrong.labels)
    with pytest.raises(UserError, match=r"data samples are \[1, 4, 4\], the model's input"):
        simulate(program, hardware, wrong, batch=10)
