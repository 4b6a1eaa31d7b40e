"""The `fold-batchnorm` pass: a batch_norm after a conv or linear folds into its weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcc.errors import MappingError, MissingWeightsError
from imcc.ir.graph import Graph, GraphBuilder, Node
from imcc.passes.base import Pass
from imcc.passes.context import Context


@dataclass(frozen=True, slots=True)
class FoldBatchNorm(Pass):
    """Fold each batch_norm into the conv or linear that feeds it.

    With `f = scale / sqrt(var + epsilon)` per output channel, the producer's weights become
    `w' = w * f` (conv: along axis 0 of `w`; linear: along axis 1) and its bias
    `b' = (b - mean) * f + bias` (`b = 0` when it has none), computed in float64 and stored in the
    weights' element type. The folded node takes the batch_norm's result name.

    Rules: folds only when

    - the batch_norm's input is the result of a `conv`, or of a `linear` whose result has rank 2
      (batch_norm normalises axis 1, which is then the linear's output feature axis);
    - the batch_norm is the only user of that result and the result is not a graph output;
    - the weights, the bias if any, and all four batch_norm parameters are constants of a float
      type; their data must be loaded (`MissingWeightsError` otherwise).

    Anything else is left as it is.

    ```
    // before
    %c = conv(%x, %w, %b) {...} : f32[1,2,4,4]
    %y = batch_norm(%c, %scale, %bias, %mean, %var) {epsilon = 1e-05} : f32[1,2,4,4]
    // after
    %y = conv(%x, %w.folded, %b.folded) {...} : f32[1,2,4,4]
    ```
    """

    name = "fold-batchnorm"

    def run(self, graph: Graph, ctx: Context) -> Graph:
        folds = {node.inputs[0]: node for node in graph.nodes if self._foldable(node, graph)}
        builder = GraphBuilder.like(graph)
        for constant in graph.constants.values():
            builder.keep_constant(constant)
        for node in graph.nodes:
            if node.op == "batch_norm" and node.inputs[0] in folds:
                continue  # replaced by the producer below, which takes its result name
            norm = folds.get(node.outputs[0])
            if norm is None:
                builder.keep_node(node, graph.types)
                continue
            weights, bias = _fold(node, norm, graph)
            bias_hint = node.inputs[2] if len(node.inputs) > 2 else f"{node.inputs[1]}.bias"
            inputs = (
                node.inputs[0],
                builder.add_constant(weights, f"{node.inputs[1]}.folded"),
                builder.add_constant(bias, f"{bias_hint}.folded"),
            )
            folded = node.replace(inputs=inputs, outputs=norm.outputs)
            builder.keep_node(folded, graph.types)
        ctx.logger.debug("fold-batchnorm: folded %d batch_norm(s)", len(folds))
        return builder.build(graph.outputs)

    @staticmethod
    def _foldable(norm: Node, graph: Graph) -> bool:
        if norm.op != "batch_norm":
            return False
        source = norm.inputs[0]
        producer = graph.producers.get(source)
        if producer is None or producer.op not in ("conv", "linear"):
            return False
        if producer.op == "linear" and graph.types[source].rank != 2:
            return False
        if len(graph.users.get(source, [])) != 1 or source in graph.outputs:
            return False
        parameters = list(producer.inputs[1:]) + list(norm.inputs[1:])
        if not all(p in graph.constants for p in parameters):
            return False
        if not all(graph.types[p].dtype.is_float for p in parameters):
            return False
        missing = [p for p in parameters if graph.constants[p].data is None]
        if missing:
            raise MissingWeightsError(
                f"fold-batchnorm needs the data of constant %{missing[0]} "
                f"(to fold %{norm.outputs[0]})",
                hint="keep the program's .npz beside it or pass --weights FILE.npz",
            )
        return True


def _fold(producer: Node, norm: Node, graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    """Return the folded weights and bias of `producer` followed by `norm`."""
    data = [np.asarray(graph.constant_data(i), dtype=np.float64) for i in producer.inputs[1:]]
    scale, shift, mean, var = (
        np.asarray(graph.constant_data(i), dtype=np.float64) for i in norm.inputs[1:]
    )
    weights = data[0]
    channels = weights.shape[0] if producer.op == "conv" else weights.shape[1]
    bias = data[1] if len(data) > 1 else np.zeros(channels)
    factor = scale / np.sqrt(var + norm.attr("epsilon"))
    if producer.op == "conv":
        folded = weights * factor.reshape((-1,) + (1,) * (weights.ndim - 1))
    else:
        folded = weights * factor[np.newaxis, :]
    dtype = graph.types[producer.inputs[1]].dtype.numpy
    folded_bias = (bias - mean) * factor + shift
    limit = np.finfo(dtype).max if np.issubdtype(dtype, np.floating) else np.inf
    if not (np.all(np.abs(folded) <= limit) and np.all(np.abs(folded_bias) <= limit)):
        raise MappingError(
            f"folding {norm.name or norm.op} into "
            f"{producer.name or producer.op} gives weights beyond "
            f"{np.dtype(dtype).name} (a variance near zero or a huge scale)",
            hint="check the batch norm's parameters in the model",
        )
    return folded.astype(dtype), folded_bias.astype(dtype)
