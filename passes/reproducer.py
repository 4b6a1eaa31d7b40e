"""Reproducers: the IR before a failing pass plus the pipeline from it on, in one program file.

The first line of a reproducer is a comment the parser ignores,

    // imcc-reproducer: --passes "fold-batchnorm,canonicalize"

followed by the program; its weights are in the `.npz` beside it. `imcc opt FILE
--run-reproducer` reads the pipeline from that line and runs it on the program.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from imcc.errors import UserError
from imcc.files import write_text
from imcc.ir.graph import Graph
from imcc.ir.io import blob_arrays
from imcc.ir.printer import print_graph
from imcc.ir.weights import save_weights, weights_path_for

MARKER = "// imcc-reproducer: --passes "
_LINE = re.compile(r"// imcc-reproducer: --passes (\"(?:[^\"\\]|\\.)*\")\s*")


def write_reproducer(graph: Graph, pipeline: str, path: str | os.PathLike[str]) -> Path:
    """Write `graph` with the pipeline to replay on it to `path` (and its weights beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = blob_arrays(graph)
    if arrays:
        save_weights(weights_path_for(path), arrays)
    write_text(path, MARKER + json.dumps(pipeline) + "\n" + print_graph(graph))
    return path


def read_reproducer_pipeline(text: str, filename: str) -> str:
    """Return the pipeline recorded on the first line of a reproducer, or raise UserError."""
    first = text.split("\n", 1)[0]
    found = _LINE.fullmatch(first)
    if not found:
        raise UserError(
            f'{filename} is not a reproducer: its first line is not `{MARKER}"PIPELINE"`',
            hint="reproducers are written when a pass fails; drop --run-reproducer to run "
            "--passes on an ordinary program",
        )
    try:
        pipeline = json.loads(found.group(1))
    except json.JSONDecodeError as exc:  # e.g. `\x`, which the line's pattern lets through
        raise UserError(
            f"{filename}:1:{len(MARKER) + exc.pos + 1}: the recorded pipeline is "
            f"not a JSON string ({exc.msg})",
            hint="reproducers are written by imcc when a pass fails; write the "
            "pipeline as a JSON string, or pass --passes to `imcc opt`",
        ) from None
    return pipeline
