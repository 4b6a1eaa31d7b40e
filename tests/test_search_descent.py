"""xpert phase 2's local search sampler (search/descent.py) on a synthetic constrained study:
it walks down from the start to the feasibility boundary, never repeats a point, and walks up
while its start is below the floor."""

from __future__ import annotations

import json

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


class _Space:
    """A search space's two methods the phase's trial loop calls: a design is its choices."""

    def pipeline(self, choices) -> str:
        return json.dumps(dict(sorted(choices.items())))

    full_pipeline = pipeline


class _Evaluator:
    """Two layers' input bits `i` and converter bits `c`, alike in every layer: the floor
    (0.9) holds where i >= 5 and i + c >= 13; energy is `energy(i, c)`. Records the designs
    whose accuracy it measures."""

    def __init__(self, energy) -> None:
        self.energy = energy
        self.measured: list[tuple[int, int]] = []

    def evaluate(self, pipeline: str, accuracy: bool, floor: float | None = None):
        from imcc.search.evaluate import Evaluation, Metrics

        choices = json.loads(pipeline)
        i = min(int(v) for k, v in choices.items() if k.startswith("assign"))
        c = min(int(v) for k, v in choices.items() if k.startswith("select"))
        cost = float(self.energy(i, c))
        metrics = Metrics(cost, 1.0, 10.0, cost * 10.0, 1.0, 1.0)
        if not accuracy:
            return Evaluation(metrics)
        self.measured.append((i, c))
        held = i >= 5 and i + c >= 13
        return Evaluation(metrics, 0.9 + 0.01 * (i + c - 13) if held else 0.5, 100)


def _walk(energy, tmp_path) -> list[tuple[int, int]]:
    from imcc.search.space import Dimension
    from imcc.search.storage import open_storage
    from imcc.search.strategies import Limits, Phase, lower_uniformly, single_objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bits = tuple(str(b) for b in range(2, 9))
    dimensions = tuple(
        Dimension(name, "per_layer_bits", layer, bits[2:] if name == "select-adc" else bits)
        for name in ("assign-input-precision", "select-adc")
        for layer in range(2)
    )
    phase = Phase(
        "walk",
        "phase2",
        ("minimize",),
        single_objective("energy"),
        dimensions,
        {},
        30,
        True,
        "descent",
    )
    study = optuna.create_study(
        storage=open_storage(f"sqlite:///{(tmp_path / 'walk.db').resolve()}"),
        direction="minimize",
        sampler=make_sampler("descent", 0, 30),
    )
    evaluator = _Evaluator(energy)
    widest = {d.key: "8" for d in dimensions}
    lower_uniformly(study, phase, _Space(), evaluator, Limits(None, 0.9), widest)
    return evaluator.measured


def test_uniform_steps_trade_an_input_bit_for_a_converter_bit_that_costs_less(tmp_path) -> None:
    """lower_uniformly: inputs down to 5 bits (4 fails), then a converter step fails at 5-bit
    inputs and is retried with 6-bit inputs, which holds and is priced lower: the walk follows
    the floor's edge while a trade saves, and stops where the inputs are at their widest."""
    walk = _walk(lambda i, c: i * 2**c, tmp_path)  # converters dominate: a trade saves
    assert walk == [
        (8, 8),
        (7, 8),
        (6, 8),
        (5, 8),
        (4, 8),
        (5, 7),
        (6, 7),
        (6, 6),
        (7, 6),
        (7, 5),
        (8, 5),
        (8, 4),
    ]


def test_a_uniform_trade_priced_above_the_design_it_leaves_is_not_simulated(tmp_path) -> None:
    walk = _walk(lambda i, c: i * c, tmp_path)  # (6, 7) costs 42 against (5, 8)'s 40
    assert walk == [(8, 8), (7, 8), (6, 8), (5, 8), (4, 8), (5, 7)]
