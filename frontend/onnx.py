"""The ONNX frontend: load, check, fold constants, infer static shapes and translate to the IR.

`import_onnx` accepts the default domain at opsets 6 to 25. The import runs in four steps:

1. load and check the model (`onnx.checker`), fix the batch dimension of the graph inputs;
2. fold every node whose inputs are all constant (initializers, `Constant` nodes, frozen inputs,
   earlier folded results; also `Shape`/`Size` of statically shaped values) with the ONNX
   reference evaluator, so weight generators such as `ConstantOfShape` need no IR op;
3. reject the model once if some remaining op has no converter, listing every such op; run
   `onnx.shape_inference` and reject values whose shape stays unknown;
4. translate the remaining nodes in order (`onnx_ops`, `onnx_pool`, `onnx_shape_ops`), then
   verify the graph.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from imcc.errors import FrontendError
from imcc.frontend import onnx_ops, onnx_pool, onnx_shape_ops  # noqa: F401  (register converters)
from imcc.frontend.onnx_context import CONVERTERS, Context, NodeError, Unsupported, dtype_of
from imcc.frontend.onnx_fold import ShapeTable, fold_constants, infer_shapes, is_static
from imcc.ir.graph import Graph, GraphBuilder
from imcc.ir.types import TensorType
from imcc.ir.verifier import verify

MIN_OPSET, MAX_OPSET = 6, 25
"""Opsets 23 to 25 only widen the type lists of the translated ops (the node tests use 25)."""
DEFAULT_DOMAINS = ("", "ai.onnx")


def import_onnx(
    model: str | os.PathLike[str] | onnx.ModelProto,
    *,
    batch: int = 1,
    freeze_inputs: Mapping[str, np.ndarray] | None = None,
    name: str | None = None,
) -> Graph:
    """Import an ONNX model as a verified IR graph with static shapes.

    `batch` replaces a symbolic leading dimension of the graph inputs; `freeze_inputs` binds
    graph inputs to constant arrays (as ONNX node tests pass weights and shapes as inputs).
    """
    proto, label = _load(model)
    # Ops ONNX itself does not know fail the checker; skip it so the unsupported-op report
    # below lists them together with every other op imcc cannot translate.
    unknown = any(not onnx.defs.has(n.op_type) for n in proto.graph.node)
    if not unknown:
        _check(proto, label)
    opset = _default_opset(proto, label)
    if batch < 1:
        raise FrontendError(f"{label}: batch must be at least 1, got {batch}")
    graph = proto.graph
    names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(graph.node)]
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    constants.update(_frozen(graph, constants, freeze_inputs or {}, label))
    inputs = _input_types(graph, constants, batch, label)

    table: ShapeTable = {}
    if not unknown and any(n.op_type in ("Shape", "Size") for n in graph.node):
        table = infer_shapes(proto, list(graph.node), inputs, constants, label)
    remaining = fold_constants(graph, names, constants, table, opset, label)
    _reject_unsupported(remaining, label)
    table = infer_shapes(proto, [n for _, n in remaining], inputs, constants, label)
    used = _use_counts(graph, [n for _, n in remaining])
    _check_static(remaining, table, used, label)

    taken = set(constants) | {v.name for v in graph.input} | {v.name for v in graph.output}
    taken |= {o for n in graph.node for o in n.output}
    builder = GraphBuilder(name or graph.name or _stem(model) or "model", taken)
    for value_name, type_ in inputs.items():
        builder.add_input(value_name, type_)
    ctx = Context(builder, constants, opset, used)
    _keep_output_names(ctx, graph, [n for _, n in remaining], inputs)
    for node_name, node in remaining:
        _translate(ctx, node, node_name, table, label)
    try:
        outputs = [ctx.value(v.name) for v in graph.output]
    except NodeError as exc:
        raise FrontendError(f"{label}: graph output: {exc}") from None
    result = builder.build(outputs)
    verify(result)
    return result


def _stem(model: object) -> str:
    return "" if isinstance(model, onnx.ModelProto) else Path(os.fspath(model)).stem


def _load(model: str | os.PathLike[str] | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Read and check a model; return it with the label that error messages start with."""
    hint = "give an ONNX model file (.onnx) as written by onnx.save or torch.onnx.export"
    if isinstance(model, onnx.ModelProto):
        proto, label = model, f"<model {model.graph.name or 'unnamed'}>"
    else:
        label = os.fspath(model)
        if not Path(label).is_file():
            why = "not a file" if Path(label).exists() else "no such file"
            raise FrontendError(f"cannot read ONNX model {label}: {why}", hint=hint)
        try:
            proto = onnx.load(label)
        except (DecodeError, OSError, ValueError, RuntimeError) as exc:
            raise FrontendError(f"{label}: not a valid ONNX model ({exc})", hint=hint) from None
    return proto, label


def _check(proto: onnx.ModelProto, label: str) -> None:
    """Run the ONNX checker, turning its complaint into a FrontendError."""
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FrontendError(
            f"{label}: the ONNX checker rejects the model: {first}",
            hint="the model must pass onnx.checker.check_model",
        ) from None


def _default_opset(proto: onnx.ModelProto, label: str) -> int:
    """Return the default-domain opset, rejecting other versions and nodes of other domains."""
    versions = [o.version for o in proto.opset_import if o.domain in DEFAULT_DOMAINS]
    if not versions:
        raise FrontendError(f"{label}: the model imports no opset of the default ONNX domain")
    opset = max(versions)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise FrontendError(
            f"{label}: ONNX opset {opset} is not supported (imcc reads {MIN_OPSET} to {MAX_OPSET})",
            hint="convert the model with onnx.version_converter.convert_version(model, 17)",
        )
    foreign = sorted(
        {f"{n.domain}::{n.op_type}" for n in proto.graph.node if n.domain not in DEFAULT_DOMAINS}
    )
    if foreign:
        raise FrontendError(
            f"{label}: ops of other domains are not supported: " + ", ".join(foreign)
        )
    return opset


def _frozen(
    graph: onnx.GraphProto,
    constants: Mapping[str, np.ndarray],
    freeze: Mapping[str, np.ndarray],
    label: str,
) -> dict[str, np.ndarray]:
    """Check the arrays that bind graph inputs and return them by name."""
    declared = {v.name: v for v in graph.input}
    out = {}
    for key, array in freeze.items():
        if key not in declared:
            valid = ", ".join(v for v in declared if v not in constants) or "none"
            raise FrontendError(
                f"{label}: cannot freeze '{key}': not a graph input (inputs: {valid})"
            )
        array = np.asarray(array)
        tensor = declared[key].type.tensor_type
        expected = dtype_of(tensor.elem_type, f"{label}: input '{key}'").numpy
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        if array.dtype != expected or (
            tensor.HasField("shape")
            and (
                len(dims) != array.ndim
                or any(d is not None and d != s for d, s in zip(dims, array.shape, strict=False))
            )
        ):
            raise FrontendError(
                f"{label}: frozen input '{key}' is {array.dtype}{list(array.shape)}"
                f" but the model declares {expected}{dims}"
            )
        out[key] = array
    return out


def _input_types(
    graph: onnx.GraphProto, constants: Mapping[str, np.ndarray], batch: int, label: str
) -> dict[str, TensorType]:
    """Return the static type of every graph input that is not a constant."""
    out: dict[str, TensorType] = {}
    for value in graph.input:
        if value.name in constants:
            continue
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
            raise FrontendError(
                f"{label}: graph input '{value.name}' has no tensor shape",
                hint="declare the input's shape in the model",
            )
        dims = []
        for i, dim in enumerate(tensor.shape.dim):
            if dim.HasField("dim_value"):
                dims.append(dim.dim_value)
            elif i == 0:
                dims.append(batch)
            else:
                raise FrontendError(
                    f"{label}: graph input '{value.name}' has an unknown dimension {i} "
                    f"('{dim.dim_param}'); only the leading (batch) dimension may be symbolic",
                    hint="fix it with onnx.tools.update_model_dims or freeze the input",
                )
        out[value.name] = TensorType(
            tuple(dims), dtype_of(tensor.elem_type, f"{label}: input '{value.name}'")
        )
    return out


def _reject_unsupported(remaining: list[tuple[str, onnx.NodeProto]], label: str) -> None:
    """Fail once, listing every op type that has no converter with the nodes that use it."""
    missing: dict[str, list[str]] = {}
    for node_name, node in remaining:
        if node.op_type not in CONVERTERS:
            missing.setdefault(node.op_type, []).append(node_name)
    if missing:
        listed = ", ".join(f"{op} (nodes: {', '.join(ns)})" for op, ns in missing.items())
        raise FrontendError(
            f"{label}: unsupported ONNX ops: {listed}",
            hint="imcc translates "
            + ", ".join(sorted(CONVERTERS))
            + "; nodes whose inputs are all constant are folded at import",
        )


def _use_counts(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in [i for n in nodes for i in n.input] + [o.name for o in graph.output]:
        counts[name] = counts.get(name, 0) + 1
    return counts


def _check_static(
    remaining: list[tuple[str, onnx.NodeProto]],
    table: ShapeTable,
    used: Mapping[str, int],
    label: str,
) -> None:
    """Reject used values whose shape ONNX shape inference leaves symbolic or unknown."""
    for node_name, node in remaining:
        for out in node.output:
            if out and used.get(out) and out in table and not is_static(table, out):
                dims = [d if d is not None else "?" for d in table[out][1]]
                raise FrontendError(
                    f"{label}: the shape of '{out}' (output of {node.op_type} node "
                    f"'{node_name}') is not static: {dims}",
                    hint="fix the input dimensions (onnx.tools.update_model_dims) or freeze "
                    "the inputs that decide the shape",
                )


def _keep_output_names(
    ctx: Context,
    graph: onnx.GraphProto,
    nodes: list[onnx.NodeProto],
    inputs: Mapping[str, TensorType],
) -> None:
    """Let a graph output behind Identity/Dropout keep its ONNX name (the producer takes it)."""
    passes = {n.output[0]: n.input[0] for n in nodes if n.op_type in ("Identity", "Dropout")}
    produced = {o for n in nodes for o in n.output if n.op_type not in ("Identity", "Dropout")}
    outputs = {o.name for o in graph.output}
    for name in outputs & set(passes):
        source = passes[name]
        while source in passes and source not in outputs:
            source = passes[source]
        if source in produced and source not in outputs and source not in ctx.alias:
            ctx.alias[source] = name


def _translate(
    ctx: Context, node: onnx.NodeProto, node_name: str, table: ShapeTable, label: str
) -> None:
    """Translate one node and check the result types against ONNX shape inference."""
    ctx.node, ctx.node_name = node, node_name
    where = f"{label}: {node.op_type} node '{node_name}'"
    try:
        CONVERTERS[node.op_type](ctx)
        for index, out in enumerate(node.output):
            if not ctx.has_output(index) or out not in table or not is_static(table, out):
                continue
            ir_type = ctx.type(ctx.value(out))
            elem, dims = table[out]
            if ir_type.shape != dims or ir_type.dtype is not dtype_of(elem, where):
                raise NodeError(
                    f"result '{out}' is {ir_type} but ONNX infers {list(dims)} of type {elem}"
                )
    except Unsupported as exc:
        raise FrontendError(
            f"{where}: {exc}", hint="rewrite this part of the model with supported features"
        ) from None
    except NodeError as exc:
        raise FrontendError(f"{where}: {exc}") from None
