"""Typed, frozen attribute values: their kinds, coercion, and canonical spelling.

An attribute value is one of: `int`, `float`, `bool`, `str`, a tuple of ints, a tuple of floats,
a `DType`, or a *structured attribute* — a frozen dataclass registered with
`structured_attribute("name")`, printed `#name<field = value, ...>`. Every op declares the kind
of each attribute (`AttrSpec`), so the parser can coerce `[]` or `1` to the declared kind and the
verifier can reject a value of the wrong kind.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import typing
from dataclasses import dataclass
from typing import Any

import numpy as np

from imcc.ir.types import DType


class AttrKind(enum.Enum):
    """The declared kind of an attribute."""

    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STR = "str"
    INTS = "ints"
    FLOATS = "floats"
    DTYPE = "dtype"
    STRUCT = "struct"


@dataclass(frozen=True, slots=True)
class AttrSpec:
    """An attribute an op accepts: its name, kind, and default (`REQUIRED` when it has none)."""

    name: str
    kind: AttrKind
    default: Any = None
    required: bool = False
    struct: type | None = None
    doc: str = ""
    optional: bool = False  # absent unless set (mapping decisions); never printed when absent


_STRUCTS: dict[str, type] = {}


def structured_attribute(mnemonic: str):
    """Register a frozen dataclass as a structured attribute printed `#mnemonic<...>`."""

    def register(cls: type) -> type:
        if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):
            raise TypeError(f"structured attribute {cls.__name__} must be a frozen dataclass")
        cls.mnemonic = mnemonic
        _STRUCTS[mnemonic] = cls
        return cls

    return register


def struct_class(mnemonic: str) -> type | None:
    """Return the structured-attribute class registered under a mnemonic, if any."""
    return _STRUCTS.get(mnemonic)


def struct_field_kinds(cls: type) -> dict[str, AttrKind]:
    """Return the attribute kind of each field of a structured attribute."""
    hints = typing.get_type_hints(cls)
    return {f.name: _kind_of_annotation(hints[f.name]) for f in dataclasses.fields(cls)}


def _kind_of_annotation(annotation: Any) -> AttrKind:
    simple = {int: AttrKind.INT, float: AttrKind.FLOAT, bool: AttrKind.BOOL, str: AttrKind.STR}
    if annotation in simple:
        return simple[annotation]
    if annotation is DType:
        return AttrKind.DTYPE
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        if args and args[0] is int:
            return AttrKind.INTS
        if args and args[0] is float:
            return AttrKind.FLOATS
    if isinstance(annotation, type) and annotation in _STRUCTS.values():
        return AttrKind.STRUCT
    raise TypeError(f"unsupported structured-attribute field type {annotation!r}")


def coerce(value: Any, kind: AttrKind) -> Any:
    """Return `value` as the canonical Python value of `kind`, or raise TypeError."""
    if kind is AttrKind.INT:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"expected an integer, got {format_value(value)}")
        return int(value)
    if kind is AttrKind.FLOAT:
        if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)
        ):
            raise TypeError(f"expected a float, got {format_value(value)}")
        return float(value)
    if kind is AttrKind.BOOL:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"expected true or false, got {format_value(value)}")
        return bool(value)
    if kind is AttrKind.STR:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {format_value(value)}")
        return value
    if kind is AttrKind.INTS:
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"expected a list of integers, got {format_value(value)}")
        return tuple(coerce(v, AttrKind.INT) for v in value)
    if kind is AttrKind.FLOATS:
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"expected a list of floats, got {format_value(value)}")
        return tuple(coerce(v, AttrKind.FLOAT) for v in value)
    if kind is AttrKind.DTYPE:
        if not isinstance(value, DType):
            raise TypeError(f"expected an element type, got {format_value(value)}")
        return value
    if kind is AttrKind.STRUCT:
        if not hasattr(type(value), "mnemonic"):
            raise TypeError(f"expected a structured attribute, got {format_value(value)}")
        return value
    raise AssertionError(kind)


def format_float(value: float) -> str:
    """Spell a float so that it always reads back as the same float (and never as an int)."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = repr(float(value))
    if "e" not in text and "." not in text:
        text += ".0"
    return text


def format_value(value: Any) -> str:
    """Spell an attribute value in the canonical text form."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format_float(float(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, DType):
        return value.value
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if hasattr(type(value), "mnemonic"):
        fields = ", ".join(
            f"{f.name} = {format_value(getattr(value, f.name))}"
            for f in dataclasses.fields(value)
            if not (f.metadata.get("omit_default") and getattr(value, f.name) == f.default)
        )
        return f"#{type(value).mnemonic}<{fields}>"
    return repr(value)
