"""The ONNX frontend: load, check, fold constants, infer static shapes and translate to the IR.

`import_onnx` accepts the default domain at opsets 6 to 25. The import runs in four steps:

1. load the model (refusing corrupt bytes and external data outside the model's folder), check
   it (`onnx.checker`, then what imcc needs of dims, weights and sizes), fix the batch dimension
   of the graph inputs;
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
from collections.abc import Iterator, Mapping
from pathlib import Path, PureWindowsPath

import numpy as np
import onnx
import onnx.external_data_helper
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from imcc.errors import FrontendError
from imcc.frontend import onnx_ops, onnx_pool, onnx_shape_ops  # noqa: F401  (register converters)
from imcc.frontend.onnx_context import CONVERTERS, Context, NodeError, Unsupported, dtype_of
from imcc.frontend.onnx_fold import (
    ShapeTable,
    check_finite_weights,
    fold_constants,
    frozen_inputs,
    infer_shapes,
    input_types,
    is_static,
    read_initializers,
)
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
    Every problem of the model, however malformed, is a FrontendError that names the model
    and the node, tensor or field at fault (`_load`, `_check_graph`).
    """
    proto, label = _load(model)
    # Ops ONNX itself does not know fail the checker; skip it so the unsupported-op report
    # below lists them together with every other op imcc cannot translate.
    unknown = any(not onnx.defs.has(n.op_type) for n in proto.graph.node)
    if not unknown:
        _check(proto, label)
    opset = _default_opset(proto, label)
    if batch < 1:
        raise FrontendError(
            f"{label}: batch must be at least 1, got {batch}",
            hint="--batch N, or inputs whose first dimension holds samples",
        )
    graph = proto.graph
    _check_graph(graph, label)
    names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(graph.node)]
    constants = read_initializers(graph, label)
    check_finite_weights(graph, names, constants, label)
    constants.update(frozen_inputs(graph, constants, freeze_inputs or {}, label))
    inputs = input_types(graph, constants, batch, label)

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
        values = len(builder.types)
        outputs = [ctx.value(v.name) for v in graph.output]
        ctx.check_results(values, len(builder.nodes))  # constants that are graph outputs
    except NodeError as exc:
        raise FrontendError(f"{label}: graph output: {exc}", hint=NODE_HINT) from None
    result = builder.build(outputs)
    verify(result)
    return result


def _stem(model: object) -> str:
    return "" if isinstance(model, onnx.ModelProto) else Path(os.fspath(model)).stem


NODE_HINT = (
    "the node is malformed or out of the range imcc compiles; fix it where the model is "
    "exported (onnx.checker.check_model(model, full_check=True) may say more)"
)
LOAD_HINT = "give an ONNX model file (.onnx) as written by onnx.save or torch.onnx.export"


def _load(model: str | os.PathLike[str] | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Read a model (its external data only from inside its folder); return it with the label
    that error messages start with."""
    if isinstance(model, onnx.ModelProto):
        label = f"<model {model.graph.name if isinstance(model.graph.name, str) else ''}>"
        _check_text(model, label)
        for tensor_name, _ in _external_tensors(model.graph):
            raise FrontendError(
                f"{label}: tensor '{tensor_name}' keeps its data in an external file",
                hint="give the model as a file path, or load it with onnx.load first",
            )
        return model, label
    label = os.fspath(model)
    path = Path(label)
    if not path.is_file():
        why = "a directory" if path.is_dir() else "not a file" if path.exists() else "no such file"
        raise FrontendError(f"cannot read ONNX model {label}: {why}", hint=LOAD_HINT)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FrontendError(f"cannot read ONNX model {label}: {exc.strerror}") from None
    if not data:
        raise FrontendError(f"{label}: not a valid ONNX model (the file is empty)", hint=LOAD_HINT)
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except DecodeError:
        raise FrontendError(
            f"{label}: not a valid ONNX model: its bytes do not decode as an "
            "ONNX protobuf (a truncated or damaged file?)",
            hint=LOAD_HINT,
        ) from None
    if not proto.HasField("graph"):
        raise FrontendError(f"{label}: not a valid ONNX model (it holds no graph)", hint=LOAD_HINT)
    _check_text(proto, label)
    _load_external_data(proto, path.parent, label)
    return proto, label


def _check_text(message: Message, label: str, where: str = "model") -> None:
    """Refuse string fields that are not UTF-8 (protobuf hands them over as bytes, which
    breaks every name lookup and the printer): the mark of a damaged file."""
    for field, value in message.ListFields():
        if field.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE):
            continue  # numbers and raw bytes need no check (and may be large)
        repeated = not isinstance(value, (str, bytes, Message))
        items = list(value) if repeated else [value]
        for i, item in enumerate(items):
            at = f"{where}.{field.name}" + (f"[{i}]" if repeated else "")
            if field.type == FieldDescriptor.TYPE_STRING and not isinstance(item, str):
                raise FrontendError(
                    f"{label}: {at} is not valid UTF-8 text",
                    hint="the file is damaged; export the model again",
                )
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                _check_text(item, label, at)


def _external_tensors(graph: onnx.GraphProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Yield the tensors of a graph and its subgraphs that keep their data in a file."""
    tensors = list(graph.initializer) + [s.values for s in graph.sparse_initializer]
    for node in graph.node:
        for attr in node.attribute:
            tensors += [attr.t, *attr.tensors]
            for sub in [attr.g, *attr.graphs]:
                yield from _external_tensors(sub)
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            yield tensor.name, tensor


def _load_external_data(proto: onnx.ModelProto, folder: Path, label: str) -> None:
    """Read external tensor data, refusing locations outside the model's folder.

    A model file must not make imcc read other files (`../../etc/passwd`, `/home/x/.ssh/..`,
    a symbolic link leading out): a location must be relative and stay, resolved, inside the
    folder, and the bytes it names must exist.
    """
    root = folder.resolve()
    hint = "external data must be files beside the model (onnx.save(..., location=NAME))"
    for name, tensor in _external_tensors(proto.graph):
        what = f"{label}: tensor '{name}'"
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        if not location:
            raise FrontendError(f"{what} has external data without a location", hint=hint)
        windows = PureWindowsPath(location)  # a drive (C:) or share names a root too
        if Path(location).is_absolute() or windows.drive or location.startswith(("/", "\\")):
            raise FrontendError(
                f"{what}: refusing the absolute external data location '{location}'", hint=hint
            )
        target = (root / location).resolve()
        if not target.is_relative_to(root):
            raise FrontendError(
                f"{what}: refusing external data location '{location}': it "
                f"points outside the model's folder {root}",
                hint=hint,
            )
        if not target.is_file():
            raise FrontendError(
                f"{what}: its external data file '{location}' is missing",
                hint="copy the data file beside the model",
            )
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", -1))
        except ValueError:
            raise FrontendError(
                f"{what}: external data offset or length is not a number", hint=hint
            ) from None
        size = target.stat().st_size
        if offset < 0 or offset > size or (length >= 0 and offset + length > size):
            raise FrontendError(
                f"{what}: external data (offset {offset}, length {length}) lies "
                f"beyond the end of '{location}' ({size} bytes)",
                hint=hint,
            )
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, str(root))
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise FrontendError(f"{label}: cannot read external data: {exc}", hint=hint) from None


def _check_graph(graph: onnx.GraphProto, label: str) -> None:
    """Refuse a graph with nothing to compile: no outputs or no nodes."""
    if not graph.output:
        raise FrontendError(
            f"{label}: the graph has no outputs, so there is nothing to compute",
            hint="export the model with its outputs",
        )
    if not graph.node:
        raise FrontendError(
            f"{label}: the graph has no nodes, so there is nothing to compile",
            hint="its outputs are its inputs or initializers; export the "
            "model with the layers it should compute",
        )


def _check(proto: onnx.ModelProto, label: str) -> None:
    """Run the ONNX checker, turning its complaint into a FrontendError."""
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        reason = reason if len(reason) <= 300 else reason[:297] + "..."
        raise FrontendError(
            f"{label}: the ONNX checker rejects the model: {reason}",
            hint="the model must pass onnx.checker.check_model",
        ) from None


def _default_opset(proto: onnx.ModelProto, label: str) -> int:
    """Return the default-domain opset, rejecting other versions and nodes of other domains."""
    versions = [o.version for o in proto.opset_import if o.domain in DEFAULT_DOMAINS]
    if not versions:
        raise FrontendError(
            f"{label}: the model imports no opset of the default ONNX domain",
            hint="the model's opset_import must list the default domain ('')",
        )
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
            f"{label}: ops of other domains are not supported: " + ", ".join(foreign),
            hint="imcc translates ops of the default ONNX domain; export without custom ops",
        )
    return opset


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
    values, nodes = len(ctx.builder.types), len(ctx.builder.nodes)
    try:
        CONVERTERS[node.op_type](ctx)
        ctx.check_results(values, nodes)
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
        raise FrontendError(f"{where}: {exc}", hint=NODE_HINT) from None
