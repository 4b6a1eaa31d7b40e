"""The state shared by the ONNX op converters: values, constants, aliases and the builder."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper

from imcc.errors import FrontendError
from imcc.ir.graph import GraphBuilder
from imcc.ir.ops import ShapeError
from imcc.ir.types import DType, TensorType

ONNX_DTYPES: dict[int, DType] = {
    onnx.TensorProto.BOOL: DType.BOOL,
    onnx.TensorProto.INT8: DType.I8,
    onnx.TensorProto.INT16: DType.I16,
    onnx.TensorProto.INT32: DType.I32,
    onnx.TensorProto.INT64: DType.I64,
    onnx.TensorProto.UINT8: DType.U8,
    onnx.TensorProto.UINT16: DType.U16,
    onnx.TensorProto.UINT32: DType.U32,
    onnx.TensorProto.UINT64: DType.U64,
    onnx.TensorProto.FLOAT16: DType.F16,
    onnx.TensorProto.FLOAT: DType.F32,
    onnx.TensorProto.DOUBLE: DType.F64,
}


def dtype_of(elem_type: int, what: str) -> DType:
    """Return the IR element type of an ONNX element type, or raise FrontendError."""
    try:
        return ONNX_DTYPES[elem_type]
    except KeyError:
        name = onnx.TensorProto.DataType.Name(elem_type) if elem_type else "UNDEFINED"
        raise FrontendError(
            f"{what}: element type {name} is not supported",
            hint="imcc handles bool, integer and float16/32/64 tensors",
        ) from None


class NodeError(Exception):
    """A converter's complaint about one node; the importer adds the node's name."""


class Unsupported(NodeError):
    """A node uses a feature of its op that imcc does not translate."""


class Context:
    """Translates ONNX values to IR values while converters append IR nodes."""

    def __init__(
        self,
        builder: GraphBuilder,
        constants: Mapping[str, np.ndarray],
        opset: int,
        used: Mapping[str, int],
    ) -> None:
        self.builder = builder
        self.constants = dict(constants)
        self.opset = opset
        self.used = used
        """How often each ONNX value is read by a node or a graph output."""
        self.alias: dict[str, str] = {}
        self.node: onnx.NodeProto = onnx.NodeProto()
        self.node_name = ""

    # --- values ---------------------------------------------------------------------------

    def value(self, onnx_name: str) -> str:
        """Return the IR value of an ONNX value, materialising constants on first use."""
        name = self.alias.get(onnx_name, onnx_name)
        if name in self.builder.types:
            return name
        if name in self.constants:
            array = self.constants[name]
            try:
                DType.from_numpy(array.dtype)
            except KeyError:
                raise NodeError(
                    f"constant '{name}' has unsupported element type {array.dtype}"
                ) from None
            return self.builder.add_constant(array, name, exact=True)
        raise NodeError(f"value '{onnx_name}' is not defined before use")

    def input(self, index: int) -> str | None:
        """Return the IR value of the node's input `index`, or None when it is absent."""
        if index >= len(self.node.input) or not self.node.input[index]:
            return None
        return self.value(self.node.input[index])

    def const(self, index: int) -> np.ndarray | None:
        """Return the constant array of the node's input `index`, or None if not constant."""
        if index >= len(self.node.input) or not self.node.input[index]:
            return None
        name = self.alias.get(self.node.input[index], self.node.input[index])
        return self.constants.get(name)

    def require_const(self, index: int, what: str) -> np.ndarray | None:
        """Return a constant input (None if absent), or raise when it is computed at run time."""
        if index >= len(self.node.input) or not self.node.input[index]:
            return None
        array = self.const(index)
        if array is None:
            raise Unsupported(f"input '{what}' must be a constant (it is computed at run time)")
        return array

    def type(self, ir_name: str) -> TensorType:
        """Return the IR type of an IR value."""
        return self.builder.types[ir_name]

    def has_output(self, index: int) -> bool:
        """Say whether the node's output `index` exists and is read by anyone."""
        out = self.node.output
        return index < len(out) and bool(out[index]) and self.used.get(out[index], 0) > 0

    # --- attributes -----------------------------------------------------------------------

    def attrs(self) -> dict[str, Any]:
        """Return the node's attributes as Python values (strings decoded)."""
        out: dict[str, Any] = {}
        for attr in self.node.attribute:
            value = helper.get_attribute_value(attr)
            if isinstance(value, bytes):
                value = value.decode()
            elif isinstance(value, list) and value and isinstance(value[0], bytes):
                value = [v.decode() for v in value]
            out[attr.name] = value
        return out

    # --- emitting -------------------------------------------------------------------------

    def constant(self, array: np.ndarray, hint: str) -> str:
        """Add a new constant derived from the model and return its IR name."""
        return self.builder.add_constant(np.ascontiguousarray(array), hint)

    def emit(
        self,
        op: str,
        inputs: Sequence[str],
        attributes: Mapping[str, Any] | None = None,
        *,
        output: int | None = None,
        hint: str | None = None,
    ) -> str:
        """Append one IR node; `output` names its result after that ONNX output of the node."""
        outputs = None
        if output is not None:
            onnx_out = self.node.output[output]
            outputs = [self.alias.get(onnx_out, onnx_out)]
        try:
            (result,) = self.builder.add_node(
                op,
                list(inputs),
                attributes,
                name=self.node_name,
                outputs=outputs,
                hint=hint or f"{self.node_name}.{op}",
            )
        except ShapeError as exc:
            raise NodeError(f"cannot translate to '{op}': {exc}") from None
        return result

    def bind(self, index: int, ir_name: str) -> None:
        """Make the node's output `index` another name of an existing IR value."""
        self.alias[self.node.output[index]] = ir_name


Converter = Callable[[Context], None]
CONVERTERS: dict[str, Converter] = {}
"""The converter of each supported ONNX op type (filled by `onnx_ops` and `onnx_shape_ops`)."""


def converter(*op_types: str) -> Callable[[Converter], Converter]:
    """Register a converter for one or more ONNX op types."""

    def register(fn: Converter) -> Converter:
        for op_type in op_types:
            CONVERTERS[op_type] = fn
        return fn

    return register


def first_input(ctx: Context) -> str:
    """Return the IR value of the node's first input, which must be present."""
    x = ctx.input(0)
    if x is None:
        raise NodeError("the first input is missing")
    return x
