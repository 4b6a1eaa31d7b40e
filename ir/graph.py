"""The IR structure: values, constants, nodes and the graph that holds them."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from imcc.ir.types import TensorType
from imcc.ir.weights import digest, frozen

GRAPH_ATTRIBUTES = {
    "target": "the hardware target the program is mapped for (name or .hw path)",
    "source": "the model the program was compiled from (its float reference)",
}
"""The attributes a graph may carry (all strings), printed `attributes {target = "isaac"}`."""

INLINE_LIMIT = 16
"""Constants with at most this many elements print inline (`dense<[...]>`), larger as blobs."""


@dataclass(frozen=True, slots=True)
class Value:
    """A named SSA value with a static tensor type."""

    name: str
    type: TensorType


@dataclass(frozen=True, slots=True)
class Constant:
    """A constant tensor; `data` is None when the text referenced a blob that was not loaded."""

    name: str
    type: TensorType
    digest: str
    data: np.ndarray | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, name: str, array: np.ndarray) -> Constant:
        """Make a constant from a numpy array (which is frozen, not copied)."""
        array = frozen(np.asarray(array))
        return cls(name, TensorType.of(array), digest(array), array)

    @property
    def inline(self) -> bool:
        """Say whether this constant prints its elements inline rather than as a blob."""
        return self.type.size <= INLINE_LIMIT


@dataclass(frozen=True, slots=True)
class Node:
    """One operation: op name, operand and result value names, typed attributes, source name."""

    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""

    def attr(self, name: str) -> Any:
        """Return an attribute's value (ops fill in defaults, so every declared one is present)."""
        return self.attributes[name]

    def replace(self, **changes: Any) -> Node:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Graph:
    """A dataflow graph in topological order; `types` gives the type of every value.

    Graphs are immutable: passes build new ones (see `GraphBuilder` and `Graph.replace`).
    """

    name: str
    inputs: tuple[Value, ...]
    constants: Mapping[str, Constant]
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]
    types: Mapping[str, TensorType]
    attributes: Mapping[str, Any] = field(default_factory=dict)  # see GRAPH_ATTRIBUTES

    def replace(self, **changes: Any) -> Graph:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def type_of(self, name: str) -> TensorType:
        """Return the type of a value."""
        return self.types[name]

    @cached_property
    def producers(self) -> dict[str, Node]:
        """Map each node result to the node that computes it."""
        return {out: node for node in self.nodes for out in node.outputs}

    @cached_property
    def users(self) -> dict[str, list[Node]]:
        """Map each value to the nodes that read it, in graph order."""
        result: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                result.setdefault(name, []).append(node)
        return result

    def constant_data(self, name: str) -> np.ndarray | None:
        """Return the data of a constant value, or None if it is not a constant with data."""
        constant = self.constants.get(name)
        return None if constant is None else constant.data

    def value_names(self) -> list[str]:
        """Return every value name in definition order."""
        names = [v.name for v in self.inputs] + list(self.constants)
        names += [out for node in self.nodes for out in node.outputs]
        return names


class GraphBuilder:
    """Builds a graph node by node, inferring result types from the op definitions."""

    def __init__(self, name: str, names: Iterable[str] = ()) -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.constants: dict[str, Constant] = {}
        self.nodes: list[Node] = []
        self.outputs: list[str] = []
        self.types: dict[str, TensorType] = {}
        self.attributes: dict[str, Any] = {}
        self._taken: set[str] = set(names)
        self._counter = itertools.count()

    @classmethod
    def like(cls, graph: Graph) -> GraphBuilder:
        """Start a builder for a rewrite of `graph`: same name and inputs, no nodes yet."""
        builder = cls(graph.name, graph.value_names())
        builder.attributes = dict(graph.attributes)
        for value in graph.inputs:
            builder.inputs.append(value)
            builder.types[value.name] = value.type
        return builder

    def fresh(self, hint: str = "v") -> str:
        """Return a value name not used yet, derived from `hint`."""
        if hint and hint not in self._taken:
            self._taken.add(hint)
            return hint
        while True:
            candidate = f"{hint}.{next(self._counter)}" if hint else str(next(self._counter))
            if candidate not in self._taken:
                self._taken.add(candidate)
                return candidate

    def add_input(self, name: str, type_: TensorType) -> str:
        """Declare a graph input."""
        self._taken.add(name)
        self.inputs.append(Value(name, type_))
        self.types[name] = type_
        return name

    def add_constant(self, array: np.ndarray, hint: str = "c", *, exact: bool = False) -> str:
        """Add a constant tensor and return its value name (`exact`: use `hint` verbatim)."""
        name = hint if exact else self.fresh(hint)
        self._taken.add(name)
        constant = Constant.of(name, array)
        self.constants[name] = constant
        self.types[name] = constant.type
        return name

    def keep_constant(self, constant: Constant) -> str:
        """Carry an existing constant over unchanged."""
        self._taken.add(constant.name)
        self.constants[constant.name] = constant
        self.types[constant.name] = constant.type
        return constant.name

    def add_node(
        self,
        op: str,
        inputs: Sequence[str],
        attributes: Mapping[str, Any] | None = None,
        *,
        name: str = "",
        outputs: Sequence[str] | None = None,
        hint: str | None = None,
    ) -> tuple[str, ...]:
        """Append a node, complete its attributes with defaults, infer and record result types."""
        from imcc.ir.ops import get_op

        opdef = get_op(op)
        attrs = opdef.complete_attributes(dict(attributes or {}))
        in_types = [self.types[i] for i in inputs]
        out_types = opdef.infer(in_types, attrs, [self.constants.get(i) for i in inputs])
        if outputs is None:
            outputs = [self.fresh(hint or name or op) for _ in out_types]
        else:
            for out in outputs:
                self._taken.add(out)
        for out, type_ in zip(outputs, out_types, strict=True):
            self.types[out] = type_
        node = Node(op, tuple(inputs), tuple(outputs), attrs, name)
        self.nodes.append(node)
        return node.outputs

    def keep_node(self, node: Node, types: Mapping[str, TensorType]) -> tuple[str, ...]:
        """Carry an existing node over unchanged with its known result types."""
        for out in node.outputs:
            self._taken.add(out)
            self.types[out] = types[out]
        self.nodes.append(node)
        return node.outputs

    def build(self, outputs: Sequence[str] | None = None) -> Graph:
        """Return the graph, keeping only constants that are used."""
        outs = tuple(self.outputs if outputs is None else outputs)
        used = {i for node in self.nodes for i in node.inputs} | set(outs)
        constants = {k: c for k, c in self.constants.items() if k in used}
        live = {v.name for v in self.inputs} | set(constants)
        live |= {o for node in self.nodes for o in node.outputs}
        types = {k: t for k, t in self.types.items() if k in live}
        return Graph(
            self.name,
            tuple(self.inputs),
            constants,
            tuple(self.nodes),
            outs,
            types,
            dict(self.attributes),
        )
