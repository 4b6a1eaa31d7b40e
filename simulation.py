"""`imcc simulate`: accuracy of a mapped program on a data set, against float and lossless runs.

For every batch of the data set three runs are made: the float model (the `ideal` reference
backend on the program's source model, when it is known), the quantized network with lossless
converters, and the mapped network with the program's converters (seeded). Reported: the three
accuracies, the agreement of their predictions, and per crossbar layer the saturation rate of
its converters, the mean relative error of its output against the lossless run (errors of
earlier layers included, as they propagate), and for MTJ converters the samples drawn and the
fraction that switched; for speculative layers (RAELLA) the wide reads that saturated and the
1-bit recovery conversions they took.

With a `PrefixCache` (`reuse`), each batch keeps what its runs made before every crossbar layer,
and a later simulation whose program maps the leading layers alike resumes from the deepest
one it finds: a search's designs that differ in later layers skip the layers they share.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from imcc.backend.datapath import Statistics
from imcc.backend.reference import run_graph, sample_input
from imcc.backend.simulator import CrossbarInterpreter, LayerRecord
from imcc.errors import UserError
from imcc.frontend.datasets import Dataset, check_labels
from imcc.ir.graph import Graph
from imcc.ir.io import require_weights
from imcc.ir.printer import format_constant, format_node
from imcc.ir.rebatch import rebatch
from imcc.passes.layers import crossbar_layers
from imcc.passes.program_target import check_program_target
from imcc.target import Target


@dataclass(frozen=True)
class LayerAccuracy:
    """Per crossbar layer: converter saturation, output error against lossless, MTJ samples."""

    name: str
    conversions: int
    saturation_rate: float
    rel_error: float
    mtj_samples: int
    mtj_switch_rate: float | None
    speculative_failures: int = 0  # wide-slice reads that saturated and were re-run
    recovery_conversions: int = 0  # the 1-bit conversions those re-runs took


@dataclass(frozen=True)
class SimulationReport:
    """Accuracies of a mapped program and what its converters did."""

    data: str
    samples: int
    seed: int
    float_accuracy: float | None
    quantized_accuracy: float
    accuracy: float
    agreement_quantized: float  # mapped vs lossless predictions
    agreement_float: float | None  # lossless vs float predictions
    layers: tuple[LayerAccuracy, ...]
    limit: int | None = None  # the samples asked for, when the data set had fewer
    predictions: tuple[int, ...] = field(default=(), repr=False)  # mapped, one per sample

    def to_dict(self) -> dict[str, Any]:
        """Return the report with the keys the README documents."""
        return {
            "data": self.data,
            "samples": self.samples,
            "seed": self.seed,
            "accuracy": self.accuracy,
            "float_accuracy": self.float_accuracy,
            "quantized_accuracy": self.quantized_accuracy,
            "agreement_quantized": self.agreement_quantized,
            "agreement_float": self.agreement_float,
            "layers": [vars(layer) for layer in self.layers],
            "limit": self.limit,
        }


def simulate(
    program: Graph,
    target: Target,
    data: Dataset,
    *,
    float_graph: Graph | None = None,
    batch: int = 64,
    seed: int = 0,
    progress: bool = False,
    only: str | None = None,
    first: int = 0,
    reuse: PrefixCache | None = None,
) -> SimulationReport:
    """Run a mapped program on a labelled data set; see the module docstring. With `only` (a
    crossbar layer's result) the mapped run keeps that layer's converters and makes every
    other crossbar layer exact: what that layer alone costs the network. With `reuse`, a batch
    whose leading layers an earlier simulation ran the same way (the same nodes, weights,
    target, seed and samples) resumes from what they made (`PrefixCache`): the same report.

    Every sample of `data` is simulated: whole batches of `batch`, then one partial batch for
    the rest. Each sample's MTJ draws are seeded by `seed`, the layer and the sample's index
    (backend/datapath.py `Draws`), so a sample's result depends neither on the batch size nor
    on the samples around it. With `first`, `data` holds samples `first`, `first` + 1, ... of a
    larger set, and they draw as those samples: a set simulated in parts draws as it would
    whole."""
    if batch < 1:  # a batch of 0 never ends and a negative one slices from the end
        raise UserError(
            f"the simulation batch must be at least 1, not {batch}",
            hint="--batch B (compile: --sim-batch B) simulates B samples at a time (default 64)",
        )
    if data.labels is None:
        raise UserError(f"data set {data.name} has no labels", hint="accuracy needs labels")
    total = len(data.images)
    if total == 0:
        raise UserError(
            f"data set {data.name} holds no samples",
            hint="point at a data set with at least one image",
        )
    require_weights(program, "simulate")
    check_program_target(program, target)  # a mapping for another target runs as nonsense
    batch = min(batch, total)
    mapped = _batched(program, data, batch)
    check_labels(data, classes_of(mapped))  # before an hour of simulation, not after
    ideal = _batched(float_graph, data, batch) if float_graph is not None else None
    layers = [n.outputs[0] for n in crossbar_layers(mapped)]
    names = (*layers, mapped.outputs[0])
    if only is not None and only not in layers:
        raise UserError(f"{only} is not a crossbar layer of the program")
    machine = (  # MTJ draws seeded per sample
        CrossbarInterpreter(target, seed)
        if only is None
        else CrossbarInterpreter(target, seed, lossless=True, keep=frozenset({only}))
    )
    machine.samples_run = first  # the index of this part's first sample: its draws
    exact = CrossbarInterpreter(target, seed, lossless=True)
    predictions: dict[str, list[np.ndarray]] = {"mapped": [], "lossless": [], "float": []}
    errors = {name: [0.0, 0.0] for name in layers}
    value = mapped.inputs[0].name
    prefixes: _Prefixes | None = None
    for start in _progress(range(0, total, batch), progress, data.name):
        images = data.images[start : start + batch]
        if len(images) < batch:  # the last, partial batch: the same graphs at its size
            mapped = rebatch(program, len(images))
            ideal = rebatch(float_graph, len(images)) if float_graph is not None else None
            prefixes = None
        run = mapped.replace(outputs=names)
        if reuse is not None and prefixes is None:
            prefixes = _Prefixes(run, layers, target, machine)
        if prefixes is None:
            got = machine.run(run, {value: images})
            ref = exact.run(run, {value: images})
            outputs = got[names[-1]], ref[names[-1]]
            batch_errors = {name: _errors(got[name], ref[name]) for name in layers}
        else:
            assert reuse is not None
            outputs, batch_errors = prefixes.run(reuse, machine, exact, images, first + start)
        for name in layers:
            errors[name][0] += batch_errors[name][0]
            errors[name][1] += batch_errors[name][1]
        predictions["mapped"].append(outputs[0].argmax(axis=-1))
        predictions["lossless"].append(outputs[1].argmax(axis=-1))
        if ideal is not None:
            out = run_graph(ideal, {ideal.inputs[0].name: images})[ideal.outputs[0]]
            predictions["float"].append(out.argmax(axis=-1))
    mapped_pred = np.concatenate(predictions["mapped"])
    lossless_pred = np.concatenate(predictions["lossless"])
    labels = data.labels
    float_pred = np.concatenate(predictions["float"]) if predictions["float"] else None
    records = []
    for node in crossbar_layers(mapped):
        stats = machine.layers[node.outputs[0]].stats
        error, reference = errors[node.outputs[0]]
        records.append(
            LayerAccuracy(
                node.name or node.outputs[0],
                stats.conversions,
                stats.saturated / stats.conversions if stats.conversions else 0.0,
                error / reference if reference else 0.0,
                stats.samples,
                stats.ones / stats.samples if stats.samples else None,
                stats.speculative_failures,
                stats.recoveries,
            )
        )
    return SimulationReport(
        data.name,
        len(mapped_pred),
        seed,
        None if float_pred is None else float(np.mean(float_pred == labels)),
        float(np.mean(lossless_pred == labels)),
        float(np.mean(mapped_pred == labels)),
        float(np.mean(mapped_pred == lossless_pred)),
        None if float_pred is None else float(np.mean(float_pred == lossless_pred)),
        tuple(records),
        data.limit if data.limit is not None and data.limit > total else None,
        tuple(int(p) for p in mapped_pred.reshape(-1)),
    )


def _errors(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Return a layer's absolute error against the lossless run summed over a batch, and the
    lossless output's summed magnitude."""
    return (
        float(np.abs(got.astype(np.float64) - ref).sum()),
        float(np.abs(ref.astype(np.float64)).sum()),
    )


REUSE_BUDGET = 2 << 30
"""Bytes a `PrefixCache` keeps by default (imcc's choice): about three designs' worth of 2,000
CIFAR-10 images on VGG-16, whose values before its crossbar layers take 69 MB a design for
200 images (both runs, compacted; measured on xpert.hw)."""


@dataclass
class _Resume:
    """What one batch's runs left before one crossbar layer: the values the nodes from there
    on read, of the mapped and of the lossless run (compacted: `_compact`), and for each
    layer before it the batch's error sums (`_errors`) and its converters' statistics."""

    mapped: dict[str, tuple[np.ndarray, np.dtype]]
    exact: dict[str, tuple[np.ndarray, np.dtype]]
    errors: dict[str, tuple[float, float]]
    stats: dict[str, Statistics]

    @property
    def size(self) -> int:
        """Return the bytes its values take."""
        return sum(a.nbytes for a, _ in (*self.mapped.values(), *self.exact.values()))


class PrefixCache:
    """What simulated batches made before each crossbar layer, for simulations that run the
    same leading layers again: a search's designs that differ in later layers only (xpert's
    phase-2 descent moves one to three layers of the best design). An entry is keyed by
    everything that made it: the nodes up to that layer as the canonical text spells them
    (their attributes and their constants' content digests), the target, the seed, the
    converters the mapped run keeps, and the batch (its samples' bytes and their index, which
    seeds MTJ draws). Entries beyond `budget` bytes are dropped, least recently used first;
    `demote` makes what one simulation added the first dropped (a design a search rejected,
    which no later design builds on). `resumed` counts the batches that resumed after their
    first crossbar layer, `skipped` the crossbar layer runs that saved, `puts` the entries
    added so far."""

    def __init__(self, budget: int = REUSE_BUDGET) -> None:
        self.budget = budget
        self.entries: OrderedDict[str, _Resume] = OrderedDict()
        self.added: dict[str, int] = {}  # each entry's place in the order of `put`
        self.size = 0
        self.resumed = 0
        self.skipped = 0
        self.puts = 0

    def get(self, key: str) -> _Resume | None:
        """Return the entry under `key` (now the most recently used), or None."""
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: _Resume) -> None:
        """Keep an entry, dropping the least recently used beyond the budget."""
        size = entry.size
        if key in self.entries or size > self.budget:
            return
        self.entries[key] = entry
        self.added[key] = self.puts
        self.puts += 1
        self.size += size
        while self.size > self.budget:
            gone, dropped = self.entries.popitem(last=False)
            del self.added[gone]
            self.size -= dropped.size

    def demote(self, since: int) -> None:
        """Make the entries added since `since` (an earlier `puts`) the first to be dropped."""
        for key in [k for k, n in self.added.items() if n >= since]:
            self.entries.move_to_end(key, last=False)


class _Prefixes:
    """A program's crossbar layers as places a batch can resume (`PrefixCache`): each one's
    node index, the digest of what precedes it, and the values the nodes from it on read."""

    def __init__(
        self, graph: Graph, layers: Sequence[str], target: Target, machine: CrossbarInterpreter
    ) -> None:
        self.graph = graph
        self.layers = tuple(layers)
        index = {o: i for i, n in enumerate(graph.nodes) for o in n.outputs}
        self.nodes = {name: graph.nodes[index[name]] for name in layers}
        self.at = [index[name] for name in layers]  # the node index of each crossbar layer
        context = f"{target!r}|{machine.seed}|{machine.lossless}|{sorted(machine.keep)}"
        self.digests = _prefix_digests(graph, self.at, context)
        self.live = [_live(graph, start) for start in self.at]

    def run(
        self,
        cache: PrefixCache,
        machine: CrossbarInterpreter,
        exact: CrossbarInterpreter,
        images: np.ndarray,
        first: int,
    ) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, tuple[float, float]]]:
        """Run a batch (samples `first`, ...) on both interpreters, resumed from the deepest
        crossbar layer the cache holds it at; keep what it makes at the layers after that;
        return the mapped and lossless outputs and each layer's error sums."""
        contiguous = np.ascontiguousarray(images)
        batch = hashlib.sha256(f"{first}|{contiguous.dtype.str}|{contiguous.shape}".encode())
        batch.update(memoryview(contiguous.reshape(-1)).cast("B"))
        keys = [hashlib.sha256((d + batch.hexdigest()).encode()).hexdigest() for d in self.digests]
        found, at = None, 0
        for i in range(len(keys) - 1, 0, -1):  # the deepest first; the first layer saves nothing
            found = cache.get(keys[i])
            if found is not None:
                at = i
                break
        start = self.at[at] if found is not None else 0
        names = self.layers[at:]
        graph = self.graph.replace(outputs=(*names, self.graph.outputs[-1]))
        wanted = {self.at[i]: i for i in range(at + 1, len(self.at))}
        kept: tuple[dict[int, dict], dict[int, dict]] = ({}, {})

        def keeper(snapshots: dict[int, dict]):
            def visit(index: int, values: Mapping[str, np.ndarray]) -> None:
                if index in wanted:
                    snapshots[index] = {v: _compact(values[v]) for v in self.live[wanted[index]]}

            return visit

        before = {name: _copy(machine, name) for name in names}
        if found is None:
            feeds = {self.graph.inputs[0].name: images}
            mapped_feeds, exact_feeds = feeds, feeds
        else:
            mapped_feeds, exact_feeds = _restore(found.mapped), _restore(found.exact)
            cache.resumed += 1
            cache.skipped += at
        samples = len(images)
        got = machine.run(graph, mapped_feeds, start=start, visit=keeper(kept[0]), samples=samples)
        ref = exact.run(graph, exact_feeds, start=start, visit=keeper(kept[1]), samples=samples)
        errors = dict(found.errors) if found is not None else {}
        stats = dict(found.stats) if found is not None else {}
        for name in names:
            errors[name] = _errors(got[name], ref[name])
            stats[name] = _minus(_copy(machine, name), before[name])
        if found is not None:  # the skipped layers' converters did what they did before
            for name in self.layers[:at]:
                node = self.nodes[name]
                record = machine.layers.setdefault(name, LayerRecord(node.name or name))
                _add(record.stats, found.stats[name])
        for index, i in wanted.items():
            cache.put(
                keys[i],
                _Resume(
                    kept[0][index],
                    kept[1][index],
                    {n: errors[n] for n in self.layers[:i]},
                    {n: stats[n] for n in self.layers[:i]},
                ),
            )
        final = self.graph.outputs[-1]
        return (got[final], ref[final]), errors


def _prefix_digests(graph: Graph, starts: Sequence[int], context: str) -> list[str]:
    """Return, for each node index in `starts` (ascending), the digest of `context`, the
    graph's inputs and attributes, and the nodes before it with the constants they read, as
    the canonical text spells them (constants by content digest)."""
    digest = hashlib.sha256(context.encode())
    digest.update(repr([(v.name, str(v.type)) for v in graph.inputs]).encode())
    digest.update(repr(sorted(graph.attributes.items())).encode())
    wanted, seen, found = set(starts), set(), []
    for index, node in enumerate(graph.nodes):
        if index in wanted:
            found.append(digest.hexdigest())
        for name in node.inputs:
            if name in graph.constants and name not in seen:
                seen.add(name)
                digest.update(format_constant(graph.constants[name]).encode())
        digest.update(format_node(node, graph).encode())
    return found


def _live(graph: Graph, start: int) -> tuple[str, ...]:
    """Return the values made before node `start` (or graph inputs) that nodes from it on read."""
    made = {v.name for v in graph.inputs} | {o for n in graph.nodes[:start] for o in n.outputs}
    read = {i for n in graph.nodes[start:] for i in n.inputs}
    return tuple(sorted((made & read) - set(graph.constants)))


def _compact(array: np.ndarray) -> tuple[np.ndarray, np.dtype]:
    """Return an array in the narrowest integer type that holds it (a copy), or as it is (a
    copy when it is a view, so the cache's count of bytes holds), with its own type to
    restore."""
    array = np.asarray(array)
    if array.dtype.kind in "iu" and array.size:
        low, high = int(array.min()), int(array.max())
        for narrow in (np.int8, np.uint8, np.int16):
            info = np.iinfo(narrow)
            if info.min <= low and high <= info.max and np.dtype(narrow).itemsize < array.itemsize:
                return array.astype(narrow), array.dtype
    return (array if array.base is None else array.copy()), array.dtype


def _restore(values: Mapping[str, tuple[np.ndarray, np.dtype]]) -> dict[str, np.ndarray]:
    return {k: a if a.dtype == dtype else a.astype(dtype) for k, (a, dtype) in values.items()}


_COUNTS = tuple(f.name for f in fields(Statistics) if f.type in ("int", int))


def _copy(machine: CrossbarInterpreter, name: str) -> Statistics:
    record = machine.layers.get(name)
    return Statistics() if record is None else replace(record.stats)


def _minus(after: Statistics, before: Statistics) -> Statistics:
    """Return what a layer's converters did between two snapshots of its statistics."""
    counts = {f: getattr(after, f) - getattr(before, f) for f in _COUNTS}
    return Statistics(**counts, lossless=after.lossless)


def _add(total: Statistics, part: Statistics) -> None:
    for f in _COUNTS:
        setattr(total, f, getattr(total, f) + getattr(part, f))
    total.lossless = total.lossless and part.lossless


def _batched(graph: Graph, data: Dataset, batch: int) -> Graph:
    sample_input(graph, data.images, "simulate")
    return rebatch(graph, batch)


def classes_of(graph: Graph) -> int | None:
    """Return the number of classes a model predicts, the last axis of its [N, C] output (None
    for an output of another rank, whose argmax is not one class per sample)."""
    shape = graph.type_of(graph.outputs[0]).shape
    return int(shape[-1]) if len(shape) == 2 else None


def _progress(items, enabled: bool, label: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=f"simulate {label}", unit="batch", leave=False)


def format_simulation(report: SimulationReport) -> str:
    """Return a readable summary: accuracies, then one line per crossbar layer."""

    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    lines = [
        f"simulate: {report.samples} samples of {report.data}"
        + ("" if report.limit is None else f" (all of them; --limit asked for {report.limit})")
        + f", seed {report.seed}",
        f"float accuracy       {percent(report.float_accuracy)}",
        f"quantized accuracy   {percent(report.quantized_accuracy)}   (lossless converters)",
        f"mapped accuracy      {percent(report.accuracy)}   (the program's converters)",
        f"agreement            mapped/quantized {percent(report.agreement_quantized)}, "
        f"quantized/float {percent(report.agreement_float)}",
        "",
        f"{'layer':32} {'conversions':>14} {'saturated':>10} {'rel error':>10} {'MTJ switch':>11}",
    ]
    for layer in report.layers:
        switch = "" if layer.mtj_switch_rate is None else f"{layer.mtj_switch_rate:.3f}"
        lines.append(
            f"{layer.name[:32]:32} {layer.conversions:>14,} "
            f"{100 * layer.saturation_rate:>9.2f}% {layer.rel_error:>10.4f} {switch:>11}"
        )
    return "\n".join(lines)
