"""Content-addressed weight storage: tensors are referenced from the text by a digest.

A program's `.npz` side file is user input like its text: it may be missing, truncated, not a
zip at all, or hold arrays that do not match the program. `load_weights` is the one place that
reads it and turns every way of failing into a `WeightFileError`; `blob_problem` is the one rule
for whether an array may stand for a `blob<"...">` reference.
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from imcc.errors import WeightFileError
from imcc.files import write_file
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
            blobs = _read_npz(path)
        except _Unreadable as exc:  # never overwrite a file we cannot read: it may be data
            raise WeightFileError(f"cannot add weights to {path}: it {exc}",
                                  hint="move the file aside, or write the program elsewhere"
                                  ) from None
    for array in arrays:
        blobs.setdefault(digest(array), np.ascontiguousarray(array))
    return write_file(path, lambda stream: np.savez(stream, **blobs))


def load_weights(path: str | os.PathLike[str]) -> Mapping[str, np.ndarray]:
    """Read an `.npz` weight file into a digest -> tensor mapping, or raise WeightFileError."""
    try:
        return _read_npz(Path(path))
    except _Unreadable as exc:
        raise WeightFileError(f"weight file {path} {exc}", hint=_HINT) from None


class _Unreadable(Exception):
    """Why a file is no readable `.npz`, worded to follow its name (`... is damaged: ...`)."""


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        archive = zipfile.ZipFile(path)
    except OSError as exc:
        raise _Unreadable(f"cannot be read: {exc.strerror or exc}") from None
    except Exception as exc:  # BadZipFile, or ValueError/EOFError from a damaged directory
        raise _Unreadable(f"is not an .npz archive ({_reason(exc)})") from None
    blobs: dict[str, np.ndarray] = {}
    with archive:
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            try:
                blobs[key] = frozen(_read_member(archive, info))
            except Exception as exc:  # zlib.error, bad CRC, EOFError, a bad .npy header, ...
                raise _Unreadable(f"is damaged: array '{key}' cannot be read "
                                  f"({_reason(exc)})") from None
    return blobs


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """Read one `.npy` member, checking its header before allocating anything."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
    if dtype.hasobject:
        raise ValueError("it holds Python objects (pickled data), which are never loaded")
    # A header may declare any shape: refuse one the member's bytes cannot hold, so that a
    # damaged or hostile file cannot make us allocate terabytes.
    if math.prod(shape) * dtype.itemsize > info.file_size:
        raise ValueError(f"its header declares {dtype}{list(shape)}, more than the "
                         f"{info.file_size} bytes stored")
    with archive.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def blob_problem(key: str, data: np.ndarray, declared: TensorType, *, from_file: bool = True
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
