"""Golden files that pin `imcc.RESULTS_VERSION`: each holds the figures of one case and the
results version they were written under.

`check_golden` compares a case's figures with its file (numbers to a relative tolerance, the
rest exactly). With IMCC_UPDATE_GOLDEN=1 it writes the file instead, but refuses to write
other figures under the version the file already holds: a change that moves a computed result
must raise `imcc.RESULTS_VERSION`, which every store of computed results records (search
studies, evaluation stores, the reproductions' caches), so that nothing computed before the
change is read back after it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from imcc import RESULTS_VERSION


def differences(got, want, path: str, relative: float) -> list[str]:
    """Return where `got` differs from `want` (numbers to `relative`, the rest exactly)."""
    if isinstance(want, dict) and isinstance(got, dict):
        keys = sorted(set(got) | set(want))
        return [
            d for k in keys for d in differences(got.get(k), want.get(k), f"{path}.{k}", relative)
        ]
    if isinstance(want, list) and isinstance(got, list) and len(got) == len(want):
        return [
            d
            for i, (g, w) in enumerate(zip(got, want, strict=True))
            for d in differences(g, w, f"{path}[{i}]", relative)
        ]
    numbers = (int, float)
    if isinstance(want, float) and isinstance(got, numbers) and not isinstance(got, bool):
        if got == pytest.approx(want, rel=relative, abs=1e-30):
            return []
        return [
            f"{path}: {got!r} != golden {want!r}" + (f" ({got / want - 1:+.3%})" if want else "")
        ]
    return [] if got == want else [f"{path}: {got!r} != golden {want!r}"]


def check_golden(path: Path, figures: dict, relative: float) -> None:
    """Compare `figures` with the golden file `path`, or write it (module docstring)."""
    stored = json.loads(path.read_text()) if path.is_file() else None
    if os.environ.get("IMCC_UPDATE_GOLDEN"):
        if stored is not None and stored.get("results_version") == RESULTS_VERSION:
            moved = differences(figures, stored["figures"], path.stem, relative)
            if moved:
                pytest.fail(
                    f"{path.name}: these figures changed under results version "
                    f"{RESULTS_VERSION}; raise imcc.RESULTS_VERSION (imcc/__init__.py) so that "
                    "no stored result of the old rules is reused, then update again:\n"
                    + "\n".join(moved)
                )
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"results_version": RESULTS_VERSION, "figures": figures}
        path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        return
    assert stored is not None, f"no golden file {path}: write it with IMCC_UPDATE_GOLDEN=1"
    assert stored.get("results_version") == RESULTS_VERSION, (
        f"{path.name} holds results version {stored.get('results_version')}, imcc computes "
        f"version {RESULTS_VERSION}: update the golden files (IMCC_UPDATE_GOLDEN=1) and review "
        "the diff"
    )
    found = differences(figures, stored["figures"], path.stem, relative)
    assert not found, (
        "\n".join(found) + "\n(a deliberate change: raise imcc.RESULTS_VERSION and update the "
        "golden files with IMCC_UPDATE_GOLDEN=1)"
    )
