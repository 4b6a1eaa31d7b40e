"""The one error hierarchy of imcc: user errors exit 2 with one message, bugs may crash."""

from __future__ import annotations

MEMORY_HINT = (
    "the model's sizes (its batch, its dimensions) need more memory than this machine has: "
    "try a smaller --batch or a smaller model"
)
"""What a MemoryError means to a user: the input is too large for the machine, not a bug."""


class ImccError(Exception):
    """Base of every error imcc raises on purpose."""

    exit_code = 1

    def render(self) -> str:
        """Return the message a user sees, without a traceback."""
        return f"error: {self}"


class UserError(ImccError):
    """Bad input from the user: a file, a flag, a model or a mapping imcc cannot accept."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def render(self) -> str:
        text = f"error: {self}"
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text


class SourceError(UserError):
    """A user error at a place in a text file, rendered as `file:line:col`, the line and a caret."""

    def __init__(
        self,
        message: str,
        *,
        filename: str,
        line: int,
        column: int,
        source_line: str,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.filename = filename
        self.line = line
        self.column = column
        self.source_line = source_line

    def render(self) -> str:
        caret = " " * (max(self.column, 1) - 1) + "^"
        text = f"{self.filename}:{self.line}:{self.column}: error: {self.args[0]}"
        text += f"\n{self.source_line}\n{caret}"
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text


class ParseError(SourceError):
    """The text of a program, a pipeline or a target does not follow its grammar."""


class FrontendError(UserError):
    """An ONNX model cannot be imported (malformed, unsupported ops, dynamic shapes)."""


class OptionError(UserError):
    """A pass pipeline or a pass option is malformed or unknown."""


class PipelineError(ParseError, OptionError):
    """A `--passes` pipeline string is malformed or names an unknown pass, option or value."""


class MappingError(UserError):
    """A mapping decision is illegal for this graph and target; the reason says why."""


class VerificationError(ImccError):
    """The IR broke an invariant; names the node and the rule. A pass that causes it has a bug."""

    def __init__(self, message: str, *, value: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.value = value  # a value the broken definition defines: finds its line in a file
        self.hint = hint  # what to do about it, when the file is a user's


class ProgramError(SourceError, VerificationError):
    """A user's program file breaks an IR rule: a user error at the line that defines the node.

    Still a VerificationError (the message is the verifier's), but exits 2 with `file:line:col`,
    because the fault is in the file, not in a pass.
    """


class WeightFileError(UserError):
    """A program's `.npz` weight file cannot be read (missing, truncated, not an archive)."""


class BlobError(SourceError):
    """A `blob<"...">` reference that the weight file does not satisfy (absent, wrong type or
    content, NaN/Inf), reported at the constant's line."""


class InterpreterError(ImccError):
    """The reference interpreter cannot execute a graph (no rule for an op, missing weights)."""


class MissingWeightsError(UserError):
    """A program references weight blobs whose data is not available."""


class PassFailure(ImccError):
    """A pass raised or produced invalid IR; names the pass, the passes before it, a reproducer."""

    def __init__(
        self,
        message: str,
        *,
        pass_spec: str = "",
        previous: tuple[str, ...] = (),
        reproducer: str | None = None,
    ) -> None:
        super().__init__(message)
        self.pass_spec = pass_spec
        self.previous = previous
        self.reproducer = reproducer
