"""`imcc run`: a model or program on input arrays with the reference backend, optionally
compared with onnxruntime."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from imcc.cli.common import (
    add_pipeline_flags,
    check_outputs,
    run_pipeline,
)
from imcc.driver import import_model
from imcc.errors import UserError
from imcc.examples import resolve_model
from imcc.files import write_file
from imcc.inputs import Unreadable, read_arrays
from imcc.ir.graph import Graph
from imcc.ir.io import load_program
from imcc.passes.pipeline import DEFAULT_PIPELINE


def _cmd_run(args: argparse.Namespace) -> int:
    from imcc.backend.reference import run_graph

    args.model = str(resolve_model(args.model))
    is_onnx = args.model.endswith(".onnx")
    if args.check_ort and not is_onnx:
        raise UserError("--check-ort needs an .onnx model", hint="drop --check-ort")
    if args.batch is not None and not is_onnx:
        raise UserError(
            "--batch sets the batch an ONNX model is imported with; a program's batch is fixed",
            hint="drop --batch",
        )
    check_outputs(
        args,
        ["output"],
        inputs=[args.model, args.weights, *(i.rpartition("=")[2] for i in args.input)],
    )
    inputs = _Inputs.read(args.input)
    if is_onnx:
        batch = args.batch
        if batch is None:  # the batch of the data, where the model's batch is symbolic
            batch = inputs.first_dimension()
        graph = import_model(args.model, batch, explicit=args.batch is not None)
        graph = run_pipeline(graph, DEFAULT_PIPELINE, args, "--passes")
    else:
        graph = load_program(args.model, args.weights, command=args.command)
    feeds = inputs.feeds(graph)
    samples = _samples(graph, feeds)
    if samples > 1:
        print(f"{samples} samples, run one at a time (the graph's batch is 1)")
    outputs = _per_sample(lambda f: run_graph(graph, f), feeds, samples)
    for name in graph.outputs:
        print("\n".join(_summary(name, outputs[name])))
    labels = inputs.labels()
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
        raise UserError(
            "--check-ort: cannot compare with onnxruntime: " + "; ".join(failures),
            hint="a NaN or infinity comes from the inputs or the model (a division "
            "by zero, an overflow); the relative error would be meaningless",
        )
    return 0


@dataclass(frozen=True)
class _Inputs:
    """The `--input` files, each read once: (NAME or "", the array or the archive's arrays)."""

    files: tuple[tuple[str, np.ndarray | dict[str, np.ndarray]], ...]

    @classmethod
    def read(cls, specs: Sequence[str]) -> _Inputs:
        files = []
        for spec in specs:
            name, sep, path = spec.partition("=")
            if not sep:
                name, path = "", spec
            elif not name or not path:
                raise UserError(
                    f"--input {spec}: give NAME=FILE or FILE",
                    hint="e.g. --input image=x.npy, or --input x.npz",
                )
            try:
                files.append((name, read_arrays(path)))
            except Unreadable as exc:
                raise UserError(
                    f"cannot read input {path}: it {exc}",
                    hint="inputs are .npy files or .npz archives",
                ) from None
        return cls(tuple(files))

    def first_dimension(self) -> int | None:
        """Return the leading dimension of the first input array, the batch the data has."""
        if not self.files:
            return None
        loaded = self.files[0][1]
        first = next(iter(loaded.values()), None) if isinstance(loaded, dict) else loaded
        return int(first.shape[0]) if first is not None and first.ndim else None

    def labels(self) -> np.ndarray | None:
        """Return the `label` array of the first `.npz` that has one (for an accuracy line)."""
        for _, loaded in self.files:
            if isinstance(loaded, dict) and "label" in loaded:
                return loaded["label"]
        return None

    def feeds(self, graph: Graph) -> dict[str, np.ndarray]:
        """Bind the files to graph inputs: `name=X.npy`, an `.npz` by key (other keys are
        ignored), else in order; each input once, holding samples of finite numbers."""
        names = [v.name for v in graph.inputs]
        feeds: dict[str, np.ndarray] = {}
        positional: list[np.ndarray] = []

        def bind(name: str, array: np.ndarray) -> None:
            if name in feeds:
                raise UserError(
                    f"--input: graph input '{name}' is given twice", hint="give each input once"
                )
            feeds[name] = array

        for name, loaded in self.files:
            if isinstance(loaded, dict):  # arrays not named after an input (labels) are not
                for key in (k for k in loaded if k in names):  # inputs
                    bind(key, loaded[key])
            elif name:
                bind(name, loaded)
            else:
                positional.append(loaded)
        for array, name in zip(positional, [n for n in names if n not in feeds], strict=False):
            bind(name, array)
        unknown = [n for n in feeds if n not in names]
        if unknown or len(positional) > len(names):
            what = f"'{unknown[0]}'" if unknown else "more arrays than inputs"
            raise UserError(
                f"--input: the graph has no input {what}", hint=f"graph inputs: {', '.join(names)}"
            )
        missing = [n for n in names if n not in feeds]
        if missing:
            raise UserError(
                f"no --input for graph input '{missing[0]}'",
                hint=f"pass --input {missing[0]}=FILE.npy",
            )
        for name, array in feeds.items():
            if array.size == 0:
                raise UserError(
                    f"--input: graph input '{name}' holds no values (shape {list(array.shape)})",
                    hint="give at least one sample",
                )
            if array.dtype.kind in "fc" and not np.isfinite(array).all():
                raise UserError(
                    f"--input: graph input '{name}' holds NaN or infinite values",
                    hint="give finite numbers",
                )
        return feeds


def _summary(name: str, array: np.ndarray) -> list[str]:
    """Describe one output: type, range, and per-sample argmax/top values of the last axis."""
    from imcc.ir.types import TensorType

    lines = [f"%{name}: {TensorType.of(array)}"]
    if array.size == 0:
        return lines
    numeric = array.astype(np.float64)
    lines[0] += f"  min {numeric.min():.6g}  max {numeric.max():.6g}  mean {numeric.mean():.6g}"
    if array.ndim >= 1 and array.dtype.kind in "fiu":
        rows = numeric.reshape(-1, array.shape[-1])
        argmax = rows.argmax(axis=-1)
        shown = ", ".join(str(int(i)) for i in argmax[:16])
        lines.append(f"  argmax: [{shown}{', ...' if len(argmax) > 16 else ''}]")
        top = np.argsort(-rows[0], kind="stable")[:5]
        lines.append(
            "  top values (sample 0): " + ", ".join(f"{int(i)}: {rows[0][i]:.6g}" for i in top)
        )
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
    errors = (
        RuntimeError,
        ValueError,
        TypeError,
        *(
            kind
            for kind in vars(state).values()
            if isinstance(kind, type) and issubclass(kind, Exception)
        ),
    )
    hint = "drop --check-ort; the outputs above are imcc's own and do not depend on onnxruntime"

    def reason(exc: Exception) -> str:  # the first line, without the status-code prefix
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : ", "", text)
        return text if len(text) <= 300 else text[:297] + "..."

    try:
        session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    except errors as exc:
        raise UserError(
            f"--check-ort: onnxruntime cannot load {model}: {reason(exc)}", hint=hint
        ) from None
    ort_inputs = [meta.name for meta in session.get_inputs()]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        by_position = [feeds[v.name] for v in graph.inputs]
        ort_feeds = {
            name: feeds.get(name, by_position[i] if i < len(by_position) else None)
            for i, name in enumerate(ort_inputs)
        }
        try:
            results = session.run(None, ort_feeds)
        except errors as exc:
            raise UserError(
                f"--check-ort: onnxruntime cannot run {model}: {reason(exc)}", hint=hint
            ) from None
        return dict(zip(graph.outputs, results, strict=False))

    return run


def _relative_errors(
    ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]
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
            counts = [
                (who, int(np.size(a) - np.isfinite(a).sum()))
                for who, a in (("ours", actual), ("onnxruntime's", expected))
            ]
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add run to the subcommands."""
    run = sub.add_parser(
        "run",
        help="run a model or program on inputs with the reference backend",
        allow_abbrev=False,
    )
    run.add_argument("model", metavar="MODEL", help="an .onnx model or an .imcir program")
    run.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="[NAME=]X.npy|X.npz",
        help="input arrays (repeatable)",
    )
    run.add_argument("-o", "--output", metavar="OUT.npz", help="write the outputs here")
    run.add_argument("--weights", metavar="W.npz", help="weights of an .imcir program")
    run.add_argument(
        "--batch",
        type=int,
        metavar="N",
        help="batch size to import an ONNX model with (default: the inputs')",
    )
    run.add_argument(
        "--check-ort", action="store_true", help="compare with onnxruntime (ONNX models only)"
    )
    add_pipeline_flags(run, passes=False)
    run.set_defaults(handler=_cmd_run)
