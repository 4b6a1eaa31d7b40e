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
        first = str(exc).strip().splitlines()[0]
        raise FrontendError(f"{label}: ONNX shape inference fails: {first}") from None
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
        try:
            results = evaluate_node(node, {i: constants[i] for i in args}, opset)
        except Exception as exc:  # the reference evaluator raises anything
            raise FrontendError(
                f"{label}: cannot evaluate constant {node.op_type} node "
                f"'{node_name}': {type(exc).__name__}: {exc}"
            ) from None
        for out, value in zip(node.output, results, strict=False):
            if out and value is not None:
                constants[out] = np.asarray(value)
    return remaining


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
