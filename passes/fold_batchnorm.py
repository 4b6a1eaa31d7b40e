"""The `fold-batchnorm` pass: a batch_norm after a conv or linear, or before a linear, folds into
its weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcc.errors import MappingError, MissingWeightsError
from imcc.ir.graph import Graph, GraphBuilder, Node
from imcc.passes.base import Pass
from imcc.passes.context import Context


@dataclass(frozen=True, slots=True)
class FoldBatchNorm(Pass):
    """Fold each batch_norm into the conv or linear that feeds it, or else into the linear it
    feeds.

    With `f = scale / sqrt(var + epsilon)` per output channel, the producer's weights become
    `w' = w * f` (conv: along axis 0 of `w`; linear: along axis 1) and its bias
    `b' = (b - mean) * f + bias` (`b = 0` when it has none), computed in float64 and stored in the
    weights' element type. The folded node takes the batch_norm's result name. A batch_norm
    whose only user is a linear (the normalised features are its input, rank 2, as a network
    that batch-normalises its pooled features before the classifier has it) folds into that
    linear's input side instead: with `t = bias - mean * f`, `w' = f[:, None] * w` (along axis
    0) and `b' = b + t @ w`; the linear then reads the batch_norm's input.

    Rules: folds only when

    - the batch_norm's input is the result of a `conv`, or of a `linear` whose result has rank 2
      (batch_norm normalises axis 1, which is then the linear's output feature axis);
    - the batch_norm is the only user of that result and the result is not a graph output;
    - the weights, the bias if any, and all four batch_norm parameters are constants of a float
      type; their data must be loaded (`MissingWeightsError` otherwise).

    Before a linear: the batch_norm's result has rank 2, its one user is a linear reading it
    as its input, it is not a graph output, and the parameters are float constants as above.
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
        ahead = {}  # a linear's result -> the batch_norm before it
        for node in graph.nodes:
            user = None if node.inputs[:1] and node.inputs[0] in folds else _user(node, graph)
            if user is not None and user.outputs[0] not in folds:  # one fold per linear
                ahead[user.outputs[0]] = node
        skipped = {norm.outputs[0] for norm in ahead.values()}
        builder = GraphBuilder.like(graph)
        for constant in graph.constants.values():
            builder.keep_constant(constant)
        for node in graph.nodes:
            if node.op == "batch_norm" and (node.inputs[0] in folds or node.outputs[0] in skipped):
                continue  # replaced by the linear or conv below
            before = ahead.get(node.outputs[0])
            if before is not None:
                weights, bias = _fold_ahead(node, before, graph)
                inputs = (
                    before.inputs[0],
                    builder.add_constant(weights, f"{node.inputs[1]}.folded"),
                    builder.add_constant(bias, f"{node.outputs[0]}.bias.folded"),
                )
                builder.keep_node(node.replace(inputs=inputs), graph.types)
                continue
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
        ctx.logger.debug("fold-batchnorm: folded %d batch_norm(s)", len(folds) + len(ahead))
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
        return _constant_parameters(producer, norm, graph)


def _constant_parameters(layer: Node, norm: Node, graph: Graph) -> bool:
    """Say whether a layer's weights (and bias) and a batch_norm's parameters are float
    constants; raise MissingWeightsError when their data is not loaded."""
    parameters = list(layer.inputs[1:]) + list(norm.inputs[1:])
    if not all(p in graph.constants for p in parameters):
        return False
    if not all(graph.types[p].dtype.is_float for p in parameters):
        return False
    missing = [p for p in parameters if graph.constants[p].data is None]
    if missing:
        raise MissingWeightsError(
            f"fold-batchnorm needs the data of constant %{missing[0]} (to fold %{norm.outputs[0]})",
            hint="keep the program's .npz beside it or pass --weights FILE.npz",
        )
    return True


def _user(norm: Node, graph: Graph) -> Node | None:
    """Return the linear a batch_norm folds into ahead of it (see FoldBatchNorm), or None."""
    if norm.op != "batch_norm":
        return None
    result = norm.outputs[0]
    users = graph.users.get(result, [])
    if len(users) != 1 or result in graph.outputs or graph.types[result].rank != 2:
        return None
    user = users[0]
    if user.op != "linear" or user.inputs[0] != result or result in user.inputs[1:]:
        return None
    return user if _constant_parameters(user, norm, graph) else None


def _operands(
    layer: Node, norm: Node, graph: Graph
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return in float64 a layer's weights and bias (zeros when it has none, one per output
    channel: axis 0 of a conv's weights, axis 1 of a linear's) and the batch_norm's factor
    `scale / sqrt(var + epsilon)`, shift and mean."""
    data = [np.asarray(graph.constant_data(i), dtype=np.float64) for i in layer.inputs[1:]]
    scale, shift, mean, var = (
        np.asarray(graph.constant_data(i), dtype=np.float64) for i in norm.inputs[1:]
    )
    weights = data[0]
    channels = weights.shape[0] if layer.op == "conv" else weights.shape[1]
    bias = data[1] if len(data) > 1 else np.zeros(channels)
    return weights, bias, scale / np.sqrt(var + norm.attr("epsilon")), shift, mean


def _fold_ahead(linear: Node, norm: Node, graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    """Return the weights and bias of `linear` reading `norm`'s input instead of its result."""
    weights, bias, factor, shift, mean = _operands(linear, norm, graph)
    offset = shift - mean * factor
    return _checked(weights * factor[:, np.newaxis], bias + offset @ weights, linear, norm, graph)


def _fold(producer: Node, norm: Node, graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    """Return the folded weights and bias of `producer` followed by `norm`."""
    weights, bias, factor, shift, mean = _operands(producer, norm, graph)
    if producer.op == "conv":
        folded = weights * factor.reshape((-1,) + (1,) * (weights.ndim - 1))
    else:
        folded = weights * factor[np.newaxis, :]
    return _checked(folded, (bias - mean) * factor + shift, producer, norm, graph)


def _checked(
    weights: np.ndarray, bias: np.ndarray, layer: Node, norm: Node, graph: Graph
) -> tuple[np.ndarray, np.ndarray]:
    """Return folded float64 weights and bias in the layer's weight type, refusing values
    beyond it."""
    dtype = graph.types[layer.inputs[1]].dtype.numpy
    limit = np.finfo(dtype).max if np.issubdtype(dtype, np.floating) else np.inf
    if not (np.all(np.abs(weights) <= limit) and np.all(np.abs(bias) <= limit)):
        raise MappingError(
            f"folding {norm.name or norm.op} into "
            f"{layer.name or layer.op} gives weights beyond "
            f"{np.dtype(dtype).name} (a variance near zero or a huge scale)",
            hint="check the batch norm's parameters in the model",
        )
    return weights.astype(dtype), bias.astype(dtype)
