"""What a search leaves in `--out`: search points, Pareto fronts, pareto.json, pareto.png and the
terminal summary.

A *point* is a finished trial with costs and accuracy. The front is the set of feasible points
that no other feasible point beats on both accuracy (higher) and the objective (lower).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from imcc.files import write_file, write_text
from imcc.search.evaluate import OBJECTIVES, Metrics
from imcc.search.storage import ILLEGAL, INTERRUPTED, PIPELINE, RESULT


@dataclass(frozen=True, slots=True)
class Point:
    """One evaluated design: its pipeline string, costs and accuracy."""

    study: str
    trial: int
    role: str  # search, phase1, phase2, random, baseline
    pipeline: str  # the full pipeline `imcc compile --passes` replays
    metrics: Metrics
    accuracy: float | None  # on the check subset once checked, else the search subset's
    search_accuracy: float | None
    checked: bool = False
    meets_floor: bool | None = None  # accuracy at or above the floor (None: not judged)
    model: str | None = None  # the model PS-QAT fine-tuned for it (None: the search's)

    def objective(self, name: str) -> float:
        """Return the value of a `--objective` (lower is better)."""
        return getattr(self.metrics, OBJECTIVES[name])

    def to_dict(self) -> dict[str, Any]:
        """Return the pareto.json record of the point."""
        return {
            "pipeline": self.pipeline,
            **self.metrics.to_dict(),
            "accuracy": self.accuracy,
            "search_accuracy": self.search_accuracy,
            "checked": self.checked,
            "meets_floor": self.meets_floor,
            "study": self.study,
            "trial": self.trial,
            "role": self.role,
            **({} if self.model is None else {"model": self.model}),
        }


@dataclass(frozen=True, slots=True)
class TrialCounts:
    """How the trials of a search ended."""

    finished: int
    complete: int
    pruned: int
    illegal: int
    interrupted: int  # told FAIL by Ctrl-C, or left running by a killed process
    reasons: tuple[tuple[str, int], ...]  # illegal reasons by pass, most frequent first
    examples: tuple[str, ...]  # one full reason per pass

    def to_dict(self) -> dict[str, Any]:
        """Return the counts as pareto.json writes them."""
        return {
            "finished": self.finished,
            "complete": self.complete,
            "pruned": self.pruned,
            "illegal": self.illegal,
            "interrupted": self.interrupted,
            "illegal_by_pass": dict(self.reasons),
            "illegal_examples": list(self.examples),
        }


def count_trials(studies: Iterable[optuna.Study]) -> TrialCounts:
    """Count the trials of the studies by how they ended; group illegal ones by pass."""
    complete = pruned = illegal = interrupted = 0
    by_pass: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for study in studies:
        for trial in study.get_trials(deepcopy=False):
            if trial.state is TrialState.COMPLETE:
                complete += 1
            elif trial.state is TrialState.PRUNED:
                pruned += 1
            elif trial.state is TrialState.FAIL and ILLEGAL in trial.user_attrs:
                illegal += 1
                reason = str(trial.user_attrs[ILLEGAL])
                name = reason.split(":", 1)[0]
                by_pass[name] += 1
                examples.setdefault(name, reason)
            elif trial.state is TrialState.RUNNING or INTERRUPTED in trial.user_attrs:
                interrupted += 1
    return TrialCounts(
        complete + pruned + illegal,
        complete,
        pruned,
        illegal,
        interrupted,
        tuple(by_pass.most_common()),
        tuple(examples.values()),
    )


def points_of(study: optuna.Study) -> list[Point]:
    """Return the complete trials of a study that measured accuracy, as points."""
    points = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        result = trial.user_attrs.get(RESULT, {})
        if result.get("accuracy") is None or "metrics" not in result:
            continue
        accuracy = float(result["accuracy"])
        points.append(
            Point(
                study.study_name,
                trial.number,
                str(result["role"]),
                str(trial.user_attrs[PIPELINE]),
                Metrics(**result["metrics"]),
                accuracy,
                accuracy,
            )
        )
    return points


def meets(point: Point, area_mm2: float | None, floor: float | None) -> bool:
    """Say whether a point is within the area budget and at or above the accuracy floor."""
    if area_mm2 is not None and point.metrics.area_mm2 > area_mm2:
        return False
    return floor is None or (point.accuracy is not None and point.accuracy >= floor)


def pareto_front(points: Sequence[Point], objective: str) -> list[Point]:
    """Return the points no other point beats on accuracy and objective, by objective."""
    ordered = sorted(
        points, key=lambda p: (p.objective(objective), -(p.accuracy or 0.0), p.study, p.trial)
    )
    front: list[Point] = []
    for point in ordered:
        if not front or (point.accuracy or 0.0) > (front[-1].accuracy or 0.0):
            front.append(point)
    return front


def checked(point: Point, accuracy: float, floor: float) -> Point:
    """Return the point with its accuracy from the check subset, judged against the floor."""
    return replace(point, accuracy=accuracy, checked=True, meets_floor=accuracy >= floor)


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write pareto.json."""
    write_text(path, json.dumps(record, indent=2) + "\n")


def plot(
    path: Path,
    objective: str,
    points: Sequence[Point],
    front: Sequence[Point],
    random_front: Sequence[Point],
    baseline: Point | None,
    best: Point | None,
    floor: float | None,
    title: str,
) -> None:
    """Draw accuracy against the objective: every point, the front, the random-search front,
    the baseline and the best point (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unit = {
        "edap": "EDAP (J·s·mm²)",
        "energy": "energy (J)",
        "latency": "latency (s)",
        "area": "area (mm²)",
    }[objective]
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)

    def draw(items: Sequence[Point], **style: Any) -> None:
        if items:
            axes.plot(
                [p.objective(objective) for p in items],
                [100 * (p.accuracy or 0.0) for p in items],
                **style,
            )

    draw(points, linestyle="none", marker=".", color="0.75", label="trials (search subset)")
    draw(
        random_front,
        linestyle="--",
        marker="s",
        color="tab:orange",
        markersize=4,
        label="random-search front",
    )
    draw(front, linestyle="-", marker="o", color="tab:blue", label="Pareto front (checked)")
    if baseline is not None:
        draw(
            [baseline],
            linestyle="none",
            marker="*",
            color="black",
            markersize=12,
            label="baseline (default pipeline)",
        )
    if best is not None:
        draw(
            [best],
            linestyle="none",
            marker="o",
            markersize=12,
            markerfacecolor="none",
            markeredgecolor="red",
            label="best",
        )
    if floor is not None:
        axes.axhline(
            100 * floor, color="tab:red", linestyle=":", linewidth=1, label="accuracy floor"
        )
    axes.set_xscale("log")
    axes.set_xlabel(unit)
    axes.set_ylabel("accuracy (%)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    write_file(path, lambda stream: figure.savefig(stream, format=path.suffix[1:] or "png"))
    plt.close(figure)


def _row(point: Point, objective: str) -> str:
    m = point.metrics
    accuracy = "n/a" if point.accuracy is None else f"{100 * point.accuracy:.2f}%"
    accuracy += "" if point.meets_floor is None else (" " if point.meets_floor else "<")
    return (
        f"  {point.objective(objective):>11.4g} {m.energy_j:>10.4g} {m.latency_s:>10.4g} "
        f"{m.area_mm2:>8.4g} {accuracy:>9}  {point.role} #{point.trial}"
    )


def format_summary(
    record: dict[str, Any],
    front: Sequence[Point],
    baseline: Point | None,
    best: Point | None,
    objective: str,
) -> str:
    """Return the terminal summary of a finished search."""
    counts = record["trials"]
    lines = [
        f"imcc search: {record['model']} on {record['target']}, strategy "
        f"{record['strategy']}, objective {objective}",
        f"trials: {counts['finished']} finished ({counts['complete']} complete, "
        f"{counts['pruned']} pruned by the accuracy probe, {counts['illegal']} illegal), "
        f"{counts['interrupted']} interrupted; {record['trials_per_second']:.2f} trials/s "
        "this run",
    ]
    for name, count in counts["illegal_by_pass"].items():
        lines.append(f"  illegal in {name}: {count}")
    for example in counts["illegal_examples"][:3]:
        lines.append(f"    e.g. {example[:160]}")
    accuracy = record["accuracy"]
    lines.append(
        f"accuracy: {accuracy['reference']} model {100 * accuracy['reference_value']:.2f}%"
        f" on {accuracy['check_samples']} check samples; floor "
        f"{100 * accuracy['floor']:.2f}% (max drop {accuracy['max_drop_points']} points)"
    )
    if record.get("area_budget_mm2") is not None:
        lines.append(f"area budget: {record['area_budget_mm2']:.4g} mm2")
    lines.append(f"Pareto front ({len(front)} points, accuracy checked; < below the floor):")
    lines.append(
        f"  {objective:>11} {'energy J':>10} {'latency s':>10} {'area mm2':>8} "
        f"{'accuracy':>9}  trial"
    )
    lines += [_row(p, objective) for p in front]
    if baseline is not None:
        lines.append("baseline (default pipeline):")
        lines.append(_row(baseline, objective))
    if best is None:
        lines.append("best: no point meets the budgets")
    else:
        lines.append("best:")
        lines.append(_row(best, objective))
        lines.append(f"  pipeline: {best.pipeline}")
        lines.append(f"replay: {record['replay']}")
    return "\n".join(lines)
