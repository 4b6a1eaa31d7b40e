"""Reading and writing programs: the `.imcir` text plus its `.npz` weight side file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from imcc.errors import MissingWeightsError, UserError
from imcc.ir.graph import Graph
from imcc.ir.parser import parse_graph
from imcc.ir.printer import print_graph
from imcc.ir.verifier import verify
from imcc.ir.weights import find_weights, load_weights, save_weights, weights_path_for


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
            f"{where}: weights of {len(missing)} constant(s) are not loaded "
            f"(first: %{missing[0]})",
            hint="keep the program's .npz beside it (x.imcir -> x.npz or weights.npz), "
            "or pass --weights FILE.npz",
        )


def parse_program(
    text: str, filename: str = "<string>", weights: Mapping[str, np.ndarray] | None = None
) -> Graph:
    """Parse and verify program text."""
    graph = parse_graph(text, filename, weights)
    verify(graph)
    return graph


def load_program(path: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None
                 ) -> Graph:
    """Read a program file and the weights beside it (or from `weights`), then verify it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    weight_file = Path(weights) if weights is not None else find_weights(path)
    store: Mapping[str, np.ndarray] = {}
    if weight_file is not None:
        try:
            store = load_weights(weight_file)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read weight file {weight_file}: {exc}") from None
    return parse_program(text, str(path), store)


def save_program(graph: Graph, path: str | os.PathLike[str],
                 weights: str | os.PathLike[str] | None = None) -> Path:
    """Write the text to `path` and its blobs to `weights` (default: beside it, `.npz`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weight_file = Path(weights) if weights is not None else weights_path_for(path)
    arrays = blob_arrays(graph)
    if arrays:
        save_weights(weight_file, arrays)
    path.write_text(print_graph(graph))
    return path
