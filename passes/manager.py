"""The pass manager: runs a pipeline, verifies after every pass, calls instruments, reports failure.

A pass *fails* when `run` raises (anything but a `UserError`), returns something that is not a
Graph, or returns a graph the verifier rejects. The manager then writes a reproducer (the IR
before the pass and the pipeline from it on) and raises `PassFailure` naming the pass spec, the
passes that ran before it and the reproducer. A `UserError` raised by a pass (e.g. a
`MappingError`: an illegal mapping for this graph) is a verdict about the input, not a bug: it
keeps its class and exit code, its message prefixed with the pass spec, and no reproducer.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from imcc.errors import MEMORY_HINT, PassFailure, UserError, VerificationError
from imcc.ir.graph import Graph
from imcc.ir.verifier import verify
from imcc.passes.base import Pass
from imcc.passes.context import Context
from imcc.passes.instruments import PassInstrument, PassRun
from imcc.passes.pipeline import print_pipeline
from imcc.passes.reproducer import write_reproducer


class PassManager:
    """Runs passes in order with instruments around each and the verifier after each."""

    def __init__(
        self,
        passes: Sequence[Pass],
        instruments: Sequence[PassInstrument] = (),
        *,
        verify_each: bool = True,
        reproducer: str | os.PathLike[str] | None = None,
    ) -> None:
        """`reproducer` is where a failure writes its reproducer (default: a new temp folder)."""
        self.passes = list(passes)
        self.instruments = list(instruments)
        self.verify_each = verify_each
        self.reproducer = reproducer

    def __str__(self) -> str:
        return print_pipeline(self.passes)

    def run(self, graph: Graph, ctx: Context | None = None) -> Graph:
        """Run every pass on `graph` and return the result."""
        ctx = ctx if ctx is not None else Context()
        for instrument in self.instruments:
            instrument.before_pipeline(graph, self.passes)
        for index, pass_ in enumerate(self.passes):
            for instrument in self.instruments:
                instrument.before_pass(index, pass_, graph)
            start = time.perf_counter()
            try:
                result = pass_.run(graph, ctx)
            except UserError as exc:
                exc.args = (f"pass '{pass_}': {exc.args[0] if exc.args else ''}", *exc.args[1:])
                raise
            except MemoryError as exc:  # the input's sizes, not a bug of the pass
                raise UserError(
                    f"pass '{pass_}' ran out of memory: {exc}", hint=MEMORY_HINT
                ) from None
            except Exception as exc:
                where = traceback.extract_tb(exc.__traceback__)[-1]
                reason = (
                    f"raised {type(exc).__name__}: {exc}\n"
                    f"  raised at: {where.filename}:{where.lineno} in {where.name}"
                )
                raise self._failure(index, graph, reason) from exc
            seconds = time.perf_counter() - start
            if not isinstance(result, Graph):
                raise self._failure(index, graph, f"returned {type(result).__name__}, not a Graph")
            start = time.perf_counter()
            if self.verify_each:
                try:
                    verify(result)
                except VerificationError as exc:
                    raise self._failure(index, graph, f"produced invalid IR: {exc}") from exc
            run = PassRun(index, pass_, graph, result, seconds, time.perf_counter() - start)
            for instrument in self.instruments:
                instrument.after_pass(run)
            graph = result
        for instrument in self.instruments:
            instrument.after_pipeline(graph)
        return graph

    def _failure(self, index: int, graph: Graph, reason: str) -> PassFailure:
        """Write the reproducer of pass `index` failing on `graph`; return the error to raise."""
        spec = str(self.passes[index])
        previous = tuple(str(p) for p in self.passes[:index])
        remaining = print_pipeline(self.passes[index:])
        lines = [f"pass '{spec}' failed: {reason}"]
        lines.append(f"  passes before it: {', '.join(previous) if previous else 'none'}")
        path: Path | None = None
        try:
            target = self.reproducer
            if target is None:
                target = Path(tempfile.mkdtemp(prefix="imcc-")) / "reproducer.imcir"
            path = write_reproducer(graph, remaining, target)
        except OSError as exc:
            lines.append(f"  could not write a reproducer: {exc}")
        if path is not None:
            lines.append(f"  reproducer: {path}")
            lines.append(f"  replay with: imcc opt {path} --run-reproducer")
        return PassFailure(
            "\n".join(lines),
            pass_spec=spec,
            previous=previous,
            reproducer=str(path) if path is not None else None,
        )
