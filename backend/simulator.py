"""The crossbar simulator backend: runs a mapped program the way the hardware computes it.

Crossbar layers (conv / linear on integer codes carrying `weights`, `tiling`, `input` and
`converter`) go through the bit-accurate datapath of backend/datapath.py, over each layer's
plan (plan.py); every other op runs on the digital units as the reference interpreter defines
it (float32). MTJ draws are seeded per input sample (backend/datapath.py `Draws`): the
interpreter numbers the samples it runs across calls, so a run of a data set in batches gives
every sample the draws it gets in any other batching.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from imcc.backend import kernels
from imcc.backend.datapath import Draws, Statistics, product
from imcc.backend.reference import RULES, ReferenceInterpreter
from imcc.ir.graph import Graph, Node
from imcc.plan import LayerPlan, MatrixShape, plan_layer
from imcc.target import Target


@dataclass
class LayerRecord:
    """What one crossbar layer did over a run."""

    name: str
    stats: Statistics = field(default_factory=Statistics)


class CrossbarInterpreter(ReferenceInterpreter):
    """Executes mapped programs: crossbar layers through the datapath, the rest as the reference.

    `seed` (or a generator it is drawn from) seeds the MTJ draws; `lossless=True` replaces
    every converter by an exact one (the quantized network), except in the layers named
    (by result) in `keep`: a network exact but for those layers, which is what one layer's
    converters cost on their own; `layers` collects per-layer converter statistics across
    runs, `plans` the layers' plans.
    """

    def __init__(
        self,
        target: Target,
        seed: int | np.random.Generator = 0,
        lossless: bool = False,
        keep: frozenset[str] = frozenset(),
    ) -> None:
        self.target = target
        if isinstance(seed, np.random.Generator):
            seed = int(seed.integers(2**62))
        self.seed = int(seed)
        self.lossless = lossless
        self.keep = keep
        self.layers: dict[str, LayerRecord] = {}
        self.plans: dict[tuple[str, MatrixShape], LayerPlan] = {}
        self.samples_run = 0  # input samples of earlier runs: the next run's first index
        self._batch = 0
        self.rules = {**RULES, "conv": self._conv, "linear": self._linear}

    def run(
        self,
        graph: Graph,
        feeds: Mapping[str, np.ndarray],
        *,
        start: int = 0,
        visit: Callable[[int, Mapping[str, np.ndarray]], None] | None = None,
        samples: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the graph (see Interpreter.run); its inputs' first axis counts samples (or
        `samples` does: a run resumed at `start`)."""
        first = next(iter(feeds.values()), None)
        batch = int(np.shape(first)[0]) if first is not None and np.ndim(first) else 1
        self._batch = batch if samples is None else samples
        try:
            return super().run(graph, feeds, start=start, visit=visit)
        finally:
            self.samples_run += self._batch

    def plan(self, node: Node, shape: MatrixShape) -> LayerPlan:
        """Return the plan of a crossbar layer of this shape (built once)."""
        key = (node.outputs[0], shape)
        if key not in self.plans:
            lossless = self.lossless and node.outputs[0] not in self.keep
            self.plans[key] = plan_layer(node, self.target, shape, lossless=lossless)
        return self.plans[key]

    def _product(self, node: Node, plan: LayerPlan, x: np.ndarray, w: np.ndarray, group: int):
        record = self.layers.setdefault(node.outputs[0], LayerRecord(node.name or node.outputs[0]))
        draws = None
        if plan.converter.is_mtj:
            draws = Draws.per_sample(
                self.seed, node.outputs[0], group, self.samples_run, self._batch
            )
        return product(plan, x, w, group, stats=record.stats, draws=draws)

    def _conv(self, node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
        if "converter" not in node.attributes:
            return RULES["conv"](node, args)
        x, w = args[0], args[1]
        group = node.attr("group")
        if x.dtype.itemsize > 2 and x.size and -(2**15) <= x.min() and x.max() < 2**15:
            x = x.astype(np.int16)  # the codes fit: im2col moves half the bytes
        patches, out = kernels.im2col(
            x, w.shape[2:], node.attr("strides"), node.attr("pads"), node.attr("dilations"), group
        )
        filters = kernels.conv_filters(w, group)
        shape = MatrixShape(filters.shape[1], filters.shape[2], group, patches.shape[1])
        plan = self.plan(node, shape)
        products = [self._product(node, plan, patches[g], filters[g], g) for g in range(group)]
        result = products[0][None] if group == 1 else np.stack(products)  # one group: no copy
        return [kernels.col2im(result, x.shape[0], out).astype(np.int32)]

    def _linear(self, node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
        if "converter" not in node.attributes:
            return RULES["linear"](node, args)
        x, w = args[0], args[1]
        flat = x.reshape(-1, x.shape[-1])
        plan = self.plan(node, MatrixShape(w.shape[0], w.shape[1], 1, flat.shape[0]))
        out = self._product(node, plan, flat, w, 0)
        return [out.reshape(*x.shape[:-1], w.shape[1]).astype(np.int32)]


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
