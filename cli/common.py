"""What the commands share: the argument parser's error rule, output checks, the target of a
program, pipelines with their instruments, the cost report and the simulation summary."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from imcc import driver
from imcc.errors import OptionError, UserError
from imcc.files import check_output, check_output_dir, write_text
from imcc.ir.graph import Graph
from imcc.ir.io import save_program
from imcc.ir.printer import print_graph
from imcc.ir.weights import find_weights, weights_path_for
from imcc.passes.base import Pass
from imcc.passes.context import Decisions
from imcc.passes.instruments import DumpIR, PassInstrument, PrintIR, TimePasses
from imcc.passes.program_target import check_program_target
from imcc.passes.registry import close_matches, registered_passes
from imcc.target import Target


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are UserErrors (one message, exit 2, no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # Python 3.12 stopped quoting the choices; spell them one way on every version.
        message = re.sub(
            r"\(choose from (.*)\)",
            lambda m: f"(choose from {m.group(1).replace(chr(39), '')})",
            message,
        )
        raise UserError(message, hint=f"`{self.prog} --help` shows the usage")


def seed_argument(text: str) -> int:
    """Read a `--seed`: numpy's and torch's generators take integers in [0, 2**63)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..2**63-1, got {value}")
    return value


def check_outputs(
    args: argparse.Namespace,
    files: Sequence[str],
    folders: Sequence[str] = (),
    inputs: Sequence[str | None] = (),
    program: str | None = None,
) -> None:
    """Refuse unwritable output paths before a command starts its work, and outputs that name
    the same file as each other or as an input (the output named `program` is a program, which
    also writes its weights beside it: `x.imcir` -> `x.npz`)."""
    written: dict[Path, str] = {}

    def claim(path: Path, flag: str) -> None:
        key = path.resolve()
        if key in written:
            raise UserError(
                f"{flag} {path} and {written[key]} name the same file",
                hint="give each output its own path",
            )
        written[key] = f"{flag} {path}"

    for name in files:
        value = getattr(args, name, None)
        if value is None:
            continue
        path = check_output(value, flag_of(name))
        claim(path, flag_of(name))
        if name == program:
            if weights_path_for(path).resolve() == path.resolve():
                raise UserError(
                    f"{flag_of(name)} {path}: a program's weights go beside it in "
                    f"{weights_path_for(path)}, the same file",
                    hint="give the program a name ending in .imcir",
                )
            claim(weights_path_for(path), f"the weights of {flag_of(name)} {path}")
    for name in folders:
        if getattr(args, name, None) is not None:
            check_output_dir(getattr(args, name), flag_of(name))
    for value in inputs:
        if value and Path(value).resolve() in written:
            raise UserError(
                f"{written[Path(value).resolve()]} would overwrite the input {value}",
                hint="write the output to another file",
            )


def program_inputs(program: str, weights: str | None) -> list[str | None]:
    """Return the files a command reads for a program: its text and its weights."""
    found = weights or find_weights(program)
    return [program, None if found is None else str(found)]


def flag_of(name: str) -> str:
    return "-o" if name == "output" else "--" + name.replace("_", "-")


def resolve_target(spec: str | None) -> Target | None:
    """Return the target named by `--target` (a built-in name or a `.hw` file), or None."""
    if spec is None:
        return None
    from imcc.frontend.hw import load_target

    return load_target(spec)


def pass_names(flag: str, text: str | None) -> list[str]:
    """Split a `--print-ir-*=NAMES` value into known pass names."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    for name in names:
        if name not in registered_passes():
            close = close_matches(name)
            hint = f"did you mean {' or '.join(close)}?" if close else "`imcc passes` lists them"
            raise OptionError(f"{flag}: unknown pass '{name}'", hint=hint)
    return names


def instruments(args: argparse.Namespace) -> list[PassInstrument]:
    instruments: list[PassInstrument] = []
    before = pass_names("--print-ir-before", args.print_ir_before)
    after = pass_names("--print-ir-after", args.print_ir_after)
    if before or after or args.print_ir_after_all or args.print_ir_after_change:
        instruments.append(
            PrintIR(
                before,
                after,
                after_all=args.print_ir_after_all,
                after_change=args.print_ir_after_change,
            )
        )
    if args.dump_ir_dir:
        instruments.append(DumpIR(args.dump_ir_dir))
    if args.time_passes:
        instruments.append(TimePasses())
    return instruments


def run_pipeline(
    graph: Graph,
    pipeline: str | list[Pass],
    args: argparse.Namespace,
    source: str,
    target: Target | None = None,
    calibration: np.ndarray | None = None,
    decisions: Decisions | None = None,
    *,
    target_spec: str | None = None,
    model: str | None = None,
) -> Graph:
    """Run a pipeline as a command does (driver.compile with the command's instruments,
    --no-verify, --reproducer and --seed); print the decisions with --stats."""
    decisions = decisions or Decisions()
    graph = driver.compile(
        graph,
        target,
        passes=pipeline,
        calibration=calibration,
        seed=args.seed,
        target_spec=target_spec,
        instruments=instruments(args),
        verify_each=not args.no_verify,
        reproducer=args.reproducer,
        decisions=decisions,
        source=model,
        label=source,
    )
    if getattr(args, "stats", False) and decisions.tables:
        print(decisions.format(), file=sys.stderr)
    return graph


def emit(graph: Graph, output: str | None) -> None:
    if output:
        save_program(graph, output)
    else:
        sys.stdout.write(print_graph(graph))


def add_pipeline_flags(parser: argparse.ArgumentParser, *, passes: bool = True) -> None:
    if passes:
        parser.add_argument("--passes", metavar="PIPE", help="pass pipeline, e.g. 'a,b{k=v}'")
    group = parser.add_argument_group("pipeline run and instruments")
    group.add_argument("--print-ir-before", metavar="NAMES", help="print IR before these passes")
    group.add_argument("--print-ir-after", metavar="NAMES", help="print IR after these passes")
    group.add_argument(
        "--print-ir-after-all", action="store_true", help="print IR after every pass"
    )
    group.add_argument(
        "--print-ir-after-change",
        action="store_true",
        help="print IR after a pass only when it changed it",
    )
    group.add_argument(
        "--dump-ir-dir", metavar="DIR", help="write the IR after every pass to DIR/NN-pass.imcir"
    )
    group.add_argument("--time-passes", action="store_true", help="print wall time per pass")
    group.add_argument(
        "--stats",
        action="store_true",
        help="print per-layer tables of what the passes decided (stderr)",
    )
    group.add_argument(
        "--no-verify", action="store_true", help="do not verify the IR after every pass"
    )
    group.add_argument(
        "--reproducer",
        metavar="PATH",
        help="where a failing pass writes its reproducer (default: a temp dir)",
    )
    group.add_argument("--seed", type=seed_argument, default=0, help="seed of every random choice")


def program_target(args: argparse.Namespace, graph: Graph) -> object:
    """Return the target of a mapped program: `--target`, else the one the program records."""
    recorded = graph.attributes.get("target")
    spec = args.target or recorded
    if spec is None:
        raise UserError(
            f"{args.program} does not say which target it is mapped for",
            hint="give --target T (compile with --target records it)",
        )
    target = resolve_target(spec)
    if args.target and recorded and args.target != recorded:
        try:
            mapped_for = resolve_target(recorded)
        except UserError:  # the recorded .hw file moved: --target says where it is now
            mapped_for = target
        if mapped_for != target:
            raise UserError(
                f"{args.program} is mapped for target '{recorded}', not '{args.target}'",
                hint=f"compile the model again with --target {args.target}, or drop --target",
            )
    check_program_target(graph, target)  # a program edited by hand may not fit it any more
    return target


def run_simulation(
    graph: Graph, target: object, spec: str, args: argparse.Namespace
) -> dict | None:
    """Simulate a mapped program on a data set and print the summary; return its record."""
    from imcc.frontend.datasets import load_dataset
    from imcc.simulation import format_simulation, simulate

    source = args.model_source or graph.attributes.get("source")
    float_graph = None
    if source and Path(source).is_file():  # the float reference: the source, cleaned up
        float_graph = driver.float_reference(source, seed=args.seed)
    report = simulate(
        graph,
        target,
        load_dataset(spec, args.limit),
        float_graph=float_graph,
        batch=args.sim_batch,
        seed=args.seed,
        progress=sys.stderr.isatty(),
    )
    if not args.json:
        print(format_simulation(report))
        if float_graph is None:
            print("float accuracy: n/a (the source model is not known; give --model)")
    return report.to_dict()


def print_report(
    graph: Graph,
    target: object,
    json_path: str | None,
    as_json: bool,
    calibrated: str,
    simulation: dict | None = None,
    decisions: Decisions | None = None,
) -> None:
    """Print the cost report of a mapped program (a table, or JSON) and write `--report`."""
    import json

    from imcc.costmodel import estimate, format_table

    report = estimate(graph, target)
    record = {**report.to_dict(), "calibration": calibrated}
    if decisions is not None:
        record["decisions"] = decisions.tables
    if simulation is not None:
        record.update(
            {
                key: simulation[key]
                for key in ("accuracy", "float_accuracy", "quantized_accuracy", "samples")
            }
        )
        record["simulation"] = simulation
    if json_path:
        write_text(json_path, json.dumps(record, indent=2) + "\n", "--report")
    if as_json:
        print(json.dumps(record, indent=2))
    else:
        print(format_table(report))
        print(f"calibration: {calibrated}")
