"""The `allocate-samples` pass: MTJ sample counts per layer from a budget (StoX-Net)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcc.backend.simulator import CrossbarInterpreter
from imcc.errors import MappingError
from imcc.ir.graph import Graph, Node
from imcc.ir.mapping import ConverterChoice
from imcc.ir.rebatch import rebatch
from imcc.passes.base import Pass, option
from imcc.passes.calibrate_mtj import mtj_layers
from imcc.passes.context import Context
from imcc.passes.layers import (
    crossbar_layers,
    layer_label,
    replace_nodes,
    require_target,
    with_attributes,
)
from imcc.passes.quantize import calibration_images
from imcc.plan import graph_plan
from imcc.target import Target

SENSITIVITY_FLOOR = 1e-12
"""The smallest sensitivity a layer gets, so that a layer whose measured error did not fall
with more samples still takes part in the allocation."""


@dataclass(frozen=True, slots=True)
class LayerCost:
    """One MTJ layer in the allocation: its legal sample counts, conversions per inference and
    sensitivity (network-output error times samples)."""

    counts: tuple[int, ...]
    conversions: int
    sensitivity: float


def conversions(node: Node, graph: Graph, target: Target) -> int:
    """Return the converter conversions of one inference of a crossbar layer (its plan's
    conversions per output position times the positions; an MTJ's samples not counted)."""
    plan = graph_plan(node, graph, target, before=AllocateSamples.name)
    return plan.conversions_per_position * plan.positions


def allocate(layers: list[LayerCost], budget: float) -> list[int]:
    """Return a sample count per layer that minimises the predicted output error
    `sum(S_l / N_l)` with `sum(C_l * N_l) <= budget * sum(C_l)`, greedily.

    Every layer starts at its fewest samples; the step to a layer's next legal count that buys
    the most error reduction per extra sample draw is taken while it fits the budget. Uniform
    `budget` samples, when legal for every layer, is kept instead if the greedy choice is not
    better."""
    total = budget * sum(layer.conversions for layer in layers)
    counts = [min(layer.counts) for layer in layers]
    spent = sum(layer.conversions * n for layer, n in zip(layers, counts, strict=True))
    while True:
        best, best_ratio = -1, 0.0
        for index, layer in enumerate(layers):
            larger = [n for n in layer.counts if n > counts[index]]
            if not larger:
                continue
            step = min(larger)
            extra = layer.conversions * (step - counts[index])
            if spent + extra > total:
                continue
            gain = layer.sensitivity * (1 / counts[index] - 1 / step)
            if gain / extra > best_ratio:
                best, best_ratio = index, gain / extra
        if best < 0:
            break
        step = min(n for n in layers[best].counts if n > counts[best])
        spent += layers[best].conversions * (step - counts[best])
        counts[best] = step

    def error(chosen: list[int]) -> float:
        return sum(layer.sensitivity / n for layer, n in zip(layers, chosen, strict=True))

    if budget == int(budget) and all(int(budget) in layer.counts for layer in layers):
        uniform = [int(budget)] * len(layers)
        if error(uniform) <= error(counts):
            return uniform
    return counts


def _alone(graph: Graph, keep: str, samples: int) -> Graph:
    """Return the graph with every crossbar layer but `keep` exact (no converter) and `keep`'s
    MTJ drawing `samples` samples."""
    changed = {}
    for node in crossbar_layers(graph):
        if node.outputs[0] == keep:
            choice = node.attr("converter")
            changed[keep] = with_attributes(
                node, converter=ConverterChoice(choice.name, choice.kind, choice.bits, samples)
            )
        elif "converter" in node.attributes:
            changed[node.outputs[0]] = node.replace(
                attributes={k: v for k, v in node.attributes.items() if k != "converter"}
            )
    return replace_nodes(graph, changed)


@dataclass(frozen=True, slots=True)
class AllocateSamples(Pass):
    """Assign MTJ sample counts per layer within a budget, by each layer's measured sensitivity.

    StoX-Net's inhomogeneous sampling: layers whose MTJ noise hurts the output most get more
    samples, the others fewer, at no more sample draws than uniform sampling.

    Budget: the mean samples per conversion, weighted by each layer's conversions per
    inference `C_l`, so `sum(C_l * N_l) <= budget * sum(C_l)`: the sample draws (and so the
    MTJ, reset and counter energy) never exceed those of uniform `budget` samples.

    Sensitivity: on `samples` calibration inputs, the network output is computed with one
    layer's MTJs and every other layer exact, at the layer's fewest and most legal samples,
    and compared with the exact output (mean squared error over the outputs, relative to their
    variance). Fitted as `E_l(N) = b_l + S_l / N` (the counter's variance falls as 1/N; `b_l`
    is what more samples do not remove, e.g. clamping), `S_l` is the layer's sensitivity:
    2 network runs per layer on a few inputs (every other layer takes the exact fast path):
    about half a minute for ResNet-20's 20 layers on 8 inputs.

    Allocation (`allocate`): greedy on the predicted error `sum(S_l / N_l)` among the
    converter's legal sample counts, never exceeding the budget. Run after calibrate-mtj (the
    sensitivity depends on the normalisation); layers with other converters are left alone.

    ```
    // before: all layers samples = 4;  allocate-samples{budget=4}
    // after:  layer 0 samples = 16, layers 1-18 samples = 4, layer 19 samples = 2, ...
    ```
    """

    name = "allocate-samples"
    budget: float = option(
        4.0, "mean MTJ samples per conversion, weighted by conversions", minimum=1.0, maximum=4096.0
    )
    samples: int = option(8, "calibration inputs the sensitivity is measured on", minimum=1)

    def run(self, graph: Graph, ctx: Context) -> Graph:
        target = require_target(ctx, self.name)
        chosen = mtj_layers(graph)
        if not chosen:
            return graph
        layers = []
        for index, node in chosen:
            counts = tuple(sorted(target.converter(node.attr("converter").name).samples))
            layers.append((index, node, counts, conversions(node, graph, target)))
        fewest = sum(c * counts[0] for _, _, counts, c in layers)
        if fewest > self.budget * sum(c for *_, c in layers):
            least = fewest / sum(c for *_, c in layers)
            raise MappingError(
                f"allocate-samples: budget {self.budget} is below the fewest "
                f"samples the MTJ layers can take ({least:.3g} per conversion)",
                hint=f"give budget >= {least:.3g}",
            )
        sensitivity = self._sensitivities(graph, ctx, target, layers)
        costs = [
            LayerCost(counts, c, s)
            for (_, _, counts, c), s in zip(layers, sensitivity, strict=True)
        ]
        allocation = allocate(costs, self.budget)
        changed = {}
        for (index, node, _, count), cost, samples in zip(layers, costs, allocation, strict=True):
            choice = node.attr("converter")
            changed[node.outputs[0]] = with_attributes(
                node, converter=ConverterChoice(choice.name, choice.kind, choice.bits, samples)
            )
            ctx.decisions.record(
                self.name,
                layer_label(node, index),
                sensitivity=cost.sensitivity,
                conversions=count,
                samples=samples,
            )
        return replace_nodes(graph, changed)

    def _sensitivities(
        self,
        graph: Graph,
        ctx: Context,
        target: Target,
        layers: list[tuple[int, Node, tuple[int, ...], int]],
    ) -> list[float]:
        """Return each layer's S_l (see the class docstring)."""
        images = calibration_images(graph, ctx, self.samples)
        value = graph.inputs[0]
        batched = rebatch(graph, len(images))
        output = batched.outputs[0]
        exact = (
            CrossbarInterpreter(target, 0, lossless=True)
            .run(batched, {value.name: images})[output]
            .astype(np.float64)
        )
        spread = max(float(exact.var()), 1e-30)
        out = []
        for _, node, counts, _ in layers:
            errors = []
            for samples in (counts[0], counts[-1]):
                machine = CrossbarInterpreter(
                    target, ctx.draw_seed(self.name, node.outputs[0], samples)
                )
                got = machine.run(_alone(batched, node.outputs[0], samples), {value.name: images})[
                    output
                ]
                errors.append(float(np.mean((got - exact) ** 2)) / spread)
            if counts[0] == counts[-1]:
                out.append(max(errors[0] * counts[0], SENSITIVITY_FLOOR))
                continue
            slope = (errors[0] - errors[1]) / (1 / counts[0] - 1 / counts[-1])
            out.append(max(slope, SENSITIVITY_FLOOR))
        return out

    def search_space(self, graph: Graph, ctx: Context) -> dict[str, list]:
        target = require_target(ctx, self.name)
        counts = sorted(
            {
                n
                for _, node in mtj_layers(graph)
                for n in target.converter(node.attr("converter").name).samples
            }
        )
        return {"budget": [float(n) for n in counts]} if counts else {}
