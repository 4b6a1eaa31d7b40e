"""How the benchmarks' tables write their numbers (one statement for every table)."""

from __future__ import annotations


def percent(value: float | None, missing: str = "n/a") -> str:
    """Format a share or an accuracy as a percentage with two decimals (`missing` for None:
    not measured)."""
    return missing if value is None else f"{100 * value:.2f}%"
