"""The syntax of `.hw` target files: a lark grammar and a tree of sections, entries and values.

A `.hw` file is one `target "name" { ... }` section. A section holds `key = value` entries and
nested sections (`crossbar { ... }`, `converter adc8 { ... }`), one per line or separated by `;`.
Values are numbers with an optional unit (`1.28 GHz`, `128`), words (`rram`, `sample-hold`,
`true`), strings (`"ISAAC-like"`) and lists (`[1, 2, 4]`, which may span lines). `//` starts a
comment. This module only checks the shape of the text; hw_schema.py gives the words meaning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import lark

from imcc.errors import ParseError

GRAMMAR = r"""
start: _SEP? section _SEP?
section: NAME [label] "{" _SEP? (_entry _SEP)* [_entry] "}"
label: NAME | STRING
_entry: section | assign
assign: NAME "=" value
?value: NUMBER [UNIT] -> number
      | STRING -> string
      | NAME -> word
      | "[" _SEP? [value (_SEP? "," _SEP? value)* _SEP? [","] _SEP?] "]" -> list

NUMBER: /[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?/
UNIT: /[A-Za-z][A-Za-z0-9]*(\/[A-Za-z]+)?/
NAME: /[A-Za-z_][A-Za-z0-9_-]*/
STRING: /"([^"\\\n]|\\.)*"/
COMMENT: /\/\/[^\n]*/
_SEP: /((\r?\n|;)[ \t\f]*(\/\/[^\n]*)?)+/
%ignore /[ \t\f]+/
%ignore COMMENT
"""

_TOKEN_NAMES = {
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "EQUAL": "'='",
    "NUMBER": "a number",
    "UNIT": "a unit",
    "NAME": "a name",
    "STRING": "a string",
    "_SEP": "a new line",
}


@dataclass(frozen=True, slots=True)
class Value:
    """A value as written: `number` (float, unit or None), `string`, `word` or `list`."""

    kind: str
    value: Any  # float, str, or tuple[Value, ...]
    unit: str | None
    text: str  # as written, for messages
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One `key = value` line."""

    key: str
    value: Value
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Section:
    """One `kind [label] { ... }` block with its entries and nested sections in order."""

    kind: str
    label: str | None
    body: tuple[Entry | Section, ...]
    line: int
    column: int


@lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def parse_syntax(text: str, filename: str) -> Section:
    """Parse the text of a `.hw` file into its top-level Section, or raise ParseError."""
    try:
        tree = _parser().parse(text)
    except lark.UnexpectedInput as exc:
        raise _syntax_error(exc, text, filename) from None
    return _section(tree.children[0], text)


def source_line(text: str, line: int) -> str:
    """Return line `line` (1-based) of `text`, or an empty string past its end."""
    lines = text.splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else ""


def _syntax_error(exc: lark.UnexpectedInput, text: str, filename: str) -> ParseError:
    line, column = exc.line, exc.column
    at_end = isinstance(exc, lark.UnexpectedToken) and exc.token.type == "$END"
    if at_end or line is None or line < 1:  # unexpected end of input
        lines = text.splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
    hint = None
    if isinstance(exc, lark.UnexpectedToken):
        expected = sorted({_TOKEN_NAMES.get(t, t.lower()) for t in exc.expected})
        if exc.token.type == "$END":
            message = "unexpected end of input"
            hint = "every `{` needs a matching `}`"
        else:
            shown = "a new line" if exc.token.type == "_SEP" else repr(str(exc.token))
            message = f"unexpected {shown}"
            if expected:
                hint = "expected " + " or ".join(expected[:6])
            if exc.token.type == "EQUAL" or (
                    exc.token.type in ("NAME", "NUMBER", "STRING") and "_SEP" in exc.expected):
                hint = "put each `key = value` on its own line (or separate them with `;`)"
    elif isinstance(exc, lark.UnexpectedCharacters):
        message = f"unexpected character {text[exc.pos_in_stream]!r}"
        if text[exc.pos_in_stream] == "#":
            hint = "comments start with `//`"
    else:
        message, hint = "unexpected end of input", "every `{` needs a matching `}`"
    return ParseError(message, filename=filename, line=line, column=column,
                      source_line=source_line(text, line), hint=hint)


def _section(tree: lark.Tree, text: str) -> Section:
    kind, label, *entries = tree.children
    body: list[Entry | Section] = []
    for child in entries:
        if child is None:
            continue
        if child.data == "section":
            body.append(_section(child, text))
        else:
            key, value = child.children
            body.append(Entry(str(key), _value(value, text), key.line, key.column))
    label_text = None
    if label is not None:
        token = label.children[0]
        label_text = json.loads(token) if token.type == "STRING" else str(token)
    return Section(str(kind), label_text, tuple(body), kind.line, kind.column)


def _value(tree: Any, text: str) -> Value:
    meta = tree.meta
    kind = tree.data
    if kind == "number":
        number, unit = tree.children
        written = f"{number} {unit}" if unit is not None else str(number)
        return Value("number", float(number), None if unit is None else str(unit), written,
                     number.line, number.column)
    if kind == "string":
        return Value("string", json.loads(tree.children[0]), None, str(tree.children[0]),
                     meta.line, meta.column)
    if kind == "word":
        return Value("word", str(tree.children[0]), None, str(tree.children[0]),
                     meta.line, meta.column)
    items = tuple(_value(c, text) for c in tree.children
                  if isinstance(c, lark.Tree))
    written = " ".join(text[meta.start_pos:meta.end_pos].split())
    return Value("list", items, None, written, meta.line, meta.column)
