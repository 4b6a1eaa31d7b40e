"""Search strategies as optuna studies: `pareto`, `xpert` (two phases) and `random`.

- `pareto`: one multi-objective study, accuracy (maximised) against the objective
  (minimised), under the budgets, sampled by optuna's TPE with constraints.
- `xpert` (XPert, DAC 2023): phase 1 chooses the structure (converter type and column sharing
  per layer, placement) for the lowest latency within the area budget, accuracy not measured
  (precisions at the passes' defaults); phase 2 keeps the best feasible phase-1 design and
  chooses converter precision, input precision and the other precision options per layer for
  the lowest objective (energy unless `--objective` says otherwise) within the accuracy floor:
  a local search down from the widest design (search/descent.py), since almost all of
  that space loses the network.
- `random`: the same two objectives as `pareto`, uniformly sampled: the baseline every report
  compares against.

A phase asks optuna for trials one at a time (ask / tell) until its study holds the requested
number of finished trials, so that every trial is stored as it finishes and a rerun resumes.
Constraints are `value <= 0` terms: `area - budget` and `floor - accuracy`.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from imcc.search.descent import DescentSampler
from imcc.search.evaluate import OBJECTIVES, Evaluation, Evaluator
from imcc.search.space import Dimension, SearchSpace
from imcc.search.storage import (
    ILLEGAL,
    INTERRUPTED,
    PIPELINE,
    RESULT,
    best_feasible,
    fail_stale_trials,
    finished,
    finished_count,
    heartbeat,
    heartbeat_period,
)

STRATEGIES = ("pareto", "xpert", "random", "sensitivity")
"""`sensitivity` (search/sensitivity.py) runs no optuna study: search/run.py runs it itself."""

PHASE1 = {
    ("select-adc", "per_layer_converter"),
    ("select-adc", "converter"),
    ("share-columns", "per_layer"),
    ("share-columns", "factor"),
    ("tile-crossbar", "rows"),
    ("tile-crossbar", "columns"),
    ("place", "replicate"),
}
"""XPert's phase-1 dimensions (structure); every other dimension is phase 2's (precision)."""


@dataclass(frozen=True)
class Limits:
    """The budgets every trial is judged by: area in mm² (at most `area_mm2`, at least
    `area_floor_mm2` where given: XPert's area window) and the accuracy floor (0..1)."""

    area_mm2: float | None
    accuracy_floor: float | None
    area_floor_mm2: float | None = None

    def constraints(self, evaluation: Evaluation) -> list[float]:
        """Return the `<= 0` constraint terms of an evaluated trial (0 where not known): the
        area's (the larger excess over either bound) and the accuracy's."""
        area = accuracy = 0.0
        if evaluation.metrics is not None and self.area_mm2 is not None:
            area = evaluation.metrics.area_mm2 - self.area_mm2
        if evaluation.metrics is not None and self.area_floor_mm2 is not None:
            area = max(area, self.area_floor_mm2 - evaluation.metrics.area_mm2)
        if evaluation.accuracy is not None and self.accuracy_floor is not None:
            accuracy = self.accuracy_floor - evaluation.accuracy
        return [area, accuracy]


@dataclass(frozen=True)
class Phase:
    """One study a strategy runs: what it searches, how it scores, how many trials."""

    study: str
    role: str  # search, phase1, phase2, random (the comparison run)
    directions: tuple[str, ...]
    score: Callable[[Evaluation], list[float]]
    dimensions: tuple[Dimension, ...]
    fixed: Mapping[str, str]  # choices of dimensions this phase does not search
    trials: int
    accuracy: bool  # whether trials measure accuracy
    sampler: str  # tpe, random or descent


def multi_objective(objective: str) -> Callable[[Evaluation], list[float]]:
    """Score a trial as (accuracy, objective) for a two-objective study."""
    field = OBJECTIVES[objective]
    return lambda e: [e.accuracy or 0.0, getattr(e.metrics, field)]


def single_objective(objective: str) -> Callable[[Evaluation], list[float]]:
    """Score a trial by one minimised cost figure."""
    field = OBJECTIVES[objective]
    return lambda e: [getattr(e.metrics, field)]


def make_sampler(kind: str, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    """Return a `kind` sampler (tpe, random or descent: search/descent.py) seeded anew for
    every trial by `seed` and the trial's number (see `TrialSeeded`)."""

    def make(state: int) -> optuna.samplers.BaseSampler:
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=state)
        if kind == "descent":
            return DescentSampler(state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(  # constant_liar (the default): workers that
                # share a study see each other's running trials and sample elsewhere
                seed=state,
                n_startup_trials=max(4, min(10, trials // 4)),
                multivariate=True,
            )

    return TrialSeeded(make, seed)


class TrialSeeded(optuna.samplers.BaseSampler):
    """Draw every trial with a fresh sampler seeded by the search seed and the trial's number.

    The storage numbers a study's trials once each, whichever process asks for them, so a
    search is reproducible from its seed, a resumed search does not replay the draws of the
    run before it, and workers sharing a study with the same `--seed` never draw alike.
    """

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._make = make
        self._seed = seed
        self._sampler = make(trial_seed(seed, -1))

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Seed a new sampler for the trial being asked."""
        self._sampler = self._make(trial_seed(self._seed, trial.number))
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, optuna.distributions.BaseDistribution]:
        """Return the trial's sampler's joint search space."""
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, optuna.distributions.BaseDistribution],
    ) -> dict[str, object]:
        """Sample the joint search space with the trial's sampler."""
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> object:
        """Sample one parameter with the trial's sampler."""
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """Let the trial's sampler see how the trial ended (TPE records its constraints)."""
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Reseed the current trial's sampler at random (optuna's threads; unused here)."""
        self._sampler.reseed_rng()


def trial_seed(seed: int, number: int) -> int:
    """Return the sampler seed of trial `number` of a search seeded `seed`."""
    return int(np.random.SeedSequence([seed, number + 1]).generate_state(1)[0])


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Hold a first Ctrl-C until the caller checks (yields `pending()`); a second one raises
    KeyboardInterrupt at once. Python raises KeyboardInterrupt wherever the main thread is, and
    one raised inside a finaliser or a library's cleanup is printed and dropped, which left a
    search running to its end; checking between trials never loses it."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    pending: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(pending)
    finally:
        signal.signal(signal.SIGINT, previous)


def run_phase(
    phase: Phase,
    study: optuna.Study,
    space: SearchSpace,
    evaluator: Evaluator,
    limits: Limits,
    on_trial: Callable[[FrozenTrial], None],
) -> None:
    """Ask, evaluate and tell trials until the study holds `phase.trials` finished ones.

    Illegal trials are told FAIL with the reason in the user attribute `illegal`; trials the
    probe rules out are PRUNED; a first Ctrl-C stops the search once the running trial is
    stored, a second one tells the running trial FAIL (`interrupted`) and re-raises, so that
    the storage never keeps a half-written trial as finished. A running
    trial keeps a heartbeat; once a heartbeat period, stale trials of killed workers are failed.
    """
    with deferred_interrupt() as interrupted:
        _trials(phase, study, space, evaluator, limits, on_trial, interrupted)


def _trials(
    phase: Phase,
    study: optuna.Study,
    space: SearchSpace,
    evaluator: Evaluator,
    limits: Limits,
    on_trial: Callable[[FrozenTrial], None],
    interrupted: Callable[[], bool],
) -> None:
    """The trial loop of run_phase; a held Ctrl-C stops it between trials."""
    searched = [d for d in phase.dimensions if d.searched]
    floor = limits.accuracy_floor
    period = heartbeat_period(study)
    checked = -math.inf
    while True:
        if interrupted():
            raise KeyboardInterrupt
        if time.monotonic() - checked >= period:  # a killed worker's trials, once a period
            fail_stale_trials(study)
            checked = time.monotonic()
        if finished_count(study) >= phase.trials:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", "Heartbeat of storage")  # run_phase keeps it
            trial = study.ask()
        try:
            with heartbeat(study, trial):  # from before the sampler draws: TPE takes a while
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    for dimension in searched:
                        trial.suggest_categorical(dimension.key, dimension.choices)
                choices = {**phase.fixed, **{k: str(v) for k, v in trial.params.items()}}
                pipeline = space.pipeline(choices)
                trial.set_user_attr(PIPELINE, space.full_pipeline(choices))
                evaluation = evaluator.evaluate(pipeline, accuracy=phase.accuracy, floor=floor)
                state, values = _record(trial, evaluation, phase, limits)
                frozen = study.tell(trial, values, state=state, skip_if_finished=True)
        except UpdateFinishedTrialError:  # this worker stalled past the grace period and
            continue  # another one failed its trial as stale: the result is dropped
        except KeyboardInterrupt:
            with contextlib.suppress(UpdateFinishedTrialError):
                trial.set_user_attr(INTERRUPTED, True)
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        if finished(frozen):  # else failed as stale just before the tell
            on_trial(frozen)


def _record(
    trial: optuna.Trial, evaluation: Evaluation, phase: Phase, limits: Limits
) -> tuple[TrialState, list[float] | None]:
    """Store an evaluation in the trial's user attributes (one write: `result`, or `illegal`
    with the reason); return the trial's state and objective values."""
    if evaluation.illegal is not None:
        trial.set_user_attr(ILLEGAL, evaluation.illegal)
        return TrialState.FAIL, None
    assert evaluation.metrics is not None
    constraints = limits.constraints(evaluation)
    trial.set_user_attr(
        RESULT,
        {
            "role": phase.role,
            "metrics": evaluation.metrics.to_dict(),
            "accuracy": evaluation.accuracy,
            "accuracy_samples": evaluation.samples,
            "layer_error": evaluation.layer_error,
            "pruned": evaluation.pruned,
            "constraints": constraints,
        },
    )
    for key, value in zip(("area", "accuracy"), constraints, strict=True):
        trial.set_constraint(key, value)  # the samplers prefer feasible trials
    if evaluation.pruned:
        return TrialState.PRUNED, None
    return TrialState.COMPLETE, phase.score(evaluation)


def phase1_trials(trials: int) -> int:
    """Return the trials of xpert's phase 1 out of a search's `trials`: half of them."""
    return max(1, trials // 2)


def widest_design(dimensions: Sequence[Dimension]) -> dict[str, str]:
    """Return where xpert's phase 2 starts: the widest choice of every integer precision
    dimension (input bits, converter bits, samples) and the first, coarsest weight slicing
    (the crossbar's cell-bit slices), i.e. the passes' defaults on phase 1's structure, the
    design phase 1 priced within the area budget; other dimensions are left to the sampler.
    Structure dimensions (phase 1's) are not set. Phase 2 then lowers precision from a design
    within the area budget (and, for most networks, within the accuracy floor) from its first
    trial."""
    corner = {}
    for dimension in dimensions:
        if not dimension.searched or (dimension.pass_name, dimension.option) in PHASE1:
            continue
        if all(c.lstrip("-").isdigit() for c in dimension.choices):
            corner[dimension.key] = max(dimension.choices, key=int)
        elif dimension.option.endswith("slices"):
            corner[dimension.key] = dimension.choices[0]
    return corner


UNIFORM_STEPS = ("assign-input-precision.per_layer_bits", "select-adc.per_layer_bits")
"""The precisions phase 2 lowers in every layer at once before its per-layer descent
(`lower_uniformly`), in this order: the inputs (each bit a whole read of the array), then
the converters. They are XPert's phase-2 dimensions (input precision and ADC precision per
layer, [XPert] §3), the only ones search/channels.py `cheapest_precisions` searches."""


def lower_uniformly(
    study: optuna.Study,
    phase: Phase,
    space: SearchSpace,
    evaluator: Evaluator,
    limits: Limits,
    widest: Mapping[str, str],
    on_trial: Callable[[FrozenTrial], None] = lambda trial: None,
) -> None:
    """Start phase 2 where one precision serves every layer: from the `widest` design, lower
    each of `UNIFORM_STEPS` in every layer one choice at a time while the design keeps the
    accuracy floor and the area stays above the window's floor (`stays`; an area above the
    window's top is no reason to stop: lower precision shrinks it), within the phase's
    trials. A step that fails is tried once more as a trade: an earlier option one choice
    wider in every layer, when the design is priced (cost only, no accuracy: `_priced`) below
    the one the walk stands on. The walk so follows the floor's edge across the options
    instead of stopping where the first option ended: on CIFAR-10 VGG-16 (xpert.hw, 2,000
    validation images) 5-bit inputs hold with 8-bit converters and not with 7, and 6-bit
    inputs with 7-bit converters hold and cost less. The per-layer descent then starts from
    the cheapest feasible of these (the study's best feasible trial, or the one nearest to
    feasibility) instead of spending its trials on the steps every layer can take. Each point
    is a trial of the study: a resumed search reads back the points it holds."""
    trial = run_point(study, phase, space, evaluator, limits, widest, on_trial)
    if trial is None or not stays(trial, limits):
        return
    point = {k: str(v) for k, v in trial.params.items()}  # the sampler's other choices kept
    value = trial.values[0]
    for position, option in enumerate(UNIFORM_STEPS):
        while True:
            lowered = shifted(point, phase, option, -1)
            if lowered == point:
                break
            trial = run_point(study, phase, space, evaluator, limits, lowered, on_trial)
            if trial is None:
                return
            if not stays(trial, limits):
                trades = (
                    shifted(lowered, phase, earlier, 1) for earlier in UNIFORM_STEPS[:position]
                )
                trade = next(
                    (
                        t
                        for t in trades
                        if t != lowered and _priced(phase, space, evaluator, limits, t) < value
                    ),
                    None,
                )
                if trade is None:
                    break
                trial = run_point(study, phase, space, evaluator, limits, trade, on_trial)
                if trial is None or not stays(trial, limits):
                    break
                lowered = trade
            point, value = lowered, trial.values[0]


def shifted(point: Mapping[str, str], phase: Phase, option: str, steps: int) -> dict[str, str]:
    """Return `point` with `option` (`PASS.OPTION`) moved `steps` choices in every layer
    (negative: less precise), each layer's choice held at its dimension's ends."""
    moved = dict(point)
    for dimension in phase.dimensions:
        if dimension.key in point and dimension.key.startswith(f"{option}["):
            index = dimension.choices.index(point[dimension.key]) + steps
            moved[dimension.key] = dimension.choices[min(max(index, 0), len(dimension.choices) - 1)]
    return moved


def _priced(
    phase: Phase,
    space: SearchSpace,
    evaluator: Evaluator,
    limits: Limits,
    choices: Mapping[str, str],
) -> float:
    """Return the phase's (single, minimised) objective of a design priced without accuracy;
    infinite where it is illegal or its area falls below the window's floor (`stays`), so
    that no trade goes there."""
    evaluation = evaluator.evaluate(space.pipeline({**phase.fixed, **choices}), accuracy=False)
    if evaluation.metrics is None:
        return math.inf
    floor = limits.area_floor_mm2
    if floor is not None and evaluation.metrics.area_mm2 < floor:
        return math.inf
    return phase.score(evaluation)[0]


def stays(trial: FrozenTrial, limits: Limits) -> bool:
    """Say whether a uniform step down may go on from a finished trial (`lower_uniformly`):
    it is complete, at or above the accuracy floor, and its area not below the window's
    floor."""
    if trial.state is not TrialState.COMPLETE or RESULT not in trial.user_attrs:
        return False
    result = trial.user_attrs[RESULT]
    accuracy, area = result.get("accuracy"), result["metrics"]["area_mm2"]
    if limits.accuracy_floor is not None and (accuracy is None or accuracy < limits.accuracy_floor):
        return False
    return limits.area_floor_mm2 is None or area >= limits.area_floor_mm2


def run_point(
    study: optuna.Study,
    phase: Phase,
    space: SearchSpace,
    evaluator: Evaluator,
    limits: Limits,
    params: Mapping[str, str],
    on_trial: Callable[[FrozenTrial], None] = lambda trial: None,
) -> FrozenTrial | None:
    """Return the study's finished trial (storage.finished) whose choices include `params`,
    evaluating it as the next trial if there is none; None once the phase's trials are spent
    (or when another worker of a shared study took the point and has not finished it). A
    trial of the point that a killed run left behind (failed, `interrupted`) is asked again."""
    done = [t for t in study.get_trials(deepcopy=False) if finished(t)]

    def holds(trial: FrozenTrial) -> bool:
        # a queued or running trial's choices are its fixed params until the sampler asks them
        chosen = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
        return all(str(chosen.get(k)) == v for k, v in params.items())

    if not any(holds(t) for t in done):
        if len(done) >= phase.trials:
            return None
        fail_stale_trials(study)
        # not optuna's skip_if_exists: it also skips a point whose only trial failed
        pending = study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
        if not any(holds(t) for t in pending):
            study.enqueue_trial(dict(params))
        run_phase(
            replace(phase, trials=len(done) + 1),
            study,
            space,
            evaluator,
            limits,
            on_trial,
        )
    trials = study.get_trials(deepcopy=False)[::-1]
    return next((t for t in trials if finished(t) and holds(t)), None)


def search_phases(
    strategy: str,
    study: str,
    space: SearchSpace,
    objective: str | None,
    trials: int,
    random_trials: int,
) -> list[Phase]:
    """Return the phases of a strategy before any has run (xpert's phase 2 gets its fixed
    choices from phase 1 later: see `phase_two`)."""
    chosen = objective or "edap"
    everything = space.dimensions
    phases: list[Phase] = []
    if strategy == "xpert":
        first = tuple(d for d in everything if (d.pass_name, d.option) in PHASE1)
        phases.append(
            Phase(
                f"{study}/phase1",
                "phase1",
                ("minimize",),
                single_objective("latency"),
                first,
                {},
                phase1_trials(trials),
                False,
                "tpe",
            )
        )
        second = tuple(d for d in everything if (d.pass_name, d.option) not in PHASE1)
        phases.append(
            Phase(
                f"{study}/phase2",
                "phase2",
                ("minimize",),
                single_objective(objective or "energy"),
                second,
                {},
                max(1, trials - phase1_trials(trials)),
                True,
                "descent",
            )
        )
    else:
        phases.append(
            Phase(
                study,
                "search",
                ("maximize", "minimize"),
                multi_objective(chosen),
                everything,
                {},
                trials,
                True,
                "random" if strategy == "random" else "tpe",
            )
        )
    if strategy != "random" and random_trials > 0:
        phases.append(
            Phase(
                f"{study}/random",
                "random",
                ("maximize", "minimize"),
                multi_objective(chosen),
                everything,
                {},
                random_trials,
                True,
                "random",
            )
        )
    return phases


def best_structure(study: optuna.Study) -> dict[str, str] | None:
    """Return the choices of phase 1's best feasible trial (lowest latency within the area
    budget), or None when none is feasible."""
    best = best_feasible(study)
    return None if best is None else {k: str(v) for k, v in best.params.items()}
