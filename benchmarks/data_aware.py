"""The data-aware mapping passes measured end to end: StoX-Net's inhomogeneous MTJ sampling,
on the pretrained CIFAR-10 ResNet-20 / ResNet-56 with the real CIFAR-10 images, and a
CIFAR-shaped VGG-16 for cost (seeded weights: no accuracy).

RAELLA's ablation chain is `benchmarks/reproduce.py raella` (benchmarks/raella.py).

StoX-Net (Rogers et al., arXiv 2407.12378) on sotmtj.hw (128-row arrays): the 8-bit SAR ADC design,
MTJ converters with uniform samples, and with `allocate-samples` at the same total samples;
accuracy, energy, latency and EDP relative to the ADC design.

The first `--calib` images calibrate every compile; the next `--limit` are simulated.

    python benchmarks/data_aware.py [--models resnet20,resnet56,vgg16] [--limit 500]
                                    [--samples 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imcc import driver  # noqa: E402
from imcc.costmodel import estimate  # noqa: E402
from imcc.frontend.datasets import Dataset, load_dataset  # noqa: E402
from imcc.frontend.hw import load_target  # noqa: E402
from imcc.passes.layers import crossbar_layers  # noqa: E402
from imcc.passes.pipeline import DEFAULT_PIPELINE  # noqa: E402
from imcc.simulation import simulate  # noqa: E402
from tests.onnx_models import CIFAR10_IMAGES  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from raella import Model, models  # noqa: E402  (the benchmark networks, stated once)


def stox_steps(samples: int) -> dict[str, tuple[str, str]]:
    """Return StoX-Net's comparison: the ADC design, uniform and allocated MTJ samples."""
    head = "assign-input-precision,quantize,tile-crossbar"
    return {
        "adc8": ("sotmtj", f"{head},select-adc{{converter=adc8}},share-columns,place"),
        f"mtj x{samples}": (
            "sotmtj",
            f"{head},select-adc{{type=mtj samples={samples}}},calibrate-mtj,share-columns,place",
        ),
        f"mtj alloc {samples}": (
            "sotmtj",
            f"{head},select-adc{{type=mtj samples={samples}}},"
            f"calibrate-mtj,allocate-samples{{budget={samples}}},"
            "share-columns,place",
        ),
    }


@dataclass(frozen=True)
class Outcome:
    """One compiled and simulated configuration."""

    report: object
    samples_per_conversion: float
    accuracy: float | None
    quantized: float | None
    seconds: float
    program: object = None


def run(model: Model, target_name: str, mapping: str, calib: int, limit: int) -> Outcome:
    """Compile a model with a mapping pipeline, price it, and simulate it when it has data."""
    start = time.perf_counter()
    target = load_target(target_name)
    calibration, test = None, None
    if model.trained:
        data = load_dataset(f"cifar10:{CIFAR10_IMAGES}", calib + limit)
        calibration = data.images[:calib]
        test = Dataset(data.name, data.images[calib:], data.labels[calib:])
    program = driver.compile(
        model.path, target, passes=f"{DEFAULT_PIPELINE},{mapping}", calibration=calibration
    )
    report = estimate(program, target)
    draws = partial_sums = 0.0
    costs = {layer.name: layer for layer in report.layers if layer.op in ("conv", "linear")}
    for node in crossbar_layers(program):
        layer = costs.get(node.name or node.outputs[0])
        samples = node.attributes["converter"].samples
        if layer is not None and layer.conversions:
            draws += layer.conversions
            partial_sums += layer.conversions / samples
    accuracy = quantized = None
    if test is not None and limit:
        simulation = simulate(program, target, test, batch=min(limit, 100))
        accuracy, quantized = simulation.accuracy, simulation.quantized_accuracy
    return Outcome(
        report,
        draws / partial_sums if partial_sums else 0.0,
        accuracy,
        quantized,
        time.perf_counter() - start,
        program,
    )


def percent(value: float | None) -> str:
    """Format an accuracy."""
    return "    n/a" if value is None else f"{100 * value:6.2f}%"


def stox(chosen: list[Model], calib: int, limit: int, samples: int) -> None:
    """Print StoX-Net's comparison for each model: ADC design vs uniform vs allocated MTJ."""
    print(
        f"\nStoX-Net on sotmtj (ratios vs the 8-bit ADC design; {samples} samples per "
        "conversion on average for both MTJ rows)"
    )
    print(
        f"{'model':9} {'design':13} {'samples/conv':>12} {'energy':>10} {'latency':>10} "
        f"{'EDP x':>7} {'E x':>6} {'L x':>6} {'quant':>7} {'acc':>7} {'s':>5}"
    )
    for model in chosen:
        base = None
        for design, (target, mapping) in stox_steps(samples).items():
            out = run(model, target, mapping, calib, limit)
            r = out.report
            base = base or r
            edp = (base.energy_j * base.latency_s) / (r.energy_j * r.latency_s)
            print(
                f"{model.name:9} {design:13} {out.samples_per_conversion:12.2f} "
                f"{r.energy_j * 1e6:8.2f}uJ {r.latency_s * 1e6:8.1f}us {edp:7.2f} "
                f"{base.energy_j / r.energy_j:6.2f} "
                f"{base.latency_s / r.latency_s:6.2f} {percent(out.quantized)} "
                f"{percent(out.accuracy)} {out.seconds:5.0f}",
                flush=True,
            )
    print(
        "paper: up to 16x energy, 8x latency, 130x EDP vs a full-precision ADC, "
        "near-software accuracy after PS-quantization-aware training (not applied here)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,resnet56,vgg16")
    parser.add_argument("--limit", type=int, default=500, help="test images simulated")
    parser.add_argument("--calib", type=int, default=64, help="calibration images")
    parser.add_argument("--samples", type=int, default=4, help="MTJ samples per conversion")
    args = parser.parse_args()
    chosen = models(args.models.split(","))
    stox([m for m in chosen if m.trained], args.calib, args.limit, args.samples)


if __name__ == "__main__":
    main()
