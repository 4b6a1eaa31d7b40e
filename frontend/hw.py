"""Load `.hw` target descriptions into Targets, checking every key, unit and rule with a caret.

```
// an ISAAC-like target
target "isaac" {
    description = "ISAAC-like baseline"
    column_sharing = [128]
    technology { node = 32 nm; clock = 1.2 GHz }
    crossbar { rows = 128; columns = 128; cell = rram; bits_per_cell = 2 }
    input_driver { bits_per_cycle = [1] }
    converter adc8 { kind = sar; bits = [8]; model = fixed; energy = 1.5625 pJ }
}
```
Keys are the Target fields without their unit suffix (hw_schema.py); every number is checked
against its key's one legal range there (`LIMITS`) as it is read. `load_target` takes a path
or the name of a built-in target (targets/).
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imcc.errors import ParseError, PipelineError, UserError
from imcc.frontend.hw_grammar import Entry, Section, Value, parse_syntax, source_line
from imcc.frontend.hw_schema import (
    DIMENSIONS,
    UNITS,
    FieldSpec,
    Limits,
    SectionSpec,
    convert,
    default_of,
    target_schema,
)
from imcc.inputs import decode_text
from imcc.target import Converter, ConverterKind, ConverterModel, Target
from imcc.targets import BUILTIN_TARGETS, builtin_path


def load_target(path_or_name: str | os.PathLike[str]) -> Target:
    """Return the Target of a `.hw` file, or of a built-in target named `isaac` or `isaac.hw`."""
    spec = os.fspath(path_or_name)
    path = Path(spec)
    if not path.is_file():
        builtin = builtin_path(spec)
        if builtin is None:
            if path.suffix == ".hw" and (path.parent != Path() or path.exists()):
                raise UserError(f"cannot read {spec}: no such file")
            raise UserError(
                f"no target named '{spec}'",
                hint=f"built-in targets: {', '.join(BUILTIN_TARGETS)} "
                "(`imcc targets` lists them), or the path of a .hw file",
            )
        path, spec = builtin, str(builtin)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {spec}: {exc.strerror or exc}") from None
    text = decode_text(data, spec, ".hw targets are UTF-8 text: save the file as UTF-8")
    return parse_target(text, spec)


def parse_target(text: str, filename: str = "<string>") -> Target:
    """Parse the text of a `.hw` file into a Target; errors carry `file:line:col` and a caret."""
    return _Builder(text, filename).target(parse_syntax(text, filename))


def describe_target(target: Target) -> str:
    """Return one line for `imcc targets`: name, geometry, converters and description."""
    crossbar = target.crossbar
    cells = f"{crossbar.rows}x{crossbar.columns} {crossbar.cell} {crossbar.bits_per_cell}b/cell"
    if crossbar.devices_per_slice == 2:
        cells += " pair"
    # one entry per distinct converter (two prices of one 8-bit SAR read alike)
    converters = ", ".join(dict.fromkeys(_describe_converter(c) for c in target.converters))
    return f"{target.name:<18} {cells:<26} {converters:<30} {target.description}"


def _describe_converter(converter: Converter) -> str:
    def span(values: tuple[int, ...]) -> str:
        return f"{min(values)}-{max(values)}" if len(values) > 1 else str(values[0])

    if converter.kind is ConverterKind.MTJ:
        return f"mtj x{span(converter.samples)}"
    if converter.kind is ConverterKind.SENSE_AMP:
        return "sense-amp"
    return f"{converter.kind.value} {span(converter.bits)}b"


@dataclass
class _Filled:
    """The values of one section, with where each was written."""

    section: Section
    values: dict[str, Any] = field(default_factory=dict)
    where: dict[str, Value] = field(default_factory=dict)
    sections: dict[str, list[Section]] = field(default_factory=dict)


class _Builder:
    """Turns the syntax tree of a `.hw` file into a Target, one checked key at a time."""

    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.filename = filename
        # where each converter's keys were written, for the checks against the crossbar
        self.converter_where: dict[str, dict[str, Value]] = {}

    def error(
        self, where: Entry | Section | Value, message: str, hint: str | None = None
    ) -> ParseError:
        return ParseError(
            message,
            filename=self.filename,
            line=where.line,
            column=where.column,
            source_line=source_line(self.text, where.line),
            hint=hint,
        )

    def target(self, root: Section) -> Target:
        if root.kind != "target":
            raise self.error(
                root, f'a .hw file holds one `target "NAME" {{ ... }}` block, not `{root.kind}`'
            )
        if not root.label:
            raise self.error(root, "the target needs a name", 'write `target "NAME" { ... }`')
        keys, sections = target_schema()
        top = self.fill(root, "target", keys, sections)
        values = {"description": "", **top.values}
        built = {
            name: [self.section(s, sections[name]) for s in found]
            for name, found in top.sections.items()
        }  # in file order: errors come in order
        for spec in sections.values():
            if spec.required and not built.get(spec.name):
                raise self.error(
                    root,
                    f"target `{root.label}` has no `{spec.name}` section",
                    f"add `{spec.name}{' NAME' if spec.labelled else ''} {{ ... }}`",
                )
            if spec.labelled:
                values[spec.field] = tuple(built.get(spec.name, ()))
            elif spec.name in built:
                values[spec.field] = built[spec.name][0]
        if "timing" not in top.values:
            raise self.error(
                root,
                f"target `{root.label}` does not say how its layers are timed",
                "add `timing = pipelined` (each layer a pipeline stage on its own crossbars, "
                "as ISAAC and RAELLA) or `timing = synchronous` (one chip clock set by the "
                "slowest sub-array read, layers one after another, as NeuroSim)",
            )
        target = Target(name=root.label, source=self.filename, **values)
        self.check_column_sharing(target, top)
        self.check_pipeline(target, top)
        return target

    def check_pipeline(self, target: Target, top: _Filled) -> None:
        """Check that the target's default mapping pipeline parses (names, options)."""
        if not target.pipeline:
            return
        from imcc.passes.pipeline import parse_pipeline  # the pass registry loads lazily

        try:
            parse_pipeline(target.pipeline, "pipeline")
        except PipelineError as exc:
            raise self.error(
                top.where["pipeline"],
                f"`pipeline` does not parse at character {exc.column} of the string: {exc.args[0]}",
                exc.hint,
            ) from None

    def fill(
        self,
        section: Section,
        where: str,
        keys: dict[str, FieldSpec],
        sections: dict[str, SectionSpec],
    ) -> _Filled:
        """Read the entries of one section; collect its nested sections unbuilt."""
        filled = _Filled(section)
        seen: dict[str, Entry | Section] = {}
        for item in section.body:
            if isinstance(item, Section):
                if item.kind not in sections:
                    raise self.unknown_section(item, where, keys, sections)
                spec = sections[item.kind]
                name = f"{item.kind} {item.label}" if spec.labelled and item.label else item.kind
                if name in seen:
                    raise self.error(
                        item,
                        f"`{name}` is defined twice",
                        f"the first is at line {seen[name].line}",
                    )
                seen[name] = item
                filled.sections.setdefault(item.kind, []).append(item)
                continue
            if item.key not in keys:
                if item.key in sections:
                    raise self.error(
                        item,
                        f"`{item.key}` is a section, not a key",
                        f"write `{item.key} {{ ... }}`",
                    )
                raise self.error(
                    item,
                    f"unknown key `{item.key}` in `{where}`",
                    _valid(item.key, list(keys), "keys", where),
                )
            if item.key in seen:
                raise self.error(
                    item,
                    f"`{item.key}` is set twice in `{where}`",
                    f"the first is at line {seen[item.key].line}",
                )
            seen[item.key] = item
            spec = keys[item.key]
            filled.values[spec.field] = self.value(spec, item.value)
            filled.where[spec.field] = item.value
        missing = [s.key for s in keys.values() if s.required and s.field not in filled.values]
        if missing:
            required = ", ".join(s.key for s in keys.values() if s.required)
            raise self.error(
                section,
                f"`{where}` is missing `{missing[0]}`",
                f"required keys of `{section.kind}`: {required}",
            )
        return filled

    def unknown_section(
        self,
        item: Section,
        where: str,
        keys: dict[str, FieldSpec],
        sections: dict[str, SectionSpec],
    ) -> ParseError:
        if item.kind in keys:
            return self.error(
                item, f"`{item.kind}` is a key, not a section", f"write `{item.kind} = ...`"
            )
        if not sections:
            return self.error(
                item,
                f"unknown section `{item.kind}` in `{where}`",
                f"`{where}` holds only keys: {', '.join(keys)}",
            )
        return self.error(
            item,
            f"unknown section `{item.kind}` in `{where}`",
            _valid(item.kind, list(sections), "sections", where),
        )

    def section(self, section: Section, spec: SectionSpec) -> Any:
        """Build the dataclass of one nested section and check its rules."""
        where = spec.name
        if spec.labelled:
            if not section.label:
                raise self.error(
                    section, f"`{spec.name}` needs a name", f"write `{spec.name} NAME {{ ... }}`"
                )
            where = f"{spec.name} {section.label}"
        elif section.label:
            raise self.error(
                section, f"`{spec.name}` takes no name", f"write `{spec.name} {{ ... }}`"
            )
        filled = self.fill(section, where, spec.keys, {})
        values = filled.values
        if spec.name == "converter":
            return self.converter(section, filled)
        if spec.name == "crossbar":
            self.check_crossbar(filled)
        for key in ("bits_per_cycle", "input_bits"):  # the mapping passes pick from them
            if spec.name == "input_driver" and values.get(key) == ():
                raise self.error(
                    filled.where[key],
                    f"`{key}` is empty",
                    f"list the legal widths, e.g. `{key} = [1, 2]`",
                )
        if spec.labelled:
            values["name"] = section.label
        return spec.cls(**values)

    def converter(self, section: Section, filled: _Filled) -> Converter:
        values, where = filled.values, filled.where
        self.converter_where[section.label or ""] = where
        kind: ConverterKind = values["kind"]
        name = f"converter `{section.label}`"
        if kind in (ConverterKind.MTJ, ConverterKind.SENSE_AMP):
            values.setdefault("bits", (1,))
            values.setdefault("model", ConverterModel.FIXED)
            if values["bits"] != (1,):
                raise self.error(
                    where["bits"],
                    f"a {kind.value} converter resolves 1 bit",
                    "write `bits = [1]` or leave `bits` out",
                )
            if values["model"] is not ConverterModel.FIXED:
                raise self.error(
                    where["model"],
                    f"a {kind.value} converter is priced by the `fixed` model",
                    "write its `energy`, `latency` and `area`",
                )
        elif not values.get("bits"):
            at = where.get("bits", section)
            raise self.error(
                at,
                f"{name} offers no precision: a {kind.value} ADC needs `bits`",
                "list the legal precisions, e.g. `bits = [4, 5, 6, 7, 8]`",
            )
        if kind is not ConverterKind.MTJ and "samples" in values and values["samples"] != (1,):
            raise self.error(where["samples"], "only an mtj converter takes several `samples`")
        if not values.get("samples", (1,)):
            raise self.error(
                where["samples"],
                f"{name} offers no sample count",
                "list them, e.g. `samples = [1, 2, 4, 8, 16]`",
            )
        model = values.get("model", default_of(Converter, "model"))
        if model is ConverterModel.FIXED and "latency_s" in values and "sample_rate_hz" in values:
            period = 1.0 / values["sample_rate_hz"]
            if kind is not ConverterKind.MTJ and not math.isclose(
                values["latency_s"], period, rel_tol=0.01
            ):
                raise self.error(
                    where["latency_s"],
                    f"{name}: `latency` {where['latency_s'].text} contradicts `sample_rate` "
                    f"{where['sample_rate_hz'].text} (one conversion every {period * 1e9:.4g} ns)",
                    "give one of them, or make the latency 1 / sample rate",
                )
        biased = "bit_power_w" in values or "base_power_w" in values  # a SAR's bias powers
        needs = {
            ConverterModel.FIXED: ("energy", "latency"),
            ConverterModel.NEUROSIM: ("step_latency",)
            if biased
            else ("comparator_energy", "step_latency"),
            ConverterModel.SURVEY: (),
        }[model]
        for key in needs:
            if _field_of(key) not in values:
                raise self.error(
                    section,
                    f"{name} uses the `{model.value}` model but has no `{key}`",
                    f"add `{key} = ...`",
                )
        return Converter(name=section.label or "", **values)

    def check_crossbar(self, filled: _Filled) -> None:
        values, where = filled.values, filled.where
        if "read_latency_s" not in values:
            raise self.error(
                filled.section,
                "`crossbar` is missing `read_latency`",
                "the analog read alone (rows driven, column currents settled), e.g. "
                "`read_latency = 10 ns`; the converters' time is their own",
            )
        devices = values.get("devices_per_slice", 1)  # 1 or 2 (hw_schema.LIMITS)
        if values.get("signed_columns") and devices != 2:
            raise self.error(
                where["signed_columns"],
                "`signed_columns` needs "
                "`devices_per_slice = 2`: the column subtracts a device pair",
            )
        if values.get("parallel_rows", 0) > values["rows"]:
            at = where["parallel_rows"]
            raise self.error(
                at,
                f"`parallel_rows` must be 0..{values['rows']} rows, got `{at.text}`",
                f"it exceeds the {values['rows']} rows of the crossbar (0 drives all rows at once)",
            )

    def check_column_sharing(self, target: Target, top: _Filled) -> None:
        """Check that every sharing factor, the target's and each converter's, fits the columns
        (a factor that does not divide them leaves a converter with a partial group)."""
        at = top.where.get("column_sharing")
        if not target.column_sharing:
            raise self.error(
                at or top.section,
                "`column_sharing` is empty",
                "list the legal factors, e.g. `column_sharing = [1, 2, 4, 8]`",
            )
        self.check_factors(
            target.column_sharing, at or top.section, target.crossbar.columns, "column sharing"
        )
        for converter in target.converters:
            where = self.converter_where.get(converter.name, {}).get("column_sharing")
            self.check_factors(
                converter.column_sharing,
                where or top.section,
                target.crossbar.columns,
                f"converter {converter.name}: column sharing",
            )

    def check_factors(
        self, factors: tuple[int, ...], at: Value | Section, columns: int, what: str
    ) -> None:
        for i, factor in enumerate(factors):
            item = at.value[i] if isinstance(at, Value) and at.kind == "list" else at
            if factor > columns:
                raise self.error(
                    item,
                    f"{what} {factor} exceeds the {columns} crossbar columns",
                    f"a factor is the columns one converter serves: 1..{columns}",
                )
            if columns % factor:
                divisors = [d for d in range(1, columns + 1) if columns % d == 0]
                hint = None
                if len(divisors) <= 24:  # a short list helps; thousands do not
                    hint = f"the factors that divide {columns}: {', '.join(map(str, divisors))}"
                raise self.error(
                    item, f"{what} {factor} does not divide the {columns} crossbar columns", hint
                )

    def value(self, spec: FieldSpec, value: Value) -> Any:
        """Check one value against what its key needs and return it in SI units."""
        got = f"`{spec.key}` needs {spec.describe()}, got `{value.text}`"
        if spec.kind == "quantity":
            if value.kind != "number":
                raise self.error(value, got)
            if value.unit is None:
                raise self.error(value, got, "write the number with its unit")
            self.check_unit(spec, value, got)
            number = convert(spec, value.value, value.unit)
            self.check_limits(spec, value, number)
            if spec.integer:
                if abs(number - round(number)) > 1e-9 * max(1.0, abs(number)):
                    raise self.error(
                        value, f"`{spec.key}` needs a whole number of bytes, got `{value.text}`"
                    )
                return round(number)
            return number
        if spec.kind == "ints":
            items = value.value if value.kind == "list" else (value,)
            return tuple(self.integer(spec, item) for item in items)
        if spec.kind == "int":
            return self.integer(spec, value)
        if spec.kind == "float":
            if value.kind != "number" or value.unit is not None:
                raise self.error(value, got)
            self.check_limits(spec, value, value.value)
            return value.value
        if spec.kind == "bool":
            if value.kind != "word" or value.value not in ("true", "false"):
                raise self.error(value, got)
            return value.value == "true"
        if value.kind not in ("word", "string"):
            raise self.error(value, got)
        if spec.kind == "str":
            return value.value
        if value.value not in spec.words:  # enum: exact, a near miss is an error, not a guess
            close = [w for w in spec.words if w.lower() == value.value.lower()]
            close = close or difflib.get_close_matches(value.value, spec.words, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            raise self.error(
                value, got, f"{hint}legal values of `{spec.key}`: {', '.join(spec.words)}"
            )
        return spec.enum(value.value) if spec.enum is not None else value.value

    def integer(self, spec: FieldSpec, value: Value) -> int:
        what = "a list of integers" if spec.kind == "ints" else "an integer"
        if value.kind != "number":
            raise self.error(value, f"`{spec.key}` needs {what}, got `{value.text}`")
        if math.isfinite(value.value) and value.value != int(value.value):
            raise self.error(value, f"`{spec.key}` needs {what}, got `{value.text}`")
        if value.unit is not None:
            raise self.error(value, f"`{spec.key}` takes no unit, got `{value.text}`")
        self.check_limits(spec, value, value.value)  # before int(): `1e999` is infinite
        return int(value.value)

    def check_limits(self, spec: FieldSpec, value: Value, stored: float) -> None:
        """Check a number (stored unit) against its key's one legal range (hw_schema.LIMITS)."""
        limits: Limits | None = spec.limits
        if limits is None or limits.contains(stored):
            return
        legal = limits.describe(value.unit, spec.stored_units())
        hint = limits.why or None
        if not math.isfinite(stored):
            hint = f"`{value.text}` overflows to infinity; every number must be finite"
        raise self.error(value, f"`{spec.key}` must be {legal}, got `{value.text}`", hint)

    def check_unit(self, spec: FieldSpec, value: Value, got: str) -> None:
        assert spec.dimension is not None and value.unit is not None
        unit = value.unit
        if unit not in UNITS:
            units = list(spec.dimension.units)
            close = [u for u in units if u.lower() == unit.lower()]
            close = close or difflib.get_close_matches(unit, units, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            raise self.error(
                value,
                f"unknown unit `{unit}` in `{value.text}`",
                f"{hint}`{spec.key}` needs {spec.dimension.describe()}",
            )
        if unit not in spec.dimension.units:
            dimension = DIMENSIONS[UNITS[unit]]
            hint = f"`{unit}` is {dimension.name}"
            if UNITS[unit] == "power" and spec.dimension is DIMENSIONS["energy"]:
                hint += (
                    ": write the energy of one action, power / rate (2 mW at 1.28 GHz is 1.5625 pJ)"
                )
            raise self.error(value, got, hint)


def _field_of(key: str) -> str:
    return target_schema()[1]["converter"].keys[key].field


def _valid(name: str, valid: list[str], what: str, where: str) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    text = f"did you mean `{close[0]}`? " if close else ""
    return f"{text}valid {what} of `{where.split()[0]}`: {', '.join(valid)}"
