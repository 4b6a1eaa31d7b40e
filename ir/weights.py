"""Content-addressed weight storage: tensors are referenced from the text by a digest.

A program's `.npz` side file is user input like its text: it may be missing, truncated, not a
zip at all, or hold arrays that do not match the program. `load_weights` is the one place that
reads it and turns every way of failing into a `WeightFileError`; `blob_problem` is the one rule
for whether an array may stand for a `blob<"...">` reference.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from imcc.errors import WeightFileError
from imcc.files import write_file
from imcc.inputs import Unreadable, read_npz
from imcc.ir.types import DType, TensorType

DIGEST_LENGTH = 16

_HINT = "recompile the program (it writes x.imcir and x.npz together), or pass --weights FILE.npz"


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
    blobs: dict[str, np.ndarray] = {}
    if path.exists():
        try:
            blobs = {key: frozen(array) for key, array in read_npz(path).items()}
        except Unreadable as exc:  # never overwrite a file we cannot read: it may be data
            raise WeightFileError(
                f"cannot add weights to {path}: it {exc}",
                hint="move the file aside, or write the program elsewhere",
            ) from None
    for array in arrays:
        blobs.setdefault(digest(array), np.ascontiguousarray(array))
    return write_file(path, lambda stream: np.savez(stream, **blobs))


def load_weights(path: str | os.PathLike[str]) -> Mapping[str, np.ndarray]:
    """Read an `.npz` weight file into a digest -> tensor mapping, or raise WeightFileError."""
    try:
        return {key: frozen(array) for key, array in read_npz(path).items()}
    except Unreadable as exc:
        raise WeightFileError(f"weight file {path} {exc}", hint=_HINT) from None


def blob_problem(
    key: str, data: np.ndarray, declared: TensorType, *, from_file: bool = True
) -> str | None:
    """Say why `data` cannot be the blob `key` of a constant declared `declared`, or None.

    The digest covers element type, shape and bytes, so a file edited or swapped after the
    program was written is caught. NaN and Inf in a weight file are refused because every
    consumer (cost model, simulator, quantizer) would turn them into silently wrong numbers;
    arrays handed over in memory (`from_file=False`) are the caller's business.
    """
    try:
        DType.from_numpy(data.dtype)
    except KeyError:
        return f"holds {data.dtype} elements, which the IR has no type for"
    actual = TensorType.of(data)
    if actual != declared:
        return f"holds {actual} but the program declares {declared}"
    if digest(data) != key:
        return f"has content digest {digest(data)}, not {key} (the file was changed or swapped)"
    if from_file and data.dtype.kind == "f" and not np.isfinite(data).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(data))[0])
        return f"holds {data[bad]} at index {list(bad)} (weights must be finite)"
    return None


def find_weights(program: str | os.PathLike[str]) -> Path | None:
    """Return the weight file beside a program: `x.npz`, else `weights.npz` in its folder."""
    for candidate in (weights_path_for(program), Path(program).parent / "weights.npz"):
        if candidate.exists():
            return candidate
    return None
