"""The command line: exit codes, exact messages, byte-for-byte `opt`, dumps that parse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imcc import cli
from imcc.ir import DType, GraphBuilder, TensorType
from imcc.ir.io import load_program, save_program

EXAMPLES = Path(__file__).parent.parent / "examples"
FILECHECK = Path(__file__).parent / "filecheck"


def imcc(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `imcc ARGV` in-process; return exit status, stdout and stderr."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def program(tmp_path: Path) -> Path:
    """A canonical program with blob weights beside it: conv, batch_norm, relu, linear."""
    rng = np.random.default_rng(0)
    b = GraphBuilder("net")
    x = b.add_input("x", TensorType((1, 2, 4, 4), DType.F32))
    w = b.add_constant(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "w")
    bn = [
        b.add_constant(a.astype(np.float32), n)
        for n, a in [
            ("s", rng.uniform(0.5, 2, 3)),
            ("t", rng.standard_normal(3)),
            ("m", rng.standard_normal(3)),
            ("v", rng.uniform(0.5, 2, 3)),
        ]
    ]
    (c,) = b.add_node(
        "conv",
        [x, w],
        {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1]},
        name="Conv_0",
    )
    (y,) = b.add_node("batch_norm", [c, *bn])
    (r,) = b.add_node("relu", [y])
    (f,) = b.add_node("reshape", [r], {"shape": [1, 48]})
    lw = b.add_constant(rng.standard_normal((48, 5)).astype(np.float32), "lw")
    (out,) = b.add_node("linear", [f, lw], hint="logits")
    path = tmp_path / "net.imcir"
    save_program(b.build([out]), path)
    return path


# -- usage errors: one message, a hint, exit 2 ---------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            (),
            "error: the following arguments are required: COMMAND\n"
            "hint: `imcc --help` shows the usage\n",
        ),
        (
            ("frobnicate",),
            "error: argument COMMAND: invalid choice: 'frobnicate' (choose from "
            "compile, opt, cost, simulate, export-qdq, run, search, finetune, passes, "
            "ops, targets)\n"
            "hint: `imcc --help` shows the usage\n",
        ),
        (
            ("opt",),
            "error: the following arguments are required: IN.imcir\n"
            "hint: `imcc opt --help` shows the usage\n",
        ),
        (
            ("opt", "x.imcir", "--bogus"),
            "error: unrecognized arguments: --bogus\nhint: `imcc opt --help` shows the usage\n",
        ),
        (
            ("compile", "m.onnx", "--batch", "two"),
            "error: argument --batch: invalid int value: 'two'\n"
            "hint: `imcc compile --help` shows the usage\n",
        ),
        (
            ("opt", "missing.imcir"),
            "error: cannot read missing.imcir: No such file or directory\n"
            "hint: give an .imcir program (`imcc compile M --target T -o P.imcir` writes one)\n",
        ),
        (
            ("compile", "m.onnx", "--target", "nosuch"),
            "error: no target named 'nosuch'\n"
            "hint: built-in targets: isaac, xpert, raella, sotmtj, stox, hybrid, neurosim-rram22, "
            "neurosim-rram22-32 (`imcc targets` lists them), or the path of a .hw file\n",
        ),
        (
            ("run", "x.imcir", "--check-ort"),
            "error: --check-ort needs an .onnx model\nhint: drop --check-ort\n",
        ),
    ],
)
def test_usage_errors(capsys, argv: tuple[str, ...], message: str) -> None:
    assert imcc(capsys, *argv) == (2, "", message)


def test_bad_pipeline_points_at_the_column(capsys, program: Path) -> None:
    code, out, err = imcc(capsys, "opt", program, "--passes", "canonicalize,fold-batchnrm")
    assert (code, out) == (2, "")
    assert err == (
        "--passes:1:14: error: unknown pass 'fold-batchnrm'\n"
        "canonicalize,fold-batchnrm\n"
        "             ^\n"
        "hint: did you mean fold-batchnorm?\n"
    )


def test_unknown_pass_in_print_flag(capsys, program: Path) -> None:
    assert imcc(capsys, "opt", program, "--print-ir-after=canonicalise") == (
        2,
        "",
        "error: --print-ir-after: unknown pass 'canonicalise'\nhint: did you mean canonicalize?\n",
    )


def test_parse_error_in_program_has_file_line_column(capsys, tmp_path: Path) -> None:
    path = tmp_path / "bad.imcir"
    path.write_text("graph @g(%x: f32[2]) {\n  %y = relu(%z) : f32[2]\n  return %y\n}\n")
    assert imcc(capsys, "opt", path) == (
        2,
        "",
        (
            f"{path}:2:13: error: use of undefined value %z\n"
            "  %y = relu(%z) : f32[2]\n"
            "            ^\n"
            "hint: values must be defined before use\n"
        ),
    )


def test_reproducer_flag_needs_a_reproducer(capsys, program: Path) -> None:
    code, _, err = imcc(capsys, "opt", program, "--run-reproducer")
    assert code == 2
    assert err.startswith(
        f"error: {program} is not a reproducer: its first line is not "
        '`// imcc-reproducer: --passes "PIPELINE"`\n'
    )


# -- opt -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(FILECHECK.glob("*.imcir")), ids=lambda p: p.stem)
def test_opt_with_empty_pipeline_is_byte_for_byte(capsys, tmp_path: Path, path: Path) -> None:
    canonical = tmp_path / "canonical.imcir"
    assert imcc(capsys, "opt", path, "-o", canonical)[0] == 0
    code, out, err = imcc(capsys, "opt", canonical)
    assert (code, err) == (0, "")
    assert out == canonical.read_text()


def test_opt_byte_for_byte_with_weights(capsys, program: Path) -> None:
    code, out, _ = imcc(capsys, "opt", program)
    assert code == 0 and out == program.read_text()


def test_opt_writes_program_and_weights(capsys, program: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "folded.imcir"
    assert imcc(capsys, "opt", program, "--passes", "fold-batchnorm,canonicalize", "-o", out) == (
        0,
        "",
        "",
    )
    graph = load_program(out)
    assert [n.op for n in graph.nodes] == ["conv", "relu", "reshape", "linear"]
    assert out.with_suffix(".npz").exists()
    x = {"x": np.random.default_rng(2).standard_normal((1, 2, 4, 4)).astype(np.float32)}
    from imcc.backend.reference import run_graph

    np.testing.assert_allclose(
        run_graph(graph, x)["logits"],
        run_graph(load_program(program), x)["logits"],
        rtol=1e-4,
        atol=1e-4,
    )


def test_dump_ir_dir_files_each_parse(capsys, program: Path, tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    pipeline = "canonicalize,fold-constants,fold-batchnorm,canonicalize"
    assert imcc(capsys, "opt", program, "--passes", pipeline, "--dump-ir-dir", dump)[0] == 0
    files = sorted(dump.glob("*.imcir"))
    assert [f.name for f in files] == [
        "00-input.imcir",
        "01-canonicalize.imcir",
        "02-fold-constants.imcir",
        "03-fold-batchnorm.imcir",
        "04-canonicalize.imcir",
    ]
    for f in files:
        graph = load_program(f)  # finds dump/weights.npz
        assert all(c.data is not None for c in graph.constants.values())


def test_instrument_flags_write_to_stderr(capsys, program: Path) -> None:
    code, out, err = imcc(
        capsys,
        "opt",
        program,
        "--passes",
        "fold-batchnorm,canonicalize",
        "--print-ir-after-change",
        "--time-passes",
    )
    assert code == 0 and out.startswith("graph @net")
    assert "// -----// IR Dump After fold-batchnorm //----- //" in err
    assert "IR Dump After canonicalize" not in err  # nothing left to change
    assert "===- pass timing (wall clock) -===" in err


# -- listings ------------------------------------------------------------------------------


def test_listings(capsys) -> None:
    code, out, _ = imcc(capsys, "passes")
    assert code == 0 and out.startswith("allocate-samples\n    Assign MTJ sample counts per layer")
    assert "fold-batchnorm\n    Fold each batch_norm" in out
    code, out, _ = imcc(capsys, "ops")
    assert code == 0
    assert (
        "conv(x, w, b?) {strides: ints, pads: ints, dilations: ints, group: int = 1, "
        "weights: struct?, centers: ints?, tiling: struct?, input: struct?, column_share: "
        "int?, converter: struct?, ps_scale: floats?, ps_offset: floats?, full_scale: "
        "int?, profile: struct?, placement: struct?}\n"
    ) in out
    code, out, _ = imcc(capsys, "targets")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == [
        "isaac",
        "xpert",
        "raella",
        "sotmtj",
        "stox",
        "hybrid",
        "neurosim-rram22",
        "neurosim-rram22-32",
    ]


# -- run -----------------------------------------------------------------------------------


def test_run_program_prints_a_summary_and_saves_outputs(
    capsys, program: Path, tmp_path: Path
) -> None:
    x = np.random.default_rng(3).standard_normal((1, 2, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "feeds.npz", x=x)
    code, out, _ = imcc(
        capsys, "run", program, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npz"
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("%logits: f32[1,5]  min ")
    assert lines[1].startswith("  argmax: [") and lines[2].startswith("  top values (sample 0): ")
    saved = np.load(tmp_path / "y.npz")["logits"]
    assert f"argmax: [{int(saved.argmax())}]" in out
    assert imcc(capsys, "run", program, "--input", f"x={tmp_path / 'x.npy'}")[1] == out
    assert imcc(capsys, "run", program, "--input", tmp_path / "feeds.npz")[1] == out
    assert imcc(capsys, "run", program, "--input", f"y={tmp_path / 'x.npy'}") == (
        2,
        "",
        "error: --input: the graph has no input 'y'\nhint: graph inputs: x\n",
    )
    assert imcc(capsys, "run", program) == (
        2,
        "",
        "error: no --input for graph input 'x'\nhint: pass --input x=FILE.npy\n",
    )


# -- ONNX models (need the frontend) -------------------------------------------------------


def test_compile_and_run_the_example_model(capsys, tmp_path: Path) -> None:
    pytest.importorskip("imcc.frontend.onnx")
    model = EXAMPLES / "digits_cnn.onnx"
    if not model.exists():
        pytest.skip("example model not built")
    out = tmp_path / "digits.imcir"
    assert imcc(capsys, "compile", model, "-o", out)[0] == 0
    assert "batch_norm" not in out.read_text()
    data = np.load(EXAMPLES / "digits_test.npz")
    np.save(tmp_path / "x.npy", data["image"][:8])
    code, text, _ = imcc(capsys, "run", model, "--input", tmp_path / "x.npy", "--check-ort")
    assert code == 0
    argmax = next(line for line in text.splitlines() if line.startswith("  argmax:"))
    predicted = [int(v) for v in argmax.split("[")[1].rstrip("]").split(",")]
    assert np.mean(np.array(predicted) == data["label"][:8]) >= 0.75
    error = float(text.rsplit("max relative error ", 1)[1])
    assert error < 1e-5


def test_console_entry_point_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "imcc", "opt", "missing.imcir"], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "error: cannot read missing.imcir: No such file or directory\n"
        "hint: give an .imcir program (`imcc compile M --target T -o P.imcir` writes one)\n"
    )


def test_compile_of_a_model_with_an_unsupported_op_exits_2_listing_it(capsys):
    import onnx

    model = (
        Path(onnx.__file__).parent
        / "backend"
        / "test"
        / "data"
        / "pytorch-converted"
        / "test_GLU"
        / "model.onnx"
    )
    code, _, err = imcc(capsys, "compile", model)
    assert code == 2
    assert err.startswith(
        f"error: {model}: unsupported ONNX ops: Split (nodes: Split_0)\n"
        "hint: imcc translates Abs, Add, AveragePool, "
    )
    assert "Traceback" not in err and err.count("error:") == 1
