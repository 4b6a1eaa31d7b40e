"""Hostile `.hw` targets: every absurd number is one message with its place and legal range.

Each case edits one value of a built-in target, runs `imcc compile` and expects exit 2, the
message at `file:line:col` with the source line and a caret, and no traceback; a target whose
values pass one by one but price to nothing is refused by the cost report instead.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from imcc import cli
from imcc.frontend import hw
from imcc.frontend.hw import load_target
from imcc.frontend.hw_schema import default_of, target_schema
from imcc.targets import BUILTIN_TARGETS, builtin_path


def compile_with(
    capsys, tmp_path: Path, builtin: str, old: str, new: str, model: str = "m.onnx"
) -> tuple[int, str, Path]:
    """Compile `model` on built-in target `builtin` with `old` replaced by `new` (the target
    is read before the model, so a missing model is never reached when the target is bad)."""
    text = builtin_path(builtin).read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "x.hw"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    code = cli.main(["compile", model, "--target", str(path)])
    return code, capsys.readouterr().err, path


def check_source_error(err: str, path: Path, message: str, hint: str | None = None) -> None:
    """One rendered SourceError: `file:line:col: error: message`, the line, a caret, a hint."""
    assert "Traceback" not in err
    first, source, caret, *rest = err.rstrip("\n").split("\n")
    assert first.startswith(f"{path}:") and first.endswith(f" error: {message}"), first
    line, column = (int(n) for n in first[len(f"{path}:") :].split(":")[:2])
    assert source == path.read_text().splitlines()[line - 1]
    assert caret == " " * (column - 1) + "^"
    assert source[column - 1 :].startswith(_token(message)), (source, column)  # at the value
    assert len(rest) <= 1 and all(r.startswith("hint: ") for r in rest)
    if hint is not None:
        assert rest == [f"hint: {hint}"]


def _token(message: str) -> str:
    """Return what the caret must point at: the value (or list item) the message names."""
    got = re.search(r"got `([^`]*)`$", message)
    if got:
        return got.group(1)
    shared = re.search(r"column sharing (\d+) ", message)
    return shared.group(1) if shared else "[]"


# -- numbers that overflow to infinity ------------------------------------------------------


@pytest.mark.parametrize(
    ("builtin", "old", "new", "message"),
    [
        (
            "isaac",
            "energy = 1.5625 pJ",
            "energy = 1e999 pJ",
            "`energy` must be >= 0 pJ and <= 1 mJ, got `1e999 pJ`",
        ),
        (
            "isaac",
            "read_latency = 1.45 ns",
            "read_latency = 1e999 ns",
            "`read_latency` must be >= 0 ns and <= 1 s, got `1e999 ns`",
        ),
        (
            "isaac",
            "clock = 1.2 GHz",
            "clock = 1e999 GHz",
            "`clock` must be > 0 GHz and <= 1000 GHz, got `1e999 GHz`",
        ),
        (
            "isaac",
            "size = 64 KiB",
            "size = 1e999 KiB",
            "`size` must be >= 1 B and <= 1024 GiB, got `1e999 KiB`",
        ),
        ("isaac", "rows = 128 ", "rows = 1e999 ", "`rows` must be 1..65536 rows, got `1e999`"),
        (
            "isaac",
            "bits_per_cycle = [1]",
            "bits_per_cycle = [-1e999]",
            "`bits_per_cycle` must be 1..16 bits, got `-1e999`",
        ),
        (
            "sotmtj",
            "reset_energy = 40 fJ",
            "reset_energy = 40 fJ; sensitivity = 1e999",
            "`sensitivity` must be > 0 and <= 1000, got `1e999`",
        ),
    ],
)
def test_infinite_numbers_are_refused(
    capsys, tmp_path: Path, builtin: str, old: str, new: str, message: str
) -> None:
    code, err, path = compile_with(capsys, tmp_path, builtin, old, new)
    assert code == 2
    written = message.rsplit("`", 2)[1]
    check_source_error(
        err, path, message, f"`{written}` overflows to infinity; every number must be finite"
    )


# -- zero areas -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("builtin", "old", "new", "message"),
    [
        (
            "isaac",
            "cell_area = 0.0015 um2",
            "cell_area = 0 um2",
            "`cell_area` must be > 0 um2 and <= 1 mm2, got `0 um2`",
        ),
        (
            "isaac",
            "area = 1200 um2",
            "area = 0 um2",
            "`area` must be > 0 um2 and <= 0.1 m2, got `0 um2`",
        ),
        (
            "isaac",
            "area = 0.173 mm2",
            "area = 0 mm2",
            "`area` must be > 0 mm2 and <= 0.1 m2, got `0 mm2`",
        ),
        (
            "neurosim-rram22",
            "cell_width = 264 nm",
            "cell_width = 0 nm",
            "`cell_width` must be > 0 nm and <= 1 mm, got `0 nm`",
        ),
        (
            "xpert",
            "unit_area = 0.218 um2",
            "unit_area = 0 um2",
            "`unit_area` must be > 0 um2 and <= 0.1 m2, got `0 um2`",
        ),
        (
            "isaac",
            "peripheral_area = 5 um2",
            "peripheral_area = -5 um2",
            "`peripheral_area` must be >= 0 um2 and <= 0.1 m2, got `-5 um2`",
        ),
    ],
)
def test_zero_or_negative_areas_are_refused(
    capsys, tmp_path: Path, builtin: str, old: str, new: str, message: str
) -> None:
    code, err, path = compile_with(capsys, tmp_path, builtin, old, new)
    assert code == 2
    check_source_error(err, path, message)


# -- absurd targets -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("builtin", "old", "new", "message"),
    [
        (
            "isaac",
            "clock = 1.2 GHz",
            "clock = 0 GHz",
            "`clock` must be > 0 GHz and <= 1000 GHz, got `0 GHz`",
        ),
        (
            "isaac",
            "clock = 1.2 GHz",
            "clock = -1.2 GHz",
            "`clock` must be > 0 GHz and <= 1000 GHz, got `-1.2 GHz`",
        ),
        ("isaac", "node = 32 nm", "node = 0 nm", "`node` must be >= 1 nm and <= 1 um, got `0 nm`"),
        (
            "isaac",
            "node = 32 nm",
            "node = -32 nm",
            "`node` must be >= 1 nm and <= 1 um, got `-32 nm`",
        ),
        (
            "isaac",
            "sample_rate = 1.28 GS/s",
            "sample_rate = 0 GS/s",
            "`sample_rate` must be > 0 GS/s and <= 1000 GS/s, got `0 GS/s`",
        ),
        (
            "isaac",
            "bits_per_cell = 2",
            "bits_per_cell = 1000",
            "`bits_per_cell` must be 1..8 bits, got `1000`",
        ),
        (
            "isaac",
            "rows = 128 ",
            "rows = 1000000000 ",
            "`rows` must be 1..65536 rows, got `1000000000`",
        ),
        (
            "isaac",
            "        bits = [8]",
            "        bits = [1000000000]",
            "`bits` must be 1..16 bits, got `1000000000`",
        ),
        (
            "sotmtj",
            "samples = [1, 2, 4, 8, 16]",
            "samples = [1, 2, 0]",
            "`samples` must be 1..4096 samples, got `0`",
        ),
        (
            "isaac",
            "column_sharing = [128]",
            "column_sharing = [0]",
            "`column_sharing` must be 1..65536 columns, got `0`",
        ),
        (
            "isaac",
            "column_sharing = [128]",
            "column_sharing = [256]",
            "column sharing 256 exceeds the 128 crossbar columns",
        ),
        (
            "sotmtj",
            "column_sharing = [128, 64, 32, 16, 8]",
            "column_sharing = [128, 3]",
            "converter adc8: column sharing 3 does not divide the 128 crossbar columns",
        ),
        ("isaac", "input_bits = [8]", "input_bits = []", "`input_bits` is empty"),
        (
            "isaac",
            "weight_bits = 8 ",
            "weight_bits = 1 ",
            "`weight_bits` must be 2..16 bits, got `1`",
        ),
        (
            "isaac",
            "crossbars_per_tile = 96",
            "crossbars_per_tile = 0",
            "`crossbars_per_tile` must be 1..65536 crossbars, got `0`",
        ),
        (
            "isaac",
            "rows = 128 ",
            "rows = 128; parallel_rows = 256 ",
            "`parallel_rows` must be 0..128 rows, got `256`",
        ),
    ],
)
def test_absurd_targets_are_refused(
    capsys, tmp_path: Path, builtin: str, old: str, new: str, message: str
) -> None:
    code, err, path = compile_with(capsys, tmp_path, builtin, old, new)
    assert code == 2
    check_source_error(err, path, message)


# -- enums are exact ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("builtin", "old", "new", "message", "hint"),
    [
        (
            "isaac",
            "range_rule = saturate",
            "range_rule = saturat",
            "`range_rule` needs one of full-scale, saturate, got `saturat`",
            "did you mean `saturate`? legal values of `range_rule`: full-scale, saturate",
        ),
        (
            "isaac",
            "column_share_mode = sample-hold",
            "column_share_mode = sample_hold",
            "`column_share_mode` needs one of reactivate, sample-hold, got `sample_hold`",
            "did you mean `sample-hold`? legal values of `column_share_mode`: "
            "reactivate, sample-hold",
        ),
        (
            "isaac",
            "cell = rram",
            "cell = RRAM",
            "`cell` needs one of rram, sram, sot-mtj, stt-mram, pcm, fefet, got `RRAM`",
            "did you mean `rram`? legal values of `cell`: "
            "rram, sram, sot-mtj, stt-mram, pcm, fefet",
        ),
        (
            "isaac",
            "model = fixed",
            "model = fixd",
            "`model` needs one of survey, neurosim, fixed, got `fixd`",
            "did you mean `fixed`? legal values of `model`: survey, neurosim, fixed",
        ),
        (
            "isaac",
            "level = tile",
            "level = tiles",
            "`level` needs one of crossbar, tile, chip, got `tiles`",
            "did you mean `tile`? legal values of `level`: crossbar, tile, chip",
        ),
    ],
)
def test_misspelled_enum_values_are_refused(
    capsys, tmp_path: Path, builtin: str, old: str, new: str, message: str, hint: str
) -> None:
    code, err, path = compile_with(capsys, tmp_path, builtin, old, new)
    assert code == 2
    check_source_error(err, path, message, hint)


# -- the cost report's last-resort check ----------------------------------------------------

AREALESS = """\
target "arealess" {
    column_sharing = [8]
    timing = pipelined
    technology { node = 32 nm; clock = 1 GHz }
    crossbar { rows = 128; columns = 128; cell = rram; bits_per_cell = 2; read_latency = 1 ns }
    input_driver { bits_per_cycle = [1] }
    converter adc { kind = sar; bits = [8]; model = fixed; energy = 1 pJ; latency = 1 ns }
}
"""


def test_a_report_with_no_area_is_refused(capsys, tmp_path: Path) -> None:
    """Every value is legal alone (an area left out is 0), but the chip prices to 0 mm2."""
    path = tmp_path / "arealess.hw"
    path.write_text(AREALESS)
    code = cli.main(["compile", "digits-cnn", "--target", str(path)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err
    assert err == (
        "error: the cost report's total area is 0 mm2: no component has any area\n"
        f"hint: the values of target `arealess` ({path}) are the likely cause: "
        "check its energies, latencies and areas\n"
    )


@pytest.mark.parametrize(
    ("change", "message", "culprit"),
    [
        (
            {"energy_j": math.inf},
            "total energy is inf J (from layer `",
            ", component `converters`)",
        ),
        (
            {"energy_j": math.nan},
            "total energy is nan J (from layer `",
            ", component `converters`)",
        ),
        ({"latency_s": math.inf}, "total latency is inf s (from layer `", "`)"),
        # idle tiles' converters count 0 x inf: the total is nan, still blamed on the converters
        ({"area_m2": math.inf}, "total area is nan mm2 (from component `converters`)", ""),
    ],
)
def test_a_report_with_non_finite_totals_is_refused(
    capsys, monkeypatch, change: dict, message: str, culprit: str
) -> None:
    """A target built around the loader (as a library user may) reaches the report's check."""
    isaac = load_target("isaac")
    adc = dataclasses.replace(isaac.converters[0], **change)
    bad = dataclasses.replace(isaac, converters=(adc,))
    monkeypatch.setattr(hw, "load_target", lambda spec: bad)
    code = cli.main(["compile", "digits-cnn", "--target", "isaac"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err
    first, hint = err.rstrip("\n").split("\n")
    assert first.startswith(f"error: the cost report's {message}") and first.endswith(culprit)
    assert hint.startswith("hint: the values of target `isaac`")


# -- text that is no target: escapes, nesting, encoding, counts ------------------------------


def check_located(
    err: str, path: Path, line: int, column: int, message: str, at: str, hint: str
) -> None:
    """One rendered SourceError at `line:column`, whose caret points at the text `at`."""
    assert "Traceback" not in err
    first, source, caret, hint_line = err.rstrip("\n").split("\n")
    assert first == f"{path}:{line}:{column}: error: {message}"
    assert caret == " " * (column - 1) + "^"
    assert source[column - 1 :].startswith(at), (source, column)
    assert hint_line == f"hint: {hint}"


@pytest.mark.parametrize(
    ("escape", "message", "hint"),
    [
        (
            r"\q",
            r"unknown escape `\q` in a string",
            r"the escapes are \" \\ \/ \t and \uXXXX (4 hex digits)",
        ),
        (
            r"\x41",
            r"unknown escape `\x` in a string",
            r"the escapes are \" \\ \/ \t and \uXXXX (4 hex digits)",
        ),
        (
            r"\u12",
            r"`\u12` is not a `\uXXXX` escape",
            r"write 4 hex digits after `\u`, e.g. `\u00e9`",
        ),
    ],
)
def test_a_bad_escape_in_a_string_is_refused_at_it(
    capsys, tmp_path: Path, escape: str, message: str, hint: str
) -> None:
    """Strings were decoded by json.loads, whose JSONDecodeError escaped as a traceback."""
    code, err, path = compile_with(
        capsys, tmp_path, "isaac", 'description = "ISAAC-like', f'description = "ISAAC{escape}'
    )
    assert code == 2
    check_located(err, path, 9, 25, message, escape[:2], hint)


def test_deep_nesting_is_refused_before_it_overflows_the_stack(capsys, tmp_path: Path) -> None:
    """A list 3000 deep overflowed the recursion that reads values (RecursionError, exit 1)."""
    deep = "[" * 3000 + "8" + "]" * 3000
    code, err, path = compile_with(capsys, tmp_path, "isaac", " bits = [8]", f" bits = {deep}")
    assert code == 2
    message = "sections and lists nest more than 32 deep"
    hint = "a target needs sections in `target { ... }` and flat lists such as `[1, 2]`"
    # the converter's `bits` on line 61: 2 braces, then the 31st `[` opens level 33
    check_located(err, path, 61, 16 + 30, message, "[", hint)


@pytest.mark.parametrize(
    ("written", "message", "hint"),
    [
        (
            r"\ud800",
            r"`\ud800` is half of a surrogate pair, not a character",
            "a string is Unicode text: write the character itself",
        ),
        (
            r"\n",
            "a string may not hold the control character U+000A",
            "a string is one line of text; tab is the only control character allowed",
        ),
        (
            "\x1b",
            "a string may not hold the control character U+001B",
            "a string is one line of text; tab is the only control character allowed",
        ),
    ],
)
def test_a_string_that_is_not_text_is_refused_at_it(
    capsys, tmp_path: Path, written: str, message: str, hint: str
) -> None:
    """A lone surrogate was accepted as the target's name and crashed the printing of the table
    (UnicodeEncodeError, exit 1); a control character would garble a terminal."""
    code, err, path = compile_with(
        capsys, tmp_path, "isaac", 'target "isaac"', f'target "is{written}aac"'
    )
    assert code == 2
    at = written if written.startswith("\\") else " "  # the line shows a control character blank
    check_located(err, path, 8, 11, message, at, hint)


@pytest.mark.parametrize(
    ("builtin", "old"),
    [("isaac", "count = 48"), ("raella", "count = 1                  // derivation: one unit per")],
)
def test_a_digital_unit_with_no_instance_is_refused(
    capsys, tmp_path: Path, builtin: str, old: str
) -> None:
    """`count = 0` priced the unit's area at 0 but still charged its energy and latency."""
    new = re.sub(r"count = \d+", "count = 0", old)
    code, err, path = compile_with(capsys, tmp_path, builtin, old, new)
    assert code == 2
    check_source_error(
        err,
        path,
        "`count` must be 1..1000000 instances, got `0`",
        "a unit that does the work has 1 or more instances "
        "(a target without center_offset or speculation leaves the section out)",
    )


def test_a_target_that_is_not_utf8_is_refused_at_the_first_bad_byte(capsys, tmp_path: Path) -> None:
    """A latin-1 file gave the codec's message (`'utf-8' codec can't decode byte 0xe9 in
    position 10: invalid continuation byte`) with no line, column or hint."""
    path = tmp_path / "latin1.hw"
    path.write_bytes('target "x" {\n    description = "café"\n}\n'.encode("latin-1"))
    code = cli.main(["compile", "m.onnx", "--target", str(path)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "Traceback" not in err and "codec" not in err
    assert err == (
        f"{path}:2:23: error: not UTF-8 text: byte 0xe9 cannot be decoded\n"
        '    description = "caf\ufffd"\n' + " " * 22 + "^\n"
        "hint: .hw targets are UTF-8 text: save the file as UTF-8\n"
    )


# -- built-ins ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_TARGETS)
def test_every_builtin_value_is_within_its_range(name: str) -> None:
    """The ranges are right only if every published design fits them (every value it writes;
    a default stands for a key left out, which the ranges do not judge)."""
    target = load_target(name)
    keys, sections = target_schema()
    checked = 0
    for spec_keys, owners in [
        (keys, [target]),
        *((s.keys, _instances(getattr(target, s.field))) for s in sections.values()),
    ]:
        for owner in owners:
            for spec in spec_keys.values():
                value = getattr(owner, spec.field)
                if spec.limits is None or value == default_of(type(owner), spec.field):
                    continue
                for item in value if isinstance(value, tuple) else (value,):
                    if item is None:
                        continue
                    assert spec.limits.contains(item), (name, spec.key, item)
                    checked += 1
    assert checked > 20  # the walk reached the sections


def _instances(value: object) -> list[object]:
    if value is None:
        return []
    return list(value) if isinstance(value, tuple) else [value]


def test_every_number_has_one_legal_range() -> None:
    keys, sections = target_schema()
    specs = [*keys.values(), *(s for section in sections.values() for s in section.keys.values())]
    numeric = [s for s in specs if s.kind in ("int", "ints", "float", "quantity")]
    assert numeric and all(s.limits is not None for s in numeric)


# -- timing keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("builtin", "old", "new", "message"),
    [
        (
            "isaac",
            "    timing = pipelined",
            "    // timing = pipelined",
            "target `isaac` does not say how its layers are timed",
        ),
        ("raella", "read_latency = 1.52 ns", "", "`crossbar` is missing `read_latency`"),
        (
            "isaac",
            "latency = 0.78125 ns       // derivation: 1 / 1.28 GS/s",
            "latency = 100 ns",
            "converter `adc8`: `latency` 100 ns contradicts `sample_rate` 1.28 GS/s",
        ),
    ],
)
def test_a_missing_or_contradictory_timing_key_is_refused(
    capsys, tmp_path: Path, builtin: str, old: str, new: str, message: str
) -> None:
    code, err, _ = compile_with(capsys, tmp_path, builtin, old, new)
    assert code == 2 and "Traceback" not in err
    assert message in err and "hint:" in err
