"""Listings: the passes, the IR ops and the built-in targets."""

from __future__ import annotations

import argparse
import sys

from imcc.passes.registry import describe_passes
from imcc.targets import BUILTIN_TARGETS


def _cmd_passes(args: argparse.Namespace) -> int:
    sys.stdout.write(describe_passes())
    return 0


def _cmd_ops(args: argparse.Namespace) -> int:
    from imcc.ir.ops import all_ops

    for op in all_ops().values():
        print(op.signature())
        print(f"    {op.summary}")
    return 0


def _cmd_targets(args: argparse.Namespace) -> int:
    from imcc.frontend.hw import describe_target, load_target

    for name in BUILTIN_TARGETS:
        print(describe_target(load_target(name)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add passes, ops and targets to the subcommands."""
    for name, handler, text in [
        ("passes", _cmd_passes, "list the passes, their options and defaults"),
        ("ops", _cmd_ops, "list the IR ops with their signatures"),
        ("targets", _cmd_targets, "list the built-in targets"),
    ]:
        sub.add_parser(name, help=text, allow_abbrev=False).set_defaults(handler=handler)
