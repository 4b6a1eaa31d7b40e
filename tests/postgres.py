"""A throwaway PostgreSQL server for the tests and benchmarks of several search workers
(Debian's postgresql package; `.ci/run` installs it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Unavailable(RuntimeError):
    """PostgreSQL or its Python driver is not installed."""


def postgres_bin() -> Path | None:
    """Return the folder of the newest installed PostgreSQL server's programs."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a PostgreSQL cluster in a temporary folder on a free port of 127.0.0.1; yield the
    URL of an empty database on it; stop and remove the cluster afterwards. initdb refuses to
    run as root: as root the server runs as Debian's `postgres` user. Raises Unavailable when
    the server or psycopg2 is not installed."""
    programs = postgres_bin()
    if programs is None:
        raise Unavailable("PostgreSQL is not installed")
    try:
        import psycopg2  # noqa: F401
    except ModuleNotFoundError:
        raise Unavailable("psycopg2 is not installed (pip install -e '.[test]')") from None
    as_user: list[str] = []
    home = Path(tempfile.mkdtemp(prefix="imcc-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(home, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = home / "data"

    def run(*command: str) -> None:
        done = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed:\n{done.stdout}\n{done.stderr}")

    try:
        run(
            str(programs / "initdb"),
            "-D",
            str(data),
            "-U",
            "imcc",
            "-A",
            "trust",
            "--no-locale",
            "-E",
            "UTF8",
            "--no-sync",
        )
        for attempt in range(3):  # another process may take the free port first
            port = _free_port()
            try:
                run(
                    str(programs / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(home / "log"),
                    "-w",
                    "-t",
                    "30",
                    "-o",
                    f"-p {port} -k {home} -c listen_addresses=127.0.0.1 "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                    "start",
                )
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        run(str(programs / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "imcc", "search")
        yield f"postgresql+psycopg2://imcc@127.0.0.1:{port}/search"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*as_user, str(programs / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(home, ignore_errors=True)
