"""The interpreter skeleton shared by executors: walk a graph in order, dispatch on op."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import numpy as np

from imcc.errors import InterpreterError, UserError
from imcc.ir.graph import Graph, Node

T = TypeVar("T")
Rule = Callable[[Node, list[Any]], list[Any]]


class Interpreter(Generic[T]):
    """Carries one `T` per value through a graph; each op's rule maps operand Ts to result Ts.

    Subclasses provide `rules` (op name -> rule) and `constant(name, data)`. The float reference
    backend carries arrays; a cost model can carry cost records through the same walk.
    """

    rules: Mapping[str, Rule] = {}

    def constant(self, name: str, data: np.ndarray | None) -> T:
        """Return the carried value of a constant."""
        raise NotImplementedError

    def rule_for(self, node: Node) -> Rule:
        """Return the rule of a node's op, or raise InterpreterError naming op and node."""
        try:
            return self.rules[node.op]
        except KeyError:
            label = f" (node {node.name})" if node.name else ""
            raise InterpreterError(
                f"{type(self).__name__} has no rule for op '{node.op}'{label}"
            ) from None

    def run(
        self,
        graph: Graph,
        feeds: Mapping[str, T],
        *,
        start: int = 0,
        visit: Callable[[int, Mapping[str, T]], None] | None = None,
    ) -> dict[str, T]:
        """Run the graph on values for its inputs; return the values of its outputs by name.

        With `start`, the run resumes before node `start`: `feeds` are the values the nodes
        from there on read that earlier nodes made (or graph inputs). `visit(index, values)` is
        called before each node it runs with the values made so far."""
        env: dict[str, T] = {}
        if start:
            env.update(feeds)
        for value in graph.inputs if not start else ():
            if value.name not in feeds:
                raise UserError(
                    f"no value given for graph input %{value.name} ({value.type})",
                    hint="inputs: " + ", ".join(v.name for v in graph.inputs),
                )
            env[value.name] = feeds[value.name]
        for name, constant in graph.constants.items():
            env[name] = self.constant(name, constant.data)
        for index in range(start, len(graph.nodes)):
            node = graph.nodes[index]
            if visit is not None:
                visit(index, env)
            results = self.rule_for(node)(node, [env[i] for i in node.inputs])
            env.update(zip(node.outputs, results, strict=True))
        return {name: env[name] for name in graph.outputs}
