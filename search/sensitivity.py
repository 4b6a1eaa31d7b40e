"""Sensitivity-first co-search of a hybrid chip: measure each layer alone, then compose.

A hybrid chip chooses one mechanism per crossbar layer (search/mechanisms.py). The space is
|menu|^layers (17^20 on ResNet-20 with targets/hybrid.hw), but a layer's choice mostly costs
accuracy on its own: quantization noise of different layers adds up nearly independently (the
premise of Hessian-aware mixed precision, Dong et al., HAWQ, ICCV 2019, and of XPert's
per-layer precision descent). So:

1. **Measure** (`measure`): the baseline maps every layer with the menu's first mechanism
   (ISAAC's dataflow, nearly lossless). For each layer and each other mechanism, the design
   that changes that layer alone is compiled and priced (energy, latency, area), and
   simulated bit-accurately on the search subset with every other crossbar layer exact
   (`Evaluator.evaluate(only=...)`): that layer's accuracy drop against the exact (quantized)
   network and its cost change under that mechanism, without the other layers' noise and at
   the price of simulating one layer. layers x (mechanisms - 1) trials.
2. **Compose** (`compose`): a greedy descent under an accuracy budget from a measured design
   (the baseline, or another design such as a paper's), a design's drop predicted as the
   origin's measured drop plus, per layer changed, the difference of the two mechanisms'
   single-layer drops (negative ones, noise, count as 0), and its energy, latency and area
   likewise from the origin's and the single-layer changes; each step takes the change with
   the largest predicted fall of log EDAP per point of accuracy spent.
3. **Verify** (`search`): the composed design is compiled, priced and simulated for real. When
   its measured drop exceeds the budget, the difference from the prediction is what the
   single-layer measurements missed (their sampling noise on a subset, and interactions): it
   is charged in equal parts to every layer the design changed from the origin, as a penalty
   each later composition adds per changed layer, and the design is composed again. When it
   is within the budget, it becomes the origin of the next composition: predictions start
   from its measured accuracy, so the budget the single-layer drops overestimated (they are
   clipped at zero and sum their noise) is spent on further layers. At most `ROUNDS`
   verifications; every verified design is kept. The verification may use a larger subset than the
   single-layer measurements (`search`'s `verifier`, the table's `reference` baseline measured
   on it): a 1-point budget needs more images than a layer's ranking does.
   `explore` searches from the baseline, from given designs (the papers'), and from uniform
   designs (every layer one mechanism) cheaper than the best found, repairing their
   accuracy first where they miss the budget (`compose`): a converter's saving on the chip
   comes when every layer has it, which a descent from the baseline, a few layers a step,
   stops short of.
4. **Share** (`tune_sharing`, cost only): column sharing changes no result of a sample-and-hold
   converter bank, only its cost, so a design's per-layer sharing is chosen last by a
   coordinate descent of EDAP over each layer's legal factors, re-running only
   share-columns and place on the compiled design.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from imcc.costmodel import estimate
from imcc.errors import MappingError
from imcc.passes.context import Context
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import parse_pipeline
from imcc.search.evaluate import Evaluation, Evaluator, Metrics
from imcc.search.mechanisms import CONVERTER, SHARING, Mechanism, pipeline
from imcc.search.space import SearchSpace

TOLERANCE = 1e-9
"""Drops are differences of accuracies (k / n): a drop equal to the budget must not miss it by a
rounding error."""
ROUNDS = 6
"""Composed designs verified at most, per search."""


UNIFORM_RANGE = 5.0
"""The largest single-layer drop, in budgets, of a layer that a repair starts from (`compose`)
and of a mechanism whose uniform design is an origin (`explore`): the composition adds
single-layer drops, a model of small perturbations (the premise above), which a design of
layers that alone lose more is not."""


@dataclass(frozen=True, slots=True)
class Measured:
    """One measured design: its mechanism per layer, pipeline, costs and accuracy."""

    mechanisms: tuple[str, ...]
    pipeline: str
    metrics: Metrics | None
    accuracy: float | None
    illegal: str | None = None
    quantized: float | None = None  # the accuracy with lossless converters, same samples
    finetuned: str | None = None  # the model PS-QAT fine-tuned for it (search/psqat.py)

    @classmethod
    def of(cls, chosen: Sequence[Mechanism], text: str, evaluation: Evaluation) -> Measured:
        """Record an evaluation of the design `chosen` (pipeline `text`)."""
        return cls(
            tuple(m.name for m in chosen),
            text,
            evaluation.metrics,
            evaluation.accuracy,
            evaluation.illegal,
            evaluation.quantized,
            evaluation.finetuned,
        )


def evaluated(
    evaluator: Evaluator,
    space: SearchSpace,
    chosen: Sequence[Mechanism],
    *,
    sharing: Sequence[int] | None = None,
    only: int | None = None,
) -> Measured:
    """Compile, price and simulate the design `chosen` (mechanisms.pipeline, `sharing`
    overriding theirs; `only`: Evaluator.evaluate's) and record it."""
    text = pipeline(space, chosen, sharing)
    return Measured.of(chosen, text, evaluator.evaluate(text, only=only))


@dataclass
class Sensitivity:
    """The baseline and, per (layer, mechanism name), the design changing that layer alone."""

    menu: tuple[Mechanism, ...]
    baseline: Measured
    single: dict[tuple[int, str], Measured] = field(default_factory=dict)
    # the baseline on the subset composed designs are verified on, when that is not the
    # measurement's (a larger one: `search`'s verifier); the origin of every measured drop
    reference: Measured | None = None

    @property
    def verified_baseline(self) -> Measured:
        """Return the baseline as the verification subset measures it."""
        return self.reference or self.baseline

    def drop(self, layer: int, name: str) -> float | None:
        """Return the accuracy drop (0..1, at least 0) of `layer` under mechanism `name`
        against the exact network, or None when that design is illegal or was not measured."""
        if name == self.menu[0].name:
            return 0.0
        found = self.single.get((layer, name))
        exact = self.baseline.quantized
        if exact is None:
            exact = self.baseline.accuracy
        if found is None or found.accuracy is None or exact is None:
            return None
        return max(exact - found.accuracy, 0.0)

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
    evaluator's search subset; `report` sees each design as it is measured. Workers sharing
    the evaluator's store divide the designs: each first runs those no other is running, then
    waits for (or takes over) the rest."""
    menu = tuple(menu)
    base = [menu[0]] * len(space.layers)
    designs = [(None, base)] + [
        (layer, [*base[:layer], mechanism, *base[layer + 1 :]])
        for layer in (range(len(space.layers)) if layers is None else layers)
        for mechanism in menu[1:]
    ]
    done: dict[int, Measured] = {}
    for wait in (False, True):
        for index, (layer, chosen) in enumerate(designs):
            if index in done:
                continue
            text = pipeline(space, chosen)
            evaluation = evaluator.evaluate(text, only=layer, wait=wait)
            if evaluation is None:
                continue  # another worker runs it: come back for it
            done[index] = Measured.of(chosen, text, evaluation)
            if report is not None:
                report(done[index])
    result = Sensitivity(menu, done[0])
    for index, (layer, chosen) in enumerate(designs[1:], 1):
        result.single[(layer, chosen[layer].name)] = done[index]  # type: ignore[index]
    return result


def predicted(
    sensitivity: Sensitivity,
    names: Sequence[str],
    penalty: float = 0.0,
    origin: Measured | None = None,
) -> tuple[float, float]:
    """Return a design's predicted accuracy drop and EDAP (J*s*mm²) from the single-layer
    measurements (module docstring, step 2): the measured design `origin` (default the
    baseline) plus, for every layer whose mechanism differs from the origin's, the difference
    of the two mechanisms' single-layer drops and costs, and `penalty` per such layer."""
    origin = origin or sensitivity.verified_baseline
    start = origin.metrics
    reference = sensitivity.verified_baseline.accuracy
    assert start is not None and origin.accuracy is not None and reference is not None
    drop = max(reference - origin.accuracy, 0.0)
    energy, latency, area = start.energy_j, start.latency_s, start.area_mm2
    for layer, (name, before) in enumerate(zip(names, origin.mechanisms, strict=True)):
        if name == before:
            continue
        new_drop, old_drop = sensitivity.drop(layer, name), sensitivity.drop(layer, before)
        new, old = sensitivity.change(layer, name), sensitivity.change(layer, before)
        assert None not in (new_drop, old_drop, new, old)
        drop += new_drop - old_drop + penalty  # type: ignore[operator]
        energy += new[0] - old[0]  # type: ignore[index]
        latency += new[1] - old[1]  # type: ignore[index]
        area += new[2] - old[2]  # type: ignore[index]
    if min(energy, latency, area) <= 0:
        return drop, math.inf  # the additive model broke down: never prefer it
    return drop, energy * latency * area


def _trials(sensitivity: Sensitivity, names: list[str], penalty: float, origin: Measured):
    """Yield every design one layer away from `names` (a measured mechanism in that layer) as
    (layer, mechanism name, predicted drop, predicted EDAP)."""
    for layer in range(len(names)):
        for mechanism in sensitivity.menu:
            if mechanism.name == names[layer] or sensitivity.drop(layer, mechanism.name) is None:
                continue
            trial = [*names[:layer], mechanism.name, *names[layer + 1 :]]
            yield (layer, mechanism.name, *predicted(sensitivity, trial, penalty, origin))


def in_range(sensitivity: Sensitivity, names: Sequence[str], budget: float) -> bool:
    """Return whether every layer's mechanism in `names` alone costs at most `UNIFORM_RANGE`
    budgets (measured; an unmeasured one is out of range)."""
    limit = UNIFORM_RANGE * budget + TOLERANCE
    return all(
        (drop := sensitivity.drop(layer, name)) is not None and drop <= limit
        for layer, name in enumerate(names)
    )


def compose(
    sensitivity: Sensitivity,
    budget: float,
    penalty: float = 0.0,
    origin: Measured | None = None,
) -> tuple[str, ...]:
    """Return the mechanism names per layer that the greedy descent from `origin` (default the
    baseline) picks within a predicted accuracy drop of `budget` (0..1), `penalty` charged per
    layer changed from the origin. An origin predicted beyond the budget (a measured design
    that lost more, such as a uniform one) is first repaired: the change that buys back the
    most predicted accuracy per unit of log EDAP it adds, until the budget holds; the origin
    itself is returned when no change helps, or when one of its layers alone costs more than
    `UNIFORM_RANGE` budgets (`in_range`: the sum of single-layer drops does not describe a
    design made of such layers, e.g. one at chance)."""
    origin = origin or sensitivity.verified_baseline
    names = list(origin.mechanisms)
    drop, edap = predicted(sensitivity, names, penalty, origin)
    if drop > budget + TOLERANCE and not in_range(sensitivity, names, budget):
        return tuple(names)  # beyond what adding single-layer drops describes
    while drop > budget + TOLERANCE:
        repair: tuple[float, int, str, float, float] | None = None
        for layer, name, trial_drop, trial_edap in _trials(sensitivity, names, penalty, origin):
            if not trial_drop < drop or not math.isfinite(trial_edap):
                continue
            cost = max(math.log(trial_edap) - math.log(edap), 1e-12)
            value = (drop - trial_drop) / cost
            if repair is None or value > repair[0]:
                repair = (value, layer, name, trial_drop, trial_edap)
        if repair is None:
            return tuple(origin.mechanisms)
        _, layer, name, drop, edap = repair
        names[layer] = name
    while True:
        best: tuple[float, int, str, float, float] | None = None
        for layer, name, trial_drop, trial_edap in _trials(sensitivity, names, penalty, origin):
            if trial_drop > budget + TOLERANCE or not trial_edap < edap:
                continue
            gain = (math.log(edap) - math.log(trial_edap)) / max(trial_drop - drop, 1e-4)
            if best is None or gain > best[0]:
                best = (gain, layer, name, trial_drop, trial_edap)
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
    origin: Measured | None = None,
    report: Callable[[Measured], None] | None = None,
    verifier: Evaluator | None = None,
) -> list[Measured]:
    """Compose from `origin` (default the baseline) and verify designs within a real accuracy
    drop of `budget` (module docstring, step 3); return every verified design. With a
    `verifier` (an evaluator of a larger subset, the table's `reference` measured by it; the
    origin too), designs are verified on its subset instead of the measurement's."""
    by_name = {m.name: m for m in sensitivity.menu}
    origin = origin or sensitivity.verified_baseline
    verified: list[Measured] = []
    penalty = 0.0
    base_accuracy = sensitivity.verified_baseline.accuracy
    if verifier is not None:
        assert sensitivity.reference is not None, "a verifier needs the table's reference"
        evaluator = verifier
    for _ in range(ROUNDS):
        names = compose(sensitivity, budget, penalty, origin)
        if names == origin.mechanisms or any(v.mechanisms == names for v in verified):
            break
        measured = evaluated(evaluator, space, [by_name[n] for n in names])
        verified.append(measured)
        if report is not None:
            report(measured)
        if measured.accuracy is None or base_accuracy is None:
            break
        drop = base_accuracy - measured.accuracy
        if drop <= budget + TOLERANCE:
            # within the budget: descend on from it, its measured accuracy the new start of
            # every prediction (the single-layer drops sum their noise; a verified design
            # replaces that sum by a measurement and frees what it overestimated)
            origin = measured
            continue
        expected, _ = predicted(sensitivity, names, penalty, origin)
        changed = sum(a != b for a, b in zip(names, origin.mechanisms, strict=True))
        penalty += max(drop - expected, 0.0) / changed
    return verified


def explore(
    evaluator: Evaluator,
    space: SearchSpace,
    sensitivity: Sensitivity,
    budget: float,
    *,
    origins: Sequence[Measured] = (),
    report: Callable[[Measured], None] | None = None,
    verifier: Evaluator | None = None,
) -> list[Measured]:
    """Return the origins and every design `search` verifies from the baseline, from each of
    `origins` (measured designs, e.g. the papers'), and from uniform designs: every layer one
    mechanism, for each mechanism within `UNIFORM_RANGE` budgets in every layer, measured
    (on the `verifier`'s subset when given); those cheaper than the best design within the
    budget found before them are searched from, cheapest first (their accuracy repaired where
    it costs least, then descended): only they can lead below it. Greedy descents from the
    baseline change a few layers at a time, while a converter's saving on the chip comes
    when every layer has it: starting from the other end finds such designs."""
    check = verifier or evaluator
    layers = len(space.layers)

    def searched_from(origin: Measured) -> list[Measured]:
        return search(
            evaluator, space, sensitivity, budget, origin=origin, report=report, verifier=verifier
        )

    found = [sensitivity.verified_baseline, *origins]
    for origin in found[:]:
        if origin.accuracy is not None and origin.metrics is not None:
            found += searched_from(origin)
    uniforms = [
        evaluated(check, space, [mechanism] * layers)
        for mechanism in sensitivity.menu[1:]
        if in_range(sensitivity, [mechanism.name] * layers, budget)
    ]
    found += uniforms
    if report is not None:
        for design in uniforms:
            report(design)
    for origin in sorted(
        (u for u in uniforms if u.metrics is not None and u.accuracy is not None),
        key=lambda u: u.metrics.edap,  # type: ignore[union-attr]
    ):
        incumbent = best(sensitivity, found, budget).metrics
        if incumbent is not None and origin.metrics.edap >= incumbent.edap:  # type: ignore[union-attr]
            break
        found += searched_from(origin)
    return found


def best(sensitivity: Sensitivity, verified: Sequence[Measured], budget: float) -> Measured:
    """Return the verified design of lowest EDAP within a measured drop of `budget`, else the
    baseline (both on the verification subset)."""
    base = sensitivity.verified_baseline
    within = [
        v
        for v in verified
        if v.metrics is not None
        and v.accuracy is not None
        and base.accuracy is not None
        and base.accuracy - v.accuracy <= budget + TOLERANCE
    ]
    return min(within, key=lambda v: v.metrics.edap) if within else base  # type: ignore[union-attr]


SHARING_PASSES = 2
"""Sweeps of the sharing descent over the layers (a second sweep rarely changes anything)."""


def tune_sharing(
    evaluator: Evaluator,
    space: SearchSpace,
    sensitivity: Sensitivity,
    design: Measured,
) -> Measured:
    """Return `design` with the per-layer column sharing of lowest EDAP (module docstring,
    step 4), measured again (its accuracy must not change); the design itself when no
    sharing beats its own."""
    target = evaluator.problem.target
    by_name = {m.name: m for m in sensitivity.menu}
    chosen = [by_name[n] for n in design.mechanisms]
    own = [int(m.entry(SHARING)) for m in chosen]
    sharing = list(own)
    compiled = evaluator.compile(design.pipeline)

    def edap(factors: list[int]) -> float:
        spelled = "[" + ",".join(map(str, factors)) + "]"
        passes = parse_pipeline(f"share-columns{{per_layer={spelled}}},place")
        try:
            graph = PassManager(passes).run(compiled, Context(target=target))
        except MappingError:
            return math.inf
        return estimate(graph, target).edap

    best = edap(sharing)
    for _ in range(SHARING_PASSES):
        changed = False
        for layer, mechanism in enumerate(chosen):
            converter = target.converter(mechanism.entry(CONVERTER))
            for factor in converter.column_sharing or target.column_sharing:
                trial = [*sharing[:layer], factor, *sharing[layer + 1 :]]
                value = edap(trial)
                if value < best * (1 - 1e-9):
                    best, sharing, changed = value, trial, True
        if not changed:
            break
    if sharing == own:
        return design
    return evaluated(evaluator, space, chosen, sharing=sharing)
