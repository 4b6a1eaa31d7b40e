"""The cost interpreter: walks a mapped graph with the shared skeleton, carrying cost facts.

Each value carries what pricing its users needs: its type, its data and digest (constants: the
weights whose stored levels the array energy depends on), the calibration statistics of the
`quantize` that produced it (passed through data movement and pooling, which keep the codes),
and its bits per element. Each op's rule appends a `LayerCost` (and for crossbar ops a
`CrossbarArea`) to the interpreter's records. An op with no rule is an InterpreterError naming
op and node; a crossbar op on float operands or without its mapping is a MappingError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from imcc.backend.interpreter import Interpreter
from imcc.costmodel.digital import (
    DATA_MOVEMENT,
    DIGITAL_OPS,
    FLOAT_BITS,
    digital_layer,
    movement_layer,
)
from imcc.costmodel.layer import OUTPUT_BITS, CrossbarArea, LayerCost, crossbar_layer
from imcc.costmodel.timing import output_rows
from imcc.errors import MappingError
from imcc.ir.graph import Graph, Node
from imcc.ir.mapping import ActivationStats, Placement
from imcc.ir.types import TensorType
from imcc.target import Target

DEFAULT_CODE_BITS = 8
"""Bits per element of an integer tensor whose producing quantize is unknown."""

KEEPS_CODES = DATA_MOVEMENT | {"max_pool", "global_max_pool", "relu"}
"""Ops whose integer result holds the same codes as their first operand (stats pass through)."""


def _tiles_used(graph: Graph, target: Target) -> int:
    """Return the tiles the placed crossbar layers of a graph occupy (0 when unplaced)."""
    ends = [p.end for n in graph.nodes if isinstance(p := n.attributes.get("placement"), Placement)]
    return target.hierarchy.tiles_for(max(ends, default=0))


@dataclass(frozen=True, slots=True)
class Carried:
    """What the cost walk knows about one value."""

    type: TensorType
    data: np.ndarray | None = None
    digest: str | None = None
    stats: ActivationStats | None = None
    bits: int = DEFAULT_CODE_BITS


class CostInterpreter(Interpreter[Carried]):
    """Prices every node of a mapped graph on a target; `layers` and `areas` collect records."""

    def __init__(self, graph: Graph, target: Target) -> None:
        self.graph = graph
        self.target = target
        self.layers: list[LayerCost] = []
        self.areas: list[CrossbarArea] = []
        rules: dict[str, Any] = {op: self._digital for op in DIGITAL_OPS}
        rules.update({op: self._movement for op in DATA_MOVEMENT})
        rules["quantize"] = self._quantize
        rules["conv"] = self._conv
        rules["linear"] = self._linear
        self.rules = rules
        unit = target.digital
        if unit.level == "chip":
            self.digital_units = unit.count
        else:  # per tile / crossbar of the tiles the mapping uses (the provisioned chip)
            tiles = max(_tiles_used(graph, target), 1)
            per_tile = target.hierarchy.crossbars_per_tile if unit.level == "crossbar" else 1
            self.digital_units = unit.count * tiles * per_tile

    def constant(self, name: str, data: np.ndarray | None) -> Carried:
        """Carry a constant's type, data and digest."""
        constant = self.graph.constants[name]
        return Carried(constant.type, data, constant.digest)

    def estimate(self) -> None:
        """Walk the graph once, filling `layers` and `areas`."""
        feeds = {v.name: Carried(v.type, bits=_bits_of(v.type)) for v in self.graph.inputs}
        self.run(self.graph, feeds)

    def _out(self, node: Node) -> TensorType:
        return self.graph.types[node.outputs[0]]

    def _results(self, node: Node, carried: Carried) -> list[Carried]:
        return [carried] + [
            Carried(self.graph.types[o], bits=_bits_of(self.graph.types[o]))
            for o in node.outputs[1:]
        ]

    def _digital(self, node: Node, operands: list[Carried]) -> list[Carried]:
        out = self._out(node)
        self.layers.append(
            digital_layer(node, self.target, [o.type for o in operands], out, self.digital_units)
        )
        first = operands[0] if operands else None
        if first is not None and node.op in KEEPS_CODES and not out.dtype.is_float:
            return self._results(node, Carried(out, stats=first.stats, bits=first.bits))
        return self._results(node, Carried(out, bits=_bits_of(out)))

    def _movement(self, node: Node, operands: list[Carried]) -> list[Carried]:
        out = self._out(node)
        bits = operands[0].bits if operands else _bits_of(out)
        self.layers.append(movement_layer(node, self.target, out, bits))
        stats = operands[0].stats if operands and len(operands) == 1 else None
        return self._results(node, Carried(out, stats=stats, bits=bits))

    def _quantize(self, node: Node, operands: list[Carried]) -> list[Carried]:
        out = self._out(node)
        self.layers.append(
            digital_layer(node, self.target, [o.type for o in operands], out, self.digital_units)
        )
        stats = node.attributes.get("stats")
        return self._results(node, Carried(out, stats=stats, bits=node.attributes["bits"]))

    def _check_integer(self, node: Node, x: Carried) -> None:
        if x.type.dtype.is_float:
            raise MappingError(
                f"crossbar op '{node.op}' (node {node.name or node.outputs[0]}) has float operands",
                hint="run the quantize pass before pricing it",
            )

    def _crossbar(self, node: Node, operands: list[Carried], **shape: Any) -> list[Carried]:
        w = operands[1]
        record, need = crossbar_layer(
            node,
            self.target,
            weights=w.data,
            weights_digest=w.digest,
            weights_size=w.type.size,
            stats=operands[0].stats,
            rows_out=output_rows(self._out(node).shape),
            **shape,
        )
        self.layers.append(record)
        self.areas.append(need)
        return self._results(node, Carried(self._out(node), bits=OUTPUT_BITS))

    def _conv(self, node: Node, operands: list[Carried]) -> list[Carried]:
        x, w = operands[0], operands[1]
        self._check_integer(node, x)
        out = self._out(node)
        groups = node.attributes["group"]
        return self._crossbar(
            node,
            operands,
            positions=out.shape[0] * math.prod(out.shape[2:]),
            rows=w.type.shape[1] * math.prod(w.type.shape[2:]),
            columns=w.type.shape[0] // groups,
            groups=groups,
            filter_axis=0,
            window=w.type.shape[2] if len(w.type.shape) > 2 else 1,
        )

    def _linear(self, node: Node, operands: list[Carried]) -> list[Carried]:
        x, w = operands[0], operands[1]
        self._check_integer(node, x)
        return self._crossbar(
            node,
            operands,
            positions=math.prod(x.type.shape[:-1]),
            rows=w.type.shape[0],
            columns=w.type.shape[1],
            groups=1,
            filter_axis=1,
            window=math.inf,  # a vector product needs its whole input
        )


def _bits_of(type_: TensorType) -> int:
    return FLOAT_BITS if type_.dtype.is_float else DEFAULT_CODE_BITS
