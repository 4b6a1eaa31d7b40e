"""The explicit configuration every pass receives: target, seed, free-form options, logger."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np


def _default_logger() -> logging.Logger:
    return logging.getLogger("imcc")


@dataclass(eq=False)
class Decisions:
    """What the passes decided and measured, per layer: one table per pass, which `--stats`
    prints and the report JSON carries under `decisions`."""

    tables: dict[str, list[dict[str, object]]] = field(default_factory=dict)

    def record(self, pass_name: str, layer: str, **values: object) -> None:
        """Add one layer's row to a pass's table (values: numbers, strings, lists)."""
        self.tables.setdefault(pass_name, []).append({"layer": layer, **values})

    def format(self) -> str:
        """Return the tables as aligned text, one block per pass."""
        blocks = []
        for name, rows in self.tables.items():
            columns = list(dict.fromkeys(key for row in rows for key in row))
            cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
            widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
            lines = [
                f"{name}:",
                "  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
            ]
            lines += [
                "  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells
            ]
            blocks.append("\n".join(line.rstrip() for line in lines))
        return "\n\n".join(blocks)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_cell(v) for v in value) + "]"
    return str(value)


@dataclass(frozen=True, slots=True, eq=False)
class Context:
    """Configuration a pipeline runs under; passes read it instead of the environment.

    `target` is the hardware description (None until targets exist or when none is chosen),
    `seed` the root of every random choice a pass makes (see `rng`), `options` settings that are
    not pass options (e.g. from the command line), `logger` where passes report what they did,
    `decisions` the per-layer tables of what they decided (`--stats`, report JSON).
    """

    target: object | None = None
    seed: int = 0
    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    logger: logging.Logger = field(default_factory=_default_logger)
    decisions: Decisions = field(default_factory=Decisions)

    def rng(self, *salt: object) -> np.random.Generator:
        """Return a generator seeded from `seed` and `salt`, the same for the same arguments."""
        key = [self.seed, *(_stable_int(s) for s in salt)]
        return np.random.default_rng(key)

    def draw_seed(self, *salt: object) -> int:
        """Return an int seed drawn from `rng(*salt)` (e.g. for a CrossbarInterpreter's or the
        datapath's MTJ draws), the same for the same arguments."""
        return int(self.rng(*salt).integers(2**62))


def _stable_int(value: object) -> int:
    """Map a salt to a non-negative int that does not depend on Python's hash seed."""
    if isinstance(value, int) and value >= 0:
        return value
    return int.from_bytes(hashlib.blake2b(repr(value).encode(), digest_size=8).digest(), "little")
