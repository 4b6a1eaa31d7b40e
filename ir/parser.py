"""The parser of the canonical text form, a lark LALR grammar; errors carry `file:line:col`."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import lark
import numpy as np

from imcc.errors import BlobError, ParseError, SourceError
from imcc.ir.attributes import coerce, struct_class, struct_field_kinds
from imcc.ir.graph import GRAPH_ATTRIBUTES, Constant, Graph, Node, Value
from imcc.ir.mapping import MAPPING_HINT
from imcc.ir.ops import ShapeError, all_ops, get_op
from imcc.ir.printer import StringSyntaxError, element_problem, parse_dense, parse_string
from imcc.ir.types import DType, TensorType
from imcc.ir.weights import blob_problem, frozen

GRAMMAR = r"""
start: graph
graph: "graph" "@" name "(" [arg ("," arg)*] ")" [graphattrs] "{" item* ret "}"
graphattrs: "attributes" attrdict
arg: "%" name ":" type
item: results "=" (const | node)
const: "const" type (dense | blob)
dense: "dense" "<" "[" [ELEMENT ("," ELEMENT)*] "]" ">"
blob: "blob" "<" STRING ">"
node: OPNAME "(" [operand ("," operand)*] ")" [attrdict] ":" type ("," type)* [loc]
results: "%" name ("," "%" name)*
operand: "%" name
attrdict: "{" [attr ("," attr)*] "}"
attr: IDENT "=" value
?value: INT -> int
      | FLOAT -> float
      | STRING -> string
      | "true" -> true
      | "false" -> false
      | DTYPE -> dtype
      | "[" [value ("," value)*] "]" -> list
      | "#" IDENT "<" [attr ("," attr)*] ">" -> struct
type: DTYPE "[" [INT ("," INT)*] "]"
loc: "loc" "(" STRING ")"
ret: "return" operand ("," operand)*
name: BARE | STRING

DTYPE.3: /(bool|i8|i16|i32|i64|u8|u16|u32|u64|f16|f32|f64)(?![A-Za-z0-9_])/
FLOAT.2: /-?(\d+\.\d*([eE][+-]?\d+)?|\d+[eE][+-]?\d+|inf)|nan/
INT: /-?\d+/
ELEMENT: /-?(\d+\.?\d*([eE][+-]?\d+)?|inf)|nan|true|false/
BARE: /[A-Za-z0-9_.$-]+/
OPNAME: /[a-z_][a-z0-9_]*/
IDENT: /[A-Za-z_][A-Za-z0-9_]*/
STRING: /"([^"\\]|\\.)*"/
COMMENT: /\/\/[^\n]*/
%import common.WS
%ignore WS
%ignore COMMENT
"""

_TOKEN_NAMES = {
    "RPAR": "')'",
    "LPAR": "'('",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "COLON": "':'",
    "EQUAL": "'='",
    "PERCENT": "'%'",
    "MORETHAN": "'>'",
    "LESSTHAN": "'<'",
    "AT": "'@'",
    "DTYPE": "an element type (f32, i64, ...)",
    "INT": "an integer",
    "FLOAT": "a float",
    "STRING": "a string",
    "BARE": "a name",
    "OPNAME": "an op name",
    "IDENT": "an attribute name",
    "ELEMENT": "a number",
    "RETURN": "'return'",
    "CONST": "'const'",
}


@lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=True)


INT64_MAX = 2**63 - 1
"""Integers in the text (dimensions, attributes) must fit in 64 bits: numpy and the backends
hold them as int64, where a larger one would wrap or raise far from the file."""

MAX_NESTING = 32
"""Deepest list nesting accepted in an attribute value (no attribute needs more than 2)."""


@dataclasses.dataclass
class SourceMap:
    """Where each value of a parsed program is defined, to point errors found later at a line."""

    text: str
    filename: str
    header: tuple[int, int] = (1, 1)
    values: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)

    def error(
        self, cls: type[SourceError], message: str, value: str | None, hint: str | None = None
    ) -> SourceError:
        """Return a `cls` error at the definition of `value` (the graph header without one)."""
        line, column = self.values.get(value, self.header) if value else self.header
        return cls(
            message,
            filename=self.filename,
            line=line,
            column=column,
            source_line=_line(self.text, line),
            hint=hint,
        )


def parse_graph(
    text: str,
    filename: str = "<string>",
    weights: Mapping[str, np.ndarray] | None = None,
) -> Graph:
    """Parse the text of one graph; `weights` maps blob digests to tensors (may be partial)."""
    return parse_graph_located(text, filename, weights)[0]


def parse_graph_located(
    text: str,
    filename: str = "<string>",
    weights: Mapping[str, np.ndarray] | None = None,
    weight_file: str | None = None,
) -> tuple[Graph, SourceMap]:
    """Parse one graph and say where each value is defined.

    With `weight_file` (the name of the file `weights` came from) every blob the text references
    must be in `weights`: a weight file that lacks some is the wrong file or a damaged one.
    """
    try:
        tree = _parser().parse(text)
    except lark.UnexpectedInput as exc:
        raise _syntax_error(exc, text, filename) from None
    except RecursionError:  # lark builds its tree recursively: absurdly deep brackets
        raise ParseError(
            "the text nests brackets too deeply",
            filename=filename,
            line=1,
            column=1,
            source_line=_line(text, 1),
        ) from None
    builder = _Builder(text, filename, weights or {}, weight_file)
    graph = builder.graph(tree.children[0])
    return graph, builder.source_map


def _syntax_error(exc: lark.UnexpectedInput, text: str, filename: str) -> ParseError:
    line, column = exc.line, exc.column
    if line is None or line < 1:  # unexpected end of input
        lines = text.split("\n")
        line, column = len(lines), len(lines[-1]) + 1
    if isinstance(exc, lark.UnexpectedToken):
        expected = sorted({_TOKEN_NAMES.get(t, t.lower()) for t in exc.expected})
        if exc.token.type == "$END":
            message = "unexpected end of input"
            hint = "a graph ends with `return %value` and `}`"
        else:
            message = f"unexpected {str(exc.token)!r}"
            hint = "expected " + " or ".join(expected[:6]) if expected else None
    elif isinstance(exc, lark.UnexpectedCharacters):
        message = f"unexpected character {text[exc.pos_in_stream]!r}"
        hint = None
    else:
        message, hint = "unexpected end of input", "the graph is not closed with '}'"
    return ParseError(
        message,
        filename=filename,
        line=line,
        column=column,
        source_line=_line(text, line),
        hint=hint,
    )


def _line(text: str, line: int) -> str:
    """Return a source line to print under a message, control characters shown as spaces.

    lark counts lines by "\n" only (str.splitlines() would also split at \r, \f, U+2028...);
    a raw tab or CR printed as is would move the text away from the caret below it.
    """
    lines = text.split("\n")
    source = lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else ""
    return _CONTROL.sub(" ", source)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _position(text: str, offset: int) -> tuple[int, int]:
    """Return the 1-based line and column of a character offset."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


class _Builder:
    """Turns a parse tree into a Graph, checking names, ops and attributes as it goes."""

    def __init__(
        self,
        text: str,
        filename: str,
        weights: Mapping[str, np.ndarray],
        weight_file: str | None = None,
    ) -> None:
        self.text = text
        self.filename = filename
        self.weights = weights
        self.weight_file = weight_file
        self.types: dict[str, TensorType] = {}
        self.source_map = SourceMap(text, filename)
        self.missing: list[tuple[str, str]] = []  # (value, digest) of blobs not in the file

    def at(self, offset: int, message: str, hint: str | None = None) -> ParseError:
        """Return a ParseError at a character offset of the text."""
        return self.error_at(*_position(self.text, offset), message, hint)

    def error_at(self, line: int, column: int, message: str, hint: str | None) -> ParseError:
        """Return a ParseError at a line and column, with the source line for the caret."""
        return ParseError(
            message,
            filename=self.filename,
            line=line,
            column=column,
            source_line=_line(self.text, line),
            hint=hint,
        )

    def string(self, token: lark.Token) -> str:
        """Decode a quoted string (names, locations, string attributes) at its token."""
        try:
            return parse_string(str(token))
        except StringSyntaxError as exc:
            raise self.at((token.start_pos or 0) + exc.offset, str(exc), exc.hint) from None

    def integer(self, token: lark.Token, what: str = "integer") -> int:
        """Read an integer token that must fit in 64 bits (checked before int() parses it)."""
        text = str(token)
        if len(text.lstrip("-")) > 19 or not -INT64_MAX - 1 <= int(text) <= INT64_MAX:
            raise self.error(
                token,
                f"{what} {text[:24]}{'...' if len(text) > 24 else ''} does not fit in 64 bits",
            )
        return int(text)

    def error(self, where: Any, message: str, hint: str | None = None) -> ParseError:
        meta = getattr(where, "meta", None)
        line = getattr(where, "line", None) or getattr(meta, "line", 1)
        column = getattr(where, "column", None) or getattr(meta, "column", 1)
        return self.error_at(line, column, message, hint)

    def name(self, tree: lark.Tree) -> str:
        token = tree.children[0]
        return self.string(token) if token.type == "STRING" else str(token)

    def define(self, tree: lark.Tree, type_: TensorType) -> str:
        name = self.name(tree)
        if name in self.types:
            raise self.error(tree, f"value %{name} is defined twice")
        self.types[name] = type_
        self.source_map.values[name] = (tree.meta.line, tree.meta.column)
        return name

    def use(self, tree: lark.Tree) -> str:
        name = self.name(tree.children[0])
        if name not in self.types:
            close = difflib.get_close_matches(name, list(self.types), n=1)
            hint = f"did you mean %{close[0]}?" if close else "values must be defined before use"
            raise self.error(tree, f"use of undefined value %{name}", hint)
        return name

    def type(self, tree: lark.Tree) -> TensorType:
        dtype = DType(str(tree.children[0]))
        tokens = [t for t in tree.children[1:] if t is not None]
        dims = tuple(self.integer(t, "dimension") for t in tokens)
        for token, dim in zip(tokens, dims, strict=True):
            if dim < 0:
                raise self.error(
                    token,
                    f"negative dimension {dim} in a tensor type",
                    "dimensions are static sizes >= 0",
                )
        if math.prod(dims) > INT64_MAX:
            raise self.error(
                tree, f"{dtype.value}[{','.join(map(str, dims))}] has more than 2^63 elements"
            )
        return TensorType(dims, dtype)

    def graph(self, tree: lark.Tree) -> Graph:
        name_tree, *rest = tree.children
        inputs: list[Value] = []
        constants: dict[str, Constant] = {}
        nodes: list[Node] = []
        outputs: tuple[str, ...] = ()
        attributes: dict[str, Any] = {}
        self.source_map.header = (tree.meta.line, tree.meta.column)
        for child in rest:
            if child is None:
                continue
            if child.data == "graphattrs":
                attributes = self.graph_attributes(child.children[0])
            elif child.data == "arg":
                type_ = self.type(child.children[1])
                inputs.append(Value(self.define(child.children[0], type_), type_))
            elif child.data == "ret":
                outputs = tuple(self.use(op) for op in child.children)
            elif child.children[1].data == "const":
                constant = self.const(child.children[0], child.children[1])
                constants[constant.name] = constant
            else:
                nodes.append(self.node(child.children[0], child.children[1]))
        if self.missing:
            raise self.missing_blobs()
        return Graph(
            self.name(name_tree),
            tuple(inputs),
            constants,
            tuple(nodes),
            outputs,
            dict(self.types),
            attributes,
        )

    def graph_attributes(self, tree: lark.Tree) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for attr in tree.children:
            if attr is None:
                continue
            key = str(attr.children[0])
            if key in result:
                raise self.error(attr, f"graph attribute '{key}' given twice")
            if key not in GRAPH_ATTRIBUTES:
                raise self.error(
                    attr,
                    f"unknown graph attribute '{key}'",
                    f"valid graph attributes: {', '.join(GRAPH_ATTRIBUTES)}",
                )
            value = self.value(attr.children[1])
            if not isinstance(value, str):
                raise self.error(attr, f"graph attribute '{key}' must be a string")
            result[key] = value
        return result

    def const(self, results: lark.Tree, tree: lark.Tree) -> Constant:
        if len(results.children) != 1:
            raise self.error(results, "a constant defines exactly one value")
        type_tree, body = tree.children
        type_ = self.type(type_tree)
        name = self.define(results.children[0], type_)
        if body.data == "dense":
            return Constant.of(name, self.dense(body, type_))
        key = self.string(body.children[0])
        data = self.weights.get(key)
        if data is not None:
            problem = blob_problem(key, data, type_, from_file=self.weight_file is not None)
            if problem is not None:
                where = f" in {self.weight_file}" if self.weight_file else ""
                raise self.source_map.error(
                    BlobError,
                    f"blob {key} of %{name}{where} {problem}",
                    name,
                    "the weight file does not belong to this program: recompile it, or "
                    "pass --weights FILE.npz",
                )
            data = frozen(data)
        elif self.weight_file is not None:
            self.missing.append((name, key))
        return Constant(name, type_, key, data)

    def dense(self, body: lark.Tree, type_: TensorType) -> np.ndarray:
        tokens = [t for t in body.children if t is not None]
        if len(tokens) != type_.size:
            raise self.error(
                body,
                f"dense constant of type {type_} needs {type_.size} elements, got {len(tokens)}",
            )
        for token in tokens:  # each element must be a literal of the type, not just parse as one
            problem = element_problem(str(token), type_.dtype)
            if problem is not None:
                raise self.error(token, problem)
        return parse_dense([str(t) for t in tokens], type_.dtype, type_.shape)

    def missing_blobs(self) -> BlobError:
        name, key = self.missing[0]
        more = f" ({len(self.missing)} blobs are missing)" if len(self.missing) > 1 else ""
        return self.source_map.error(
            BlobError,
            f"blob {key} of %{name} is not in the weight file {self.weight_file}{more}",
            name,
            "the weight file belongs to another program or is damaged: recompile, or "
            "pass --weights FILE.npz",
        )

    def node(self, results: lark.Tree, tree: lark.Tree) -> Node:
        opname, *rest = tree.children
        operands = [c for c in rest if isinstance(c, lark.Tree) and c.data == "operand"]
        attr_tree = next(
            (c for c in rest if isinstance(c, lark.Tree) and c.data == "attrdict"), None
        )
        types = [self.type(c) for c in rest if isinstance(c, lark.Tree) and c.data == "type"]
        loc = next((c for c in rest if isinstance(c, lark.Tree) and c.data == "loc"), None)
        op = str(opname)
        try:
            opdef = get_op(op)
        except KeyError:
            close = difflib.get_close_matches(op, list(all_ops()), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "`imcc ops` lists the ops"
            raise self.error(opname, f"unknown op '{op}'", hint) from None
        inputs = tuple(self.use(o) for o in operands)
        raw = {}
        if attr_tree is not None:
            for attr in attr_tree.children:
                if attr is None:
                    continue
                key = str(attr.children[0])
                if key in raw:
                    raise self.error(attr, f"attribute '{key}' given twice")
                raw[key] = self.value(attr.children[1])
        try:
            attrs = opdef.complete_attributes(raw)
        except ShapeError as exc:
            raise self.error(attr_tree or opname, str(exc)) from None
        names = [c for c in results.children]
        if len(names) != len(types):
            raise self.error(tree, f"{len(names)} results but {len(types)} result types")
        outputs = tuple(self.define(n, t) for n, t in zip(names, types, strict=True))
        location = self.string(loc.children[0]) if loc is not None else ""
        return Node(op, inputs, outputs, attrs, location)

    def value(self, tree: Any, depth: int = 0) -> Any:
        kind = tree.data
        if depth > MAX_NESTING:
            raise self.error(tree, f"attribute value nested more than {MAX_NESTING} deep")
        if kind == "int":
            return self.integer(tree.children[0])
        if kind == "float":
            number = float(tree.children[0])
            if math.isinf(number) and "inf" not in tree.children[0]:  # 1e999 is no float64
                raise self.error(tree.children[0], f"{tree.children[0]} is out of range")
            return number
        if kind == "string":
            return self.string(tree.children[0])
        if kind in ("true", "false"):
            return kind == "true"
        if kind == "dtype":
            return DType(str(tree.children[0]))
        if kind == "list":
            return [self.value(c, depth + 1) for c in tree.children if c is not None]
        if kind == "struct":
            mnemonic, *fields = tree.children
            cls = struct_class(str(mnemonic))
            if cls is None:
                raise self.error(mnemonic, f"unknown structured attribute #{mnemonic}")
            kinds = struct_field_kinds(cls)
            values = {}
            for field in fields:
                if field is None:
                    continue
                key = str(field.children[0])
                if key in values:
                    raise self.error(field, f"field '{key}' of #{mnemonic} given twice")
                if key not in kinds:
                    raise self.error(
                        field,
                        f"#{mnemonic} has no field '{key}'",
                        f"valid fields: {', '.join(kinds)}",
                    )
                try:
                    values[key] = coerce(self.value(field.children[1], depth + 1), kinds[key])
                except TypeError as exc:
                    raise self.error(field, f"field '{key}' of #{mnemonic}: {exc}") from None
            try:
                return cls(**values)
            except (TypeError, ValueError) as exc:
                raise self.error(tree, f"bad #{mnemonic}: {exc}", MAPPING_HINT) from None
        raise AssertionError(kind)
