"""The op set of the IR: each op's operands, typed attributes and shape rule."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imcc.ir.attributes import AttrSpec, coerce, format_value
from imcc.ir.graph import Constant
from imcc.ir.types import TensorType


class ShapeError(ValueError):
    """Operand types or attributes that an op's shape rule rejects."""


InferFn = Callable[[list[TensorType], dict[str, Any], list[Constant | None]], list[TensorType]]


@dataclass(frozen=True)
class OpDef:
    """Defines one op: operands (`x`, optional `b?`, variadic `xs*`), attributes, shape rule."""

    name: str
    summary: str
    operands: tuple[str, ...]
    attributes: tuple[AttrSpec, ...]
    infer_fn: InferFn

    @property
    def min_operands(self) -> int:
        """Return the number of operands that must be present."""
        return sum(1 for o in self.operands if not o.endswith(("?", "*")))

    @property
    def max_operands(self) -> int | None:
        """Return the largest number of operands, or None when the last one is variadic."""
        if self.operands and self.operands[-1].endswith("*"):
            return None
        return len(self.operands)

    def attribute_spec(self, name: str) -> AttrSpec | None:
        """Return the spec of an attribute, or None if the op has no such attribute."""
        return next((a for a in self.attributes if a.name == name), None)

    def complete_attributes(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Check and coerce attributes, fill defaults; keys come out in declaration order."""
        unknown = [k for k in attrs if self.attribute_spec(k) is None]
        if unknown:
            valid = ", ".join(a.name for a in self.attributes) or "none"
            raise ShapeError(
                f"'{self.name}' has no attribute '{unknown[0]}' (valid attributes: {valid})"
            )
        out: dict[str, Any] = {}
        for spec in self.attributes:
            if spec.name in attrs:
                try:
                    out[spec.name] = coerce(attrs[spec.name], spec.kind)
                    if spec.struct is not None and not isinstance(out[spec.name], spec.struct):
                        raise TypeError(f"expected #{spec.struct.mnemonic}<...>")
                except TypeError as exc:
                    raise ShapeError(f"attribute '{spec.name}' of '{self.name}': {exc}") from None
            elif spec.required:
                raise ShapeError(f"'{self.name}' needs attribute '{spec.name}' ({spec.kind.value})")
            elif not spec.optional:
                out[spec.name] = spec.default
        return out

    def infer(
        self,
        types: Sequence[TensorType],
        attrs: Mapping[str, Any],
        constants: Sequence[Constant | None] | None = None,
    ) -> list[TensorType]:
        """Check the operand count and return the result types, or raise ShapeError."""
        n = len(types)
        if n < self.min_operands or (self.max_operands is not None and n > self.max_operands):
            expected = ", ".join(self.operands)
            raise ShapeError(f"'{self.name}' takes operands ({expected}), got {n}")
        consts = list(constants) if constants is not None else [None] * n
        return self.infer_fn(list(types), dict(attrs), consts)

    def signature(self) -> str:
        """Return a one-line signature, e.g. `conv(x, w, b?) {strides: ints, ...}`."""
        attrs = ", ".join(
            f"{a.name}: {a.kind.value}"
            + ("" if a.required else "?" if a.optional else f" = {format_value(a.default)}")
            for a in self.attributes
        )
        return f"{self.name}({', '.join(self.operands)})" + (f" {{{attrs}}}" if attrs else "")


_OPS: dict[str, OpDef] = {}


def define_op(
    name: str,
    summary: str,
    operands: Sequence[str],
    attributes: Sequence[AttrSpec] = (),
) -> Callable[[InferFn], InferFn]:
    """Register an op; decorates its shape rule."""

    def register(fn: InferFn) -> InferFn:
        if name in _OPS:
            raise ValueError(f"op '{name}' defined twice")
        _OPS[name] = OpDef(name, summary, tuple(operands), tuple(attributes), fn)
        return fn

    return register


def get_op(name: str) -> OpDef:
    """Return the definition of an op, or raise KeyError."""
    _load()
    return _OPS[name]


def all_ops() -> dict[str, OpDef]:
    """Return every defined op by name."""
    _load()
    return dict(sorted(_OPS.items()))


def _load() -> None:
    from imcc.ir.ops import elementwise, nn, quant, tensor  # noqa: F401  (they register ops)
