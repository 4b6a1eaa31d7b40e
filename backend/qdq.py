"""Export a program as an ONNX QDQ model that onnxruntime runs: the quantized-network oracle.

`export_qdq` writes the float ops back as their ONNX ops and every quantized crossbar layer
(`quantize -> conv/linear on i32 -> dequantize`, as the `quantize` pass builds it) as the QDQ
pattern onnxruntime understands:

```
x -> QuantizeLinear(s_x, zp) [-> Clip(low, high)] -> DequantizeLinear(s_x, zp) ─┐
w codes (int8 initializer) -> DequantizeLinear(s_w[c], axis 0 | 1) ─────────────┴─> Conv | MatMul
  -> Add(bias) (in float, as `dequantize` adds it)
```

Rules:

- Opset 21 (per-channel DequantizeLinear, int16/uint16 codes). Activation codes are uint8 /
  int8 up to 8 bits and uint16 / int16 up to 16 bits; a narrower range than the type's (e.g.
  4 bits) is a `Clip` on the codes (8-bit types) or on int32 codes between two `Cast`s (16-bit
  types, which ORT's Clip lacks), so the codes are exactly `clamp(round_half_even(x / s_x) +
  zp)` of the `quantize` op. The codes keep the name of the `quantize` result, so a caller can
  list them in `extra_outputs` and compare them with the reference interpreter's codes.
- Weight codes become an int8 (int16 above 8 bits) initializer with per-output-channel scales
  `s_w[c]`: axis 0 of the Conv weight `[M, C/group, *K]`, axis 1 of the MatMul weight `[K, N]`.
- The scales are the program's: `s_x = float32(scale)` as the reference `quantize` divides by
  it, and `s_w[c]` is recovered from the dequantize scales `S[c] = float32(s_x * s_w[c])`.
  The pass's float64 `s_w[c]` is not part of the program (only `S[c]` is) and cannot be
  recovered bit for bit, so the exporter picks the float32 `s_w[c]` whose product with `s_x`,
  rounded to float32, is `S[c]` where such a float32 exists (in 80-99% of channels, depending
  on s_x's mantissa: float32(s_x * s) skips values when s_x's mantissa is the larger), else the
  nearest product (one ulp off); the result is within one ulp of float32(the pass's s_w[c]).
- Mapping attributes (tiling, converters, placement, ...) are ignored: the QDQ model is the
  lossless-converter semantics of the program.

Equivalence: codes are exact wherever the float inputs of a `quantize` agree bit for bit (the
graph input, and values computed the same way); after a quantized layer onnxruntime computes
`sum(float32(xq * s_x) * float32(wq * s_w))` in float32 where the reference computes the exact
integer sum times `S[c]`, so values differ by float32 rounding (~1e-7 relative) and a later
`quantize` may round a value lying within that distance of a .5 boundary the other way (and
that one-code difference moves later layers). Run onnxruntime with basic graph optimisations:
the extended level fuses `DQ -> MatMul -> Add -> Q` into a QGemm that rounds the float bias
to int32 and requantizes its own way (tests/test_qdq_oracle.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from imcc.backend.reference import code_range
from imcc.errors import UserError
from imcc.ir.graph import Graph, Node
from imcc.ir.io import require_weights

OPSET = 21
"""The default-domain opset of exported models: per-channel DequantizeLinear, 16-bit codes."""

_SIMPLE = {
    "relu": "Relu",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "exp": "Exp",
    "neg": "Neg",
    "abs": "Abs",
    "sqrt": "Sqrt",
    "add": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "div": "Div",
    "matmul": "MatMul",
    "global_avg_pool": "GlobalAveragePool",
    "global_max_pool": "GlobalMaxPool",
    "batch_norm": "BatchNormalization",
    "concat": "Concat",
    "transpose": "Transpose",
    "softmax": "Softmax",
    "log_softmax": "LogSoftmax",
    "lrn": "LRN",
    "leaky_relu": "LeakyRelu",
}
"""IR ops that are one ONNX op with the same operands, and the attributes they carry over."""
_CARRIED = {"epsilon", "axis", "perm", "size", "alpha", "beta", "bias"}


def _tensor_type(dtype: np.dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _code_dtype(bits: int, signed: bool) -> np.dtype:
    """Return the ONNX code type of a `bits`-wide quantizer: 8-bit up to 8 bits, else 16-bit."""
    wide = bits > 8
    return np.dtype(
        (np.int16 if wide else np.int8) if signed else (np.uint16 if wide else np.uint8)
    )


def weight_scales(scales: np.ndarray, input_scale: np.float32) -> np.ndarray:
    """Return float32 `s_w[c]` with float32(s_x * s_w[c]) == scales[c] where one exists (else
    the nearest product), searching the float32 neighbours of scales[c] / s_x."""
    target = scales.astype(np.float64)
    guess = (target / np.float64(input_scale)).astype(np.float32)
    candidates, up, down = [guess], guess, guess
    for _ in range(3):
        up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(-np.inf))
        candidates += [up, down]
    best, best_error = guess, np.full(guess.shape, np.inf)
    for candidate in candidates:
        product = np.float64(input_scale) * candidate.astype(np.float64)  # exact in float64
        missed = product.astype(np.float32).astype(np.float64) != target
        error = missed + np.abs(product - target) / np.maximum(np.abs(target), 1e-300)
        better = error < best_error
        best, best_error = np.where(better, candidate, best), np.where(better, error, best_error)
    return best.astype(np.float32)


class _Exporter:
    """Builds the ONNX graph node by node; IR value names are kept for float values."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.taken = set(graph.value_names())
        self.float_of: dict[str, str] = {}  # i32 IR value -> its dequantized float ONNX name
        self.scale_of: dict[str, np.float32] = {}  # quantize result -> s_x

    def fresh(self, hint: str) -> str:
        name, index = hint, 0
        while name in self.taken:
            index += 1
            name = f"{hint}::{index}"
        self.taken.add(name)
        return name

    def constant(self, array: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.initializers[name] = numpy_helper.from_array(np.asarray(array), name)
        return name

    def operand(self, name: str) -> str:
        """Return the ONNX name of an IR operand, making an initializer of a constant."""
        if name in self.float_of:
            return self.float_of[name]
        data = self.graph.constant_data(name)
        if data is not None and name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(np.asarray(data), name)
        return name

    def emit(self, op: str, inputs: Sequence[str], outputs: Sequence[str], **attrs) -> None:
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), **attrs))

    def run(self) -> None:
        for node in self.graph.nodes:
            if node.op == "quantize":
                self.quantize(node)
            elif node.op in ("conv", "linear") and node.inputs[0] in self.scale_of:
                self.quantized_layer(node)
            elif node.op == "dequantize":
                self.dequantize(node)
            else:
                self.float_op(node)

    def quantize(self, node: Node) -> None:
        scale = np.float32(node.attr("scale"))
        bits, signed, zero = node.attr("bits"), node.attr("signed"), node.attr("zero_point")
        dtype = _code_dtype(bits, signed)
        info = np.iinfo(dtype)
        if not info.min <= zero <= info.max:
            raise UserError(
                f"quantize %{node.outputs[0]}: zero point {zero} does not fit {dtype.name} codes"
            )
        low, high = code_range(bits, signed)
        out = node.outputs[0]
        s = self.constant(scale, f"{out}.s_x")
        zp = self.constant(np.array(zero, dtype), f"{out}.zp")
        full = (low, high) == (info.min, info.max)
        codes = out if full else self.fresh(f"{out}.saturated")
        self.emit("QuantizeLinear", [self.operand(node.inputs[0]), s, zp], [codes])
        if not full and dtype.itemsize == 1:
            self.emit(
                "Clip",
                [
                    codes,
                    self.constant(np.array(low, dtype), f"{out}.low"),
                    self.constant(np.array(high, dtype), f"{out}.high"),
                ],
                [out],
            )
        elif not full:  # onnxruntime's Clip has no 16-bit kernel
            wide = self.fresh(f"{out}.i32")
            clipped = self.fresh(f"{out}.clipped")
            self.emit("Cast", [codes], [wide], to=TensorProto.INT32)
            self.emit(
                "Clip",
                [
                    wide,
                    self.constant(np.array(low, np.int32), f"{out}.low"),
                    self.constant(np.array(high, np.int32), f"{out}.high"),
                ],
                [clipped],
            )
            self.emit("Cast", [clipped], [out], to=_tensor_type(dtype))
        dequantized = self.fresh(f"{out}.dq")
        self.emit("DequantizeLinear", [out, s, zp], [dequantized])
        self.float_of[out] = dequantized
        self.scale_of[out] = scale

    def quantized_layer(self, node: Node) -> None:
        out = node.outputs[0]
        users = self.graph.users.get(out, [])
        if len(users) != 1 or users[0].op != "dequantize" or out in self.graph.outputs:
            raise UserError(
                f"{node.op} %{out} on integer codes is not followed by exactly one dequantize",
                hint="export the program as the quantize pass leaves it",
            )
        codes = self.graph.constant_data(node.inputs[1])
        if codes is None or len(node.inputs) > 2:
            raise UserError(
                f"{node.op} %{out}: the weight codes must be a constant and the "
                "bias must sit on the dequantize"
            )
        scales = self.graph.constant_data(users[0].inputs[1])
        if scales is None:
            raise UserError(f"dequantize of %{out}: the scales must be a constant")
        axis = 0 if node.op == "conv" else 1
        top = int(np.abs(codes).max(initial=0))
        wtype = np.int8 if top <= 127 else np.int16
        w = self.constant(codes.astype(wtype), f"{node.inputs[1]}.codes")
        s_w = self.constant(
            weight_scales(scales, self.scale_of[node.inputs[0]]), f"{node.inputs[1]}.s_w"
        )
        zp = self.constant(np.zeros(codes.shape[axis], wtype), f"{node.inputs[1]}.zp")
        weights = self.fresh(f"{node.inputs[1]}.dq")
        self.emit("DequantizeLinear", [w, s_w, zp], [weights], axis=axis)
        result = self.fresh(f"{out}.float")
        x = self.operand(node.inputs[0])
        if node.op == "conv":
            self.emit("Conv", [x, weights], [result], **_window(node), group=node.attr("group"))
        else:
            self.emit("MatMul", [x, weights], [result])
        self.float_of[out] = result

    def dequantize(self, node: Node) -> None:
        acc, out = node.inputs[0], node.outputs[0]
        if (
            acc not in self.float_of
            or self.graph.producers.get(acc) is None
            or self.graph.producers[acc].op not in ("conv", "linear")
        ):
            raise UserError(
                f"dequantize %{out} does not follow a quantized conv or linear",
                hint="export the program as the quantize pass leaves it",
            )
        if len(node.inputs) < 3:
            self.emit("Identity", [self.float_of[acc]], [out])
            return
        bias = self.graph.constant_data(node.inputs[2])
        if bias is None:
            raise UserError(f"dequantize %{out}: the bias must be a constant")
        rank, axis = self.graph.types[out].rank, node.attr("axis")
        shape = [-1] + [1] * (rank - 1 - axis)
        b = self.constant(bias.astype(np.float32).reshape(shape), f"{node.inputs[2]}.b")
        self.emit("Add", [self.float_of[acc], b], [out])

    def float_op(self, node: Node) -> None:
        inputs = [self.operand(i) for i in node.inputs]
        outputs, op = list(node.outputs), node.op
        if op in _SIMPLE:
            attrs = {k: v for k, v in node.attributes.items() if k in _CARRIED}
            self.emit(_SIMPLE[op], inputs, outputs, **attrs)
        elif op == "conv":
            self.emit("Conv", inputs, outputs, **_window(node), group=node.attr("group"))
        elif op == "linear":
            if len(inputs) == 2:
                self.emit("MatMul", inputs, outputs)
            else:
                product = self.fresh(f"{outputs[0]}.matmul")
                self.emit("MatMul", inputs[:2], [product])
                self.emit("Add", [product, inputs[2]], outputs)
        elif op in ("max_pool", "avg_pool"):
            attrs = {
                **_window(node),
                "kernel_shape": list(node.attr("kernel")),
                "ceil_mode": int(node.attr("ceil_mode")),
            }
            if op == "avg_pool":
                attrs["count_include_pad"] = int(node.attr("count_include_pad"))
            self.emit("MaxPool" if op == "max_pool" else "AveragePool", inputs, outputs, **attrs)
        elif op == "reshape":
            shape = np.asarray(node.attr("shape"), np.int64)
            self.emit(
                "Reshape",
                [inputs[0], self.constant(shape, f"{outputs[0]}.shape")],
                outputs,
                allowzero=int(0 in shape),
            )
        elif op == "pad":
            dtype = self.graph.types[node.inputs[0]].dtype.numpy
            pads = self.constant(np.asarray(node.attr("pads"), np.int64), f"{outputs[0]}.pads")
            extra = [self.constant(np.array(node.attr("value"), dtype), f"{outputs[0]}.value")]
            self.emit("Pad", [inputs[0], pads, *extra], outputs, mode=node.attr("mode"))
        elif op == "clip":
            dtype = self.graph.types[node.inputs[0]].dtype.numpy
            bounds = [
                ("" if math.isinf(v) else self.constant(np.array(v, dtype), f"{outputs[0]}.{k}"))
                for k, v in (("min", node.attr("min")), ("max", node.attr("max")))
            ]
            self.emit("Clip", [inputs[0], *bounds], outputs)
        elif op == "cast":
            self.emit("Cast", inputs, outputs, to=_tensor_type(node.attr("to").numpy))
        elif op == "slice":  # the IR's starts / ends / steps cover every axis
            ranges = [node.attr(k) for k in ("starts", "ends", "steps")]
            operands = [
                self.constant(np.asarray(v, np.int64), f"{outputs[0]}.{k}")
                for k, v in zip(("starts", "ends", "steps"), ranges, strict=True)
            ]
            axes = self.constant(np.arange(len(ranges[0]), dtype=np.int64), f"{outputs[0]}.axes")
            self.emit("Slice", [inputs[0], operands[0], operands[1], axes, operands[2]], outputs)
        else:
            raise UserError(f"export-qdq: op {op} (%{outputs[0]}) has no ONNX translation")


def _window(node: Node) -> dict[str, list[int]]:
    return {
        "strides": list(node.attr("strides")),
        "pads": list(node.attr("pads")),
        "dilations": list(node.attr("dilations")),
    }


def export_qdq(graph: Graph, extra_outputs: Sequence[str] = ()) -> onnx.ModelProto:
    """Return an ONNX model (opset 21) computing `graph` with quantized layers as QDQ patterns.

    `extra_outputs` names more IR values to expose as graph outputs, e.g. the results of
    `quantize` ops, which the model holds as integer codes (see the module docstring).
    """
    require_weights(graph, "export-qdq")
    exporter = _Exporter(graph)
    exporter.run()
    types: dict[str, int] = {}
    for node in exporter.nodes:  # the element types of the ONNX values the IR names
        for name in node.output:
            if name in graph.types and name not in exporter.float_of:
                types[name] = _tensor_type(graph.types[name].dtype.numpy)
    for name, quantize in exporter.scale_of.items():
        del quantize
        producer = graph.producers[name]
        types[name] = _tensor_type(_code_dtype(producer.attr("bits"), producer.attr("signed")))

    def info(name: str) -> onnx.ValueInfoProto:
        onnx_name = name if name in types else exporter.float_of.get(name, name)
        elem = types.get(name, _tensor_type(graph.types[name].dtype.numpy))
        if name not in types and name in exporter.float_of:
            elem = TensorProto.FLOAT
        return helper.make_tensor_value_info(onnx_name, elem, list(graph.types[name].shape))

    inputs = [
        helper.make_tensor_value_info(v.name, _tensor_type(v.type.dtype.numpy), list(v.type.shape))
        for v in graph.inputs
    ]
    outputs = [info(name) for name in dict.fromkeys([*graph.outputs, *extra_outputs])]
    body = helper.make_graph(
        exporter.nodes, graph.name, inputs, outputs, list(exporter.initializers.values())
    )
    model = helper.make_model(
        body, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="imcc export-qdq"
    )
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model
