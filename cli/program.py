"""Commands on a model and its mapped program: compile, opt, cost, simulate, export-qdq."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imcc import driver
from imcc.cli.common import (
    add_pipeline_flags,
    check_outputs,
    emit,
    print_report,
    program_inputs,
    program_target,
    resolve_target,
    run_pipeline,
    run_simulation,
    seed_argument,
)
from imcc.driver import calibration_data, import_model
from imcc.errors import UserError
from imcc.examples import resolve_model
from imcc.files import write_bytes
from imcc.ir.graph import Graph
from imcc.ir.io import load_program, read_program_text
from imcc.passes.context import Decisions
from imcc.passes.program_target import check_program_target
from imcc.passes.reproducer import read_reproducer_pipeline


def _cmd_compile(args: argparse.Namespace) -> int:
    args.model = str(resolve_model(args.model))
    check_outputs(
        args, ["output", "report", "reproducer"], ["dump_ir_dir"], [args.model], program="output"
    )
    target = resolve_target(args.target)
    graph = import_model(args.model, args.batch)
    # parsed before the data: a typo costs nothing
    passes = driver.pipeline_passes(args.passes, target, "--passes")
    calibration, calibrated = (None, "none")
    if target is not None or args.calib is not None:
        calibration, calibrated = calibration_data(args.calib, args.model)
    decisions = Decisions()
    graph = run_pipeline(
        graph,
        passes,
        args,
        "--passes",
        target,
        calibration,
        decisions,
        target_spec=args.target,
        model=args.model,
    )
    if target is not None:
        graph = _learned_normalisation(graph, args.model)
    if target is None:
        if not args.output and any(not c.inline for c in graph.constants.values()):
            print(
                "note: weights are not written when the program goes to stdout; use -o FILE",
                file=sys.stderr,
            )
        emit(graph, args.output)
        return 0
    check_program_target(
        graph,
        target,
        hint="the pipeline's choices do not fit the target: "
        "give --passes options the target offers",
    )
    simulation = None
    if args.simulate:
        args.json, args.model_source = False, None
        simulation = run_simulation(graph, target, args.simulate, args)
    print_report(graph, target, args.report, False, calibrated, simulation, decisions)
    if args.output:  # last: a command that fails leaves an earlier program as it was
        emit(graph, args.output)
    return 0


def _learned_normalisation(graph: Graph, model: str) -> Graph:
    """Apply the MTJ normalisation a model learned in `imcc finetune` and say so."""
    from imcc.finetune.export import with_learned_normalisation

    graph, layers = with_learned_normalisation(graph, model)
    if layers:
        print(
            f"note: {layers} MTJ layers take the normalisation learned in fine-tuning "
            "(the model's imcc.finetune record)",
            file=sys.stderr,
        )
    return graph


def _cmd_simulate(args: argparse.Namespace) -> int:
    if args.model_source and not Path(args.model_source).is_file():
        raise UserError(
            f"--model {args.model_source}: no such file",
            hint="the float ONNX model the program was compiled from; or drop "
            "--model to use the one the program records",
        )
    graph = load_program(args.program, args.weights, command=args.command)
    record = run_simulation(graph, program_target(args, graph), args.data, args)
    if args.json:
        import json

        print(json.dumps(record, indent=2))
    return 0


def _cmd_cost(args: argparse.Namespace) -> int:
    check_outputs(args, ["report"], inputs=program_inputs(args.program, args.weights))
    graph = load_program(args.program, args.weights, command=args.command)
    print_report(
        graph, program_target(args, graph), args.report, args.json, "as recorded in the program"
    )
    return 0


def _cmd_opt(args: argparse.Namespace) -> int:
    check_outputs(
        args,
        ["output", "reproducer"],
        ["dump_ir_dir"],
        program_inputs(args.input, args.weights),
        program="output",
    )
    pipeline, source = args.passes or "", "--passes"
    if args.run_reproducer:
        if args.passes is not None:
            raise UserError(
                "--run-reproducer takes the pipeline from the file",
                hint="drop --passes, or drop --run-reproducer",
            )
        text = read_program_text(args.input)
        pipeline, source = read_reproducer_pipeline(text, args.input), args.input
    graph = load_program(args.input, args.weights, command=args.command)
    spec = args.target or graph.attributes.get("target")
    target = resolve_target(spec) if pipeline.strip() and spec else None
    calibration = calibration_data(args.calib, args.input)[0] if args.calib else None
    graph = run_pipeline(
        graph, pipeline, args, source, target, calibration, target_spec=args.target
    )
    emit(graph, args.output)
    return 0


def _cmd_export_qdq(args: argparse.Namespace) -> int:
    from imcc.backend.qdq import export_qdq

    check_outputs(args, ["output"], inputs=program_inputs(args.program, args.weights))
    model = export_qdq(load_program(args.program, args.weights, command=args.command))
    write_bytes(args.output, model.SerializeToString(), "-o")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add compile, opt, cost, simulate and export-qdq to the subcommands."""
    compile_ = sub.add_parser(
        "compile", help="import an ONNX model and run a pipeline on it", allow_abbrev=False
    )
    compile_.add_argument("model", metavar="MODEL.onnx")
    compile_.add_argument("--target", metavar="T", help="a built-in target name or a .hw file")
    compile_.add_argument("-o", "--output", metavar="OUT.imcir", help="default: stdout")
    compile_.add_argument("--batch", type=int, metavar="N", help="batch size of the inputs")
    compile_.add_argument(
        "--calib",
        metavar="DATA",
        help="calibration data: digits, mnist:DIR, fashion-mnist:DIR, npz:FILE",
    )
    compile_.add_argument("--report", metavar="R.json", help="write the cost report as JSON")
    compile_.add_argument(
        "--simulate",
        metavar="DATA",
        help="also simulate the mapped program on a data set (accuracy)",
    )
    compile_.add_argument("--limit", type=int, metavar="N", help="samples of --simulate DATA")
    compile_.add_argument(
        "--sim-batch",
        type=int,
        default=64,
        metavar="B",
        help="samples simulated at once (default 64)",
    )
    add_pipeline_flags(compile_)
    compile_.set_defaults(handler=_cmd_compile)

    opt = sub.add_parser("opt", help="run a pipeline on a textual program", allow_abbrev=False)
    opt.add_argument("input", metavar="IN.imcir")
    opt.add_argument("-o", "--output", metavar="OUT", help="default: stdout")
    opt.add_argument("--weights", metavar="W.npz", help="weights (default: beside IN)")
    opt.add_argument(
        "--run-reproducer", action="store_true", help="replay the pipeline recorded in a reproducer"
    )
    opt.add_argument(
        "--target",
        metavar="T",
        help="target of mapping passes (default: the one the program records)",
    )
    opt.add_argument("--calib", metavar="DATA", help="calibration data of quantize")
    add_pipeline_flags(opt)
    opt.set_defaults(handler=_cmd_opt)

    cost = sub.add_parser(
        "cost", help="price a mapped program: energy, latency, area", allow_abbrev=False
    )
    cost.add_argument("program", metavar="PROGRAM.imcir")
    cost.add_argument("--target", metavar="T", help="default: the target the program records")
    cost.add_argument("--weights", metavar="W.npz", help="weights (default: beside PROGRAM)")
    cost.add_argument("--json", action="store_true", help="print the report as JSON")
    cost.add_argument("--report", metavar="R.json", help="also write the JSON report here")
    cost.set_defaults(handler=_cmd_cost)

    simulate = sub.add_parser(
        "simulate", help="accuracy of a mapped program on a data set", allow_abbrev=False
    )
    simulate.add_argument("program", metavar="PROGRAM.imcir")
    simulate.add_argument(
        "--data",
        required=True,
        metavar="DATA",
        help="digits, mnist:DIR, fashion-mnist:DIR, npz:FILE, or an example",
    )
    simulate.add_argument("--limit", type=int, metavar="N", help="simulate the first N samples")
    simulate.add_argument(
        "--batch",
        dest="sim_batch",
        type=int,
        default=64,
        metavar="B",
        help="samples simulated at once (default 64)",
    )
    simulate.add_argument(
        "--seed", type=seed_argument, default=0, help="seed of the converters' draws"
    )
    simulate.add_argument("--target", metavar="T", help="default: the one the program records")
    simulate.add_argument(
        "--model",
        dest="model_source",
        metavar="MODEL.onnx",
        help="the float model (default: the one the program records)",
    )
    simulate.add_argument("--weights", metavar="W.npz", help="weights (default: beside PROGRAM)")
    simulate.add_argument("--json", action="store_true", help="print the report as JSON")
    simulate.set_defaults(handler=_cmd_simulate)

    export = sub.add_parser(
        "export-qdq", help="write a quantized program as an ONNX QDQ model", allow_abbrev=False
    )
    export.add_argument("program", metavar="PROGRAM.imcir")
    export.add_argument("-o", "--output", metavar="MODEL.onnx", required=True)
    export.add_argument("--weights", metavar="W.npz", help="weights (default: beside PROGRAM)")
    export.set_defaults(handler=_cmd_export_qdq)
