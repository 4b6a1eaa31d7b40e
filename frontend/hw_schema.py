"""The meaning of `.hw` keys: units, dimensions, and the sections and keys derived from target.py.

A key is its Target field's name without the unit suffix (`read_latency_s` is written
`read_latency = 100 ns`, `node_nm` is `node = 32 nm`, `size_bytes` is `size = 64 KiB`); the
suffix names the dimension the value needs. Sections map to the nested dataclasses; the ones
that may repeat (`converter NAME`, `buffer NAME`) take a label that becomes the `name` field.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from imcc.target import (
    Buffer,
    ColumnMux,
    Converter,
    ConverterKind,
    ConverterModel,
    Crossbar,
    DigitalUnit,
    Hierarchy,
    InputDriver,
    Interconnect,
    Target,
    Technology,
)


@dataclass(frozen=True, slots=True)
class Dimension:
    """A physical dimension: its name in messages, its units (factor to SI) and those to show."""

    name: str  # "a time"
    units: dict[str, float]
    shown: tuple[str, ...]

    def describe(self) -> str:
        """Return e.g. `a time (ps, ns, us, ms, s)`."""
        return f"{self.name} ({', '.join(self.shown)})"


def _dimension(name: str, units: dict[str, float], shown: tuple[str, ...] = ()) -> Dimension:
    return Dimension(name, units, shown or tuple(units))


DIMENSIONS: dict[str, Dimension] = {
    "energy": _dimension(
        "an energy", {"fJ": 1e-15, "pJ": 1e-12, "nJ": 1e-9, "uJ": 1e-6, "mJ": 1e-3, "J": 1.0}
    ),
    "time": _dimension("a time", {"ps": 1e-12, "ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}),
    "frequency": _dimension(
        "a frequency",
        {
            "Hz": 1.0,
            "kHz": 1e3,
            "MHz": 1e6,
            "GHz": 1e9,
            "S/s": 1.0,
            "kS/s": 1e3,
            "MS/s": 1e6,
            "GS/s": 1e9,
        },
        ("Hz", "kHz", "MHz", "GHz", "MS/s", "GS/s"),
    ),
    "area": _dimension(
        "an area", {"nm2": 1e-18, "um2": 1e-12, "mm2": 1e-6, "m2": 1.0}, ("um2", "mm2", "m2")
    ),
    "length": _dimension("a length", {"nm": 1e-9, "um": 1e-6, "mm": 1e-3, "m": 1.0}),
    # sizes in bytes
    "size": _dimension(
        "a size",
        {
            "bit": 0.125,
            "bits": 0.125,
            "B": 1.0,
            "kB": 1e3,
            "KiB": 1024.0,
            "MB": 1e6,
            "MiB": 1024.0**2,
            "GiB": 1024.0**3,
        },
        ("bits", "B", "KiB", "MiB"),
    ),
    "voltage": _dimension("a voltage", {"mV": 1e-3, "V": 1.0}),
    # data rates in bits per second
    "data_rate": _dimension(
        "a data rate",
        {
            "bit/s": 1.0,
            "kbit/s": 1e3,
            "Mbit/s": 1e6,
            "Gbit/s": 1e9,
            "Tbit/s": 1e12,
            "B/s": 8.0,
            "kB/s": 8e3,
            "MB/s": 8e6,
            "GB/s": 8e9,
            "TB/s": 8e12,
        },
        ("bit/s", "Gbit/s", "B/s", "GB/s"),
    ),
    # bias powers of the `neurosim` converter model; everything else is an energy per action
    "power": _dimension("a power", {"nW": 1e-9, "uW": 1e-6, "mW": 1e-3, "W": 1.0}),
}

UNITS: dict[str, str] = {unit: dim for dim, d in DIMENSIONS.items() for unit in d.units}
"""Every unit the language knows, mapped to its dimension."""

# field-name suffix -> (dimension, stored value per SI value); the first match wins
_SUFFIXES: tuple[tuple[str, str, float], ...] = (
    ("_bytes_per_s", "data_rate", 1 / 8),
    ("_bits_per_s", "data_rate", 1.0),
    ("_bytes", "size", 1.0),
    ("_j", "energy", 1.0),
    ("_s", "time", 1.0),
    ("_hz", "frequency", 1.0),
    ("_m2", "area", 1.0),
    ("_m", "length", 1.0),
    ("_nm", "length", 1e9),
    ("_v", "voltage", 1.0),
    ("_w", "power", 1.0),
)

# str fields with a closed set of words, by (class name, field name)
WORDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Crossbar", "cell"): ("rram", "sram", "sot-mtj", "stt-mram", "pcm", "fefet"),
    ("InputDriver", "kind"): ("bit-serial", "pulse-train", "voltage-dac"),
    ("Target", "column_share_mode"): ("reactivate", "sample-hold"),
    ("Target", "timing"): ("pipelined", "synchronous"),
    ("Hierarchy", "floorplan"): ("packed", "neurosim"),
    ("Buffer", "level"): ("tile", "chip"),
    ("Buffer", "role"): ("activations", "input-register", "output-register"),
    ("DigitalUnit", "level"): ("crossbar", "tile", "chip"),
    # read as `== "full-scale"` by the simulator, so a typo would silently mean `saturate`
    ("Converter", "range_rule"): ("full-scale", "saturate"),
}

_ENUMS: dict[str, type[enum.Enum]] = {
    "ConverterKind": ConverterKind,
    "ConverterModel": ConverterModel,
}


@dataclass(frozen=True, slots=True)
class Limits:
    """The legal range of a number, in the unit the field stores (SI; `node_nm` in nm).

    Every number must also be finite. `unit` names what an integer counts, for messages; `why`
    is the physical reason, shown as the hint.
    """

    low: float
    high: float
    low_open: bool = False  # `> low` rather than `>= low`
    unit: str = ""
    why: str = ""

    def contains(self, stored: float) -> bool:
        """Return whether a stored value is finite and within the range."""
        above = stored > self.low if self.low_open else stored >= self.low
        return math.isfinite(stored) and above and stored <= self.high

    def scaled(self, scale: float) -> Limits:
        """Return these limits, given in SI, in a field's stored unit (stored = SI * scale)."""
        return Limits(self.low * scale, self.high * scale, self.low_open, self.unit, self.why)

    def describe(self, unit: str | None = None, units: dict[str, float] | None = None) -> str:
        """Return e.g. `1..8 bits`, `1 or 2`, or `> 0 GHz and <= 1000 GHz`: an integer count
        without `unit`, else each bound in the unit that writes it shortest, `unit` (the one
        the user wrote) on a tie; `units` gives the stored units per unit of a dimension."""
        if unit is None or not units:
            low, high = _shown(self.low), _shown(self.high)
            if not self.low_open:
                after = f" {self.unit}" if self.unit else ""
                if self.high == self.low + 1:
                    return f"{low} or {high}{after}"
                return f"{low}..{high}{after}"
        else:
            low, high = _in_units(self.low, unit, units), _in_units(self.high, unit, units)
        return f"{'>' if self.low_open else '>='} {low} and <= {high}"


def _in_units(stored: float, unit: str, units: dict[str, float]) -> str:
    """Return a stored value as written most briefly: `1 mJ` rather than `1e+09 pJ`."""

    def brevity(written: tuple[float, str]) -> tuple[int, float]:
        # the fewest digits, then the number nearest 1 (`1 B`, not `8 bit`)
        number = written[0]
        return len(_shown(number)), abs(math.log10(abs(number))) if number else 0.0

    options = [(stored / per, name) for name, per in [(unit, units[unit]), *units.items()]]
    number, name = min(options, key=brevity)  # min keeps the first of equals: the user's unit
    return f"{_shown(number)} {name}"


def _shown(number: float) -> str:
    if float(number).is_integer() and abs(number) < 1e7:  # counts read best in full
        return str(int(number))
    return f"{number:.6g}"


# SI ranges by dimension: generous bounds that no real circuit reaches, so that a typo in an
# exponent or a unit is caught while every published design fits
_DIMENSION_LIMITS: dict[str, Limits] = {
    # per action (a cell read, a conversion, a byte or bit moved): zero means "not modelled"
    "energy": Limits(
        0.0, 1e-3, why="energies are per action (fJ to nJ in practice); 0 means not modelled"
    ),
    "time": Limits(
        0.0, 1.0, why="latencies are per action (ps to us in practice); 0 means not modelled"
    ),
    "frequency": Limits(0.0, 1e12, low_open=True, why="a clock or sample rate must tick"),
    # one component; 0 where the part is absent or booked under another part (the whole chip's
    # area is checked again in the cost report); 0.1 m2 is above a 300 mm wafer
    "area": Limits(0.0, 0.1, why="areas are per component; 0 means absent or booked elsewhere"),
    "length": Limits(0.0, 1e-3, low_open=True, why="a layout pitch is a positive length"),
    "size": Limits(1.0, 2.0**40, why="an on-chip buffer holds 1 B to 1 TiB"),
    "voltage": Limits(0.0, 5.0, low_open=True, why="a supply voltage is above 0 and at most 5 V"),
    "power": Limits(0.0, 1.0, why="a converter's bias power (nW to mW in practice)"),
    # 0: unlimited bandwidth
    "data_rate": Limits(0.0, 1e16, why="0 means unlimited bandwidth"),
}

_POSITIVE_AREA = Limits(
    0.0, 0.1, low_open=True, why="a part that is present has an area (0.1 m2 is above a wafer)"
)

# per-key ranges by (class name, field name), in the field's stored unit; every integer key
# and every key whose zero would be wrong or silently mean something else is listed
LIMITS: dict[tuple[str, str], Limits] = {
    ("Technology", "node_nm"): Limits(1.0, 1000.0, why="technology nodes span 1 nm to 1 um"),
    ("Crossbar", "rows"): Limits(1, 65536, unit="rows"),
    ("Crossbar", "columns"): Limits(1, 65536, unit="columns"),
    ("Crossbar", "bits_per_cell"): Limits(
        1, 8, unit="bits", why="a cell stores 1 to 8 bits (at most 256 conductance levels)"
    ),
    ("Crossbar", "devices_per_slice"): Limits(
        1, 2, why="1: one device per weight slice (offset encoding); 2: a differential pair (2T2R)"
    ),
    ("Crossbar", "parallel_rows"): Limits(0, 65536, unit="rows", why="0 drives all rows at once"),
    # without cell pitches the array's area is rows x columns x cell_area: 0 would make it free
    ("Crossbar", "cell_area_m2"): Limits(
        0.0, 1e-6, low_open=True, why="a memory cell has an area (nm2 to um2)"
    ),
    ("InputDriver", "bits_per_cycle"): Limits(
        1, 16, unit="bits", why="an input slice carries 1 to 16 bits"
    ),
    ("InputDriver", "input_bits"): Limits(1, 16, unit="bits", why="activations have 1 to 16 bits"),
    ("Converter", "bits"): Limits(1, 16, unit="bits", why="a converter resolves 1 to 16 bits"),
    ("Converter", "samples"): Limits(
        1, 4096, unit="samples", why="an MTJ converter takes 1 to 4096 samples"
    ),
    ("Converter", "column_sharing"): Limits(
        1, 65536, unit="columns", why="a converter serves 1 or more columns"
    ),
    ("Converter", "area_m2"): _POSITIVE_AREA,
    # 0 would silently mean the default (minimum transistors, one clock cycle): leave them out
    ("Converter", "comparator_area_m2"): Limits(
        0.0, 0.1, low_open=True, why="leave it out for the default"
    ),
    ("Converter", "unit_area_m2"): Limits(
        0.0, 0.1, low_open=True, why="leave it out for the default"
    ),
    ("Converter", "step_latency_s"): Limits(
        0.0, 1.0, low_open=True, why="leave it out for one clock cycle"
    ),
    ("Converter", "latency_factor"): Limits(
        1.0, 10.0, why="NeuroSim's validated sensing-latency factor is 1.4; 1 means none"
    ),
    ("Converter", "sensitivity"): Limits(
        0.0,
        1000.0,
        low_open=True,
        why="the MTJ switches with probability sigmoid(sensitivity * x) for x in [-1, 1]",
    ),
    # the cost model charges every operation to a unit: none would be free work on no area
    ("DigitalUnit", "count"): Limits(
        1,
        1_000_000,
        unit="instances",
        why="a unit that does the work has 1 or more instances "
        "(a target without center_offset or speculation leaves the section out)",
    ),
    ("Buffer", "area_m2"): _POSITIVE_AREA,
    ("Hierarchy", "crossbars_per_tile"): Limits(1, 65536, unit="crossbars"),
    ("Hierarchy", "tiles_per_chip"): Limits(
        0, 1_000_000, unit="tiles", why="0: as many tiles as the mapping needs"
    ),
    ("Hierarchy", "pipeline_speedup"): Limits(
        0, 1024, unit="copies", why="0 or 1: each layer once"
    ),
    ("Target", "column_sharing"): Limits(
        1, 65536, unit="columns", why="a converter serves 1 or more columns"
    ),
    # quantize needs a sign bit and a magnitude bit, and at most 16 bits
    ("Target", "weight_bits"): Limits(2, 16, unit="bits", why="weights have 2 to 16 bits"),
    ("Target", "area_budget_m2"): Limits(
        0.0, 0.1, low_open=True, why="a chip's area budget is a positive area"
    ),
}

# fields written as section labels or filled in by the loader, never as keys
_NOT_KEYS = {"name", "source"}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """How one key is written and stored."""

    key: str
    field: str
    kind: str  # int, float, bool, str, ints, enum, quantity
    dimension: Dimension | None = None
    scale: float = 1.0  # stored value = SI value * scale
    words: tuple[str, ...] = ()  # legal words of str and enum fields
    enum: type[enum.Enum] | None = None
    required: bool = False
    optional: bool = False  # `float | None`: absent means None
    integer: bool = False  # a quantity stored as an int (`size_bytes`)
    limits: Limits | None = None  # the legal range of a number (every item of a list)

    def stored_units(self) -> dict[str, float]:
        """Return how many stored units one of each unit of the key's dimension is."""
        if self.dimension is None:
            return {}
        return {name: si * self.scale for name, si in self.dimension.units.items()}

    def describe(self) -> str:
        """Return what the key needs, for messages: `a time (ps, ns, us, ms, s)`."""
        if self.dimension is not None:
            return self.dimension.describe()
        return {
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "str": "a string",
            "ints": "a list of integers",
            "enum": "one of " + ", ".join(self.words),
        }[self.kind]


@dataclass(frozen=True, slots=True)
class SectionSpec:
    """A section: the Target field it fills, its dataclass, its keys, whether it is labelled."""

    name: str
    field: str
    cls: type
    keys: dict[str, FieldSpec]
    labelled: bool = False  # converter NAME { }, buffer NAME { }
    required: bool = False


def _field_spec(cls: type, f: dataclasses.Field) -> FieldSpec | None:
    spec = _plain_spec(cls, f)
    if spec is None or spec.kind not in ("int", "ints", "float", "quantity"):
        return spec
    limits = LIMITS.get((cls.__name__, f.name))
    if limits is None and spec.dimension is not None:
        name = next(k for k, d in DIMENSIONS.items() if d is spec.dimension)
        limits = _DIMENSION_LIMITS[name].scaled(spec.scale)
    # one place states each range: a number without one is a gap in the tables above
    assert limits is not None, f"no legal range for {cls.__name__}.{f.name}"
    return dataclasses.replace(spec, limits=limits)


def _plain_spec(cls: type, f: dataclasses.Field) -> FieldSpec | None:
    type_ = str(f.type)
    required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    words = WORDS.get((cls.__name__, f.name), ())
    if type_ in _ENUMS:
        members = tuple(m.value for m in _ENUMS[type_])
        return FieldSpec(
            f.name, f.name, "enum", words=members, enum=_ENUMS[type_], required=required
        )
    if type_ == "int" and f.name.endswith("_bytes"):
        return FieldSpec(
            f.name[: -len("_bytes")],
            f.name,
            "quantity",
            DIMENSIONS["size"],
            required=required,
            integer=True,
        )
    if type_ in ("int", "bool", "tuple[int, ...]"):
        kind = {"tuple[int, ...]": "ints"}.get(type_, type_)
        return FieldSpec(f.name, f.name, kind, required=required)
    if type_ == "str":
        return FieldSpec(f.name, f.name, "enum" if words else "str", words=words, required=required)
    if type_ in ("float", "float | None"):
        for suffix, dimension, scale in _SUFFIXES:
            if f.name.endswith(suffix):
                key = f.name[: -len(suffix)]
                return FieldSpec(
                    key,
                    f.name,
                    "quantity",
                    DIMENSIONS[dimension],
                    scale,
                    required=required,
                    optional=type_ == "float | None",
                )
        return FieldSpec(f.name, f.name, "float", required=required)
    return None  # a nested section


def _keys(cls: type) -> dict[str, FieldSpec]:
    specs = (_field_spec(cls, f) for f in dataclasses.fields(cls) if f.name not in _NOT_KEYS)
    return {s.key: s for s in specs if s is not None}


# section name -> (Target field, dataclass, labelled)
_SECTIONS: tuple[tuple[str, str, type, bool], ...] = (
    ("technology", "technology", Technology, False),
    ("crossbar", "crossbar", Crossbar, False),
    ("input_driver", "input_driver", InputDriver, False),
    ("converter", "converters", Converter, True),
    ("shift_add", "shift_add", DigitalUnit, False),
    ("accumulator", "accumulator", DigitalUnit, False),
    ("digital", "digital", DigitalUnit, False),
    ("center_offset", "center_offset", DigitalUnit, False),
    ("speculation", "speculation", DigitalUnit, False),
    ("column_mux", "column_mux", ColumnMux, False),
    ("buffer", "buffers", Buffer, True),
    ("hierarchy", "hierarchy", Hierarchy, False),
    ("interconnect", "interconnect", Interconnect, False),
)


@lru_cache(maxsize=1)
def target_schema() -> tuple[dict[str, FieldSpec], dict[str, SectionSpec]]:
    """Return the keys and the sections of a `target` block, derived from target.py."""
    target_fields = {f.name: f for f in dataclasses.fields(Target)}
    sections = {}
    for name, field_name, cls, labelled in _SECTIONS:
        f = target_fields[field_name]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        sections[name] = SectionSpec(name, field_name, cls, _keys(cls), labelled, required)
    section_fields = {s.field for s in sections.values()}
    keys = {k: s for k, s in _keys(Target).items() if s.field not in section_fields}
    keys.pop("description", None)
    keys["description"] = FieldSpec("description", "description", "str")
    return keys, sections


def convert(spec: FieldSpec, number: float, unit: str | None) -> float:
    """Return the stored value of `number unit` for this key (units already checked)."""
    if spec.dimension is None or unit is None:
        return number
    # in decimal, so that `7.3 fJ` is the float nearest 7.3e-15, not 7.300000000000001e-15
    exact = Decimal(repr(number)) * Decimal(repr(spec.dimension.units[unit]))
    return float(exact * Decimal(repr(spec.scale)))


def default_of(cls: type, name: str) -> Any:
    """Return the default of field `name` of dataclass `cls`."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            return f.default
    raise KeyError(name)
