"""`run_search`: the co-search from flags to files (`imcc search` and benchmarks call it).

Steps: validate the configuration; load the problem (clean-up once); build the space; open the
storage and run the strategy's phases (resuming whatever the studies hold); collect the points;
check every front point (and the random-search front's) on the check subset; pick the best;
write pareto.json, pareto.png and the best program.
"""

from __future__ import annotations

import hashlib
import shlex
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from imcc.driver import default_pipeline
from imcc.errors import UserError
from imcc.examples import resolve_model
from imcc.ir.io import save_program
from imcc.passes.pipeline import DEFAULT_PIPELINE
from imcc.search.evaluate import OBJECTIVES, Evaluator, Problem
from imcc.search.evaluations import EvaluationStore
from imcc.search.family import Candidate, ProxyBudget, parse_family
from imcc.search.network import choose_network
from imcc.search.outputs import (
    Point,
    TrialCounts,
    checked,
    count_trials,
    format_summary,
    meets,
    pareto_front,
    plot,
    points_of,
    write_json,
)
from imcc.search.psqat import PsQat
from imcc.search.space import CALIBRATION_SAMPLES, SearchSpace, build_space
from imcc.search.storage import (
    HEARTBEAT,
    STORAGE_ERRORS,
    check_storage,
    open_storage,
    open_study,
    redact,
    sqlite_file,
    storage_failure,
    storage_url,
    stored_trials,
)
from imcc.search.strategies import (
    STRATEGIES,
    Limits,
    Phase,
    best_structure,
    lower_uniformly,
    make_sampler,
    run_phase,
    search_phases,
    widest_design,
)
from imcc.target import Target

PARETO_JSON = "pareto.json"
SENSITIVITY_JSON = "sensitivity.json"
PSQAT_FOLDER = "psqat"
"""Where `--psqat` keeps the fine-tuned model of each design (search/psqat.py)."""
PARETO_PNG = "pareto.png"
BEST_PROGRAM = "best.imcir"


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search is run with; `imcc search` flags map one to one."""

    model: str
    target: str
    data: str
    trials: int = 100
    objective: str | None = None  # edap, energy, latency, area (None: edap; xpert phase 2 energy)
    max_accuracy_drop: float = 2.0  # percentage points below the float model's accuracy
    area_budget_mm2: float | None = None  # None: the target's area budget, if it has one
    strategy: str = "pareto"
    storage: str | None = None  # SQLAlchemy URL; None: sqlite in `out`
    study: str | None = None  # None: model-target-strategy-objective
    seed: int = 0
    out: Path = Path("search-out")
    search_samples: int = 96  # accuracy subset of every trial
    probe_samples: int = 32  # first samples of it that decide pruning
    check_samples: int = 1000  # subset every front point is checked on
    random_trials: int | None = None  # comparison random search (None: trials // 4; 0: none)
    heartbeat: float = HEARTBEAT  # seconds between a running trial's heartbeats in the storage
    family: str | None = None  # channel depth: ARCH:DATA:MULTIPLIERS (search/family.py)
    family_images: int = 6000  # proxy budget: training images per candidate
    psqat: int = 0  # sensitivity: PS-QAT images per epoch of a design with MTJ layers (0: off)
    psqat_data: str | None = None  # the training images of that fine-tune
    psqat_train: int | None = None  # the first N of them train (None: all but the last)

    def validate(self) -> None:
        """Raise UserError on a flag no search can run with."""
        if self.strategy not in STRATEGIES:
            raise UserError(
                f"unknown strategy '{self.strategy}'", hint=f"strategies: {', '.join(STRATEGIES)}"
            )
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise UserError(
                f"unknown objective '{self.objective}'", hint=f"objectives: {', '.join(OBJECTIVES)}"
            )
        for flag, value, hint in [
            ("--trials", self.trials, "--trials N: the trials the search runs, e.g. --trials 100"),
            (
                "--limit",
                self.search_samples,
                "--limit N: the samples each trial's accuracy is measured on, e.g. --limit 96",
            ),
            (
                "--probe",
                self.probe_samples,
                "--probe N: the first samples of --limit that decide pruning, e.g. --probe 32",
            ),
            (
                "--check",
                self.check_samples,
                "--check N: the samples every front point is checked on, e.g. --check 1000",
            ),
        ]:
            if value < 1:
                raise UserError(f"{flag} must be at least 1, not {value}", hint=hint)
        if not 0 <= self.max_accuracy_drop <= 100:
            raise UserError(
                f"--max-accuracy-drop must be between 0 and 100 points, not "
                f"{self.max_accuracy_drop:g}",
                hint="e.g. --max-accuracy-drop 1.0",
            )
        if self.area_budget_mm2 is not None and not self.area_budget_mm2 > 0:
            raise UserError(
                f"--area-budget must be a positive area in mm2, not {self.area_budget_mm2:g}",
                hint="e.g. --area-budget 50",
            )
        if self.family is not None:
            parse_family(self.family)
            if self.strategy != "xpert":
                raise UserError(
                    "--family co-searches channel depth in the xpert strategy's phase 1",
                    hint="add --strategy xpert",
                )
            if self.family_images < 64:
                raise UserError(
                    f"--family-images must be at least 64, not {self.family_images}",
                    hint="the proxy budget trains each candidate for one epoch of that many images",
                )
        elif not self.model:
            raise UserError(
                "imcc search needs a MODEL, or --family for a family of widths",
                hint="e.g. imcc search digits-cnn --target xpert --data digits-cnn",
            )
        if self.random_trials is not None and self.random_trials < 0:
            raise UserError(
                f"--random-trials must be 0 or more, not {self.random_trials}",
                hint="--random-trials N runs N random trials to compare with (0: none; "
                "left out: a quarter of --trials)",
            )
        if self.psqat < 0:
            raise UserError(
                f"--psqat must be 0 or more images, not {self.psqat}",
                hint="--psqat N fine-tunes each design with MTJ layers on N images (0: off)",
            )
        if self.psqat and self.strategy != "sensitivity":
            raise UserError(
                "--psqat fine-tunes the designs the sensitivity strategy verifies",
                hint="add --strategy sensitivity (a fine-tune takes minutes: the other "
                "strategies evaluate hundreds of designs)",
            )
        if self.psqat and not self.psqat_data:
            raise UserError(
                "--psqat needs the training images to fine-tune on",
                hint="add --psqat-data DATA, e.g. cifar10:cifar10_train.npz --psqat-train 45000",
            )
        if not self.heartbeat > 0:
            raise UserError(
                f"the heartbeat must be a positive number of seconds, not {self.heartbeat:g}",
                hint=f"the default is {HEARTBEAT:g} s",
            )

    def area_budget(self, target: Target) -> float | None:
        """Return the area budget in mm2: `--area-budget`, else the target's, if it has one."""
        if self.area_budget_mm2 is None and target.area_budget_m2 is not None:
            return target.area_budget_m2 * 1e6
        return self.area_budget_mm2

    @property
    def objective_name(self) -> str:
        """Return the objective the front is drawn against."""
        return self.objective or ("energy" if self.strategy == "xpert" else "edap")


@dataclass(frozen=True)
class SearchResult:
    """What a search found and where it wrote it."""

    config: SearchConfig
    space: SearchSpace
    counts: TrialCounts
    front: tuple[Point, ...]  # checked Pareto front of the strategy's trials, by objective
    random_front: tuple[Point, ...]  # checked front of the random comparison (or random search)
    baseline: Point | None  # the target's default pipeline
    best: Point | None  # lowest objective on the front within the budgets
    reference_accuracy: float  # the float model on the check subset
    accuracy_floor: float
    area_budget_mm2: float | None
    trials_run: int  # trials evaluated by this call (not resumed ones)
    seconds: float  # wall time of this call's trials
    record: dict[str, Any]  # pareto.json
    summary: str  # the terminal summary

    @property
    def trials_per_second(self) -> float:
        """Return the trials this call evaluated per second of search."""
        return self.trials_run / self.seconds if self.seconds > 0 else 0.0


def load_target(spec: str) -> Target:
    """Return the target named by a built-in name or a .hw path."""
    from imcc.frontend.hw import load_target as load

    return load(spec)


def run_search(
    config: SearchConfig,
    *,
    progress: bool = False,
    on_trial: Callable[[FrozenTrial], None] | None = None,
) -> SearchResult:
    """Run (or resume) a search and write its outputs; see the module docstring.

    `progress` shows a tqdm bar on stderr; `on_trial` is called with every finished trial.
    Ctrl-C propagates as KeyboardInterrupt once the running trial is stored as interrupted.
    Everything that can be checked (flags, storage URL, model, target, data) is checked before
    `out` or the database is created; a search that fails before it stores a trial removes the
    database and the folders it created.
    """
    config.validate()
    url = storage_url(config.storage, config.out)
    check_storage(url)  # an unusable URL is refused before anything is created
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with _undone_on_failure(config.out, url) as opened:
        return _search(config, url, opened, progress, on_trial)


def _search(
    config: SearchConfig,
    url: str,
    opened: list[optuna.storages.RDBStorage],
    progress: bool,
    on_trial: Callable[[FrozenTrial], None] | None,
) -> SearchResult:
    """`run_search` once the URL is checked; every storage it opens goes to `opened`."""
    if config.family is not None:
        config = replace(config, model=str(_network(config, url, opened, progress).path))
    model = resolve_model(config.model)
    if not model.is_file():
        raise UserError(
            f"cannot read {config.model}: no such file",
            hint="give an .onnx file or a built-in example (digits-cnn)",
        )
    target = load_target(config.target)
    problem = Problem.load(
        model,
        target,
        config.data,
        search_samples=config.search_samples,
        probe_samples=config.probe_samples,
        check_samples=config.check_samples,
    )
    evaluator = Evaluator(problem)
    space = build_space(problem.graph, target)
    budget = config.area_budget(target)
    drop = config.max_accuracy_drop / 100
    limits = Limits(budget, evaluator.reference_accuracy("search") - drop)
    objective = config.objective_name
    name = config.study or f"{model.stem}-{target.name}-{config.strategy}-{objective}"
    if config.strategy == "sensitivity":
        return _sensitivity(config, problem, space, budget, name, progress)
    random_trials = (
        config.random_trials if config.random_trials is not None else max(1, config.trials // 4)
    )
    phases = search_phases(
        config.strategy,
        name,
        space,
        config.objective,
        config.trials,
        random_trials if config.strategy != "random" else 0,
    )
    identity = {
        **_identity(config, problem),
        "strategy": config.strategy,
        "objective": objective,
        "area_budget_mm2": budget,
        "max_accuracy_drop": config.max_accuracy_drop,
    }
    storage = opened[0] if opened else _open(config, url, opened)
    try:
        studies, run, seconds = _run_phases(
            phases, storage, space, evaluator, limits, identity, config, progress, on_trial
        )
        found = _collect(config, studies, run, seconds)
        return _write(config, problem, evaluator, space, found, budget, url, name)
    except STORAGE_ERRORS as exc:  # the database failed under the search (damaged, gone)
        raise storage_failure(url, exc) from None


def _sensitivity(
    config: SearchConfig,
    problem: Problem,
    space: SearchSpace,
    budget: float | None,
    name: str,
    progress: bool,
) -> SearchResult:
    """The `sensitivity` strategy (search/sensitivity.py): every layer alone under every
    mechanism of the target's menu, then designs composed within the accuracy floor and
    verified, and the best of them with its column sharing tuned. Its evaluations are kept
    in `--out/sensitivity.json`, or with `--storage` in that database, where several workers
    running the same command divide them (search/evaluations.py); a rerun reads them back.
    The baseline and every verified design are the search's points. `--trials` and
    `--random-trials` do not apply: the menu sets the trials."""
    from tqdm import tqdm

    from imcc.search.mechanisms import menu
    from imcc.search.sensitivity import best, explore, measure, tune_sharing

    offered = menu(problem.target)
    if len(offered) < 2:
        raise UserError(
            f"target {problem.target.name} offers no mechanisms to mix",
            hint="the sensitivity strategy needs a target such as hybrid",
        )
    psqat = None
    if config.psqat:
        assert config.psqat_data is not None
        psqat = PsQat(
            config.psqat_data,
            images=config.psqat,
            train=config.psqat_train,
            seed=config.seed,
            folder=config.out / PSQAT_FOLDER,
        )
    with _evaluation_store(config, problem, name) as store:
        evaluator = Evaluator(problem, store=store, psqat=psqat)
        start = time.perf_counter()
        total = 1 + len(space.layers) * (len(offered) - 1)
        with tqdm(total=total, disable=not progress, desc="sensitivity", leave=False) as bar:
            table = measure(evaluator, space, offered, report=lambda _: bar.update())
        floor = evaluator.reference_accuracy("search") - config.max_accuracy_drop / 100
        allowed = max(0.0, (table.baseline.accuracy or 0.0) - floor)
        designs = explore(evaluator, space, table, allowed)
        designs.append(tune_sharing(evaluator, space, table, best(table, designs, allowed)))
        points = [
            Point(
                "sensitivity",
                index,
                "search",
                f"{DEFAULT_PIPELINE},{design.pipeline}",
                design.metrics,
                design.accuracy,
                design.accuracy,
                model=design.finetuned,
            )
            for index, design in enumerate(designs)
            if design.metrics is not None and design.accuracy is not None
        ]
        evaluations = list(evaluator.stored_evaluations().values())
        illegal = [e["illegal"] for e in evaluations if e["illegal"]]
        passes = Counter(reason.split(":")[0] for reason in illegal)
        counts = TrialCounts(
            len(evaluations),
            len(evaluations) - len(illegal),
            0,
            len(illegal),
            0,
            tuple(passes.most_common()),
            tuple(dict.fromkeys(illegal))[:3],
        )
        found = Found(points, None, counts, evaluator.ran, time.perf_counter() - start)
        return _write(config, problem, evaluator, space, found, budget, store.label, name)


def _identity(config: SearchConfig, problem: Problem) -> dict[str, object]:
    """Return what decides a search's evaluations, recorded with its study: a study created
    with other values is refused (storage.open_study, evaluations.SqlStore)."""
    return {
        "model": problem.model.name,
        "weights": hashlib.sha256(problem.model.read_bytes()).hexdigest(),
        "target": problem.target.name,
        "data": config.data,
        "search_samples": len(problem.search_data.images),
        "calibration_samples": CALIBRATION_SAMPLES,
    }


@contextmanager
def _evaluation_store(
    config: SearchConfig, problem: Problem, name: str
) -> Iterator[EvaluationStore]:
    """Open where the sensitivity strategy keeps its evaluations: `--out/sensitivity.json`,
    or with `--storage` a table of that database under the study `name`, recorded with what
    decides an evaluation's result (search/evaluations.py); close it when the block ends."""
    from imcc.search.evaluations import JsonStore, SqlStore

    identity = {**_identity(config, problem), "probe_samples": problem.probe}
    if config.storage is None:
        store: EvaluationStore = JsonStore(config.out / SENSITIVITY_JSON, identity)
    else:
        store = SqlStore(config.storage, name, identity, config.heartbeat)
    try:
        yield store
    except STORAGE_ERRORS as exc:  # the database failed under the search
        raise storage_failure(config.storage or store.label, exc) from None
    finally:
        store.close()


def _open(
    config: SearchConfig, url: str, opened: list[optuna.storages.RDBStorage]
) -> optuna.storages.RDBStorage:
    """Create `out` and open the storage (its SQLite file checked, backed up or created)."""
    config.out.mkdir(parents=True, exist_ok=True)
    storage = open_storage(url, config.heartbeat)
    opened.append(storage)
    return storage


@contextmanager
def _undone_on_failure(out: Path, url: str) -> Iterator[list[optuna.storages.RDBStorage]]:
    """Undo what a search that fails before it stores a trial created: the SQLite database
    (with its log files) when this run made it and it holds no trial, then the folders this
    run made, when empty. The block appends the storages it opens to the list it is given.
    Ctrl-C is no failure: the interrupted trial is stored, and so is the database."""
    database = sqlite_file(url)
    folders = _missing(out) + (_missing(database.parent) if database is not None else [])
    fresh = database is not None and not database.exists()
    opened: list[optuna.storages.RDBStorage] = []
    try:
        yield opened
    except Exception as exc:
        made = database is not None and fresh and database.is_file()
        if database is not None and made and _holds_no_trial(opened):
            for storage in opened:
                storage.engine.dispose()
            for suffix in ("", "-wal", "-shm", "-journal"):
                with suppress(OSError):
                    database.with_name(database.name + suffix).unlink(missing_ok=True)
            if isinstance(exc, UserError) and exc.hint and str(database) in exc.hint:
                exc.hint = (  # its recovery advice names a file that is gone
                    f"{database} held no trial yet, so it was removed; run the search again "
                    "once the cause is fixed"
                )
        for folder in sorted(set(folders), key=lambda f: len(f.parts), reverse=True):
            with suppress(OSError):  # not empty: it holds what the search wrote, or others'
                folder.rmdir()
        raise


def _missing(folder: Path) -> list[Path]:
    """Return the folder and those of its parents that do not exist yet."""
    folder = folder.absolute()
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _holds_no_trial(opened: list[optuna.storages.RDBStorage]) -> bool:
    """Say whether the storages opened hold no trial (False when one cannot tell)."""
    try:
        return all(stored_trials(storage) == 0 for storage in opened)
    except STORAGE_ERRORS:
        return False


def _network(
    config: SearchConfig, url: str, opened: list[optuna.storages.RDBStorage], progress: bool
) -> Candidate:
    """Return the family's candidate that XPert's phase 1 chooses (search/network.py)."""
    assert config.family is not None
    target = load_target(config.target)
    storage = _open(config, url, opened)
    budget = config.area_budget(target)
    family = parse_family(config.family)
    study = config.study or f"{family.arch}-{family.data}-family-{target.name}"
    chosen, _ = choose_network(
        family,
        ProxyBudget(images=config.family_images, seed=config.seed),
        target=target,
        data=config.data,
        storage=storage,
        study=study,
        trials=config.trials,
        drop=config.max_accuracy_drop / 100,
        area_mm2=budget,
        out=config.out,
        search_samples=config.search_samples,
        seed=config.seed,
        progress=progress,
    )
    return chosen


def _run_phases(
    phases: list[Phase],
    storage: Any,
    space: SearchSpace,
    evaluator: Evaluator,
    limits: Limits,
    identity: dict[str, Any],
    config: SearchConfig,
    progress: bool,
    on_trial: Callable[[FrozenTrial], None] | None,
) -> tuple[dict[str, optuna.Study], int, float]:
    """Run every phase in order; return the studies by role, trials run and their seconds."""
    from tqdm import tqdm

    from imcc.search.storage import finished_count

    studies: dict[str, optuna.Study] = {}
    bar = tqdm(
        total=sum(p.trials for p in phases),
        disable=not progress,
        unit="trial",
        desc="search",
        leave=False,
    )
    run, illegal, start = 0, 0, time.perf_counter()

    def finished(trial: FrozenTrial) -> None:
        nonlocal run, illegal
        run += 1
        illegal += trial.state.name == "FAIL"
        bar.update(1)
        bar.set_postfix(illegal=illegal, refresh=False)
        if on_trial is not None:
            on_trial(trial)

    try:
        for index, phase in enumerate(phases):
            directions = list(phase.directions)
            study = open_study(storage, phase.study, directions, {**identity, "role": phase.role})
            done = finished_count(study)
            study.sampler = make_sampler(phase.sampler, config.seed + index, phase.trials)
            bar.update(min(done, phase.trials))
            if phase.role == "phase2":
                structure = best_structure(studies["phase1"])
                if structure is None:
                    raise UserError(
                        "xpert phase 1 found no design within the area budget",
                        hint="raise --area-budget or --trials",
                    )
                phase = Phase(
                    phase.study,
                    phase.role,
                    phase.directions,
                    phase.score,
                    phase.dimensions,
                    structure,
                    phase.trials,
                    phase.accuracy,
                    phase.sampler,
                )
                widest = widest_design(phase.dimensions)
                lower_uniformly(study, phase, space, evaluator, limits, widest, finished)
            run_phase(phase, study, space, evaluator, limits, finished)
            studies[phase.role] = study
    finally:
        bar.close()
    return studies, run, time.perf_counter() - start


def _baseline(target: Target, evaluator: Evaluator, floor: float) -> Point | None:
    """Return the target's default pipeline as a point checked on the check subset."""
    pipeline = default_pipeline(target)
    mapping = pipeline.removeprefix(f"{DEFAULT_PIPELINE},")
    evaluation = evaluator.evaluate(mapping, accuracy=False)
    if evaluation.metrics is None:
        return None
    accuracy, _ = evaluator.check(mapping)
    return Point(
        "", -1, "baseline", pipeline, evaluation.metrics, accuracy, None, True, accuracy >= floor
    )


def _check(
    points: list[Point],
    evaluator: Evaluator,
    objective: str,
    area: float | None,
    floor: float,
    cache: dict[str, float],
) -> list[Point]:
    """Return the Pareto front of the points within the area budget, every point on it
    checked on the check subset: check the front's points, redraw it with their checked
    accuracies, and repeat until the front holds only checked points."""
    pool = [p for p in points if meets(p, area, None)]
    while True:
        front = pareto_front(pool, objective)
        unchecked = [p for p in front if not p.checked]
        if not unchecked:
            return front
        for point in unchecked:
            if point.pipeline not in cache:
                mapping = point.pipeline.removeprefix(f"{DEFAULT_PIPELINE},")
                cache[point.pipeline] = evaluator.check(mapping)[0]
            pool[pool.index(point)] = checked(point, cache[point.pipeline], floor)


@dataclass(frozen=True)
class Found:
    """What a strategy found: its points, the random comparison's (None: none), the trial
    counts, and the trials this call ran in how many seconds."""

    points: list[Point]
    random: list[Point] | None
    counts: TrialCounts
    run: int
    seconds: float


def _collect(
    config: SearchConfig, studies: dict[str, optuna.Study], run: int, seconds: float
) -> Found:
    """Return what the studies found."""
    main = [r for r in ("search", "phase2") if r in studies]
    points = [p for role in main for p in points_of(studies[role])]
    random = None
    if config.strategy != "random" and "random" in studies:
        random = points_of(studies["random"])
    return Found(points, random, count_trials(studies.values()), run, seconds)


def _write(
    config: SearchConfig,
    problem: Problem,
    evaluator: Evaluator,
    space: SearchSpace,
    found: Found,
    budget: float | None,
    url: str,
    name: str,
) -> SearchResult:
    """Check the fronts of the points (and of the random comparison's), pick the best, write
    pareto.json, pareto.png and the best program."""
    objective = config.objective_name
    reference = evaluator.reference_accuracy("check")
    floor = reference - config.max_accuracy_drop / 100
    cache: dict[str, float] = {}
    front = _check(found.points, evaluator, objective, budget, floor, cache)
    random_front = front
    if found.random is not None:
        random_front = _check(found.random, evaluator, objective, budget, floor, cache)
    baseline = _baseline(problem.target, evaluator, floor)
    best = min(
        (p for p in front if p.meets_floor), key=lambda p: p.objective(objective), default=None
    )
    out = config.out
    replay = None
    if best is not None:
        mapping = best.pipeline.removeprefix(f"{DEFAULT_PIPELINE},")
        design = evaluator.for_design(mapping)  # a PS-QAT design runs on its own model
        graph = design.compile(mapping)
        graph = graph.replace(
            attributes={
                **graph.attributes,
                "target": config.target,
                "source": str(design.problem.model.resolve()),
            }
        )
        save_program(graph, out / BEST_PROGRAM)
        replay = shlex.join(
            [
                "imcc",
                "compile",
                best.model or config.model,
                "--target",
                config.target,
                "--passes",
                best.pipeline,
                "--calib",
                config.data,
                "--report",
                "report.json",
            ]
        )
    counts, run = found.counts, found.run
    rate = run / found.seconds if found.seconds > 0 else 0.0
    record: dict[str, Any] = {
        "model": config.model,
        "target": config.target,
        "data": config.data,
        "strategy": config.strategy,
        "objective": objective,
        "study": name,
        "storage": redact(url),
        "seed": config.seed,
        "trials": {**counts.to_dict(), "requested": config.trials, "this_run": run},
        "trials_per_second": rate,
        "space": {
            "dimensions": len(space.searched()),
            "size": space.size(),
            "layers": list(space.layers),
        },
        "calibration": problem.calibrated,
        "accuracy": {
            "reference": "float",
            "reference_value": reference,
            "max_drop_points": config.max_accuracy_drop,
            "floor": floor,
            "search_samples": len(problem.search_data.images),
            "probe_samples": problem.probe,
            "check_samples": len(problem.check_data.images),
        },
        "area_budget_mm2": budget,
        "pareto": [p.to_dict() for p in front],
        "random_front": [p.to_dict() for p in random_front],
        "baseline": None if baseline is None else baseline.to_dict(),
        "best": None if best is None else best.to_dict(),
        "replay": replay,
    }
    write_json(out / PARETO_JSON, record)
    title = f"{config.model} on {config.target}: {config.strategy} ({counts.finished} trials)"
    plot(
        out / PARETO_PNG, objective, found.points, front, random_front, baseline, best, floor, title
    )
    summary = format_summary(record, front, baseline, best, objective)
    return SearchResult(
        config,
        space,
        counts,
        tuple(front),
        tuple(random_front),
        baseline,
        best,
        reference,
        floor,
        budget,
        run,
        found.seconds,
        record,
        summary,
    )


__all__ = ["SearchConfig", "SearchResult", "run_search"]
