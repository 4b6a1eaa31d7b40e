"""The syntax of `.hw` target files: a lark grammar and a tree of sections, entries and values.

A `.hw` file is one `target "name" { ... }` section. A section holds `key = value` entries and
nested sections (`crossbar { ... }`, `converter adc8 { ... }`), one per line or separated by `;`.
Values are numbers with an optional unit (`1.28 GHz`, `128`), words (`rram`, `sample-hold`,
`true`), strings (`"ISAAC-like"`) and lists (`[1, 2, 4]`, which may span lines). `//` starts a
comment. Strings take JSON's escapes and must be text: no lone surrogate, no control character
but tab. Sections and lists nest at most MAX_NESTING deep. This module only checks the shape of
the text; hw_schema.py gives the words meaning.
"""

from __future__ import annotations

import re
import unicodedata
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


MAX_NESTING = 32
"""How deep sections and lists may nest: the schema needs 2 (`target { crossbar { } }`) and 1."""

# the escapes of a string; those that make a control character are refused after decoding
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_HEX = frozenset("0123456789abcdefABCDEF")
# what the nesting check reads: strings and comments (skipped), then brackets and braces
_NESTING_TOKENS = re.compile(r'"(?:[^"\\\n]|\\.)*"|//[^\n]*|[\[\]{}]')


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
    _check_nesting(text, filename)  # before _Reader recurses into the tree
    return _Reader(text, filename).section(tree.children[0])


def source_line(text: str, line: int) -> str:
    """Return line `line` (1-based, lines end at `\\n` as the parser counts them) of `text` as
    printable text, or an empty string past its end."""
    lines = _lines(text)
    if not 0 < line <= len(lines):
        return ""
    return "".join(
        " "
        if c != "\t" and unicodedata.category(c) == "Cc"
        else "\ufffd"
        if unicodedata.category(c) == "Cs"
        else c
        for c in lines[line - 1]
    )


def _lines(text: str) -> list[str]:
    """Split text at `\\n` only (not at form feeds or U+2028 as str.splitlines does)."""
    lines = text.split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _error(
    message: str, text: str, filename: str, line: int, column: int, hint: str | None = None
) -> ParseError:
    return ParseError(
        message,
        filename=filename,
        line=line,
        column=column,
        source_line=source_line(text, line),
        hint=hint,
    )


def _check_nesting(text: str, filename: str) -> None:
    """Refuse sections and lists nested deeper than MAX_NESTING, at the bracket that does."""
    depth = 0
    for match in _NESTING_TOKENS.finditer(text):  # the text parsed: every string ends
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_NESTING:
                pos = match.start()
                line = text.count("\n", 0, pos) + 1
                column = pos - text.rfind("\n", 0, pos)
                raise _error(
                    f"sections and lists nest more than {MAX_NESTING} deep",
                    text,
                    filename,
                    line,
                    column,
                    "a target needs sections in `target { ... }` and flat lists such as `[1, 2]`",
                )
        elif token in ("]", "}"):
            depth -= 1


def _syntax_error(exc: lark.UnexpectedInput, text: str, filename: str) -> ParseError:
    line, column = exc.line, exc.column
    at_end = isinstance(exc, lark.UnexpectedToken) and exc.token.type == "$END"
    if at_end or line is None or line < 1:  # unexpected end of input
        lines = _lines(text)
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
                exc.token.type in ("NAME", "NUMBER", "STRING") and "_SEP" in exc.expected
            ):
                hint = "put each `key = value` on its own line (or separate them with `;`)"
    elif isinstance(exc, lark.UnexpectedCharacters):
        message = f"unexpected character {text[exc.pos_in_stream]!r}"
        if text[exc.pos_in_stream] == "#":
            hint = "comments start with `//`"
    else:
        message, hint = "unexpected end of input", "every `{` needs a matching `}`"
    return _error(message, text, filename, line, column, hint)


class _Reader:
    """Turns the parse tree into Sections, Entries and Values, decoding strings as it goes."""

    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.filename = filename

    def section(self, tree: lark.Tree) -> Section:
        kind, label, *entries = tree.children
        body: list[Entry | Section] = []
        for child in entries:
            if child is None:
                continue
            if child.data == "section":
                body.append(self.section(child))
            else:
                key, value = child.children
                body.append(Entry(str(key), self.value(value), key.line, key.column))
        label_text = None
        if label is not None:
            token = label.children[0]
            label_text = self.string(token) if token.type == "STRING" else str(token)
        return Section(str(kind), label_text, tuple(body), kind.line, kind.column)

    def value(self, tree: Any) -> Value:
        meta = tree.meta
        kind = tree.data
        if kind == "number":
            number, unit = tree.children
            written = f"{number} {unit}" if unit is not None else str(number)
            return Value(
                "number",
                float(number),
                None if unit is None else str(unit),
                written,
                number.line,
                number.column,
            )
        if kind == "string":
            token = tree.children[0]
            return Value("string", self.string(token), None, str(token), meta.line, meta.column)
        if kind == "word":
            return Value(
                "word", str(tree.children[0]), None, str(tree.children[0]), meta.line, meta.column
            )
        items = tuple(self.value(c) for c in tree.children if isinstance(c, lark.Tree))
        written = " ".join(self.text[meta.start_pos : meta.end_pos].split())
        return Value("list", items, None, written, meta.line, meta.column)

    def string(self, token: lark.Token) -> str:
        """Decode a STRING token (JSON's escapes), refusing what is not Unicode text."""
        raw = str(token)
        end = len(raw) - 1  # the closing quote; a backslash is never the last character before it
        chars: list[str] = []
        i = 1
        while i < end:
            at = i
            if raw[i] != "\\":
                char = raw[i]
                i += 1
            elif raw[i + 1] in _ESCAPES:
                char = _ESCAPES[raw[i + 1]]
                i += 2
            elif raw[i + 1] == "u":
                code = self.hex4(token, raw, i, end)
                i += 6
                if 0xD800 <= code < 0xDC00 and raw.startswith("\\u", i):  # a pair: one character
                    low = self.hex4(token, raw, i, end)
                    if 0xDC00 <= low < 0xE000:
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        i += 6
                char = chr(code)
            else:
                raise self.error(
                    token,
                    at,
                    f"unknown escape `{raw[i : i + 2]}` in a string",
                    'the escapes are \\" \\\\ \\/ \\t and \\uXXXX (4 hex digits)',
                )
            category = unicodedata.category(char)
            if category == "Cs":
                raise self.error(
                    token,
                    at,
                    f"`{raw[at:i] if at + 1 < i else f'U+{ord(char):04X}'}` is half of a "
                    "surrogate pair, not a character",
                    "a string is Unicode text: write the character itself",
                )
            if category == "Cc" and char != "\t":
                raise self.error(
                    token,
                    at,
                    f"a string may not hold the control character U+{ord(char):04X}",
                    "a string is one line of text; tab is the only control character allowed",
                )
            chars.append(char)
        return "".join(chars)

    def hex4(self, token: lark.Token, raw: str, i: int, end: int) -> int:
        """Return the code of the `\\uXXXX` escape at raw[i], or raise at it."""
        digits = raw[i + 2 : min(i + 6, end)]
        if len(digits) < 4 or not set(digits) <= _HEX:
            written = next((j for j, d in enumerate(digits) if d not in _HEX), len(digits))
            raise self.error(
                token,
                i,
                f"`{raw[i : i + 2 + written]}` is not a `\\uXXXX` escape",
                "write 4 hex digits after `\\u`, e.g. `\\u00e9`",
            )
        return int(digits, 16)

    def error(self, token: lark.Token, offset: int, message: str, hint: str) -> ParseError:
        """Return a ParseError at character `offset` of a STRING token (strings are one line)."""
        return _error(message, self.text, self.filename, token.line, token.column + offset, hint)
