"""The fine-tuning loop: seeded SGD (or Adam) with a cosine schedule through the mapped datapath.

Every step runs the mapped forward (MTJ samples drawn from generators seeded by torch's seeded
global generator) and the straight-through backward of backend/datapath.py, which recomputes
each crossbar layer's partial sums (with the same draws) instead of keeping them; with
`checkpoint` the whole crossbar layer (quantizers included) is recomputed too. After every
epoch the layers' input scales are re-measured as the quantize pass measures them (the float
network's largest |input| on the calibration images), so the training forward quantizes as a
re-compile of the exported model will.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imcc.errors import UserError
from imcc.finetune.module import MappedNetwork
from imcc.passes.quantize import input_scale

OPTIMIZERS = ("sgd", "adam")
STATE_FILE = "state.pt"
"""The training state a `TrainConfig.state` folder holds, rewritten after every epoch."""
SHIFT = 4
"""Pixels an augmented image is shifted by at most (the CIFAR-10 random crop of a padded image)."""
SURROGATE_IMAGES = 16
"""Calibration images the datapath error is measured on before each surrogate epoch."""


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning options: epochs, learning rate, batch, seed, optimizer, weight decay,
    momentum (SGD), the largest gradient norm a step takes (`clip`, 0: unclipped: a sampled
    forward's rare extreme sums otherwise throw a ResNet-20 out of its basin), epochs of the
    fast surrogate forward run first (`surrogate_epochs`: exact integer products plus a
    Gaussian error per output channel with the mean and spread the sampled datapath's error
    has, measured on calibration images before each epoch, its share rising over the first
    `surrogate_ramp` of these epochs (`surrogate_strength`); many times faster than the
    datapath; the `epochs` through the datapath follow, each stage with its own cosine schedule
    from its peak: `lr`, and for the datapath stage `datapath_lr` (0: `lr`); see
    `learning_rate_factor`), the images each datapath epoch trains on (`datapath_images`: a
    fresh random subset of the training images per epoch, 0: all; a datapath step costs
    several hundred surrogate steps), whether to show a progress bar, and to recompute the crossbar
    layers in the backward pass instead of keeping their tensors (`checkpoint`: less memory,
    more time). With `augment`, each training image is randomly shifted by up to 4 pixels (a
    crop of the image padded with 4 zero pixels a side) and flipped left-right with probability
    1/2, the CIFAR-10 recipe. With `state` (a folder) the whole training state is written there
    after every epoch (`STATE_FILE`: weights, MTJ normalisation, input scales, optimizer and
    schedule, the random generators and the epoch records); `resume` continues from it, so a
    stopped run resumed ends with the same weights as one never stopped. With `distill` > 0
    the loss is `(1 - distill) * CE + distill * T^2 * KL(teacher || student)` at temperature
    `temperature` (knowledge distillation, Hinton, Vinyals and Dean 2015, as Zhou et al. use it
    against analog noise, "Noisy Machines", arXiv 2001.04974): the teacher is the float
    network of the model fine-tuning starts from (its float weights, unquantized), frozen."""

    epochs: int = 1
    lr: float = 1e-2
    batch: int = 32
    seed: int = 0
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    momentum: float = 0.9
    clip: float = 5.0
    surrogate_epochs: int = 0
    surrogate_ramp: float = 0.5
    datapath_images: int = 0
    datapath_lr: float = 0.0
    progress: bool = False
    checkpoint: bool = False
    augment: bool = False
    state: str = ""
    resume: bool = False
    distill: float = 0.0
    temperature: float = 4.0

    def __post_init__(self) -> None:
        checks = [  # flag, value, whether it is acceptable, what it must be, an example
            ("--epochs", self.epochs, self.epochs >= 0, ">= 0", "--epochs 2"),
            ("--lr", self.lr, self.lr > 0 and math.isfinite(self.lr), "> 0", "--lr 1e-2"),
            ("--batch", self.batch, self.batch >= 1, ">= 1", "--batch 32"),
            ("--clip", self.clip, self.clip >= 0, ">= 0 (0: unclipped)", "--clip 5"),
            (
                "--weight-decay",
                self.weight_decay,
                self.weight_decay >= 0 and math.isfinite(self.weight_decay),
                ">= 0",
                "--weight-decay 5e-4",
            ),
            (
                "--surrogate-epochs",
                self.surrogate_epochs,
                self.surrogate_epochs >= 0,
                ">= 0",
                "--surrogate-epochs 4",
            ),
            (
                "--surrogate-ramp",
                self.surrogate_ramp,
                0 <= self.surrogate_ramp <= 1,
                "between 0 and 1 (a share of the surrogate epochs)",
                "--surrogate-ramp 0.5",
            ),
            (
                "--datapath-images",
                self.datapath_images,
                self.datapath_images >= 0,
                ">= 0 (0: all)",
                "--datapath-images 512",
            ),
            (
                "--datapath-lr",
                self.datapath_lr,
                self.datapath_lr >= 0 and math.isfinite(self.datapath_lr),
                ">= 0 (0: --lr)",
                "--datapath-lr 1e-3",
            ),
            (
                "--distill",
                self.distill,
                0 <= self.distill <= 1,
                "between 0 and 1 (the distillation term's share of the loss)",
                "--distill 0.5",
            ),
            (
                "--distill-temperature",
                self.temperature,
                self.temperature > 0 and math.isfinite(self.temperature),
                "> 0",
                "--distill-temperature 4",
            ),
        ]
        for flag, value, ok, must, example in checks:
            if not ok:  # `not ok`: a NaN fails every comparison, so it is refused too
                raise UserError(
                    f"finetune: {flag} must be {must}, not {value:g}",
                    hint=f"e.g. {example}",
                )
        if self.resume and not self.state:
            raise UserError(
                "finetune: --resume continues the run saved in a --state folder",
                hint="e.g. --state runs/stox --resume",
            )
        if self.optimizer not in OPTIMIZERS:
            raise UserError(
                f"finetune: unknown optimizer '{self.optimizer}'",
                hint=f"one of {', '.join(OPTIMIZERS)}",
            )

    def epoch_images(self, forward: str, available: int) -> int:
        """Return how many of the `available` training images an epoch of this forward
        (`surrogate` or `mapped`) trains on: all, or `datapath_images` through the datapath."""
        if forward == "mapped" and self.datapath_images:
            return min(available, self.datapath_images)
        return available


@dataclass(frozen=True)
class InputRange:
    """How the pipeline's quantize pass sets input scales: `minmax` or a `percentile` of |x|."""

    method: str = "minmax"
    percentile: float = 99.99


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: its forward (surrogate or mapped), mean loss, training accuracy of that
    forward, wall time (s)."""

    epoch: int
    forward: str
    loss: float
    train_accuracy: float
    seconds: float


def device() -> torch.device:
    """Return CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def recalibrate_inputs(
    network: MappedNetwork,
    calibration: np.ndarray,
    batch: int = 64,
    input_range: InputRange = InputRange(),
) -> None:
    """Set every crossbar layer's input scale to what the quantize pass (`input_range`'s
    method) would measure on these calibration images with the current float weights."""
    where = next(network.parameters()).device
    network.set_mode("float")
    for layer in network.layers:
        layer.observed = []
    try:
        with torch.no_grad():
            for start in range(0, len(calibration), batch):
                network(torch.from_numpy(calibration[start : start + batch]).to(where))
    finally:
        network.set_mode("mapped")
    for layer in network.layers:
        values = np.concatenate(layer.observed)
        layer.observed = []
        scale = (
            input_scale(values, layer.quantizer.bits, input_range.method, input_range.percentile)[0]
            if values.size
            else 1.0
        )
        layer.quantizer = replace(layer.quantizer, scale=scale if math.isfinite(scale) else 1.0)


def learning_rate_factor(
    step: int, stages: tuple[int, ...], peaks: tuple[float, ...] | None = None
) -> float:
    """Return the multiple of the base learning rate at optimizer step `step`: a cosine from
    the stage's peak (default 1) to 0 over each stage's steps in turn (surrogate epochs, then
    datapath epochs: the datapath stage restarts at its peak, since its steps correct what the
    surrogate got wrong)."""
    for index, length in enumerate(stages):
        if step < length:
            peak = 1.0 if peaks is None else peaks[index]
            return peak * 0.5 * (1.0 + math.cos(math.pi * step / length))
        step -= length
    return 0.0


def surrogate_strength(epoch: int, epochs: int, ramp: float = 0.5) -> float:
    """Return the share of the measured datapath error surrogate epoch `epoch` (0-based) of
    `epochs` applies: rising linearly over the first `ramp` share of them, then all of it (a
    network that the full error leaves at chance gets a gradient to start from)."""
    steps = max(1, math.ceil(epochs * ramp))
    return min(1.0, (epoch + 1) / steps)


def measure_datapath_error(network: MappedNetwork, images: np.ndarray) -> None:
    """Measure every crossbar layer's datapath error on these images (the mapped forward, each
    layer on the inputs the layers before it give), for the surrogate forward."""
    where = next(network.parameters()).device
    network.set_mode("mapped")
    for layer in network.layers:
        layer.measuring = True
    try:
        with torch.no_grad():
            network(torch.from_numpy(images).to(where))
    finally:
        for layer in network.layers:
            layer.measuring = False


def distillation_loss(
    logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor, share: float, t: float
) -> torch.Tensor:
    """Return `(1 - share) * CE(logits, labels) + share * t^2 * KL(softmax(teacher / t) ||
    softmax(logits / t))`, the KL term averaged over the batch (Hinton et al. 2015: t^2 keeps
    its gradient's scale as t changes)."""
    hard = F.cross_entropy(logits, labels)
    if share == 0:
        return hard
    soft = F.kl_div(
        F.log_softmax(logits / t, dim=1),
        F.log_softmax(teacher / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1.0 - share) * hard + share * t * t * soft


def frozen_teacher(network: MappedNetwork) -> MappedNetwork:
    """Return a frozen copy of the network that runs its crossbar layers as plain float ops
    (its weights as they are now, unquantized), for distillation."""
    teacher = copy.deepcopy(network)
    teacher.set_mode("float")
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    for layer in teacher.layers:
        layer.observed = None  # no recording of inputs (that is for recalibration)
    return teacher


def train(
    network: MappedNetwork,
    images: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    calibration: np.ndarray,
    input_range: InputRange = InputRange(),
    on_epoch: Callable[[EpochRecord], object] | None = None,
) -> list[EpochRecord]:
    """Fine-tune the network on labelled images; return one record per epoch (input scales
    re-measured after each as the pipeline's quantize pass measures them: `input_range`),
    each also passed to `on_epoch` as its epoch ends (and those of a resumed state first)."""
    torch.manual_seed(config.seed)
    if torch.cuda.is_available():  # TF32 would round the integer partial sums
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    where = device()
    network.to(where)
    network.checkpointing = config.checkpoint
    parameters = [p for p in network.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    stages = tuple(
        epochs * math.ceil(config.epoch_images(forward, len(images)) / config.batch)
        for epochs, forward in ((config.surrogate_epochs, "surrogate"), (config.epochs, "mapped"))
    )
    peaks = (1.0, (config.datapath_lr or config.lr) / config.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, stages, peaks)
    )
    teacher = frozen_teacher(network) if config.distill > 0 else None
    try:
        return _epochs(
            network,
            optimizer,
            schedule,
            images,
            labels,
            config,
            calibration,
            where,
            input_range,
            on_epoch,
            teacher,
        )
    finally:
        network.eval()
        network.checkpointing = False
        network.to(torch.device("cpu"))


def _epochs(
    network: MappedNetwork,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    images: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    calibration: np.ndarray,
    where: torch.device,
    input_range: InputRange,
    on_epoch: Callable[[EpochRecord], object] | None = None,
    teacher: MappedNetwork | None = None,
) -> list[EpochRecord]:
    """Run the epochs of `train`; return one record per epoch (from the saved state's when
    resuming)."""
    order_rng = np.random.default_rng(config.seed)
    augment_rng = np.random.default_rng([config.seed, 1])
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    records: list[EpochRecord] = []
    total = config.surrogate_epochs + config.epochs
    state = Path(config.state) / STATE_FILE if config.state else None
    if state is not None and state.exists():
        if not config.resume:
            raise UserError(
                f"finetune: {state} holds a saved run",
                hint="continue it with --resume, or give another --state folder",
            )
        records = load_state(
            state, network, optimizer, schedule, (order_rng, augment_rng), _loss(config)
        )
        for record in records if on_epoch else ():
            on_epoch(record)
    for epoch in range(len(records), total):
        forward = "surrogate" if epoch < config.surrogate_epochs else "mapped"
        if forward == "surrogate":
            measure_datapath_error(network, calibration[:SURROGATE_IMAGES])
            for layer in network.layers:
                layer.surrogate_strength = surrogate_strength(
                    epoch, config.surrogate_epochs, config.surrogate_ramp
                )
        network.set_mode(forward)
        network.train()
        started = time.perf_counter()
        order = order_rng.permutation(len(images))[: config.epoch_images(forward, len(images))]
        total_loss, correct = 0.0, 0
        batches = range(0, len(order), config.batch)
        bar = _progress(batches, config.progress, epoch, total, forward)
        for start in bar:
            index = torch.from_numpy(order[start : start + config.batch])
            x, y = x_all[index], y_all[index].to(where)
            if config.augment:
                x = shift_and_flip(x, augment_rng)
            x = x.to(where)
            logits = network(x)
            if teacher is None:
                loss = F.cross_entropy(logits, y)
            else:
                with torch.no_grad():
                    soft = teacher(x)
                loss = distillation_loss(logits, y, soft, config.distill, config.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip > 0:
                torch.nn.utils.clip_grad_norm_(network.parameters(), config.clip)
            optimizer.step()
            schedule.step()
            total_loss += float(loss.detach()) * len(index)
            correct += int((logits.detach().argmax(dim=1) == y).sum())
            if hasattr(bar, "set_postfix"):
                seen = min(start + config.batch, len(order))
                bar.set_postfix(
                    loss=f"{float(loss.detach()):.3f}",
                    accuracy=f"{correct / seen:.2%}",
                    refresh=False,
                )
        recalibrate_inputs(network, calibration, input_range=input_range)
        records.append(
            EpochRecord(
                epoch + 1,
                forward,
                total_loss / len(order),
                correct / len(order),
                time.perf_counter() - started,
            )
        )
        if state is not None:
            save_state(
                state,
                network,
                optimizer,
                schedule,
                (order_rng, augment_rng),
                records,
                loss=_loss(config),
            )
        if on_epoch is not None:
            on_epoch(records[-1])
    return records


def shift_and_flip(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Return a batch of images [B, C, H, W] each shifted by up to `SHIFT` pixels (zeros fill
    in) and flipped left-right with probability 1/2, drawn from `rng`."""
    if x.dim() != 4:
        return x
    batch, _, height, width = x.shape
    padded = F.pad(x, (SHIFT, SHIFT, SHIFT, SHIFT))
    shifts = rng.integers(0, 2 * SHIFT + 1, size=(batch, 2))
    flips = rng.random(batch) < 0.5
    out = torch.empty_like(x)
    for i, ((top, left), flip) in enumerate(zip(shifts, flips, strict=True)):
        crop = padded[i, :, top : top + height, left : left + width]
        out[i] = crop.flip(-1) if flip else crop
    return out


def save_state(
    path: Path,
    network: MappedNetwork,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    generators: tuple[np.random.Generator, ...],
    records: list[EpochRecord],
    loss: dict | None = None,
) -> None:
    """Write the training state after an epoch, whole or not at all (see `TrainConfig`);
    `loss`: the loss's settings (`_loss`)."""
    from imcc.files import write_file

    state = {
        "network": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "input_scales": [layer.quantizer.scale for layer in network.layers],
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "generators": [g.bit_generator.state for g in generators],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "records": [asdict(r) for r in records],
        "config": _resumable(network, optimizer, loss),
    }
    write_file(path, lambda stream: torch.save(state, stream), "--state")


def _loss(config: TrainConfig) -> dict:
    """Return the loss's settings a resumed run must share (none for plain cross-entropy)."""
    if not config.distill:
        return {}
    return {"distill": config.distill, "distill_temperature": config.temperature}


def _resumable(
    network: MappedNetwork, optimizer: torch.optim.Optimizer, loss: dict | None = None
) -> dict:
    """Return what a saved state must share with the run that resumes it: the crossbar
    layers' names and plans' layouts, the optimizer's kind and settings, and the loss's
    (`_loss`: distillation)."""
    group = {k: v for k, v in optimizer.param_groups[0].items() if k not in ("params", "lr")}
    return {
        **(loss or {}),
        "layers": [
            (layer.name, repr(layer.path.mapping), repr(layer.path.streaming))
            for layer in network.layers
        ],
        "optimizer": type(optimizer).__name__,
        "settings": repr(sorted(group.items())),
    }


def load_state(
    path: Path,
    network: MappedNetwork,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    generators: tuple[np.random.Generator, ...],
    loss: dict | None = None,
) -> list[EpochRecord]:
    """Restore the training state `save_state` wrote (with the same `loss` settings); return
    its epoch records."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state["config"] != _resumable(network, optimizer, loss):
            raise ValueError("its network, optimizer or loss differs from this run's")
        network.load_state_dict(state["network"])
        scales = state["input_scales"]
        if len(scales) != len(network.layers):
            raise ValueError(f"{len(scales)} input scales for {len(network.layers)} layers")
        for layer, scale in zip(network.layers, scales, strict=True):
            layer.quantizer = replace(layer.quantizer, scale=float(scale))
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        for generator, saved in zip(generators, state["generators"], strict=True):
            generator.bit_generator.state = saved
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        return [EpochRecord(**r) for r in state["records"]]
    except (OSError, KeyError, ValueError, RuntimeError, EOFError) as error:
        raise UserError(
            f"finetune: cannot resume from {path}: {error}",
            hint="it was saved by another model, target or pipeline, or is damaged; "
            "give another --state folder",
        ) from None


def _progress(items: range, enabled: bool, epoch: int, epochs: int, forward: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(
        items, desc=f"finetune epoch {epoch + 1}/{epochs} ({forward})", unit="batch", leave=False
    )
