"""Reading and writing programs: the `.imcir` text plus its `.npz` weight side file.

`load_program` is the one door through which a user's program enters imcc, so every check on
user input lives behind it: the text must be UTF-8 (and not an ONNX model given by mistake), it
must parse and verify (a verifier failure points at the line that defines the node), a weight
file, when there is one, must be readable and hold every blob the text references with the
declared type, the recorded digest and finite values, and a command that computes with the
weights (`WEIGHTS_REQUIRED`) refuses a program whose weights are missing altogether.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from imcc.errors import (
    MissingWeightsError,
    ProgramError,
    UserError,
    VerificationError,
)
from imcc.files import check_output, write_text
from imcc.inputs import decode_text
from imcc.ir.graph import Graph
from imcc.ir.parser import SourceMap, parse_graph_located
from imcc.ir.printer import print_graph
from imcc.ir.verifier import verify
from imcc.ir.weights import find_weights, load_weights, save_weights, weights_path_for

WEIGHTS_REQUIRED: dict[str, bool] = {
    "cost": True,  # prices array energy by the stored conductance levels of the actual weights
    "simulate": True,  # computes with them
    "run": True,
    "export-qdq": True,
    # Rewrites the text; passes that read weight data check for it themselves
    # (require_weights), so tiling or canonicalizing a program without its .npz still works.
    "opt": False,
}
"""Per command: must the program's weights be loaded? The one table of that rule."""

_WEIGHTS_HINT = (
    "keep the .npz that `imcc compile -o x.imcir` wrote beside the program "
    "(x.npz or weights.npz), or pass --weights FILE.npz"
)


def weights_required(command: str | None) -> bool:
    """Say whether `command` needs a program's weights (None: a library caller, not required)."""
    if command is None:
        return False
    if command not in WEIGHTS_REQUIRED:
        raise KeyError(f"no weight rule for command {command!r}; add it to WEIGHTS_REQUIRED")
    return WEIGHTS_REQUIRED[command]


def blob_arrays(graph: Graph) -> list[np.ndarray]:
    """Return the data of every constant that prints as a blob reference."""
    return [c.data for c in graph.constants.values() if not c.inline and c.data is not None]


def missing_blobs(graph: Graph) -> list[str]:
    """Return the names of constants whose data was not loaded."""
    return [name for name, c in graph.constants.items() if c.data is None]


def require_weights(graph: Graph, where: str) -> None:
    """Raise MissingWeightsError if some constant of `graph` has no data."""
    missing = missing_blobs(graph)
    if missing:
        raise MissingWeightsError(
            f"{where}: weights of {len(missing)} constant(s) are not loaded (first: %{missing[0]})",
            hint=_WEIGHTS_HINT,
        )


def parse_program(
    text: str, filename: str = "<string>", weights: Mapping[str, np.ndarray] | None = None
) -> Graph:
    """Parse and verify program text (`weights` may be partial: blobs without data stay None)."""
    return _parse_and_verify(text, filename, weights, None)[0]


def _parse_and_verify(
    text: str, filename: str, weights: Mapping[str, np.ndarray] | None, weight_file: str | None
) -> tuple[Graph, SourceMap]:
    graph, where = parse_graph_located(text, filename, weights, weight_file)
    try:
        verify(graph)
    except VerificationError as exc:
        # The text is the user's, so its failing a rule is a user error at the node's line.
        raise where.error(
            ProgramError,
            str(exc),
            exc.value,
            exc.hint or "`imcc ops` lists each op's operands, attributes and result types",
        ) from None
    return graph, where


def read_program_text(path: str | os.PathLike[str]) -> str:
    """Return the text of a program file, or raise a UserError saying what the file is instead."""
    path = Path(path)
    hint = "give an .imcir program (`imcc compile M --target T -o P.imcir` writes one)"
    if path.is_dir():
        raise UserError(f"cannot read {path}: it is a folder, not a program", hint=hint)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}", hint=hint) from None
    if _looks_like_onnx(data):
        raise UserError(
            f"{path} looks like an ONNX model, not an .imcir program",
            hint=f"compile it to a program first: `imcc compile {path} --target T -o model.imcir`",
        )
    return decode_text(data, str(path), ".imcir programs are UTF-8 text; is this the right file?")


def _looks_like_onnx(data: bytes) -> bool:
    """Say whether bytes look like a binary ONNX ModelProto rather than program text.

    Exporters write field 1 (`ir_version`, a small varint: bytes 08 NN) first, then another
    ModelProto field (producer_name 0x12, ..., graph 0x3a, opset_import 0x42); no text starts so.
    """
    return (
        len(data) >= 3
        and data[0] == 0x08
        and data[1] < 0x80
        and data[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42)
    )


def load_program(
    path: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    *,
    command: str | None = None,
) -> Graph:
    """Read a program file and the weights beside it (or from `weights`), then verify it.

    `command` names the imcc command loading it, whose entry in WEIGHTS_REQUIRED says whether a
    program without weights is refused.
    """
    path = Path(path)
    text = read_program_text(path)
    weight_file = Path(weights) if weights is not None else find_weights(path)
    store: Mapping[str, np.ndarray] = {}
    if weight_file is not None:
        store = load_weights(weight_file)
    graph, _ = _parse_and_verify(
        text, str(path), store, str(weight_file) if weight_file is not None else None
    )
    missing = missing_blobs(graph)
    if missing and weights_required(command):
        raise MissingWeightsError(
            f"imcc {command} needs the weights of {path}, but there is no weight file beside "
            f"it ({weights_path_for(path).name} or weights.npz; {len(missing)} blob(s), first "
            f"%{missing[0]})",
            hint=_WEIGHTS_HINT,
        )
    return graph


def save_program(
    graph: Graph, path: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None
) -> Path:
    """Write the text to `path` and its blobs to `weights` (default: beside it, `.npz`)."""
    path = check_output(path)
    weight_file = Path(weights) if weights is not None else weights_path_for(path)
    arrays = blob_arrays(graph)
    if arrays:
        save_weights(check_output(weight_file), arrays)
    return write_text(path, print_graph(graph))
