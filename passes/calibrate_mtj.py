"""The `calibrate-mtj` pass: per-column normalisation of the partial sums an MTJ converts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcc.ir.graph import Graph, Node
from imcc.ir.mapping import ConverterChoice
from imcc.passes.base import Pass, option
from imcc.passes.calibration import layers_column_sums
from imcc.passes.context import Context
from imcc.passes.layers import (
    crossbar_layers,
    layer_label,
    replace_nodes,
    with_attributes,
)
from imcc.target import ConverterKind

MIN_SPREAD = 0.5
"""The smallest partial-sum spread a column is normalised for: integer sums that never vary
(e.g. a weight slice that is zero throughout) would otherwise get an unbounded scale."""


def mtj_layers(graph: Graph) -> list[tuple[int, Node]]:
    """Return the crossbar layers (with their index) whose converter is an MTJ."""
    out = []
    for index, node in enumerate(crossbar_layers(graph)):
        choice = node.attributes.get("converter")
        if isinstance(choice, ConverterChoice) and choice.kind == ConverterKind.MTJ.value:
            out.append((index, node))
    return out


@dataclass(frozen=True, slots=True)
class CalibrateMtj(Pass):
    """Normalise each MTJ column's partial sums from calibration data (ps_scale, ps_offset).

    The aim: a layer's typical partial sums use the MTJ's sensitive range.

    StoX-Net's converter switches with `sigmoid(s * x)` of `x = clamp(a * PS + b, -1, 1)`.
    Normalising over the read's full range leaves `x` near 0 (real sums are far smaller than
    the range), so every sample is a coin flip. This pass measures, per physical column
    (weight slice, device, filter), the mean and spread of its partial sums over the
    calibration inputs, row chunks and input slices, and sets
    `ps_scale = 1 / (sigmas * std)` and `ps_offset = -mean * ps_scale`: sums within `sigmas`
    standard deviations of the mean map into [-1, 1], the rest clamp. A spread below
    `MIN_SPREAD` counts as `MIN_SPREAD`. Layers with other converters are left alone; rerun
    after any pass that changes a layer's slices, encoding or input streaming.

    ```
    // before: converter = #converter<name = "mtj", kind = "mtj", bits = 1, samples = 4>
    // after:  ..., ps_scale = [0.021, 0.018, ...], ps_offset = [-0.1, 0.03, ...], ...
    ```
    """

    name = "calibrate-mtj"
    priced = False  # sets ranges only: nothing the cost model reads
    sigmas: float = option(
        2.0, "standard deviations of a column's sums mapped onto [-1, 1]", above=0.0
    )
    samples: int = option(16, "calibration inputs measured", minimum=1)
    positions: int = option(
        1024, "output positions kept per layer and group (subsampled)", minimum=1
    )

    def run(self, graph: Graph, ctx: Context) -> Graph:
        measured_layers = layers_column_sums(
            graph, ctx, mtj_layers(graph), self.name, samples=self.samples, positions=self.positions
        )
        changed = {}
        for index, node, measured in measured_layers:
            sums = measured.sums.reshape(-1, measured.sums.shape[-1]).astype(np.float64)
            mean = sums.mean(axis=0)
            spread = np.maximum(sums.std(axis=0), MIN_SPREAD)
            scale = _rounded(1.0 / (self.sigmas * spread))
            offset = _rounded(-mean * scale)
            x = sums * scale + offset
            clamped = float(np.mean(np.abs(x) > 1.0))
            changed[node.outputs[0]] = with_attributes(
                node, ps_scale=tuple(scale.tolist()), ps_offset=tuple(offset.tolist())
            )
            ctx.decisions.record(
                self.name,
                layer_label(node, index),
                columns=len(scale),
                mean_scale=float(scale.mean()),
                clamped=clamped,
            )
        return replace_nodes(graph, changed) if changed else graph

    def search_space(self, graph: Graph, ctx: Context) -> dict[str, list]:
        return {"sigmas": [1.0, 1.5, 2.0, 3.0]} if mtj_layers(graph) else {}


def _rounded(values: np.ndarray) -> np.ndarray:
    """Round to 6 significant digits, so that the printed IR stays short and exact."""
    return np.array([float(f"{v:.6g}") for v in values], np.float64)
