"""The `encode-weights` pass: how crossbar layers store signed weights, and RAELLA's centers."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from imcc.backend.datapath import chunk_products, partial_sums
from imcc.errors import MappingError
from imcc.ir.graph import Graph, Node
from imcc.ir.mapping import ENCODINGS, ConverterChoice, Tiling, WeightMapping
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
from imcc.plan import Converter, LayerPlan, adc_levels, graph_plan, target_converter
from imcc.target import ConverterKind, Target

CRITERIA = ("slices", "sum")
"""How centers are judged: on the slice sums the converters see, or on the unsliced chunk sum."""


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


def center_bounds(
    w: np.ndarray, weight_bits: int, center_bits: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return per filter the lowest and highest feasible center: |w - c| <= 2^(b-1) - 1 keeps
    the offsets within a differential weight's magnitude bits, and with `center_bits` > 0 the
    center is a signed integer of that many bits ([RAELLA]'s public model stores a 4-bit
    center per output: mit-emze/raella models/common_components/raella_buffers.yaml,
    `n_center_entry_bits`). c = 0 is always feasible for symmetric codes."""
    limit = 2 ** (weight_bits - 1) - 1
    low, high = w.max(axis=0) - limit, w.min(axis=0) + limit
    if center_bits:
        low = np.maximum(low, -(2 ** (center_bits - 1)))
        high = np.minimum(high, 2 ** (center_bits - 1) - 1)
    return low, high


def best_centers(
    sums: np.ndarray, inputs: np.ndarray, w: np.ndarray, weight_bits: int, center_bits: int = 0
) -> np.ndarray:
    """Return per filter the integer center minimising the mean |column partial sum|.

    With center c the partial sum of a row chunk is `A - c X` (A the chunk's product, X its
    input sum), so the objective is `sum_m |A_m - c X_m| = sum_m |X_m| |A_m / X_m - c|` (chunks
    with X_m = 0 add a constant): a weighted median of the ratios `A_m / X_m` with weights
    `|X_m|` minimises it over the reals. The objective is convex and piecewise linear in c, so
    the best integer is the floor or the ceiling of that median, and the best feasible integer
    is the better of the two clipped to the feasible centers (`center_bounds`). Ties go to the
    center nearer 0; a filter with no informative chunk keeps its rounded median weight (the
    smallest stored conductance)."""
    low, high = center_bounds(w, weight_bits, center_bits)
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


@dataclass(frozen=True)
class SliceScore:
    """Per filter, what a layer's converters see under some centers: the share of slice sums
    that hit the ADC's lowest or highest code (`saturated`) and their mean |value|."""

    saturated: np.ndarray
    mean_abs: np.ndarray


def slice_score(
    plan: LayerPlan,
    x: np.ndarray,
    w: np.ndarray,
    centers: np.ndarray,
    codes: tuple[float, float] | None,
) -> SliceScore:
    """Return per filter of one group the share of its partial sums (every row chunk, input
    slice and weight slice: what each converter converts, `datapath.partial_sums`) at the
    highest code of `codes` or, when the codes are signed, the lowest (as speculation flags
    them; None: a converter that cannot saturate) and their mean |value| when the filters
    are centered at `centers`."""
    one = replace(plan, groups=1, centers=tuple(int(c) for c in centers))
    sums = partial_sums(one, x, w)  # [C, J, P, I * D * N]
    sums = sums.reshape(*sums.shape[:3], -1, plan.filters)
    reduce = (0, 1, 2, 3)
    mean_abs = np.abs(sums).mean(axis=reduce, dtype=np.float64)
    if codes is None:
        return SliceScore(np.zeros(plan.filters), mean_abs)
    low, high = codes
    hit = sums >= high
    if low < 0:  # an unsigned code range's lowest code is a zero sum, not a saturation
        hit |= sums <= low
    return SliceScore(hit.mean(axis=reduce, dtype=np.float64), mean_abs)


def slice_centers(
    plan: LayerPlan,
    x: np.ndarray,
    w: np.ndarray,
    codes: tuple[float, float] | None,
    start: np.ndarray,
    radius: int,
    center_bits: int = 0,
) -> tuple[np.ndarray, SliceScore]:
    """Return per filter of one group the integer center, within `radius` of `start` and
    feasible (`center_bounds`), whose slice sums hit the converter's extreme codes
    least, then have the smallest mean |value| (`slice_score`); ties keep the center nearer
    `start`, and the chosen centers' score. Every candidate is a full evaluation of the
    layer's sliced reads, so the search is exact over the window, not a model of it."""
    low, high = center_bounds(w, plan.weight_bits, center_bits)
    best = np.clip(start, low, high).astype(np.int64)
    score = slice_score(plan, x, w, best, codes)
    key = np.stack([score.saturated, score.mean_abs])
    for distance in range(1, radius + 1):
        for step in (-distance, distance):
            candidate = np.clip(start + step, low, high).astype(np.int64)
            moved = candidate != best
            if not moved.any():
                continue
            trial = slice_score(plan, x, w, candidate, codes)
            other = np.stack([trial.saturated, trial.mean_abs])
            better = moved & ((other[0] < key[0]) | ((other[0] == key[0]) & (other[1] < key[1])))
            best = np.where(better, candidate, best)
            key = np.where(better[None], other, key)
    return best, SliceScore(key[0], key[1])


def criterion_codes(plan: LayerPlan, target: Target, name: str) -> tuple[float, float] | None:
    """Return the lowest and highest partial sum the converter `name` (a target converter at
    its widest precision) codes for a plan's reads, in partial-sum units, or None when it
    cannot saturate on them (an MTJ, a sense amplifier's single level is not a code range)."""
    spec = target_converter(target, name, f"encode-weights (converter {name}): ")
    if spec.kind in (ConverterKind.MTJ, ConverterKind.SENSE_AMP) or not spec.bits:
        return None
    converter = Converter(spec.kind, max(spec.bits), range_rule=spec.range_rule)
    levels_low, levels_high, step = adc_levels(converter, *plan.sum_range)
    low, high = plan.sum_range
    if levels_low * step <= low and high <= levels_high * step and step == 1.0:
        return None
    return levels_low * step, levels_high * step


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

    Centers, per filter, on calibration data (RAELLA chooses each filter's center for what its
    converters see). `criterion=sum` takes the integer c minimising the mean |partial sum| of
    the crossbar's unsliced row chunks (the layer plan's: each row tile read `active rows` at
    a time; a weighted median, see `best_centers`). `criterion=slices` (the default) starts
    there and tries every center within `radius` of it, judging each by the partial sums the
    converters actually convert (every row chunk, input slice and weight slice of the layer's
    current slicing): first the share that hit the lowest or highest code of `converter`
    (the layer's, else the target's first; what makes a speculative read fail), then their
    mean |value| (`slice_centers`): the slices the layer has when encode-weights runs (a later
    slice-weights keeps the centers). Centers are clipped so that |w - c| <= 2^(b-1) - 1 (the
    offsets fit the same slices as differential weights) and, with `center_bits`, to signed
    integers of that many bits (RAELLA's public model stores 4). Calibration positions are a seeded
    subsample, so centers are deterministic. Slices that no longer cover the scheme's
    magnitude bits (e.g. 7-bit slices for offset) become whole cells; the layer is re-tiled.
    Runs after quantize, assign-input-precision and tile-crossbar; records per layer, before
    (c = 0: plain differential storage) and after, the mean |unsliced chunk sum| and, with the
    slices criterion, the mean |slice sum| and the share of slice sums at an extreme code.

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
    criterion: str = option(
        "slices", "judge centers on the slice sums or the unsliced chunk sum", choices=CRITERIA
    )
    converter: str = option(
        "", "converter whose codes the slices criterion counts (empty: the layer's, else first)"
    )
    radius: int = option(8, "centers tried each side of the weighted median (slices)", minimum=0)
    center_bits: int = option(
        0, "centers as signed integers of this many bits (0: any feasible)", minimum=0, maximum=16
    )

    def run(self, graph: Graph, ctx: Context) -> Graph:
        target = require_target(ctx, self.name)
        supported = supported_schemes(target)
        if self.samples < 1 or self.positions < 1:
            raise MappingError(
                "encode-weights: samples and positions must be at least 1",
                hint="e.g. encode-weights{samples=16 positions=2048}",
            )
        if self.converter:  # before the calibration run: a misspelt name fails at once
            target_converter(target, self.converter, "encode-weights: ")
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
            plan = tiled_plan(node, graph, target).with_mapping(mapping)
            radius = self.radius if self.criterion == "slices" else None
            codes = None
            if radius is not None:
                codes = criterion_codes(plan, target, self._converter(node, target))
            centers, measured = _centers(
                products[node.outputs[0]], plan, target.weight_bits, codes, radius, self.center_bits
            )
            changed[node.outputs[0]] = with_attributes(
                node, weights=mapping, tiling=tiling, centers=tuple(int(c) for c in centers)
            )
            after = measured["mean_ps_after"]
            ctx.decisions.record(
                self.name,
                where,
                scheme=scheme,
                slices=list(slices),
                **measured,
                reduction=measured["mean_ps_before"] / after if after else float("inf"),
                centers=[int(centers.min()), int(centers.max())],
            )
        return replace_nodes(graph, changed)

    def _converter(self, node: Node, target: Target) -> str:
        """Return the converter the slices criterion counts codes of: the option's, else the
        layer's when select-adc has run, else the target's first (select-adc's default)."""
        if self.converter:
            return self.converter
        choice = node.attributes.get("converter")
        if isinstance(choice, ConverterChoice):
            return choice.name
        return target.converters[0].name

    def search_space(self, graph: Graph, ctx: Context) -> dict[str, list]:
        return {"scheme": supported_schemes(require_target(ctx, self.name))}


def _centers(
    products: LayerProducts,
    plan: LayerPlan,
    weight_bits: int,
    codes: tuple[float, float] | None,
    radius: int | None,
    center_bits: int = 0,
) -> tuple[np.ndarray, dict[str, float]]:
    """Return a layer's centers (all groups, in filter order) and what its converters see with
    c = 0 (plain differential storage) and with the centers, averaged over filters: the mean
    |unsliced chunk sum| (`mean_ps_*`), and with `radius` (the `slices` criterion) the mean
    |slice sum| and the share of slice sums at an extreme code (`slice_ps_*`,
    `saturation_*`)."""
    centers, totals, count = [], dict.fromkeys(MEASURES, 0.0), 0
    for x, w in zip(products.patches, products.filters, strict=True):
        sums, inputs = chunk_products(plan, x, w)  # [P, C, N], [P, C]
        sums, inputs = sums.reshape(-1, sums.shape[-1]), inputs.reshape(-1)
        chosen = best_centers(sums, inputs, w, weight_bits, center_bits)
        if radius is not None:
            chosen, after = slice_centers(plan, x, w, codes, chosen, radius, center_bits)
        centers.append(chosen)
        zero = np.zeros(w.shape[1])
        totals["mean_ps_before"] += float(mean_abs_partial_sum(sums, inputs, zero).sum())
        totals["mean_ps_after"] += float(
            mean_abs_partial_sum(sums, inputs, chosen.astype(np.float64)).sum()
        )
        if radius is not None:
            before = slice_score(plan, x, w, zero, codes)
            for when, score in (("before", before), ("after", after)):
                totals[f"slice_ps_{when}"] += float(score.mean_abs.sum())
                totals[f"saturation_{when}"] += float(score.saturated.sum())
        count += w.shape[1]
    measured = MEASURES if radius is not None else MEASURES[:2]
    return np.concatenate(centers), {k: totals[k] / max(count, 1) for k in measured}


MEASURES = (
    "mean_ps_before",
    "mean_ps_after",
    "slice_ps_before",
    "slice_ps_after",
    "saturation_before",
    "saturation_after",
)
"""What encode-weights records per center-offset layer: c = 0 (before) against its centers."""
