"""The data-aware mapping passes measured end to end: RAELLA's ablation chain and StoX-Net's
inhomogeneous MTJ sampling, on the pretrained CIFAR-10 ResNet-20 / ResNet-56 with the real
CIFAR-10 images, and a CIFAR-shaped VGG-16 for cost (seeded weights: no accuracy).

RAELLA chain (ISCA 2023, shared/references.md §3), each step one pipeline string:
  1. isaac      ISAAC-like baseline (isaac.hw: 128x128, 2-bit cells, 1-bit inputs, 8-bit ADC,
                priced by the ADC survey model that prices RAELLA's ADCs: `adc8_survey`, as
                RAELLA's evaluation prices both)
  2. c+o        raella.hw: 512x512 2T2R, center+offset weights, fixed 2-bit weight slices,
                1-bit input slices
  3. +adaptive  per-layer adaptive weight slicing (error budget 0.09, last layer 1-bit slices)
  4. +spec      speculative 3-3-2 input slices with 1-bit recovery (profiled on calibration
                data); adaptive slicing also keeps speculation failures within 10%
Per step: converts/MAC, energy per MAC by component, the area and TOPS of the chip, energy
efficiency and throughput relative to step 1, and accuracy (lossless-quantized and mapped) on
the test images. Throughput is compared at equal provisioned area: the isaac step fills
ISAAC's 168-tile chip with copies of its slowest layers (`place{replicate=true}`), every other
step as many of its own tiles as fit in that chip's area (`driver.fill_area`).

StoX-Net (shared/references.md §2) on sotmtj.hw (128-row arrays): the 8-bit SAR ADC design,
MTJ converters with uniform samples, and with `allocate-samples` at the same total samples;
accuracy, energy, latency and EDP relative to the ADC design.

The first `--calib` images calibrate every compile; the next `--limit` are simulated.

    python benchmarks/data_aware.py [--models resnet20,resnet56,vgg16] [--limit 500]
                                    [--parts raella,stox] [--samples 4]
"""

from __future__ import annotations

import argparse
import math
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
from tests.onnx_models import CIFAR10_IMAGES, cifar_resnet, models_dir  # noqa: E402

RAELLA_STEPS = {
    "isaac": (
        "isaac",
        "assign-input-precision,quantize,tile-crossbar,select-adc{converter=adc8_survey},"
        "share-columns,place",
    ),
    "c+o": (
        "raella",
        "assign-input-precision{slice=1},quantize,tile-crossbar{slices=2,2,2,2},"
        "encode-weights{scheme=center-offset},select-adc,share-columns,place",
    ),
    "+adaptive": (
        "raella",
        "assign-input-precision{slice=1},quantize,tile-crossbar,"
        "encode-weights{scheme=center-offset},select-adc,"
        "slice-weights{adaptive=true error_budget=0.09 last_bitwise=true},"
        "share-columns,place",
    ),
    "+spec": (
        "raella",
        "assign-input-precision{speculate=true slices=3,3,2},quantize,"
        "tile-crossbar,encode-weights{scheme=center-offset},select-adc,"
        "slice-weights{adaptive=true error_budget=0.09 max_failures=0.1 "
        "last_bitwise=true},profile-converters,share-columns,place",
    ),
}
"""RAELLA's ablation chain: step -> (target, mapping pipeline after the clean-up passes)."""


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
class Model:
    """A benchmark network: its ONNX file and its labelled data (None: cost only)."""

    name: str
    path: Path
    data: str | None


def models(names: list[str]) -> list[Model]:
    """Return the requested models that are available (VGG-16 is exported on demand)."""
    found = []
    for name in names:
        if name.startswith("resnet"):
            path = cifar_resnet(int(name[6:]))
            if name == "resnet20" and path is None:
                path = ROOT / "models" / "resnet20_cifar10.onnx"
            if path is None or not CIFAR10_IMAGES.is_file():
                print(f"{name}: not available (run scripts/fetch_test_models.sh)")
                continue
            found.append(Model(name, path, f"cifar10:{CIFAR10_IMAGES}"))
        elif name.startswith("vgg"):
            from imcc.models.vgg_cifar import export

            path = models_dir() / f"{name}_cifar.onnx"
            if not path.is_file():
                export(name, path)
            found.append(Model(name, path, None))
    return found


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
    if model.data is not None:
        data = load_dataset(model.data, calib + limit)
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


def per_mac(report, *components: str) -> float:
    """Return the energy of some components per MAC in fJ (all components when none given)."""
    parts = components or tuple(report.energy_breakdown_j)
    return sum(report.energy_breakdown_j.get(c, 0.0) for c in parts) / report.macs * 1e15


def percent(value: float | None) -> str:
    """Format an accuracy."""
    return "    n/a" if value is None else f"{100 * value:6.2f}%"


def raella(chosen: list[Model], calib: int, limit: int) -> None:
    """Print RAELLA's ablation chain for each model and the geomean gains of each step. Every
    design is compared at equal provisioned area: ISAAC fills its 168-tile chip with copies of
    its slowest layers, each RAELLA step as many of its own tiles as fit in the same area."""
    print(
        "RAELLA ablation (energy per MAC in fJ; ratios vs the isaac step; every design fills "
        "the area of ISAAC's 168-tile chip with copies of its slowest layers)"
    )
    print(
        f"{'model':9} {'step':10} {'conv/MAC':>8} {'fJ/MAC':>8} {'ADC':>7} {'cells':>7} "
        f"{'DAC':>7} {'other':>7} {'mm2':>7} {'TOPS':>7} {'eff x':>6} {'thru x':>6} "
        f"{'quant':>7} {'acc':>7} {'s':>5}"
    )
    gains: dict[str, list[tuple[float, float]]] = {}
    for model in chosen:
        base = None
        for step, (target, mapping) in RAELLA_STEPS.items():
            out = run(model, target, mapping, calib, limit)
            r = driver.fill_area(
                out.program, load_target(target), None if base is None else base.area_mm2
            )
            base = base or r
            total, adc = per_mac(r), per_mac(r, "converters")
            cells, dac = per_mac(r, "array"), per_mac(r, "input_drivers")
            efficiency = (base.energy_j / base.macs) / (r.energy_j / r.macs)
            throughput = r.throughput_inferences_s / base.throughput_inferences_s
            gains.setdefault(step, []).append((efficiency, throughput))
            print(
                f"{model.name:9} {step:10} {r.converts_per_mac:8.4f} {total:8.1f} {adc:7.1f} "
                f"{cells:7.1f} {dac:7.1f} {total - adc - cells - dac:7.1f} {r.area_mm2:7.1f} "
                f"{r.tops:7.3f} {efficiency:6.2f} {throughput:6.2f} {percent(out.quantized)} "
                f"{percent(out.accuracy)} {out.seconds:5.0f}",
                flush=True,
            )
    for step, values in gains.items():
        eff = math.prod(v[0] for v in values) ** (1 / len(values))
        thru = math.prod(v[1] for v in values) ** (1 / len(values))
        print(f"geomean {step:10} energy efficiency {eff:5.2f}x, throughput {thru:5.2f}x vs isaac")
    print(
        "paper: converts/MAC 0.25 -> 0.0625 -> 0.047 -> ~0.02; 3.9x geomean efficiency, "
        "2.0x throughput with speculation (2.8x / 2.7x without)"
    )


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
    parser.add_argument("--parts", default="raella,stox")
    parser.add_argument("--limit", type=int, default=500, help="test images simulated")
    parser.add_argument("--calib", type=int, default=64, help="calibration images")
    parser.add_argument("--samples", type=int, default=4, help="MTJ samples per conversion")
    args = parser.parse_args()
    chosen = models(args.models.split(","))
    parts = args.parts.split(",")
    if "raella" in parts:
        raella(chosen, args.calib, args.limit)
    if "stox" in parts:
        stox([m for m in chosen if m.data is not None], args.calib, args.limit, args.samples)


if __name__ == "__main__":
    main()
