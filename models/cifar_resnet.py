"""CIFAR-10 ResNet-20 / ResNet-56 (He et al. 2016, the "option A" variant) and their ONNX export.

The architecture is written here from its description (He et al., CVPR 2016, §4.2):
conv3x3(3->16) + BN + ReLU, three stages of n BasicBlocks with 16, 32 and 64 channels (stride 2
at the first block of stages 2 and 3), a parameter-free shortcut when the shape changes
(`x[:, :, ::2, ::2]` zero-padded by planes/4 channels on each side), global average pooling and
Linear(64 -> 10); n = 3 for ResNet-20 and 9 for ResNet-56. The exported model takes images in
[0, 1] (NCHW) and applies the training normalisation itself (mean 0.485, 0.456, 0.406; std
0.229, 0.224, 0.225), so every imcc data set feeds it unchanged.

    python models/cifar_resnet.py resnet20 /path/to/resnet20-12fca82f.th out.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from imcc.models.common import export_onnx

DEPTHS = {"resnet20": 3, "resnet56": 9}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a shortcut; option A pads channels when the shape changes."""

    def __init__(self, inputs: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if stride != 1 or inputs != planes else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Return the parameter-free shortcut: x, or x subsampled and zero-padded in channels."""
        if self.pad:
            return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return x


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 CIFAR-10 images in [0, 1]."""

    def __init__(self, blocks: int, block: type[BasicBlock] = BasicBlock) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).reshape(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, inputs = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            stage = []
            for i in range(blocks):
                stage.append(block(inputs, planes, stride if i == 0 else 1))
                inputs = planes
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(x)


class StoxBlock(BasicBlock):
    """StoX-Net's residual block (its public release, GitHub KneeHaw/StoX-Net, resnet20.py):
    BasicBlock's layers, but every 3x3 conv-BN gets its own shortcut and a hardtanh, `x1 =
    hardtanh(bn1(conv1(x)) + shortcut(x))`, `out = hardtanh(bn2(conv2(x1)) + x1)`, so a
    full-precision residual stream carries past each conv whose partial sums the MTJs sample."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.hardtanh(self.bn1(self.conv1(x)) + self.shortcut(x))
        return F.hardtanh(self.bn2(self.conv2(x1)) + x1)


class StoxResNet(CifarResNet):
    """StoX-Net's ResNet-20 for 32x32 CIFAR-10 images in [0, 1] (the public release's
    resnet20.py, read for its structure): conv3x3(3->16) + BN + hardtanh, three stages of n
    `StoxBlock`s (16, 32, 64 channels), global average pooling, BatchNorm1d(64) and
    Linear(64 -> 10), Kaiming-normal initial weights. Every activation is a hardtanh, so every
    crossbar layer's input lies in [-1, 1] (signed): its quantization has a fixed range."""

    def __init__(self, blocks: int) -> None:
        super().__init__(blocks, StoxBlock)
        self.bn2 = nn.BatchNorm1d(64)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        x = F.hardtanh(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(self.bn2(x))


def load(name: str, weights: str | Path) -> CifarResNet:
    """Build the named model and load a pretrained state dict (the `module.` prefix stripped)."""
    model = CifarResNet(DEPTHS[name])
    saved = torch.load(weights, map_location="cpu", weights_only=False)
    state = {k.removeprefix("module."): v for k, v in saved.get("state_dict", saved).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"mean", "std"}:
        raise ValueError(
            f"state dict does not fit {name}: missing {missing}, unexpected {unexpected}"
        )
    return model.eval()


def export(name: str, weights: str | Path, out: str | Path) -> Path:
    """Export the pretrained model to ONNX (opset 13, batch 1, BatchNormalization kept)."""
    return export_onnx(load(name, weights), out, torch.zeros(1, 3, 32, 32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(DEPTHS))
    parser.add_argument("weights", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(f"wrote {export(args.name, args.weights, args.out)}")


if __name__ == "__main__":
    main()
