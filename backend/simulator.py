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

    def _datapath(self, node: Node, x: np.ndarray, w: np.ndarray, group: int = 0
                  ) -> np.ndarray:
        """Run one K x N product of a crossbar layer (of group `group`): x[P, K] @ w[K, N] in
        integers."""
        streaming, mapping = node.attributes.get("input"), node.attributes.get("weights")
        tiling, choice = node.attributes.get("tiling"), node.attributes.get("converter")
        if not (isinstance(streaming, InputStreaming) and isinstance(mapping, WeightMapping)
                and isinstance(tiling, Tiling) and isinstance(choice, ConverterChoice)):
            raise MappingError(f"crossbar layer {node.name or node.outputs[0]} is not fully "
                               "mapped", hint="run the mapping pipeline (imcc compile --target)")
        converter = LOSSLESS
        if not self.lossless:
            spec = self.target.converter(choice.name)
            converter = Converter(ConverterKind(choice.kind), choice.bits, choice.samples,
                                  spec.range_rule, spec.sensitivity)
        rows_per_sum = min(tiling.rows, self.target.crossbar.active_rows)
        record = self.layers.setdefault(node.outputs[0], LayerRecord(node.name or node.outputs[0]))
        centers = node.attributes.get("centers")
        if centers is not None:  # this group's filters
            columns = w.shape[1]
            centers = np.asarray(centers[group * columns:(group + 1) * columns], np.int64)
        return crossbar_matmul(x, w, streaming, mapping, self.target.weight_bits, rows_per_sum,
                               self.target.crossbar.signed_columns, converter, self.rng,
                               record.stats, centers=centers)

    def _conv(self, node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
        if not self._mapped(node):
            return RULES["conv"](node, args)
        x, w = args[0], args[1]
        group = node.attr("group")
        patches, out = kernels.im2col(x, w.shape[2:], node.attr("strides"), node.attr("pads"),
                                      node.attr("dilations"), group)
        filters = kernels.conv_filters(w, group)
        result = np.stack([self._datapath(node, patches[g], filters[g], g)
                           for g in range(group)])
        return [kernels.col2im(result, x.shape[0], out).astype(np.int32)]

    def _linear(self, node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
        if not self._mapped(node):
            return RULES["linear"](node, args)
        x, w = args[0], args[1]
        flat = x.reshape(-1, x.shape[-1])
        return [self._datapath(node, flat, w).reshape(*x.shape[:-1], w.shape[1]).astype(np.int32)]


def run_mapped(graph: Graph, target: Target, feeds: Mapping[str, np.ndarray],
               interpreter: CrossbarInterpreter, outputs: tuple[str, ...] | None = None
               ) -> dict[str, np.ndarray]:
    """Run a mapped graph on inputs with a crossbar interpreter; return the named values."""
    probe = graph if outputs is None else graph.replace(outputs=outputs)
    return interpreter.run(probe, {k: np.asarray(v) for k, v in feeds.items()})
