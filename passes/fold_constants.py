"""The `fold-constants` pass: nodes whose operands are all constants become constants."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcc.errors import MissingWeightsError, VerificationError
from imcc.ir.graph import Graph, GraphBuilder, Node
from imcc.ir.types import TensorType
from imcc.passes.base import Pass, option
from imcc.passes.context import Context


@dataclass(frozen=True, slots=True)
class FoldConstants(Pass):
    """Replace nodes whose operands are all constants by their results, computed once.

    Rules:

    - a node is folded when every operand is a constant (or a result folded before it) and
      every result has at most `max_elements` elements (folding a broadcast can turn two small
      constants into a huge one); nodes without operands are left alone;
    - results are computed by the reference interpreter
      (`imcc.backend.reference.evaluate`), so folding means exactly what running means;
    - each result becomes a constant with the node's result name, so users are unchanged;
      constants nobody uses any more are dropped;
    - the weights of the constants it reads must be loaded (`MissingWeightsError` otherwise).

    ```
    // before
    %w = const f32[2,2] dense<[1.0, 2.0, 3.0, 4.0]>
    %t = transpose(%w) {perm = [1, 0]} : f32[2,2]
    %y = linear(%x, %t) : f32[1,2]
    // after
    %t = const f32[2,2] dense<[1.0, 3.0, 2.0, 4.0]>
    %y = linear(%x, %t) : f32[1,2]
    ```
    """

    name = "fold-constants"
    max_elements: int = option(
        1 << 20, "fold only results with at most this many elements", minimum=0
    )

    def run(self, graph: Graph, ctx: Context) -> Graph:
        from imcc.backend.reference import evaluate

        builder = GraphBuilder.like(graph)
        for constant in graph.constants.values():
            builder.keep_constant(constant)
        folded = 0
        for node in graph.nodes:
            if not self._foldable(node, graph, builder):
                builder.keep_node(node, graph.types)
                continue
            missing = [i for i in node.inputs if builder.constants[i].data is None]
            if missing:
                raise MissingWeightsError(
                    f"fold-constants needs the data of constant %{missing[0]} "
                    f"(read by {node.op} -> %{node.outputs[0]})",
                    hint="keep the program's .npz beside it or pass --weights FILE.npz",
                )
            args = [builder.constants[i].data for i in node.inputs]
            results = evaluate(node, args)
            for name, array in zip(node.outputs, results, strict=True):
                array = np.asarray(array)
                if TensorType.of(array) != graph.types[name]:
                    raise VerificationError(
                        f"fold-constants: the reference interpreter computed "
                        f"{TensorType.of(array)} for %{name}, declared {graph.types[name]}"
                    )
                builder.add_constant(array, name, exact=True)
            folded += 1
        ctx.logger.debug("fold-constants: folded %d node(s)", folded)
        return builder.build(graph.outputs)

    def _foldable(self, node: Node, graph: Graph, builder: GraphBuilder) -> bool:
        return (
            bool(node.inputs)
            and all(i in builder.constants for i in node.inputs)
            and all(graph.types[o].size <= self.max_elements for o in node.outputs)
        )
