"""Accuracy per built-in target on the full real test sets (the tests run subsets): the ONNX zoo
MNIST CNN and LeNet-5 on MNIST t10k, the pretrained CIFAR-10 ResNet-20 on the 5,000 shared
CIFAR-10 test images. Float, quantized (lossless converters) and mapped accuracy, and the
largest converter saturation rate of any layer.

    python benchmarks/accuracy.py [--targets isaac,raella] [--models resnet20] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imcc.targets import BUILTIN_TARGETS  # noqa: E402
from tests.onnx_models import CIFAR10_IMAGES, lenet5_onnx, mnist_conv_dir, mnist_dir  # noqa: E402
from tests.test_real_data import RESNET20, run  # noqa: E402


def models() -> dict[str, tuple[Path, str]]:
    """Return the available models and their data specs."""
    found = {}
    if mnist_dir() and mnist_conv_dir():
        found["mnist-conv"] = (mnist_conv_dir() / "model.onnx", f"mnist:{mnist_dir()},scale=255")
    if mnist_dir() and lenet5_onnx():
        found["lenet5"] = (lenet5_onnx(), f"mnist:{mnist_dir()}")
    if CIFAR10_IMAGES.is_file():
        found["resnet20"] = (RESNET20, f"cifar10:{CIFAR10_IMAGES}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(BUILTIN_TARGETS))
    parser.add_argument("--models", default="mnist-conv,lenet5,resnet20")
    parser.add_argument("--limit", type=int, default=None, help="samples per model (all)")
    args = parser.parse_args()
    available = models()
    print(
        f"{'model':11} {'target':19} {'samples':>7} {'float':>7} {'quant':>7} {'mapped':>7} "
        f"{'max sat':>8} {'seconds':>8}"
    )
    for name in args.models.split(","):
        if name not in available:
            print(f"{name:11} not available (run scripts/fetch_test_models.sh)")
            continue
        model, spec = available[name]
        total = 10_000 if name != "resnet20" else 5_000
        samples = min(args.limit or total, total) - 64  # the first 64 calibrate
        for target in args.targets.split(","):
            start = time.perf_counter()
            report = run(model, spec, target, samples, batch=250)
            worst = max(layer.saturation_rate for layer in report.layers)
            print(
                f"{name:11} {target:19} {report.samples:7d} {100 * report.float_accuracy:6.2f}%"
                f" {100 * report.quantized_accuracy:6.2f}% {100 * report.accuracy:6.2f}%"
                f" {100 * worst:7.2f}% {time.perf_counter() - start:8.1f}"
            )


if __name__ == "__main__":
    main()
