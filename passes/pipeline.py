"""The pipeline language: `a,b{k=v k2=[1,2]},c` parsed into pass instances and printed back.

Grammar (whitespace is allowed around every token except inside a value):

    pipeline := [spec ("," spec)*]
    spec     := NAME ["{" option* "}"]
    option   := KEY "=" VALUE          (options are separated by spaces)
    VALUE    := "[" ... "]" | '"' json string '"' | a run of characters other than
                whitespace, ',', '{', '}', '[', ']', '"', '='
    A list option may also be written bare inside the braces, `{slices=4,2,2}`; it prints
    bracketed.

Values are read by the type of the option they set (see `imcc.passes.base`). For every canonical
string `print_pipeline(parse_pipeline(s)) == s`, and `parse_pipeline(str(p)) == [p]`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from imcc.errors import OptionError, PipelineError
from imcc.passes.base import Pass, is_list_kind
from imcc.passes.registry import close_matches, load_pass

DEFAULT_PIPELINE = "canonicalize,fold-constants,fold-batchnorm,canonicalize"
"""The pipeline `imcc compile` runs when no `--passes` is given (until targets exist)."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE_VALUE = re.compile(r'[^\s,{}\[\]"=]+')
_QUOTED = re.compile(r'"([^"\\]|\\.)*"')


def print_pipeline(passes: Sequence[Pass]) -> str:
    """Spell a pipeline canonically: each pass with all its options, joined by commas."""
    return ",".join(str(p) for p in passes)


def parse_pipeline(text: str, source: str = "<pipeline>") -> list[Pass]:
    """Parse a pipeline string into pass instances; PipelineError points at the bad column."""
    return _Parser(text, source).pipeline()


class _Parser:
    """A hand-written scanner over one pipeline string; positions are 0-based offsets."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.pos = 0

    def error(self, message: str, pos: int, hint: str | None = None) -> PipelineError:
        line = self.text.count("\n", 0, pos) + 1
        start = self.text.rfind("\n", 0, pos) + 1
        end = self.text.find("\n", pos)
        source_line = self.text[start : end if end >= 0 else len(self.text)]
        return PipelineError(
            message,
            filename=self.source,
            line=line,
            column=pos - start + 1,
            source_line=source_line,
            hint=hint,
        )

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def describe(self) -> str:
        char = self.peek()
        return "end of pipeline" if not char else repr(char)

    def match(self, pattern: re.Pattern[str]) -> str | None:
        found = pattern.match(self.text, self.pos)
        if not found:
            return None
        self.pos = found.end()
        return found.group()

    def pipeline(self) -> list[Pass]:
        passes: list[Pass] = []
        self.skip_space()
        if not self.peek():
            return passes
        while True:
            passes.append(self.spec())
            self.skip_space()
            if not self.peek():
                return passes
            if self.peek() != ",":
                raise self.error(
                    f"unexpected {self.describe()} after pass '{passes[-1].name}'",
                    self.pos,
                    "separate passes with ','",
                )
            self.pos += 1
            self.skip_space()

    def spec(self) -> Pass:
        start = self.pos
        name = self.match(_NAME)
        if name is None:
            raise self.error(f"expected a pass name, found {self.describe()}", self.pos)
        try:
            cls = load_pass(name)
        except KeyError:
            close = close_matches(name)
            hint = f"did you mean {' or '.join(close)}?" if close else "`imcc passes` lists them"
            raise self.error(f"unknown pass '{name}'", start, hint) from None
        self.skip_space()
        values: dict[str, object] = {}
        if self.peek() == "{":
            self.options(cls, values)
        missing = [s.name for s in cls.options() if s.required and s.name not in values]
        if missing:
            raise self.error(
                f"pass '{name}' needs option '{missing[0]}'",
                start,
                f"write {name}{{{missing[0]}=...}}",
            )
        try:
            return cls(**values)
        except (ValueError, OptionError) as exc:
            raise self.error(f"bad options for pass '{name}': {exc}", start) from None

    def options(self, cls: type[Pass], values: dict[str, object]) -> None:
        brace = self.pos
        self.pos += 1
        specs = {s.name: s for s in cls.options()}
        while True:
            self.skip_space()
            char = self.peek()
            if char == "}":
                self.pos += 1
                return
            if not char:
                raise self.error(
                    f"unclosed '{{' of pass '{cls.name}'", brace, "close the options with '}'"
                )
            key_pos = self.pos
            key = self.match(_KEY)
            if key is None:
                raise self.error(
                    f"expected an option name or '}}', found {self.describe()}",
                    self.pos,
                    "options are written {key=value key2=value2}",
                )
            if key not in specs:
                valid = ", ".join(specs) if specs else "it takes no options"
                hint = f"valid options: {valid}" if specs else valid
                raise self.error(f"pass '{cls.name}' has no option '{key}'", key_pos, hint)
            if key in values:
                raise self.error(f"option '{key}' of pass '{cls.name}' is given twice", key_pos)
            if self.peek() != "=":
                raise self.error(
                    f"expected '=' after option '{key}', found {self.describe()}", self.pos
                )
            self.pos += 1
            value_pos = self.pos
            raw = self.value()
            if raw is None:
                raise self.error(
                    f"expected a value for option '{key}', found {self.describe()}", self.pos
                )
            spec = specs[key]
            if is_list_kind(spec.kind) and not raw.startswith("["):
                parts = [raw]  # a bare list inside braces: {slices=4,2,2}
                while self.peek() == ",":
                    self.pos += 1
                    part = self.match(_BARE_VALUE)
                    if part is None:
                        raise self.error(
                            f"expected a list element for option '{key}', found {self.describe()}",
                            self.pos,
                        )
                    parts.append(part)
                raw = "[" + ",".join(parts) + "]"
            try:
                values[key] = spec.parse(raw)
            except ValueError:
                raise self.error(
                    f"option '{key}' of pass '{cls.name}' expects {spec.kind.expected}, "
                    f"got '{raw}'",
                    value_pos,
                ) from None
            why = spec.check(values[key])
            if why is not None:
                raise self.error(
                    f"pass '{cls.name}': {why}",
                    value_pos,
                    f"{key}: {spec.doc}" if spec.doc else None,
                )
            if self.peek() not in ("", "}") and not self.peek().isspace():
                hint = "separate options with spaces: {a=1 b=2}" if self.peek() == "," else None
                raise self.error(
                    f"unexpected {self.describe()} after option '{key}'", self.pos, hint
                )

    def value(self) -> str | None:
        char = self.peek()
        if char == "[":
            end = self.text.find("]", self.pos)
            if end < 0:
                raise self.error("unclosed '['", self.pos, "close the list with ']'")
            raw = self.text[self.pos : end + 1]
            self.pos = end + 1
            return raw
        if char == '"':
            raw = self.match(_QUOTED)
            if raw is None:
                raise self.error("unclosed string", self.pos, "close the string with '\"'")
            return raw
        return self.match(_BARE_VALUE)
