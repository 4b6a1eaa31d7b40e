"""`imcc finetune`: map a model, measure it, fine-tune it through the datapath, export it, map
the exported model again and measure that program with the bit-accurate simulator.

Data split: the data set's first `train` images fine-tune, its last `holdout` images are only
ever simulated (default: the last fifth held out, the rest to fine-tune; CIFAR-10's 5,000 test
images here: the first 4,000 fine-tune, the last 1,000 report). Calibration (quantize,
calibrate-mtj) uses the data set's first 64 images, as `imcc compile --calib DATA` does, so
`train` must cover them. Both accuracies, before and after, are `imcc simulate`'s (the
`simulation.py` crossbar interpreter, seeded) on the held-out images: the one after is
the program compiled from the exported model (with the learned normalisation), never the torch
forward.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imcc import driver
from imcc.driver import CALIBRATION_SAMPLES, calibration_data, default_pipeline
from imcc.errors import UserError
from imcc.examples import resolve_model
from imcc.files import write_file
from imcc.finetune.export import TrainedLayer, export_onnx, with_learned_normalisation
from imcc.finetune.module import MappedNetwork
from imcc.finetune.train import EpochRecord, InputRange, TrainConfig, train
from imcc.frontend.datasets import Dataset, load_dataset
from imcc.ir.graph import Graph
from imcc.ir.io import save_program
from imcc.passes.pipeline import DEFAULT_PIPELINE
from imcc.simulation import SimulationReport, simulate
from imcc.target import Target


@dataclass(frozen=True)
class FinetuneConfig:
    """What `imcc finetune` runs: model, target, data and its split, pipeline, training, output,
    the MTJ backward (clamp / tanh) and the simulation batch and seed."""

    model: str
    target: str
    data: str
    output: str
    train: TrainConfig
    train_images: int | None = None
    holdout: int | None = None
    passes: str | None = None
    backward: str = "clamp"
    sim_batch: int = 64

    def __post_init__(self) -> None:
        for flag, value, hint in [
            (
                "--train",
                self.train_images,
                "--train N fine-tunes on the data set's first N images, e.g. --train 1024",
            ),
            (
                "--holdout",
                self.holdout,
                "--holdout N reports on the data set's last N images, e.g. --holdout 256",
            ),
            (
                "--sim-batch",
                self.sim_batch,
                "--sim-batch N simulates N held-out images at a time, e.g. --sim-batch 64",
            ),
        ]:
            if value is not None and value < 1:
                raise UserError(f"finetune: {flag} must be at least 1, not {value}", hint=hint)


@dataclass(frozen=True)
class FinetuneResult:
    """Before and after simulations on the held-out images, the epochs, and what was written."""

    before: SimulationReport
    after: SimulationReport
    epochs: tuple[EpochRecord, ...]
    train_images: int
    holdout: int
    sim_batch: int
    pipeline: str
    program: Path
    holdout_data: Path

    def to_dict(self) -> dict[str, Any]:
        """Return the result as one JSON-ready object."""
        return {
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "accuracy_before": self.before.accuracy,
            "accuracy_after": self.after.accuracy,
            "epochs": [asdict(e) for e in self.epochs],
            "train_images": self.train_images,
            "holdout": self.holdout,
            "sim_batch": self.sim_batch,
            "pipeline": self.pipeline,
            "program": str(self.program),
            "holdout_data": str(self.holdout_data),
        }


def split(data: Dataset, train_images: int | None, holdout: int | None) -> tuple[Dataset, Dataset]:
    """Return (first `train_images`, last `holdout`) of a labelled data set."""
    total = len(data.images)
    if data.labels is None:
        raise UserError(f"data set {data.name} has no labels", hint="finetune needs labels")
    holdout = total // 5 if holdout is None else holdout
    train_images = total - holdout if train_images is None else train_images
    if holdout < 1 or train_images < 1 or train_images + holdout > total:
        raise UserError(
            f"finetune: --train {train_images} and --holdout {holdout} do not fit "
            f"the {total} images of {data.name}",
            hint="the first --train images fine-tune, the last --holdout report; "
            "together at most all of them",
        )
    if train_images < min(CALIBRATION_SAMPLES, total - holdout):
        raise UserError(
            f"finetune: --train {train_images} does not cover the first "
            f"{CALIBRATION_SAMPLES} images calibration uses",
            hint=f"give --train {CALIBRATION_SAMPLES} or more",
        )
    assert data.labels is not None
    return (
        Dataset(data.name, data.images[:train_images], data.labels[:train_images]),
        Dataset(
            f"{data.name}[-{holdout}:]",
            data.images[total - holdout :],
            data.labels[total - holdout :],
        ),
    )


def _compile(
    model: Path,
    target: Target,
    target_spec: str,
    pipeline: str,
    calibration: np.ndarray | None,
    seed: int,
) -> Graph:
    """Import and map a model as `imcc compile --target T --calib DATA` does."""
    return driver.compile(
        model,
        target,
        passes=pipeline,
        calibration=calibration,
        seed=seed,
        target_spec=target_spec,
        label="--passes",
    )


def input_range(pipeline: str) -> InputRange:
    """Return how the pipeline's quantize pass measures input ranges (its method and
    percentile), so that fine-tuning re-measures them as a re-compile will; a UserError when
    it quantizes the weights per tensor (fine-tuning keeps one scale per output channel)."""
    from imcc.passes.quantize import Quantize

    for step in driver.pipeline_passes(pipeline, label="--passes"):
        if isinstance(step, Quantize):
            if step.weight_granularity != "channel":
                raise UserError(
                    "--passes: fine-tuning quantizes the weights per output channel, so it "
                    f"cannot train for quantize{{weight_granularity={step.weight_granularity}}}",
                    hint="fine-tune with per-channel weights (drop weight_granularity)",
                )
            return InputRange(step.method, step.percentile)
    return InputRange()


def simulation_batch(holdout: int, limit: int) -> int:
    """Return the largest batch up to `limit` that divides the held-out images (so every one is
    simulated), or `limit` when only small ones do."""
    best = max(b for b in range(1, min(limit, holdout) + 1) if holdout % b == 0)
    return best if best >= min(16, holdout) else min(limit, holdout)


def run_finetune(
    config: FinetuneConfig, progress: bool = False, log: Any = print
) -> FinetuneResult:
    """Run `imcc finetune` (see the module docstring); `log` receives progress lines."""
    from imcc.frontend.hw import load_target

    model = resolve_model(config.model)
    if not model.is_file():
        raise UserError(f"cannot read {config.model}: no such file")
    target = load_target(config.target)
    pipeline = config.passes if config.passes is not None else default_pipeline(target)
    seed = config.train.seed
    train_set, held_out = split(load_dataset(config.data), config.train_images, config.holdout)
    calibration, _ = calibration_data(config.data, model)
    batch = simulation_batch(len(held_out.images), config.sim_batch)
    float_graph = driver.float_reference(model, seed)
    program, resumed = with_learned_normalisation(
        _compile(model, target, config.target, pipeline, calibration, seed), model
    )
    if any(node.op == "batch_norm" for node in program.nodes):
        raise UserError(
            "finetune: the mapped program still has batch norms; the exported "
            "model folds them into the crossbar layers' weights",
            hint=f"start --passes with the clean-up ({DEFAULT_PIPELINE}) or leave --passes out",
        )
    log(
        f"finetune: {model.name} on {target.name}; {len(train_set.images)} images of "
        f"{config.data} fine-tune (the first), {len(held_out.images)} report (the last)"
    )
    if resumed:
        log(
            f"finetune: {resumed} MTJ layers start from the normalisation {model.name} learned "
            "in an earlier fine-tuning"
        )
    before = simulate(
        program,
        target,
        held_out,
        float_graph=float_graph,
        batch=batch,
        seed=seed,
        progress=progress,
    )
    log(
        f"before: mapped accuracy {before.accuracy:.2%} (lossless {before.quantized_accuracy:.2%}"
        f") on {before.samples} held-out images, bit-accurate simulation"
    )
    network = MappedNetwork(program, target, float_graph, backward=config.backward)
    assert train_set.labels is not None and calibration is not None
    epochs = train(
        network,
        train_set.images,
        train_set.labels,
        TrainConfig(**{**asdict(config.train), "progress": progress}),
        calibration,
        input_range(pipeline),
        on_epoch=lambda record: log(
            f"epoch {record.epoch} ({record.forward}): loss {record.loss:.4f}, train accuracy "
            f"{record.train_accuracy:.2%}, {record.seconds:.1f} s"
        ),
    )
    layers = []
    for layer in network.layers:
        learned = layer.learned_normalisation()
        layers.append(
            TrainedLayer(
                layer.name,
                layer.op,
                layer.float_weight(),
                layer.float_bias(),
                *(learned or (None, None)),
            )
        )
    normalisation = {
        t.name: {"ps_scale": list(t.ps_scale), "ps_offset": list(t.ps_offset)}
        for t in layers
        if t.ps_scale is not None and t.ps_offset is not None
    }
    record = {
        "target": config.target,
        "pipeline": pipeline,
        "data": config.data,
        "train_images": len(train_set.images),
        "holdout": len(held_out.images),
        "seed": seed,
        "epochs": config.train.epochs,
        "surrogate_epochs": config.train.surrogate_epochs,
        "surrogate_ramp": config.train.surrogate_ramp,
        "datapath_images": config.train.datapath_images,
        "datapath_lr": config.train.datapath_lr,
        "distill": config.train.distill,
        "distill_temperature": config.train.temperature,
        "backward": config.backward,
        "normalisation": normalisation,
    }
    output = Path(config.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, layers, record, output)
    exported, _ = with_learned_normalisation(
        _compile(output, target, config.target, pipeline, calibration, seed), output
    )
    program_path = save_program(exported, output.with_suffix(".imcir"))
    holdout_path = output.with_name(output.stem + ".holdout.npz")
    write_file(
        holdout_path,
        lambda stream: np.savez_compressed(stream, image=held_out.images, label=held_out.labels),
    )
    after = simulate(
        exported,
        target,
        held_out,
        float_graph=float_graph,
        batch=batch,
        seed=seed,
        progress=progress,
    )
    log(
        f"after:  mapped accuracy {after.accuracy:.2%} (lossless {after.quantized_accuracy:.2%}) "
        f"on {after.samples} held-out images, bit-accurate simulation of {program_path}"
    )
    return FinetuneResult(
        before,
        after,
        tuple(epochs),
        len(train_set.images),
        len(held_out.images),
        batch,
        pipeline,
        Path(program_path),
        holdout_path,
    )
