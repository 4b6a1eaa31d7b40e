"""Fuzzing the exit-2 contract: mutated inputs of every kind, random flag combinations.

Every run of `imcc` on a mutated `.hw` target, `.imcir` program, ONNX protobuf, `.npz` weight
side file or data set, or on a random command line, must end in one of two ways:

- exit 0, and every figure of the cost report finite and positive (a mutation that keeps the
  input legal must still give a sane answer);
- exit 2 with one message (`error: ...` or `FILE:LINE:COL: error: ...`), never an exception out
  of `imcc.cli.main` (a traceback for the user), never exit 1 (a crash reported as a bug).

The number of examples per test is `pytest --fuzz-examples N` (default 12, which keeps the whole
file well under two minutes on two cores; run e.g. 500 locally before a release). Examples are
drawn from a fixed seed per test unless `--fuzz-seed random` is given, so CI is repeatable.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from imcc.cli import main
from imcc.frontend.hw import builtin_path

ROOT = Path(__file__).resolve().parent.parent
DIGITS_ONNX = ROOT / "examples" / "digits_cnn.onnx"
MESSAGE = re.compile(r"^(error: |\S.*:\d+:\d+: error: )")
NUMBER = re.compile(r"(?<![\w.])-?\d+(\.\d+)?([eE][-+]?\d+)?")
ODD_NUMBERS = [
    "0",
    "-1",
    "-0.5",
    "1e999",
    "-1e999",
    "nan",
    "inf",
    "1e-300",
    "4294967296",
    "1e12",
    "0.000001",
    "3",
    "1000000000",
]
ODD_TEXT = [
    "",
    " ",
    "\t",
    "\r",
    "\x00",
    "\\",
    '"',
    "{",
    "}",
    "[",
    "]",
    "=",
    ",",
    "%",
    "@",
    "\u00e9",
    "\ufeff",
    "->",
    ":",
    "#",
    "0x1f",
    "-",
    "999999999999999999999",
]


@pytest.fixture
def fuzz(request: pytest.FixtureRequest) -> Callable:
    """Return a decorator that turns a check into a hypothesis run with the suite's budget."""
    examples = request.config.getoption("--fuzz-examples")
    fixed = request.config.getoption("--fuzz-seed") != "random"

    def wrap(check: Callable) -> Callable:
        check = settings(  # the example database (.hypothesis/) replays a failure next run
            max_examples=examples,
            deadline=None,
            print_blob=True,  # and the report carries @reproduce_failure to replay it anywhere
            suppress_health_check=list(HealthCheck),
        )(check)
        return seed(zlib.crc32(request.node.name.encode()))(check) if fixed else check

    return wrap


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    """A fresh folder, also the working directory: relative outputs of a fuzzed command line
    land there, never in the checkout (where a file named `digits-cnn` would shadow the
    built-in example)."""
    folder = Path(tempfile.mkdtemp(prefix="imcc-fuzz-"))
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(previous)
        shutil.rmtree(folder, ignore_errors=True)


def run_imcc(argv: list[str]) -> tuple[int, str, str]:
    """Run imcc in-process and enforce the contract; return status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])  # an exception here is a traceback for a user
    stderr = err.getvalue()
    assert status in (0, 2), f"imcc {' '.join(map(str, argv))} exited {status}:\n{stderr}"
    if status == 2:
        lines = [line for line in stderr.splitlines() if MESSAGE.match(line)]
        assert len(lines) == 1, f"expected one error message:\n{stderr}"
        assert "Traceback" not in stderr, stderr
    return status, out.getvalue(), stderr


def assert_sane_report(record: dict) -> None:
    """Every total of a cost report is a finite, positive number."""
    for key in ("energy_j", "latency_s", "area_mm2", "edap", "tops_per_w", "tops_per_mm2"):
        value = record[key]
        assert isinstance(value, float | int) and math.isfinite(value) and value > 0, (key, value)


# --- generic mutations ------------------------------------------------------------------------


@st.composite
def text_mutations(draw: st.DrawFn, text: str) -> str:
    """Apply one to three edits: a number swapped for an odd one, a line dropped, doubled or
    swapped, odd characters inserted, a word changed, or the text cut short."""
    for _ in range(draw(st.integers(1, 3))):
        lines = text.splitlines(keepends=True)
        kind = draw(
            st.sampled_from(
                ["number", "number", "drop", "double", "swap", "insert", "word", "truncate"]
            )
        )
        if kind == "number" and NUMBER.search(text):
            found = list(NUMBER.finditer(text))
            match = found[draw(st.integers(0, len(found) - 1))]
            value = draw(st.sampled_from(ODD_NUMBERS) | st.integers(-(10**6), 10**6).map(str))
            text = text[: match.start()] + value + text[match.end() :]
        elif kind in ("drop", "double", "swap") and lines:
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if kind == "drop":
                del lines[i]
            elif kind == "double":
                lines.insert(i, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "".join(lines)
        elif kind == "insert":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.sampled_from(ODD_TEXT) | st.text(max_size=4)) + text[at:]
        elif kind == "word":
            words = list(re.finditer(r"[A-Za-z_][\w-]*", text))
            if words:
                match = words[draw(st.integers(0, len(words) - 1))]
                new = draw(
                    st.sampled_from(
                        [
                            "x",
                            "",
                            "sar",
                            "mtj",
                            "offset",
                            "rows",
                            "i8",
                            "conv",
                            match.group()[:-1] or "y",
                            match.group() + "s",
                        ]
                    )
                )
                text = text[: match.start()] + new + text[match.end() :]
        else:
            text = text[: draw(st.integers(0, len(text)))]
    return text


@st.composite
def byte_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """Truncate, flip bits, overwrite or insert bytes."""
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "flip", "overwrite", "insert"]))
        at = draw(st.integers(0, max(len(buffer) - 1, 0)))
        if kind == "truncate":
            del buffer[at:]
        elif kind == "flip" and buffer:
            buffer[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            buffer[at : at + len(chunk)] = chunk
        else:
            buffer[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(buffer)


# --- shared inputs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits CNN mapped for isaac: `digits.imcir` and its weights `digits.npz`."""
    path = tmp_path_factory.mktemp("fuzz-program") / "digits.imcir"
    status, _, err = run_imcc(["compile", "digits-cnn", "--target", "isaac", "-o", path])
    assert status == 0, err
    return path


def _copy_program(program: Path, folder: Path) -> Path:
    shutil.copy(program, folder / program.name)
    shutil.copy(program.with_suffix(".npz"), folder / program.with_suffix(".npz").name)
    return folder / program.name


# --- .hw targets ------------------------------------------------------------------------------

HW_TARGETS = ["isaac", "sotmtj", "xpert"]


def test_fuzz_hw_targets(fuzz):
    texts = {name: builtin_path(name).read_text() for name in HW_TARGETS}

    @fuzz
    @given(st.sampled_from(HW_TARGETS).flatmap(lambda n: text_mutations(texts[n])))
    def check(text: str) -> None:
        with _workdir() as folder:
            (folder / "t.hw").write_text(text, encoding="utf-8")
            status, _, _ = run_imcc(
                [
                    "compile",
                    "digits-cnn",
                    "--target",
                    folder / "t.hw",
                    "--report",
                    folder / "r.json",
                ]
            )
            if status == 0:
                assert_sane_report(json.loads((folder / "r.json").read_text()))

    check()


# --- .imcir programs --------------------------------------------------------------------------


def test_fuzz_imcir_programs(fuzz, program):
    source = program.read_text()

    @fuzz
    @given(text_mutations(source), st.sampled_from(["cost", "opt", "export-qdq"]))
    def check(text: str, command: str) -> None:
        with _workdir() as folder:
            path = _copy_program(program, folder)
            path.write_text(text, encoding="utf-8")
            argv = {
                "cost": ["cost", path, "--json"],
                "opt": ["opt", path],
                "export-qdq": ["export-qdq", path, "-o", folder / "q.onnx"],
            }[command]
            status, out, _ = run_imcc(argv)
            if status == 0 and command == "cost":
                assert_sane_report(json.loads(out))

    check()


def test_fuzz_imcir_bytes(fuzz, program):
    source = program.read_bytes()

    @fuzz
    @given(byte_mutations(source))
    def check(data: bytes) -> None:
        with _workdir() as folder:
            path = _copy_program(program, folder)
            path.write_bytes(data)
            status, out, _ = run_imcc(["cost", path, "--json"])
            if status == 0:
                assert_sane_report(json.loads(out))

    check()


# --- .npz weight side files -------------------------------------------------------------------


@st.composite
def weight_mutations(draw: st.DrawFn, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop, add, rename, retype, reshape, empty or poison (NaN / inf) one or two arrays."""
    arrays = dict(arrays)
    for _ in range(draw(st.integers(1, 2))):
        key = draw(st.sampled_from(sorted(arrays))) if arrays else "w"
        kind = draw(
            st.sampled_from(
                ["drop", "add", "rename", "dtype", "reshape", "empty", "nan", "inf", "scale"]
            )
        )
        if kind == "drop":
            arrays.pop(key, None)
        elif kind == "add":
            arrays["extra"] = np.zeros(3, np.float32)
        elif kind == "rename" and key in arrays:
            arrays[key + "x"] = arrays.pop(key)
        elif kind == "dtype" and key in arrays:
            dtype = draw(st.sampled_from([np.float64, np.int8, np.int64, np.bool_, np.float16]))
            arrays[key] = arrays[key].astype(dtype)
        elif kind == "reshape" and key in arrays:
            arrays[key] = arrays[key].reshape(-1)[: max(arrays[key].size - 1, 0)]
        elif kind == "empty" and key in arrays:
            arrays[key] = np.zeros((0,), arrays[key].dtype)
        elif kind in ("nan", "inf") and key in arrays and arrays[key].dtype.kind == "f":
            poisoned = arrays[key].copy().reshape(-1)
            if poisoned.size:
                poisoned[draw(st.integers(0, poisoned.size - 1))] = getattr(np, kind)
            arrays[key] = poisoned.reshape(arrays[key].shape)
        elif kind == "scale" and key in arrays and arrays[key].dtype.kind == "f":
            arrays[key] = arrays[key] * np.float32(draw(st.sampled_from([0.0, -1.0, 1e30])))
    return arrays


def test_fuzz_weight_files(fuzz, program):
    with np.load(program.with_suffix(".npz")) as loaded:
        arrays = {key: loaded[key] for key in loaded.files}
    raw = program.with_suffix(".npz").read_bytes()

    @fuzz
    @given(
        st.one_of(weight_mutations(arrays), byte_mutations(raw)),
        st.sampled_from(["cost", "simulate", "opt"]),
    )
    def check(mutated: dict[str, np.ndarray] | bytes, command: str) -> None:
        with _workdir() as folder:
            path = _copy_program(program, folder)
            weights = path.with_suffix(".npz")
            if isinstance(mutated, bytes):
                weights.write_bytes(mutated)
            else:
                np.savez(weights, **mutated)
            argv = {
                "cost": ["cost", path, "--json"],
                "opt": ["opt", path, "-o", folder / "o"],
                "simulate": ["simulate", path, "--data", "digits", "--limit", "8", "--json"],
            }[command]
            status, out, _ = run_imcc(argv)
            if status == 0 and command == "cost":
                assert_sane_report(json.loads(out))

    check()


# --- ONNX models ------------------------------------------------------------------------------


@st.composite
def onnx_mutations(draw: st.DrawFn, model: onnx.ModelProto) -> bytes:
    """Change a model through its protobuf: dims, attributes, op types, nodes, initializers."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(
                [
                    "dim",
                    "attribute",
                    "op",
                    "drop-node",
                    "drop-init",
                    "poison",
                    "input-name",
                    "opset",
                ]
            )
        )
        odd = draw(st.sampled_from([0, -1, 1, 2, 3, 7, 10**6, 2**40, -(2**40)]))
        if kind == "dim" and graph.input:
            dims = graph.input[0].type.tensor_type.shape.dim
            if dims:
                dims[draw(st.integers(0, len(dims) - 1))].dim_value = odd
        elif kind == "attribute" and graph.node:
            node = graph.node[draw(st.integers(0, len(graph.node) - 1))]
            if node.attribute:
                attribute = node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
                if attribute.ints:
                    attribute.ints[draw(st.integers(0, len(attribute.ints) - 1))] = odd
                elif attribute.type == onnx.AttributeProto.INT:
                    attribute.i = odd
                elif attribute.type == onnx.AttributeProto.FLOAT:
                    attribute.f = float(draw(st.sampled_from([0.0, -1.0, math.inf, math.nan])))
        elif kind == "op" and graph.node:
            node = graph.node[draw(st.integers(0, len(graph.node) - 1))]
            node.op_type = draw(
                st.sampled_from(
                    [
                        "Relu",
                        "Conv",
                        "Gemm",
                        "MatMul",
                        "Add",
                        "Softmax",
                        "Nope",
                        "MaxPool",
                        "Flatten",
                    ]
                )
            )
        elif kind == "drop-node" and graph.node:
            del graph.node[draw(st.integers(0, len(graph.node) - 1))]
        elif kind == "drop-init" and graph.initializer:
            del graph.initializer[draw(st.integers(0, len(graph.initializer) - 1))]
        elif kind == "poison" and graph.initializer:
            tensor = graph.initializer[draw(st.integers(0, len(graph.initializer) - 1))]
            values = onnx.numpy_helper.to_array(tensor).copy()
            if values.dtype.kind == "f" and values.size:
                values.reshape(-1)[0] = draw(st.sampled_from([math.nan, math.inf, 1e38]))
                tensor.CopyFrom(onnx.numpy_helper.from_array(values, tensor.name))
        elif kind == "input-name" and graph.node and graph.node[0].input:
            names = ["", "missing", graph.node[-1].output[0]]
            graph.node[0].input[0] = draw(st.sampled_from(names))
        elif kind == "opset" and model.opset_import:
            model.opset_import[0].version = draw(st.sampled_from([1, 6, 7, 99]))
    return model.SerializeToString()


def test_fuzz_onnx_models(fuzz):
    model = onnx.load(str(DIGITS_ONNX))
    raw = DIGITS_ONNX.read_bytes()

    @fuzz
    @given(st.one_of(onnx_mutations(model), byte_mutations(raw)), st.booleans())
    def check(data: bytes, mapped: bool) -> None:
        with _workdir() as folder:
            (folder / "m.onnx").write_bytes(data)
            argv = ["compile", folder / "m.onnx", "-o", folder / "m.imcir"]
            argv += ["--target", "isaac", "--report", folder / "r.json"] if mapped else []
            status, _, _ = run_imcc(argv)
            if status == 0 and mapped:
                assert_sane_report(json.loads((folder / "r.json").read_text()))

    check()


# --- data sets --------------------------------------------------------------------------------


@st.composite
def data_sets(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """`.npz` data sets around the digits CNN's [N,1,8,8] images and [N] labels."""
    count = draw(st.sampled_from([0, 1, 3, 8]))
    shape = draw(
        st.sampled_from(
            [
                (count, 1, 8, 8),
                (count, 8, 8),
                (count, 1, 8, 9),
                (count, 3, 8, 8),
                (count,),
                (count, 1, 8, 8, 1),
            ]
        )
    )
    dtype = draw(st.sampled_from([np.float32, np.float64, np.uint8, np.int64, np.bool_]))
    images = np.random.default_rng(draw(st.integers(0, 9))).random(shape).astype(dtype)
    if dtype in (np.float32, np.float64) and images.size and draw(st.booleans()):
        images.reshape(-1)[0] = draw(st.sampled_from([math.nan, math.inf]))
    labels = draw(
        st.sampled_from(
            [
                np.zeros(count, np.int64),
                np.full(count, 9, np.int64),
                np.full(count, 10, np.int64),
                np.full(count, -1, np.int64),
                np.zeros((count, 1), np.int64),
                np.zeros(max(count - 1, 0), np.int64),
                np.zeros(count, np.float32),
            ]
        )
    )
    arrays = {draw(st.sampled_from(["image", "x", "images", "img"])): images}
    if draw(st.booleans()):
        arrays[draw(st.sampled_from(["label", "y", "labels"]))] = labels
    return arrays


def test_fuzz_data_sets(fuzz, program):
    @fuzz
    @given(data_sets(), st.sampled_from([None, 1, 5, 64]), st.sampled_from(["npz", "zip"]))
    def check(arrays: dict[str, np.ndarray], limit: int | None, form: str) -> None:
        with _workdir() as folder:
            data = folder / "d.npz"
            np.savez(data, **arrays)
            if form == "zip":  # a valid zip archive that is not an npz of arrays
                with zipfile.ZipFile(data, "a") as archive:
                    archive.writestr("notes.txt", "hello")
            argv = ["simulate", program, "--data", f"npz:{data}", "--json"]
            argv += ["--limit", str(limit)] if limit else []
            status, out, _ = run_imcc(argv)
            if status == 0:
                record = json.loads(out)
                accuracy = record["accuracy"]
                assert 0.0 <= accuracy <= 1.0
                assert record["samples"] == min(limit or 10**9, len(next(iter(arrays.values()))))

    check()


# --- random command lines ---------------------------------------------------------------------

VALUES = [
    "-1",
    "0",
    "1",
    "3",
    "",
    "x",
    "nan",
    "1e999",
    "/dev/full",
    "{dir}",
    "{dir}/o",
    "{dir}/missing/o",
    "{program}",
    "digits",
    "digits-cnn",
    "isaac",
    "sotmtj",
    "nosuch",
    "npz:{dir}/none.npz",
    "canonicalize",
    "quantize{bits=3}",
    "tile-crossbar{rows=-1}",
]
FLAGS = {
    "compile": [
        "--target",
        "-o",
        "--batch",
        "--calib",
        "--report",
        "--limit",
        "--sim-batch",
        "--passes",
        "--seed",
        "--dump-ir-dir",
        "--print-ir-after",
        "--time-passes",
        "--no-verify",
        "--stats",
        "--bogus",
    ],
    "cost": ["--target", "--weights", "--json", "--report", "--bogus"],
    "simulate": [
        "--data",
        "--limit",
        "--batch",
        "--seed",
        "--target",
        "--model",
        "--weights",
        "--json",
    ],
    "opt": [
        "--passes",
        "-o",
        "--weights",
        "--target",
        "--calib",
        "--run-reproducer",
        "--print-ir-after-all",
    ],
    "run": ["--input", "-o", "--weights", "--batch", "--check-ort"],
    "export-qdq": ["-o", "--weights"],
}
POSITIONAL = {
    "compile": ["digits-cnn", "{program}", "", "nosuch.onnx", "{dir}"],
    "cost": ["{program}", "{dir}", "nosuch.imcir", str(DIGITS_ONNX)],
    "simulate": ["{program}", str(DIGITS_ONNX)],
    "opt": ["{program}", "{dir}"],
    "run": ["digits-cnn", "{program}"],
    "export-qdq": ["{program}"],
}
SWITCHES = {
    "--json",
    "--time-passes",
    "--no-verify",
    "--stats",
    "--check-ort",
    "--run-reproducer",
    "--print-ir-after-all",
}
SLOW = {"--calib", "--data"}  # only with values that fail fast or a small data set


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(sorted(FLAGS)))
    argv = [command]
    if draw(st.integers(0, 9)):
        argv.append(draw(st.sampled_from(POSITIONAL[command])))
    for flag in draw(st.lists(st.sampled_from(FLAGS[command]), max_size=4)):
        argv.append(flag)
        if flag not in SWITCHES:
            argv.append(draw(st.sampled_from(VALUES)))
    if command == "simulate":  # keep the simulated set small: the fuzz tests the contract
        argv += ["--limit", draw(st.sampled_from(["4", "0", "-3"]))]
    return argv


def test_fuzz_command_lines(fuzz, program):
    @fuzz
    @given(command_lines())
    def check(argv: list[str]) -> None:
        with _workdir() as folder:
            path = _copy_program(program, folder)
            argv = [a.replace("{dir}", str(folder)).replace("{program}", str(path)) for a in argv]
            status, out, _ = run_imcc(argv)
            if status == 0 and argv[0] == "cost" and "--json" in argv:
                assert_sane_report(json.loads(out))

    check()
