"""The `encode-weights` pass: how crossbar layers store signed weights, and RAELLA's centers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcc.backend.datapath import chunk_products
from imcc.errors import MappingError
from imcc.ir.graph import Graph, Node
from imcc.ir.mapping import ENCODINGS, Tiling, WeightMapping
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
from imcc.passes.tile_crossbar import default_slices, magnitude_bits, tile_layer
from imcc.plan import LayerPlan, graph_plan
from imcc.target import Target


def supported_schemes(target: Target) -> list[str]:
    """Return the weight encodings a target can store and correct digitally: offset always;
    differential on a device pair; center-offset on a pair with a center_offset unit."""
    schemes = ["offset"]
    if target.crossbar.devices_per_slice == 2:
        schemes.append("differential")
        if target.center_offset is not None:
            schemes.append("center-offset")
    return schemes


def tiled_plan(node: Node, graph: Graph, target: Target) -> LayerPlan:
    """Return the plan of a layer as tiled, for its row chunks (encode-weights runs before
    select-adc: the plan takes LOSSLESS converters, the converter is not read)."""
    return graph_plan(node, graph, target, lossless=True, before=EncodeWeights.name)


def mean_abs_partial_sum(sums: np.ndarray, inputs: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Return per filter the mean |A - c X| over positions and row chunks."""
    if not len(inputs):
        return np.zeros(sums.shape[1])
    return np.abs(sums - inputs[:, None] * centers[None, :]).mean(axis=0)


def best_centers(
    sums: np.ndarray, inputs: np.ndarray, w: np.ndarray, weight_bits: int
) -> np.ndarray:
    """Return per filter the integer center minimising the mean |column partial sum|.

    With center c the partial sum of a row chunk is `A - c X` (A the chunk's product, X its
    input sum), so the objective is `sum_m |A_m - c X_m| = sum_m |X_m| |A_m / X_m - c|` (chunks
    with X_m = 0 add a constant): a weighted median of the ratios `A_m / X_m` with weights
    `|X_m|` minimises it over the reals. The objective is convex and piecewise linear in c, so
    the best integer is the floor or the ceiling of that median, and the best feasible integer
    is the better of the two clipped to `[max(w) - L, min(w) + L]`, L = 2^(b-1) - 1, the
    centers that keep every offset |w - c| within the magnitude bits of a differential weight.
    Ties go to the center nearer 0; a filter with no informative chunk keeps its rounded
    median weight (the smallest stored conductance)."""
    limit = 2 ** (weight_bits - 1) - 1
    low, high = w.max(axis=0) - limit, w.min(axis=0) + limit
    weights = np.abs(inputs)
    informative = weights > 0
    total = weights.sum()
    if total == 0:
        return np.clip(np.rint(np.median(w, axis=0)), low, high).astype(np.int64)
    ratios = np.where(informative[:, None], sums, 0.0) / np.where(informative, inputs, 1.0)[:, None]
    order = np.argsort(ratios, axis=0, kind="stable")
    cumulative = np.cumsum(weights[order], axis=0)
    index = np.argmax(cumulative >= total / 2, axis=0)  # first ratio past half the weight
    median = np.take_along_axis(ratios, order, axis=0)[index, np.arange(w.shape[1])]
    candidates = np.stack(
        [np.clip(np.floor(median), low, high), np.clip(np.ceil(median), low, high)]
    )
    costs = np.stack([mean_abs_partial_sum(sums, inputs, c) for c in candidates])
    nearer = np.abs(candidates[0]) <= np.abs(candidates[1])
    pick = np.where(
        np.isclose(costs[0], costs[1]), np.where(nearer, 0, 1), np.argmin(costs, axis=0)
    )
    return candidates[pick, np.arange(w.shape[1])].astype(np.int64)


def _without_centers(node: Node) -> Node:
    attributes = {k: v for k, v in node.attributes.items() if k != "centers"}
    return node.replace(attributes=attributes)


@dataclass(frozen=True, slots=True)
class EncodeWeights(Pass):
    """Choose how each crossbar layer stores its signed weights, and RAELLA's per-filter centers.

    Schemes: `offset` stores `w + 2^(b-1)` on one device per slice and subtracts
    `2^(b-1) * sum(x)` digitally; `differential` stores `max(w, 0)` and `max(-w, 0)` on a device
    pair; `center-offset` (RAELLA) stores the offset `w - c_n` from a per-filter center on the
    pair and adds `c_n * sum(x)` digitally. Devices follow the target (`devices_per_slice`, as
    tile-crossbar does); differential and center-offset need a pair, center-offset also the
    target's center_offset unit. Empty `scheme` takes the last the target supports of offset,
    differential, center-offset; `per_layer_scheme` gives one per crossbar layer.

    Centers: per filter, the integer c minimising the mean |partial sum| of the crossbar's row
    chunks (the layer plan's: each row tile read `active rows` at a time) on calibration
    data (a weighted median, see `best_centers`), clipped so that |w - c| <= 2^(b-1) - 1: the
    offsets fit the same slices as differential weights. Calibration positions are a seeded
    subsample, so centers are deterministic. Slices that no longer cover the scheme's
    magnitude bits (e.g. 7-bit slices for offset) become whole cells; the layer is re-tiled.
    Runs after quantize, assign-input-precision and tile-crossbar; records scheme and mean
    |partial sum| before (c = 0) and after per layer.

    ```
    // after: encode-weights{scheme=center-offset} on raella (filters 0 and 1 centered at 3, -1)
    %y.acc = conv(...) {..., weights = #weights<encoding = "center-offset", slices = [4, 4],
             devices = 2>, centers = [3, -1], tiling = #tiling<...>} : i32[1,2,8,8]
    ```
    """

    name = "encode-weights"
    per_layer_options = (PerLayerOption("scheme", "per_layer_scheme"),)
    scheme: str = option(
        "",
        "offset, differential or center-offset (empty: the target's best)",
        choices=("", *ENCODINGS),
    )
    per_layer_scheme: tuple[str, ...] = option((), "encoding per crossbar layer", choices=ENCODINGS)
    samples: int = option(16, "calibration inputs the centers are chosen on", minimum=1)
    positions: int = option(
        2048, "output positions per layer and group (seeded subsample)", minimum=1
    )

    def run(self, graph: Graph, ctx: Context) -> Graph:
        target = require_target(ctx, self.name)
        supported = supported_schemes(target)
        if self.samples < 1 or self.positions < 1:
            raise MappingError(
                "encode-weights: samples and positions must be at least 1",
                hint="e.g. encode-weights{samples=16 positions=2048}",
            )
        layers = crossbar_layers(graph)
        schemes = per_layer(
            self.per_layer_scheme, self.scheme or supported[-1], len(layers), "per_layer_scheme"
        )
        for index, scheme in enumerate(schemes):
            if scheme not in supported:
                needs = (
                    "a center_offset unit"
                    if scheme == "center-offset" and target.crossbar.devices_per_slice == 2
                    else "two devices per slice"
                )
                raise MappingError(
                    f"{layer_label(layers[index], index)}: {scheme} encoding needs {needs}, "
                    f"which target {target.name} does not have",
                    hint=f"schemes of {target.name}: {', '.join(supported)}",
                )
        centered = [n for n, s in zip(layers, schemes, strict=True) if s == "center-offset"]
        products = layer_products(
            graph, ctx, centered, samples=self.samples, positions=self.positions, salt=self.name
        )
        changed = {}
        for index, (node, scheme) in enumerate(zip(layers, schemes, strict=True)):
            where = layer_label(node, index)
            tiling, mapping = node.attributes.get("tiling"), node.attributes.get("weights")
            if not (isinstance(tiling, Tiling) and isinstance(mapping, WeightMapping)):
                raise MappingError(
                    f"{where} has no crossbar tiling",
                    hint="run tile-crossbar before encode-weights",
                )
            slices = mapping.slices
            if sum(slices) < magnitude_bits(scheme, target.weight_bits):
                slices = default_slices(target.weight_bits, target.crossbar.bits_per_cell)
            mapping = WeightMapping(scheme, slices, target.crossbar.devices_per_slice)
            tiling = tile_layer(
                mapping, matrix_shape(node, graph), target, tiling.rows, tiling.columns, where
            )
            if scheme != "center-offset":
                changed[node.outputs[0]] = with_attributes(
                    _without_centers(node), weights=mapping, tiling=tiling
                )
                ctx.decisions.record(self.name, where, scheme=scheme, slices=list(slices))
                continue
            centers, before, after = _centers(
                products[node.outputs[0]], tiled_plan(node, graph, target), target.weight_bits
            )
            changed[node.outputs[0]] = with_attributes(
                node, weights=mapping, tiling=tiling, centers=tuple(int(c) for c in centers)
            )
            ctx.decisions.record(
                self.name,
                where,
                scheme=scheme,
                slices=list(slices),
                mean_ps_before=before,
                mean_ps_after=after,
                reduction=before / after if after else float("inf"),
                centers=[int(centers.min()), int(centers.max())],
            )
        return replace_nodes(graph, changed)

    def search_space(self, graph: Graph, ctx: Context) -> dict[str, list]:
        return {"scheme": supported_schemes(require_target(ctx, self.name))}


def _centers(
    products: LayerProducts, plan: LayerPlan, weight_bits: int
) -> tuple[np.ndarray, float, float]:
    """Return a layer's centers (all groups, in filter order) and its mean |partial sum| over
    row chunks, positions and filters with c = 0 and with the centers."""
    centers, before, after, count = [], 0.0, 0.0, 0
    for x, w in zip(products.patches, products.filters, strict=True):
        sums, inputs = chunk_products(plan, x, w)  # [P, C, N], [P, C]
        sums, inputs = sums.reshape(-1, sums.shape[-1]), inputs.reshape(-1)
        chosen = best_centers(sums, inputs, w, weight_bits)
        centers.append(chosen)
        before += float(mean_abs_partial_sum(sums, inputs, np.zeros(w.shape[1])).sum())
        after += float(mean_abs_partial_sum(sums, inputs, chosen.astype(np.float64)).sum())
        count += w.shape[1]
    return np.concatenate(centers), before / max(count, 1), after / max(count, 1)
