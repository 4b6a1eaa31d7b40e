"""Change the batch size of a graph whose leading axis is the batch everywhere it appears."""

from __future__ import annotations

from imcc.errors import UserError
from imcc.ir.graph import Graph, GraphBuilder
from imcc.ir.ops import ShapeError
from imcc.ir.types import TensorType


def rebatch(graph: Graph, batch: int) -> Graph:
    """Return the graph with every input's leading axis set to `batch`; reshapes whose leading
    dimension is the old batch follow, and so do slices that keep the whole batch axis; result
    types are inferred again and every value must keep the new batch on its leading axis.
    Raises UserError when the graph does not treat its leading axis as the batch (e.g. it
    reshapes across it)."""
    old = {v.type.shape[0] for v in graph.inputs if v.type.rank}
    if len(old) != 1:
        raise UserError(f"graph @{graph.name} has no single leading batch axis to change")
    (before,) = old
    if before == batch:
        return graph
    builder = GraphBuilder(graph.name, graph.value_names())
    builder.attributes = dict(graph.attributes)
    for value in graph.inputs:
        builder.add_input(value.name, TensorType((batch, *value.type.shape[1:]), value.type.dtype))
    for constant in graph.constants.values():
        builder.keep_constant(constant)
    try:
        for node in graph.nodes:
            attributes = dict(node.attributes)
            if node.op == "reshape" and attributes["shape"][:1] == (before,):
                attributes["shape"] = (batch, *attributes["shape"][1:])
            if node.op == "slice" and (
                attributes["starts"][0],
                attributes["ends"][0],
                attributes["steps"][0],
            ) == (0, before, 1):
                attributes["ends"] = (batch, *attributes["ends"][1:])
            builder.add_node(node.op, node.inputs, attributes, name=node.name, outputs=node.outputs)
            for out in node.outputs:
                if graph.types[out].shape[:1] != (before,) or builder.types[out].shape != (
                    batch,
                    *graph.types[out].shape[1:],
                ):
                    raise ShapeError(f"%{out} does not keep the batch on its leading axis")
    except ShapeError as exc:
        raise UserError(
            f"cannot change the batch of graph @{graph.name}: {exc}",
            hint="run it with its own batch size",
        ) from None
    return builder.build(graph.outputs)
