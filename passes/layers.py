"""What the mapping passes share: finding the crossbar layers and reading per-layer options.

A *crossbar layer* is a `conv` or `linear` whose weights are a constant: before `quantize` in
float, after it in integers. Layers are numbered in graph order; per-layer pass options are
lists with one entry per crossbar layer in that order (empty: the uniform option applies).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from imcc.errors import MappingError
from imcc.ir.graph import Graph, Node
from imcc.ir.mapping import CROSSBAR_OPS
from imcc.ir.ops import get_op
from imcc.passes.context import Context
from imcc.plan import MatrixShape as MatrixShape  # re-exported for existing importers
from imcc.plan import matrix_shape as matrix_shape
from imcc.target import Target

T = TypeVar("T")


def crossbar_layers(graph: Graph) -> list[Node]:
    """Return the conv / linear nodes whose weight operand is a constant, in graph order."""
    return [n for n in graph.nodes if n.op in CROSSBAR_OPS and n.inputs[1] in graph.constants]


def with_attributes(node: Node, **attributes: Any) -> Node:
    """Return the node with attributes set, kept in the op's declaration order."""
    return node.replace(
        attributes=get_op(node.op).complete_attributes({**node.attributes, **attributes})
    )


def replace_nodes(graph: Graph, changed: dict[str, Node]) -> Graph:
    """Return the graph with nodes swapped by first result name (same results, same types)."""
    return graph.replace(nodes=tuple(changed.get(n.outputs[0], n) for n in graph.nodes))


def layer_label(node: Node, index: int) -> str:
    """Name a layer in messages: its index and source name."""
    return f"layer {index} ({node.name or node.outputs[0]})"


def require_quantized(node: Node, graph: Graph, where: str, pass_name: str) -> None:
    """Raise MappingError unless the layer computes on integer codes (a mapping decision on a
    float layer is one the crossbars cannot carry out)."""
    if graph.types[node.inputs[0]].dtype.is_float:
        raise MappingError(f"{where} is not quantized", hint=f"run quantize before {pass_name}")


def require_target(ctx: Context, pass_name: str) -> Target:
    """Return the context's target or raise MappingError naming the pass."""
    if not isinstance(ctx.target, Target):
        raise MappingError(
            f"{pass_name} needs a hardware target",
            hint="give --target (e.g. --target isaac; `imcc targets` lists them)",
        )
    return ctx.target


def per_layer(values: Sequence[T], uniform: T, count: int, option: str) -> list[T]:
    """Expand a per-layer option: `values` (one per layer) or `uniform` for every layer."""
    if not values:
        return [uniform] * count
    if len(values) != count:
        raise MappingError(
            f"option {option} has {len(values)} entries but the model has {count} crossbar layers",
            hint="give one entry per crossbar layer",
        )
    return list(values)


def check_choice(value: Any, legal: Sequence[Any], what: str, where: str) -> None:
    """Raise MappingError unless `value` is among the target's legal values."""
    if value not in legal:
        raise MappingError(
            f"{where}: {what} {value} is not offered by the target",
            hint=f"legal values: {', '.join(str(v) for v in legal)}",
        )
