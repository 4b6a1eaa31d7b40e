"""Write fine-tuned weights back into the ONNX model and carry the learned MTJ normalisation.

The exported model is the original ONNX graph with new initializers: every crossbar layer's
Conv / Gemm takes its fine-tuned float weights and bias (the IR layer's, so batch-norm folded
into them: a BatchNormalization that imcc folded into the layer is removed and its consumers
read the Conv's result). `imcc compile` therefore imports the same graph, folds nothing, and
its `quantize` pass recomputes the per-channel weight scales and the per-tensor input scales
from the new weights on the same calibration data, as the fine-tuning forward did.

The learned per-column MTJ normalisation (ps_scale / ps_offset) cannot live in the weights: it
is stored in the model's `metadata_props` under `imcc.finetune` (JSON: the pipeline, data
split, seed, and per layer (ONNX node name) `ps_scale` / `ps_offset`).
`with_learned_normalisation` puts it on a program compiled from the exported model: `imcc
finetune` writes that program (OUT.imcir + OUT.npz) and measures it, a plain `imcc compile
OUT.onnx --target T` applies it (cli.py, after the pipeline: the learned values replace
calibrate-mtj's data-derived ones on the layers that have MTJ converters), and `imcc finetune`
of an exported model starts from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imcc.errors import UserError
from imcc.files import write_bytes
from imcc.ir.graph import Graph
from imcc.passes.layers import crossbar_layers, replace_nodes, with_attributes

METADATA_KEY = "imcc.finetune"
"""The `metadata_props` key of the fine-tuning record in an exported model."""


@dataclass(frozen=True)
class TrainedLayer:
    """A crossbar layer's fine-tuned float weights (IR layout: conv [M, C, kh, kw], linear
    [K, N]), bias, and learned MTJ normalisation, keyed by the ONNX node name."""

    name: str
    op: str
    weight: np.ndarray
    bias: np.ndarray | None
    ps_scale: tuple[float, ...] | None = None
    ps_offset: tuple[float, ...] | None = None


def export_onnx(
    source: str | Path, layers: list[TrainedLayer], record: Mapping[str, Any], output: str | Path
) -> None:
    """Write `source` with the layers' weights and the fine-tuning record to `output`."""
    import onnx

    model = onnx.load(str(source))
    graph = model.graph
    nodes = {node.name: node for node in graph.node}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    removed = []
    for layer in layers:
        node = nodes.get(layer.name)
        if node is None or node.op_type not in ("Conv", "Gemm"):
            raise UserError(
                f"finetune cannot write back layer {layer.name}: no Conv or Gemm "
                "node of that name in the ONNX model",
                hint="finetune exports models whose crossbar layers are ONNX Conv / Gemm nodes",
            )
        weight, bias = layer.weight, layer.bias
        if node.op_type == "Gemm":
            weight, bias = _gemm_operands(node, weight, bias)
        _set_input(graph, node, 1, f"{layer.name}.finetuned.weight", weight)
        if bias is not None:
            _set_input(graph, node, 2, f"{layer.name}.finetuned.bias", bias)
        users = consumers.get(node.output[0], [])
        if node.op_type == "Conv" and len(users) == 1 and users[0].op_type == "BatchNormalization":
            norm = users[0]  # folded into the layer's weights: drop it
            node.output[0] = norm.output[0]
            removed.append(norm)
    for norm in removed:
        graph.node.remove(norm)
    used = {name for node in graph.node for name in node.input}
    for initializer in list(graph.initializer):
        if initializer.name not in used and initializer.name not in {i.name for i in graph.input}:
            graph.initializer.remove(initializer)
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(dict(record))
    write_bytes(output, model.SerializeToString(), "-o")


def _gemm_operands(
    node: Any, weight: np.ndarray, bias: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return a Gemm's B and C for an IR linear's weight [K, N] and bias [N]."""
    attrs = {a.name: a for a in node.attribute}
    alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
    beta = attrs["beta"].f if "beta" in attrs else 1.0
    if (
        ("transA" in attrs and attrs["transA"].i)
        or alpha != 1.0
        or (bias is not None and beta == 0.0)
    ):
        raise UserError(
            f"finetune cannot write back Gemm {node.name} (transA, alpha != 1 or beta = 0)"
        )
    trans_b = bool(attrs["transB"].i) if "transB" in attrs else False
    weight = weight.T if trans_b else weight
    return np.ascontiguousarray(weight), None if bias is None else bias / np.float32(beta)


def _set_input(graph: Any, node: Any, index: int, name: str, array: np.ndarray) -> None:
    """Point input `index` of a node at a new initializer holding `array` (float32), replacing
    the one of that name an earlier export wrote."""
    from onnx import numpy_helper

    for initializer in [i for i in graph.initializer if i.name == name]:
        graph.initializer.remove(initializer)
    graph.initializer.append(numpy_helper.from_array(array.astype(np.float32), name))
    while len(node.input) <= index:
        node.input.append("")
    node.input[index] = name


def learned_normalisation(model: str | Path) -> dict[str, tuple[list[float], list[float]]]:
    """Return the learned MTJ normalisation an exported model carries, per ONNX node name
    (empty when it carries none)."""
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            layers = json.loads(prop.value).get("normalisation", {})
            return {name: (entry["ps_scale"], entry["ps_offset"]) for name, entry in layers.items()}
    return {}


def with_learned_normalisation(program: Graph, model: str | Path) -> tuple[Graph, int]:
    """Return the program with the MTJ normalisation the model learned in `imcc finetune` (its
    metadata record) on the layers the pipeline gave MTJ converters, replacing the
    data-calibrated values, and how many layers took it."""
    if not mtj_layers(program):
        return program, 0  # no MTJ layers: do not read the model a second time
    return with_normalisation(program, learned_normalisation(model))


def mtj_layers(program: Graph) -> set[str]:
    """Return the names of the layers a program converts with MTJs (calibrate-mtj gave them
    a normalisation)."""
    return {n.name for n in program.nodes if "ps_scale" in n.attributes}


def with_normalisation(program: Graph, learned: Mapping[str, tuple[Any, Any]]) -> tuple[Graph, int]:
    """Return the program with a learned normalisation (`learned_normalisation`'s, by layer
    name) on the layers the pipeline gave MTJ converters, and how many layers took it."""
    mapped = mtj_layers(program)
    chosen = {name: values for name, values in learned.items() if name in mapped}
    return (apply_normalisation(program, chosen), len(chosen)) if chosen else (program, 0)


def apply_normalisation(program: Graph, normalisation: Mapping[str, tuple[Any, Any]]) -> Graph:
    """Return the program with the learned ps_scale / ps_offset on its MTJ layers (by name);
    a layer whose column count changed (another mapping) is an error."""
    changed = {}
    for node in crossbar_layers(program):
        if node.name not in normalisation:
            continue
        scale, offset = normalisation[node.name]
        current = node.attributes.get("ps_scale")
        if current is None or len(current) != len(scale):
            raise UserError(
                f"the learned normalisation of {node.name} has {len(scale)} "
                f"columns, the compiled layer {0 if current is None else len(current)}",
                hint="compile with the pipeline the model was fine-tuned for",
            )
        changed[node.outputs[0]] = with_attributes(
            node, ps_scale=tuple(float(v) for v in scale), ps_offset=tuple(float(v) for v in offset)
        )
    return replace_nodes(program, changed)
