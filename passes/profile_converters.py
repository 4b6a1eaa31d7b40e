"""The `profile-converters` pass: what each crossbar layer's converters do on calibration data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcc.backend.datapath import Statistics
from imcc.backend.reference import sample_input
from imcc.backend.simulator import CrossbarInterpreter
from imcc.errors import MappingError, UserError
from imcc.ir.graph import Graph
from imcc.ir.io import require_weights
from imcc.ir.mapping import ConverterProfile
from imcc.ir.rebatch import rebatch
from imcc.passes.base import Pass, option
from imcc.passes.context import Context
from imcc.passes.layers import (
    crossbar_layers,
    layer_label,
    replace_nodes,
    require_target,
    with_attributes,
)
from imcc.passes.quantize import calibration_images
from imcc.plan import require_mapped
from imcc.target import Target

DIGITS = 6
"""Decimals the measured shares keep, so that printed profiles stay short and stable."""


def converter_profile(stats: Statistics, samples: int) -> ConverterProfile:
    """Turn one layer's simulator counts into its profile: saturated share of conversions,
    failed share of speculative conversions, 1-bit recovery conversions per speculative one."""
    total = stats.conversions
    if not total:
        return ConverterProfile(samples, 0.0, 0.0, 0.0)
    return ConverterProfile(
        samples,
        round(stats.saturated / total, DIGITS),
        round(stats.speculative_failures / total, DIGITS),
        round(stats.recoveries / total, DIGITS),
    )


def simulate_layers(
    graph: Graph, target: Target, images: np.ndarray, seed: int
) -> tuple[dict[str, Statistics], int]:
    """Run the mapped graph on `images` through the bit-accurate crossbar simulator and return
    each crossbar layer's converter counts (keyed by its result) and the inputs simulated.

    All images run as one batch when the graph's leading axis is a batch (`rebatch`), else in
    chunks of the graph's own batch (a remainder that does not fill one is dropped)."""
    value = sample_input(graph, images, "profile-converters")
    layers = tuple(node.outputs[0] for node in crossbar_layers(graph))
    machine = CrossbarInterpreter(target, seed)
    try:
        runs = [(rebatch(graph, len(images)), images)]
    except UserError:
        batch = value.type.shape[0] if value.type.rank else 1
        runs = [(graph, images[i : i + batch]) for i in range(0, len(images) - batch + 1, batch)]
    if not runs:
        raise MappingError(
            f"{len(images)} calibration samples do not fill one batch",
            hint="give more calibration samples (--calib) or a larger samples=",
        )
    for probe, part in runs:
        machine.run(probe.replace(outputs=layers), {value.name: part})
    counts = {name: machine.layers[name].stats for name in layers if name in machine.layers}
    return counts, sum(len(part) for _, part in runs)


@dataclass(frozen=True, slots=True)
class ProfileConverters(Pass):
    """Measure on calibration data how often each crossbar layer's converters saturate and how
    many speculative conversions fail, and record it as the layer's `profile`.

    Runs after every mapping decision that changes what the converters see (assign-input-
    precision, quantize, tile-crossbar / encode-weights / slice-weights, select-adc,
    share-columns); `place` does not matter to it. It simulates the mapped graph bit-accurately
    (`CrossbarInterpreter`, converters drawn from a generator seeded by the context) on the first
    `samples` calibration inputs, whole network at once, so each layer sees the inputs the
    mapped layers before it produce (their errors included), and sets on every crossbar layer
    `profile = #profile<samples, saturation, speculation_failures, recoveries>`: the inputs
    simulated; the share of conversions that clipped at the converter's range (of a speculative
    layer: of its wide-slice conversions); the share of speculative conversions that hit the
    ADC's min / max code and were re-run (0 without speculation); and the 1-bit recovery
    conversions per speculative conversion (a failed s-bit slice re-runs as s conversions).
    Shares keep 6 decimals. The cost model prices a speculative layer's recoveries from this
    profile, so a speculative mapping needs this pass before `imcc cost`.

    Speed: only `samples` inputs are simulated (16 by default; fewer profile faster, more give
    steadier rates). A layer whose converter is lossless over its whole partial-sum range takes
    the simulator's exact fast path and profiles as all zeros.

    ```
    // before (RAELLA, speculative 3-3-2 inputs)
    %acc = linear(%xq, %w) {..., input = #input<bits = 8, slices = [3, 3, 2], signed = false,
           speculate = true>, ..., converter = #converter<name = "adc7", ...>} : i32[1,300]
    // after: profile-converters{samples=16}
    %acc = linear(%xq, %w) {..., profile = #profile<samples = 16, saturation = 0.021,
           speculation_failures = 0.034, recoveries = 0.087>} : i32[1,300]
    ```
    """

    name = "profile-converters"
    samples: int = option(16, "calibration inputs simulated (the first N)", minimum=1)

    def run(self, graph: Graph, ctx: Context) -> Graph:
        target = require_target(ctx, self.name)
        layers = crossbar_layers(graph)
        if not layers:
            return graph
        for index, node in enumerate(layers):
            require_mapped(node, layer_label(node, index), before=self.name)
        require_weights(graph, self.name)
        images = calibration_images(graph, ctx, self.samples)[: self.samples]
        counts, simulated = simulate_layers(graph, target, images, ctx.draw_seed(self.name))
        changed = {}
        for index, node in enumerate(layers):
            stats = counts.get(node.outputs[0], Statistics())
            profile = converter_profile(stats, simulated)
            changed[node.outputs[0]] = with_attributes(node, profile=profile)
            ctx.decisions.record(
                self.name,
                layer_label(node, index),
                conversions=stats.conversions,
                saturation_pct=round(100 * profile.saturation, 3),
                failure_pct=round(100 * profile.speculation_failures, 3),
                recoveries=profile.recoveries,
            )
        return replace_nodes(graph, changed)
