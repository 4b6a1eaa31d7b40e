"""Evaluating one trial: compile its mapping pipeline, price it, measure its accuracy.

The target-independent clean-up runs once per search (`Problem.load`); a trial then runs only
its mapping pipeline on the cleaned graph, with the same calibration images `imcc compile
--calib DATA` loads, so that compiling the trial's full pipeline string reproduces its costs
exactly. Costs come from the analytic cost model, cached per mapping pipeline (a repeated
trial is free). Accuracy comes from the bit-accurate simulator, in two steps: a *probe* on the
first samples of the search subset prunes trials that cannot meet the accuracy floor (the
probe's accuracy below the floor by more than two standard errors), and only the survivors run
the rest of the subset. The probe's largest per-layer relative error is kept as a proxy.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from imcc import driver
from imcc.backend.reference import run_graph
from imcc.costmodel import CostReport, estimate
from imcc.driver import calibration_data
from imcc.errors import MappingError, UserError
from imcc.finetune.export import learned_normalisation, with_normalisation
from imcc.frontend.datasets import Dataset, check_labels, load_dataset
from imcc.ir.graph import Graph
from imcc.ir.rebatch import rebatch
from imcc.passes.base import Pass
from imcc.passes.layers import crossbar_layers
from imcc.passes.pipeline import print_pipeline
from imcc.search.evaluations import EvaluationStore
from imcc.search.psqat import PsQat, has_mtj
from imcc.simulation import PrefixCache, SimulationReport, classes_of, simulate
from imcc.target import Target

SIMULATION_SEED = 0
"""Seed of the converters' draws in every accuracy measurement (MTJ sampling)."""

CHECK = "check"
"""The first field of a stored check's key (`Evaluator.check`)."""
WAIT_PERIOD = 1.0
"""Seconds between two looks at an evaluation another worker is running."""

SIMULATION_BATCH = 64
"""Samples simulated at once; larger subsets are cut to whole batches."""


@dataclass(frozen=True, slots=True)
class Metrics:
    """The cost figures a search point reports (the report's keys, SI units)."""

    energy_j: float
    latency_s: float
    area_mm2: float
    edap: float
    tops_per_w: float
    tops_per_mm2: float

    @classmethod
    def of(cls, report: CostReport) -> Metrics:
        """Take the figures of a cost report (the same numbers `--report` writes)."""
        return cls(
            report.energy_j,
            report.latency_s,
            report.area_mm2,
            report.edap,
            report.tops_per_w,
            report.tops_per_mm2,
        )

    def to_dict(self) -> dict[str, float]:
        """Return the figures keyed as in the report JSON."""
        return {
            "energy_j": self.energy_j,
            "latency_s": self.latency_s,
            "area_mm2": self.area_mm2,
            "edap": self.edap,
            "tops_per_w": self.tops_per_w,
            "tops_per_mm2": self.tops_per_mm2,
        }


OBJECTIVES = {"edap": "edap", "energy": "energy_j", "latency": "latency_s", "area": "area_mm2"}
"""`--objective` names and the Metrics field each minimises."""


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What one trial gave: costs, accuracy (None when not measured), or why it is illegal."""

    metrics: Metrics | None = None
    accuracy: float | None = None
    samples: int = 0  # samples the accuracy was measured on
    pruned: bool = False  # the probe's accuracy ruled it out before the full subset
    layer_error: float | None = None  # the probe's largest per-layer relative error
    illegal: str | None = None  # the MappingError (or simulator limit) that rejected it
    quantized: float | None = None  # the same samples' accuracy with lossless converters
    finetuned: str | None = None  # the model PS-QAT fine-tuned for this design (search/psqat.py)


def _accuracy(graph: Graph, data: Dataset) -> float:
    """Return the float reference accuracy of a graph on a labelled data set."""
    batched = rebatch(graph, len(data.images))
    out = run_graph(batched, {batched.inputs[0].name: data.images})[batched.outputs[0]]
    assert data.labels is not None
    return float(np.mean(out.argmax(axis=-1) == data.labels))


@dataclass(frozen=True)
class Problem:
    """The model, target and data of one search, with the clean-up already run."""

    model: Path
    target: Target
    data: str
    graph: Graph  # cleaned-up float graph
    calibration: np.ndarray | None
    calibrated: str  # where the calibration images came from, as the report says
    search_data: Dataset  # the subset accuracy is searched on
    check_data: Dataset  # the subset every Pareto point is checked on
    probe: int  # samples of the probe (a prefix of search_data)
    # the MTJ normalisation the model learned in `imcc finetune` (its metadata; empty if none),
    # put on every compiled design as `imcc compile` does, so that a replay costs the same
    normalisation: dict = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        model: Path,
        target: Target,
        data: str,
        *,
        search_samples: int,
        probe_samples: int,
        check_samples: int,
    ) -> Problem:
        """Import and clean up the model, load calibration and accuracy data."""
        graph = driver.float_reference(model)
        calibration, calibrated = calibration_data(data, model)
        full = load_dataset(data, max(search_samples, check_samples))
        check_labels(full, classes_of(graph))  # not every trial found illegal, one by one
        probe = max(1, min(probe_samples, search_samples, len(full.images)))
        search = max(probe, min(search_samples, len(full.images)) // probe * probe)
        check = min(check_samples, len(full.images))
        return cls(
            model,
            target,
            data,
            graph,
            calibration,
            calibrated,
            full.take(search),
            full.take(check),
            probe,
            learned_normalisation(model),
        )


@dataclass
class Evaluator:
    """Compiles, prices and simulates trial pipelines of one problem, caching the costs.

    With `store` (search/evaluations.py: a JSON file, or a database several workers share),
    every evaluation is also kept there, keyed by the accuracy subset's size, the floor, `only`
    and the pipeline, and read back instead of being run again: a long measurement that stops
    resumes where it stopped, and workers sharing the store divide its evaluations."""

    problem: Problem
    costs: dict[str, Metrics] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)
    cached_prefixes: int = 8
    prefixes: OrderedDict[str, Graph] = field(default_factory=OrderedDict)
    store: EvaluationStore | None = None
    ran: int = 0  # evaluations this evaluator ran (not read back from `store`)
    psqat: PsQat | None = None  # designs with MTJ layers are fine-tuned first (search/psqat.py)
    tuned: dict[str, Evaluator] = field(default_factory=dict)  # by fine-tuned model
    last: tuple[str, Graph] | None = None  # the last design compiled (pipeline, program)
    # what simulated batches made before each crossbar layer, for designs that share leading
    # layers (simulation.py)
    reuse: PrefixCache = field(default_factory=PrefixCache)

    def reference_accuracy(self, subset: str) -> float:
        """Return the float model's accuracy on the `search` or `check` subset (cached)."""
        if subset not in self.reference:
            data = self.problem.search_data if subset == "search" else self.problem.check_data
            self.reference[subset] = _accuracy(self.problem.graph, data)
        return self.reference[subset]

    def compile(self, pipeline: str) -> Graph:
        """Run a mapping pipeline on the cleaned graph (MappingError when it is illegal).

        The passes up to `quantize` (input precision and quantization: the slow, data-bound
        part) run once per distinct prefix: the last `cached_prefixes` results are kept and
        the rest of a trial's pipeline runs on them. The passes are deterministic, so this is
        the graph a full compile gives (tests check it). The last design compiled is kept too:
        PS-QAT asks whether a design has MTJ layers before it is evaluated."""
        if self.last is not None and self.last[0] == pipeline:
            return self.last[1]
        graph = self._compile(pipeline)
        self.last = (pipeline, graph)
        return graph

    def _compile(self, pipeline: str, priced_only: bool = False) -> Graph:
        """Compile a pipeline (`priced_only`: without the passes that change nothing the cost
        model reads, `Pass.priced`, for an evaluation of cost alone)."""
        passes = driver.pipeline_passes(pipeline)
        if priced_only:
            passes = [p for p in passes if p.priced]
        names = [p.name for p in passes]
        cut = names.index("quantize") + 1 if "quantize" in names else 0
        graph = self.problem.graph
        if cut and self.cached_prefixes:
            key = print_pipeline(passes[:cut])
            if key in self.prefixes:
                self.prefixes.move_to_end(key)
            else:
                self.prefixes[key] = self._run(graph, passes[:cut])
                while len(self.prefixes) > self.cached_prefixes:
                    self.prefixes.popitem(last=False)
            graph, passes = self.prefixes[key], passes[cut:]
        return with_normalisation(self._run(graph, passes), self.problem.normalisation)[0]

    def _run(self, graph: Graph, passes: list[Pass]) -> Graph:
        """Run passes on a graph as the driver compiles: the problem's target and calibration."""
        return driver.compile(
            graph, self.problem.target, passes=passes, calibration=self.problem.calibration
        )

    def cost(self, pipeline: str, graph: Graph) -> Metrics:
        """Return the costs of a compiled trial, from the cache when priced before."""
        if pipeline not in self.costs:
            self.costs[pipeline] = Metrics.of(estimate(graph, self.problem.target))
        return self.costs[pipeline]

    def simulate(
        self,
        graph: Graph,
        data: Dataset,
        only: int | None = None,
        progress: bool = False,
        first: int = 0,
    ) -> SimulationReport:
        """Return the simulator's report of a compiled trial on a data subset (with `only`, a
        crossbar layer's index: every other crossbar layer exact; with `progress`, a bar; with
        `first`, the subset starts at that sample of the problem's data: simulation.py)."""
        count = len(data.images)
        batch = count if count <= SIMULATION_BATCH else SIMULATION_BATCH
        kept = None if only is None else crossbar_layers(graph)[only].outputs[0]
        return simulate(
            graph,
            self.problem.target,
            data,
            batch=batch,
            seed=SIMULATION_SEED,
            progress=progress,
            only=kept,
            first=first,
            reuse=self.reuse,
        )

    def evaluate(
        self,
        pipeline: str,
        *,
        accuracy: bool = True,
        floor: float | None = None,
        only: int | None = None,
        wait: bool = True,
    ) -> Evaluation | None:
        """Compile and price a trial; with `accuracy`, probe and then measure it, pruning
        when the probe rules out `floor`; with `only` (a crossbar layer's index), the accuracy
        is the network's with that layer's converters and every other layer exact. Illegal
        trials come back with their reason. With a `store` the evaluation is read back when
        stored; one another worker is running comes back as None without `wait`, and is
        waited for (or taken over, search/evaluations.py) with it."""
        key = f"{len(self.problem.search_data.images)}|{accuracy}|{floor}|{only}|{pipeline}"
        run = self._evaluate
        if self._tunes(pipeline, accuracy, only):
            assert self.psqat is not None
            key += f"|psqat={self.psqat.digest}"
            run = self._finetuned

        def once() -> dict:
            self.ran += 1
            return asdict(run(pipeline, accuracy, floor, only))

        saved = self._stored(key, once, wait)
        if saved is None:
            return None
        saved = dict(saved)
        metrics = saved.pop("metrics")
        return Evaluation(Metrics(**metrics) if metrics else None, **saved)

    def _stored(self, key: str, run: Callable[[], dict], wait: bool = True) -> dict | None:
        """Return `run()`'s result, kept under `key` in the store: read back when stored,
        run when no other worker holds it, else None without `wait` or waited for."""
        if self.store is None:
            return run()
        while (saved := self.store.get(key)) is None:
            with self.store.claim(key) as held:
                if held:
                    saved = run()
                    self.store.put(key, saved)
                    return saved
            if not wait:
                return None
            time.sleep(WAIT_PERIOD)
        return saved

    def _tunes(self, pipeline: str, accuracy: bool, only: int | None) -> bool:
        """Say whether this evaluation fine-tunes the design first (PS-QAT set, a whole
        design's accuracy, MTJ layers in its program)."""
        if self.psqat is None or not accuracy or only is not None:
            return False
        try:
            return has_mtj(self.compile(pipeline))
        except MappingError:
            return False  # illegal: `_evaluate` says why

    def _finetuned(
        self, pipeline: str, accuracy: bool, floor: float | None, only: int | None
    ) -> Evaluation:
        """Evaluate a design on the model PS-QAT fine-tuned for it (search/psqat.py)."""
        tuned = self.for_design(pipeline)
        found = tuned._evaluate(pipeline, accuracy, floor, only)
        return replace(found, finetuned=str(tuned.problem.model))

    def for_design(self, pipeline: str) -> Evaluator:
        """Return the evaluator whose model a design runs on: this one, or with PS-QAT and
        MTJ layers in the design, one of the model fine-tuned for it (trained when not
        cached)."""
        if not self._tunes(pipeline, True, None):
            return self
        assert self.psqat is not None
        problem = self.problem
        target = problem.target.source or problem.target.name
        model = self.psqat.finetuned(problem.model, target, pipeline)
        if str(model) not in self.tuned:
            self.tuned[str(model)] = Evaluator(
                Problem.load(
                    model,
                    problem.target,
                    problem.data,
                    search_samples=len(problem.search_data.images),
                    probe_samples=problem.probe,
                    check_samples=len(problem.check_data.images),
                ),
                reuse=self.reuse,  # one budget (keys hold the weights: no model shares one)
            )
        return self.tuned[str(model)]

    def stored_evaluations(self) -> dict[str, dict]:
        """Return the evaluations kept in `store`, keyed as `evaluate` keys them (empty
        without a store; the checks kept beside them left out)."""
        if self.store is None:
            return {}
        return {k: v for k, v in self.store.all().items() if not k.startswith(f"{CHECK}|")}

    def _evaluate(
        self, pipeline: str, accuracy: bool, floor: float | None, only: int | None
    ) -> Evaluation:
        try:
            if not accuracy:
                return Evaluation(self.cost(pipeline, self._compile(pipeline, priced_only=True)))
            graph = self.compile(pipeline)
            metrics = self.cost(pipeline, graph)
            data, probe = self.problem.search_data, self.problem.probe
            since = self.reuse.puts  # a design below the floor: what it kept goes first
            first = self.simulate(graph, data.take(probe), only)
            error = max((layer.rel_error for layer in first.layers), default=0.0)
            correct, samples = first.accuracy * first.samples, first.samples
            exact = first.quantized_accuracy * first.samples
            if floor is not None and first.accuracy < floor - _slack(floor, first.samples):
                self.reuse.demote(since)
                return Evaluation(
                    metrics, first.accuracy, first.samples, True, error, None, exact / samples
                )
            if len(data.images) > probe:
                rest = Dataset(data.name, data.images[probe:], data.labels[probe:])
                second = self.simulate(graph, rest, only, first=probe)  # MTJ draws as whole
                correct += second.accuracy * second.samples
                exact += second.quantized_accuracy * second.samples
                samples += second.samples
            if floor is not None and correct / samples < floor:
                self.reuse.demote(since)
            return Evaluation(
                metrics, correct / samples, samples, False, error, None, exact / samples
            )
        except MappingError as exc:
            return Evaluation(illegal=_reason(exc))
        except UserError as exc:  # a simulator limit: this mapping cannot run
            return Evaluation(illegal=_reason(exc))

    def check(self, pipeline: str) -> tuple[float, int]:
        """Return a trial's accuracy and sample count on the whole check subset (on the model
        PS-QAT fine-tuned for it, when it was)."""

        def run() -> dict:
            design = self.for_design(pipeline)
            report = design.simulate(  # minutes on a large network: a bar
                design.compile(pipeline), design.problem.check_data, progress=True
            )
            return {"accuracy": report.accuracy, "samples": report.samples}

        # kept in the store, so that workers sharing one check a design once
        key = f"{CHECK}|{len(self.problem.check_data.images)}|{pipeline}"
        if self.psqat is not None:
            key += f"|psqat={self.psqat.digest}"
        saved = self._stored(key, run)
        assert saved is not None
        return saved["accuracy"], saved["samples"]


def _slack(floor: float, samples: int) -> float:
    """Two standard errors of an accuracy near `floor` measured on `samples` samples."""
    p = min(max(floor, 0.02), 0.98)
    return 2.0 * math.sqrt(p * (1.0 - p) / samples) + 1.0 / samples


def _reason(exc: UserError) -> str:
    """Return an illegal trial's reason in one line: the pass name, not its full spelling."""
    text = str(exc)
    if text.startswith("pass '") and "': " in text:
        spec, _, message = text[len("pass '") :].partition("': ")
        text = f"{spec.split('{', 1)[0]}: {message}"
    return " ".join(text.split())
