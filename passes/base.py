"""The `Pass` base class: a frozen dataclass whose fields are its options, spelled as text.

A pass prints as its pipeline spelling: the name, then every option in field order inside braces,
separated by spaces (no braces when the pass has no options):

    fold-constants{max_elements=1048576}
    tile-crossbar{rows=128 cols=128 slices=[4,2,2] encoding=differential}

Option values, by field type:

| type                | canonical spelling           | also accepted            |
|---------------------|------------------------------|--------------------------|
| `int`               | `128`, `-3`                  | `+3`                     |
| `float`             | `0.5`, `1e-05`, `inf`, `nan` | `1`, `.5`, `-inf`        |
| `bool`              | `true`, `false`              |                          |
| `str`               | `differential`, `"a b"`      | `"differential"`         |
| `tuple[int, ...]`   | `[4,2,2]`, `[]`              | spaces after commas      |
| `tuple[float, ...]` | `[0.5,1.0]`                  | spaces after commas      |
| `tuple[str, ...]`   | `[sar,flash]`                | spaces after commas      |
| `tuple[bool, ...]`  | `[true,false]`               | spaces after commas      |

A string prints bare when it matches `[A-Za-z0-9_.+/:-]+`, else JSON-quoted.
Lists use brackets, so the commas inside them never split a pipeline.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

from imcc.ir.attributes import format_float

if typing.TYPE_CHECKING:
    from imcc.ir.graph import Graph
    from imcc.passes.context import Context

BARE_STRING = re.compile(r"[A-Za-z0-9_.+/:-]+")
_INT = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?inf|nan")


class OptionKind(enum.Enum):
    """The type of a pass option; the value is its spelling in `imcc passes`."""

    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STR = "str"
    INTS = "tuple[int, ...]"
    FLOATS = "tuple[float, ...]"
    STRS = "tuple[str, ...]"
    BOOLS = "tuple[bool, ...]"

    @property
    def expected(self) -> str:
        """Describe the values of this kind, for error messages."""
        return _EXPECTED[self]


_EXPECTED = {
    OptionKind.INT: "an integer",
    OptionKind.FLOAT: "a float",
    OptionKind.BOOL: "true or false",
    OptionKind.STR: "a string",
    OptionKind.INTS: "a list of integers like [4,2,2]",
    OptionKind.FLOATS: "a list of floats like [0.5,1.0]",
    OptionKind.STRS: "a list of names like [sar,flash]",
    OptionKind.BOOLS: "a list of true/false like [true,false]",
}
_ANNOTATIONS: dict[Any, OptionKind] = {
    int: OptionKind.INT,
    float: OptionKind.FLOAT,
    bool: OptionKind.BOOL,
    str: OptionKind.STR,
    tuple[int, ...]: OptionKind.INTS,
    tuple[float, ...]: OptionKind.FLOATS,
    tuple[str, ...]: OptionKind.STRS,
    tuple[bool, ...]: OptionKind.BOOLS,
}


_LISTS = {
    OptionKind.INTS: OptionKind.INT,
    OptionKind.FLOATS: OptionKind.FLOAT,
    OptionKind.STRS: OptionKind.STR,
    OptionKind.BOOLS: OptionKind.BOOL,
}


def is_list_kind(kind: OptionKind) -> bool:
    """Say whether options of this kind hold lists (`[4,2,2]`, or `4,2,2` inside braces)."""
    return kind in _LISTS


def _parse_scalar(kind: OptionKind, text: str) -> Any:
    if kind is OptionKind.INT and _INT.fullmatch(text):
        return int(text)
    if kind is OptionKind.FLOAT and _FLOAT.fullmatch(text):
        return float(text)
    if kind is OptionKind.BOOL and text in ("true", "false"):
        return text == "true"
    if kind is OptionKind.STR:
        if text.startswith('"'):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError(text) from None
            if isinstance(value, str):
                return value
        elif BARE_STRING.fullmatch(text):
            return text
    raise ValueError(text)


def _format_scalar(kind: OptionKind, value: Any) -> str:
    if kind is OptionKind.BOOL:
        return "true" if value else "false"
    if kind is OptionKind.INT:
        return str(int(value))
    if kind is OptionKind.FLOAT:
        return format_float(float(value))
    return value if BARE_STRING.fullmatch(value) else json.dumps(value)


@dataclass(frozen=True, slots=True)
class Bounds:
    """The legal values of an option (of each entry, for a list option), independent of the
    graph and the target: an inclusive `minimum` / `maximum`, an exclusive lower bound `above`,
    or a set of `choices`; a float option with bounds must also be finite. Checked when a
    pipeline is parsed and when a pass is constructed; what depends on the target is checked
    when the pass runs."""

    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    choices: tuple[str, ...] | None = None

    def describe(self) -> str:
        """Spell the bounds for `imcc passes` and messages, e.g. `1..16` or `> 0`."""
        if self.choices is not None:
            return " | ".join(c or '""' for c in self.choices)
        low = (
            f"> {_number(self.above)}"
            if self.above is not None
            else f">= {_number(self.minimum)}"
            if self.minimum is not None
            else ""
        )
        if self.maximum is None:
            return low
        if self.minimum is not None and self.above is None:
            return f"{_number(self.minimum)}..{_number(self.maximum)}"
        return f"{low}, <= {_number(self.maximum)}" if low else f"<= {_number(self.maximum)}"

    def violation(self, value: Any) -> str | None:
        """Return why `value` is out of bounds, or None when it is legal."""
        if self == Bounds():  # no bounds declared: any spelling the option's type reads
            return None
        if isinstance(value, float) and not math.isfinite(value):  # NaN compares false
            return "must be finite"
        if self.choices is not None:
            return None if value in self.choices else f"must be one of {self.describe()}"
        if isinstance(value, str | bool):
            return None
        outside = (
            (self.minimum is not None and value < self.minimum)
            or (self.maximum is not None and value > self.maximum)
            or (self.above is not None and value <= self.above)
        )
        return f"must be {self.describe()}" if outside else None


def _number(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One option of a pass: field name, kind, default (`required` when it has none), doc and
    the bounds of its values."""

    name: str
    kind: OptionKind
    default: Any
    required: bool
    doc: str
    bounds: Bounds = Bounds()

    def check(self, value: Any) -> str | None:
        """Return why `value` (every entry of a list) is illegal for this option, or None."""
        for item in value if self.kind in _LISTS else (value,):
            why = self.bounds.violation(item)
            if why is not None:
                entry = f"entry {item!r}" if self.kind in _LISTS else f"{item!r}"
                return f"option '{self.name}': {entry} {why}"
        return None

    def format(self, value: Any) -> str:
        """Spell a value of this option canonically."""
        if self.kind in _LISTS:
            element = _LISTS[self.kind]
            return "[" + ",".join(_format_scalar(element, v) for v in value) + "]"
        return _format_scalar(self.kind, value)

    def parse(self, text: str) -> Any:
        """Read a value of this option from its spelling, or raise ValueError."""
        if self.kind in _LISTS:
            element = _LISTS[self.kind]
            if not (text.startswith("[") and text.endswith("]")):
                raise ValueError(text)
            inner = text[1:-1].strip()
            if not inner:
                return ()
            return tuple(_parse_scalar(element, item.strip()) for item in inner.split(","))
        return _parse_scalar(self.kind, text)


def option(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """Declare a pass option field with a default, a one-line description and the bounds of its
    values (of each entry, for a list): see `Bounds`."""
    bounds = Bounds(minimum, maximum, above, choices)
    return dataclasses.field(default=default, metadata={"doc": doc, "bounds": bounds})


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class PerLayerOption:
    """Names the list option that overrides a uniform option layer by layer.

    `uniform` is the option whose legal values `search_space` declares, `per_layer` the list
    option with one entry per crossbar layer, and `entry` turns one uniform value into one list
    entry (e.g. weight slices `(4, 2, 2)` into slice-weights' `"4-2-2"`); `supersedes` names
    other uniform options that the pass ignores once the per-layer list is given (they are not
    worth searching then). The autotuner reads these declarations to search every layer's
    choice on its own.
    """

    uniform: str
    per_layer: str
    entry: Callable[[Any], Any] = _same
    supersedes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Pass:
    """A graph-to-graph transformation; subclasses are frozen dataclasses of their options.

    Subclasses set `name` (the pipeline spelling), implement `run`, and may declare the legal
    values of their options for a graph and target in `search_space`. A tunable option that
    also has a per-layer list counterpart is declared in `per_layer_options`; the autotuner then
    searches one entry per crossbar layer (`layer_search_space`) instead of the uniform value.
    A pass that sets only how values are converted (a converter's range, a normalisation:
    nothing the cost model reads) says so with `priced = False`, and an evaluation of cost
    alone leaves it out.
    """

    name: ClassVar[str] = ""
    per_layer_options: ClassVar[tuple[PerLayerOption, ...]] = ()
    priced: ClassVar[bool] = True

    def run(self, graph: Graph, ctx: Context) -> Graph:
        """Return the transformed graph (never mutate `graph`)."""
        raise NotImplementedError(f"pass '{self.name}' does not implement run()")

    def __post_init__(self) -> None:
        """Refuse option values outside their bounds (passes built in code, e.g. by a search)."""
        for spec in self.options():
            why = spec.check(getattr(self, spec.name))
            if why is not None:
                from imcc.errors import OptionError

                raise OptionError(f"pass '{self.name}': {why}")

    def search_space(self, graph: Graph, ctx: Context) -> dict[str, list[Any]]:
        """Return the legal values of each tunable option for this graph and target."""
        return {}

    def layer_search_space(self, graph: Graph, ctx: Context) -> dict[str, list[list[Any]]]:
        """Return, for each per-layer list option, the legal entries of every crossbar layer.

        Derived from `search_space` and `per_layer_options`: each layer may take every legal
        uniform value, spelled as a list entry. Passes override it to narrow a layer's choices.
        """
        from imcc.passes.layers import crossbar_layers

        space = self.search_space(graph, ctx)
        count = len(crossbar_layers(graph))
        return {
            declared.per_layer: [
                [declared.entry(v) for v in space[declared.uniform]] for _ in range(count)
            ]
            for declared in self.per_layer_options
            if declared.uniform in space
        }

    @classmethod
    def options(cls) -> tuple[OptionSpec, ...]:
        """Return the options of this pass in field order."""
        return option_specs(cls)

    @classmethod
    def summary(cls) -> str:
        """Return the first line of the pass docstring."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0].strip() if doc else ""

    def __str__(self) -> str:
        specs = self.options()
        if not specs:
            return self.name
        body = " ".join(f"{s.name}={s.format(getattr(self, s.name))}" for s in specs)
        return f"{self.name}{{{body}}}"


@cache
def option_specs(cls: type[Pass]) -> tuple[OptionSpec, ...]:
    """Derive the option specs of a pass class from its dataclass fields and annotations."""
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
        raise TypeError(f"pass {cls.__name__} must be a frozen dataclass")
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        kind = _ANNOTATIONS.get(hints[f.name])
        if kind is None:
            raise TypeError(
                f"option '{f.name}' of pass {cls.__name__} has unsupported type {hints[f.name]!r}"
                f" (use one of: {', '.join(k.value for k in OptionKind)})"
            )
        if f.default is not dataclasses.MISSING:
            default, required = f.default, False
        elif f.default_factory is not dataclasses.MISSING:
            default, required = f.default_factory(), False
        else:
            default, required = None, True
        specs.append(
            OptionSpec(
                f.name,
                kind,
                default,
                required,
                f.metadata.get("doc", ""),
                f.metadata.get("bounds", Bounds()),
            )
        )
    return tuple(specs)
