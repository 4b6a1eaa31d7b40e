"""The `canonicalize` pass: local rewrites that keep every result and leave a smaller graph."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcc.ir.graph import Graph, GraphBuilder, Node
from imcc.passes.base import Pass
from imcc.passes.context import Context


@dataclass(frozen=True, slots=True)
class Canonicalize(Pass):
    """Simplify the graph with local rewrites that keep its results, then drop dead code.

    Rules, applied in one walk in graph order (each sees the rewritten operands, so chains
    collapse), followed by dead-code elimination; running it twice changes nothing more:

    - `reshape(reshape(x))` -> `reshape(x)`; `transpose(transpose(x))` -> one transpose with the
      composed permutation.
    - identities disappear, their users read the operand instead: `reshape` to the operand's own
      shape, `transpose` by the identity permutation, `cast` to the operand's element type,
      `pad` by all-zero pads, `concat` of one operand, `add`/`sub` of a zero constant and
      `mul`/`div` by a one constant when the result type equals the other operand's type (no
      broadcasting; `x + 0.0` may turn `-0.0` into `0.0`, which compares equal).
    - dead code: nodes none of whose results reach a graph output, and unused constants.
      Graph inputs stay, even unused: they are the program's interface.

    A node whose result is a graph output is never removed (output names are the interface),
    but its operands are still rewritten. Folding constants is `fold-constants`, not this pass.

    ```
    // before
    %a = reshape(%x) {shape = [4, 4]} : f32[4,4]
    %b = reshape(%a) {shape = [16]} : f32[16]
    %c = transpose(%w) {perm = [0]} : f32[16]
    %y = add(%b, %c) : f32[16]
    return %y
    // after
    %b = reshape(%x) {shape = [16]} : f32[16]
    %y = add(%b, %w) : f32[16]
    return %y
    ```
    """

    name = "canonicalize"

    def run(self, graph: Graph, ctx: Context) -> Graph:
        builder = GraphBuilder.like(graph)
        for constant in graph.constants.values():
            builder.keep_constant(constant)
        outputs = set(graph.outputs)
        forward: dict[str, str] = {}  # value -> the value that replaces it
        producers: dict[str, Node] = {}
        for node in graph.nodes:
            node = node.replace(inputs=tuple(forward.get(i, i) for i in node.inputs))
            node = _combine(node, producers)
            same = _identity_operand(node, graph)
            if same is not None and node.outputs[0] not in outputs:
                forward[node.outputs[0]] = same
                continue
            builder.keep_node(node, graph.types)
            for out in node.outputs:
                producers[out] = node
        builder.nodes = _live_nodes(builder.nodes, graph.outputs)
        return builder.build(graph.outputs)


def _combine(node: Node, producers: dict[str, Node]) -> Node:
    """Fold a reshape of a reshape or a transpose of a transpose into one node."""
    if node.op not in ("reshape", "transpose"):
        return node
    inner = producers.get(node.inputs[0])
    if inner is None or inner.op != node.op:
        return node
    if node.op == "reshape":
        return node.replace(inputs=inner.inputs)
    inner_perm, outer_perm = inner.attr("perm"), node.attr("perm")
    perm = tuple(inner_perm[p] for p in outer_perm)
    return node.replace(inputs=inner.inputs, attributes={**node.attributes, "perm": perm})


def _identity_operand(node: Node, graph: Graph) -> str | None:
    """Return the operand a node merely passes through, or None."""
    if len(node.outputs) != 1:
        return None
    result = graph.types[node.outputs[0]]

    def passes(name: str) -> bool:
        return graph.types[name] == result

    op, inputs = node.op, node.inputs
    if op in ("reshape", "cast", "pad", "concat") and len(inputs) == 1 and passes(inputs[0]):
        if op != "pad" or not any(node.attr("pads")):
            return inputs[0]
    if op == "transpose" and node.attr("perm") == tuple(range(result.rank)):
        return inputs[0]
    if op in ("add", "sub", "mul", "div"):
        neutral = 0 if op in ("add", "sub") else 1
        a, b = inputs
        if _all_equal(graph, b, neutral) and passes(a):
            return a
        if op in ("add", "mul") and _all_equal(graph, a, neutral) and passes(b):
            return b
    return None


def _all_equal(graph: Graph, name: str, value: int) -> bool:
    data = graph.constant_data(name)
    return data is not None and data.size > 0 and bool(np.all(data == value))


def _live_nodes(nodes: list[Node], outputs: tuple[str, ...]) -> list[Node]:
    """Keep the nodes some graph output depends on, in their order."""
    live = set(outputs)
    kept = []
    for node in reversed(nodes):
        if any(out in live for out in node.outputs):
            kept.append(node)
            live.update(node.inputs)
    return kept[::-1]
