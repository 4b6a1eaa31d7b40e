"""Hand-edited mapping attributes: every rule is one message and exit 2, never a wrong number.

A mapped program's mapping attributes (`#tiling<...>`, `#weights<...>`, `#input<...>`,
`#converter<...>`, `column_share`, `centers`, `ps_scale`, `#profile<...>`, `#placement<...>`,
a quantize's `#activation_stats<...>`) were not range-checked: `row_tiles = -2` priced to
another energy with exit 0, `rows = -128` and `columns = 0` were accepted. Each rule of
ir/mapping.py is violated here in a real mapped program (digits-cnn on ISAAC) and `imcc cost`
must refuse it at the node's line; the rules of passes/program_target.py (does the mapping fit
the target?) are checked by `imcc simulate` and directly. A hypothesis property edits random
numbers of the mapping attributes: exit 0 with finite positive figures, or exit 2.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from imcc import cli
from imcc.errors import MappingError
from imcc.ir.io import load_program

EXAMPLES = Path(__file__).parent.parent / "examples"
LOCATION = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): error: ")


def compile_program(folder: Path, target: str) -> Path:
    path = folder / f"{target}.imcir"
    assert (
        cli.main(
            ["compile", str(EXAMPLES / "digits_cnn.onnx"), "--target", target, "-o", str(path)]
        )
        == 0
    )
    return path


@pytest.fixture(scope="module")
def isaac(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits-cnn compiled for ISAAC: `isaac.imcir` with its weights in `isaac.npz`."""
    return compile_program(tmp_path_factory.mktemp("mapped"), "isaac")


def edited(program: Path, folder: Path, pattern: str, replacement: str) -> Path:
    """Copy a program (and its weights) into `folder` with the first match of `pattern`
    replaced."""
    text = program.read_text()
    new, count = re.subn(pattern, replacement, text, count=1)
    assert count == 1 and new != text, pattern
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "e.imcir"
    path.write_text(new)
    shutil.copy(program.with_suffix(".npz"), folder / "e.npz")
    return path


def refused(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    """Run `imcc ARGV` in-process; check it is one exit-2 message; return stderr."""
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert err.count("error:") == 1, err
    return err


def located(err: str, path: Path) -> None:
    """Check that a message is a source error at `path` with its line and a caret."""
    first, _source, caret, *_ = err.split("\n")
    found = LOCATION.match(first)
    assert found is not None and found["file"] == str(path), first
    assert caret.strip() == "^", err


FIRST_CONV_FILTERS = 8  # digits-cnn's first conv: 8 filters, 4 weight slices on one device
COLUMNS = FIRST_CONV_FILTERS * 4

# (id, pattern, replacement, what the message says); the first match is edited
VERIFIER_CASES = [
    (
        "row-tiles-negative",
        r"row_tiles = 2",
        "row_tiles = -2",
        "bad #tiling: row_tiles = -2 must be >= 1",
    ),
    (
        "rows-negative",
        r"#tiling<rows = 128",
        "#tiling<rows = -128",
        "bad #tiling: rows = -128 must be in 1..65536",
    ),
    (
        "columns-zero",
        r"columns = 128, row_tiles",
        "columns = 0, row_tiles",
        "bad #tiling: columns = 0 must be in 1..65536",
    ),
    (
        "row-tiles-cover-rows",
        r"row_tiles = 2",
        "row_tiles = 3",
        "attribute 'tiling': row_tiles = 3 must be ceil(K / rows) = ceil(256 / 128) = 2",
    ),
    (
        "column-tiles-cover-columns",
        r"column_tiles = 1",
        "column_tiles = 5",
        "attribute 'tiling': column_tiles = 5 must be 1: N = 8 columns x 4 slices",
    ),
    (
        "tiling-groups",
        r"column_tiles = 1, groups = 1",
        "column_tiles = 1, groups = 2",
        "attribute 'tiling': groups = 2 must be the layer's 1 channel groups",
    ),
    (
        "column-share-divides",
        r"column_share = 128",
        "column_share = 48",
        "attribute 'column_share': column_share = 48 must be >= 1 and divide the tiling's 128",
    ),
    (
        "column-share-zero",
        r"column_share = 128",
        "column_share = 0",
        "attribute 'column_share': column_share = 0 must be >= 1",
    ),
    (
        "converter-bits",
        r"bits = 8, samples = 1>",
        "bits = 40, samples = 1>",
        "bad #converter: bits = 40 must be in 1..16",
    ),
    (
        "converter-samples",
        r"bits = 8, samples = 1>",
        "bits = 8, samples = 2>",
        "bad #converter: only an mtj converter takes several samples",
    ),
    (
        "converter-kind",
        r'kind = "sar"',
        'kind = "adc"',
        "bad #converter: kind 'adc' must be one of sar, flash, sense-amp, mtj",
    ),
    (
        "input-bits-range",
        r"#input<bits = 8, slices = \[1, 1, 1, 1, 1, 1, 1, 1\]",
        "#input<bits = 40, slices = [8, 8, 8, 8, 8]",
        "bad #input: bits = 40 must be in 1..16",
    ),
    (
        "input-bits-of-quantize",
        r"#input<bits = 8, slices = \[1, 1, 1, 1, 1, 1, 1, 1\]",
        "#input<bits = 4, slices = [1, 1, 1, 1]",
        "attribute 'input': streams 4-bit unsigned codes but its operand holds the 8-bit "
        "unsigned codes of quantize",
    ),
    (
        "input-sign-of-quantize",
        r"signed = false, speculate",
        "signed = true, speculate",
        "attribute 'input': streams 8-bit signed codes but its operand holds the 8-bit "
        "unsigned codes",
    ),
    (
        "weight-slice-wider-than-a-cell",
        r"slices = \[2, 2, 2, 2\]",
        "slices = [9]",
        "bad #weights: slices [9] must be 1..8 bits each",
    ),
    (
        "weight-encoding-needs-a-pair",
        r'encoding = "offset"',
        'encoding = "differential"',
        "bad #weights: differential encoding stores each slice on a device pair",
    ),
    (
        "centers-without-center-offset",
        r"(devices = 1>), (tiling = )",
        r"\1, centers = [" + ", ".join(["0"] * FIRST_CONV_FILTERS) + r"], \2",
        "attribute 'centers': centers belong to a center-offset encoding",
    ),
    (
        "ps-scale-positive",
        r"(samples = 1>)(, placement)",
        r"\1, ps_scale = ["
        + ", ".join(["-1.0"] * COLUMNS)
        + "], ps_offset = ["
        + ", ".join(["0.0"] * COLUMNS)
        + r"]\2",
        "attribute 'ps_scale': ps_scale entries must be finite and > 0",
    ),
    (
        "ps-scale-needs-offset",
        r"(samples = 1>)(, placement)",
        r"\1, ps_scale = [" + ", ".join(["1.0"] * COLUMNS) + r"]\2",
        "attribute 'ps_scale': ps_scale has 32 entries and needs ps_offset with as many",
    ),
    (
        "profile-shares",
        r"(samples = 1>)(, placement)",
        r"\1, profile = #profile<samples = 16, saturation = 1.5, speculation_failures = 0.0, "
        r"recoveries = 0.0>\2",
        "bad #profile: saturation = 1.5 must be a fraction in [0, 1]",
    ),
    (
        "placement-replicas",
        r"replicas = 1>",
        "replicas = 8300>",
        "attribute 'placement': replicas = 8300 must not exceed the layer's 512 array cycles",
    ),
    (
        "placement-crossbars",
        r"first_crossbar = 0, crossbars = 1,",
        "first_crossbar = 0, crossbars = 5,",
        "attribute 'placement': crossbars = 5 must be the layer's 1 crossbars (its tiling)",
    ),
    (
        "placement-first-crossbar-negative",
        r"first_crossbar = 0,",
        "first_crossbar = -1,",
        "bad #placement: first_crossbar = -1 must be >= 0",
    ),
    (
        "placement-gap",
        r"first_crossbar = 1,",
        "first_crossbar = 2,",
        "attribute 'placement': first_crossbar = 2 leaves crossbars 1..1 unused",
    ),
    (
        "placement-overlap",
        r"first_crossbar = 1,",
        "first_crossbar = 0,",
        "attribute 'placement': first_crossbar = 0 overlaps the crossbars of another layer",
    ),
    (
        "stats-zero-fraction",
        r"zero_fraction = [0-9.e-]+",
        "zero_fraction = 1.5",
        "bad #activation_stats: zero_fraction = 1.5 must be a fraction in [0, 1]",
    ),
    (
        "stats-bit-density",
        r"bit_density = \[[0-9.e-]+",
        "bit_density = [2.0",
        "bad #activation_stats: a bit_density entry = 2.0 must be a fraction in [0, 1]",
    ),
    (
        "stats-one-density-per-bit",
        r"bit_density = \[[0-9.e-]+, ",
        "bit_density = [",
        "quantize stats: bit_density has 7 entries, one per bit of the 8-bit codes",
    ),
    (
        "stats-samples",
        r"samples = 64>",
        "samples = 0>",
        "bad #activation_stats: samples = 0 must be >= 1",
    ),
    (
        "quantize-zero-point",
        r"zero_point = 0",
        "zero_point = 300",
        "quantize zero_point 300 is outside the 8-bit unsigned codes 0..255",
    ),
    (
        "quantize-scale-finite",
        r"scale = [0-9.e-]+, zero_point",
        "scale = inf, zero_point",
        "quantize needs 1 <= bits <= 16 and a finite scale > 0",
    ),
]


@pytest.mark.parametrize(
    ("pattern", "replacement", "message"),
    [case[1:] for case in VERIFIER_CASES],
    ids=[case[0] for case in VERIFIER_CASES],
)
def test_cost_refuses_a_broken_mapping_rule_at_its_line(
    isaac, tmp_path, capsys, pattern, replacement, message
):
    path = edited(isaac, tmp_path, pattern, replacement)
    err = refused(capsys, "cost", path)
    located(err, path)
    assert message in err


OP_CASES = [
    ("lrn-size", "lrn(%x) {size = -3}", "lrn size must be >= 1, got -3"),
    ("lrn-beta", "lrn(%x) {size = 3, beta = inf}", "lrn beta must be finite"),
    ("leaky-relu-alpha", "leaky_relu(%x) {alpha = inf}", "leaky_relu alpha must be finite"),
    (
        "batch-norm-epsilon",
        "batch_norm(%x, %s, %s, %s, %s) {epsilon = -1.0}",
        "batch_norm epsilon must be finite and >= 0, got -1.0",
    ),
]


@pytest.mark.parametrize(
    ("node", "message"), [case[1:] for case in OP_CASES], ids=[case[0] for case in OP_CASES]
)
def test_op_attributes_out_of_range_are_refused(tmp_path, capsys, node, message):
    path = tmp_path / "op.imcir"
    path.write_text(
        "graph @g(%x: f32[1,4,2,2]) {\n"
        "  %s = const f32[4] dense<[1.0, 1.0, 1.0, 1.0]>\n"
        f"  %y = {node} : f32[1,4,2,2]\n"
        "  return %y\n}\n"
    )
    err = refused(capsys, "opt", path)
    located(err, path)
    assert message in err


def test_a_float_layer_carries_no_crossbar_mapping(tmp_path, capsys):
    # select-adc run before quantize could leave one; the simulator then sliced float codes
    path = tmp_path / "float.imcir"
    path.write_text(
        "graph @g(%x: f32[1,1,4,4]) {\n"
        "  %w = const f32[2,1,1,1] dense<[1.0, 2.0]>\n"
        "  %y = conv(%x, %w) {strides = [1, 1], pads = [0, 0, 0, 0], dilations = [1, 1], "
        'converter = #converter<name = "adc8", kind = "sar", bits = 8, samples = 1>} '
        ": f32[1,2,4,4]\n"
        "  return %y\n}\n"
    )
    err = refused(capsys, "opt", path)
    located(err, path)
    assert "attribute 'converter': a float layer has no crossbar mapping" in err


# --- does the mapping fit the target? (passes/program_target.py) ----------------------------

TARGET_CASES = [
    (
        "converter-precision",
        r"bits = 8, samples = 1>",
        "bits = 7, samples = 1>",
        "adc8 precision 7 is not offered by target isaac",
        "legal values: 8",
    ),
    (
        "converter-kind",
        r'kind = "sar"',
        'kind = "flash"',
        "converter adc8 of target isaac is a sar, not a flash",
        "legal values: sar",
    ),
    (
        "column-sharing",
        r"column_share = 128",
        "column_share = 64",
        "column sharing 64 is not offered with converter adc8 on target isaac",
        "legal values: 128",
    ),
    (
        "tile-larger-than-crossbar",
        r"#tiling<rows = 128",
        "#tiling<rows = 256",
        "tiles of 256x128 are larger than target isaac's 128x128 crossbars",
        "--target isaac",
    ),
    (
        "slices-wider-than-cells",
        r"slices = \[2, 2, 2, 2\]",
        "slices = [4, 4]",
        "weight slices [4, 4] must cover 8 bits with at most 2 bits per cell",
        "e.g. slices [2, 2, 2, 2]",
    ),
    (
        "input-slice-width",
        r"slices = \[1, 1, 1, 1, 1, 1, 1, 1\]",
        "slices = [2, 2, 2, 2]",
        "input slice width 2 is not one target isaac's drivers stream",
        "legal values: 1",
    ),
    (
        "encoding",
        r'encoding = "offset", slices = \[2, 2, 2, 2\], devices = 1',
        'encoding = "differential", slices = [2, 2, 2, 2], devices = 2',
        "target isaac cannot store differential weights",
        "legal values: offset",
    ),
]


@pytest.mark.parametrize(
    ("pattern", "replacement", "message", "hint"),
    [case[1:] for case in TARGET_CASES],
    ids=[case[0] for case in TARGET_CASES],
)
def test_simulate_refuses_a_mapping_its_target_does_not_offer(
    isaac, tmp_path, capsys, pattern, replacement, message, hint
):
    path = edited(isaac, tmp_path, pattern, replacement)
    err = refused(capsys, "simulate", path, "--data", "digits-cnn", "--limit", "1")
    first, *rest = err.splitlines()
    assert first.startswith("error: layer 0 (/features/features.0/Conv): ")
    assert message in first
    (hint_line,) = [line for line in rest if line.startswith("hint: ")]
    assert hint in hint_line and "compile the model again for target isaac" in hint_line


def test_programs_fit_their_own_target_only(isaac):
    from imcc.passes.program_target import check_program_target

    graph = load_program(isaac)
    check_program_target(graph, cli.resolve_target("isaac"))  # what the passes chose
    with pytest.raises(MappingError, match=r"target xpert has no converter 'adc8'") as info:
        check_program_target(graph, cli.resolve_target("xpert"))
    assert "--target xpert" in (info.value.hint or "")


# --- the property: random edits of mapping numbers ------------------------------------------

STRUCT = re.compile(r"#\w+<[^>]*>")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")
ODD_NUMBERS = [
    "0",
    "-1",
    "1",
    "2",
    "3",
    "7",
    "127",
    "129",
    "256",
    "4097",
    "65537",
    "1000000000000",
    "0.5",
    "-0.5",
    "1e308",
    "nan",
    "inf",
]


@pytest.fixture(scope="module")
def numbers(isaac) -> tuple[str, list[tuple[int, int]]]:
    """The program text and the spans of every number inside a `#name<...>` attribute."""
    text = isaac.read_text()
    spans = [
        (s.start() + n.start(), s.start() + n.end())
        for s in STRUCT.finditer(text)
        for n in NUMBER.finditer(s.group())
    ]
    assert len(spans) > 50
    return text, spans


def cost_json(path: Path) -> tuple[int, str, str]:
    """Run `imcc cost PATH --json` in-process; return exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["cost", str(path), "--json"])
    return code, out.getvalue(), err.getvalue()


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0),
            st.one_of(st.integers(-3, 300).map(str), st.sampled_from(ODD_NUMBERS)),
        ),
        min_size=1,
        max_size=2,
    )
)
@example(edits=[(-1, "1000")])  # converter bits: the survey regression divided by zero
@example(edits=[(-2, "100")])  # a 100-bit weight slice overflowed int64 in the cost model
def test_random_mapping_edits_price_sensibly_or_exit_2(isaac, numbers, tmp_path_factory, edits):
    text, spans = numbers
    converter_bits = next(
        s
        for s in spans
        if text[s[0] - 7 : s[0]] == "bits = " and "#converter<" in text[s[0] - 60 : s[0]]
    )
    weight_slice = next(s for s in spans if text[s[0] - 10 : s[0]] == "slices = [")
    chosen = {}
    for index, value in edits:  # the examples' -1 / -2 pick those two fields
        span = {-1: converter_bits, -2: weight_slice}.get(index) or spans[index % len(spans)]
        chosen[span] = value
    for (start, end), value in sorted(chosen.items(), reverse=True):
        text = text[:start] + value + text[end:]
    folder = tmp_path_factory.mktemp("edit")
    path = folder / "e.imcir"
    path.write_text(text)
    shutil.copy(isaac.with_suffix(".npz"), folder / "e.npz")
    code, out, err = cost_json(path)
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith(("error: ", str(path))), err
        return
    report = json.loads(out)
    for key in ("energy_j", "latency_s", "area_mm2"):
        assert math.isfinite(report[key]) and report[key] > 0, (key, report[key])
