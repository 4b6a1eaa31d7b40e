"""Simulation speed: images per second of the bit-accurate crossbar simulator, and its time as a
ratio to the floor: the same float32 GEMMs (same shapes, same count) timed alone in this run.

    python benchmarks/simulate.py [--target isaac] [--images 256] [--batch 64]

Models: the ONNX zoo MNIST CNN (on MNIST t10k when fetched, else the built-in digits CNN on its
data) and the CIFAR-10 ResNet-20 (on the shared CIFAR-10 images). Both are fetched or exported
by scripts/fetch_test_models.sh into .cache/models.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imcc.backend.simulator import CrossbarInterpreter  # noqa: E402
from imcc.driver import default_pipeline  # noqa: E402
from imcc.examples import example_path  # noqa: E402
from imcc.frontend.datasets import load_dataset  # noqa: E402
from imcc.frontend.hw import load_target  # noqa: E402
from imcc.frontend.onnx import import_onnx  # noqa: E402
from imcc.ir.rebatch import rebatch  # noqa: E402
from imcc.passes.context import Context  # noqa: E402
from imcc.passes.manager import PassManager  # noqa: E402
from imcc.passes.pipeline import parse_pipeline  # noqa: E402
from tests.onnx_models import CIFAR10_IMAGES, cifar_resnet, mnist_conv_dir, mnist_dir  # noqa: E402


def models() -> list[tuple[str, Path, str]]:
    """Return (label, model, data spec) of the benchmarked models that are available."""
    found = []
    if mnist_conv_dir() and mnist_dir():
        found.append(
            ("mnist-conv", mnist_conv_dir() / "model.onnx", f"mnist:{mnist_dir()},scale=255")
        )
    else:
        found.append(("digits-cnn", example_path("digits-cnn"), "digits-cnn"))
    if cifar_resnet(20) and CIFAR10_IMAGES.is_file():
        found.append(("resnet20", cifar_resnet(20), f"cifar10:{CIFAR10_IMAGES}"))
    return found


def floor_seconds(gemms: list[tuple[int, int, int, int]]) -> float:
    """Time the recorded GEMMs (batch, M, K, N) in float32, once each, on random operands."""
    rng = np.random.default_rng(0)
    total = 0.0
    for batch, m, k, n in gemms:
        a = rng.random((batch, m, k), dtype=np.float32)
        b = rng.random((batch, k, n), dtype=np.float32)
        start = time.perf_counter()
        np.matmul(a, b)
        total += time.perf_counter() - start
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="isaac")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    target = load_target(args.target)
    print(f"target {args.target}; {args.images} images per model, batch {args.batch}")
    for label, model, spec in models():
        data = load_dataset(spec, args.images + 64)
        graph = import_onnx(model)
        ctx = Context(target=target, options={"calibration": data.images[:64]})
        program = PassManager(parse_pipeline(default_pipeline(target))).run(graph, ctx)
        program = rebatch(program, args.batch)
        machine = CrossbarInterpreter(target, np.random.default_rng(0))
        images = data.images[64 : 64 + args.images]
        start = time.perf_counter()
        for i in range(0, len(images) - args.batch + 1, args.batch):
            machine.run(program, {program.inputs[0].name: images[i : i + args.batch]})
        seconds = time.perf_counter() - start
        gemms = [g for record in machine.layers.values() for g in record.stats.gemms]
        floor = floor_seconds(gemms)
        done = len(images) - len(images) % args.batch
        print(
            f"{label:12s} {done / seconds:8.1f} images/s   simulation {seconds:7.2f} s   "
            f"GEMM floor {floor:6.2f} s   ratio {seconds / floor:5.2f}x   "
            f"({len(gemms)} GEMMs)"
        )


if __name__ == "__main__":
    main()
