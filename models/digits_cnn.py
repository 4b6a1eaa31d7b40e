"""Train the built-in example model: a small CNN on the 8x8 digits of scikit-learn.

Seeded and CPU-only; takes about 10 s on 2 cores. Writes `examples/digits_cnn.onnx` (opset 13,
BatchNormalization kept as its own op so that `fold-batchnorm` has work to do) and
`examples/digits_test.npz` (the held-out images `image` [360,1,8,8] float32 in [0, 1] and `label`:
the last 360 of the 1,797, in scikit-learn's order), and prints the float accuracy on them.

    python models/digits_cnn.py [--out examples/digits_cnn.onnx] [--epochs 40]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from imcc.models.common import export_onnx

HELD_OUT = 360


class DigitsCNN(nn.Module):
    """Conv-BN-ReLU x2, max-pool, linear: about 4k weights for 1x8x8 digits in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def load() -> tuple[np.ndarray, np.ndarray]:
    """Return the digits as float32 [N,1,8,8] in [0, 1] and their int64 labels."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    return images, digits.target.astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parents[1] / "examples" / "digits_cnn.onnx"
    )
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    torch.manual_seed(0)
    images, labels = load()
    x_train, y_train = torch.from_numpy(images[:-HELD_OUT]), torch.from_numpy(labels[:-HELD_OUT])
    x_test, y_test = torch.from_numpy(images[-HELD_OUT:]), torch.from_numpy(labels[-HELD_OUT:])
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train))
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    export_onnx(model, args.out, x_test[:1])
    np.savez_compressed(
        args.out.with_name("digits_test.npz"), image=images[-HELD_OUT:], label=labels[-HELD_OUT:]
    )
    print(f"float accuracy on the {HELD_OUT} held-out digits: {accuracy:.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
