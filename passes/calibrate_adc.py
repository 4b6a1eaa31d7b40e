"""The `calibrate-adc` pass: the range of a full-scale ADC's references, from calibration data."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from imcc.ir.graph import Graph, Node
from imcc.ir.mapping import ConverterChoice
from imcc.passes.base import Pass, option
from imcc.passes.calibration import layers_column_sums
from imcc.passes.context import Context
from imcc.passes.layers import (
    crossbar_layers,
    layer_label,
    matrix_shape,
    replace_nodes,
    require_target,
    with_attributes,
)
from imcc.plan import adc_levels, plan_layer
from imcc.target import Target

ADC_KINDS = ("sar", "flash")
"""The converter kinds whose references span a range (a sense amplifier has one threshold)."""


def calibrated_converters(target: Target) -> tuple[str, ...]:
    """Return the names of the target's ADCs whose references follow the `full-scale` range
    rule: the converters calibrate-adc sets."""
    return tuple(
        c.name
        for c in target.converters
        if c.kind.value in ADC_KINDS and c.range_rule == "full-scale"
    )


def calibrated_layers(graph: Graph, target: Target) -> list[tuple[int, Node]]:
    """Return the crossbar layers (with their index) whose converter is one of the target's
    `calibrated_converters`."""
    names = calibrated_converters(target)
    return [
        (index, node)
        for index, node in enumerate(crossbar_layers(graph))
        if isinstance(choice := node.attributes.get("converter"), ConverterChoice)
        and choice.name in names
    ]


@dataclass(frozen=True, slots=True)
class CalibrateAdc(Pass):
    """Set each full-scale ADC's range to the partial sums its layer produces (full_scale).

    Uncalibrated, a `full-scale` ADC spans the largest sum a read could produce (`rows x
    largest input slice x largest weight slice`); on real data the sums stay far below it (a
    128-row read of 4-bit cells can reach 1,920 but rarely passes a few hundred), so most of
    the codes go unused and the small sums round to zero. DNN+NeuroSim, the simulator XPert
    uses, quantizes each partial-sum tensor over its own minimum..maximum
    (Inference_pytorch/utee/wage_quantizer.py, LinearQuantizeOut): a range set by the data.
    This pass is its deployable equivalent: per layer, the `quantile` of the magnitudes of the
    partial sums every column produces on the calibration inputs (all row chunks, input slices
    and weight slices, exactly as the datapath forms them) becomes the sum the top code stands
    for, `full_scale`; the ADC's step is then `ceil(full_scale / highest code)`, one integer
    for the layer (the reference voltage of its converters), and larger sums saturate. Layers
    with other converters are left alone; rerun after any pass that changes a layer's slices,
    encoding or input streaming (select-adc and share-columns may follow: the range does not
    depend on the converter's bits).

    ```
    // before: converter = #converter<name = "flash", kind = "flash", bits = 6, samples = 1>
    // after:  ..., full_scale = 412, ...
    ```
    """

    name = "calibrate-adc"
    priced = False  # sets ranges only: nothing the cost model reads
    quantile: float = option(
        1.0,
        "share of the calibration partial sums within the range (1: the largest, as "
        "NeuroSim's min..max)",
        above=0.0,
        maximum=1.0,
    )
    samples: int = option(16, "calibration inputs measured", minimum=1)
    positions: int = option(
        1024, "output positions kept per layer and group (subsampled)", minimum=1
    )

    def run(self, graph: Graph, ctx: Context) -> Graph:
        target = require_target(ctx, self.name)
        chosen = calibrated_layers(graph, target)
        measured_layers = layers_column_sums(
            graph, ctx, chosen, self.name, samples=self.samples, positions=self.positions
        )
        changed = {}
        for index, node, measured in measured_layers:
            magnitude = np.abs(measured.sums).ravel()
            plan = plan_layer(node, target, matrix_shape(node, graph), before=self.name)
            span = max(abs(v) for v in plan.sum_range)
            largest = float(np.quantile(magnitude, self.quantile)) if magnitude.size else 0.0
            full_scale = int(min(span, max(1, math.ceil(largest))))
            changed[node.outputs[0]] = with_attributes(node, full_scale=full_scale)
            _, _, previous = plan.adc
            _, _, step = adc_levels(replace(plan.converter, full_scale=full_scale), *plan.sum_range)
            ctx.decisions.record(
                self.name,
                layer_label(node, index),
                full_scale=full_scale,
                span=int(span),
                step=int(step),
                previous_step=int(previous),
                clipped=float(np.mean(magnitude > full_scale)) if magnitude.size else 0.0,
            )
        return replace_nodes(graph, changed) if changed else graph
