"""Sensitivity-first co-search of a hybrid chip: measure each layer alone, then compose.

A hybrid chip chooses one mechanism per crossbar layer (search/mechanisms.py). The space is
|menu|^layers (17^20 on ResNet-20 with targets/hybrid.hw), but a layer's choice mostly costs
accuracy on its own: quantization noise of different layers adds up nearly independently (the
premise of Hessian-aware mixed precision, Dong et al., HAWQ, ICCV 2019, and of XPert's
per-layer precision descent). So:

1. **Measure** (`measure`): the baseline maps every layer with the menu's first mechanism
   (ISAAC's dataflow, nearly lossless). For each layer and each other mechanism, the design
   that changes that layer alone is compiled, priced (energy, latency, area) and simulated
   bit-accurately on the search subset: that layer's accuracy drop and cost change under that
   mechanism. layers x (mechanisms - 1) trials.
2. **Compose** (`compose`): a greedy descent from the baseline under an accuracy budget, the
   drops predicted as the sum of the measured single-layer drops (negative ones, noise, count
   as 0) and the cost as the baseline's plus the sum of the measured single-layer changes of
   energy, latency and area; each step takes the change with the largest predicted fall of
   log EDAP per point of accuracy spent.
3. **Verify** (`search`): the composed design is compiled, priced and simulated for real. When
   its measured drop exceeds the prediction, the difference is what the single-layer
   measurements missed (their sampling noise on a subset, and interactions): it is charged in
   equal parts to every layer the design changed, as a penalty each later composition adds
   per changed layer, and the design is composed again, at most `ROUNDS` times. Every
   verified design is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from imcc.search.evaluate import Evaluation, Evaluator, Metrics
from imcc.search.mechanisms import Mechanism, pipeline
from imcc.search.space import SearchSpace

TOLERANCE = 1e-9
"""Drops are differences of accuracies (k / n): a drop equal to the budget must not miss it by a
rounding error."""
ROUNDS = 4
"""Composed designs verified at most, per search."""


@dataclass(frozen=True, slots=True)
class Measured:
    """One measured design: its mechanism per layer, pipeline, costs and accuracy."""

    mechanisms: tuple[str, ...]
    pipeline: str
    metrics: Metrics | None
    accuracy: float | None
    illegal: str | None = None

    @classmethod
    def of(cls, chosen: Sequence[Mechanism], text: str, evaluation: Evaluation) -> Measured:
        """Record an evaluation of the design `chosen` (pipeline `text`)."""
        return cls(
            tuple(m.name for m in chosen),
            text,
            evaluation.metrics,
            evaluation.accuracy,
            evaluation.illegal,
        )


@dataclass
class Sensitivity:
    """The baseline and, per (layer, mechanism name), the design changing that layer alone."""

    menu: tuple[Mechanism, ...]
    baseline: Measured
    single: dict[tuple[int, str], Measured] = field(default_factory=dict)

    def drop(self, layer: int, name: str) -> float | None:
        """Return the accuracy drop (0..1, at least 0) of `layer` under mechanism `name`, or
        None when that design is illegal or was not measured."""
        if name == self.menu[0].name:
            return 0.0
        found = self.single.get((layer, name))
        if found is None or found.accuracy is None or self.baseline.accuracy is None:
            return None
        return max(self.baseline.accuracy - found.accuracy, 0.0)

    def change(self, layer: int, name: str) -> tuple[float, float, float] | None:
        """Return the (energy, latency, area) change of `layer` under mechanism `name`."""
        if name == self.menu[0].name:
            return (0.0, 0.0, 0.0)
        found = self.single.get((layer, name))
        base = self.baseline.metrics
        if found is None or found.metrics is None or base is None:
            return None
        m = found.metrics
        return (
            m.energy_j - base.energy_j,
            m.latency_s - base.latency_s,
            m.area_mm2 - base.area_mm2,
        )


def measure(
    evaluator: Evaluator,
    space: SearchSpace,
    menu: Sequence[Mechanism],
    *,
    layers: Sequence[int] | None = None,
    report: Callable[[Measured], None] | None = None,
) -> Sensitivity:
    """Measure the baseline and every single-layer change (module docstring, step 1) on the
    evaluator's search subset; `report` sees each design as it is measured."""
    menu = tuple(menu)
    base = [menu[0]] * len(space.layers)
    text = pipeline(space, base)
    result = Sensitivity(menu, Measured.of(base, text, evaluator.evaluate(text)))
    if report is not None:
        report(result.baseline)
    for layer in range(len(space.layers)) if layers is None else layers:
        for mechanism in menu[1:]:
            chosen = [*base[:layer], mechanism, *base[layer + 1 :]]
            text = pipeline(space, chosen)
            measured = Measured.of(chosen, text, evaluator.evaluate(text))
            result.single[(layer, mechanism.name)] = measured
            if report is not None:
                report(measured)
    return result


def predicted(
    sensitivity: Sensitivity, names: Sequence[str], penalty: float = 0.0
) -> tuple[float, float]:
    """Return a design's predicted accuracy drop and EDAP (J*s*mm²) from the single-layer
    measurements (module docstring, step 2), `penalty` added per layer changed."""
    base = sensitivity.baseline.metrics
    assert base is not None
    drop, energy, latency, area = 0.0, base.energy_j, base.latency_s, base.area_mm2
    for layer, name in enumerate(names):
        layer_drop, layer_change = sensitivity.drop(layer, name), sensitivity.change(layer, name)
        assert layer_drop is not None and layer_change is not None
        drop += layer_drop + (penalty if name != sensitivity.menu[0].name else 0.0)
        energy += layer_change[0]
        latency += layer_change[1]
        area += layer_change[2]
    if min(energy, latency, area) <= 0:
        return drop, math.inf  # the additive model broke down: never prefer it
    return drop, energy * latency * area


def compose(
    sensitivity: Sensitivity, budget: float, layers: int, penalty: float = 0.0
) -> tuple[str, ...]:
    """Return the mechanism names per layer that the greedy descent picks within a predicted
    accuracy drop of `budget` (0..1), `penalty` charged per changed layer."""
    names = [sensitivity.menu[0].name] * layers
    drop, edap = predicted(sensitivity, names, penalty)
    while True:
        best: tuple[float, int, str, float, float] | None = None
        for layer in range(layers):
            for mechanism in sensitivity.menu:
                if (
                    mechanism.name == names[layer]
                    or sensitivity.drop(layer, mechanism.name) is None
                ):
                    continue
                trial = [*names[:layer], mechanism.name, *names[layer + 1 :]]
                trial_drop, trial_edap = predicted(sensitivity, trial, penalty)
                if trial_drop > budget + TOLERANCE or not trial_edap < edap:
                    continue
                gain = (math.log(edap) - math.log(trial_edap)) / max(trial_drop - drop, 1e-4)
                if best is None or gain > best[0]:
                    best = (gain, layer, mechanism.name, trial_drop, trial_edap)
        if best is None:
            return tuple(names)
        _, layer, name, drop, edap = best
        names[layer] = name


def search(
    evaluator: Evaluator,
    space: SearchSpace,
    sensitivity: Sensitivity,
    budget: float,
    *,
    report: Callable[[Measured], None] | None = None,
) -> list[Measured]:
    """Compose and verify designs within a real accuracy drop of `budget` (module docstring,
    step 3); return every verified design, the last one within the budget where any is."""
    by_name = {m.name: m for m in sensitivity.menu}
    layers, base = len(space.layers), sensitivity.menu[0].name
    verified: list[Measured] = []
    penalty = 0.0
    base_accuracy = sensitivity.baseline.accuracy
    for _ in range(ROUNDS):
        names = compose(sensitivity, budget, layers, penalty)
        if any(v.mechanisms == names for v in verified):
            break
        chosen = [by_name[n] for n in names]
        text = pipeline(space, chosen)
        measured = Measured.of(chosen, text, evaluator.evaluate(text))
        verified.append(measured)
        if report is not None:
            report(measured)
        if measured.accuracy is None or base_accuracy is None:
            break
        drop = base_accuracy - measured.accuracy
        expected, _ = predicted(sensitivity, names, penalty)
        changed = sum(name != base for name in names)
        if drop <= budget + TOLERANCE or not changed:
            break
        penalty += max(drop - expected, 0.0) / changed
    return verified


def best(sensitivity: Sensitivity, verified: Sequence[Measured], budget: float) -> Measured:
    """Return the verified design of lowest EDAP within a measured drop of `budget`, else the
    baseline."""
    base = sensitivity.baseline
    within = [
        v
        for v in verified
        if v.metrics is not None
        and v.accuracy is not None
        and base.accuracy is not None
        and base.accuracy - v.accuracy <= budget + TOLERANCE
    ]
    return min(within, key=lambda v: v.metrics.edap) if within else base  # type: ignore[union-attr]
