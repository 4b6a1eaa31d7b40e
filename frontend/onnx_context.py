"""The state shared by the ONNX op converters: values, constants, aliases and the builder."""

from __future__ import annotations

import math
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


MAX_ELEMENTS = 2**31
"""The most elements one tensor of an imported model may hold (8 GiB of float32). The reference
interpreter, the calibration in `quantize` and the simulator hold whole tensors in memory, and
no crossbar-mapped network comes near this (ResNet-50 at batch 64 peaks at 51 M); a larger
tensor comes from a malformed dimension, a huge padding or a broadcast gone wrong, and refusing
it at import names the node instead of failing in a pass with a MemoryError."""

COMPUTING_OPS = frozenset(
    {
        "conv",
        "linear",
        "matmul",
        "batch_norm",
        "max_pool",
        "avg_pool",
        "global_avg_pool",
        "global_max_pool",
        "lrn",
        "softmax",
        "log_softmax",
    }
)
"""IR ops whose operands and results must not be empty. Crossbar layers are quantized and
tiled (an empty weight has no scale, an empty input no range), and a reduction over nothing
is NaN. Data movement and element-wise ops keep empty tensors empty, which is exact (the ONNX
node tests reshape a [0,3,4] tensor), so an empty value is refused only where it is used."""


def too_large(shape: Sequence[int]) -> str | None:
    """Say why a tensor of this shape is too large to compile, else None."""
    if math.prod(shape) > MAX_ELEMENTS:
        return f"has {math.prod(shape):,} elements, more than imcc handles (2^31)"
    return None


def non_finite(array: np.ndarray) -> str | None:
    """Describe the NaN and infinite entries of a float array, or return None if all finite."""
    if array.dtype.kind not in "fc" or array.size == 0:
        return None
    finite = np.isfinite(array)
    if finite.all():
        return None
    nans = int(np.isnan(array).sum())
    return f"holds {nans} NaN and {int(array.size - finite.sum()) - nans} infinite values"


class NodeError(Exception):
    """A converter's complaint about one node; the importer adds the node's name."""


def scalar(array: np.ndarray, what: str, *, infinite: bool = False) -> float:
    """Return the one number of a constant input (Clip's bounds, Pad's fill value); it must
    hold one element and be a number (infinite only where `infinite` allows)."""
    if array.size != 1:
        raise NodeError(f"input '{what}' must hold one number, got shape {list(array.shape)}")
    try:
        value = float(array.reshape(-1)[0])
    except (TypeError, ValueError):
        raise NodeError(f"input '{what}' is not a number ({array.dtype})") from None
    if math.isnan(value) or (math.isinf(value) and not infinite):
        raise NodeError(f"input '{what}' is {value}; imcc needs a finite number")
    return value


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
            self._check_constant(array, f"constant '{name}'")
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
            self._check_float(attr.name, value)
            out[attr.name] = value
        return out

    def _check_float(self, name: str, value: Any) -> None:
        """Refuse NaN and infinite float attributes (an epsilon, an alpha): the IR keeps finite
        numbers only. Clip's bounds of opset < 11 may be infinite: that means no bound."""
        values = value if isinstance(value, list) else [value]
        for v in values:
            if not isinstance(v, float) or math.isfinite(v):
                continue
            if self.node.op_type == "Clip" and name in ("min", "max") and not math.isnan(v):
                continue
            raise NodeError(f"attribute '{name}' is {v}; imcc needs a finite number")

    # --- emitting -------------------------------------------------------------------------

    def constant(self, array: np.ndarray, hint: str) -> str:
        """Add a new constant derived from the model and return its IR name."""
        self._check_constant(array, f"constant '{hint}' (derived from the model)")
        return self.builder.add_constant(np.ascontiguousarray(array), hint)

    @staticmethod
    def _check_constant(array: np.ndarray, what: str) -> None:
        """Refuse weights that are not finite: every later pass would silently compute NaN
        (quantize's scales, the crossbar codes), so the number a user sees would be wrong."""
        problem = non_finite(array)
        if problem:
            raise NodeError(f"{what} {problem}")

    def check_results(self, values_from: int, nodes_from: int) -> None:
        """Refuse what this node added to the IR: values larger than MAX_ELEMENTS, and empty
        operands or results of the COMPUTING_OPS."""
        types = self.builder.types
        for ir_name in list(types)[values_from:]:
            problem = too_large(types[ir_name].shape)
            if problem:
                raise NodeError(f"'{ir_name}' of type {types[ir_name]} {problem}")
        for node in self.builder.nodes[nodes_from:]:
            if node.op not in COMPUTING_OPS:
                continue
            for ir_name in (*node.inputs, *node.outputs):
                if 0 in types[ir_name].shape:
                    raise NodeError(
                        f"'{ir_name}' of type {types[ir_name]} has no elements (a zero-size "
                        f"dimension) and is an operand of '{node.op}', which needs data"
                    )

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
