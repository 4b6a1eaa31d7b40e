"""The `.hw` target language: built-ins load, units convert, errors point at the place."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from imcc import cli
from imcc.errors import ParseError, UserError
from imcc.frontend.hw import load_target, parse_target
from imcc.target import ConverterKind, ConverterModel
from imcc.targets import BUILTIN_TARGETS, builtin_path

TINY = """\
// a small target for tests
target "tiny" {
    column_sharing = [1, 8]; timing = pipelined
    technology {
        node = 32 nm
        clock = 1.28 GHz
    }
    crossbar {
        rows = 128
        columns = 128
        cell = rram
        bits_per_cell = 2
        read_latency = 100 ns
    }
    input_driver { bits_per_cycle = [1] }
    converter adc {
        kind = sar
        bits = [8]
        energy = 1.5625 pJ
    }
}
"""


def tiny(old: str = "", new: str = "") -> str:
    """Return TINY with one piece of text replaced."""
    assert old in TINY
    return TINY.replace(old, new, 1)


def error(text: str) -> str:
    """Return the rendered error of parsing `text` as `t.hw`."""
    with pytest.raises(ParseError) as info:
        parse_target(text, "t.hw")
    return info.value.render()


# -- built-ins -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_TARGETS)
def test_every_builtin_loads(name: str) -> None:
    target = load_target(name)
    assert target.name == name
    assert target.description
    assert target.converters
    assert load_target(f"{name}.hw") == target
    assert load_target(builtin_path(name)) == target


@pytest.mark.parametrize("name", BUILTIN_TARGETS)
def test_every_builtin_constant_cites_a_source(name: str) -> None:
    """Each numeric entry has a comment on its line, just above it, or on its section's line."""
    lines = builtin_path(name).read_text().splitlines()
    sections: list[bool] = []  # whether each open section's header line carries a comment
    bare = []
    for number, line in enumerate(lines, 1):
        code = line.split("//")[0]
        if code.rstrip().endswith("{"):
            sections.append("//" in line)
        elif code.strip() == "}":
            sections.pop()
        elif re.search(r"=\s*[\[\d.+-]", code):
            above = lines[number - 2].strip() if number > 1 else ""
            if "//" not in line and not above.startswith("//") and not any(sections[-1:]):
                bare.append(f"{number}: {line.strip()}")
    assert bare == []


def test_isaac_numbers() -> None:
    isaac = load_target("isaac")
    adc, survey = isaac.converters  # ISAAC's own ADC, and as RAELLA's evaluation prices it
    assert (survey.name, survey.bits, survey.sample_rate_hz) == ("adc8_survey", (8,), 1.28e9)
    assert adc.energy_j == pytest.approx(2e-3 / 1.28e9)  # ISAAC: 2 mW at 1.28 GS/s
    assert (adc.bits, adc.area_m2, adc.sample_rate_hz) == ((8,), 1200e-12, 1.28e9)
    assert (isaac.crossbar.rows, isaac.crossbar.columns, isaac.crossbar.bits_per_cell) == (
        128,
        128,
        2,
    )
    assert isaac.column_sharing == (128,) and isaac.column_share_mode == "sample-hold"
    assert isaac.technology.node_nm == 32.0 and isaac.input_driver.bits_per_cycle == (1,)


def test_other_builtins_numbers() -> None:
    raella = load_target("raella")
    assert (raella.crossbar.rows, raella.crossbar.devices_per_slice) == (512, 2)
    assert raella.crossbar.signed_columns and raella.converters[0].signed
    assert raella.input_driver.bits_per_cycle == (1, 2, 3, 4)
    assert raella.center_offset is not None and raella.speculation is not None
    xpert = load_target("xpert")
    assert {c.kind for c in xpert.converters} == {ConverterKind.SAR, ConverterKind.FLASH}
    assert all(c.model is ConverterModel.NEUROSIM for c in xpert.converters)
    assert xpert.column_sharing == (8, 1, 2, 4, 16, 32)
    mtj = load_target("sotmtj").converter("mtj")
    assert mtj.samples == (1, 2, 4, 8, 16) and mtj.bits == (1,)
    assert mtj.model is ConverterModel.FIXED and mtj.reset_energy_j > 0
    assert load_target("neurosim-rram22").crossbar.parallel_rows == 64
    assert load_target("neurosim-rram22-32").crossbar.parallel_rows == 32
    assert load_target("neurosim-rram22").hierarchy.pipeline_speedup == 8
    assert load_target("isaac").hierarchy.pipeline_speedup == 0


def test_bounding_box_keys() -> None:
    """The crossbar's layout keys: cell pitches as lengths, periphery per row and per column."""
    target = parse_target(
        tiny(
            "read_latency = 100 ns",
            "read_latency = 100 ns\n"
            "        cell_width = 264 nm\n        cell_height = 0.088 um\n"
            "        row_periphery_area = 20 um2\n"
            "        column_periphery_area = 10 um2",
        ),
        "t.hw",
    )
    xbar = target.crossbar
    assert (xbar.cell_width_m, xbar.cell_height_m) == (264e-9, 0.088e-6)
    assert xbar.bounding_box
    width = 128 * 264e-9 + 128 * 20e-12 / (128 * 88e-9)
    height = 128 * 88e-9 + 128 * 10e-12 / (128 * 264e-9)
    assert xbar.area_m2 == pytest.approx(width * height)
    # circuits given per crossbar widen (rows) and heighten (columns) the same box
    assert xbar.box_area_m2(128e-12, 256e-12) == pytest.approx(
        (width + 128e-12 / (128 * 88e-9)) * (height + 256e-12 / (128 * 264e-9))
    )


def test_without_cell_sizes_the_area_rule_is_unchanged() -> None:
    xbar = parse_target(TINY, "t.hw").crossbar
    assert not xbar.bounding_box
    assert xbar.area_m2 == 0.0


def test_a_cell_pitch_needs_a_length() -> None:
    text = tiny("read_latency = 100 ns", "read_latency = 100 ns\n        cell_width = 3 um2")
    assert "`cell_width` needs a length (nm, um, mm, m), got `3 um2`" in error(text)


# -- units ---------------------------------------------------------------------------------


def test_units_convert_to_si() -> None:
    target = parse_target(TINY, "t.hw")
    assert target.technology.clock_hz == 1.28e9
    assert target.technology.node_nm == 32.0
    assert target.crossbar.read_latency_s == 100e-9
    assert target.converter("adc").energy_j == 1.5625e-12
    assert target.source == "t.hw"


@pytest.mark.parametrize(
    ("entry", "field", "expected"),
    [
        ("size = 64 KiB", "size_bytes", 65536),
        ("size = 512 bits", "size_bytes", 64),
        ("energy_per_byte = 0.48 pJ", "energy_per_byte_j", 0.48e-12),
        ("area = 0.173 mm2", "area_m2", 0.173e-6),
        ("area = 1200 um2", "area_m2", 1200e-12),
        ("bandwidth = 57.6 GB/s", "bandwidth_bytes_per_s", 57.6e9),
        ("bandwidth = 8 Gbit/s", "bandwidth_bytes_per_s", 1e9),
    ],
)
def test_buffer_units(entry: str, field: str, expected: float) -> None:
    defaults = {
        "size": "size = 1 B",
        "energy_per_byte": "energy_per_byte = 1 fJ",
        "area": "area = 1 um2",
    }
    defaults[entry.split()[0]] = entry
    text = tiny("}\n}\n", "}\n    buffer b { " + "; ".join(defaults.values()) + " }\n}\n")
    (buffer,) = parse_target(text, "t.hw").buffers
    assert getattr(buffer, field) == expected


# -- errors --------------------------------------------------------------------------------


def test_typo_in_a_key_lists_the_valid_keys() -> None:
    assert error(tiny("read_latency", "raed_latency")) == (
        "t.hw:13:9: error: unknown key `raed_latency` in `crossbar`\n"
        "        raed_latency = 100 ns\n"
        "        ^\n"
        "hint: did you mean `read_latency`? valid keys of `crossbar`: rows, columns, cell, "
        "bits_per_cell, devices_per_slice, parallel_rows, cell_read_energy, cell_base_energy, "
        "read_latency, cell_area, peripheral_area, signed_columns, cell_width, cell_height, "
        "row_periphery_area, column_periphery_area"
    )


def test_missing_unit() -> None:
    assert error(tiny("100 ns", "100")) == (
        "t.hw:13:24: error: `read_latency` needs a time (ps, ns, us, ms, s), got `100`\n"
        "        read_latency = 100\n"
        "                       ^\n"
        "hint: write the number with its unit"
    )


def test_wrong_dimension() -> None:
    assert error(tiny("100 ns", "3 pJ")) == (
        "t.hw:13:24: error: `read_latency` needs a time (ps, ns, us, ms, s), got `3 pJ`\n"
        "        read_latency = 3 pJ\n"
        "                       ^\n"
        "hint: `pJ` is an energy"
    )


def test_power_for_an_energy_says_how_to_convert() -> None:
    assert error(tiny("1.5625 pJ", "2 mW")).endswith(
        "hint: `mW` is a power: write the energy of one action, power / rate "
        "(2 mW at 1.28 GHz is 1.5625 pJ)"
    )


def test_unknown_unit_suggests_the_right_case() -> None:
    assert error(tiny("1.5625 pJ", "1.5625 pj")) == (
        "t.hw:19:18: error: unknown unit `pj` in `1.5625 pj`\n"
        "        energy = 1.5625 pj\n"
        "                 ^\n"
        "hint: did you mean `pJ`? `energy` needs an energy (fJ, pJ, nJ, uJ, mJ, J)"
    )


def test_unknown_section() -> None:
    assert error(tiny("crossbar {", "crosbar {")) == (
        "t.hw:8:5: error: unknown section `crosbar` in `target`\n"
        "    crosbar {\n"
        "    ^\n"
        "hint: did you mean `crossbar`? valid sections of `target`: technology, crossbar, "
        "input_driver, converter, shift_add, accumulator, digital, center_offset, speculation, "
        "column_mux, buffer, hierarchy, interconnect"
    )


def test_syntax_error() -> None:
    assert error(tiny("rows = 128\n", "rows = 128 columns = 64\n")) == (
        "t.hw:9:28: error: unexpected '='\n"
        "        rows = 128 columns = 64\n"
        "                           ^\n"
        "hint: put each `key = value` on its own line (or separate them with `;`)"
    )


def test_unclosed_brace() -> None:
    assert error('target "x" {\n    crossbar {\n') == (
        "t.hw:2:15: error: unexpected end of input\n"
        "    crossbar {\n"
        "              ^\n"
        "hint: every `{` needs a matching `}`"
    )


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "cell = rram",
            "cell = reram",
            "t.hw:11:16: error: `cell` needs one of rram, sram, sot-mtj, stt-mram, pcm, fefet, "
            "got `reram`",
        ),
        (
            "bits = [8]",
            "bits = []",
            "t.hw:18:16: error: converter `adc` offers no precision: a sar ADC needs `bits`",
        ),
        (
            "column_sharing = [1, 8]",
            "column_sharing = [1, 3]",
            "t.hw:3:26: error: column sharing 3 does not divide the 128 crossbar columns",
        ),
        (
            "bits_per_cell = 2",
            "bits_per_cell = 2\n        devices_per_slice = 3",
            "t.hw:13:29: error: `devices_per_slice` must be 1 or 2, got `3`",
        ),
        (
            "rows = 128",
            "rows = 128\n        rows = 64",
            "t.hw:10:9: error: `rows` is set twice in `crossbar`",
        ),
        ("        rows = 128\n", "", "t.hw:8:5: error: `crossbar` is missing `rows`"),
        ("rows = 128", "rows = 128.5", "t.hw:9:16: error: `rows` needs an integer, got `128.5`"),
        ("rows = 128", "rows = 128 ns", "t.hw:9:16: error: `rows` takes no unit, got `128 ns`"),
        ("converter adc {", "converter {", "t.hw:16:5: error: `converter` needs a name"),
        ('target "tiny"', "target", "t.hw:2:1: error: the target needs a name"),
        (
            "; timing = pipelined",
            "",
            "t.hw:2:1: error: target `tiny` does not say how its layers are timed",
        ),
        (
            "timing = pipelined",
            "timing = pipelind",
            "t.hw:3:39: error: `timing` needs one of pipelined, synchronous, got `pipelind`",
        ),
        (
            "        read_latency = 100 ns\n",
            "",
            "t.hw:8:5: error: `crossbar` is missing `read_latency`",
        ),
        (
            "energy = 1.5625 pJ",
            "energy = 1.5625 pJ\n        model = fixed",
            "t.hw:16:5: error: converter `adc` uses the `fixed` model but has no `latency`",
        ),
        (
            "energy = 1.5625 pJ",
            "energy = 1.5625 pJ\n        model = fixed\n        latency = 1 ns\n"
            "        sample_rate = 1.28 GS/s",
            "t.hw:21:19: error: converter `adc`: `latency` 1 ns contradicts `sample_rate` "
            "1.28 GS/s (one conversion every 0.7812 ns)",
        ),
        (
            "column_sharing = [1, 8]",
            'column_sharing = [1, 8]\n    pipeline = "quantize,tile{x=1}"',
            "t.hw:4:16: error: `pipeline` does not parse at character 10 of the string: "
            "unknown pass 'tile'",
        ),
    ],
)
def test_semantic_errors(old: str, new: str, message: str) -> None:
    assert error(tiny(old, new)).splitlines()[0] == message


def test_unknown_builtin_name() -> None:
    with pytest.raises(UserError) as info:
        load_target("isaak")
    assert info.value.render() == (
        "error: no target named 'isaak'\n"
        "hint: built-in targets: isaac, xpert, raella, sotmtj, stox, hybrid, neurosim-rram22, "
        "neurosim-rram22-32 (`imcc targets` lists them), or the path of a .hw file"
    )


def test_a_path_loads_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.hw"
    path.write_text(tiny("clock = 1.28 GHz", "clock = 1.2 GHz"))
    assert load_target(path).technology.clock_hz == 1.2e9
    with pytest.raises(UserError, match=r"cannot read .*missing\.hw: no such file"):
        load_target(tmp_path / "missing.hw")


# -- command line --------------------------------------------------------------------------


def test_imcc_targets_lists_every_builtin(capsys) -> None:
    assert cli.main(["targets"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == list(BUILTIN_TARGETS)
    assert out[0].startswith("isaac              128x128 rram 2b/cell       sar 8b ")


def test_compile_reports_a_bad_target_with_a_caret(capsys, tmp_path: Path) -> None:
    path = tmp_path / "bad.hw"
    path.write_text(tiny("read_latency", "raed_latency"))
    assert cli.main(["compile", "m.onnx", "--target", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:13:9: error: unknown key `raed_latency` in `crossbar`\n")


def test_a_target_names_its_default_mapping_pipeline() -> None:
    from imcc.driver import MAPPING_PIPELINE, default_pipeline

    assert default_pipeline(load_target("isaac")).endswith(MAPPING_PIPELINE)
    assert "encode-weights{scheme=center-offset center_bits=4}" in default_pipeline(
        load_target("raella")
    )
    assert "calibrate-mtj" in default_pipeline(load_target("sotmtj"))
    text = tiny(
        "column_sharing = [1, 8]",
        'column_sharing = [1, 8]\n    pipeline = "quantize,tile-crossbar"',
    )
    assert default_pipeline(parse_target(text, "t.hw")).endswith(",quantize,tile-crossbar")
