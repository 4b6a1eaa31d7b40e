"""The `imcc` command line: one module per command group, each holding its own arguments."""

from __future__ import annotations

import argparse
import os
import sys

from imcc import __version__
from imcc.cli import listings, program, run, search
from imcc.cli.common import Parser, resolve_target
from imcc.errors import MEMORY_HINT, ImccError, UserError

DESCRIPTION = (
    "imcc: compile ONNX models for crossbar in-memory-computing accelerators, price "
    "and simulate them, search their mappings and fine-tune them."
)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `imcc` and its subcommands."""
    parser = Parser(prog="imcc", description=DESCRIPTION, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"imcc {__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )
    for group in (program, run, search, listings):
        group.register(sub)
    parser.set_defaults(commands=sub.choices)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for user errors, 1 for failed passes)."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported by the subcommand, so that the hint names its --help
            args.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
        return args.handler(args)
    except ImccError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except MemoryError as exc:
        print(UserError(f"out of memory: {exc}", hint=MEMORY_HINT).render(), file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except BrokenPipeError:  # `imcc ops | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # quiet exit flush
        return 0


__all__ = ["build_parser", "main", "resolve_target"]
