"""The `slice-weights` pass: the weight slices of each crossbar layer, uniform or adaptive."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcc.backend.datapath import Draws, Statistics, product
from imcc.errors import MappingError
from imcc.ir.graph import Graph
from imcc.ir.mapping import Tiling, WeightMapping
from imcc.passes.base import Pass, PerLayerOption, option
from imcc.passes.calibration import LayerProducts, layer_products
from imcc.passes.context import Context
from imcc.passes.layers import (
    crossbar_layers,
    layer_label,
    matrix_shape,
    per_layer,
    replace_nodes,
    require_target,
    with_attributes,
)
from imcc.passes.tile_crossbar import magnitude_bits, tile_layer
from imcc.plan import LayerPlan, graph_plan

OBJECTIVES = ("slices", "conversions")
"""What adaptive slicing minimises among the slicings within its bounds: the slice count
(RAELLA's rule), or the conversions a layer makes on calibration data, speculation's 1-bit
recoveries included (the Titanium law's converts per MAC, measured)."""

ADAPTIVE = "auto"
"""The per-layer entry that asks for adaptive slicing of that layer."""


def compositions(bits: int, parts: int, widest: int) -> list[tuple[int, ...]]:
    """Return every way to write `bits` as `parts` slice widths of 1..`widest` bits, MSB first,
    widest first slices first ([4, 2, 1] before [1, 2, 4])."""
    if parts == 1:
        return [(bits,)] if 1 <= bits <= widest else []
    out = []
    for first in range(min(widest, bits - parts + 1), 0, -1):
        out += [(first, *rest) for rest in compositions(bits - first, parts - 1, widest)]
    return out


def format_slices(slices: tuple[int, ...]) -> str:
    """Spell weight slices as a per-layer entry: (4, 2, 2) -> `4-2-2` (`parse_slices` reads it)."""
    return "-".join(str(width) for width in slices)


def parse_slices(text: str, where: str) -> tuple[int, ...]:
    """Read a per-layer slice entry like `4-2-2` (MSB first)."""
    try:
        slices = tuple(int(part) for part in text.split("-"))
    except ValueError:
        slices = ()
    if not slices or any(s < 1 for s in slices):
        raise MappingError(
            f"{where}: weight slices '{text}' are not widths like 4-2-2",
            hint=f"give slice widths joined by '-' (MSB first), or '{ADAPTIVE}'",
        )
    return slices


def relative_error(
    plan: LayerPlan,
    products: LayerProducts,
    mapping: WeightMapping,
    seed: int,
    stats: Statistics | None = None,
) -> float:
    """Return a layer's relative RMS output error `||y - y_exact||_2 / ||y_exact||_2` under a
    weight mapping: y the datapath's product of the layer's plan with `mapping` on the
    calibration patches (all groups; an MTJ draws from generators seeded by `seed`), y_exact
    the lossless integer product; `stats` collects what the converters did."""
    candidate = plan.with_mapping(mapping)
    stats = Statistics() if stats is None else stats
    error, norm = 0.0, 0.0
    for group, (x, w) in enumerate(zip(products.patches, products.filters, strict=True)):
        draws = None
        if candidate.converter.is_mtj:  # the calibration positions drawn as one sample
            draws = Draws.per_sample(seed, candidate.name, group, 0, 1)
        y = product(candidate, x, w, group, stats=stats, draws=draws)
        exact = products.exact(group)
        error += float(np.square((y - exact).astype(np.float64)).sum())
        norm += float(np.square(exact.astype(np.float64)).sum())
    return float(np.sqrt(error / max(norm, 1.0)))


@dataclass(frozen=True, slots=True)
class SliceWeights(Pass):
    """Choose the weight slices of each crossbar layer: uniform, per layer, or adaptive (RAELLA).

    `slices=[4,2,2]` gives every layer the same slices (MSB first); `per_layer_slices` one
    entry per crossbar layer, `4-2-2` or `auto`. `adaptive=true` (and `auto` entries) picks
    per layer, offline, the fewest slices (each 1..bits per cell, together exactly the
    encoding's magnitude bits: 8 for offset, 7 for differential and center-offset weights of
    8 bits) whose *layer error* on calibration data stays within `error_budget`. Among the
    slicings of that count that meet the budget the one with the lowest error wins; when no
    slicing meets it, the lowest-error slicing of all is kept (recorded as over budget).
    `last_bitwise=true` gives the last crossbar layer 1-bit slices (as RAELLA does). Without
    slices or adaptive, layers keep their slices. Every changed layer is re-tiled.

    Layer error: the relative RMS error `||y - y_exact||_2 / ||y_exact||_2` of the layer's
    integer outputs over its sampled calibration positions, filters and groups, y the
    bit-accurate datapath (the layer's input streaming, encoding, centers, converter; an MTJ
    draws from a generator seeded per layer) and y_exact the lossless product. Each layer is
    judged on the inputs it gets when the layers before it are exact. Runs after select-adc.

    Speculating layers (`#input<speculate = true>`) recover saturated wide slices exactly, so
    their error hides what saturation costs: re-run 1-bit conversions. `max_failures` bounds
    the share of speculative conversions that fail on calibration data (RAELLA observes 4-10%);
    a slicing must meet both bounds. It does not apply to layers that do not speculate.
    `objective=conversions` keeps, of all the slicings within the bounds, the one whose layer
    makes the fewest conversions on the calibration data, speculation's 1-bit recoveries
    included (fewer slices, then lower error, on ties): a wide-sum layer may then convert less
    with 2 slices that often fail than with 4 that rarely do.

    ```
    // after: slice-weights{adaptive=true error_budget=0.09} on raella
    %y.acc = conv(...) {..., weights = #weights<encoding = "center-offset", slices = [4, 2, 1],
             devices = 2>, ..., tiling = #tiling<..., column_tiles = 1, ...>} : i32[1,16,8,8]
    ```
    """

    name = "slice-weights"
    per_layer_options = (
        PerLayerOption(
            "slices",
            "per_layer_slices",
            format_slices,
            supersedes=("adaptive", "error_budget", "max_failures", "objective"),
        ),
    )
    slices: tuple[int, ...] = option(
        (), "weight slice widths for every layer, MSB first", minimum=1, maximum=16
    )
    per_layer_slices: tuple[str, ...] = option((), "slices per crossbar layer: 4-2-2 or auto")
    adaptive: bool = option(False, "fewest slices within error_budget, per layer")
    error_budget: float = option(
        0.09, "largest relative RMS layer error of adaptive slicing", minimum=0.0
    )
    max_failures: float = option(
        1.0, "largest failing share of speculative conversions", minimum=0.0, maximum=1.0
    )
    objective: str = option(
        "slices",
        "adaptive slicing's aim within the bounds: the fewest slices, or the fewest "
        "conversions (speculation's recoveries included)",
        choices=OBJECTIVES,
    )
    last_bitwise: bool = option(False, "1-bit slices for the last crossbar layer")
    samples: int = option(8, "calibration inputs adaptive slicing measures on", minimum=1)
    positions: int = option(
        1024, "output positions per layer and group (seeded subsample)", minimum=1
    )

    def run(self, graph: Graph, ctx: Context) -> Graph:
        target = require_target(ctx, self.name)
        self._check_options()
        layers = crossbar_layers(graph)
        uniform = ADAPTIVE if self.adaptive else "-".join(str(s) for s in self.slices)
        plans = per_layer(self.per_layer_slices, uniform, len(layers), "per_layer_slices")
        if self.last_bitwise and layers:
            plans[-1] = "bitwise"
        adaptive = [n for n, plan in zip(layers, plans, strict=True) if plan == ADAPTIVE]
        products = layer_products(
            graph, ctx, adaptive, samples=self.samples, positions=self.positions, salt=self.name
        )
        changed = {}
        for index, (node, plan) in enumerate(zip(layers, plans, strict=True)):
            where = layer_label(node, index)
            tiling, mapping = node.attributes.get("tiling"), node.attributes.get("weights")
            if not (isinstance(tiling, Tiling) and isinstance(mapping, WeightMapping)):
                raise MappingError(
                    f"{where} has no crossbar tiling",
                    hint="run tile-crossbar (and encode-weights) first",
                )
            needed = magnitude_bits(mapping.encoding, target.weight_bits)
            record: dict[str, object] = {}
            if not plan:
                continue
            if plan == "bitwise":
                slices = (1,) * needed
            elif plan == ADAPTIVE:
                layer = graph_plan(node, graph, target, before=self.name)
                seed = ctx.draw_seed(self.name, node.outputs[0])  # the same for every candidate
                slices, record = self._adapt(layer, products[node.outputs[0]], seed, ctx, where)
            else:
                slices = parse_slices(plan, where)
            mapping = WeightMapping(mapping.encoding, slices, mapping.devices)
            tiling = tile_layer(
                mapping, matrix_shape(node, graph), target, tiling.rows, tiling.columns, where
            )
            changed[node.outputs[0]] = with_attributes(node, weights=mapping, tiling=tiling)
            ctx.decisions.record(
                self.name, where, slices=list(slices), crossbars=tiling.crossbars, **record
            )
        return replace_nodes(graph, changed)

    def _check_options(self) -> None:
        if self.adaptive and self.slices:
            raise MappingError(
                "slice-weights: give slices or adaptive=true, not both",
                hint="slice-weights{slices=[4,2,2]} or "
                "slice-weights{adaptive=true error_budget=0.09}",
            )
        if self.samples < 1 or self.positions < 1:
            raise MappingError(
                "slice-weights: samples and positions must be at least 1",
                hint="e.g. slice-weights{samples=8 positions=1024}",
            )

    def _adapt(
        self, plan: LayerPlan, products: LayerProducts, seed: int, ctx: Context, where: str
    ) -> tuple[tuple[int, ...], dict[str, object]]:
        """Return the fewest-slice slicing within the error budget and what the search saw."""
        encoding, devices = plan.mapping.encoding, plan.mapping.devices
        needed = magnitude_bits(encoding, plan.weight_bits)
        widest = require_target(ctx, self.name).crossbar.bits_per_cell
        limit = self.max_failures if plan.streaming.speculate else 1.0
        tried, best, within = 0, None, None
        for count in range(-(-needed // widest), needed + 1):
            scored = []
            for slices in compositions(needed, count, widest):
                candidate = WeightMapping(encoding, slices, devices)
                stats = Statistics()
                error = relative_error(plan, products, candidate, seed, stats)
                failures = stats.speculative_failures / max(stats.conversions, 1)
                # over either bound: ranked by how far over, so the fallback is the closest
                excess = max(error - self.error_budget, 0.0) + max(failures - limit, 0.0)
                made = stats.conversions + stats.recoveries
                scored.append((excess, error, failures, slices, made))
                tried += 1
            excess, error, failures, slices, _ = min(scored, key=lambda item: item[:2])
            if best is None or (excess, error) < best[:2]:
                best = (excess, error, failures, slices)
            if self.objective == "slices":
                if excess == 0.0:
                    return slices, {
                        "error": error,
                        "failures": failures,
                        "within_budget": True,
                        "tried": tried,
                    }
                continue
            for item in scored:  # the fewest conversions, then fewer slices, then lower error
                if item[0] == 0.0 and (
                    within is None or (item[4], item[1]) < (within[4], within[1])
                ):
                    within = item
        if within is not None:
            _, error, failures, slices, made = within
            return slices, {
                "error": error,
                "failures": failures,
                "conversions": made,
                "within_budget": True,
                "tried": tried,
            }
        assert best is not None
        ctx.logger.warning(
            "%s: no weight slicing keeps the layer error within %g (and "
            "speculation failures within %g); kept %s (error %.4g)",
            where,
            self.error_budget,
            limit,
            list(best[3]),
            best[1],
        )
        return best[3], {
            "error": best[1],
            "failures": best[2],
            "within_budget": False,
            "tried": tried,
        }

    def search_space(self, graph: Graph, ctx: Context) -> dict[str, list]:
        target = require_target(ctx, self.name)
        encodings = {
            n.attributes["weights"].encoding
            for n in crossbar_layers(graph)
            if isinstance(n.attributes.get("weights"), WeightMapping)
        } or {"offset"}
        needed = max(magnitude_bits(e, target.weight_bits) for e in encodings)
        widest = target.crossbar.bits_per_cell
        counts = range(-(-needed // widest), needed + 1)
        return {
            "slices": [compositions(needed, count, widest)[0] for count in counts],
            "adaptive": [False, True],
            "error_budget": [0.02, 0.05, 0.09, 0.15],
            "max_failures": [0.05, 0.1, 1.0],
            "last_bitwise": [False, True],
        }
