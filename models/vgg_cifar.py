"""CIFAR-10-shaped VGG networks (Simonyan & Zisserman 2015, the CIFAR variant with batch norm and
one linear classifier) and their ONNX export, for cost studies.

The layer shapes are what the cost model prices; the weights are a seeded random initialisation
(no CIFAR-10 training set is available offline), so a VGG exported here is for energy, latency
and area, never for accuracy. Configurations: VGG-8 (NeuroSim's CIFAR-10 benchmark shapes: six
3x3 convs 128-128-256-256-512-512 in three pooled stages, then 1024 and 10 outputs), VGG-11,
VGG-16 (the XPert paper's network) and VGG-19; a width multiplier scales every conv.

    python models/vgg_cifar.py vgg16 out.onnx [--width 1.0] [--seed 0]
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

POOL = "M"
CONFIGS: dict[str, list[int | str]] = {
    "vgg8": [128, 128, POOL, 256, 256, POOL, 512, 512, POOL],
    "vgg11": [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL],
    "vgg16": [
        64,
        64,
        POOL,
        128,
        128,
        POOL,
        256,
        256,
        256,
        POOL,
        512,
        512,
        512,
        POOL,
        512,
        512,
        512,
        POOL,
    ],
    "vgg19": [
        64,
        64,
        POOL,
        128,
        128,
        POOL,
        256,
        256,
        256,
        256,
        POOL,
        512,
        512,
        512,
        512,
        POOL,
        512,
        512,
        512,
        512,
        POOL,
    ],
}
HIDDEN = {"vgg8": 1024}
"""Hidden linear layer before the classifier (VGG-8 as NeuroSim's benchmark has it)."""


def conv_widths(name: str, width: float = 1.0, widths: Sequence[int] | None = None) -> list[int]:
    """Return the output channels of a configuration's convs: `widths` given one per conv
    (XPert's per-layer channel depth), else the configuration's scaled by `width`."""
    convs = [int(item) for item in CONFIGS[name] if item != POOL]
    if widths is None:
        return [max(1, round(c * width)) for c in convs]
    if len(widths) != len(convs) or min(widths, default=1) < 1:
        raise ValueError(
            f"{name} has {len(convs)} convs: give as many positive widths, not {list(widths)}"
        )
    return [int(w) for w in widths]


class VggCifar(nn.Module):
    """A VGG on 3x32x32 inputs: 3x3 conv + BN + ReLU blocks, 2x2 max pools, linear classifier."""

    def __init__(
        self,
        name: str,
        width: float = 1.0,
        classes: int = 10,
        widths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = 3, 32
        outs = conv_widths(name, width, widths)
        for item in CONFIGS[name]:
            if item == POOL:
                layers.append(nn.MaxPool2d(2))
                size //= 2
                continue
            out = outs.pop(0)
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        flat = channels * size * size
        hidden = HIDDEN.get(name)
        head: list[nn.Module] = [nn.Flatten()]
        if hidden:
            head += [nn.Linear(flat, hidden), nn.ReLU(inplace=True)]
            flat = hidden
        head.append(nn.Linear(flat, classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def export(
    name: str,
    path: str | Path,
    width: float = 1.0,
    seed: int = 0,
    widths: Sequence[int] | None = None,
) -> Path:
    """Write a seeded VGG of the given configuration as ONNX (batch 1, input `image`)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown VGG '{name}'; known: {', '.join(CONFIGS)}")
    torch.manual_seed(seed)
    model = VggCifar(name, width, widths=widths).eval()
    with torch.no_grad():  # give batch norm non-trivial statistics so folding is exercised
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.rand(1, 3, 32, 32),),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
        )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(CONFIGS))
    parser.add_argument("output")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(export(args.name, args.output, args.width, args.seed))


if __name__ == "__main__":
    main()
