"""The `imcc` command line: compile, opt, run, and listings of passes, ops and targets."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from imcc import __version__
from imcc.arrays import Unreadable, read_arrays
from imcc.driver import calibration_data, default_pipeline
from imcc.errors import ImccError, OptionError, UserError
from imcc.examples import resolve_model
from imcc.files import check_output, check_output_dir, write_bytes, write_file, write_text
from imcc.ir.graph import Graph
from imcc.ir.io import load_program, read_program_text, save_program
from imcc.ir.printer import print_graph
from imcc.passes.base import Pass
from imcc.passes.context import Context, Decisions
from imcc.passes.instruments import DumpIR, PassInstrument, PrintIR, TimePasses
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline
from imcc.passes.program_target import check_program_target
from imcc.passes.registry import close_matches, describe_passes, registered_passes
from imcc.passes.reproducer import read_reproducer_pipeline
from imcc.target import Target
from imcc.targets import BUILTIN_TARGETS


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are UserErrors (one message, exit 2, no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # Python 3.12 stopped quoting the choices; spell them one way on every version.
        message = re.sub(r"\(choose from (.*)\)",
                         lambda m: f"(choose from {m.group(1).replace(chr(39), '')})", message)
        raise UserError(message, hint=f"`{self.prog} --help` shows the usage")


def _seed(text: str) -> int:
    """Read a `--seed`: numpy's and torch's generators take integers in [0, 2**63)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..2**63-1, got {value}")
    return value


def _check_outputs(args: argparse.Namespace, files: Sequence[str], folders: Sequence[str] = ()
                   ) -> None:
    """Refuse unwritable output paths before a command starts its work."""
    for name in files:
        if getattr(args, name, None):
            check_output(getattr(args, name), _flag(name))
    for name in folders:
        if getattr(args, name, None):
            check_output_dir(getattr(args, name), _flag(name))


def _flag(name: str) -> str:
    return "-o" if name == "output" else "--" + name.replace("_", "-")


def resolve_target(spec: str | None) -> Target | None:
    """Return the target named by `--target` (a built-in name or a `.hw` file), or None."""
    if spec is None:
        return None
    from imcc.frontend.hw import load_target

    return load_target(spec)


def _pass_names(flag: str, text: str | None) -> list[str]:
    """Split a `--print-ir-*=NAMES` value into known pass names."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    for name in names:
        if name not in registered_passes():
            close = close_matches(name)
            hint = f"did you mean {' or '.join(close)}?" if close else "`imcc passes` lists them"
            raise OptionError(f"{flag}: unknown pass '{name}'", hint=hint)
    return names


def _instruments(args: argparse.Namespace) -> list[PassInstrument]:
    instruments: list[PassInstrument] = []
    before = _pass_names("--print-ir-before", args.print_ir_before)
    after = _pass_names("--print-ir-after", args.print_ir_after)
    if before or after or args.print_ir_after_all or args.print_ir_after_change:
        instruments.append(PrintIR(before, after, after_all=args.print_ir_after_all,
                                   after_change=args.print_ir_after_change))
    if args.dump_ir_dir:
        instruments.append(DumpIR(args.dump_ir_dir))
    if args.time_passes:
        instruments.append(TimePasses())
    return instruments


def _run_pipeline(graph: Graph, pipeline: str | list[Pass], args: argparse.Namespace,
                  source: str, target: object | None = None,
                  calibration: np.ndarray | None = None,
                  decisions: Decisions | None = None) -> Graph:
    passes = parse_pipeline(pipeline, source) if isinstance(pipeline, str) else pipeline
    manager = PassManager(passes, _instruments(args), verify_each=not args.no_verify,
                          reproducer=args.reproducer)
    options = {} if calibration is None else {"calibration": calibration}
    ctx = Context(target=target, seed=args.seed, options=options,
                  logger=logging.getLogger("imcc"), decisions=decisions or Decisions())
    graph = manager.run(graph, ctx)
    if getattr(args, "stats", False) and ctx.decisions.tables:
        print(ctx.decisions.format(), file=sys.stderr)
    return graph


def _with_target(graph: Graph, spec: str | None) -> Graph:
    """Record the target a program is mapped for (`imcc cost` reads it back)."""
    if spec is None:
        return graph
    return graph.replace(attributes={**graph.attributes, "target": spec})


def _simulation(graph: Graph, target: object, spec: str, args: argparse.Namespace
                ) -> dict | None:
    """Simulate a mapped program on a data set and print the summary; return its record."""
    from imcc.backend.simulate import format_simulation, simulate
    from imcc.frontend.datasets import load_dataset
    source = args.model_source or graph.attributes.get("source")
    float_graph = None
    if source and Path(source).is_file():  # the float reference: the source, cleaned up
        float_graph = PassManager(parse_pipeline(DEFAULT_PIPELINE)).run(
            _import_onnx(source, None), Context(seed=args.seed))
    report = simulate(graph, target, load_dataset(spec, args.limit), float_graph=float_graph,
                      batch=args.sim_batch, seed=args.seed, progress=sys.stderr.isatty())
    if not args.json:
        print(format_simulation(report))
        if float_graph is None:
            print("float accuracy: n/a (the source model is not known; give --model)")
    return report.to_dict()


def _report(graph: Graph, target: object, json_path: str | None, as_json: bool,
            calibrated: str, simulation: dict | None = None,
            decisions: Decisions | None = None) -> None:
    """Print the cost report of a mapped program (a table, or JSON) and write `--report`."""
    import json

    from imcc.costmodel import estimate, format_table

    report = estimate(graph, target)
    record = {**report.to_dict(), "calibration": calibrated}
    if decisions is not None:
        record["decisions"] = decisions.tables
    if simulation is not None:
        record.update({key: simulation[key] for key in (
            "accuracy", "float_accuracy", "quantized_accuracy", "samples")})
        record["simulation"] = simulation
    if json_path:
        write_text(json_path, json.dumps(record, indent=2) + "\n", "--report")
    if as_json:
        print(json.dumps(record, indent=2))
    else:
        print(format_table(report))
        print(f"calibration: {calibrated}")


def _emit(graph: Graph, output: str | None) -> None:
    if output:
        save_program(graph, output)
    else:
        sys.stdout.write(print_graph(graph))


def _import_onnx(path: str, batch: int | None) -> Graph:
    from imcc.frontend.onnx import import_onnx

    if not Path(path).is_file():
        raise UserError(f"cannot read {path}: no such file")
    return import_onnx(path) if batch is None else import_onnx(path, batch=batch)


def _cmd_compile(args: argparse.Namespace) -> int:
    _check_outputs(args, ["output", "report", "reproducer"], ["dump_ir_dir"])
    args.model = str(resolve_model(args.model))
    target = resolve_target(args.target)
    graph = _with_target(_import_onnx(args.model, args.batch), args.target)
    if target is not None:
        graph = graph.replace(attributes={**graph.attributes,
                                          "source": str(Path(args.model).resolve())})
    pipeline = args.passes if args.passes is not None else default_pipeline(target)
    passes = parse_pipeline(pipeline, "--passes")  # before the data: a typo costs nothing
    calibration, calibrated = (None, "none")
    if target is not None or args.calib is not None:
        calibration, calibrated = calibration_data(args.calib, args.model)
    decisions = Decisions()
    graph = _run_pipeline(graph, passes, args, "--passes", target, calibration, decisions)
    if target is not None:
        graph = _learned_normalisation(graph, args.model)
    if target is None:
        if not args.output and any(not c.inline for c in graph.constants.values()):
            print("note: weights are not written when the program goes to stdout; use -o FILE",
                  file=sys.stderr)
        _emit(graph, args.output)
        return 0
    if args.output:
        _emit(graph, args.output)
    simulation = None
    if args.simulate:
        args.json, args.model_source = False, None
        simulation = _simulation(graph, target, args.simulate, args)
    _report(graph, target, args.report, False, calibrated, simulation, decisions)
    return 0


def _learned_normalisation(graph: Graph, model: str) -> Graph:
    """Apply the MTJ normalisation a model learned in `imcc finetune` and say so."""
    from imcc.finetune.export import with_learned_normalisation

    graph, layers = with_learned_normalisation(graph, model)
    if layers:
        print(f"note: {layers} MTJ layers take the normalisation learned in fine-tuning "
              "(the model's imcc.finetune record)", file=sys.stderr)
    return graph


def _program_target(args: argparse.Namespace, graph: Graph) -> object:
    """Return the target of a mapped program: `--target`, else the one the program records."""
    recorded = graph.attributes.get("target")
    spec = args.target or recorded
    if spec is None:
        raise UserError(f"{args.program} does not say which target it is mapped for",
                        hint="give --target T (compile with --target records it)")
    target = resolve_target(spec)
    if args.target and recorded and args.target != recorded:
        try:
            mapped_for = resolve_target(recorded)
        except UserError:  # the recorded .hw file moved: --target says where it is now
            mapped_for = target
        if mapped_for != target:
            raise UserError(f"{args.program} is mapped for target '{recorded}', not "
                            f"'{args.target}'",
                            hint=f"compile the model again with --target {args.target}, or "
                            "drop --target")
    check_program_target(graph, target)  # a program edited by hand may not fit it any more
    return target


def _cmd_simulate(args: argparse.Namespace) -> int:
    if args.model_source and not Path(args.model_source).is_file():
        raise UserError(f"--model {args.model_source}: no such file",
                        hint="the float ONNX model the program was compiled from; or drop "
                        "--model to use the one the program records")
    graph = load_program(args.program, args.weights, command=args.command)
    record = _simulation(graph, _program_target(args, graph), args.data, args)
    if args.json:
        import json

        print(json.dumps(record, indent=2))
    return 0


def _cmd_cost(args: argparse.Namespace) -> int:
    _check_outputs(args, ["report"])
    graph = load_program(args.program, args.weights, command=args.command)
    _report(graph, _program_target(args, graph), args.report, args.json,
            "as recorded in the program")
    return 0


def _cmd_opt(args: argparse.Namespace) -> int:
    _check_outputs(args, ["output", "reproducer"], ["dump_ir_dir"])
    pipeline, source = args.passes or "", "--passes"
    if args.run_reproducer:
        if args.passes is not None:
            raise UserError("--run-reproducer takes the pipeline from the file",
                            hint="drop --passes, or drop --run-reproducer")
        text = read_program_text(args.input)
        pipeline, source = read_reproducer_pipeline(text, args.input), args.input
    graph = load_program(args.input, args.weights, command=args.command)
    spec = args.target or graph.attributes.get("target")
    target = resolve_target(spec) if pipeline.strip() and spec else None
    calibration = calibration_data(args.calib, args.input)[0] if args.calib else None
    graph = _run_pipeline(_with_target(graph, args.target), pipeline, args, source, target,
                          calibration)
    _emit(graph, args.output)
    return 0


def _cmd_export_qdq(args: argparse.Namespace) -> int:
    from imcc.backend.qdq import export_qdq

    check_output(args.output, "-o")
    model = export_qdq(load_program(args.program, args.weights, command=args.command))
    write_bytes(args.output, model.SerializeToString(), "-o")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from imcc.search import SearchConfig, run_search
    from imcc.search.storage import redact, storage_url

    _check_outputs(args, [], ["out"])

    config = SearchConfig(
        model=args.model, target=args.target, data=args.data, trials=args.trials,
        objective=args.objective, max_accuracy_drop=args.max_accuracy_drop,
        area_budget_mm2=args.area_budget, strategy=args.strategy, storage=args.storage,
        study=args.study, seed=args.seed, out=Path(args.out), search_samples=args.limit,
        probe_samples=args.probe, check_samples=args.check, random_trials=args.random_trials,
        family=args.family, family_images=args.family_images)
    try:
        result = run_search(config, progress=sys.stderr.isatty())
    except KeyboardInterrupt:
        where = redact(storage_url(config.storage, config.out))
        print(f"\ninterrupted: every finished trial is stored in {where}; run the same command "
              "again to resume", file=sys.stderr)
        return 130
    print(result.summary)
    written = ["pareto.json", "pareto.png"] + (["best.imcir"] if result.best else [])
    print(f"wrote: {', '.join(str(config.out / name) for name in written)}")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    import json

    from imcc.finetune.session import FinetuneConfig, run_finetune
    from imcc.finetune.train import TrainConfig

    _check_outputs(args, ["output", "report"])
    config = FinetuneConfig(
        model=args.model, target=args.target, data=args.data, output=args.output,
        train=TrainConfig(epochs=args.epochs, lr=args.lr, batch=args.batch, seed=args.seed,
                          optimizer=args.optimizer, clip=args.clip,
                          surrogate_epochs=args.surrogate_epochs,
                          surrogate_ramp=args.surrogate_ramp,
                          datapath_images=args.datapath_images,
                          datapath_lr=args.datapath_lr, checkpoint=args.checkpoint,
                          fuse=not args.eager),
        train_images=args.train, holdout=args.holdout, passes=args.passes,
        backward=args.backward, sim_batch=args.sim_batch)
    result = run_finetune(config, progress=sys.stderr.isatty(),
                          log=(lambda line: None) if args.json else print)
    record = result.to_dict()
    if args.report:
        write_text(args.report, json.dumps(record, indent=2) + "\n", "--report")
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(f"wrote {args.output} (fine-tuned weights; the learned MTJ normalisation in its "
              f"metadata) and {result.program} (the program measured)")
        print(f"reproduce: imcc simulate {result.program} --data npz:{result.holdout_data} "
              f"--batch {result.sim_batch} --seed {args.seed}")
    return 0


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


def _read_feeds(specs: Sequence[str], graph: Graph) -> dict[str, np.ndarray]:
    """Bind `--input` files to graph inputs: `name=X.npy`, an `.npz` by key (other keys are
    ignored), else in order."""
    names = [v.name for v in graph.inputs]
    feeds: dict[str, np.ndarray] = {}
    positional: list[np.ndarray] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = "", spec
        loaded = _load_arrays(path)
        if isinstance(loaded, dict):  # arrays not named after an input (labels) are not inputs
            feeds.update({k: v for k, v in loaded.items() if k in names})
        elif name:
            feeds[name] = loaded
        else:
            positional.append(loaded)
    for array, name in zip(positional, [n for n in names if n not in feeds], strict=False):
        feeds[name] = array
    unknown = [n for n in feeds if n not in names]
    if unknown or len(positional) > len(names):
        what = f"'{unknown[0]}'" if unknown else "more arrays than inputs"
        raise UserError(f"--input: the graph has no input {what}",
                        hint=f"graph inputs: {', '.join(names)}")
    missing = [n for n in names if n not in feeds]
    if missing:
        raise UserError(f"no --input for graph input '{missing[0]}'",
                        hint=f"pass --input {missing[0]}=FILE.npy")
    return feeds


def _summary(name: str, array: np.ndarray) -> list[str]:
    """Describe one output: type, range, and per-sample argmax/top values of the last axis."""
    from imcc.ir.types import TensorType

    lines = [f"%{name}: {TensorType.of(array)}"]
    if array.size == 0:
        return lines
    numeric = array.astype(np.float64)
    lines[0] += (f"  min {numeric.min():.6g}  max {numeric.max():.6g}"
                 f"  mean {numeric.mean():.6g}")
    if array.ndim >= 1 and array.dtype.kind in "fiu":
        rows = numeric.reshape(-1, array.shape[-1])
        argmax = rows.argmax(axis=-1)
        shown = ", ".join(str(int(i)) for i in argmax[:16])
        lines.append(f"  argmax: [{shown}{', ...' if len(argmax) > 16 else ''}]")
        top = np.argsort(-rows[0], kind="stable")[:5]
        lines.append("  top values (sample 0): "
                     + ", ".join(f"{int(i)}: {rows[0][i]:.6g}" for i in top))
    return lines


def _ort_runner(model: str, graph: Graph):
    """Return a function running the ONNX model in onnxruntime, outputs keyed like `graph`'s.

    onnxruntime refusing the model (an op or element type it does not implement, a graph it
    considers invalid) or failing on the inputs is a UserError with its reason in one line:
    the model is the user's, and imcc's own result does not depend on onnxruntime.
    """
    import onnxruntime
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    # onnxruntime's exceptions derive from Exception directly, one class per status code.
    errors = (RuntimeError, ValueError, TypeError, *(
        kind for kind in vars(state).values()
        if isinstance(kind, type) and issubclass(kind, Exception)))
    hint = "drop --check-ort; the outputs above are imcc's own and do not depend on onnxruntime"

    def reason(exc: Exception) -> str:  # the first line, without the status-code prefix
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : ", "", text)
        return text if len(text) <= 300 else text[:297] + "..."

    try:
        session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    except errors as exc:
        raise UserError(f"--check-ort: onnxruntime cannot load {model}: {reason(exc)}",
                        hint=hint) from None
    ort_inputs = [meta.name for meta in session.get_inputs()]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        by_position = [feeds[v.name] for v in graph.inputs]
        ort_feeds = {name: feeds.get(name, by_position[i] if i < len(by_position) else None)
                     for i, name in enumerate(ort_inputs)}
        try:
            results = session.run(None, ort_feeds)
        except errors as exc:
            raise UserError(f"--check-ort: onnxruntime cannot run {model}: {reason(exc)}",
                            hint=hint) from None
        return dict(zip(graph.outputs, results, strict=False))

    return run


def _relative_errors(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]
                     ) -> tuple[list[str], list[str]]:
    """Compare our outputs with onnxruntime's: one line per output, and the failures.

    The error is max|ours - theirs| / max|theirs|. It means something only between finite
    arrays of the same shape, so an output that holds NaN or infinite values (ours or
    onnxruntime's, even at the same places: a NaN error shows no agreement) or whose shape
    differs is a failure; `_cmd_run` prints every line, writes `-o`, and then exits with
    status 2 naming the failing outputs. A finite error is only reported, never judged.
    """
    lines, failures = [], []
    for name, expected in theirs.items():
        expected = np.asarray(expected, dtype=np.float64)
        actual = np.asarray(ours[name], dtype=np.float64)
        if actual.shape != expected.shape:
            why = f"shape {list(actual.shape)} differs from onnxruntime's {list(expected.shape)}"
        else:
            counts = [(who, int(np.size(a) - np.isfinite(a).sum()))
                      for who, a in (("ours", actual), ("onnxruntime's", expected))]
            bad = ", ".join(f"{who} has {n} NaN or infinite values" for who, n in counts if n)
            why = f"not finite: {bad}" if bad else ""
        if why:
            lines.append(f"onnxruntime: %{name} {why}")
            failures.append(f"%{name} is {why}" if why.startswith("not") else f"%{name}: {why}")
            continue
        scale = max(float(np.abs(expected).max(initial=0.0)), float(np.finfo(np.float32).tiny))
        error = float(np.abs(actual - expected).max(initial=0.0)) / scale
        lines.append(f"onnxruntime: %{name} max relative error {error:.3g}")
    return lines, failures


def _samples(graph: Graph, feeds: dict[str, np.ndarray]) -> int:
    """Return N > 1 when the graph takes batch 1 and every feed holds N samples, else 1."""
    counts = set()
    for value in graph.inputs:
        shape, expected = feeds[value.name].shape, value.type.shape
        if not expected or expected[0] != 1 or shape[1:] != expected[1:] or not shape:
            return 1
        counts.add(shape[0])
    return counts.pop() if len(counts) == 1 else 1


def _per_sample(run, feeds: dict[str, np.ndarray], samples: int) -> dict[str, np.ndarray]:
    """Run a batch-1 function on each sample in turn and stack the outputs."""
    if samples == 1:
        return run(feeds)
    parts = [run({k: v[i : i + 1] for k, v in feeds.items()}) for i in range(samples)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _cmd_run(args: argparse.Namespace) -> int:
    from imcc.backend.reference import run_graph

    args.model = str(resolve_model(args.model))
    is_onnx = args.model.endswith(".onnx")
    if args.check_ort and not is_onnx:
        raise UserError("--check-ort needs an .onnx model", hint="drop --check-ort")
    if is_onnx:
        batch = args.batch
        if batch is None:  # the batch of the data, where the model's batch is symbolic
            batch = _first_dimension(args.input)
        graph = _import_onnx(args.model, batch)
        graph = _run_pipeline(graph, DEFAULT_PIPELINE, args, "--passes")
    else:
        graph = load_program(args.model, args.weights, command=args.command)
    feeds = _read_feeds(args.input, graph)
    samples = _samples(graph, feeds)
    if samples > 1:
        print(f"{samples} samples, run one at a time (the graph's batch is 1)")
    outputs = _per_sample(lambda f: run_graph(graph, f), feeds, samples)
    for name in graph.outputs:
        print("\n".join(_summary(name, outputs[name])))
    labels = _labels(args.input)
    first = outputs[graph.outputs[0]]
    if labels is not None and first.ndim == 2 and labels.shape == first.shape[:1]:
        accuracy = float(np.mean(first.argmax(axis=1) == labels))
        print(f"accuracy (argmax of %{graph.outputs[0]} against 'label'): {accuracy:.2%}")
    failures: list[str] = []
    if args.check_ort:
        expected = _per_sample(_ort_runner(args.model, graph), feeds, samples)
        lines, failures = _relative_errors(outputs, expected)
        print("\n".join(lines))
    if args.output:
        write_file(args.output, lambda stream: np.savez(stream, **outputs), "-o")
    if failures:  # after -o, so that the outputs can be inspected
        raise UserError("--check-ort: cannot compare with onnxruntime: " + "; ".join(failures),
                        hint="a NaN or infinity comes from the inputs or the model (a division "
                        "by zero, an overflow); the relative error would be meaningless")
    return 0


def _labels(specs: Sequence[str]) -> np.ndarray | None:
    """Return the `label` array of the first `.npz` input that has one (for an accuracy line)."""
    for spec in specs:
        loaded = _load_arrays(spec.partition("=")[2] or spec)
        if isinstance(loaded, dict) and "label" in loaded:
            return loaded["label"]
    return None


def _load_arrays(path: str) -> np.ndarray | dict[str, np.ndarray]:
    """Read an `.npy` (one array) or an `.npz` (arrays by name)."""
    try:
        return read_arrays(path)
    except Unreadable as exc:
        raise UserError(f"cannot read input {path}: it {exc}",
                        hint="inputs are .npy files or .npz archives") from None


def _first_dimension(specs: Sequence[str]) -> int | None:
    """Return the leading dimension of the first input array, the batch the data has."""
    if not specs:
        return None
    _, sep, path = specs[0].partition("=")
    loaded = _load_arrays(path if sep else specs[0])
    first = next(iter(loaded.values()), None) if isinstance(loaded, dict) else loaded
    return int(first.shape[0]) if first is not None and first.ndim else None


def _add_pipeline_flags(parser: argparse.ArgumentParser, *, passes: bool = True) -> None:
    if passes:
        parser.add_argument("--passes", metavar="PIPE", help="pass pipeline, e.g. 'a,b{k=v}'")
    group = parser.add_argument_group("pipeline run and instruments")
    group.add_argument("--print-ir-before", metavar="NAMES", help="print IR before these passes")
    group.add_argument("--print-ir-after", metavar="NAMES", help="print IR after these passes")
    group.add_argument("--print-ir-after-all", action="store_true",
                       help="print IR after every pass")
    group.add_argument("--print-ir-after-change", action="store_true",
                       help="print IR after a pass only when it changed it")
    group.add_argument("--dump-ir-dir", metavar="DIR",
                       help="write the IR after every pass to DIR/NN-pass.imcir")
    group.add_argument("--time-passes", action="store_true", help="print wall time per pass")
    group.add_argument("--stats", action="store_true",
                       help="print per-layer tables of what the passes decided (stderr)")
    group.add_argument("--no-verify", action="store_true",
                       help="do not verify the IR after every pass")
    group.add_argument("--reproducer", metavar="PATH",
                       help="where a failing pass writes its reproducer (default: a temp dir)")
    group.add_argument("--seed", type=_seed, default=0, help="seed of every random choice")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `imcc` and its subcommands."""
    parser = _Parser(prog="imcc", description=__doc__, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"imcc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)

    compile_ = sub.add_parser("compile", help="import an ONNX model and run a pipeline on it",
                              allow_abbrev=False)
    compile_.add_argument("model", metavar="MODEL.onnx")
    compile_.add_argument("--target", metavar="T", help="a built-in target name or a .hw file")
    compile_.add_argument("-o", "--output", metavar="OUT.imcir", help="default: stdout")
    compile_.add_argument("--batch", type=int, metavar="N", help="batch size of the inputs")
    compile_.add_argument("--calib", metavar="DATA",
                          help="calibration data: digits, mnist:DIR, fashion-mnist:DIR, npz:FILE")
    compile_.add_argument("--report", metavar="R.json", help="write the cost report as JSON")
    compile_.add_argument("--simulate", metavar="DATA",
                          help="also simulate the mapped program on a data set (accuracy)")
    compile_.add_argument("--limit", type=int, metavar="N", help="samples of --simulate DATA")
    compile_.add_argument("--sim-batch", type=int, default=64, metavar="B",
                          help="samples simulated at once (default 64)")
    _add_pipeline_flags(compile_)
    compile_.set_defaults(handler=_cmd_compile)

    opt = sub.add_parser("opt", help="run a pipeline on a textual program", allow_abbrev=False)
    opt.add_argument("input", metavar="IN.imcir")
    opt.add_argument("-o", "--output", metavar="OUT", help="default: stdout")
    opt.add_argument("--weights", metavar="W.npz", help="weights (default: beside IN)")
    opt.add_argument("--run-reproducer", action="store_true",
                     help="replay the pipeline recorded in a reproducer")
    opt.add_argument("--target", metavar="T",
                     help="target of mapping passes (default: the one the program records)")
    opt.add_argument("--calib", metavar="DATA", help="calibration data of quantize")
    _add_pipeline_flags(opt)
    opt.set_defaults(handler=_cmd_opt)

    run = sub.add_parser("run", help="run a model or program on inputs with the reference backend",
                         allow_abbrev=False)
    run.add_argument("model", metavar="MODEL", help="an .onnx model or an .imcir program")
    run.add_argument("--input", action="append", default=[], metavar="[NAME=]X.npy|X.npz",
                     help="input arrays (repeatable)")
    run.add_argument("-o", "--output", metavar="OUT.npz", help="write the outputs here")
    run.add_argument("--weights", metavar="W.npz", help="weights of an .imcir program")
    run.add_argument("--batch", type=int, metavar="N",
                     help="batch size to import an ONNX model with (default: the inputs')")
    run.add_argument("--check-ort", action="store_true",
                     help="compare with onnxruntime (ONNX models only)")
    _add_pipeline_flags(run, passes=False)
    run.set_defaults(handler=_cmd_run)

    cost = sub.add_parser("cost", help="price a mapped program: energy, latency, area",
                          allow_abbrev=False)
    cost.add_argument("program", metavar="PROGRAM.imcir")
    cost.add_argument("--target", metavar="T", help="default: the target the program records")
    cost.add_argument("--weights", metavar="W.npz", help="weights (default: beside PROGRAM)")
    cost.add_argument("--json", action="store_true", help="print the report as JSON")
    cost.add_argument("--report", metavar="R.json", help="also write the JSON report here")
    cost.set_defaults(handler=_cmd_cost)

    simulate = sub.add_parser("simulate", help="accuracy of a mapped program on a data set",
                              allow_abbrev=False)
    simulate.add_argument("program", metavar="PROGRAM.imcir")
    simulate.add_argument("--data", required=True, metavar="DATA",
                          help="digits, mnist:DIR, fashion-mnist:DIR, npz:FILE, or an example")
    simulate.add_argument("--limit", type=int, metavar="N", help="simulate the first N samples")
    simulate.add_argument("--batch", dest="sim_batch", type=int, default=64, metavar="B",
                          help="samples simulated at once (default 64)")
    simulate.add_argument("--seed", type=_seed, default=0, help="seed of the converters' draws")
    simulate.add_argument("--target", metavar="T", help="default: the one the program records")
    simulate.add_argument("--model", dest="model_source", metavar="MODEL.onnx",
                          help="the float model (default: the one the program records)")
    simulate.add_argument("--weights", metavar="W.npz", help="weights (default: beside PROGRAM)")
    simulate.add_argument("--json", action="store_true", help="print the report as JSON")
    simulate.set_defaults(handler=_cmd_simulate)

    export = sub.add_parser("export-qdq", help="write a quantized program as an ONNX QDQ model",
                            allow_abbrev=False)
    export.add_argument("program", metavar="PROGRAM.imcir")
    export.add_argument("-o", "--output", metavar="MODEL.onnx", required=True)
    export.add_argument("--weights", metavar="W.npz", help="weights (default: beside PROGRAM)")
    export.set_defaults(handler=_cmd_export_qdq)

    search = sub.add_parser("search", help="co-search the mapping pipeline: accuracy against "
                            "EDAP, energy, latency or area (optuna; resumable)",
                            allow_abbrev=False)
    search.add_argument("model", metavar="MODEL", nargs="?",
                        help="an .onnx model or a built-in example (none with --family)")
    search.add_argument("--target", required=True, metavar="T",
                        help="a built-in target name or a .hw file")
    search.add_argument("--data", required=True, metavar="DATA",
                        help="calibration and accuracy data (as compile --calib)")
    search.add_argument("--trials", type=int, default=100, metavar="N",
                        help="finished trials the search holds in total (default 100)")
    search.add_argument("--objective", metavar="NAME",
                        help="edap, energy, latency or area (default edap; xpert: energy)")
    search.add_argument("--max-accuracy-drop", type=float, default=2.0, metavar="POINTS",
                        help="accuracy floor: percentage points below the float model "
                        "(default 2)")
    search.add_argument("--area-budget", type=float, metavar="MM2",
                        help="largest chip area in mm2 (default: the target's budget, if any)")
    search.add_argument("--strategy", default="pareto", metavar="NAME",
                        help="pareto (default), xpert (two phases) or random")
    search.add_argument("--storage", metavar="URL",
                        help="SQLAlchemy URL of the trial database (default: sqlite in --out)")
    search.add_argument("--study", metavar="NAME",
                        help="study name (default: model-target-strategy-objective)")
    search.add_argument("--seed", type=_seed, default=0, help="seed of the sampler")
    search.add_argument("--out", default="search-out", metavar="DIR",
                        help="output folder: pareto.json, pareto.png, best.imcir, search.db")
    search.add_argument("--limit", type=int, default=96, metavar="N",
                        help="samples every trial's accuracy is measured on (default 96)")
    search.add_argument("--probe", type=int, default=32, metavar="N",
                        help="first samples that decide whether a trial is pruned (default 32)")
    search.add_argument("--check", type=int, default=1000, metavar="N",
                        help="samples every Pareto point is checked on (default 1000)")
    search.add_argument("--random-trials", type=int, metavar="N",
                        help="trials of the random-search comparison (default trials/4; "
                        "0: none)")
    search.add_argument("--family", metavar="ARCH:DATA:M1,M2",
                        help="co-search the channel depth (xpert strategy): a family of "
                        "per-stage width multipliers, e.g. vgg:fashion-mnist:0.5,0.75,1; its "
                        "candidates train briefly and are cached in --out/candidates")
    search.add_argument("--family-images", type=int, default=6000, metavar="N",
                        help="proxy budget: training images per candidate (default 6000, "
                        "one epoch)")
    search.set_defaults(handler=_cmd_search)

    finetune = sub.add_parser(
        "finetune", help="fine-tune a model through its mapped crossbar datapath (torch), "
        "export it, and measure before / after with the bit-accurate simulator",
        allow_abbrev=False)
    finetune.add_argument("model", metavar="MODEL", help="an .onnx model or a built-in example")
    finetune.add_argument("--target", required=True, metavar="T",
                          help="a built-in target name or a .hw file")
    finetune.add_argument("--data", required=True, metavar="DATA",
                          help="labelled data: the first --train images fine-tune (the first "
                          "64 also calibrate), the last --holdout images report")
    finetune.add_argument("-o", "--output", required=True, metavar="OUT.onnx",
                          help="the fine-tuned model; OUT.imcir (+ .npz) is the program "
                          "measured, OUT.holdout.npz the held-out images")
    finetune.add_argument("--epochs", type=int, default=1, metavar="E",
                          help="epochs through the sampled datapath (default 1)")
    finetune.add_argument("--surrogate-epochs", type=int, default=0, metavar="E",
                          help="fast epochs first: exact integer products plus Gaussian noise "
                          "with the datapath error's measured mean and spread (default 0)")
    finetune.add_argument("--surrogate-ramp", type=float, default=0.5, metavar="SHARE",
                          help="share of the surrogate epochs over which the error rises to "
                          "all of it (default 0.5; 0: all of it from the start)")
    finetune.add_argument("--datapath-images", type=int, default=0, metavar="N",
                          help="images per datapath epoch: a fresh random subset of the "
                          "training images each epoch (default 0: all)")
    finetune.add_argument("--datapath-lr", type=float, default=0.0, metavar="LR",
                          help="peak learning rate of the datapath epochs' own cosine schedule "
                          "(default 0: --lr)")
    finetune.add_argument("--lr", type=float, default=1e-2, metavar="LR",
                          help="peak learning rate of the cosine schedule (default 1e-2)")
    finetune.add_argument("--batch", type=int, default=32, metavar="B",
                          help="training batch (default 32)")
    finetune.add_argument("--train", type=int, metavar="N",
                          help="images that fine-tune, from the start (default: all but "
                          "--holdout; CIFAR-10's 5,000 here: 4,000)")
    finetune.add_argument("--holdout", type=int, metavar="N",
                          help="images that report, from the end (default: a fifth; CIFAR-10 "
                          "here: the last 1,000)")
    finetune.add_argument("--passes", metavar="PIPE",
                          help="mapping pipeline (default: the target's default pipeline)")
    finetune.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"),
                          help="default sgd, momentum 0.9 (on digits-cnn / sotmtj, 10 epochs: "
                          "SGD at 1e-2 recovers 69%% of the MTJ loss, Adam at 1e-3 36%%)")
    finetune.add_argument("--backward", default="clamp", choices=("clamp", "tanh"),
                          help="MTJ straight-through estimator: StoX-Net's clamp mask "
                          "(default) or 1 - tanh^2")
    finetune.add_argument("--sim-batch", type=int, default=64, metavar="B",
                          help="simulation batch limit (default 64; the largest divisor of "
                          "--holdout up to it)")
    finetune.add_argument("--seed", type=_seed, default=0,
                          help="seed of training, MTJ draws and simulation")
    finetune.add_argument("--clip", type=float, default=5.0, metavar="NORM",
                          help="largest gradient norm of a step (default 5; 0: unclipped)")
    finetune.add_argument("--checkpoint", action="store_true",
                          help="recompute crossbar layers in the backward pass (less memory, "
                          "about 1.5x the time)")
    finetune.add_argument("--eager", action="store_true",
                          help="run MTJ conversions op by op, not as one compiled kernel")
    finetune.add_argument("--report", metavar="R.json", help="write the result as JSON")
    finetune.add_argument("--json", action="store_true", help="print the result as JSON")
    finetune.set_defaults(handler=_cmd_finetune)

    for name, handler, text in [
        ("passes", _cmd_passes, "list the passes, their options and defaults"),
        ("ops", _cmd_ops, "list the IR ops with their signatures"),
        ("targets", _cmd_targets, "list the built-in targets"),
    ]:
        sub.add_parser(name, help=text, allow_abbrev=False).set_defaults(handler=handler)
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
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except BrokenPipeError:  # `imcc ops | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # quiet exit flush
        return 0


__all__ = ["build_parser", "main", "resolve_target"]
