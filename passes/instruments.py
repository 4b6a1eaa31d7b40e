"""Pass instruments: hooks around every pass that print, dump or time the pipeline.

IR printed to a stream is preceded by a header comment,

    // -----// IR Dump After fold-batchnorm //----- //

and comments are ignored by the parser, so a whole stream splits into parseable programs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from imcc.files import write_text
from imcc.ir.graph import Graph
from imcc.ir.io import blob_arrays
from imcc.ir.printer import print_graph
from imcc.ir.weights import digest, save_weights
from imcc.passes.base import Pass


@dataclass(frozen=True, slots=True)
class PassRun:
    """What an instrument learns after a pass: its position, the IR around it, its timings."""

    index: int
    pass_: Pass
    before: Graph
    after: Graph
    seconds: float
    verify_seconds: float


class PassInstrument:
    """Base of instruments; every hook does nothing unless overridden."""

    def before_pipeline(self, graph: Graph, passes: list[Pass]) -> None:
        """Called once with the input graph."""

    def before_pass(self, index: int, pass_: Pass, graph: Graph) -> None:
        """Called before each pass with the graph it will receive."""

    def after_pass(self, run: PassRun) -> None:
        """Called after each pass that succeeded (and verified)."""

    def after_pipeline(self, graph: Graph) -> None:
        """Called once with the final graph when every pass succeeded."""


def _stream(stream: TextIO | None) -> TextIO:
    return stream if stream is not None else sys.stderr


def dump_header(when: str, spec: str) -> str:
    """Return the comment line that precedes an IR dump, e.g. `IR Dump After canonicalize`."""
    return f"// -----// IR Dump {when} {spec} //----- //\n"


class PrintIR(PassInstrument):
    """Prints the IR before and/or after chosen passes to a stream (stderr by default).

    `before` and `after` are sets of pass names; `after_all` selects every pass; `after_change`
    prints after a selected pass only when its printed IR differs from its input (and, given on
    its own, selects every pass).
    """

    def __init__(
        self,
        before: Collection[str] = (),
        after: Collection[str] = (),
        *,
        after_all: bool = False,
        after_change: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self.before = frozenset(before)
        self.after = frozenset(after)
        self.after_all = after_all or (after_change and not after)
        self.after_change = after_change
        self.stream = stream

    def before_pass(self, index: int, pass_: Pass, graph: Graph) -> None:
        if pass_.name in self.before:
            out = _stream(self.stream)
            out.write(dump_header("Before", str(pass_)) + print_graph(graph))
            out.flush()

    def after_pass(self, run: PassRun) -> None:
        if not (self.after_all or run.pass_.name in self.after):
            return
        text = print_graph(run.after)
        if self.after_change and text == print_graph(run.before):
            return
        out = _stream(self.stream)
        out.write(dump_header("After", str(run.pass_)) + text)
        out.flush()


class DumpIR(PassInstrument):
    """Writes the input and the IR after each pass to `DIR/NN-name.imcir`, weights to one npz.

    Files are `00-input.imcir`, `01-canonicalize.imcir`, ...; each is a complete program whose
    first line names the pass spec. Blobs go once to `DIR/weights.npz`, which `load_program`
    finds beside every file.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.width = 2
        self.written: set[str] = set()

    def before_pipeline(self, graph: Graph, passes: list[Pass]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.width = max(2, len(str(len(passes))))
        self._write(0, "input", "// input\n", graph)

    def after_pass(self, run: PassRun) -> None:
        header = dump_header("After", str(run.pass_))
        self._write(run.index + 1, run.pass_.name, header, run.after)

    def _write(self, number: int, label: str, header: str, graph: Graph) -> None:
        fresh = [a for a in blob_arrays(graph) if digest(a) not in self.written]
        if fresh:
            save_weights(self.directory / "weights.npz", fresh)
            self.written.update(digest(a) for a in fresh)
        path = self.directory / f"{number:0{self.width}d}-{label}.imcir"
        write_text(path, header + print_graph(graph), "--dump-ir-dir")


class TimePasses(PassInstrument):
    """Prints a table of wall time per pass (and for the verifier) when the pipeline ends."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.rows: list[tuple[str, float]] = []
        self.verify_seconds = 0.0

    def before_pipeline(self, graph: Graph, passes: list[Pass]) -> None:
        self.rows, self.verify_seconds = [], 0.0

    def after_pass(self, run: PassRun) -> None:
        self.rows.append((str(run.pass_), run.seconds))
        self.verify_seconds += run.verify_seconds

    def after_pipeline(self, graph: Graph) -> None:
        _stream(self.stream).write(self.table())

    def table(self) -> str:
        """Return the timing table: seconds, share of the total, pass spec; then the total.

        ```
        ===- pass timing (wall clock) -===
            seconds       %  pass
           0.000412    41.2  canonicalize
           ...
           0.001000   100.0  total
        ```
        """
        rows = [*self.rows, ("(verifier)", self.verify_seconds)]
        total = sum(seconds for _, seconds in rows)
        lines = ["===- pass timing (wall clock) -===", f"{'seconds':>11}  {'%':>6}  pass"]
        for label, seconds in rows:
            share = 100.0 * seconds / total if total > 0 else 0.0
            lines.append(f"{seconds:11.6f}  {share:6.1f}  {label}")
        lines.append(f"{total:11.6f}  {100.0:6.1f}  total")
        return "\n".join(lines) + "\n"
