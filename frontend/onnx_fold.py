"""Constant folding and static shape inference for the ONNX frontend.

`fold_constants` evaluates every deterministic node whose inputs are all constant with the ONNX
reference evaluator (at the model's opset), and `Shape`/`Size` of statically shaped values;
`infer_shapes` runs ONNX shape inference on the nodes that remain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from imcc.errors import FrontendError
from imcc.frontend.onnx_context import MAX_ELEMENTS, dtype_of, non_finite, too_large
from imcc.ir.types import TensorType

NONDETERMINISTIC = frozenset(
    {
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
    }
)
SMALL_CONSTANT = 64
"""Constants up to this many elements are given to shape inference by value, larger by type."""

ShapeTable = dict[str, tuple[int, tuple[int | str | None, ...]]]

FOLD_HINT = "the node's constant inputs or attributes are out of its range; fix the model"
CORRUPT_HINT = "the file is damaged or was not written by an ONNX exporter; export it again"


def read_initializers(graph: onnx.GraphProto, label: str) -> dict[str, np.ndarray]:
    """Decode every initializer to an array, naming the one whose dims and data disagree."""
    out: dict[str, np.ndarray] = {}
    for tensor in graph.initializer:
        what = f"{label}: initializer '{tensor.name}'"
        dims = list(tensor.dims)
        if any(d < 0 for d in dims):
            raise FrontendError(f"{what} has a negative dimension {dims}", hint=CORRUPT_HINT)
        if math.prod(dims) > MAX_ELEMENTS:
            raise FrontendError(
                f"{what} declares {math.prod(dims):,} elements {dims}, more "
                "than imcc handles (2^31)",
                hint=CORRUPT_HINT,
            )
        try:
            array = numpy_helper.to_array(tensor)
        # The decoder of untrusted bytes: a data field that does not fit the dims (ValueError),
        # an element type numpy cannot hold (TypeError, KeyError).
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            raise FrontendError(f"{what} cannot be decoded: {exc}", hint=CORRUPT_HINT) from None
        out[tensor.name] = array
    return out


def check_finite_weights(
    graph: onnx.GraphProto, names: list[str], constants: Mapping[str, np.ndarray], label: str
) -> None:
    """Refuse initializers with NaN or infinite values that a node or a graph output reads.

    Clip's bounds (inputs 1 and 2) may be infinite: that is how "no bound" is spelled.
    """
    readers: dict[str, str] = {}
    for node_name, node in zip(names, graph.node, strict=True):
        for name in node.input:
            if name in constants and name not in readers:
                readers[name] = f"{node.op_type} node '{node_name}'"
    readers.update({o.name: "a graph output" for o in graph.output if o.name in constants})
    bounds = {
        n.input[i] for n in graph.node if n.op_type == "Clip" for i in (1, 2) if i < len(n.input)
    }
    for tensor in graph.initializer:
        array = constants.get(tensor.name)
        if tensor.name not in readers or array is None:
            continue
        if tensor.name in bounds:
            array = np.where(np.isinf(array), 0, array) if array.dtype.kind == "f" else array
        problem = non_finite(array)
        if problem:
            raise FrontendError(
                f"{label}: initializer '{tensor.name}' (read by {readers[tensor.name]}) {problem}",
                hint="imcc compiles finite weights only; the model was exported from a "
                "diverged training run or its weights are damaged",
            )


def infer_shapes(
    proto: onnx.ModelProto,
    nodes: list[onnx.NodeProto],
    inputs: Mapping[str, TensorType],
    constants: Mapping[str, np.ndarray],
    label: str,
) -> ShapeTable:
    """Run ONNX shape inference on the nodes with static inputs; map values to types."""
    needed = {i for n in nodes for i in n.input} | {o.name for o in proto.graph.output}
    graph_inputs = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(t.dtype.numpy), t.shape)
        for k, t in inputs.items()
    ]
    initializers = []
    for key, array in constants.items():
        if key not in needed:
            continue
        if array.size <= SMALL_CONSTANT:
            initializers.append(numpy_helper.from_array(array, key))
        else:
            elem = helper.np_dtype_to_tensor_dtype(array.dtype)
            graph_inputs.append(helper.make_tensor_value_info(key, elem, array.shape))
    outputs = [
        helper.make_tensor_value_info(o.name, o.type.tensor_type.elem_type, None)
        for o in proto.graph.output
    ]
    skeleton = helper.make_model(
        helper.make_graph(nodes, "skeleton", graph_inputs, outputs, initializers),
        opset_imports=list(proto.opset_import),
        ir_version=proto.ir_version,
    )
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError, RuntimeError) as exc:
        raise FrontendError(
            f"{label}: ONNX shape inference fails: {_one_line(str(exc))}",
            hint="the node it names has inputs or attributes its op does not accept; fix it "
            "where the model is exported",
        ) from None
    table: ShapeTable = {}
    for value in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input):
        tensor = value.type.tensor_type
        if value.type.HasField("tensor_type") and tensor.HasField("shape"):
            dims = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in tensor.shape.dim
            )
            table[value.name] = (tensor.elem_type, dims)
    return table


def fold_constants(
    graph: onnx.GraphProto,
    names: list[str],
    constants: dict[str, np.ndarray],
    table: ShapeTable,
    opset: int,
    label: str,
) -> list[tuple[str, onnx.NodeProto]]:
    """Evaluate constant-only nodes into `constants`; return the other nodes with names."""
    remaining = []
    for node_name, node in zip(names, graph.node, strict=True):
        args = [i for i in node.input if i]
        static = node.op_type in ("Shape", "Size") and args and is_static(table, args[0])
        if static:
            dims = np.array(table[args[0]][1], dtype=np.int64)
            if node.op_type == "Size":
                constants[node.output[0]] = np.array(math.prod(dims.tolist()), np.int64)
            else:
                a = {at.name: helper.get_attribute_value(at) for at in node.attribute}
                constants[node.output[0]] = dims[a.get("start", 0) : a.get("end", len(dims))]
            continue
        foldable = (
            node.op_type not in NONDETERMINISTIC
            and onnx.defs.has(node.op_type)
            and all(i in constants for i in args)
            and not any(
                at.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                for at in node.attribute
            )
        )
        if not foldable:
            remaining.append((node_name, node))
            continue
        where = f"{label}: constant {node.op_type} node '{node_name}'"
        size = _result_size(node.op_type, [constants[i] for i in args])
        if size is not None and size > MAX_ELEMENTS:
            raise FrontendError(
                f"{where} would make {size:,} elements, more than imcc handles (2^31)",
                hint=FOLD_HINT,
            )
        try:
            results = evaluate_node(node, {i: constants[i] for i in args}, opset)
        except Exception as exc:  # the reference evaluator raises anything
            raise FrontendError(
                f"{label}: cannot evaluate constant {node.op_type} node '{node_name}': "
                f"{type(exc).__name__}: {_one_line(str(exc))}",
                hint=FOLD_HINT,
            ) from None
        for out, value in zip(node.output, results, strict=False):
            if out and value is not None:
                constants[out] = np.asarray(value)
    return remaining


def _one_line(text: str) -> str:
    """Collapse a library's message to one line of at most 300 characters."""
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def _result_size(op_type: str, args: list[np.ndarray]) -> int | None:
    """Predict the elements of a generator's result from its constant inputs, so that a shape
    like [2^62] is refused before the reference evaluator allocates it; None: not predicted."""
    try:
        if op_type == "ConstantOfShape" and args:
            return math.prod(int(d) for d in args[0].reshape(-1))
        if op_type == "Expand" and len(args) == 2:
            wanted = tuple(max(int(d), 0) for d in args[1].reshape(-1))
            return math.prod(np.broadcast_shapes(args[0].shape, wanted))
        if op_type == "Tile" and len(args) == 2:
            repeats = [int(r) for r in args[1].reshape(-1)]
            return math.prod(s * r for s, r in zip(args[0].shape, repeats, strict=False))
        if op_type == "Range" and len(args) == 3:
            start, limit, delta = (float(a.reshape(-1)[0]) for a in args)
            return max(math.ceil((limit - start) / delta), 0)
    # Malformed inputs: the evaluator reports them with the node's name.
    except (ValueError, TypeError, IndexError, ZeroDivisionError, OverflowError):
        return None
    return None


def evaluate_node(node: onnx.NodeProto, feeds: dict[str, np.ndarray], opset: int) -> list:
    """Run one node on constant inputs with the ONNX reference evaluator at `opset`."""
    inputs = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for k, v in feeds.items()
    ]
    outputs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
    model = helper.make_model(
        helper.make_graph([node], "fold", inputs, outputs),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    return ReferenceEvaluator(model).run(None, feeds)


def is_static(table: ShapeTable, name: str) -> bool:
    """Say whether shape inference gave `name` a shape of known integer dimensions."""
    return name in table and all(isinstance(d, int) for d in table[name][1])


def frozen_inputs(
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


def input_types(
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
            if dim.HasField("dim_value") and dim.dim_value < 0:
                raise FrontendError(
                    f"{label}: graph input '{value.name}' has a negative dimension {i} "
                    f"({dim.dim_value})",
                    hint="dimensions are sizes (>= 1); a dynamic one is a dim_param name",
                )
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
        problem = too_large(dims)
        if problem:
            raise FrontendError(
                f"{label}: graph input '{value.name}' {dims} {problem}",
                hint="give the input its real sizes (onnx.tools.update_model_dims) or a "
                "smaller --batch",
            )
        out[value.name] = TensorType(
            tuple(dims), dtype_of(tensor.elem_type, f"{label}: input '{value.name}'")
        )
    return out
