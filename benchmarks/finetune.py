"""StoX-Net's PS-quantization-aware fine-tuning on sotmtj: accuracy before and after, EDP.

For each network: map it onto stochastic SOT-MTJ converters (`STOX_PIPELINE`: `--samples`
per conversion, per-column normalisation calibrated on data), measure it with the bit-accurate
simulator on held-out images, fine-tune it with `imcc finetune`'s loop (the sampled forward,
the straight-through backward, learned normalisation), map the exported model again and
measure that program on the same held-out images. Reported: float, lossless-quantized, before
and after accuracy, the share of the lost accuracy fine-tuning recovers
`(after - before) / (lossless - before)`, and the MTJ design's energy, latency and EDP against
the 8-bit-ADC ISAAC mapping of the same network (isaac.hw, its default pipeline).

Data splits: CIFAR-10 has only its first 5,000 test images here: the first `--train` fine-tune
(default 4,000), the last `--holdout` report (default 1,000). Fashion-MNIST: the first
`--train` images of its 10,000 test images fine-tune, the last `--holdout` report.

    python benchmarks/finetune.py [--models resnet20,fashion-resnet20] [--samples 4]
                                  [--train 4000] [--holdout 1000] [--epochs 1] [--lr 1e-2]
                                  [--surrogate-epochs 0] [--surrogate-ramp 0.5]
                                  [--datapath-images 0] [--datapath-lr 0]
                                  [--input-bits 0] [--percentile 0]

Step time (`--steps N`): one fine-tuning step (sampled forward, straight-through backward, SGD
update) of ResNet-20 mapped by `--target`'s default pipeline (sotmtj; stox: StoX-Net's design
point), batch `--batch`, timed in this run for this tree and for the tree of `--baseline
COMMIT` (default: the datapath before it was written once; 881d58b: before the one-stream and
patch layout of the stox design point), git archive into a temporary folder, each in a fresh
process on the same images;
`--steps-only` skips the fine-tuning runs. `--epoch` times a step at StoX-Net's design point
(stox's default pipeline, batch 64 or `--batch` if larger) and projects one epoch of the
45,000-image CIFAR-10 training split from it (the aim: 20 minutes on the 2-core machine).

The paper (StoX-Net, arXiv 2407.12378) trains from scratch and reports near-software accuracy
and 130x EDP against a full-precision ADC.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imcc import driver  # noqa: E402
from imcc.costmodel import estimate  # noqa: E402
from imcc.driver import calibration_data  # noqa: E402
from imcc.finetune.session import FinetuneConfig, run_finetune  # noqa: E402
from imcc.finetune.train import TrainConfig  # noqa: E402
from imcc.frontend.hw import load_target  # noqa: E402
from imcc.passes.pipeline import DEFAULT_PIPELINE  # noqa: E402
from tests.onnx_models import CIFAR10_IMAGES, models_dir  # noqa: E402


def stox_pipeline(samples: int, input_bits: int = 0, percentile: float = 0.0) -> str:
    """Return the StoX-Net mapping after the clean-up (batch norms folded, as the exported
    model has them): MTJ converters of `samples` samples, calibrated; `input_bits` (0: the
    target's widest) quantized over the `percentile` of |x| (0: the maximum)."""
    quantize = (
        f"quantize{{method=percentile percentile={percentile}}}" if percentile else "quantize"
    )
    return (
        f"{DEFAULT_PIPELINE},assign-input-precision{{bits={input_bits}}},{quantize},"
        f"tile-crossbar,select-adc{{type=mtj samples={samples}}},calibrate-mtj,"
        "share-columns,place"
    )


MODELS = {
    "resnet20": (ROOT / "models" / "resnet20_cifar10.onnx", f"cifar10:{CIFAR10_IMAGES}"),
    "fashion-resnet20": (
        ROOT / "models" / "fashion_resnet20.onnx",
        f"fashion-mnist:{models_dir() / 'fashion-mnist'}",
    ),
}
"""Benchmark networks: ONNX file and labelled data."""


def edp_against_isaac(model: Path, data: str, pipeline: str) -> tuple[float, float, float]:
    """Return (energy, latency, EDP) ratios of the 8-bit-ADC ISAAC mapping over the MTJ one."""
    calibration, _ = calibration_data(data, model)
    reports = []
    for spec, mapping in (("isaac", None), ("sotmtj", pipeline)):
        target = load_target(spec)
        program = driver.compile(
            model, target, passes=mapping, calibration=calibration, target_spec=spec
        )
        reports.append(estimate(program, target))
    base, mtj = reports
    return (
        base.energy_j / mtj.energy_j,
        base.latency_s / mtj.latency_s,
        (base.energy_j * base.latency_s) / (mtj.energy_j * mtj.latency_s),
    )


STEP_SCRIPT = """
import sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
import torch.nn.functional as F
from imcc.driver import default_pipeline
from imcc.finetune.module import MappedNetwork
from imcc.frontend.datasets import load_dataset
from imcc.frontend.hw import load_target
from imcc.frontend.onnx import import_onnx
from imcc.passes.context import Context
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline
model, spec, batch, steps = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
try:  # the compiled MTJ kernel, where that tree has one (its default in training)
    from imcc.finetune.datapath import fuse_converters
    fuse_converters(True)
except ImportError:
    pass
torch.manual_seed(0)
target = load_target(sys.argv[6] if len(sys.argv) > 6 else "sotmtj")
data = load_dataset(spec, 64 + batch)
ctx = Context(target=target, options={"calibration": data.images[:64]})
program = PassManager(parse_pipeline(default_pipeline(target))).run(import_onnx(model), ctx)
float_graph = PassManager(parse_pipeline(DEFAULT_PIPELINE)).run(import_onnx(model), Context())
network = MappedNetwork(program, target, float_graph)
optimizer = torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=1e-3)
images = torch.from_numpy(np.ascontiguousarray(data.images[64:64 + batch]))
labels = torch.from_numpy(data.labels[64:64 + batch].astype(np.int64))
times = []
for step in range(steps + 1):
    start = time.perf_counter()
    optimizer.zero_grad()
    loss = F.cross_entropy(network(images), labels)
    loss.backward()
    optimizer.step()
    times.append(time.perf_counter() - start)
print(min(times[1:]))
"""


def step_seconds(
    root: Path, model: Path, spec: str, batch: int, steps: int, target: str = "sotmtj"
) -> float:
    """Return the best time of `steps` fine-tuning steps (after one warm-up) on `target`'s
    default pipeline of the package tree at `root` (a folder named imcc inside root's parent
    is imported), in a new process."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            STEP_SCRIPT,
            str(root.parent),
            str(model),
            spec,
            str(batch),
            str(steps),
            target,
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=root,
    )
    return float(out.stdout.strip().splitlines()[-1])


def compare_steps(baseline: str, batch: int, steps: int, target: str = "sotmtj") -> None:
    """Print the fine-tuning step time of this tree against the tree of commit `baseline`."""
    model, spec = MODELS["resnet20"]
    with tempfile.TemporaryDirectory() as folder:
        old = Path(folder) / "imcc"
        old.mkdir()
        archive = subprocess.run(
            ["git", "archive", baseline], cwd=ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        before = step_seconds(old, model, spec, batch, steps, target)
    now = step_seconds(ROOT, model, spec, batch, steps, target)
    print(
        f"fine-tuning step, ResNet-20 on {target} (default pipeline), batch {batch}: "
        f"{before:.2f} s at {baseline} -> {now:.2f} s now ({before / now:.1f}x faster)",
        flush=True,
    )


EPOCH_IMAGES = 45_000
"""CIFAR-10's training split (images 0-44,999 of the training set)."""
EPOCH_AIM_MINUTES = 20.0
"""The aim for one PS-QAT epoch of the training split at StoX-Net's design point."""


def epoch_minutes(batch: int, steps: int) -> None:
    """Print one PS-QAT epoch's time on the training split at StoX-Net's design point (stox's
    default pipeline), projected from the best step time of `batch` images."""
    model, spec = MODELS["resnet20"]
    seconds = step_seconds(ROOT, model, spec, batch, steps, target="stox")
    minutes = seconds * -(-EPOCH_IMAGES // batch) / 60
    print(
        f"PS-QAT step, ResNet-20 on stox, batch {batch}: {seconds:.2f} s ({batch / seconds:.1f} "
        f"images/s); one epoch of {EPOCH_IMAGES:,} images: {minutes:.1f} min "
        f"(aim: {EPOCH_AIM_MINUTES:.0f} min)",
        flush=True,
    )


def main() -> None:
    """Fine-tune each requested network and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--holdout", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--surrogate-epochs", type=int, default=0)
    parser.add_argument("--surrogate-ramp", type=float, default=0.5)
    parser.add_argument("--datapath-images", type=int, default=0)
    parser.add_argument("--datapath-lr", type=float, default=0.0)
    parser.add_argument("--input-bits", type=int, default=0)
    parser.add_argument("--percentile", type=float, default=0.0)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--clip", type=float, default=5.0)
    parser.add_argument("--out", default=str(ROOT / "out" / "finetune"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--baseline", default="8374741")
    parser.add_argument("--steps-only", action="store_true")
    parser.add_argument("--target", choices=("sotmtj", "stox"), default="sotmtj")
    parser.add_argument("--epoch", action="store_true", help="time a PS-QAT epoch on stox")
    args = parser.parse_args()
    if args.steps:
        compare_steps(args.baseline, args.batch, args.steps, args.target)
    if args.epoch:
        epoch_minutes(max(args.batch, 64), args.steps or 3)
    if args.steps_only:
        return
    pipeline = stox_pipeline(args.samples, args.input_bits, args.percentile)
    print(f"StoX-Net fine-tuning on sotmtj: {pipeline}")
    print(
        f"{args.surrogate_epochs} surrogate epoch(s) (error ramp {args.surrogate_ramp}), "
        f"then {args.epochs} through the datapath"
        f"{f' ({args.datapath_images} images each)' if args.datapath_images else ''}, "
        f"over the first {args.train} images, SGD lr {args.lr}, "
        f"gradient norm clipped at {args.clip}, batch {args.batch}; accuracies by "
        f"bit-accurate simulation of the last {args.holdout}"
    )
    for name in args.models.split(","):
        model, data = MODELS[name]
        start = time.perf_counter()
        config = FinetuneConfig(
            str(model),
            "sotmtj",
            data,
            str(Path(args.out) / f"{name}.onnx"),
            TrainConfig(
                epochs=args.epochs,
                lr=args.lr,
                batch=args.batch,
                clip=args.clip,
                surrogate_epochs=args.surrogate_epochs,
                surrogate_ramp=args.surrogate_ramp,
                datapath_images=args.datapath_images,
                datapath_lr=args.datapath_lr,
            ),
            train_images=args.train,
            holdout=args.holdout,
            passes=pipeline,
        )
        result = run_finetune(
            config, progress=True, log=lambda line: print("  " + line, flush=True)
        )
        before, after = result.before, result.after
        lost = before.quantized_accuracy - before.accuracy
        recovered = (after.accuracy - before.accuracy) / lost if lost > 0 else float("nan")
        energy, latency, edp = edp_against_isaac(model, data, pipeline)
        print(
            f"{name}: float {before.float_accuracy:.2%}, lossless {before.quantized_accuracy:.2%}"
            f", MTJ before {before.accuracy:.2%}, after {after.accuracy:.2%} "
            f"(recovers {recovered:.0%} of the loss); vs 8-bit-ADC ISAAC: energy "
            f"{energy:.2f}x, latency {latency:.2f}x, EDP {edp:.1f}x lower; "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
