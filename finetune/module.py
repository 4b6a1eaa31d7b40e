"""A torch module built from a mapped program: crossbar layers through the datapath, the rest
as backend/reference.py's rules define them, in torch.

Each `quantize` -> crossbar op -> `dequantize` triple becomes one `CrossbarLayer` (its float
weights from the program's float source where it has them, else the dequantized codes); every
other op is translated by `TORCH_RULES`. The batch dimension is free: ops whose attributes
name the program's batch (reshape, slice, pad) read it from their operand instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from imcc.errors import UserError
from imcc.finetune.layers import ConvGeometry, CrossbarLayer, InputQuantizer, _torch_pads
from imcc.ir.graph import Graph, Node
from imcc.plan import LayerPlan, MatrixShape, plan_layer
from imcc.target import Target

TorchRule = Callable[[Node, list[torch.Tensor]], torch.Tensor]


def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> TorchRule:
    return lambda node, args: fn(args[0], args[1])


def _reshape(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    shape = list(node.attr("shape"))
    return args[0].reshape(args[0].shape[0], *shape[1:]) if shape else args[0].reshape(shape)


def _slice(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    x = args[0]
    index = [
        slice(s, e, k)
        for s, e, k in zip(node.attr("starts"), node.attr("ends"), node.attr("steps"), strict=True)
    ]
    index[0] = slice(None)  # the batch axis: every sample (the program's batch is fixed)
    return x[tuple(index)]


def _pad(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    x, pads, mode = args[0], list(node.attr("pads")), node.attr("mode")
    rank = x.dim()
    if pads[0] or pads[rank]:
        raise UserError("finetune cannot pad the batch axis")
    torch_pads = _torch_pads(tuple(pads[1:rank] + pads[rank + 1 :]))
    if mode == "constant":
        return F.pad(x, torch_pads, value=float(node.attr("value")))
    return F.pad(x, torch_pads, mode="reflect" if mode == "reflect" else "replicate")


def _pool(node: Node, args: list[torch.Tensor], kind: str) -> torch.Tensor:
    x = args[0]
    kernel, strides = node.attr("kernel"), node.attr("strides")
    pads, ceil = node.attr("pads"), bool(node.attr("ceil_mode"))
    if x.dim() != 4:
        raise UserError(f"finetune supports 2-d {node.op} only")
    if kind == "max":
        x = F.pad(x, _torch_pads(pads), value=-float("inf")) if any(pads) else x
        return F.max_pool2d(x, kernel, strides, dilation=node.attr("dilations"), ceil_mode=ceil)
    spatial = len(kernel)
    if any(pads[i] != pads[spatial + i] for i in range(spatial)) or any(
        d != 1 for d in node.attr("dilations")
    ):
        raise UserError("finetune supports avg_pool with symmetric pads and no dilation only")
    return F.avg_pool2d(
        x,
        kernel,
        strides,
        pads[:spatial],
        ceil_mode=ceil,
        count_include_pad=bool(node.attr("count_include_pad")),
    )


def _batch_norm(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    x, scale, bias, mean, var = args
    shape = (1, -1) + (1,) * (x.dim() - 2)
    factor = scale / torch.sqrt(var + node.attr("epsilon"))
    return (x - mean.reshape(shape)) * factor.reshape(shape) + bias.reshape(shape)


def _float_conv(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    x, w, *b = args
    x = F.pad(x, _torch_pads(node.attr("pads")))
    return F.conv2d(
        x,
        w,
        b[0] if b else None,
        node.attr("strides"),
        0,
        node.attr("dilations"),
        node.attr("group"),
    )


def _float_linear(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    x, w, *b = args
    return x @ w + b[0] if b else x @ w


def _transpose(node: Node, args: list[torch.Tensor]) -> torch.Tensor:
    perm = node.attr("perm")
    if perm[0] != 0:
        raise UserError("finetune cannot move the batch axis (transpose)")
    return args[0].permute(*perm)


TORCH_RULES: dict[str, TorchRule] = {
    "relu": lambda n, a: torch.relu(a[0]),
    "sigmoid": lambda n, a: torch.sigmoid(a[0]),
    "tanh": lambda n, a: torch.tanh(a[0]),
    "exp": lambda n, a: torch.exp(a[0]),
    "neg": lambda n, a: -a[0],
    "abs": lambda n, a: torch.abs(a[0]),
    "sqrt": lambda n, a: torch.sqrt(a[0]),
    "leaky_relu": lambda n, a: F.leaky_relu(a[0], n.attr("alpha")),
    "clip": lambda n, a: torch.clamp(a[0], n.attr("min"), n.attr("max")),
    "add": _binary(torch.add),
    "sub": _binary(torch.sub),
    "mul": _binary(torch.mul),
    "div": _binary(torch.div),
    "matmul": _binary(torch.matmul),
    "conv": _float_conv,
    "linear": _float_linear,
    "batch_norm": _batch_norm,
    "max_pool": lambda n, a: _pool(n, a, "max"),
    "avg_pool": lambda n, a: _pool(n, a, "avg"),
    "global_avg_pool": lambda n, a: a[0].mean(dim=tuple(range(2, a[0].dim())), keepdim=True),
    "global_max_pool": lambda n, a: a[0].amax(dim=tuple(range(2, a[0].dim())), keepdim=True),
    "reshape": _reshape,
    "transpose": _transpose,
    "concat": lambda n, a: torch.cat(a, dim=n.attr("axis")),
    "pad": _pad,
    "slice": _slice,
    "softmax": lambda n, a: torch.softmax(a[0], dim=n.attr("axis")),
    "log_softmax": lambda n, a: torch.log_softmax(a[0], dim=n.attr("axis")),
}
"""Torch translations of the reference rules of the ops a fine-tuned model may use."""


def layer_datapath(
    node: Node, target: Target, codes: np.ndarray, lossless: bool = False
) -> LayerPlan:
    """Return the plan of a mapped crossbar op (one group) with weight codes `codes` (the
    op's layout), its converter exact when `lossless`."""
    rows = int(np.prod(codes.shape[1:])) if node.op == "conv" else int(codes.shape[0])
    filters = int(codes.shape[0]) if node.op == "conv" else int(codes.shape[1])
    return plan_layer(node, target, MatrixShape(rows, filters, 1, 0), lossless=lossless)


class MappedNetwork(nn.Module):
    """A mapped program as a torch module (see the module docstring).

    `float_graph` is the program's float source after clean-up (its constants give the
    layers' starting float weights by name); `lossless` makes every converter exact;
    `backward` picks the MTJ straight-through estimator (backend/datapath.py).
    """

    def __init__(
        self,
        program: Graph,
        target: Target,
        float_graph: Graph | None = None,
        lossless: bool = False,
        backward: str = "clamp",
    ) -> None:
        super().__init__()
        if len(program.inputs) != 1:
            raise UserError(
                f"finetune needs a single-input model; @{program.name} has {len(program.inputs)}"
            )
        self.program = program
        self.checkpointing = False  # recompute crossbar layers in the backward (train.py)
        self.layers = nn.ModuleList()
        self._layer_of: dict[str, int] = {}  # crossbar op result -> index in layers
        self._skip: set[str] = set()  # quantize / dequantize results a layer computes
        self._constant_index: dict[str, int] = {}
        users = program.users
        producers = program.producers
        for node in program.nodes:
            if node.op in ("conv", "linear") and "converter" in node.attributes:
                layer = self._crossbar_layer(
                    node, users, producers, target, float_graph, lossless, backward
                )
                self._layer_of[node.outputs[0]] = len(self.layers)
                self.layers.append(layer)
            elif node.op not in TORCH_RULES and node.op not in ("quantize", "dequantize"):
                raise UserError(
                    f"finetune has no torch rule for op '{node.op}' (node "
                    f"{node.name or node.outputs[0]})",
                    hint="finetune models built of conv, linear, pooling, "
                    "elementwise and shape ops",
                )
        for node in program.nodes:
            if node.op in ("quantize", "dequantize") and node.outputs[0] not in self._skip:
                raise UserError(
                    f"finetune: {node.op} {node.outputs[0]} is not part of a crossbar layer",
                    hint="finetune maps quantized crossbar layers",
                )
            if node.outputs[0] in self._layer_of or node.outputs[0] in self._skip:
                continue
            for name in node.inputs:
                data = program.constant_data(name)
                if data is not None and name not in self._constant_index:
                    self._constant_index[name] = len(self._constant_index)
                    self.register_buffer(
                        f"constant_{self._constant_index[name]}",
                        torch.from_numpy(np.array(data, copy=True)),
                    )

    def _crossbar_layer(
        self,
        node: Node,
        users: dict[str, list[Node]],
        producers: dict[str, Node],
        target: Target,
        float_graph: Graph | None,
        lossless: bool,
        backward: str,
    ) -> CrossbarLayer:
        where = node.name or node.outputs[0]
        quantize = producers.get(node.inputs[0])
        after = users.get(node.outputs[0], [])
        if (
            quantize is None
            or quantize.op != "quantize"
            or len(after) != 1
            or after[0].op != "dequantize"
            or len(users.get(quantize.outputs[0], [])) != 1
        ):
            raise UserError(
                f"finetune: crossbar layer {where} is not a quantize / "
                f"{node.op} / dequantize chain",
                hint="map with the quantize pass",
            )
        dequantize = after[0]
        if node.op == "conv" and node.attr("group") != 1:
            raise UserError(f"finetune: grouped convolution {where} is not supported yet")
        if node.op == "conv" and len(node.attr("strides")) != 2:
            raise UserError(f"finetune: {where} is not a 2-d convolution")
        self._skip.update({quantize.outputs[0], dequantize.outputs[0]})
        quantizer = InputQuantizer(
            float(quantize.attr("scale")),
            int(quantize.attr("zero_point")),
            int(quantize.attr("bits")),
            bool(quantize.attr("signed")),
        )
        codes = program_constant(self.program, node.inputs[1], where)
        scales = program_constant(self.program, dequantize.inputs[1], where)
        bias = (
            self.program.constant_data(dequantize.inputs[2]) if len(dequantize.inputs) > 2 else None
        )
        weight = _float_weights(node, codes, scales, quantizer.scale, float_graph)
        geometry = None
        if node.op == "conv":
            geometry = ConvGeometry(
                tuple(node.attr("strides")), tuple(node.attr("pads")), tuple(node.attr("dilations"))
            )
        path = layer_datapath(node, target, codes, lossless)
        layer = CrossbarLayer(where, node.op, weight, bias, quantizer, path, geometry, backward)
        layer.result = dequantize.outputs[0]  # type: ignore[attr-defined]
        layer.source = quantize.inputs[0]  # type: ignore[attr-defined]
        return layer

    def constant(self, name: str) -> torch.Tensor:
        """Return a program constant a non-crossbar op uses, on the module's device."""
        return getattr(self, f"constant_{self._constant_index[name]}")

    def set_mode(self, mode: str) -> None:
        """Run the crossbar layers `mapped` (the datapath), `float` (plain float ops) or
        `surrogate` (exact integer products plus the measured datapath error, layers.py)."""
        for layer in self.layers:
            layer.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, Any] = {self.program.inputs[0].name: x}
        for node in self.program.nodes:
            out = node.outputs[0]
            if out in self._skip:
                continue
            if out in self._layer_of:
                layer = self.layers[self._layer_of[out]]
                source = env[layer.source]
                if self.checkpointing and torch.is_grad_enabled() and layer.mode == "mapped":
                    env[layer.result] = checkpoint(layer, source, use_reentrant=False)
                else:
                    env[layer.result] = layer(source)
                continue
            args = [env[name] if name in env else self.constant(name) for name in node.inputs]
            env[out] = TORCH_RULES[node.op](node, args)
        return env[self.program.outputs[0]]


def program_constant(graph: Graph, name: str, where: str) -> np.ndarray:
    """Return a constant operand's data, or raise naming the layer."""
    data = graph.constant_data(name)
    if data is None:
        raise UserError(f"finetune: {where} needs constant %{name} with its data")
    return data


def _float_weights(
    node: Node, codes: np.ndarray, scales: np.ndarray, input_scale: float, float_graph: Graph | None
) -> np.ndarray:
    """Return a layer's starting float weights: the float source's constant the quantize pass
    made the codes from (`NAME.q` <- `NAME`), else the dequantized codes."""
    if float_graph is not None:
        data = float_graph.constant_data(node.inputs[1].removesuffix(".q"))
        if data is not None and data.shape == codes.shape:
            return data.astype(np.float32)
    shape = [1] * codes.ndim
    shape[0 if node.op == "conv" else 1] = -1
    return (codes * (scales.astype(np.float64) / input_scale).reshape(shape)).astype(np.float32)
