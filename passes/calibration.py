"""What the data-aware mapping passes measure on: each crossbar layer's integer products.

A data-aware pass (encode-weights, slice-weights, calibrate-mtj, allocate-samples,
profile-converters) decides from what a layer's crossbars would see on calibration data: the
integer input codes of every output position, as im2col patches `x[P, K]` per group, and the
integer weight codes `w[K, N]` per group. The inputs come from the quantized network run by the
reference interpreter, which is the lossless crossbar network (the datapath is exact with
lossless converters), so every layer is judged on the inputs it gets when the layers before it
are exact. Positions are subsampled (seeded) to bound the work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcc.backend import kernels
from imcc.backend.datapath import partial_sums
from imcc.backend.reference import collect
from imcc.errors import MappingError
from imcc.ir.graph import Graph, Node
from imcc.ir.io import require_weights
from imcc.passes.context import Context
from imcc.passes.layers import crossbar_layers, layer_label, require_target
from imcc.passes.quantize import calibration_images
from imcc.plan import MatrixShape, plan_layer, require_mapped
from imcc.target import Target


@dataclass(frozen=True)
class LayerProducts:
    """A crossbar layer's integer products on calibration data, per group: input patches
    [P, K] (int64) and weight codes [K, N] (int64)."""

    patches: tuple[np.ndarray, ...]
    filters: tuple[np.ndarray, ...]

    @property
    def groups(self) -> int:
        """Return the number of channel groups."""
        return len(self.filters)

    def exact(self, group: int) -> np.ndarray:
        """Return the lossless product x @ w of one group (int64 [P, N]), computed once (a
        float64 GEMM is exact for these integer codes: every sum stays far below 2**53)."""
        cache = self.__dict__.setdefault("_exact", {})
        if group not in cache:
            x, w = self.patches[group], self.filters[group]
            cache[group] = np.rint(x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
        return cache[group]


def layer_products(
    graph: Graph,
    ctx: Context,
    layers: list[Node],
    *,
    samples: int = 16,
    positions: int = 2048,
    salt: str = "calibration",
) -> dict[str, LayerProducts]:
    """Return the integer products of quantized crossbar layers (keyed by first result) on at
    most `samples` calibration inputs, each group keeping at most `positions` output positions
    (a seeded subsample, the same for the same `salt`)."""
    require_weights(graph, "a data-aware mapping pass")
    for index, node in enumerate(layers):
        if graph.types[node.inputs[0]].dtype.is_float:
            raise MappingError(
                f"{layer_label(node, index)} is not quantized",
                hint="run quantize before data-aware mapping passes",
            )
    if not layers:
        return {}
    images = calibration_images(graph, ctx, samples)
    values = collect(graph, images, [n.inputs[0] for n in layers])
    out: dict[str, LayerProducts] = {}
    for node in layers:
        x = values[node.inputs[0]].astype(np.int64)
        w = graph.constant_data(node.inputs[1]).astype(np.int64)
        if node.op == "conv":
            group = node.attr("group")
            patches, _ = kernels.im2col(
                x,
                w.shape[2:],
                node.attr("strides"),
                node.attr("pads"),
                node.attr("dilations"),
                group,
            )
            filters = kernels.conv_filters(w, group)
        else:
            patches, filters = x.reshape(1, -1, x.shape[-1]), w[None]
        rng = ctx.rng(salt, node.outputs[0])
        kept = []
        for part in patches:
            if len(part) > positions:
                part = part[np.sort(rng.choice(len(part), positions, replace=False))]
            kept.append(np.ascontiguousarray(part, dtype=np.int64))
        out[node.outputs[0]] = LayerProducts(
            tuple(kept), tuple(np.ascontiguousarray(f, dtype=np.int64) for f in filters)
        )
    return out


@dataclass(frozen=True, slots=True)
class ColumnSums:
    """A layer's crossbar partial sums on calibration data: `sums` [C, J, P, columns] (row
    chunk, input slice, position, physical column ordered [weight slice][device][filter]),
    the significance of each input slice [J], and the layer's filters (all groups)."""

    sums: np.ndarray
    input_weight: np.ndarray
    filters: int


def column_sums(node: Node, products: LayerProducts, target: Target, before: str) -> ColumnSums:
    """Return the partial sums every physical column of a layer produces on the calibration
    products, exactly as the datapath forms them (its plan's slices, encoding, row chunks);
    `before` names the pass that asks, in the error when the layer is not mapped."""
    x0, w0 = products.patches[0], products.filters[0]
    shape = MatrixShape(w0.shape[0], w0.shape[1], products.groups, x0.shape[0])
    plan = plan_layer(node, target, shape, lossless=True, before=before)
    parts = []
    for group in range(products.groups):
        x, w = products.patches[group], products.filters[group]
        sums = partial_sums(plan, x, w, group)  # [C, J, P, I*D*N]
        parts.append(sums.reshape(*sums.shape[:3], plan.weight_slices * plan.devices, -1))
    # filters of all groups side by side: [C, J, P, I*D, groups*N] -> [..., I*D*groups*N]
    stacked = np.concatenate(parts, axis=-1)
    weight = np.array([2.0**shift for shift in plan.input_shifts])
    return ColumnSums(stacked.reshape(*stacked.shape[:3], -1), weight, plan.filters * plan.groups)


def layers_column_sums(
    graph: Graph,
    ctx: Context,
    chosen: list[tuple[int, Node]],
    before: str,
    *,
    samples: int,
    positions: int,
) -> list[tuple[int, Node, ColumnSums]]:
    """Return the column sums of the `chosen` crossbar layers (index, node) on calibration data
    for the pass `before` (calibrate-mtj, calibrate-adc), after checking that every crossbar
    layer of the graph is mapped."""
    target = require_target(ctx, before)
    for index, node in enumerate(crossbar_layers(graph)):
        require_mapped(node, layer_label(node, index), before=before)
    if not chosen:
        return []
    products = layer_products(
        graph, ctx, [node for _, node in chosen], samples=samples, positions=positions
    )
    return [
        (index, node, column_sums(node, products[node.outputs[0]], target, before))
        for index, node in chosen
    ]
