"""The float reference (`ideal`) backend: executes the IR with numpy, the way ONNX defines it."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from imcc.backend import kernels
from imcc.backend.interpreter import Interpreter, Rule
from imcc.errors import InterpreterError, UserError
from imcc.ir.graph import Graph, Node, Value
from imcc.ir.io import require_weights
from imcc.ir.types import TensorType


def _unary(fn):
    def rule(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
        x = args[0]
        return [np.asarray(fn(x)).astype(x.dtype, copy=False)]

    return rule


def _binary(fn):
    def rule(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
        a, b = args
        return [np.asarray(fn(a, b)).astype(a.dtype, copy=False)]

    return rule


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):  # C semantics: truncate toward zero
        quotient = np.floor_divide(a, b)
        inexact = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
        return quotient + inexact
    return a / b


def _clip(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
    x = args[0]
    low, high = node.attr("min"), node.attr("max")
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        low, high = max(low, info.min), min(high, info.max)
    return [np.clip(x, low, high).astype(x.dtype, copy=False)]


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _conv(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
    x, w, *b = args
    return [
        kernels.conv(
            x,
            w,
            b[0] if b else None,
            node.attr("strides"),
            node.attr("pads"),
            node.attr("dilations"),
            node.attr("group"),
        )
    ]


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX MatMul: float32 through `kernels.exact_matmul` (rounded once inside
    `kernels.rounded_once`); integers in their own dtype (numpy's exact integer matmul, no
    2**53 limit)."""
    return kernels.exact_matmul(a, b) if a.dtype == np.float32 else np.matmul(a, b)


def _linear(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
    x, w, *b = args
    y = kernels.exact_matmul(x, w)
    if b:
        y = y + b[0]
    return [y.astype(x.dtype, copy=False)]


def _batch_norm(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
    x, scale, bias, mean, var = args
    shape = (1, -1) + (1,) * (x.ndim - 2)
    factor = scale / np.sqrt(var + np.asarray(node.attr("epsilon"), var.dtype))
    y = (x - mean.reshape(shape)) * factor.reshape(shape) + bias.reshape(shape)
    return [y.astype(x.dtype, copy=False)]


def _global(fn):
    def rule(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
        x = args[0]
        return [fn(x, axis=tuple(range(2, x.ndim)), keepdims=True).astype(x.dtype, copy=False)]

    return rule


def _pad(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
    x, pads, mode = args[0], node.attr("pads"), node.attr("mode")
    rank = x.ndim
    begins, ends = pads[:rank], pads[rank:]
    # negative pads crop
    crop = tuple(
        slice(max(0, -b), x.shape[i] - max(0, -e))
        for i, (b, e) in enumerate(zip(begins, ends, strict=True))
    )
    x = x[crop]
    widths = [(max(0, b), max(0, e)) for b, e in zip(begins, ends, strict=True)]
    if mode == "constant":
        return [
            np.pad(x, widths, mode="constant", constant_values=node.attr("value")).astype(
                x.dtype, copy=False
            )
        ]
    return [np.pad(x, widths, mode="reflect" if mode == "reflect" else "edge")]


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """Return the smallest and largest integer code of a `bits`-wide (un)signed quantizer."""
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def _quantize(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
    low, high = code_range(node.attr("bits"), node.attr("signed"))
    # as onnxruntime's QuantizeLinear: divide in float32, round half to even, saturate
    codes = np.rint(args[0].astype(np.float32) / np.float32(node.attr("scale")))
    codes = codes + node.attr("zero_point")
    return [np.clip(codes, low, high).astype(np.int32)]


def _dequantize(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
    acc, scales, *bias = args
    shape = [1] * acc.ndim
    shape[node.attr("axis")] = -1
    y = acc.astype(np.float32) * scales.reshape(shape)
    if bias:
        y = y + bias[0].reshape(shape)
    return [y.astype(np.float32, copy=False)]


RULES: dict[str, Rule] = {
    "quantize": _quantize,
    "dequantize": _dequantize,
    "relu": _unary(lambda x: np.maximum(x, 0)),
    "sigmoid": _unary(lambda x: 1 / (1 + np.exp(-x))),
    "tanh": _unary(np.tanh),
    "exp": _unary(np.exp),
    "neg": _unary(np.negative),
    "abs": _unary(np.abs),
    "sqrt": _unary(np.sqrt),
    "leaky_relu": lambda n, a: _unary(
        lambda x: np.where(x >= 0, x, x * np.asarray(n.attr("alpha"), x.dtype))
    )(n, a),
    "clip": _clip,
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "div": _binary(_divide),
    "conv": _conv,
    "linear": _linear,
    "matmul": _binary(_matmul),
    "batch_norm": _batch_norm,
    "max_pool": lambda n, a: [
        kernels.max_pool(
            a[0],
            n.attr("kernel"),
            n.attr("strides"),
            n.attr("pads"),
            n.attr("dilations"),
            n.attr("ceil_mode"),
        )
    ],
    "avg_pool": lambda n, a: [
        kernels.avg_pool(
            a[0],
            n.attr("kernel"),
            n.attr("strides"),
            n.attr("pads"),
            n.attr("dilations"),
            n.attr("ceil_mode"),
            n.attr("count_include_pad"),
        )
    ],
    "global_avg_pool": _global(np.mean),
    "global_max_pool": _global(np.max),
    "lrn": lambda n, a: [
        kernels.lrn(a[0], n.attr("size"), n.attr("alpha"), n.attr("beta"), n.attr("bias"))
    ],
    "reshape": lambda n, a: [a[0].reshape(n.attr("shape"))],
    "transpose": lambda n, a: [np.ascontiguousarray(a[0].transpose(n.attr("perm")))],
    "concat": lambda n, a: [np.concatenate(a, axis=n.attr("axis"))],
    "pad": _pad,
    "cast": lambda n, a: [a[0].astype(n.attr("to").numpy)],
    "slice": lambda n, a: [
        np.ascontiguousarray(
            a[0][
                tuple(
                    slice(s, e, k)
                    for s, e, k in zip(
                        n.attr("starts"), n.attr("ends"), n.attr("steps"), strict=True
                    )
                )
            ]
        )
    ],
}
RULES["softmax"] = lambda n, a: [_softmax(a[0], n.attr("axis")).astype(a[0].dtype, copy=False)]
RULES["log_softmax"] = lambda n, a: [
    _log_softmax(a[0], n.attr("axis")).astype(a[0].dtype, copy=False)
]


class ReferenceInterpreter(Interpreter[np.ndarray]):
    """Executes a graph in floating point with numpy; the `ideal` backend."""

    rules = RULES

    def constant(self, name: str, data: np.ndarray | None) -> np.ndarray:
        if data is None:
            raise InterpreterError(f"constant %{name} has no data")
        return data


def evaluate(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
    """Evaluate one node on concrete operands (used by constant folding)."""
    return ReferenceInterpreter().rule_for(node)(node, args)


def run_graph(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a graph on numpy inputs (checked against the input types); return outputs by name."""
    require_weights(graph, f"graph @{graph.name}")
    checked: dict[str, np.ndarray] = {}
    for value in graph.inputs:
        if value.name not in feeds:
            continue  # the interpreter reports it
        array = np.asarray(feeds[value.name])
        if array.shape != value.type.shape:
            raise UserError(
                f"input %{value.name} has shape {list(array.shape)}, the graph expects "
                f"{list(value.type.shape)}",
                hint="import the model with a matching --batch",
            )
        if array.dtype != value.type.dtype.numpy:
            if not np.can_cast(array.dtype, value.type.dtype.numpy, casting="same_kind"):
                raise UserError(
                    f"input %{value.name} is {array.dtype}, expected {value.type.dtype.value}",
                    hint=f"save the array as {value.type.dtype.numpy.name}, or "
                    "one that converts to it without loss of kind",
                )
            array = array.astype(value.type.dtype.numpy)
        checked[value.name] = array
    outputs = ReferenceInterpreter().run(graph, checked)
    for name, array in outputs.items():
        expected = graph.types[name]
        if TensorType.of(np.asarray(array)) != expected:
            raise InterpreterError(
                f"output %{name} came out {TensorType.of(array)}, declared {expected}"
            )
    return outputs


def sample_input(graph: Graph, images: np.ndarray, purpose: str) -> Value:
    """Return the single input a data set feeds, checking that its samples fit it."""
    if len(graph.inputs) != 1:
        raise UserError(
            f"graph @{graph.name} has {len(graph.inputs)} inputs; {purpose} feeds one",
            hint=f"use {purpose} with a single-input model",
        )
    value = graph.inputs[0]
    sample_shape = value.type.shape[1:]
    if tuple(images.shape[1:]) != sample_shape:
        raise UserError(
            f"data samples are {list(images.shape[1:])}, the model's input "
            f"%{value.name} takes {list(sample_shape)} per sample",
            hint="pick a data set of the model's input shape",
        )
    return value


def collect(graph: Graph, images: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Run the graph's single input over samples in chunks of its batch; return the named
    values of all chunks concatenated along the batch axis (the remainder that does not fill a
    whole batch is dropped). The float32 products are rounded once (`kernels.rounded_once`), so
    the values, and the scales and ranges calibrated from them, do not depend on the BLAS's
    thread count."""
    value = sample_input(graph, images, "calibration")
    batch = value.type.shape[0] if value.type.rank else 1
    chunks = len(images) // batch
    if chunks == 0:
        raise UserError(f"{len(images)} samples do not fill one batch of {batch}")
    probe = graph.replace(outputs=tuple(dict.fromkeys(names)))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in probe.outputs}
    for i in range(chunks):
        with np.errstate(over="ignore", invalid="ignore"), kernels.rounded_once():
            # callers check what overflows
            out = run_graph(probe, {value.name: images[i * batch : (i + 1) * batch]})
        for name in probe.outputs:
            parts[name].append(out[name])
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}
