"""Output files: checked before a command starts its work, written whole or not at all.

Every file imcc writes goes through `write_file`: the data goes to a temporary file beside the
target, which then replaces it, so a full disk or a killed process never leaves a truncated
report, program or weight file, nor destroys the previous one. A path that names a device or a
pipe (`/dev/stdout`, `/dev/full`) is written in place, since it cannot be replaced. Every
failure is a UserError naming the path and the flag that gave it.

Commands call `check_output` / `check_output_dir` on every output path before they start, so
that a typo in `-o` does not cost a long compilation or search first.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from imcc.errors import UserError


def _nearest_existing(path: Path) -> Path:
    """Return `path` or its closest ancestor that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")


def _refuse(path: Path, flag: str, why: str, hint: str) -> UserError:
    shown = "''" if not os.fspath(path) or (path == Path() and why.startswith("the path")) else path
    where = f"{flag} {shown}" if flag else str(shown)
    return UserError(f"cannot write {where}: {why}", hint=hint)


def check_output(path: str | os.PathLike[str], flag: str = "") -> Path:
    """Return `path` as a Path if a file can be written there, else raise UserError.

    Legal: an existing regular file (replaced), a device or pipe (written in place), or a new
    name whose nearest existing ancestor is a writable directory (missing folders are made).
    """
    if not os.fspath(path):
        raise _refuse("", flag, "the path is empty", "give a file name")
    path = Path(path)
    if path.is_dir():
        raise _refuse(path, flag, "it is a directory", f"give a file name, e.g. {path / 'out'}")
    if path.exists():
        return _check_writable(path, path, flag)
    return _check_parent(path, flag)


def check_output_dir(path: str | os.PathLike[str], flag: str = "") -> Path:
    """Return `path` as a Path if a folder can be written there (existing or made), else raise."""
    if not os.fspath(path):
        raise _refuse("", flag, "the path is empty", "give a folder name")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise _refuse(
            path,
            flag,
            "it exists and is not a folder",
            "give a folder name, or move the file aside",
        )
    if path.is_dir():
        return _check_writable(path, path, flag)
    return _check_parent(path, flag)


def _check_parent(path: Path, flag: str) -> Path:
    ancestor = _nearest_existing(path.parent if str(path.parent) else Path("."))
    if not ancestor.is_dir():
        raise _refuse(path, flag, f"{ancestor} is not a folder", "check the path")
    return _check_writable(path, ancestor, flag)


def _check_writable(path: Path, where: Path, flag: str) -> Path:
    if not os.access(where, os.W_OK):
        what = "folder" if where.is_dir() else "file"
        raise _refuse(
            path,
            flag,
            f"the {what} {where} is not writable",
            "choose another path, or change its permissions",
        )
    return path


def write_file(
    path: str | os.PathLike[str], write: Callable[[BinaryIO], object], flag: str = ""
) -> Path:
    """Write a file through `write(stream)`, whole or not at all; return its path.

    Missing parent folders are made. An OSError (full disk, permissions, a folder in the way)
    becomes a UserError and leaves any previous file at `path` as it was.
    """
    path = check_output(path, flag)
    try:
        if path.exists() and not stat.S_ISREG(path.stat().st_mode):
            with open(path, "wb") as stream:  # a device or a pipe: nothing to replace
                write(stream)
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        try:
            with os.fdopen(handle, "wb") as stream:
                write(stream)
            if path.exists():  # keep the old file's permissions, as an in-place write would
                os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))
            else:
                os.chmod(temporary, 0o666 & ~_umask())
            os.replace(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    except OSError as exc:
        raise _refuse(
            path,
            flag,
            exc.strerror or str(exc),
            "check the disk space and the folder's permissions",
        ) from None
    return path


def write_text(path: str | os.PathLike[str], text: str, flag: str = "") -> Path:
    """Write UTF-8 text whole or not at all (see `write_file`)."""
    return write_file(path, lambda stream: stream.write(text.encode("utf-8")), flag)


def write_bytes(path: str | os.PathLike[str], data: bytes, flag: str = "") -> Path:
    """Write bytes whole or not at all (see `write_file`)."""
    return write_file(path, lambda stream: stream.write(data), flag)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
