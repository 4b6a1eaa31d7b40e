"""xpert phase 2's local search sampler (search/descent.py) on a synthetic constrained study:
it walks down from the start to the feasibility boundary, never repeats a point, and walks up
while its start is below the floor."""

from __future__ import annotations

import optuna
import pytest

from imcc.search.storage import RESULT, best_feasible
from imcc.search.strategies import make_sampler

CHOICES = tuple(str(b) for b in range(1, 9))
KEYS = [f"select-adc.per_layer_bits[{i}]" for i in range(12)]
FLOOR = 80
"""A point is within the synthetic accuracy floor when its choices sum to at least this: few
random points are (the choices of a uniform draw sum to 54 +- 8), as in a real phase 2."""


def _run(start: str, trials: int, seed: int = 0, kind: str = "descent") -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=make_sampler(kind, seed, trials))
    study.enqueue_trial({k: start for k in KEYS})
    for _ in range(trials):
        trial = study.ask()
        total = sum(int(trial.suggest_categorical(k, CHOICES)) for k in KEYS)
        trial.set_user_attr(RESULT, {"constraints": [0.0, float(FLOOR - total)]})
        study.tell(trial, float(total))
    return study


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_descent_reaches_the_floor_from_the_widest_point_without_repeats(seed: int) -> None:
    study = _run("8", 60, seed)
    points = [tuple(t.params[k] for k in KEYS) for t in study.trials]
    assert len(set(points)) == len(points)
    first, second = ([int(t.params[k]) for k in KEYS] for t in study.trials[:2])
    moved = [a - b for a, b in zip(first, second, strict=True) if a != b]
    assert 1 <= len(moved) <= 3 and all(m > 0 for m in moved)  # a few choices, lowered
    best = best_feasible(study)
    assert best is not None and FLOOR <= best.value <= FLOOR + 2  # from 96 down to 80
    for kind in ("random", "tpe"):  # a draw anywhere in the space: only the start is feasible
        other = best_feasible(_run("8", 60, seed, kind=kind))
        assert other is not None and other.value > best.value + 8


def test_descent_climbs_while_below_the_floor() -> None:
    study = _run("1", 40)
    second = study.trials[1]
    assert sum(int(second.params[k]) for k in KEYS) > len(KEYS)  # choices raised
    best = best_feasible(study)
    assert best is not None and best.value <= FLOOR + 4


def test_a_uniform_step_goes_on_above_the_area_window_but_not_below_the_floors() -> None:
    """lower_uniformly's rule: the accuracy floor and the area window's floor stop the steps
    down; an area above the window's top does not (lower precision shrinks it)."""
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import create_trial

    from imcc.search.storage import RESULT
    from imcc.search.strategies import Limits, stays

    def trial(accuracy: float | None, area: float):
        result = {"accuracy": accuracy, "metrics": {"area_mm2": area}}
        return create_trial(
            params={"x": "1"},
            distributions={"x": CategoricalDistribution(["1"])},
            value=1.0,
            user_attrs={RESULT: result},
        )

    limits = Limits(area_mm2=50.0, accuracy_floor=0.9, area_floor_mm2=40.0)
    assert stays(trial(0.92, 45.0), limits)
    assert stays(trial(0.92, 200.0), limits)  # above the window: go on
    assert not stays(trial(0.85, 45.0), limits)  # below the accuracy floor
    assert not stays(trial(0.92, 30.0), limits)  # below the window
    assert not stays(trial(None, 45.0), limits)
    assert stays(trial(None, 45.0), Limits(50.0, None, None))
