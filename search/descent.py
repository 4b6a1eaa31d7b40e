"""A constrained local search sampler for xpert's phase 2: lower precision from the best design
within the floor, a few choices at a time.

Phase 2 minimises energy under an accuracy floor over every layer's precisions: tens of
dimensions in which most random points lose the network (on a Fashion-MNIST VGG, 24 of 30 TPE
trials fell to the probe and the rest stayed below the floor). The feasible region is a
neighbourhood of the widest design, so this sampler walks down from there, as XPert's phase 2
lowers precision per layer while accuracy holds:

- every trial starts from the study's best feasible trial (lowest value within the
  constraints; storage.best_feasible), or while there is none from the complete trial nearest
  to feasibility, and moves one to three of its choices;
- a move goes down the dimension's choices (the passes declare them from least to most
  precise, so down is cheaper): one step, or half the time a jump to a lower choice drawn
  uniformly; up instead while the start is below the accuracy floor; a dimension already at
  its end takes a random other choice;
- a point the study already holds (any state, running included) is not proposed again;
- before any trial is complete (the phase's first trial is the widest design, and the
  uniform steps down from it come next: search/strategies.py `lower_uniformly`), parameters are
  drawn uniformly.

The sampler is stateless between trials: it reads the study, so a resumed or shared study
continues the same walk. `TrialSeeded` seeds it per trial.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from imcc.search.storage import best_feasible, constraints

ATTEMPTS = 64
"""Moves drawn per trial before settling for a point the study already holds."""


class DescentSampler(optuna.samplers.BaseSampler):
    """Propose a neighbour of the best feasible trial, lower in precision (module docstring)."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._proposal: tuple[int, dict[str, Any]] | None = None

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """Return no joint space: parameters come one at a time from the trial's proposal."""
        return {}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """Return nothing (see infer_relative_search_space)."""
        return {}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """Return the trial's proposed value of a parameter (a uniform draw when the proposal
        has none: no feasible trial yet, or a parameter the best trial did not have)."""
        if self._proposal is None or self._proposal[0] != trial.number:
            self._proposal = (trial.number, self._propose(study))
        proposal = self._proposal[1]
        if (
            param_name in proposal
            and isinstance(param_distribution, CategoricalDistribution)
            and proposal[param_name] in param_distribution.choices
        ):
            return proposal[param_name]
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def _propose(self, study: optuna.Study) -> dict[str, Any]:
        best = start(study)
        if best is None:
            return {}
        seen = {_point(t.params) for t in study.get_trials(deepcopy=False)}
        movable = [
            name
            for name, d in best.distributions.items()
            if isinstance(d, CategoricalDistribution) and len(d.choices) > 1
        ]
        if not movable:
            return dict(best.params)
        up = constraints(best)[-1] > 0  # below the accuracy floor: more precision
        proposal: dict[str, Any] = {}
        for _ in range(ATTEMPTS):
            proposal = dict(best.params)
            count = min(len(movable), int(self._rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1])))
            for name in self._rng.choice(movable, size=count, replace=False):
                choices = best.distributions[name].choices  # type: ignore[attr-defined]
                index = choices.index(best.params[name])
                proposal[name] = self._move(list(choices), index, up)
            if _point(proposal) not in seen:
                break
        return proposal

    def _move(self, choices: list[Any], index: int, up: bool) -> Any:
        if up:  # the same walk on the reversed choices
            return self._move(choices[::-1], len(choices) - 1 - index, False)
        if index == 0:
            others = choices[1:]
            return others[int(self._rng.integers(len(others)))]
        if index == 1 or self._rng.random() < 0.5:
            return choices[index - 1]
        return choices[int(self._rng.integers(index))]


def start(study: optuna.Study) -> FrozenTrial | None:
    """Return the trial a move starts from: the best feasible one, else the complete trial
    nearest to feasibility (least total violation: mm² over the area budget plus the fraction
    of accuracy under the floor), else None."""
    best = best_feasible(study)
    if best is not None:
        return best
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(complete, key=lambda t: sum(max(c, 0.0) for c in constraints(t)), default=None)


def _point(params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in params.items()))
