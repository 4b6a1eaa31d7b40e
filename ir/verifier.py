"""The IR verifier: checks SSA form, op definitions, attribute kinds and every result type."""

from __future__ import annotations

from imcc.errors import VerificationError
from imcc.ir.attributes import coerce
from imcc.ir.graph import GRAPH_ATTRIBUTES, Graph, Node
from imcc.ir.ops import ShapeError, get_op
from imcc.ir.types import TensorType


def _where(node: Node, index: int) -> str:
    label = f" ({node.name})" if node.name else ""
    return f"node #{index} '{node.op}'{label} -> %{', %'.join(node.outputs)}"


def verify(graph: Graph) -> None:
    """Raise VerificationError naming the first node (or value) and the rule it breaks."""
    defined: set[str] = set()

    def define(name: str, what: str) -> None:
        if name in defined:
            raise VerificationError(f"{what}: value %{name} is defined more than once",
                                    value=name)
        if name not in graph.types:
            raise VerificationError(f"{what}: value %{name} has no type", value=name)
        defined.add(name)

    for value in graph.inputs:
        define(value.name, "graph input")
        if graph.types[value.name] != value.type:
            raise VerificationError(f"graph input %{value.name}: type table disagrees",
                                    value=value.name)
    for name, constant in graph.constants.items():
        define(name, "constant")
        if constant.name != name or graph.types[name] != constant.type:
            raise VerificationError(f"constant %{name}: name or type table disagrees",
                                    value=name)
        if constant.data is not None:
            if TensorType.of(constant.data) != constant.type:
                raise VerificationError(f"constant %{name}: data is {TensorType.of(constant.data)}"
                                        f" but the constant says {constant.type}", value=name)
    for index, node in enumerate(graph.nodes):
        where = _where(node, index)
        located = node.outputs[0] if node.outputs else None  # finds the node's line in a file
        try:
            opdef = get_op(node.op)
        except KeyError:
            raise VerificationError(f"{where}: unknown op '{node.op}'", value=located) from None
        for name in node.inputs:
            if name not in defined:
                raise VerificationError(f"{where}: operand %{name} is not defined before use",
                                        value=located)
        expected = [a.name for a in opdef.attributes if not a.optional or a.name in node.attributes]
        if list(node.attributes) != expected:
            raise VerificationError(
                f"{where}: attributes {list(node.attributes)} differ from the op's "
                f"{expected}", value=located
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
                raise VerificationError(f"{where}: attribute '{spec.name}': {exc}",
                                        value=located) from None
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
            raise VerificationError(f"{where}: cannot infer result types ({exc})",
                                    value=located) from None
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
                    f"yields {expected}", value=out
                )
    for key, value in graph.attributes.items():
        if key not in GRAPH_ATTRIBUTES or not isinstance(value, str):
            raise VerificationError(f"graph attribute '{key}' is unknown or not a string")
    if not graph.outputs:
        raise VerificationError("graph has no outputs")
    for name in graph.outputs:
        if name not in defined:
            raise VerificationError(f"graph output %{name} is not defined", value=name)
