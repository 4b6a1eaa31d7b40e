"""Train a CIFAR-10 VGG (models/vgg_cifar.py) or ResNet (models/cifar_resnet.py) from scratch,
checkpointed every epoch, and export it.

The recipe: SGD with Nesterov momentum 0.9 and weight decay 5e-4, a one-cycle schedule
(Smith & Topin 2019) peaking at `--lr` after 15% of the steps, batch 128, cross-entropy; each
epoch visits the training images in a seeded random order, each image shifted by up to 4
pixels (zero padding) and flipped left-right with probability 1/2 (He et al. 2016, §4.2). The
network normalises its [0, 1] input itself with the CIFAR-10 training statistics, so every
imcc data set feeds the exported model unchanged.

Data: the CIFAR-10 training set as an imcc data spec (`cifar10:FILE`, 50,000 images): images
0-44,999 train and 45,000-49,999 validate; the exported weights are the epoch with the best
validation accuracy (ties: the later), and test accuracy is measured elsewhere, on the test
images only.

Each epoch ends with a checkpoint (`--state`: weights, optimizer, schedule, the data
generator, the log and the settings), so `--resume` continues a stopped run; on the CPU it ends
with the weights an uninterrupted run has (CUDA kernels need not be bit-reproducible). A
resume must keep the settings the schedule was built for (architecture, width, epochs, batch,
lr, seed, init): a change is refused. `--init STATE` starts from the best weights of another
run's checkpoint (or of a model this script exported: `--init MODEL.onnx`) instead of a
random initialisation, with a fresh optimizer and schedule: a
warm restart (Loshchilov & Hutter, "SGDR", ICLR 2017), which continues a finished run for a
second cycle without retraining the first. CUDA is used when present (`--device`).
`--autocast bf16` runs the forward and backward of convolutions and linears in bfloat16
(weights, optimizer and batch norm stay float32; Micikevicius et al., "Mixed Precision
Training", ICLR 2018): on a CPU with AVX-512 BF16 a VGG-16 step takes half the time of
float32 (measured: 4.38 -> 2.13 s per 128-image step on one thread, `--threads 1`).
`--channels-last` keeps the weights and images in NHWC order (torch.channels_last), the layout
oneDNN's CPU convolutions run natively: on a 2-core AMD EPYC without AVX-512 a float32 VGG-16
step took 2.15 s against 2.75 s in NCHW (measured). It changes the order of float sums, so it
is a setting of the run (a resume keeps it).

`--average A B ...` trains nothing: it exports the mean of the weights of runs of one network
(their checkpoints' best epochs or their exports, e.g. the ends of successive warm-restart
cycles) with every batch norm's statistics measured again on the training images: stochastic
weight averaging (Izmailov et al., UAI 2018). It prints each source's validation accuracy and
the average's, so the choice between them is made on the validation images.

    python models/train_cifar.py --arch vgg16 --data cifar10:cifar10_train.npz \\
        --epochs 30 --state runs/vgg16/state.pt --out models/vgg16_cifar10.onnx [--resume]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from imcc.models.cifar_resnet import DEPTHS, CifarResNet, StoxResNet
from imcc.models.common import accuracy, export_onnx
from imcc.models.vgg_cifar import CONFIGS, VggCifar

STOX_RESNET20 = "stox-resnet20"
"""StoX-Net's ResNet-20 (hardtanh activations, a shortcut per conv), the float network its
PS-quantization-aware training starts from."""

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
"""CIFAR-10 training-set channel mean and standard deviation of [0, 1] images."""
TRAIN, VALIDATE = 45_000, 5_000
"""The training split: the first 45,000 images train, the next 5,000 validate."""
PAD = 4
"""Pixels of zero padding the random crop shifts within."""
AUTOCAST = {"bf16": torch.bfloat16}
"""`--autocast` choices: the training steps' reduced precision."""


class Normalised(nn.Module):
    """A network preceded by the CIFAR-10 input normalisation (part of the exported graph)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).reshape(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network((x - self.mean) / self.std)


def build(arch: str, width: float = 1.0, widths: list[int] | None = None) -> nn.Module:
    """Return an untrained network of `arch` with its input normalisation: a VGG (vgg_cifar's
    CONFIGS; `widths`: every conv's output channels), He et al.'s ResNet-20 / ResNet-56
    (cifar_resnet.DEPTHS) or StoX-Net's ResNet-20 (`STOX_RESNET20`, cifar_resnet.StoxResNet);
    the ResNets normalise their input themselves."""
    if arch == STOX_RESNET20 or arch in DEPTHS:
        if width != 1.0 or widths:
            raise ValueError(f"{arch} has its own widths (16, 32, 64): no --width or --widths")
        return StoxResNet(3) if arch == STOX_RESNET20 else CifarResNet(DEPTHS[arch])
    return Normalised(VggCifar(arch, width, widths=widths))


def channel_list(text: str) -> list[int]:
    """Parse `--widths`: comma-separated output channels, one per conv."""
    return [int(w) for w in text.split(",")]


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Return a batch shifted by up to PAD pixels (zero padding) and flipped with probability
    1/2, each image by its own draw from `generator`."""
    count, _, height, width = images.shape
    padded = nn.functional.pad(images, (PAD, PAD, PAD, PAD))
    dy = torch.randint(0, 2 * PAD + 1, (count,), generator=generator)
    dx = torch.randint(0, 2 * PAD + 1, (count,), generator=generator)
    flip = torch.rand(count, generator=generator) < 0.5
    rows = (dy[:, None] + torch.arange(height)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(width)[None, :])[:, None, None, :]
    batch = torch.arange(count)[:, None, None, None]
    channel = torch.arange(images.shape[1])[None, :, None, None]
    out = padded[batch, channel, rows, cols]
    return torch.where(flip[:, None, None, None], out.flip(3), out)


@dataclass
class Run:
    """What a checkpoint holds besides the model: the settings the schedule was built for, the
    epochs done and one log row each (saved as plain data, `asdict`)."""

    settings: dict
    done: int = 0
    log: list[dict] = field(default_factory=list)


def train(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    epochs: int,
    batch: int = 128,
    lr: float = 0.1,
    seed: int = 0,
    state: Path | None = None,
    resume: bool = False,
    device: torch.device | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    settings: dict | None = None,
    autocast: torch.dtype | None = None,
    init: Path | None = None,
    channels_last: bool = False,
) -> Run:
    """Train `model` on (train images, labels, validation images, labels) by the recipe of
        the module docstring, checkpointing to `state` after every epoch; with `resume`, continue
        from `state`. `stop_after` ends the call after that many epochs in total (as an
        interrupted run would); `settings` (e.g. the architecture) join the recipe's in the
        checkpoint, and a resume with other settings is refused. `autocast` (e.g. torch.bfloat16)
        runs the training steps in that precision under torch.autocast (a setting of the run;
        validation stays float32, as the export). `init` starts the model from the best weights of
    another run's checkpoint (a warm restart; part of the settings). `channels_last` trains in
    NHWC order (part of the settings). Return the run's log; the model
        holds the last epoch's weights, the checkpoint also the best epoch's (`best`)."""
    from tqdm import tqdm

    device = device or torch.device("cpu")
    x, y, vx, vy = data
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=layout)
    generator = torch.Generator().manual_seed(seed)
    steps = -(-len(x) // batch)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, lr, total_steps=epochs * steps, pct_start=0.15
    )
    recipe = {"epochs": epochs, "batch": batch, "lr": lr, "seed": seed, **(settings or {})}
    if autocast is not None:
        recipe["autocast"] = str(autocast).removeprefix("torch.")
    if channels_last:
        recipe["channels_last"] = True
    if init is not None:
        weights, recipe["init"] = initial_weights(init)
        model.load_state_dict(full_state(model, weights, init))
    run = Run(recipe)
    best: dict | None = None
    if resume:
        saved = load_state(state)
        before = saved["run"]["settings"]
        if before != recipe:
            changed = ", ".join(
                f"{k} {before.get(k)} -> {recipe.get(k)}"
                for k in sorted(set(before) | set(recipe))
                if before.get(k) != recipe.get(k)
            )
            raise SystemExit(f"{state}: --resume needs the run's own settings ({changed})")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        generator.set_state(saved["generator"])
        run, best = Run(**saved["run"]), saved["best"]
    last = min(epochs, stop_after or epochs)
    for epoch in range(run.done, last):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(x), generator=generator)
        total, seen = 0.0, 0
        bar = tqdm(
            range(0, len(order), batch),
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=not progress,
            leave=False,
        )
        for first in bar:
            index = order[first : first + batch]
            images = augment(x[index], generator).to(device, memory_format=layout)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                logits = model(images)
            loss = nn.functional.cross_entropy(logits.float(), y[index].to(device))
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(index)
            seen += len(index)
            bar.set_postfix(loss=f"{total / seen:.3f}")
        validation = accuracy(model, vx, vy, device)
        run.done = epoch + 1
        run.log.append(
            {
                "epoch": run.done,
                "loss": total / seen,
                "validation": validation,
                "seconds": time.perf_counter() - start,
            }
        )
        if best is None or validation >= best["validation"]:
            weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            best = {"epoch": run.done, "validation": validation, "model": weights}
        print(json.dumps(run.log[-1]), flush=True)
        if state is not None:
            state.parent.mkdir(parents=True, exist_ok=True)
            saved = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "generator": generator.get_state(),
                "run": asdict(run),
                "best": best,
            }
            partial = state.with_suffix(".partial")
            torch.save(saved, partial)
            partial.replace(state)  # a stop mid-write leaves the previous checkpoint
    return run


def load_state(path: Path) -> dict:
    """Return a checkpoint of `train` (tensors on the CPU; plain data only, no pickled code)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def initial_weights(init: Path) -> tuple[dict, str]:
    """Return the weights a warm restart starts from and how its settings name them: a
    checkpoint's best epoch, or the initializers of a model `export` wrote (.onnx: the export
    names them as the module's state dict; the bytes' digest names the start)."""
    if init.suffix != ".onnx":
        origin = load_state(init)["best"]
        return origin["model"], f"{init} (epoch {origin['epoch']})"
    import hashlib

    import onnx

    from imcc.frontend.onnx_fold import read_initializers

    data = init.read_bytes()
    arrays = read_initializers(onnx.load_from_string(data).graph, str(init))
    weights = {name: torch.from_numpy(array.copy()) for name, array in arrays.items()}
    return weights, f"{init} (sha256 {hashlib.sha256(data).hexdigest()[:12]})"


def full_state(model: nn.Module, weights: dict, init: Path) -> dict:
    """Return `model`'s state dict with every tensor from `weights`: all must be there with
    their shapes (batch norms' step counters, which an export drops, stay the model's)."""
    state = model.state_dict()
    missing = [k for k in state if k not in weights and not k.endswith("num_batches_tracked")]
    wrong = [k for k in state if k in weights and weights[k].shape != state[k].shape]
    if missing or wrong:
        raise SystemExit(
            f"--init {init}: not this network's weights (missing {missing[:3]}, other shapes "
            f"{wrong[:3]}); give a checkpoint or an export of the same --arch and widths"
        )
    return {k: weights.get(k, v) for k, v in state.items()}


def average(
    model: nn.Module,
    sources: list[Path],
    images: torch.Tensor,
    batch: int = 256,
    device: torch.device | None = None,
) -> nn.Module:
    """Load into `model` the mean of the weights of `sources` (checkpoints' best epochs or
    exported models of this network, `initial_weights`) and recompute every batch norm's
    statistics on `images`: stochastic weight averaging (Izmailov et al., "Averaging Weights
    Leads to Wider Optima and Better Generalization", UAI 2018), here over the ends of the
    warm-restart cycles. An average's batch-norm statistics are none of its sources', so they are
    measured again: one pass in train mode with a cumulative mean (torch.optim.swa_utils'
    `update_bn`, momentum None: each statistic is the mean of its `batch`-image batches' means
    and unbiased variances); the images are unaugmented, as the network sees them at inference.
    Return `model` in eval mode."""
    if not sources:
        raise SystemExit("--average needs at least one model")
    states = [full_state(model, initial_weights(source)[0], source) for source in sources]
    return average_states(model, states, images, batch, device)


def average_states(
    model: nn.Module,
    states: list[dict],
    images: torch.Tensor,
    batch: int = 256,
    device: torch.device | None = None,
) -> nn.Module:
    """`average` of state dicts already loaded (`full_state`)."""
    from torch.optim.swa_utils import update_bn

    device = device or torch.device("cpu")
    mean = {}
    for name, tensor in states[0].items():
        if tensor.is_floating_point():
            total = sum(state[name].double() for state in states)
            mean[name] = (total / len(states)).to(tensor.dtype)
        else:  # batch norms' step counters: reset by update_bn
            mean[name] = tensor
    model.load_state_dict(mean)
    model.to(device)
    batches = (images[first : first + batch] for first in range(0, len(images), batch))
    update_bn(batches, model, device)
    return model.eval()


def export(model: nn.Module, path: Path) -> Path:
    """Write `model` as ONNX (models/common.py's export) for 3x32x32 images in [0, 1]."""
    return export_onnx(model, path, torch.zeros(1, 3, 32, 32))


def load(spec: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the training and validation images and labels of a CIFAR-10 training set."""
    from imcc.frontend.datasets import load_dataset

    data = load_dataset(spec, TRAIN + VALIDATE)
    if len(data.images) < TRAIN + VALIDATE:
        raise SystemExit(f"{spec}: {len(data.images)} images, the split needs 50,000")
    images = torch.from_numpy(data.images)
    labels = torch.from_numpy(data.labels)
    return images[:TRAIN], labels[:TRAIN], images[TRAIN:], labels[TRAIN:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch", choices=[*sorted(CONFIGS), *DEPTHS, STOX_RESNET20], default="vgg16"
    )
    parser.add_argument("--width", type=float, default=1.0, help="multiplier of every width")
    parser.add_argument(
        "--widths",
        type=channel_list,
        help="every conv's output channels, comma-separated (a searched network)",
    )
    parser.add_argument("--data", required=True, help="cifar10:FILE (the 50,000-image set)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1, help="the one-cycle schedule's peak")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--state", type=Path, help="checkpoint file (required to train)")
    parser.add_argument("--resume", action="store_true", help="continue from --state")
    parser.add_argument(
        "--init",
        type=Path,
        help="start from the best weights of this checkpoint, or of this exported .onnx model "
        "(warm restart)",
    )
    parser.add_argument(
        "--average",
        type=Path,
        nargs="+",
        metavar="MODEL",
        help="instead of training: average these checkpoints' best weights or exported models "
        "(weight averaging, batch norms measured again on the training images) and export the "
        "average to --out",
    )
    parser.add_argument("--out", type=Path, help="ONNX file of the best validation epoch")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument(
        "--autocast",
        choices=sorted(AUTOCAST),
        help="mixed precision for the training steps (bf16: bfloat16 convolutions and linears)",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="NHWC weights and images (faster CPU convolutions; a setting of the run)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        model = build(args.arch, args.width, args.widths)
    except ValueError as error:
        parser.error(str(error))
    if args.average:
        if args.out is None:
            parser.error("--average writes the averaged model to --out: give one")
        averaged(model, args, parser)
        return
    if args.state is None:
        parser.error("training needs --state (the checkpoint file)")
    settings = {"arch": args.arch, "width": args.width}
    if args.widths is not None:
        settings["widths"] = args.widths
    train(
        model,
        load(args.data),
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        state=args.state,
        resume=args.resume,
        device=torch.device(args.device),
        settings=settings,
        autocast=AUTOCAST.get(args.autocast),
        init=args.init,
        channels_last=args.channels_last,
    )
    if args.out is not None:
        saved = load_state(args.state)
        model.load_state_dict(saved["best"]["model"])
        export(model, args.out)
        best = saved["best"]
        print(
            f"wrote {args.out} (epoch {best['epoch']}, validation {100 * best['validation']:.2f}%)"
        )


def averaged(model: nn.Module, args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """`--average`: print each source's validation accuracy and the average's, export it."""
    x, _, vx, vy = load(args.data)
    device = torch.device(args.device)
    states = []
    for source in args.average:
        if not source.is_file():
            parser.error(f"--average {source}: no such file")
        states.append(full_state(model, initial_weights(source)[0], source))
        model.load_state_dict(states[-1])
        model.to(device)
        print(f"{source}: validation {100 * accuracy(model, vx, vy, device):.2f}%", flush=True)
    average_states(model, states, x, device=device)
    result = accuracy(model, vx, vy, device)
    export(model, args.out)
    print(f"wrote {args.out} (average of {len(args.average)}, validation {100 * result:.2f}%)")


if __name__ == "__main__":
    main()
