"""`imcc simulate`: accuracy of a mapped program on a data set, against float and lossless runs.

For every batch of the data set three runs are made: the float model (the `ideal` reference
backend on the program's source model, when it is known), the quantized network with lossless
converters, and the mapped network with the program's converters (seeded). Reported: the three
accuracies, the agreement of their predictions, and per crossbar layer the saturation rate of
its converters, the mean relative error of its output against the lossless run (errors of
earlier layers included, as they propagate), and for MTJ converters the samples drawn and the
fraction that switched; for speculative layers (RAELLA) the wide reads that saturated and the
1-bit recovery conversions they took.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imcc.backend.reference import run_graph, sample_input
from imcc.backend.simulator import CrossbarInterpreter
from imcc.errors import UserError
from imcc.frontend.datasets import Dataset, check_labels
from imcc.ir.graph import Graph
from imcc.ir.io import require_weights
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
) -> SimulationReport:
    """Run a mapped program on a labelled data set; see the module docstring. With `only` (a
    crossbar layer's result) the mapped run keeps that layer's converters and makes every
    other crossbar layer exact: what that layer alone costs the network.

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
    for start in _progress(range(0, total, batch), progress, data.name):
        images = data.images[start : start + batch]
        if len(images) < batch:  # the last, partial batch: the same graphs at its size
            mapped = rebatch(program, len(images))
            ideal = rebatch(float_graph, len(images)) if float_graph is not None else None
        got = machine.run(mapped.replace(outputs=names), {value: images})
        ref = exact.run(mapped.replace(outputs=names), {value: images})
        for name in layers:
            errors[name][0] += float(np.abs(got[name].astype(np.float64) - ref[name]).sum())
            errors[name][1] += float(np.abs(ref[name].astype(np.float64)).sum())
        predictions["mapped"].append(got[names[-1]].argmax(axis=-1))
        predictions["lossless"].append(ref[names[-1]].argmax(axis=-1))
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
