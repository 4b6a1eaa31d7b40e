"""XPert's phase 1 over the network too: train a family's candidates (cached), run the
structure phase (converter type, column sharing: lowest latency within the area budget) on
every candidate accurate enough, and pick the network of the fastest feasible design.

The accuracy gate is the candidates' own float accuracy (the proxy budget's test images)
against the widest candidate's, less `--max-accuracy-drop`: phase 1 judges structure by
latency and area only, and phase 2 then meets the accuracy floor with the peripherals on the
chosen network. Every candidate gets the phase-1 budget of the search itself (half of
`--trials`: cost-only trials are cheap, and a handful per candidate would rank the networks by
the luck of their few column-sharing draws). Every candidate's phase-1 trials are their own
study (`NAME/network/LABEL`) in the search's storage, so an interrupted search resumes them;
`network.json` in `--out` records every candidate and the choice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from imcc.errors import UserError
from imcc.files import write_text
from imcc.search.evaluate import Evaluator, Problem
from imcc.search.family import Candidate, NetworkFamily, ProxyBudget, candidate
from imcc.search.space import build_space
from imcc.search.storage import RESULT, best_feasible, open_study
from imcc.search.strategies import (
    Limits,
    make_sampler,
    phase1_trials,
    run_phase,
    search_phases,
)
from imcc.target import Target

NETWORK_JSON = "network.json"


@dataclass(frozen=True)
class NetworkChoice:
    """A candidate with its phase-1 result: fastest feasible latency (s) and its area."""

    candidate: Candidate
    feasible: bool  # float accuracy within the drop of the widest candidate's
    latency_s: float | None
    area_mm2: float | None

    def to_dict(self) -> dict[str, Any]:
        """Return the choice as a JSON-ready object."""
        return {
            **self.candidate.to_dict(),
            "accurate_enough": self.feasible,
            "phase1_latency_s": self.latency_s,
            "phase1_area_mm2": self.area_mm2,
        }


def fastest(study: optuna.Study) -> tuple[float, float] | None:
    """Return (latency, area) of a phase-1 study's fastest trial within the area budget."""
    best = best_feasible(study)  # phase 1 minimises latency
    if best is None:
        return None
    metrics = best.user_attrs[RESULT]["metrics"]
    return metrics["latency_s"], metrics["area_mm2"]


def choose_network(
    family: NetworkFamily,
    budget: ProxyBudget,
    *,
    target: Target,
    data: str,
    storage: Any,
    study: str,
    trials: int,
    drop: float,
    area_mm2: float | None,
    out: Path,
    search_samples: int,
    seed: int = 0,
    progress: bool = False,
) -> tuple[Candidate, list[NetworkChoice]]:
    """Train (or read) the family's candidates, run phase 1 on the accurate ones, and return
    the chosen candidate with every candidate's record (also written to network.json)."""
    from tqdm import tqdm

    cache = out / "candidates"
    cache.mkdir(parents=True, exist_ok=True)
    widths = family.candidates()
    candidates = [
        candidate(family, w, budget, cache)
        for w in tqdm(widths, desc="candidates", unit="net", disable=not progress, leave=False)
    ]
    reference = next(c for c in candidates if c.widths == family.widest()).accuracy
    floor = reference - drop
    per_candidate = phase1_trials(trials)
    choices = []
    for member in candidates:
        if member.accuracy < floor:
            choices.append(NetworkChoice(member, False, None, None))
            continue
        problem = Problem.load(
            member.path,
            target,
            data,
            search_samples=search_samples,
            probe_samples=min(32, search_samples),
            check_samples=search_samples,
        )
        evaluator = Evaluator(problem)
        space = build_space(problem.graph, target)
        name = f"{study}/network/{member.label}"
        phase = search_phases("xpert", name, space, None, trials, 0)[0]
        phase_study = open_study(
            storage,
            phase.study,
            list(phase.directions),
            {"role": "network", "candidate": member.label},
        )
        phase_study.sampler = make_sampler(phase.sampler, seed, phase.trials)
        run_phase(phase, phase_study, space, evaluator, Limits(area_mm2, None), lambda trial: None)
        found = fastest(phase_study)
        choices.append(NetworkChoice(member, True, *(found or (None, None))))
    feasible = [c for c in choices if c.latency_s is not None]
    if not feasible:
        raise UserError(
            "no candidate network has a design within the area budget and the accuracy drop",
            hint="raise --area-budget or --max-accuracy-drop",
        )
    best = min(feasible, key=lambda c: (c.latency_s, c.candidate.parameters))
    record = {
        "family": {
            "arch": family.arch,
            "data": family.data,
            "multipliers": list(family.multipliers),
        },
        "proxy_budget": {
            "epochs": budget.epochs,
            "images": budget.images,
            "test_images": budget.test_images,
            "seed": budget.seed,
        },
        "reference_accuracy": reference,
        "accuracy_floor": floor,
        "phase1_trials_per_candidate": per_candidate,
        "chosen": best.candidate.label,
        "candidates": [c.to_dict() for c in choices],
    }
    write_text(out / NETWORK_JSON, json.dumps(record, indent=1))
    return best.candidate, choices
