"""The hardware targets shipped with imcc, as `.hw` files beside this module."""

from __future__ import annotations

from pathlib import Path

BUILTIN_TARGETS: tuple[str, ...] = (
    "isaac",
    "xpert",
    "raella",
    "sotmtj",
    "stox",
    "hybrid",
    "neurosim-rram22",
    "neurosim-rram22-32",
)
"""Names of the built-in targets; `--target NAME` or `--target NAME.hw` loads one."""


def builtin_path(name: str) -> Path | None:
    """Return the `.hw` file of the built-in target `name` (`isaac` or `isaac.hw`), or None."""
    stem = name.removesuffix(".hw")
    if stem not in BUILTIN_TARGETS:
        return None
    return Path(__file__).with_name(f"{stem}.hw")
