"""The IR verifier: checks SSA form, op definitions, attribute kinds and every result type."""

from __future__ import annotations

import numpy as np

from imcc.errors import VerificationError
from imcc.ir.attributes import coerce
from imcc.ir.graph import GRAPH_ATTRIBUTES, Graph, Node
from imcc.ir.mapping import (
    CROSSBAR_OPS,
    MAPPING_HINT,
    InputStreaming,
    LayerShape,
    MappingRuleError,
    Placement,
    check_input_codes,
    check_layer,
    check_placements,
)
from imcc.ir.ops import ShapeError, get_op
from imcc.ir.types import TensorType

CODE_PRESERVING = ("reshape", "transpose", "slice")
"""Ops whose integer result holds exactly the codes of their operand: a crossbar layer behind
them still reads the codes of the quantize before them."""


def _where(node: Node, index: int) -> str:
    label = f" ({node.name})" if node.name else ""
    return f"node #{index} '{node.op}'{label} -> %{', %'.join(node.outputs)}"


def verify(graph: Graph) -> None:
    """Raise VerificationError naming the first node (or value) and the rule it breaks."""
    defined: set[str] = set()

    def define(name: str, what: str) -> None:
        if name in defined:
            raise VerificationError(f"{what}: value %{name} is defined more than once", value=name)
        if name not in graph.types:
            raise VerificationError(f"{what}: value %{name} has no type", value=name)
        defined.add(name)

    for value in graph.inputs:
        define(value.name, "graph input")
        if graph.types[value.name] != value.type:
            raise VerificationError(
                f"graph input %{value.name}: type table disagrees", value=value.name
            )
    for name, constant in graph.constants.items():
        define(name, "constant")
        if constant.name != name or graph.types[name] != constant.type:
            raise VerificationError(f"constant %{name}: name or type table disagrees", value=name)
        if constant.data is not None:
            if TensorType.of(constant.data) != constant.type:
                raise VerificationError(
                    f"constant %{name}: data is {TensorType.of(constant.data)}"
                    f" but the constant says {constant.type}",
                    value=name,
                )
            _check_finite(graph, name, constant.data)
    for index, node in enumerate(graph.nodes):
        where = _where(node, index)
        located = node.outputs[0] if node.outputs else None  # finds the node's line in a file
        try:
            opdef = get_op(node.op)
        except KeyError:
            raise VerificationError(f"{where}: unknown op '{node.op}'", value=located) from None
        for name in node.inputs:
            if name not in defined:
                raise VerificationError(
                    f"{where}: operand %{name} is not defined before use", value=located
                )
        expected = [a.name for a in opdef.attributes if not a.optional or a.name in node.attributes]
        if list(node.attributes) != expected:
            raise VerificationError(
                f"{where}: attributes {list(node.attributes)} differ from the op's {expected}",
                value=located,
            )
        for spec in opdef.attributes:
            if spec.name not in node.attributes:
                continue
            value = node.attributes[spec.name]
            try:
                if coerce(value, spec.kind) != value or type(coerce(value, spec.kind)) is not type(
                    value
                ):
                    raise TypeError(f"not in canonical form: {value!r}")
                if spec.struct is not None and not isinstance(value, spec.struct):
                    raise TypeError(f"expected #{spec.struct.mnemonic}<...>, got {value!r}")
            except TypeError as exc:
                raise VerificationError(
                    f"{where}: attribute '{spec.name}': {exc}", value=located
                ) from None
        try:
            inferred = opdef.infer(
                [graph.types[i] for i in node.inputs],
                node.attributes,
                [graph.constants.get(i) for i in node.inputs],
            )
        except ShapeError as exc:
            raise VerificationError(f"{where}: {exc}", value=located) from None
        except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
            # An op's type rule tripped over operands or attributes it does not check (a
            # zero stride, a negative size): still this node's fault, so name the node.
            raise VerificationError(
                f"{where}: cannot infer result types ({exc})", value=located
            ) from None
        if len(inferred) != len(node.outputs):
            raise VerificationError(
                f"{where}: op yields {len(inferred)} results, node has {len(node.outputs)}",
                value=located,
            )
        for out, expected in zip(node.outputs, inferred, strict=True):
            define(out, where)
            if graph.types[out] != expected:
                raise VerificationError(
                    f"{where}: result %{out} is declared {graph.types[out]} but the op "
                    f"yields {expected}",
                    value=out,
                )
        if node.op in CROSSBAR_OPS:
            try:
                _check_mapping(graph, node)
            except MappingRuleError as exc:
                raise VerificationError(
                    f"{where}: {exc}", value=located, hint=MAPPING_HINT
                ) from None
    placed = [
        (n.outputs[0], n.attributes["placement"])
        for n in graph.nodes
        if isinstance(n.attributes.get("placement"), Placement)
    ]
    try:
        check_placements(placed)
    except MappingRuleError as exc:
        index = next(i for i, n in enumerate(graph.nodes) if n.outputs[:1] == (exc.value,))
        raise VerificationError(
            f"{_where(graph.nodes[index], index)}: {exc}", value=exc.value, hint=MAPPING_HINT
        ) from None
    for key, value in graph.attributes.items():
        if key not in GRAPH_ATTRIBUTES or not isinstance(value, str):
            raise VerificationError(f"graph attribute '{key}' is unknown or not a string")
    if not graph.outputs:
        raise VerificationError("graph has no outputs")
    for name in graph.outputs:
        if name not in defined:
            raise VerificationError(f"graph output %{name} is not defined", value=name)


def _check_finite(graph: Graph, name: str, data: np.ndarray) -> None:
    """Refuse NaN in a constant, and infinities unless only `clip` reads it (an infinite bound
    means no bound): anywhere else they turn every result downstream into noise."""
    if data.dtype.kind != "f" or np.isfinite(data).all():
        return
    if not np.isnan(data).any() and all(user.op == "clip" for user in graph.users.get(name, ())):
        return
    bad = tuple(int(i) for i in np.argwhere(~np.isfinite(data))[0])
    raise VerificationError(
        f"constant %{name}: holds {data[bad]} at index {list(bad)}; "
        "constants must be finite (infinite only as a clip bound)",
        value=name,
    )


def _check_mapping(graph: Graph, node: Node) -> None:
    """Check the mapping attributes of a crossbar op against its product and its input's codes
    (the rules live in ir/mapping.py)."""
    x, w, out = (
        graph.types[node.inputs[0]],
        graph.types[node.inputs[1]],
        graph.types[node.outputs[0]],
    )
    group = node.attributes.get("group", 1)
    check_layer(
        node.attributes, LayerShape.of(node.op, w.shape, out.shape, group), x.dtype.is_integer
    )
    streaming = node.attributes.get("input")
    if not isinstance(streaming, InputStreaming):
        return
    producer = graph.producers.get(node.inputs[0])
    while producer is not None and producer.op in CODE_PRESERVING:
        producer = graph.producers.get(producer.inputs[0])
    if producer is not None and producer.op == "quantize":
        check_input_codes(
            streaming,
            producer.attributes["bits"],
            producer.attributes["signed"],
            f"%{producer.outputs[0]}",
        )
