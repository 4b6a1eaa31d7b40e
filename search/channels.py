"""XPert's phase 1 with per-layer channel depth: every conv of a VGG backbone takes its own
width, guarded by the training-free NASWOT score instead of training each candidate.

XPert (Moitra et al., DAC 2023, arXiv 2303.17646, §3; its public code,
Intelligent-Computing-Lab-Yale/XPert, Phase1_CoSearch/Phase1_VGG16_backbone.py) searches per
conv layer of a VGG-16 backbone the output channels in {64, 128, 256, 512}, the ADC type and
the column sharing, for the lowest latency with the chip's area within +-5% of a target, and
keeps a candidate only when its NASWOT score (search/naswot.py; one batch of 128 training
images on the untrained network) lies in a fixed window. Its optimiser's straight-through
gradient carries no cost information (the loss reaches the logits as a sum of a one-hot gate),
so the released phase 1 is in effect a walk filtered by the constraints.

imcc searches the same space in two levels that follow its structure:

- outer, the network: a seeded TPE study over the per-layer widths (`width[i]`). A candidate
  is scored by NASWOT first (cheap, cached in `naswot.json`); below the floor it is rejected
  without being compiled. The floor is the baseline network's own score less `margin` (XPert's
  absolute window belongs to its batch and kernel and does not transfer): a candidate must
  tell the batch's inputs apart at least as well as the network it replaces.
- inner, the peripherals of one network: xpert's phase 1 (search/strategies.py: converter type
  and column sharing per layer, TPE, lowest latency) with the chip's area within +-`window` of
  the target (XPert's +-5%), on the candidate exported with seeded weights (latency and area
  do not depend on the weights' values). Its best design's latency is the outer trial's
  value; a candidate with no design in the window is infeasible.

Both levels live in one optuna storage (`channels.db` in `out`), so an interrupted search
resumes; `channels.json` records every candidate and the choice.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from imcc.errors import UserError
from imcc.files import write_text
from imcc.search.evaluate import Evaluator, Problem
from imcc.search.space import Dimension, build_space
from imcc.search.storage import (
    PIPELINE,
    RESULT,
    best_feasible,
    feasible,
    feasible_by_value,
    finished_count,
    open_storage,
    open_study,
)
from imcc.search.strategies import (
    UNIFORM_STEPS,
    Limits,
    lower_uniformly,
    make_sampler,
    run_phase,
    search_phases,
    widest_design,
)
from imcc.target import Target

CHANNELS = (64, 128, 256, 512)
"""XPert's per-layer channel choices ([XPert] §3; Phase1_VGG16_backbone.py `f_space`)."""
NASWOT_IMAGES = 128
"""Images of the NASWOT batch: XPert's one training batch of 128 (compute_score.py)."""
AREA_WINDOW = 0.05
"""XPert's area tolerance: the chip within +-5% of the target (`--area_tolerance 5`)."""
CANDIDATES = "candidates"
"""The folder (in the search's `out`) of the candidates' ONNX files."""
CHANNELS_DB = "channels.db"
CHANNELS_JSON = "channels.json"
NASWOT_JSON = "naswot.json"


@dataclass(frozen=True)
class ChannelSpace:
    """Per-conv output channels of a VGG configuration (models/vgg_cifar.py)."""

    arch: str = "vgg16"
    choices: tuple[int, ...] = CHANNELS
    reference: tuple[int, ...] | None = None  # the network replaced (None: the arch's own)

    def baseline(self) -> tuple[int, ...]:
        """Return the widths of the network the search replaces: `reference`, else the
        configuration's own (VGG-16's 64-64-128-128-256x3-512x6)."""
        from imcc.models.vgg_cifar import conv_widths

        return tuple(conv_widths(self.arch, widths=self.reference))

    def label(self, widths: Sequence[int]) -> str:
        """Return a candidate's name, e.g. `c64-64-128-...`."""
        return "c" + "-".join(str(w) for w in widths)


def naswot_batch(train: np.ndarray, images: int = NASWOT_IMAGES, seed: int = 0) -> np.ndarray:
    """Return `images` of the training-split images `train` (a seeded draw, in order)."""
    pick = np.random.default_rng(seed).choice(len(train), images, replace=False)
    return train[np.sort(pick)]


def training_split(data: str) -> np.ndarray:
    """Return the training-split images of a CIFAR-10 training set (models/train_cifar.py's
    split: the first `TRAIN` images; the rest validate)."""
    from imcc.frontend.datasets import load_dataset
    from imcc.models.train_cifar import TRAIN

    return load_dataset(data, TRAIN).images


def network(arch: str, widths: Sequence[int], seed: int = 0) -> Any:
    """Return the untrained network of `widths` as models/train_cifar.py trains it (with its
    input normalisation), initialised from `seed`."""
    import torch

    from imcc.models.train_cifar import build

    torch.manual_seed(seed)
    return build(arch, widths=list(widths))


class NaswotCache:
    """NASWOT scores by candidate label, kept in a JSON file with the batch they belong to."""

    def __init__(self, path: Path, arch: str, batch: np.ndarray, seed: int) -> None:
        self.path, self.arch, self.seed = path, arch, seed
        self.batch = batch
        self.identity = {"arch": arch, "images": len(batch), "seed": seed}
        record = json.loads(path.read_text()) if path.is_file() else {}
        self.scores: dict[str, float] = (
            record.get("scores", {}) if record.get("identity") == self.identity else {}
        )

    def score(self, widths: Sequence[int]) -> float:
        """Return the candidate's NASWOT score, computed once."""
        key = "-".join(map(str, widths))
        if key not in self.scores:
            import torch

            from imcc.search.naswot import naswot_score

            model = network(self.arch, widths, self.seed)
            self.scores[key] = naswot_score(model, torch.from_numpy(self.batch))
            write_text(
                self.path, json.dumps({"identity": self.identity, "scores": self.scores}, indent=1)
            )
        return self.scores[key]


@dataclass(frozen=True)
class Structure:
    """The inner search's result for one network: its fastest design within the area budget."""

    latency_s: float
    area_mm2: float
    pipeline: str


def export_candidate(arch: str, widths: Sequence[int], path: Path, seed: int = 0) -> Path:
    """Write the untrained candidate as ONNX (cost only: latency and area ignore weights)."""
    from imcc.models.train_cifar import export

    if not path.is_file():
        export(network(arch, widths, seed).eval(), path)
    return path


def uniform_designs(dimensions: Sequence[Dimension]) -> list[dict[str, str]]:
    """Return every design that gives all layers the same choice of each searched per-layer
    option (e.g. converter type x column sharing: 2 x 6 designs on xpert.hw), in the order of
    the options' choices."""
    options: dict[str, tuple[str, ...]] = {}
    for d in dimensions:
        if d.layer is not None and d.searched:
            name = f"{d.pass_name}.{d.option}"
            shared = options.get(name, d.choices)
            options[name] = tuple(c for c in shared if c in d.choices)
    designs = []
    for values in itertools.product(*options.values()):
        chosen = dict(zip(options, values, strict=True))
        designs.append(
            {
                d.key: chosen[f"{d.pass_name}.{d.option}"]
                for d in dimensions
                if f"{d.pass_name}.{d.option}" in chosen
            }
        )
    return designs


def fastest_structure(
    model: Path,
    target: Target,
    data: str,
    storage: Any,
    name: str,
    trials: int,
    area_mm2: tuple[float, float],
    seed: int,
    pinned: Mapping[str, str] | None = None,
) -> Structure | None:
    """Run xpert's phase 1 (converter type and column sharing per layer, lowest latency
    with the area within `area_mm2`, (low, high)) on one network, every layer of each
    `pinned` option (`PASS.OPTION`: value, e.g. the precisions) fixed; return its best
    design, or None if none fits."""
    problem = Problem.load(model, target, data, search_samples=1, probe_samples=1, check_samples=1)
    space = build_space(problem.graph, target)
    phase = search_phases("xpert", name, space, None, 2 * trials, 0)[0]
    phase = replace(phase, fixed=space.uniform(pinned or {}))
    study = open_study(storage, phase.study, list(phase.directions), {"role": "channels"})
    study.sampler = make_sampler(phase.sampler, seed, phase.trials)
    if not study.trials:  # start from the uniform designs, then vary layer by layer
        for design in uniform_designs(phase.dimensions)[: phase.trials]:
            study.enqueue_trial(design)
    limits = Limits(area_mm2[1], None, area_mm2[0])
    run_phase(phase, study, space, Evaluator(problem), limits, lambda t: None)
    best = best_feasible(study)
    if best is None:
        return None
    metrics = best.user_attrs[RESULT]["metrics"]
    return Structure(metrics["latency_s"], metrics["area_mm2"], best.user_attrs[PIPELINE])


def channel_storage(out: Path) -> Any:
    """Return the optuna storage of the channel search in `out` (`CHANNELS_DB`)."""
    return open_storage(f"sqlite:///{(out / CHANNELS_DB).resolve()}")


def inner_choices(out: Path, label: str) -> dict[str, str]:
    """Return the phase-1 choices of a searched candidate's fastest design in the window (the
    inner study `inner/LABEL` of the search in `out`), for phase 2."""
    storage = channel_storage(out)
    # fastest_structure's study: xpert's phase 1 named after the candidate (search_phases)
    try:
        study = optuna.load_study(study_name=f"inner/{label}/phase1", storage=storage)
    except KeyError:
        raise UserError(
            f"the channel search in {out} has no candidate {label}",
            hint="give a candidate the search compiled (channels.json lists them)",
        ) from None
    best = best_feasible(study)
    if best is None:
        raise UserError(
            f"candidate {label} has no design within the area window",
            hint="run phase 2 on the search's chosen network",
        )
    return {k: str(v) for k, v in best.params.items()}


@dataclass(frozen=True)
class Precisions:
    """Phase 2's result: the design of least energy within the area window and at or above the
    accuracy floor, with its cost and accuracy (on the search's accuracy images)."""

    energy_j: float
    latency_s: float
    area_mm2: float
    accuracy: float
    pipeline: str
    walk: tuple[dict[str, Any], ...] = ()  # every design measured (`measured_designs`)


def measured_designs(study: optuna.Study) -> tuple[dict[str, Any], ...]:
    """Return the designs a phase-2 study measured, in the order it measured them: the trial
    number, the design's energy and EDAP, its accuracy and on how many images (a design the
    probe ruled out: the probe's), whether the probe ruled it out, whether it is feasible
    (every constraint met, storage.feasible) and its pipeline."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    designs = []
    for trial in study.get_trials(deepcopy=False, states=states):
        result = trial.user_attrs.get(RESULT) or {}
        if result.get("accuracy") is None or "metrics" not in result:
            continue
        designs.append(
            {
                "trial": trial.number,
                "energy_j": result["metrics"]["energy_j"],
                "edap": result["metrics"]["edap"],
                "accuracy": result["accuracy"],
                "samples": result.get("accuracy_samples"),
                "pruned": bool(result.get("pruned")),
                "feasible": feasible(trial),
                "pipeline": trial.user_attrs[PIPELINE],
            }
        )
    return tuple(sorted(designs, key=lambda d: d["trial"]))


def cheapest_precisions(
    model: Path,
    target: Target,
    data: str,
    storage: Any,
    name: str,
    structure: Mapping[str, str],
    trials: int,
    area_mm2: tuple[float, float] | None,
    accuracy_floor: float,
    samples: int,
    seed: int = 0,
    probe: int | None = None,
    progress: bool = False,
    confirm: Callable[[str], bool] | None = None,
) -> Precisions | None:
    """Run xpert's phase 2 on a trained network: per-layer input and converter precision
    (XPert's IP and AP, strategies.UNIFORM_STEPS; the target's other options, e.g. the weight
    slicing, stay at the passes' defaults), the phase-1 `structure` fixed, the least
    energy with the area within `area_mm2` (low, high; None: any area, as XPert's phase 2
    constrains only the accuracy) and the accuracy, bit-accurate on the
    first `samples` images of `data` (the validation split: `cifar10:FILE,from=45000`), at
    least `accuracy_floor`; it starts at the widest precisions (the design phase 1 priced),
    lowers each precision in every layer at once while the design holds
    (strategies.lower_uniformly) and descends per layer from there (search/descent.py). With
    `probe`, a design is simulated on that many images first and dropped when they rule out
    the floor (search/evaluate.py): the descent's trials below the floor cost a fraction of a
    full one. The design the descent ends at is the cheapest of many measured on the same
    images, so its accuracy there is biased upwards (a winner's curse) by about a standard
    error of `samples` images: choose them accordingly (benchmarks/xpert.py `CHECK`). With
    `progress`, a bar counts the designs measured (minutes each on a large network) and shows
    the last one's accuracy and the cheapest feasible energy. With `confirm`, a held-out
    check (e.g. the accuracy on validation images the descent never saw): the feasible designs
    are offered to it from the least energy up, and the first it accepts is the result, so
    the winner's curse of the descent's own images does not decide alone. Return the best
    design, or None if none is feasible (or `confirm` accepts none)."""
    problem = Problem.load(
        model,
        target,
        data,
        search_samples=samples,
        probe_samples=probe or samples,
        check_samples=samples,
    )
    space = build_space(problem.graph, target)
    phase = search_phases("xpert", name, space, None, 2 * trials, 0)[1]
    precisions = tuple(d for d in phase.dimensions if f"{d.pass_name}.{d.option}" in UNIFORM_STEPS)
    phase = replace(phase, dimensions=precisions, fixed=dict(structure), trials=trials)
    identity = {
        "role": "precisions",
        "model": str(model),
        "weights": hashlib.sha256(model.read_bytes()).hexdigest(),
        "searched": list(UNIFORM_STEPS),
        "structure": dict(structure),
        "area_mm2": None if area_mm2 is None else list(area_mm2),
        "accuracy_floor": accuracy_floor,
        "data": data,
        "samples": samples,
        "probe": probe or samples,
    }
    study = open_study(storage, phase.study, list(phase.directions), identity)
    study.sampler = make_sampler(phase.sampler, seed, phase.trials)
    low, high = (None, None) if area_mm2 is None else area_mm2
    limits = Limits(high, accuracy_floor, low)
    evaluator = Evaluator(problem)
    from tqdm import tqdm

    bar = tqdm(total=trials, desc="precisions", unit="design", disable=not progress, leave=False)
    bar.update(min(finished_count(study), trials))

    def measured(trial: optuna.trial.FrozenTrial) -> None:
        bar.update(1)
        result = trial.user_attrs.get(RESULT) or {}
        best = best_feasible(study)
        bar.set_postfix(
            last="illegal" if result.get("accuracy") is None else f"{result['accuracy']:.2%}",
            best="none" if best is None else f"{best.value * 1e6:.4g} uJ",  # energy (phase 2's)
        )

    try:
        widest = widest_design(phase.dimensions)
        lower_uniformly(study, phase, space, evaluator, limits, widest, measured)
        run_phase(phase, study, space, evaluator, limits, measured)
    finally:
        bar.close()
    for best in feasible_by_value(study):
        if confirm is None or confirm(best.user_attrs[PIPELINE]):
            result = best.user_attrs[RESULT]
            metrics = result["metrics"]
            return Precisions(
                metrics["energy_j"],
                metrics["latency_s"],
                metrics["area_mm2"],
                result["accuracy"],
                best.user_attrs[PIPELINE],
                measured_designs(study),
            )
    return None


@dataclass(frozen=True)
class ChannelChoice:
    """One outer trial: a candidate's widths, NASWOT score and inner result (None: not run)."""

    widths: tuple[int, ...]
    naswot: float
    structure: Structure | None
    feasible: bool

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-ready object."""
        found = self.structure
        return {
            "widths": list(self.widths),
            "naswot": self.naswot,
            "latency_s": None if found is None else found.latency_s,
            "area_mm2": None if found is None else found.area_mm2,
            "feasible": self.feasible,
            "pipeline": None if found is None else found.pipeline,
        }


def search_channels(
    space: ChannelSpace,
    *,
    target: Target,
    data: str,
    area_mm2: float,
    out: Path,
    trials: int,
    inner_trials: int,
    margin: float = 0.0,
    window: float = AREA_WINDOW,
    pinned: Mapping[str, str] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[ChannelChoice, list[ChannelChoice]]:
    """Search the per-layer widths and peripherals (module docstring), the `pinned` options
    (`PASS.OPTION`: value in every layer, e.g. the precisions) fixed; return the fastest
    feasible candidate and every candidate tried (also written to `out/channels.json`)."""
    from tqdm import tqdm

    if not 0 < window < 1:
        raise UserError(f"area window {window} must lie in (0, 1)", hint="XPert's is 0.05")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out.mkdir(parents=True, exist_ok=True)
    storage = channel_storage(out)
    cache = NaswotCache(
        out / NASWOT_JSON, space.arch, naswot_batch(training_split(data), seed=seed), seed
    )
    baseline = space.baseline()
    if not set(baseline) <= set(space.choices):
        raise UserError(
            f"the reference widths {list(baseline)} are not all among the choices "
            f"{list(space.choices)}",
            hint="give a reference network the search space holds",
        )
    floor = cache.score(baseline) - margin
    low, high = area_mm2 * (1 - window), area_mm2 * (1 + window)
    layers = len(baseline)
    outer = open_study(
        storage,
        "channels",
        ["minimize"],
        {
            "arch": space.arch,
            "choices": list(space.choices),
            "area_mm2": area_mm2,
            "pinned": dict(pinned or {}),
        },
    )
    outer.sampler = optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=min(10, max(1, trials // 3))
    )
    if not outer.trials:  # the network the search replaces comes first
        outer.enqueue_trial({f"width[{i}]": w for i, w in enumerate(baseline)})
    choices: list[ChannelChoice] = []
    bar = tqdm(total=trials, desc="channels", unit="net", disable=not progress, leave=False)
    done = len(outer.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    bar.update(done)
    while done < trials:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Heartbeat of storage")  # no worker runs long
            trial = outer.ask()
        widths = tuple(
            int(trial.suggest_categorical(f"width[{i}]", list(space.choices)))
            for i in range(layers)
        )
        score = cache.score(widths)
        found = None
        if score >= floor:
            label = space.label(widths)
            model = export_candidate(space.arch, widths, out / CANDIDATES / f"{label}.onnx")
            found = fastest_structure(
                model,
                target,
                data,
                storage,
                f"inner/{label}",
                inner_trials,
                (low, high),
                seed,
                pinned,
            )
        latency = math.inf if found is None else found.latency_s
        constraints = [floor - score, 0.0 if found else 1.0]  # found: within the window
        trial.set_user_attr("constraints", constraints)
        for key, value in zip(("naswot", "area"), constraints, strict=True):
            trial.set_constraint(key, value)  # TPE prefers the candidates that meet them
        trial.set_user_attr("naswot", score)
        if found is not None:
            trial.set_user_attr("pipeline", found.pipeline)
            trial.set_user_attr("area_mm2", found.area_mm2)
        # TPE ranks a candidate that breaks a constraint by how far it breaks it, not by its
        # value, so one never compiled gets a placeholder value
        outer.tell(trial, latency if math.isfinite(latency) else 0.0)
        done += 1
        bar.update(1)
    bar.close()
    for trial in outer.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        widths = tuple(int(trial.params[f"width[{i}]"]) for i in range(layers))
        structure = None
        if "pipeline" in trial.user_attrs:
            structure = Structure(
                trial.values[0], trial.user_attrs["area_mm2"], trial.user_attrs["pipeline"]
            )
        feasible = all(c <= 0 for c in trial.user_attrs["constraints"])
        choices.append(ChannelChoice(widths, trial.user_attrs["naswot"], structure, feasible))
    feasible = [c for c in choices if c.feasible]
    if not feasible:
        raise UserError(
            "no candidate network meets the NASWOT floor with a design in the area window",
            hint="raise the trials, lower the NASWOT margin's floor or move the area target",
        )
    best = min(feasible, key=lambda c: (c.structure.latency_s, sum(c.widths)))
    record = {
        "arch": space.arch,
        "choices": list(space.choices),
        "baseline": list(baseline),
        "naswot_floor": floor,
        "area_window_mm2": [low, high],
        "chosen": best.to_dict(),
        "candidates": [c.to_dict() for c in choices],
    }
    write_text(out / CHANNELS_JSON, json.dumps(record, indent=1))
    return best, choices
