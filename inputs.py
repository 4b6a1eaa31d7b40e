"""Reading the files users hand to imcc: `.npy` / `.npz` arrays (weights, data sets, inputs)
and UTF-8 text (programs, targets).

A user's array file may be missing, a folder, empty, truncated, not an archive at all, hold
pickled Python objects, or carry a header that declares more data than it stores. This module
is the one place such files are opened: every way of failing raises `Unreadable`, whose text
follows the file's name (`x.npz is empty (0 bytes)`), and each caller turns it into its own
UserError with its own hint. Nothing is allocated before a header is checked against the bytes
the file holds, and pickles are never loaded.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from imcc.errors import ParseError

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"


class Unreadable(Exception):
    """Why a file is no readable array file, worded to follow its name."""


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Return the arrays of an `.npz` archive by name (without `.npy`), or raise Unreadable."""
    path = Path(path)
    head = _head(path)
    if head.startswith(NPY_MAGIC):
        raise Unreadable("is a single .npy array, not an .npz archive")
    if not head.startswith(ZIP_MAGIC):
        raise Unreadable("is not an .npz archive")
    try:
        archive = zipfile.ZipFile(path)
    except OSError as exc:
        raise Unreadable(f"cannot be read: {exc.strerror or exc}") from None
    except Exception as exc:  # BadZipFile, or ValueError/EOFError from a damaged directory
        raise Unreadable(f"is a damaged or truncated .npz archive ({_reason(exc)})") from None
    arrays: dict[str, np.ndarray] = {}
    with archive:
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            try:
                with archive.open(info) as member:
                    arrays[key] = _read_array(member, info.file_size)
            except Exception as exc:  # zlib.error, bad CRC, EOFError, a bad .npy header, ...
                raise Unreadable(
                    f"is damaged: array '{key}' cannot be read ({_reason(exc)})"
                ) from None
    return arrays


def read_arrays(path: str | os.PathLike[str]) -> np.ndarray | dict[str, np.ndarray]:
    """Return the array of an `.npy` file or the arrays of an `.npz`, told apart by content."""
    path = Path(path)
    if not _head(path).startswith(NPY_MAGIC):
        return read_npz(path)
    try:
        with path.open("rb") as stream:
            return _read_array(stream, path.stat().st_size)
    except OSError as exc:
        raise Unreadable(f"cannot be read: {exc.strerror or exc}") from None
    except Exception as exc:
        raise Unreadable(f"is a damaged .npy file ({_reason(exc)})") from None


def _head(path: Path) -> bytes:
    """Return the first bytes of a file, or raise Unreadable for what is not a file of data."""
    if not path.exists():
        raise Unreadable("does not exist")
    if path.is_dir():
        raise Unreadable("is a folder, not a file")
    try:
        with path.open("rb") as stream:
            head = stream.read(len(NPY_MAGIC))
    except OSError as exc:
        raise Unreadable(f"cannot be read: {exc.strerror or exc}") from None
    if not head:
        raise Unreadable("is empty (0 bytes)")
    return head


def _read_array(stream: BinaryIO, stored: int) -> np.ndarray:
    """Read one `.npy` stream of `stored` bytes, checking its header before allocating."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
    if dtype.hasobject:
        raise ValueError("it holds Python objects (pickled data), which are never loaded")
    # A header may declare any shape: refuse one the stored bytes cannot hold, so that a
    # damaged or hostile file cannot make us allocate terabytes.
    if math.prod(shape) * dtype.itemsize > stored:
        raise ValueError(
            f"its header declares {dtype}{list(shape)}, more than the {stored} bytes stored"
        )
    count = math.prod(shape)
    data = stream.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise EOFError(f"{len(data)} of {count * dtype.itemsize} bytes of data")
    array = np.frombuffer(bytearray(data), dtype=dtype, count=count)  # writable, like np.load
    order = "F" if fortran else "C"
    return array.reshape(shape[::-1]).T if order == "F" else array.reshape(shape)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def decode_text(data: bytes, filename: str, hint: str) -> str:
    """Return file bytes as text (a UTF-8 byte-order mark dropped), or raise a ParseError at the
    line and column of the first byte that is not UTF-8."""
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark some editors write
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        start = data.rfind(b"\n", 0, exc.start) + 1
        end = data.find(b"\n", exc.start)
        source = data[start : end if end >= 0 else len(data)].decode("utf-8", "replace")
        column = len(data[start : exc.start].decode("utf-8", "replace")) + 1
        raise ParseError(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded",
            filename=filename,
            line=line,
            column=column,
            source_line="".join(" " if ord(c) < 0x20 else c for c in source.rstrip("\r")),
            hint=hint,
        ) from None
