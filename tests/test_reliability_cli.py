"""The exit-2 contract at the command line: output paths, flag values, pass options, targets.

Each case is a user error that once ended in a traceback, a pass crash (exit 1) or a silent
wrong answer; each must now print one message (`error: ...`, `hint: ...`) and exit 2.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from imcc.cli import main
from imcc.errors import OptionError, PipelineError, UserError
from imcc.files import write_file, write_text
from imcc.passes.pipeline import parse_pipeline
from imcc.passes.registry import load_pass


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    """Run imcc, assert exit 2 with one message containing `needles` and no traceback."""
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err and err.startswith(("error: ", "--passes:")), err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("program") / "digits.imcir"
    assert main(["compile", "digits-cnn", "--target", "isaac", "-o", str(path)]) == 0
    return path


# --- output paths are checked before the work starts, and written whole or not at all ---------


def test_an_output_onto_a_directory_is_refused_and_leaves_no_stray_weight_file(capsys, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    _fails(
        capsys,
        ["compile", "digits-cnn", "--target", "isaac", "-o", str(folder)],
        f"cannot write -o {folder}: it is a directory",
    )
    assert not (tmp_path / "out.npz").exists()
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["compile", "digits-cnn", "--target", "isaac", "--report", "{file}/r.json"],
        ["compile", "digits-cnn", "-o", "{file}/p.imcir"],
        ["cost", "{program}", "--report", "{file}/r.json"],
        ["export-qdq", "{program}", "-o", "{file}/q.onnx"],
        ["opt", "{program}", "-o", "{file}/p.imcir"],
        ["compile", "digits-cnn", "--target", "isaac", "--dump-ir-dir", "{file}"],
    ],
)
def test_an_output_under_a_file_is_refused_before_any_work(capsys, tmp_path, program, argv):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    argv = [a.format(file=blocker, program=program) for a in argv]
    err = _fails(capsys, argv, "cannot write", str(blocker))
    assert "calibration" not in err
    assert blocker.read_text() == "not a folder\n"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize(
    "argv",
    [
        ["compile", "digits-cnn", "--target", "isaac", "--report", "/dev/full"],
        ["export-qdq", "{program}", "-o", "/dev/full"],
        ["cost", "{program}", "--report", "/dev/full"],
    ],
)
def test_a_full_disk_is_one_message(capsys, program, argv):
    argv = [a.format(program=program) for a in argv]
    _fails(capsys, argv, "cannot write", "/dev/full", os.strerror(errno.ENOSPC))


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    report = tmp_path / "r.json"
    report.write_text("old\n")

    def broken(stream) -> None:
        stream.write(b"half a rep")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(UserError, match="No space left on device"):
        write_file(report, broken, "--report")
    assert report.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    write_text(tmp_path / "new" / "r.json", "fresh\n")  # missing folders are made
    assert (tmp_path / "new" / "r.json").read_text() == "fresh\n"


# --- flag values (counts and rates are checked by the functions the commands call) ----------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["compile", "digits-cnn", "--target", "isaac", "--seed", "-1"],
            "argument --seed: must be an integer in 0..2**63-1, got -1",
        ),
        (["simulate", "{program}", "--data", "digits", "--seed", "-1"], "argument --seed"),
        (
            ["search", "digits-cnn", "--target", "isaac", "--data", "digits", "--seed", "2e3"],
            "argument --seed: expected an integer, got '2e3'",
        ),
    ],
)
def test_a_negative_seed_is_a_usage_error(capsys, program, argv, message):
    _fails(capsys, [a.format(program=program) for a in argv], message, "--help")


def test_simulate_refuses_a_model_that_does_not_exist(capsys, program):
    _fails(
        capsys,
        ["simulate", str(program), "--data", "digits", "--model", "missing.onnx"],
        "--model missing.onnx: no such file",
    )


@pytest.mark.parametrize("command", ["simulate", "cost"])
def test_a_program_is_not_run_on_another_target(capsys, program, command):
    argv = [command, str(program), "--target", "raella"]
    argv += ["--data", "digits", "--limit", "8"] if command == "simulate" else []
    _fails(capsys, argv, "is mapped for target 'isaac', not 'raella'")


def test_naming_the_recorded_target_by_its_file_is_accepted(capsys, program):
    from imcc.frontend.hw import builtin_path

    assert main(["cost", str(program), "--target", str(builtin_path("isaac"))]) == 0
    assert "energy" in capsys.readouterr().out


# --- pass options are checked when the pipeline is parsed ----------------------------------------


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ("quantize{percentile=200}", "option 'percentile': 200.0 must be > 0, <= 100"),
        ("quantize{method=median}", "option 'method': 'median' must be one of minmax | percentile"),
        ("quantize{samples=0}", "option 'samples': 0 must be >= 1"),
        ("calibrate-mtj{sigmas=0}", "option 'sigmas': 0.0 must be > 0"),
        ("calibrate-mtj{sigmas=nan}", "option 'sigmas': nan must be finite"),
        ("allocate-samples{budget=0.5}", "option 'budget': 0.5 must be 1..4096"),
        ("encode-weights{scheme=zigzag}", "option 'scheme': 'zigzag' must be one of"),
        ("encode-weights{per_layer_scheme=[offset,zigzag]}", "entry 'zigzag' must be one of"),
        ("slice-weights{error_budget=-1}", "option 'error_budget': -1.0 must be >= 0"),
        ("slice-weights{max_failures=2}", "option 'max_failures': 2.0 must be 0..1"),
        ("slice-weights{slices=[4,0,4]}", "entry 0 must be 1..16"),
        ("select-adc{type=adc}", "option 'type': 'adc' must be one of"),
        ("share-columns{per_layer=[8,0,8]}", "entry 0 must be >= 1"),
        ("fold-constants{max_elements=-1}", "option 'max_elements': -1 must be >= 0"),
        ("place{speedup=-1}", "option 'speedup': -1 must be 0..65536"),
    ],
)
def test_out_of_range_pass_options_are_refused_at_parse_time(capsys, pipeline, message):
    with pytest.raises(PipelineError) as info:
        parse_pipeline(pipeline, "--passes")
    assert message in str(info.value)
    value = pipeline[pipeline.index("=") + 1 :]
    assert info.value.column == pipeline.index(value) + 1  # the caret points at the value
    _fails(
        capsys,
        ["compile", "digits-cnn", "--target", "isaac", "--passes", f"canonicalize,{pipeline}"],
        message,
    )


def test_passes_built_in_code_are_checked_too():
    with pytest.raises(OptionError, match=r"option 'percentile': -3\.0 must be > 0"):
        load_pass("quantize")(percentile=-3.0)
    assert load_pass("quantize")(percentile=100.0).percentile == 100.0


def test_search_refuses_labels_the_model_cannot_predict(capsys, tmp_path):
    data = np.load(Path(__file__).parent.parent / "examples" / "digits_test.npz")
    labels = data["label"].copy()
    labels[3] = 15  # the digits CNN has 10 outputs: every trial would be found illegal
    np.savez(tmp_path / "d.npz", image=data["image"], label=labels)
    _fails(
        capsys,
        [
            "search",
            "digits-cnn",
            "--target",
            "isaac",
            "--data",
            f"npz:{tmp_path}/d.npz",
            "--trials",
            "2",
            "--limit",
            "16",
            "--probe",
            "8",
            "--check",
            "16",
            "--random-trials",
            "0",
            "--out",
            str(tmp_path / "s"),
        ],
        "labels go up to 15, but the model has 10 outputs",
    )


# --- run: its inputs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arrays", "flags", "message"),
    [
        ({"e.npy": None}, ["--input", "e.npy"], "cannot read input e.npy: it is empty (0 bytes)"),
        (
            {"z.npy": np.zeros((0, 1, 8, 8), np.float32)},
            ["--input", "z.npy"],
            "graph input 'image' holds no values (shape [0, 1, 8, 8])",
        ),
        (
            {
                "a.npy": np.zeros((4, 1, 8, 8), np.float32),
                "b.npy": np.zeros((1, 1, 8, 8), np.float32),
            },
            ["--input", "image=a.npy", "--input", "image=b.npy"],
            "graph input 'image' is given twice",
        ),
        (
            {"a.npy": np.zeros((4, 1, 8, 8), np.float32)},
            ["--input", "=a.npy"],
            "--input =a.npy: give NAME=FILE or FILE",
        ),
        (
            {"a.npy": np.zeros((4, 1, 8, 8), np.float32)},
            ["--input", "a.npy", "--batch", "0"],
            "--batch sets the batch an ONNX model is imported with",
        ),
        (
            {"n.npy": np.full((2, 1, 8, 8), np.nan, np.float32)},
            ["--input", "n.npy"],
            "graph input 'image' holds NaN or infinite values",
        ),
    ],
)
def test_run_refuses_bad_inputs(capsys, tmp_path, monkeypatch, program, arrays, flags, message):
    monkeypatch.chdir(tmp_path)
    for name, array in arrays.items():
        if array is None:
            Path(name).write_bytes(b"")
        else:
            np.save(name, array)
    _fails(capsys, ["run", str(program), *flags], message)


def test_a_reproducer_line_that_is_not_json_is_one_message(capsys, tmp_path, program):
    path = tmp_path / "r.imcir"
    path.write_text('// imcc-reproducer: --passes "canon\\xicalize"\n' + program.read_text())
    shutil.copy(program.with_suffix(".npz"), path.with_suffix(".npz"))
    _fails(
        capsys,
        ["opt", str(path), "--run-reproducer"],
        "r.imcir:1:36: the recorded pipeline is not a JSON string (Invalid \\escape)",
    )


# --- outputs that collide, empty paths, a failing compile keeps the old program ---------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            [
                "compile",
                "digits-cnn",
                "--target",
                "isaac",
                "-o",
                "same.imcir",
                "--report",
                "same.imcir",
            ],
            "--report same.imcir and -o same.imcir name the same file",
        ),
        (
            ["compile", "digits-cnn", "--target", "isaac", "-o", "a.imcir", "--report", "a.npz"],
            "--report a.npz and the weights of -o a.imcir a.npz name the same file",
        ),
        (
            ["compile", "digits-cnn", "--target", "isaac", "-o", "y.npz"],
            "-o y.npz: a program's weights go beside it in y.npz, the same file",
        ),
        (["export-qdq", "{program}", "-o", "{program}"], "would overwrite the input"),
        (["opt", "{program}", "-o", "{program}"], "would overwrite the input"),
        (["compile", "digits-cnn", "--report", ""], "cannot write --report '': the path is empty"),
        (["compile", "digits-cnn", "-o", ""], "cannot write -o '': the path is empty"),
        (
            ["compile", "digits-cnn", "--target", "isaac", "--dump-ir-dir", ""],
            "cannot write --dump-ir-dir '': the path is empty",
        ),
        (
            ["search", "digits-cnn", "--target", "isaac", "--data", "digits", "--out", ""],
            "cannot write --out '': the path is empty",
        ),
        (["compile", ""], "no model given"),
        (
            ["compile", "digits-cnn", "--target", "isaac", "--batch", "2"],
            "has a fixed batch of 1: --batch 2 cannot change it",
        ),
        (
            ["compile", "digits-cnn", "--target", "isaac", "--passes", "select-adc"],
            "layer 0 (/features/features.0/Conv) is not quantized",
        ),
    ],
)
def test_colliding_or_empty_outputs_and_bad_compiles(
    capsys, tmp_path, monkeypatch, program, argv, message
):
    monkeypatch.chdir(tmp_path)
    copy = tmp_path / "p.imcir"
    shutil.copy(program, copy)
    shutil.copy(program.with_suffix(".npz"), copy.with_suffix(".npz"))
    before = copy.read_bytes()
    _fails(capsys, [a.replace("{program}", str(copy)) for a in argv], message)
    assert copy.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.imcir", "p.npz"]  # nothing stray


def test_slices_the_drivers_do_not_offer_are_refused_at_compile(capsys, tmp_path):
    from imcc.frontend.hw import builtin_path

    text = builtin_path("isaac").read_text()
    assert "bits_per_cycle = [1]" in text
    target = tmp_path / "t.hw"
    target.write_text(text.replace("bits_per_cycle = [1]", "bits_per_cycle = [3]"))
    _fails(
        capsys,
        ["compile", "digits-cnn", "--target", str(target)],  # 8 bits: 3, 3 and 2
        "input slice width 2 is not offered by the target",
    )


def test_a_compile_that_fails_keeps_the_earlier_program(capsys, tmp_path, program):
    kept = tmp_path / "keep.imcir"
    kept.write_text("precious\n")
    _fails(
        capsys,
        [
            "compile",
            "digits-cnn",
            "--target",
            "isaac",
            "-o",
            str(kept),
            "--simulate",
            f"npz:{tmp_path / 'missing.npz'}",
        ],
        "missing.npz",
    )
    assert kept.read_text() == "precious\n" and not kept.with_suffix(".npz").exists()


def test_running_out_of_memory_is_one_message(capsys, monkeypatch):
    """A mutated ONNX batch of 10^6 made quantize's calibration ask numpy for 17 GiB: the
    MemoryError was reported as a crash of the pass (exit 1)."""
    import imcc.passes.quantize

    def huge(*args, **kwargs):
        raise MemoryError("Unable to allocate 17.2 GiB for an array")

    monkeypatch.setattr(imcc.passes.quantize, "collect", huge)
    _fails(
        capsys,
        ["compile", "digits-cnn", "--target", "isaac"],
        "ran out of memory: Unable to allocate 17.2 GiB",
        "smaller --batch",
    )
