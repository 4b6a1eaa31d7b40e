"""A crossbar layer as a torch module: input quantization, the mapped datapath, dequantization.

The quantize pass rewrites every crossbar layer into `quantize` (per-tensor input scale),
`conv` / `linear` on integer codes (the crossbar op), and `dequantize` (per-channel scale
`s_x * s_w[c]`, then the float bias). `CrossbarLayer` runs the three as one unit with trainable
float weights, bias and (MTJ) per-column normalisation:

- the input is quantized as backend/reference.py's `quantize` does (float32 division, round
  half to even, saturate), with the clamp STE (gradient `1 / s_x` inside the code range);
- the weights are quantized per output channel as passes/quantize.py's `quantize_weights`
  does (float64 `max|w| / (2^(B-1) - 1)`, round, clip), STE through the rounding, so the scale
  follows the weights as a re-compile of the exported model recomputes it;
- the integer product runs through the crossbar datapath (backend/datapath.py
  `crossbar_product`, over the layer's plan; a convolution as its im2col patches, rows ordered
  (kernel tap, channel) as backend/kernels.py orders them), or, in `float` mode, the plain
  float conv / linear: what the quantize pass measures input ranges on;
- the result is dequantized as backend/reference.py does (`acc * float32(s_x * s_w) + bias`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imcc.backend.datapath import crossbar_product
from imcc.backend.kernels import tap_windows
from imcc.backend.reference import code_range
from imcc.errors import MappingError
from imcc.ir.ops.nn import window_output_shape
from imcc.plan import LayerPlan


@dataclass(frozen=True)
class InputQuantizer:
    """The per-tensor input quantization of a crossbar layer (the `quantize` op's attributes)."""

    scale: float
    zero_point: int
    bits: int
    signed: bool


@dataclass(frozen=True)
class ConvGeometry:
    """A convolution's strides, pads (begins then ends) and dilations; None for a linear."""

    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]


def quantize_weight_codes(
    w: torch.Tensor, axis: int, bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return float64 weight codes with the STE (gradient of `w / scale`) and the per-channel
    scales [channels] (float64, no gradient), as passes/quantize.py's `quantize_weights`."""
    w64 = w.to(torch.float64)
    reduce = tuple(i for i in range(w.dim()) if i != axis)
    top = w64.detach().abs().amax(dim=reduce)
    levels = 2 ** (bits - 1) - 1
    scales = torch.where(top > 0, top / levels, torch.ones_like(top))
    shape = [1] * w.dim()
    shape[axis] = -1
    ratio = w64 / scales.reshape(shape)
    codes = torch.clamp(torch.round(ratio.detach()), -levels, levels)
    return ratio + (codes - ratio).detach(), scales


class CrossbarLayer(nn.Module):
    """One quantize / crossbar op / dequantize triple with trainable weights, bias and MTJ
    normalisation (see the module docstring)."""

    def __init__(
        self,
        name: str,
        op: str,
        weight: np.ndarray,
        bias: np.ndarray | None,
        quantizer: InputQuantizer,
        path: LayerPlan,
        geometry: ConvGeometry | None,
        backward: str = "clamp",
    ) -> None:
        super().__init__()
        self.name, self.op, self.path, self.geometry = name, op, path, geometry
        self.quantizer, self.backward = quantizer, backward
        self.filter_axis = 0 if op == "conv" else 1
        self.weight = nn.Parameter(torch.tensor(weight, dtype=torch.float32))
        self.bias = None if bias is None else nn.Parameter(torch.tensor(bias, dtype=torch.float32))
        self.log_scale: nn.Parameter | None = None
        self.offset: nn.Parameter | None = None
        if path.converter.is_mtj:  # the program's calibrated normalisation, else the full range
            scale, offset = (v.astype(np.float64) for v in path.normalisation(0))
            self.log_scale = nn.Parameter(torch.tensor(np.log(scale), dtype=torch.float32))
            self.offset = nn.Parameter(torch.tensor(offset, dtype=torch.float32))
        # "mapped"; "float": the plain float op, as quantize calibrates on; "surrogate": the
        # exact integer product plus the measured datapath error (fast training)
        self.mode = "mapped"
        self.exact = False  # shift-and-add in float64 (bit-exact checks)
        # surrogate mode: the datapath's error per channel (mean, spread) relative to the RMS
        self.surrogate_error: tuple[torch.Tensor, torch.Tensor] | None = None
        self.surrogate_strength = 1.0  # the share of the measured error applied
        self.measuring = False  # mapped mode: measure the error for the surrogate as it runs
        # float mode: the inputs seen (recalibration); None: not recorded (a teacher)
        self.observed: list[np.ndarray] | None = []

    def normalisation(self) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """Return the MTJ's per-column scale and offset (None for other converters)."""
        if self.log_scale is None or self.offset is None:
            return None, None
        return torch.exp(self.log_scale), self.offset

    def weight_codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the per-channel weight codes (STE) and scales, as a compile would set them,
        each held within what the layer's slices store (a center-offset filter's codes
        within reach of its center, `LayerPlan.code_range`): training moves the weights
        after the mapping chose its slices and centers; straight-through at the limits, and a
        re-compile of the exported model chooses them anew."""
        codes, scales = quantize_weight_codes(self.weight, self.filter_axis, self.path.weight_bits)
        low, high = (torch.from_numpy(v).to(torch.float64) for v in self.path.code_range())
        shape = [1] * codes.dim()
        shape[self.filter_axis] = -1
        held = torch.clamp(codes.detach(), low.reshape(shape), high.reshape(shape))
        return codes + (held - codes.detach()), scales

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "float":
            if self.observed is not None:
                self.observed.append(x.detach().cpu().to(torch.float32).numpy().ravel())
            return self._product(x, self.weight, float_op=True) + self._bias_shape()
        codes = self._input_codes(x)
        w_codes, w_scales = self.weight_codes()
        dtype = torch.float64 if self.exact else torch.float32
        if self.mode == "surrogate":
            acc = self._product(codes.to(dtype), w_codes.to(dtype), float_op=True)
            if self.surrogate_error is not None:
                bias, spread = self.surrogate_error
                shape = self._channel_shape(acc)
                acc = acc + _rms(acc, self.op) * self.surrogate_strength * (
                    bias.reshape(shape) + spread.reshape(shape) * torch.randn_like(acc)
                )
        else:
            acc = self._product(codes.to(dtype), w_codes.to(dtype), float_op=False)
            if self.measuring:
                self._measure_error(codes, w_codes, acc)
        scales = (self.quantizer.scale * w_scales).to(torch.float32)
        return acc.to(torch.float32) * scales.reshape(self._channel_shape(acc)) + self._bias_shape()

    def _input_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Return the input codes (clamp STE) as the quantize op computes them."""
        q = self.quantizer
        low, high = code_range(q.bits, q.signed)
        step = torch.tensor(q.scale, dtype=torch.float32, device=x.device)
        ratio = x.to(torch.float32) / step + q.zero_point
        codes = torch.clamp(torch.round(ratio.detach()), low, high)
        return torch.clamp(ratio, low, high) + (codes - torch.clamp(ratio, low, high)).detach()

    def _measure_error(
        self, codes: torch.Tensor, w_codes: torch.Tensor, mapped: torch.Tensor
    ) -> None:
        """Record the mapped product's error against the exact one on these input codes for
        the surrogate forward: per output channel, its mean and spread over positions and
        images, each relative to the exact product's RMS (`_rms`)."""
        with torch.no_grad():
            exact = self._product(
                codes.detach().to(torch.float32), w_codes.detach().to(torch.float32), float_op=True
            )
            error = mapped.detach().to(torch.float32) - exact
            rms = _rms(exact, self.op)
            dims = _positions(error, self.op)
            self.surrogate_error = (
                (error.mean(dim=dims) / rms.reshape(-1)),
                (error.std(dim=dims) / rms.reshape(-1)),
            )

    def _channel_shape(self, acc: torch.Tensor) -> list[int]:
        return _channel_shape(acc, self.op)

    def _bias_shape(self) -> torch.Tensor | float:
        if self.bias is None:
            return 0.0
        if self.op == "conv":
            return self.bias.reshape(1, -1, 1, 1)
        return self.bias

    def _product(self, x: torch.Tensor, w: torch.Tensor, float_op: bool) -> torch.Tensor:
        if self.op == "linear":
            flat = x.reshape(-1, x.shape[-1])
            if float_op:
                out = flat @ w
            else:
                scale, offset = self.normalisation()
                out = crossbar_product(
                    flat, w, self.path, 0, scale, offset, self.backward, integral=True
                )
            return out.reshape(*x.shape[:-1], w.shape[1])
        g = self.geometry
        assert g is not None
        if float_op:
            spatial = len(g.strides)
            if any(g.pads[i] != g.pads[spatial + i] for i in range(spatial)):
                x = F.pad(x, _torch_pads(g.pads))
                return F.conv2d(x, w, stride=g.strides, dilation=g.dilations)
            return F.conv2d(x, w, stride=g.strides, padding=g.pads[:spatial], dilation=g.dilations)
        scale, offset = self.normalisation()
        return _crossbar_conv(x, w, self.path, g, scale, offset, self.backward)

    def learned_normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """Return the MTJ's learned ps_scale / ps_offset as the IR attributes hold them."""
        scale, offset = self.normalisation()
        if scale is None or offset is None:
            return None
        return (
            tuple(float(v) for v in scale.detach().cpu().double().numpy()),
            tuple(float(v) for v in offset.detach().cpu().double().numpy()),
        )

    def float_weight(self) -> np.ndarray:
        """Return the trained float weights (the float graph's layout)."""
        return self.weight.detach().cpu().numpy().astype(np.float32)

    def float_bias(self) -> np.ndarray | None:
        """Return the trained float bias, if the layer has one."""
        return None if self.bias is None else self.bias.detach().cpu().numpy().astype(np.float32)


def _channel_shape(acc: torch.Tensor, op: str) -> list[int]:
    """Return the shape that broadcasts a per-output-channel vector over a product."""
    return [1, -1] + [1] * (acc.dim() - 2) if op == "conv" else [1] * (acc.dim() - 1) + [-1]


def _positions(acc: torch.Tensor, op: str) -> list[int]:
    """Return the axes of a product other than its output channels."""
    channel = 1 if op == "conv" else acc.dim() - 1
    return [d for d in range(acc.dim()) if d != channel]


def _rms(acc: torch.Tensor, op: str) -> torch.Tensor:
    """Return a product's RMS per output channel (at least the layer's median, so that an idle
    channel does not make relative errors unbounded), shaped to broadcast over `acc`. The
    surrogate's error is this times the measured relative error, with the gradient through
    it: calibration scales the MTJ normalisation with the sums, so the error follows the
    signal; a fixed error would let every step find that larger products beat it."""
    rms = acc.pow(2).mean(dim=_positions(acc, op)).add(1e-12).sqrt()
    rms = torch.maximum(rms, rms.detach().median())
    return rms.reshape(_channel_shape(acc, op))


def _torch_pads(pads: tuple[int, ...]) -> tuple[int, ...]:
    """Return ONNX pads (begins, then ends) as F.pad wants them (last axis first)."""
    spatial = len(pads) // 2
    out: list[int] = []
    for axis in reversed(range(spatial)):
        out += [pads[axis], pads[spatial + axis]]
    return tuple(out)


class _Patches(torch.autograd.Function):
    """The im2col patches of x[B, C, H, W] in the crossbar's row order (kernel tap, channel),
    [B * L, T * C], as backend/kernels.py's im2col makes them (the input padded once, channels
    last, one strided copy per tap: unfold's (channel, tap) order would need a second copy to
    permute); the backward adds each tap's gradient back into the padded input."""

    @staticmethod
    def forward(ctx, x, kernel, geometry):
        padded = F.pad(x, _torch_pads(geometry.pads)).permute(0, 2, 3, 1).contiguous()
        batch, channels = padded.shape[0], padded.shape[-1]
        out = _output_shape(x, kernel, geometry)
        windows = [
            (slice(None), *window)
            for window in tap_windows(kernel, geometry.strides, geometry.dilations, out)
        ]
        patches = x.new_empty((batch, *out, len(windows), channels))
        for t, window in enumerate(windows):
            patches[:, :, :, t] = padded[window]
        ctx.geometry, ctx.shape, ctx.windows = geometry, padded.shape, windows
        return patches.view(batch * out[0] * out[1], len(windows) * channels)

    @staticmethod
    def backward(ctx, grad):
        batch, height, width, channels = ctx.shape
        g = grad.view(batch, -1, len(ctx.windows), channels)
        padded = grad.new_zeros(ctx.shape)
        for t, window in enumerate(ctx.windows):
            target = padded[window]
            target += g[:, :, t].reshape(target.shape)
        pads = ctx.geometry.pads
        spatial = len(pads) // 2
        rows = slice(pads[0], height - pads[spatial])
        cols = slice(pads[1], width - pads[spatial + 1])
        return padded[:, rows, cols].permute(0, 3, 1, 2).contiguous(), None, None


def _output_shape(
    x: torch.Tensor, kernel: tuple[int, int], geometry: ConvGeometry
) -> tuple[int, ...]:
    """Return a convolution's output height and width (the IR's sliding-window rule)."""
    return window_output_shape(
        tuple(x.shape[2:]), kernel, geometry.strides, geometry.pads, geometry.dilations, False
    )


def _crossbar_conv(
    x: torch.Tensor,
    w: torch.Tensor,
    plan: LayerPlan,
    geometry: ConvGeometry,
    scale: torch.Tensor | None,
    offset: torch.Tensor | None,
    backward: str,
) -> torch.Tensor:
    """Return the 2-d convolution (one group) of integer codes x[B, C, H, W] with w[M, C, kh,
    kw] through the crossbar datapath: the im2col patches [B * L, K] (`_Patches`), rows
    ordered (kernel tap, channel) as backend/kernels.py's im2col orders them, times the
    filters [K, M]. The codes are exact integers (`CrossbarLayer._input_codes`,
    `quantize_weight_codes`), so the datapath does not round them again."""
    if x.dim() != 4:
        raise MappingError(
            "finetune maps 2-d convolutions only",
            hint="1-d and 3-d convolutions are not supported by finetune yet",
        )
    batch = x.shape[0]
    filters, channels, kh, kw = w.shape
    patches = _Patches.apply(x, (kh, kw), geometry)
    kernel = w.permute(2, 3, 1, 0).reshape(kh * kw * channels, filters)
    out = crossbar_product(patches, kernel, plan, 0, scale, offset, backward, integral=True)
    return out.reshape(batch, *_output_shape(x, (kh, kw), geometry), filters).permute(0, 3, 1, 2)
