"""Hostile `.imcir` programs and `.npz` weight files: one message, exit 2, never a traceback.

Each class of failure a hostile-user sweep found has a test here: weight files that priced to
silently different numbers, weight files that crashed `np.load`, quoted names with tabs or bad
escapes, files that are not UTF-8 or are ONNX models, verifier failures in a user's file (which
exited 1 without a place), and text that made the parser raise something other than UserError.
"""

from __future__ import annotations

import io
import random
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from imcc import cli
from imcc.errors import MissingWeightsError, ProgramError, UserError
from imcc.ir import DType, GraphBuilder, TensorType
from imcc.ir.io import WEIGHTS_REQUIRED, load_program, parse_program, save_program
from imcc.ir.weights import digest

EXAMPLES = Path(__file__).parent.parent / "examples"
LOCATION = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): error: ")


def imcc(capsys, *argv: object) -> tuple[int, str, str]:
    """Run `imcc ARGV` in-process; return exit status, stdout and stderr."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def located(err: str, path: Path) -> tuple[int, int]:
    """Check one rendered SourceError at `path`; return its line and column."""
    assert "Traceback" not in err
    first, _source, caret, *_ = err.split("\n")
    found = LOCATION.match(first)
    assert found is not None and found["file"] == str(path), first
    assert caret.strip() == "^", err
    return int(found["line"]), int(found["col"])


@pytest.fixture(scope="module")
def mapped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits-cnn compiled for ISAAC: `d.imcir` with its blob weights in `d.npz`."""
    path = tmp_path_factory.mktemp("mapped") / "d.imcir"
    model = EXAMPLES / "digits_cnn.onnx"  # a path: a stray file named digits-cnn in the cwd wins
    assert (
        cli.main(["compile", str(model), "--target", "isaac", "--calib", "digits", "-o", str(path)])
        == 0
    )
    return path


def copy_program(mapped: Path, folder: Path, text: str | None = None) -> Path:
    """Copy the program text (optionally replaced) into `folder`, without its weights."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "d.imcir"
    path.write_text(mapped.read_text() if text is None else text, encoding="utf-8")
    return path


def blobs(mapped: Path) -> dict[str, np.ndarray]:
    with np.load(mapped.with_suffix(".npz")) as data:
        return {k: data[k] for k in data.files}


# -- silent wrong numbers: the weight file must hold what the program references ----------


def _empty(mapped: Path, folder: Path) -> Path:
    np.savez(folder / "d.npz")
    return copy_program(mapped, folder)


def _missing_key(mapped: Path, folder: Path) -> Path:
    arrays = blobs(mapped)
    del arrays[sorted(arrays)[0]]
    np.savez(folder / "d.npz", **arrays)
    return copy_program(mapped, folder)


def _changed(mapped: Path, folder: Path) -> Path:
    arrays = blobs(mapped)
    key = sorted(arrays)[0]
    arrays[key] = arrays[key].copy()
    arrays[key].flat[0] += 1  # the same key, other content: a file edited after compiling
    np.savez(folder / "d.npz", **arrays)
    return copy_program(mapped, folder)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_empty, r"blob \w+ of %\S+ is not in the weight file \S+d\.npz \(3 blobs are missing\)"),
        (_missing_key, r"blob \w+ of %\S+ is not in the weight file \S+d\.npz$"),
        (
            _changed,
            r"blob (\w+) of %\S+ in \S+d\.npz has content digest \w+, not \1 \(the file "
            r"was changed or swapped\)",
        ),
    ],
    ids=["empty", "missing-key", "changed-content"],
)
def test_cost_refuses_weight_files_that_do_not_match(capsys, tmp_path, mapped, make, message):
    path = make(mapped, tmp_path)
    code, out, err = imcc(capsys, "cost", path)
    assert code == 2 and out == ""
    located(err, path)
    assert re.search(message, err.split("\n")[0]), err
    assert "blob<" in err.split("\n")[1]  # the caret line is the constant's definition
    assert err.rstrip().endswith("or pass --weights FILE.npz")
    assert imcc(capsys, "opt", path)[0] == 2  # opt checks a weight file it does not need


def test_nan_weights_are_refused(capsys, tmp_path):
    """A weight file whose digests all match but which holds NaN: every consumer would compute
    silently wrong numbers from it."""
    b = GraphBuilder("net")
    x = b.add_input("x", TensorType((1, 32), DType.F32))
    weight = np.linspace(-1, 1, 32 * 4, dtype=np.float32).reshape(32, 4)
    weight[5, 2] = np.nan
    (y,) = b.add_node("linear", [x, b.add_constant(weight, "w")], hint="y")
    path = tmp_path / "nan.imcir"
    save_program(b.build([y]), path)
    for argv in (("opt",), ("run", "--input", f"x={tmp_path / 'x.npy'}")):
        np.save(tmp_path / "x.npy", np.ones((1, 32), np.float32))
        code, out, err = imcc(capsys, argv[0], path, *argv[1:])
        assert code == 2 and out == ""
        assert located(err, path) == (2, 4)
        assert err.split("\n")[0].endswith(
            f"error: blob {digest(weight)} of %w in {tmp_path / 'nan.npz'} holds nan at index "
            "[5, 2] (weights must be finite)"
        )


def test_commands_that_compute_with_weights_refuse_a_program_without_them(tmp_path, mapped):
    path = copy_program(mapped, tmp_path)  # no d.npz, no weights.npz
    for command, required in WEIGHTS_REQUIRED.items():
        if required:
            with pytest.raises(MissingWeightsError) as info:
                load_program(path, command=command)
            assert info.value.exit_code == 2
            assert str(info.value).startswith(
                f"imcc {command} needs the weights of {path}, but "
                "there is no weight file beside it (d.npz or "
                "weights.npz; 3 blob(s), first %"
            )
            assert "--weights FILE.npz" in (info.value.hint or "")
        else:  # `opt` tiles and canonicalizes blob references without their data
            assert load_program(path, command=command).constants
    assert WEIGHTS_REQUIRED["cost"] and not WEIGHTS_REQUIRED["opt"]


def test_cost_command_refuses_a_program_without_weights(capsys, tmp_path, mapped):
    code, out, err = imcc(capsys, "cost", copy_program(mapped, tmp_path))
    assert code == 2 and out == "" and err.startswith("error: imcc cost needs the weights")


# -- damaged weight files: every way np.load fails is one message -------------------------


def _zip_with(name: str, payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, payload)
    return buffer.getvalue()


def _huge_header() -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)}
    )
    return _zip_with("k.npy", b"\x93NUMPY\x01\x00" + header.getvalue()[8:])


def _object_array() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{}, None], dtype=object), allow_pickle=True)
    return _zip_with("k.npy", buffer.getvalue())


def _bad_crc(good: bytes) -> bytes:
    data = bytearray(good)
    data[len(data) * 2 // 3] ^= 0xFF  # inside the last stored array (the largest)
    return bytes(data)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda good: b"", "is empty (0 bytes)"),
        (lambda good: good[: len(good) // 2], "is a damaged or truncated .npz archive (BadZipFile"),
        (lambda good: b"not weights\n", "is not an .npz archive"),
        (lambda good: b"\x80\x04\x95" + b"\x00" * 40, "is not an .npz archive"),  # a pickle
        (_bad_crc, "is damaged: array '"),
        (
            lambda good: _object_array(),
            "is damaged: array 'k' cannot be read (ValueError: it holds "
            "Python objects (pickled data), which are never loaded)",
        ),
        (
            lambda good: _huge_header(),
            "is damaged: array 'k' cannot be read (ValueError: its header "
            "declares float32[1000000000000], more than the",
        ),
        (
            lambda good: _zip_with("k.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'"),
            "is damaged: array 'k' cannot be read",
        ),
    ],
    ids=[
        "zero-bytes",
        "truncated",
        "text",
        "pickle",
        "bad-crc",
        "object-array",
        "huge-header",
        "bad-npy-header",
    ],
)
@pytest.mark.parametrize("command", ["cost", "opt", "run"])
def test_damaged_weight_file_is_one_message(capsys, tmp_path, mapped, make, message, command):
    path = copy_program(mapped, tmp_path)
    (tmp_path / "d.npz").write_bytes(make(mapped.with_suffix(".npz").read_bytes()))
    extra = ["--input", EXAMPLES / "digits_test.npz"] if command == "run" else []
    code, out, err = imcc(capsys, command, path, *extra)
    assert code == 2 and out == "" and "Traceback" not in err
    first, hint = err.rstrip("\n").split("\n")
    assert first.startswith(f"error: weight file {tmp_path / 'd.npz'} ") and message in first
    assert hint.startswith("hint: recompile the program")


# -- quoted names: control characters and escapes JSON refuses ----------------------------

GRAPH = "graph @a(%x: f32[1]) {{\n  %{name} = relu(%x) : f32[1]\n  return %{name}\n}}\n"


@pytest.mark.parametrize(
    ("name", "message", "column", "hint"),
    [
        ('"a\tb"', "a tab inside a quoted string", 6, "write it as the escape \\t"),
        ('"a\rb"', "a carriage return inside a quoted string", 6, "write it as the escape \\r"),
        (
            '"a\x01b"',
            "control character U+0001 inside a quoted string",
            6,
            "write it as the escape \\u0001",
        ),
        ('"a\\qb"', "bad escape '\\q' in a string", 6, "valid escapes: "),
        ('"a\\u12"', "bad escape '\\u' in a string", 6, "write \\u and four hex digits"),
        ('"a\\ud800"', "unpaired surrogate \\ud800 in a string", 4, "escape a character outside"),
    ],
    ids=["tab", "cr", "control", "bad-escape", "short-unicode", "surrogate"],
)
def test_bad_characters_in_quoted_names(capsys, tmp_path, name, message, column, hint):
    path = tmp_path / "q.imcir"
    path.write_bytes(GRAPH.format(name=name).encode("utf-8", "surrogatepass"))
    code, out, err = imcc(capsys, "opt", path)
    assert code == 2 and out == ""
    assert located(err, path) == (2, column)
    assert err.split("\n")[0].endswith(f"error: {message}")
    assert err.split("\n")[3].startswith(f"hint: {hint}")
    # what the printer writes for such names still reads back byte for byte
    path.write_text(GRAPH.format(name='"a\\tb\\r\\u00e9\\ud83d\\ude00"'), encoding="utf-8")
    code, out, _ = imcc(capsys, "opt", path)
    assert code == 0 and out == path.read_text()


# -- files that are not program text ------------------------------------------------------


def test_non_utf8_file_points_at_the_first_bad_byte(capsys, tmp_path):
    path = tmp_path / "latin.imcir"
    path.write_bytes(
        b'graph @a(%x: f32[1]) {\n  %y = relu(%x) : f32[1] loc("caf\xe9")\n  return %y\n}\n'
    )
    code, out, err = imcc(capsys, "opt", path)
    assert code == 2 and out == ""
    assert located(err, path) == (2, 34)
    assert err.split("\n")[0].endswith("error: not UTF-8 text: byte 0xe9 cannot be decoded")
    assert err.split("\n")[3] == "hint: .imcir programs are UTF-8 text; is this the right file?"


@pytest.mark.parametrize(
    "argv", [("opt",), ("simulate", "--data", "digits", "--target", "isaac"), ("cost",)]
)
def test_onnx_model_given_as_a_program(capsys, argv):
    model = EXAMPLES / "digits_cnn.onnx"
    code, out, err = imcc(capsys, argv[0], model, *argv[1:])
    assert code == 2 and out == ""
    assert err == (
        f"error: {model} looks like an ONNX model, not an .imcir program\n"
        f"hint: compile it to a program first: `imcc compile {model} --target T "
        "-o model.imcir`\n"
    )


# -- a user's file that fails verification is a user error at the node's line -------------


def test_verifier_failure_in_a_file_points_at_the_node(capsys, tmp_path):
    path = tmp_path / "v.imcir"
    path.write_text(
        "graph @a(%x: f32[1,1,4,4]) {\n  %r = relu(%x) : f32[1,1,4,4]\n"
        "  %y = max_pool(%r) {kernel = [2, 2], strides = [0, 0], pads = [0, 0, 0, 0],"
        " dilations = [1, 1]} : f32[1,1,2,2]\n  return %y\n}\n"
    )
    code, out, err = imcc(capsys, "opt", path)
    assert code == 2 and out == ""
    assert located(err, path) == (3, 4)
    assert err.split("\n")[0].endswith(
        "error: node #1 'max_pool' -> %y: 'max_pool' strides and dilations must be >= 1"
    )
    with pytest.raises(ProgramError) as info:  # still a VerificationError for library callers
        load_program(path)
    assert (info.value.line, info.value.exit_code) == (3, 2)


# -- arbitrary text: every failure is a UserError with a place ----------------------------

ONE = "graph @a(%x: f32[1,1,4,4]) {{\n  {body}\n  return %y\n}}\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "%y = max_pool(%x) {kernel = [2, 2], strides = [99999999999999999999, 2]} "
            ": f32[1,1,2,2]",
            "integer 99999999999999999999 does not fit in 64 bits",
        ),
        (
            "%y = reshape(%x) {shape = [1, 16]} : f32[1," + "9" * 5000 + "]",
            "dimension 999999999999999999999999... does not fit in 64 bits",
        ),
        (
            "%y = reshape(%x) {shape = [1, 16]} : f32[4294967296,4294967296]",
            "f32[4294967296,4294967296] has more than 2^63 elements",
        ),
        ("%y = relu(%x) : f32[1,-1,4,4]", "negative dimension -1 in a tensor type"),
        ("%y = leaky_relu(%x) {alpha = 1e999} : f32[1,1,4,4]", "1e999 is out of range"),
        (
            "%c = const bool[2] dense<[5, 7]>\n  %y = relu(%x) : f32[1,1,4,4]",
            "bool element must be true or false, not 5",
        ),
        (
            "%c = const i8[2] dense<[300, 7]>\n  %y = relu(%x) : f32[1,1,4,4]",
            "300 is out of range for i8 (-128..127)",
        ),
        (
            "%c = const f16[2] dense<[1e10, 7]>\n  %y = relu(%x) : f32[1,1,4,4]",
            "1e10 is out of range for f16",
        ),
        (
            "%y = leaky_relu(%x) {alpha = " + "[" * 3000 + "]" * 3000 + "} : f32[1,1,4,4]",
            "attribute value nested more than 32 deep",
        ),
    ],
    ids=[
        "int-attribute",
        "5000-digit-dimension",
        "2^64-elements",
        "negative-dimension",
        "float-overflow",
        "bool-element",
        "i8-element",
        "f16-element",
        "deep-nesting",
    ],
)
def test_hostile_numbers_are_parse_errors(capsys, tmp_path, body, message):
    path = tmp_path / "n.imcir"
    path.write_text(ONE.format(body=body), encoding="utf-8")
    code, out, err = imcc(capsys, "opt", path)
    assert code == 2 and out == ""
    located(err, path)
    assert err.split("\n")[0].endswith(f"error: {message}"), err.split("\n")[0][-200:]


def _mutate(text: str, rng: random.Random) -> str:
    """Delete, duplicate, swap or insert characters and lines, as a careless edit would."""
    pieces = [
        '"',
        "\\",
        "\t",
        "\r",
        "\x00",
        "\\q",
        "\\u12",
        "-1",
        "99999999999999999999",
        "1e999",
        "[" * 40,
        "{",
        "}",
        "%",
        "#",
        "<",
        ">",
        ",",
        "é",
        "true",
        "nan",
        "dense<[",
    ]
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(text) + 1)
        kind = rng.randrange(5)
        if kind == 0:
            text = text[:i] + text[i + rng.randint(1, 6) :]
        elif kind == 1:
            text = text[:i] + text[i : i + rng.randint(1, 30)] + text[i:]
        elif kind == 2:
            text = text[:i] + rng.choice(pieces) + text[i:]
        else:
            lines = text.split("\n")
            a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
            if kind == 3:
                lines[a], lines[b] = lines[b], lines[a]
            else:
                lines.insert(a, lines[b])
            text = "\n".join(lines)
    return text


def test_parser_raises_only_user_errors_on_mutated_programs(mapped):
    text = mapped.read_text()
    rng = random.Random(20240611)
    for _ in range(400):
        mutated = _mutate(text, rng)
        try:
            parse_program(mutated, "m.imcir")
        except UserError as exc:
            assert exc.exit_code == 2 and exc.render()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_inline_constant_is_refused_at_its_line(capsys, tmp_path, mapped, value):
    text = mapped.read_text()
    match = re.search(r"dense<\[([-0-9.e]+)", text)
    assert match is not None
    path = copy_program(mapped, tmp_path, text[: match.start(1)] + value + text[match.end(1) :])
    shutil.copy(mapped.with_suffix(".npz"), path.with_suffix(".npz"))
    line = text.count("\n", 0, match.start()) + 1
    code, out, err = imcc(capsys, "cost", path)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.startswith(f"{path}:{line}:") and "constants must be finite" in err, err
