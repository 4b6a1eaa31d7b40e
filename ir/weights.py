"""Content-addressed weight storage: tensors are referenced from the text by a digest."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

DIGEST_LENGTH = 16


def digest(array: np.ndarray) -> str:
    """Return the content hash of a tensor: SHA-256 of element type, shape and bytes, 16 hex."""
    contiguous = np.ascontiguousarray(array)
    h = hashlib.sha256()  # fast (hardware-accelerated on common CPUs), no collisions in practice
    h.update(contiguous.dtype.str.encode())
    h.update(repr(tuple(contiguous.shape)).encode())
    h.update(memoryview(contiguous.reshape(-1)).cast("B"))
    return h.hexdigest()[:DIGEST_LENGTH]


def frozen(array: np.ndarray) -> np.ndarray:
    """Return a read-only contiguous view of a tensor, so that IR constants stay frozen."""
    out = np.ascontiguousarray(array)
    if out.flags.writeable:
        out = out.view()
        out.flags.writeable = False
    return out


def weights_path_for(program: str | os.PathLike[str]) -> Path:
    """Return the side file that holds the weights of a program file (`x.imcir` -> `x.npz`)."""
    return Path(program).with_suffix(".npz")


def save_weights(path: str | os.PathLike[str], arrays: Iterable[np.ndarray]) -> Path:
    """Write tensors to an `.npz` keyed by digest, keeping blobs already in the file."""
    path = Path(path)
    blobs: dict[str, np.ndarray] = dict(load_weights(path)) if path.exists() else {}
    for array in arrays:
        blobs.setdefault(digest(array), np.ascontiguousarray(array))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **blobs)
    os.replace(tmp, path)
    return path


def load_weights(path: str | os.PathLike[str]) -> Mapping[str, np.ndarray]:
    """Read an `.npz` weight file into a digest -> tensor mapping."""
    with np.load(path, allow_pickle=False) as data:
        return {key: frozen(data[key]) for key in data.files}


def find_weights(program: str | os.PathLike[str]) -> Path | None:
    """Return the weight file beside a program: `x.npz`, else `weights.npz` in its folder."""
    for candidate in (weights_path_for(program), Path(program).parent / "weights.npz"):
        if candidate.exists():
            return candidate
    return None
