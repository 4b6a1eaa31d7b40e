"""FileCheck golden tests: every `tests/filecheck/*.imcir` runs its `// RUN:` lines in a shell.

In a RUN line `%s` is the file itself, `imcc` runs `python -m imcc` and `filecheck` runs the
Python FileCheck clone (`python -m filecheck`), all with the interpreter running the tests;
`not CMD` (as in LLVM's lit) succeeds when CMD fails.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent / "filecheck"
FILES = sorted(HERE.glob("*.imcir"))
RUN = re.compile(r"^//\s*RUN:\s*(.*)$")
TOOL = re.compile(r"(^|\|\s*|\bnot\s+)(imcc|filecheck)\b")
NOT = 'not() { if "$@"; then return 1; fi; }; '


def run_lines(path: Path) -> list[str]:
    """Return the shell commands of a test file, with tools and `%s` substituted."""
    python = shlex.quote(sys.executable)
    commands = []
    for line in path.read_text().splitlines():
        found = RUN.match(line.strip())
        if found:
            command = TOOL.sub(lambda m: f"{m.group(1)}{python} -m {m.group(2)}", found.group(1))
            commands.append(command.replace("%s", shlex.quote(str(path))))
    return commands


def test_there_are_filecheck_tests() -> None:
    assert len(FILES) >= 3
    assert all(run_lines(path) for path in FILES), "every FileCheck test needs a RUN line"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_filecheck(path: Path) -> None:
    for command in run_lines(path):
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", NOT + command],
            capture_output=True,
            text=True,
            cwd=HERE,
            timeout=120,
        )
        assert done.returncode == 0, (
            f"RUN: {command}\nexit {done.returncode}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
