"""The imcc graph IR: typed values, nodes and graphs, with one canonical text form."""

from __future__ import annotations

from imcc.ir.graph import Constant, Graph, GraphBuilder, Node, Value
from imcc.ir.types import DType, TensorType

__all__ = ["Constant", "DType", "Graph", "GraphBuilder", "Node", "TensorType", "Value"]
