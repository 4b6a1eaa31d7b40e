"""The crossbar simulator backend: runs a mapped program the way the hardware computes it.

Crossbar layers (conv / linear on integer codes carrying `weights`, `tiling`, `input` and
`converter`) go through the bit-accurate datapath of `backend/crossbar.py`; every other op runs
on the digital units as the reference interpreter defines it (float32). Random draws (MTJ
samples) come from one generator seeded per run, so runs are reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from imcc.backend import kernels
from imcc.backend.crossbar import Converter, Statistics, crossbar_matmul
from imcc.backend.reference import RULES, ReferenceInterpreter
from imcc.errors import MappingError
from imcc.ir.graph import Graph, Node
from imcc.ir.mapping import ConverterChoice, InputStreaming, Tiling, WeightMapping
from imcc.target import ConverterKind, Target

LOSSLESS = Converter(ConverterKind.SAR, 24, range_rule="saturate")
"""A converter wide enough for every partial sum: the quantized network, computed exactly."""


def mapped_layer(node: Node) -> tuple[InputStreaming, WeightMapping, Tiling, ConverterChoice]:
    """Return a crossbar op's input streaming, weight mapping, tiling and converter choice, or
    raise MappingError when the mapping passes have not set them all."""
    streaming, mapping = node.attributes.get("input"), node.attributes.get("weights")
    tiling, choice = node.attributes.get("tiling"), node.attributes.get("converter")
    if not (
        isinstance(streaming, InputStreaming)
        and isinstance(mapping, WeightMapping)
        and isinstance(tiling, Tiling)
        and isinstance(choice, ConverterChoice)
    ):
        raise MappingError(
            f"crossbar layer {node.name or node.outputs[0]} is not fully mapped",
            hint="run the mapping pipeline (imcc compile --target)",
        )
    return streaming, mapping, tiling, choice


def layer_converter(
    choice: ConverterChoice,
    target: Target,
    ps_scale: tuple[float, ...] = (),
    ps_offset: tuple[float, ...] = (),
) -> Converter:
    """Return the converter the datapath applies for a layer's converter choice on a target,
    with the per-column MTJ normalisation when given."""
    spec = target.converter(choice.name)
    return Converter(
        ConverterKind(choice.kind),
        choice.bits,
        choice.samples,
        spec.range_rule,
        spec.sensitivity,
        ps_scale,
        ps_offset,
    )


def group_centers(node: Node, group: int, columns: int) -> np.ndarray | None:
    """Return the center-offset centers of one group's `columns` filters (None without)."""
    centers = node.attributes.get("centers")
    if centers is None:
        return None
    return np.asarray(centers[group * columns : (group + 1) * columns], np.int64)


@dataclass
class LayerRecord:
    """What one crossbar layer did over a run."""

    name: str
    stats: Statistics = field(default_factory=Statistics)


class CrossbarInterpreter(ReferenceInterpreter):
    """Executes mapped programs: crossbar layers through the datapath, the rest as the reference.

    `lossless=True` replaces every converter by an exact one (the quantized network);
    `layers` collects per-layer converter statistics across runs.
    """

    def __init__(self, target: Target, rng: np.random.Generator, lossless: bool = False) -> None:
        self.target = target
        self.rng = rng
        self.lossless = lossless
        self.layers: dict[str, LayerRecord] = {}
        self.rules = {**RULES, "conv": self._conv, "linear": self._linear}

    def _mapped(self, node: Node) -> bool:
        return "converter" in node.attributes

    def _datapath(self, node: Node, x: np.ndarray, w: np.ndarray, group: int = 0) -> np.ndarray:
        """Run one K x N product of a crossbar layer (of group `group`): x[P, K] @ w[K, N] in
        integers."""
        streaming, mapping, tiling, choice = mapped_layer(node)
        converter = LOSSLESS
        if not self.lossless:
            converter = layer_converter(
                choice, self.target, *_group_normalisation(node, group, w.shape[1])
            )
        rows_per_sum = min(tiling.rows, self.target.crossbar.active_rows)
        record = self.layers.setdefault(node.outputs[0], LayerRecord(node.name or node.outputs[0]))
        return crossbar_matmul(
            x,
            w,
            streaming,
            mapping,
            self.target.weight_bits,
            rows_per_sum,
            self.target.crossbar.signed_columns,
            converter,
            self.rng,
            record.stats,
            centers=group_centers(node, group, w.shape[1]),
        )

    def _conv(self, node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
        if not self._mapped(node):
            return RULES["conv"](node, args)
        x, w = args[0], args[1]
        group = node.attr("group")
        patches, out = kernels.im2col(
            x, w.shape[2:], node.attr("strides"), node.attr("pads"), node.attr("dilations"), group
        )
        filters = kernels.conv_filters(w, group)
        result = np.stack([self._datapath(node, patches[g], filters[g], g) for g in range(group)])
        return [kernels.col2im(result, x.shape[0], out).astype(np.int32)]

    def _linear(self, node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
        if not self._mapped(node):
            return RULES["linear"](node, args)
        x, w = args[0], args[1]
        flat = x.reshape(-1, x.shape[-1])
        return [self._datapath(node, flat, w).reshape(*x.shape[:-1], w.shape[1]).astype(np.int32)]


def _group_normalisation(
    node: Node, group: int, columns: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return the part of a layer's `ps_scale` / `ps_offset` (ordered [weight slice][device]
    [filter], filters of all groups) that belongs to one group's product, in the datapath's
    column order; empty when the layer has none."""
    scale, offset = node.attributes.get("ps_scale"), node.attributes.get("ps_offset")
    if scale is None and offset is None:
        return (), ()
    filters = columns * (node.attr("group") if node.op == "conv" else 1)
    if scale is None or offset is None or len(scale) != len(offset) or len(scale) % filters:
        raise MappingError(
            f"layer {node.name or node.outputs[0]}: ps_scale and ps_offset need "
            f"one entry per column each, a multiple of its {filters} filters",
            hint="rerun calibrate-mtj after the weight passes",
        )
    part = slice(group * columns, (group + 1) * columns)
    return (
        tuple(np.asarray(scale).reshape(-1, filters)[:, part].ravel().tolist()),
        tuple(np.asarray(offset).reshape(-1, filters)[:, part].ravel().tolist()),
    )


def run_mapped(
    graph: Graph,
    target: Target,
    feeds: Mapping[str, np.ndarray],
    interpreter: CrossbarInterpreter,
    outputs: tuple[str, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Run a mapped graph on inputs with a crossbar interpreter; return the named values."""
    probe = graph if outputs is None else graph.replace(outputs=outputs)
    return interpreter.run(probe, {k: np.asarray(v) for k, v in feeds.items()})
