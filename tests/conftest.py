"""Command-line options of the test suite."""

from __future__ import annotations

import pytest


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
