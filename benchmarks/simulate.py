"""Simulation speed: images per second of the bit-accurate crossbar simulator, and its time as a
ratio to the floor: the same partial-sum products (every layer's plan: per row chunk, a float32
GEMM [input slices x positions, rows per sum] @ [rows per sum, weight slices x devices x
filters]) timed alone in this run, each chunk as one GEMM over the whole batch and in
cache-sized blocks of positions, whichever is faster. The simulation is timed after one
untimed warm-up batch (first-call costs of torch and the layer plans). Whole passes over the
images alternate with floor timings (`--repeats` of each; the best of each counts), so a
machine whose load changes slows both alike. Also: peak RSS of the process during the
simulation and the memory the simulation added per image.

    python benchmarks/simulate.py [--target isaac] [--images 256] [--batch 64] [--repeats 3]

Models: the ONNX zoo MNIST CNN (on MNIST t10k when fetched, else the built-in digits CNN on its
data) and the CIFAR-10 ResNet-20 (on the shared CIFAR-10 images). Both are fetched or exported
by scripts/fetch_test_models.sh into .cache/models.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imcc import driver  # noqa: E402
from imcc.backend.datapath import BLOCK_ELEMENTS as BLOCK  # noqa: E402
from imcc.backend.datapath import GEMM_ROWS  # noqa: E402
from imcc.backend.simulator import CrossbarInterpreter  # noqa: E402
from imcc.examples import example_path  # noqa: E402
from imcc.frontend.datasets import load_dataset  # noqa: E402
from imcc.frontend.hw import load_target  # noqa: E402
from imcc.frontend.onnx import import_onnx  # noqa: E402
from imcc.ir.rebatch import rebatch  # noqa: E402
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


def _timed(fn, *args, repeats: int = 2, **kwargs) -> float:
    """Return the best of `repeats` wall times of fn(*args, **kwargs)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best


def floor_seconds(plans: list, batches: int) -> float:
    """Time the partial-sum GEMMs of the layers' plans for `batches` batches, on random
    operands into preallocated outputs (best of 2): per layer the faster of one GEMM per chunk
    over all positions and the same GEMMs in blocks of about BLOCK partial sums (at least
    GEMM_ROWS high, as the datapath cuts them)."""
    total = 0.0
    for plan in plans:
        for chunks, m, k, n in plan.gemms(plan.positions):
            weights = torch.rand(k, n)
            whole = _timed(torch.mm, torch.rand(m, k), weights, out=torch.empty(m, n), repeats=2)
            slices = plan.input_slices
            rows = slices * max(1, BLOCK // (slices * max(n, k)), -(-GEMM_ROWS // slices))
            out = torch.empty(rows, n)
            blocked = _timed(torch.mm, torch.rand(rows, k), weights, out=out, repeats=2)
            total += chunks * min(whole, blocked * m / rows)
    return total * batches


def rss_mb() -> float:
    """Return the process's peak resident set size in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="isaac")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed passes, each followed by a floor timing"
    )
    args = parser.parse_args()
    target = load_target(args.target)
    print(f"target {args.target}; {args.images} images per model, batch {args.batch}")
    for label, model, spec in models():
        data = load_dataset(spec, args.images + 64)
        graph = import_onnx(model)
        program = driver.compile(graph, target, calibration=data.images[:64])
        program = rebatch(program, args.batch)
        machine = CrossbarInterpreter(target, 0)
        images = data.images[64 : 64 + args.images]
        before = rss_mb()
        machine.run(program, {program.inputs[0].name: images[: args.batch]})  # warm-up
        # simulation passes and floor timings alternate, so both see the machine's same load;
        # the best of each counts
        seconds = floor = float("inf")
        peak = None
        for _ in range(args.repeats):
            machine = CrossbarInterpreter(target, 0)  # fresh statistics, same process
            start = time.perf_counter()
            batches = 0
            for i in range(0, len(images) - args.batch + 1, args.batch):
                machine.run(program, {program.inputs[0].name: images[i : i + args.batch]})
                batches += 1
            seconds = min(seconds, time.perf_counter() - start)
            peak = peak or rss_mb()  # before the floor's operands exist
            floor = min(floor, floor_seconds(list(machine.plans.values()), batches))
        done = batches * args.batch
        print(
            f"{label:12s} {done / seconds:8.1f} images/s   simulation {seconds:7.2f} s   "
            f"GEMM floor {floor:6.2f} s ({done / floor:.1f} images/s)   "
            f"ratio {seconds / floor:5.2f}x   peak RSS {peak:,.0f} MB "
            f"(+{(peak - before) / args.batch:.1f} MB per image of a batch)"
        )


if __name__ == "__main__":
    main()
