"""The parser of the canonical text form, a lark LALR grammar; errors carry `file:line:col`."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import lark
import numpy as np

from imcc.errors import ParseError
from imcc.ir.attributes import coerce, struct_class, struct_field_kinds
from imcc.ir.graph import GRAPH_ATTRIBUTES, Constant, Graph, Node, Value
from imcc.ir.ops import ShapeError, all_ops, get_op
from imcc.ir.printer import parse_dense
from imcc.ir.types import DType, TensorType
from imcc.ir.weights import digest, frozen

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


def parse_graph(
    text: str,
    filename: str = "<string>",
    weights: Mapping[str, np.ndarray] | None = None,
) -> Graph:
    """Parse the text of one graph; `weights` maps blob digests to tensors (may be partial)."""
    try:
        tree = _parser().parse(text)
    except lark.UnexpectedInput as exc:
        raise _syntax_error(exc, text, filename) from None
    return _Builder(text, filename, weights or {}).graph(tree.children[0])


def _syntax_error(exc: lark.UnexpectedInput, text: str, filename: str) -> ParseError:
    line, column = exc.line, exc.column
    if line is None or line < 1:  # unexpected end of input
        lines = text.splitlines() or [""]
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
        message, filename=filename, line=line, column=column,
        source_line=_line(text, line), hint=hint,
    )


def _line(text: str, line: int) -> str:
    lines = text.splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else ""


class _Builder:
    """Turns a parse tree into a Graph, checking names, ops and attributes as it goes."""

    def __init__(self, text: str, filename: str, weights: Mapping[str, np.ndarray]) -> None:
        self.text = text
        self.filename = filename
        self.weights = weights
        self.types: dict[str, TensorType] = {}

    def error(self, where: Any, message: str, hint: str | None = None) -> ParseError:
        meta = getattr(where, "meta", None)
        line = getattr(where, "line", None) or getattr(meta, "line", 1)
        column = getattr(where, "column", None) or getattr(meta, "column", 1)
        return ParseError(
            message, filename=self.filename, line=line, column=column,
            source_line=_line(self.text, line), hint=hint,
        )

    def name(self, tree: lark.Tree) -> str:
        token = tree.children[0]
        return json.loads(token) if token.type == "STRING" else str(token)

    def define(self, tree: lark.Tree, type_: TensorType) -> str:
        name = self.name(tree)
        if name in self.types:
            raise self.error(tree, f"value %{name} is defined twice")
        self.types[name] = type_
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
        dims = tuple(int(t) for t in tree.children[1:] if t is not None)
        if any(d < 0 for d in dims):
            raise self.error(tree, "tensor dimensions must be >= 0")
        return TensorType(dims, dtype)

    def graph(self, tree: lark.Tree) -> Graph:
        name_tree, *rest = tree.children
        inputs: list[Value] = []
        constants: dict[str, Constant] = {}
        nodes: list[Node] = []
        outputs: tuple[str, ...] = ()
        attributes: dict[str, Any] = {}
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
        return Graph(self.name(name_tree), tuple(inputs), constants, tuple(nodes), outputs,
                     dict(self.types), attributes)

    def graph_attributes(self, tree: lark.Tree) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for attr in tree.children:
            if attr is None:
                continue
            key = str(attr.children[0])
            if key not in GRAPH_ATTRIBUTES:
                raise self.error(attr, f"unknown graph attribute '{key}'",
                                 f"valid graph attributes: {', '.join(GRAPH_ATTRIBUTES)}")
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
            elements = [str(t) for t in body.children if t is not None]
            if len(elements) != type_.size:
                raise self.error(
                    body, f"dense constant of type {type_} needs {type_.size} elements, "
                    f"got {len(elements)}")
            try:
                data = parse_dense(elements, type_.dtype, type_.shape)
            except ValueError as exc:
                raise self.error(body, f"bad element for {type_.dtype.value}: {exc}") from None
            return Constant.of(name, data)
        key = json.loads(body.children[0])
        data = self.weights.get(key)
        if data is not None:
            if TensorType.of(data) != type_ or digest(data) != key:
                raise self.error(body, f"blob {key} in the weight file does not match {type_}")
            data = frozen(data)
        return Constant(name, type_, key, data)

    def node(self, results: lark.Tree, tree: lark.Tree) -> Node:
        opname, *rest = tree.children
        operands = [c for c in rest if isinstance(c, lark.Tree) and c.data == "operand"]
        attr_tree = next((c for c in rest if isinstance(c, lark.Tree) and c.data == "attrdict"),
                         None)
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
        location = json.loads(loc.children[0]) if loc is not None else ""
        return Node(op, inputs, outputs, attrs, location)

    def value(self, tree: Any) -> Any:
        kind = tree.data
        if kind == "int":
            return int(tree.children[0])
        if kind == "float":
            return float(tree.children[0])
        if kind == "string":
            return json.loads(tree.children[0])
        if kind in ("true", "false"):
            return kind == "true"
        if kind == "dtype":
            return DType(str(tree.children[0]))
        if kind == "list":
            return [self.value(c) for c in tree.children if c is not None]
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
                if key not in kinds:
                    raise self.error(field, f"#{mnemonic} has no field '{key}'",
                                     f"valid fields: {', '.join(kinds)}")
                try:
                    values[key] = coerce(self.value(field.children[1]), kinds[key])
                except TypeError as exc:
                    raise self.error(field, f"field '{key}' of #{mnemonic}: {exc}") from None
            try:
                return cls(**values)
            except (TypeError, ValueError) as exc:
                raise self.error(tree, f"bad #{mnemonic}: {exc}") from None
        raise AssertionError(kind)
