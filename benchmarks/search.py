"""Search quality and the XPert reproduction (issue 6, items 5 and 6).

(a) quality: digits-cnn on xpert.hw with the space cut to per-layer converter type x column
    sharing (every other option at its pass default), small enough to enumerate. Every design
    is priced to find the optimum EDAP; then the search strategy's TPE phase (the sampler and
    ask/evaluate/tell loop of search/strategies.py, cost only: one minimised EDAP) and random
    sampling run with the same trial budget (10% of the space) over several seeds. Reported:
    best EDAP / optimum, trials and distinct designs evaluated, the share of seeds within 2%,
    and trials per second.
(b) XPert (Moitra et al., DAC 2023, arXiv 2303.17646): a CIFAR-shaped VGG-16 (seeded weights: cost
    only) on xpert.hw. The uniform baseline is stated in `XPERT_BASELINE`: one ADC type and
    precision, one input precision and one column sharing in every layer. The search keeps the
    baseline's precisions (without trained weights precision cannot be judged) and searches
    XPert's structure per layer, converter type and column sharing, for the lowest EDAP. Also
    priced: XPert's published per-layer choices on the same network. Ratios sit next to the
    paper's (10.24x EDAP, 1.72x TOPS/W, 1.93x TOPS/mm²; the paper also searched channel depths).
(c) ResNet-20 with real accuracy: the pretrained CIFAR-10 ResNet-20 on the CIFAR-10 test
    images, searched for the lowest EDAP within 1 point of the float model (search subset:
    the first images); baseline and searched design measured on held-out images (the last
    ones of the file, never used for calibration or search).

(d) channel depth: the xpert strategy over a width family (`--family`, candidates trained on
    Fashion-MNIST with a proxy budget) against the same search on the family's widest network
    and that network's default design, within one area budget (`--depth-area`).

    python benchmarks/search.py [--parts quality,xpert,resnet,depth] [--seeds 5] [--vgg-trials 150]
                                [--resnet-trials 12] [--resnet-images 256] [--heldout 1000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from imcc import driver  # noqa: E402
from imcc.examples import resolve_model  # noqa: E402
from imcc.frontend.datasets import Dataset, load_dataset  # noqa: E402
from imcc.frontend.hw import load_target  # noqa: E402
from imcc.search import SearchSpace, build_space  # noqa: E402
from imcc.search.evaluate import Evaluator, Metrics, Problem  # noqa: E402
from imcc.search.space import Dimension  # noqa: E402
from imcc.search.storage import RESULT, open_storage, open_study  # noqa: E402
from imcc.search.strategies import (  # noqa: E402
    Limits,
    Phase,
    make_sampler,
    multi_objective,
    run_phase,
    single_objective,
)

CIFAR10 = "cifar10:/work/shared/data/cifar10/cifar10_test_first5000.npz"
CONVERTER = "select-adc.per_layer_converter"
SHARING = "share-columns.per_layer"
STRUCTURE = ("select-adc", "per_layer_converter"), ("share-columns", "per_layer")

XPERT_BASELINE = {
    "select-adc.per_layer_converter": "sar",
    "select-adc.per_layer_bits": "4",
    "assign-input-precision.per_layer_bits": "4",
    "share-columns.per_layer": "8",
}
"""The uniform VGG-16 baseline of (b), every layer alike: SAR ADC of 4 bits, 4-bit inputs
(XPert's searched design streams 4-bit inputs), column sharing 8 (xpert.hw's default)."""

XPERT_PUBLISHED = [
    ("16", "flash"),
    ("16", "flash"),
    ("4", "flash"),
    ("4", "flash"),
    ("8", "flash"),
    ("2", "flash"),
    ("4", "sar"),
    ("16", "flash"),
    ("4", "sar"),
    ("32", "flash"),
    ("2", "sar"),
    ("32", "sar"),
    ("16", "sar"),
]
"""XPert's shipped CIFAR-10 design, column sharing and ADC type of its 13 convs (§1)."""

PAPER = {"edap": 10.24, "tops_per_w": 1.72, "tops_per_mm2": 1.93}


def restrict(
    space: SearchSpace,
    keep: Mapping[str, tuple[str, ...] | None],
    pinned: Mapping[str, str] | None = None,
) -> SearchSpace:
    """Return the space of the dimensions whose option is named in `keep` (its choices cut to
    the given ones, None: all) or in `pinned` (one choice, not searched); the others are left
    at their pass defaults."""
    dimensions = []
    for dimension in space.dimensions:
        option = f"{dimension.pass_name}.{dimension.option}"
        if option in (pinned or {}):
            dimensions.append(
                Dimension(dimension.pass_name, dimension.option, dimension.layer, (pinned[option],))
            )
        elif option in keep:
            choices = keep[option] or dimension.choices
            dimensions.append(
                Dimension(
                    dimension.pass_name,
                    dimension.option,
                    dimension.layer,
                    tuple(c for c in dimension.choices if c in choices),
                )
            )
    return SearchSpace(space.steps, tuple(dimensions), space.layers)


def enumerate_space(space: SearchSpace, evaluator: Evaluator) -> dict[str, float]:
    """Price every design of a space; return EDAP by mapping pipeline (illegal ones left out)."""
    keys = [d.key for d in space.dimensions]
    edaps = {}
    for values in itertools.product(*(d.choices for d in space.dimensions)):
        pipeline = space.pipeline(dict(zip(keys, values, strict=True)))
        evaluation = evaluator.evaluate(pipeline, accuracy=False)
        if evaluation.metrics is not None:
            edaps[pipeline] = evaluation.metrics.edap
    return edaps


@dataclass(frozen=True)
class Run:
    """One search run: the best complete trial, its trials, distinct designs and seconds."""

    best: float
    best_pipeline: str
    best_metrics: dict
    trials: int
    distinct: int
    seconds: float


def search(
    space: SearchSpace,
    evaluator: Evaluator,
    *,
    sampler: str,
    seed: int,
    trials: int,
    workdir: Path,
    name: str,
    accuracy: bool = False,
    floor: float | None = None,
    enqueue: list[dict[str, str]] | None = None,
) -> Run:
    """Run one phase of the search strategy (search/strategies.py) on a space: cost only, the
    EDAP minimised; or with `accuracy`, (accuracy, EDAP) within the accuracy `floor`. Return
    the best trial that meets the floor."""
    storage = open_storage(f"sqlite:///{workdir / (name + '.db')}")
    directions = ["maximize", "minimize"] if accuracy else ["minimize"]
    study = open_study(storage, name, directions, {"benchmark": name})
    study.sampler = make_sampler(sampler, seed, trials)
    for choices in enqueue or []:
        study.enqueue_trial(choices)
    score = multi_objective("edap") if accuracy else single_objective("edap")
    phase = Phase(
        name, "search", tuple(directions), score, space.dimensions, {}, trials, accuracy, sampler
    )
    start = time.perf_counter()
    run_phase(phase, study, space, evaluator, Limits(None, floor), lambda trial: None)
    seconds = time.perf_counter() - start
    best, best_pipeline, best_metrics, distinct = math.inf, "", {}, set()
    for trial in study.get_trials(deepcopy=False):
        result = trial.user_attrs.get(RESULT)
        if result is None:
            continue
        distinct.add(tuple(sorted(trial.params.items())))
        if trial.state.name != "COMPLETE":
            continue
        if accuracy and floor is not None and result["accuracy"] < floor:
            continue
        if result["metrics"]["edap"] < best:
            best, best_metrics = result["metrics"]["edap"], result
            best_pipeline = trial.user_attrs["pipeline"]
    return Run(best, best_pipeline, best_metrics, trials, len(distinct), seconds)


def quality(seeds: int, workdir: Path) -> None:
    """Part (a): the search against the exhaustive optimum and random search."""
    target = load_target("xpert")
    problem = Problem.load(
        resolve_model("digits-cnn"),
        target,
        "digits-cnn",
        search_samples=32,
        probe_samples=32,
        check_samples=32,
    )
    space = restrict(build_space(problem.graph, target), {CONVERTER: None, SHARING: None})
    start = time.perf_counter()
    edaps = enumerate_space(space, Evaluator(problem))
    enumerate_seconds = time.perf_counter() - start
    optimum = min(edaps.values())
    budget = max(1, space.size() // 10)
    near = sum(e <= 1.02 * optimum for e in edaps.values())
    print(
        f"(a) search quality: digits-cnn on xpert.hw, per-layer converter type x column "
        f"sharing ({len(space.dimensions)} dimensions), {space.size()} designs "
        f"({len(edaps)} legal), {near} within 2% of the optimum EDAP {optimum:.4g} J*s*mm2"
    )
    print(
        f"    exhaustive: {len(edaps)} evaluations in {enumerate_seconds:.1f} s "
        f"({len(edaps) / enumerate_seconds:.1f} evaluations/s)"
    )
    print(f"    budget: {budget} trials (10% of the space) per run, {seeds} seeds")
    print(
        f"    {'sampler':8} {'seed':>4} {'best/opt':>9} {'trials':>6} {'distinct':>8} "
        f"{'trials/s':>8}"
    )
    summary: dict[str, list[Run]] = {}
    for sampler, seed in itertools.product(("tpe", "random"), range(seeds)):
        run = search(
            space,
            Evaluator(problem),
            sampler=sampler,
            seed=seed,
            trials=budget,
            workdir=workdir,
            name=f"quality-{sampler}-{seed}",
        )
        summary.setdefault(sampler, []).append(run)
        print(
            f"    {sampler:8} {seed:>4} {run.best / optimum:>9.4f} {run.trials:>6} "
            f"{run.distinct:>8} {run.trials / run.seconds:>8.1f}"
        )
    for sampler, runs in summary.items():
        ratios = [r.best / optimum for r in runs]
        within = sum(r <= 1.02 for r in ratios)
        rate = sum(r.trials for r in runs) / sum(r.seconds for r in runs)
        print(
            f"    {sampler}: within 2% in {within}/{len(runs)} seeds, median best/opt "
            f"{statistics.median(ratios):.4f}, worst {max(ratios):.4f}, mean distinct "
            f"designs {statistics.mean(r.distinct for r in runs):.0f} of {budget} trials "
            f"({statistics.mean(r.distinct for r in runs) / space.size():.1%} of the space), "
            f"{rate:.1f} trials/s"
        )
    wins = sum(t.best <= r.best for t, r in zip(summary["tpe"], summary["random"], strict=True))
    print(f"    tpe at or below random (same seed, same budget) in {wins}/{seeds} seeds")


def _ratios(base: Metrics, other: Metrics) -> dict[str, float]:
    return {
        "edap": base.edap / other.edap,
        "tops_per_w": other.tops_per_w / base.tops_per_w,
        "tops_per_mm2": other.tops_per_mm2 / base.tops_per_mm2,
    }


def _row(label: str, metrics: Metrics, base: Metrics) -> str:
    ratios = _ratios(base, metrics)
    return (
        f"    {label:28} {metrics.edap:>10.4g} {metrics.tops_per_w:>8.3f} "
        f"{metrics.tops_per_mm2:>9.4f} {metrics.area_mm2:>8.2f} {ratios['edap']:>7.2f}x "
        f"{ratios['tops_per_w']:>7.2f}x {ratios['tops_per_mm2']:>8.2f}x"
    )


def xpert(trials: int, workdir: Path) -> None:
    """Part (b): VGG-16 on xpert.hw, uniform baseline against the searched structure."""
    from imcc.models.vgg_cifar import export

    model = workdir / "vgg16.onnx"
    export("vgg16", model)
    target = load_target("xpert")
    problem = Problem.load(
        model, target, CIFAR10, search_samples=1, probe_samples=1, check_samples=1
    )
    full = build_space(problem.graph, target)
    base_choices = full.uniform(XPERT_BASELINE)
    pinned = {k: v for k, v in XPERT_BASELINE.items() if k not in (CONVERTER, SHARING)}
    space = restrict(full, {CONVERTER: None, SHARING: None}, pinned)
    evaluator = Evaluator(problem)
    baseline_pipeline = full.pipeline(base_choices)
    baseline = evaluator.evaluate(baseline_pipeline, accuracy=False).metrics
    layers = len(full.layers)
    published = dict(base_choices)
    for index, (sharing, converter) in enumerate(XPERT_PUBLISHED):
        published[f"{SHARING}[{index}]"] = sharing
        published[f"{CONVERTER}[{index}]"] = converter
    paper = evaluator.evaluate(full.pipeline(published), accuracy=False).metrics
    assert baseline is not None and paper is not None
    run = search(
        space, evaluator, sampler="tpe", seed=0, trials=trials, workdir=workdir, name="xpert-vgg16"
    )
    found = Metrics(**run.best_metrics["metrics"])
    plain = Evaluator(problem, cached_prefixes=0)  # every pass run anew: the cache's check
    check = plain.evaluate(_mapping(run.best_pipeline), accuracy=False).metrics
    print(
        f"(b) XPert reproduction: CIFAR-10 VGG-16 ({layers} crossbar layers, seeded weights, "
        f"cost only) on xpert.hw"
    )
    print(
        "    uniform baseline, every layer: SAR ADC 4 bits, 4-bit inputs, column sharing 8 "
        "(weights 8 bits, 128x128 4-bit cells)"
    )
    print(
        f"    search: per-layer converter type x column sharing, EDAP, {trials} trials of the "
        f"TPE phase ({run.trials / run.seconds:.2f} trials/s); precisions as the baseline"
    )
    print(
        f"    {'design':28} {'EDAP':>10} {'TOPS/W':>8} {'TOPS/mm2':>9} {'mm2':>8} "
        f"{'EDAP':>8} {'TOPS/W':>8} {'TOPS/mm2':>9}"
    )
    print(_row("baseline (uniform)", baseline, baseline))
    print(_row("XPert's published CS/ADC", paper, baseline))
    print(_row("searched", found, baseline))
    print(
        f"    paper (searched vs VGG16):   {'':>10} {'':>8} {'':>9} {'':>8} "
        f"{PAPER['edap']:>7.2f}x {PAPER['tops_per_w']:>7.2f}x {PAPER['tops_per_mm2']:>8.2f}x"
    )
    print(
        f"    searched design, sharing per layer: "
        f"{_list(run.best_pipeline, 'per_layer=')}, converters: "
        f"{_list(run.best_pipeline, 'per_layer_converter=')}"
    )
    print(f"    full compile of the searched pipeline gives the same costs: {check == found}")


def _mapping(pipeline: str) -> str:
    """Return the mapping part of a full pipeline string (after the clean-up passes)."""
    names = [str(p) for p in driver.pipeline_passes(pipeline)]
    start = next(i for i, p in enumerate(names) if p.startswith("assign-input-precision"))
    return ",".join(names[start:])


def _list(pipeline: str, option: str) -> str:
    """Return the first list option spelled `option[...]` in a pipeline string."""
    text = pipeline.split(option, 1)[1]
    return text[: text.index("]") + 1]


def resnet(trials: int, heldout: int, images: int, workdir: Path) -> None:
    """Part (c): ResNet-20 peripheral search with real accuracy, baseline against searched."""
    target = load_target("xpert")
    problem = Problem.load(
        ROOT / "models" / "resnet20_cifar10.onnx",
        target,
        CIFAR10,
        search_samples=images,
        probe_samples=32,
        check_samples=images,
    )
    evaluator = Evaluator(problem)
    space = build_space(problem.graph, target)
    full = load_dataset(CIFAR10, 5000)
    assert full.labels is not None
    test = Dataset(full.name, full.images[-heldout:], full.labels[-heldout:])
    float_search = evaluator.reference_accuracy("search")
    floor = float_search - 0.01
    lossless = {
        d.key: d.choices[-1]
        for d in space.dimensions
        if d.option in ("per_layer_bits", "per_layer_slices")
    }
    lossless |= {d.key: "sar" for d in space.dimensions if d.option == "per_layer_converter"}
    lossless |= {d.key: "8" for d in space.dimensions if d.option == "per_layer"}
    grid = uniform_grid(space, lossless)
    run = search(
        space,
        evaluator,
        sampler="tpe",
        seed=0,
        trials=max(trials, len(grid) + 1),
        workdir=workdir,
        name="resnet20",
        accuracy=True,
        floor=floor,
        enqueue=[lossless, *grid],
    )
    original = Evaluator(problem)
    reference = _float(original, test)
    print(
        f"(c) ResNet-20 (pretrained) on xpert.hw with real CIFAR-10 images: {trials} trials "
        f"(search subset {len(problem.search_data.images)} images, floor 1 point below the "
        f"float model's {float_search:.1%}), held-out {heldout} images "
        f"(the last of the file)"
    )
    print(f"    float model on the held-out images: {reference:.1%}")
    print(
        f"    search start: the uniform lossless design and {len(grid)} uniform designs "
        "(weight slicing x SAR precision 8..5 bits, 8-bit inputs, column sharing 8)"
    )
    rows = [
        ("target default", _mapping(driver.default_pipeline(target))),
        ("uniform lossless (start)", _mapping(space.full_pipeline(lossless))),
    ]
    uniform = best_trial(workdir / "resnet20.db", "resnet20", range(len(grid) + 1), floor)
    if uniform is not None:
        rows.append(("best uniform (start)", _mapping(uniform)))
    start = time.perf_counter()
    descended, _, _, evaluations = descend(space, evaluator, lossless, floor)
    seconds = time.perf_counter() - start
    rows.append(("coordinate descent", space.pipeline(descended)))
    if run.best_pipeline:
        rows.append(("searched", _mapping(run.best_pipeline)))
    base_metrics = None
    for label, pipeline in rows:
        graph = evaluator.compile(pipeline)
        metrics = evaluator.cost(pipeline, graph)
        base_metrics = base_metrics or metrics
        accuracy = evaluator.simulate(graph, test).accuracy
        print(
            f"    {label:26} accuracy {accuracy:.1%} ({(accuracy - reference) * 100:+.1f} "
            f"points) EDAP {metrics.edap:.4g} ({base_metrics.edap / metrics.edap:.2f}x lower) "
            f"TOPS/W {metrics.tops_per_w:.3f} TOPS/mm2 {metrics.tops_per_mm2:.4f}"
        )
    if not run.best_pipeline:
        print("    no trial met the accuracy floor on the search subset")
    print(
        f"    search: {run.trials} trials, {run.distinct} distinct, "
        f"{run.trials / run.seconds:.3f} trials/s; coordinate descent from the uniform "
        f"lossless design: {evaluations} evaluations, {seconds:.0f} s"
    )


ACCURACY_NEUTRAL = {
    ("share-columns", "per_layer"),
    ("select-adc", "per_layer_converter"),
    ("place", "replicate"),
}
"""Dimensions that change cost only: a converter type of the same precision converts alike."""
DESCENT = [
    ("share-columns", "per_layer"),
    ("select-adc", "per_layer_converter"),
    ("place", "replicate"),
    ("assign-input-precision", "per_layer_bits"),
    ("select-adc", "per_layer_bits"),
]
"""Coordinate descent's order: XPert's structure first, then the precisions."""


def descend(
    space: SearchSpace, evaluator: Evaluator, start: Mapping[str, str], floor: float
) -> tuple[dict[str, str], Metrics, float, int]:
    """Coordinate descent from a design that meets the accuracy floor: one dimension at a
    time (order `DESCENT`, layer by layer), keep the choice of lowest EDAP whose accuracy on
    the search subset stays at or above the floor (precisions tried downwards from the
    current one, stopping at the first that falls below). Return the design, its costs, its
    search accuracy and the evaluations made."""
    current = dict(start)
    first = evaluator.evaluate(space.pipeline(current), accuracy=True, floor=floor)
    assert first.metrics is not None and first.accuracy is not None
    metrics, accuracy, evaluations = first.metrics, first.accuracy, 1
    for pass_name, option in DESCENT:
        for d in (d for d in space.dimensions if (d.pass_name, d.option) == (pass_name, option)):
            neutral = (pass_name, option) in ACCURACY_NEUTRAL
            choices = list(d.choices)
            if not neutral:  # precisions: downwards from the current one
                choices = choices[: choices.index(current[d.key])][::-1]
            for choice in choices:
                if choice == current.get(d.key):
                    continue
                trial = {**current, d.key: choice}
                found = evaluator.evaluate(space.pipeline(trial), accuracy=not neutral, floor=floor)
                evaluations += 1
                if found.metrics is None:
                    continue  # illegal
                if not neutral and (
                    found.pruned or found.accuracy is None or found.accuracy < floor
                ):
                    break
                if found.metrics.edap < metrics.edap:
                    current, metrics = trial, found.metrics
                    accuracy = accuracy if neutral else found.accuracy
    return current, metrics, accuracy, evaluations


def best_trial(database: Path, name: str, numbers: range, floor: float) -> str | None:
    """Return the pipeline of the lowest-EDAP trial among `numbers` that meets the floor."""
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{database}")
    best, pipeline = math.inf, None
    for trial in study.get_trials(deepcopy=False):
        result = trial.user_attrs.get(RESULT)
        if trial.number not in numbers or result is None or trial.state.name != "COMPLETE":
            continue
        if result["accuracy"] >= floor and result["metrics"]["edap"] < best:
            best, pipeline = result["metrics"]["edap"], trial.user_attrs["pipeline"]
    return pipeline


def uniform_grid(space: SearchSpace, start: Mapping[str, str]) -> list[dict[str, str]]:
    """Return the uniform designs the ResNet-20 search starts from (as enqueued trials): every
    weight slicing x SAR precision of 8 down to 5 bits in all layers, the rest as `start`;
    TPE then varies the layers one by one from the best of them."""
    slicings = next(d.choices for d in space.dimensions if d.option == "per_layer_slices")
    grid = []
    for slicing, bits in itertools.product(slicings, ("8", "7", "6", "5")):
        design = dict(start)
        for d in space.dimensions:
            if d.option == "per_layer_slices":
                design[d.key] = slicing
            elif d.key.startswith("select-adc.per_layer_bits"):
                design[d.key] = bits
        if design != dict(start):
            grid.append(design)
    return grid


def _float(evaluator: Evaluator, data: Dataset) -> float:
    """Return the float model's accuracy on a data set."""
    import numpy as np

    from imcc.backend.reference import run_graph
    from imcc.ir.rebatch import rebatch

    graph = rebatch(evaluator.problem.graph, len(data.images))
    out = run_graph(graph, {graph.inputs[0].name: data.images})[graph.outputs[0]]
    return float(np.mean(out.argmax(axis=-1) == data.labels))


def depth(family: str, trials: int, images: int, area: float, workdir: Path) -> None:
    """Part (d): the XPert search with channel depth (a width family, search/family.py)
    against the same search on the family's widest network alone (fixed width), both within
    `area` mm² (XPert holds area to a target), and the widest network's default design."""
    from imcc.search import SearchConfig, run_search
    from imcc.search.family import parse_family

    data = f"fashion-mnist:{ROOT / '.cache' / 'models' / 'fashion-mnist'}"
    common = dict(
        target="xpert",
        data=data,
        strategy="xpert",
        trials=trials,
        search_samples=512,
        probe_samples=64,
        check_samples=1000,
        random_trials=0,
        max_accuracy_drop=2.0,
        family_images=images,
        area_budget_mm2=area,
    )
    searched = run_search(SearchConfig(model="", family=family, out=workdir / "depth", **common))
    record = json.loads((workdir / "depth" / "network.json").read_text())
    widest = parse_family(family).widest()
    reference = next(c for c in record["candidates"] if c["widths"] == list(widest))
    fixed = run_search(SearchConfig(model=reference["model"], out=workdir / "fixed", **common))
    print(
        f"(d) channel depth: {family} on xpert.hw, Fashion-MNIST; {len(record['candidates'])}"
        f" networks, proxy budget one epoch of {images} images each; {trials} trials per "
        f"search (phase 1 per candidate: {trials // 2}); area budget {area:g} mm2; accuracy "
        "on 1000 test images (search subset 512)"
    )
    for c in record["candidates"]:
        latency = c["phase1_latency_s"]
        print(
            f"    {c['label']:14} {c['parameters']:7d} params  proxy accuracy "
            f"{c['accuracy']:.1%}  phase-1 latency "
            f"{'-' if latency is None else f'{latency * 1e6:.1f} us'}"
        )
    rows = [
        (f"default design {reference['label']}", fixed.baseline),
        ("fixed width " + reference["label"], fixed.best),
        ("searched " + record["chosen"], searched.best),
    ]
    base = fixed.baseline
    for label, best in rows:
        if best is None or base is None:
            print(f"    {label:26} no design within the budgets")
            continue
        m = best.metrics
        print(
            f"    {label:26} accuracy {best.accuracy:.1%} energy {m.energy_j:.3e} J "
            f"latency {m.latency_s:.3e} s area {m.area_mm2:.2f} mm2 EDAP {m.edap:.3e} "
            f"({base.metrics.edap / m.edap:.2f}x lower)"
        )


PARTS: dict[str, Callable[[argparse.Namespace, Path], None]] = {
    "quality": lambda a, w: quality(a.seeds, w),
    "xpert": lambda a, w: xpert(a.vgg_trials, w),
    "resnet": lambda a, w: resnet(a.resnet_trials, a.heldout, a.resnet_images, w),
    "depth": lambda a, w: depth(a.family, a.depth_trials, a.family_images, a.depth_area, w),
}


def main() -> None:
    """Run the parts named on the command line and print their reports."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--vgg-trials", type=int, default=150)
    parser.add_argument("--resnet-trials", type=int, default=12)
    parser.add_argument("--family", default="vgg:fashion-mnist:0.5,0.75,1")
    parser.add_argument("--family-images", type=int, default=12000)
    parser.add_argument("--depth-trials", type=int, default=120)
    parser.add_argument(
        "--depth-area",
        type=float,
        default=4.0,
        help="area budget of (d) in mm2 (the widest network's default design takes 3.6)",
    )
    parser.add_argument(
        "--resnet-images",
        type=int,
        default=256,
        help="search subset of (c): the first images of the file",
    )
    parser.add_argument(
        "--heldout", type=int, default=1000, help="held-out images of (c): the last of the file"
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scratch = "/dev/shm" if Path("/dev/shm").is_dir() else None  # SQLite without fsync waits
    with tempfile.TemporaryDirectory(dir=scratch) as work:
        for part in args.parts.split(","):
            PARTS[part](args, Path(work))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
