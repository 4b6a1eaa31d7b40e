"""Command-line options of the test suite, and the fixtures several test files share."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.postgres import Unavailable, postgres_server


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("imcc fuzzing (tests/test_fuzz.py)")
    group.addoption(
        "--fuzz-examples",
        type=int,
        default=12,
        metavar="N",
        help="examples per fuzz test (default 12, the CI budget; try 500 locally)",
    )
    group.addoption(
        "--fuzz-seed",
        default="fixed",
        choices=("fixed", "random"),
        help="draw the fuzz examples from a fixed seed per test (default) or anew",
    )


def _unavailable(what: str) -> None:
    """Skip a test that needs PostgreSQL; under CI (CI set) fail instead, so that a missing
    install step cannot pass silently."""
    message = f"{what}: install Debian's postgresql package (as .ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """The URL of an empty database on a throwaway PostgreSQL server (tests/postgres.py)."""
    try:
        with postgres_server() as url:
            yield url
    except Unavailable as exc:
        _unavailable(str(exc))
