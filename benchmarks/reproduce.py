"""Reproduce a paper's headline with imcc, the paper's figure beside ours, measured the same way.

    python benchmarks/reproduce.py stox [--model M.onnx] [--limit 5000] [--out DIR]

Writes DIR/NAME.md and DIR/NAME.json (default DIR: out/reproduce) and prints the markdown.

`stox` (StoX-Net, Rogers et al., ICRC 2024, arXiv 2407.12378): the CIFAR-10 ResNet-20 on the
stox target, mapped three ways on the same arrays and the same 4-bit network: StoX-Net's design
(one SOT-MTJ per column, 16 samples in the first layer and 4 in the others: the target's
default pipeline, with the normalisation the model learned when it was trained by
`imcc finetune`), ISAAC's 8-bit SAR ADC per 128 columns (a standard ADC) and a 4-bit ADC per
128 columns (a low-bit ADC). Rows: accuracy (float; the 4-bit network with lossless
converters; mapped, bit-accurate, per design) on the first `--limit` CIFAR-10 test images, and
each ADC design's energy, latency, area and EDP over the MTJ design's, for the whole chip and
for the in-memory macro alone (`MACRO`: arrays, input drivers, converters with an MTJ's reset
and counter, shift-and-add, accumulators; no buffers, interconnect or digital units), with the
component breakdown behind each ratio. The paper's figures stand beside them: up to 16x energy,
8x latency and 10x area against a standard ADC, 130x EDP against a full-precision ADC and 24x
against a sparse low-bit ADC, near-software accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imcc import driver  # noqa: E402
from imcc.costmodel import CostReport, estimate  # noqa: E402
from imcc.driver import default_pipeline  # noqa: E402
from imcc.frontend.datasets import Dataset, load_dataset  # noqa: E402
from imcc.frontend.hw import load_target  # noqa: E402
from imcc.simulation import simulate  # noqa: E402
from tests.onnx_models import CIFAR10_IMAGES  # noqa: E402

TRAINED = ROOT / "models" / "resnet20_stox.onnx"
"""StoX-Net's ResNet-20 after PS-QAT (models/README.md gives the command), when committed."""
BASE = ROOT / "models" / "resnet20_cifar10.onnx"
CALIBRATION = 64
"""Training images that calibrate every compile (quantize, calibrate-mtj)."""
TRAIN_IMAGES = CIFAR10_IMAGES.with_name("cifar10_train.npz")

MACRO = (
    "array",
    "input_drivers",
    "converters",
    "mtj_reset",
    "counters",
    "shift_add",
    "accumulators",
    "column_mux",
)
"""The in-memory macro's components (energy and area breakdown keys)."""

PAPER = {
    "energy": "up to 16x (standard ADC)",
    "latency": "up to 8x (standard ADC)",
    "area": "up to 10x (standard ADC)",
    "edp": "130x (full-precision ADC), 24x (sparse low-bit ADC)",
    "accuracy": "near-software (ResNet-20: 91.48% float here)",
}
"""StoX-Net's headline (arXiv 2407.12378 v2 abstract)."""


@dataclass(frozen=True)
class Design:
    """One mapping of the network: its name, pipeline, cost report and mapped accuracy."""

    name: str
    pipeline: str
    report: CostReport
    accuracy: float | None
    float_accuracy: float | None
    quantized_accuracy: float | None


def stox_designs(target) -> dict[str, str]:
    """Return the three designs' pipelines: the target's default (MTJ) and the same mapping
    up to the converter choice with each of its two ADCs."""
    default = default_pipeline(target)
    head = default[: default.index(",select-adc")]
    return {
        "mtj": default,
        **{
            adc: f"{head},select-adc{{converter={adc}}},share-columns,place"
            for adc in ("adc8", "adc4")
        },
    }


def macro(report: CostReport, kind: str) -> float:
    """Return the macro's energy (J) or area (mm2) of a report."""
    parts = report.energy_breakdown_j if kind == "energy" else report.area_breakdown_mm2
    return sum(parts.get(name, 0.0) for name in MACRO)


def ratios(base: CostReport, mtj: CostReport) -> dict[str, float]:
    """Return a baseline's energy, latency, area and EDP over the MTJ design's (chip and macro)."""
    chip = {
        "energy": base.energy_j / mtj.energy_j,
        "latency": base.latency_s / mtj.latency_s,
        "area": base.area_mm2 / mtj.area_mm2,
    }
    chip["edp"] = chip["energy"] * chip["latency"]
    inner = {
        "energy": macro(base, "energy") / macro(mtj, "energy"),
        "latency": chip["latency"],
        "area": macro(base, "area") / macro(mtj, "area"),
    }
    inner["edp"] = inner["energy"] * inner["latency"]
    return {
        **{f"chip_{k}": v for k, v in chip.items()},
        **{f"macro_{k}": v for k, v in inner.items()},
    }


def stox(model: Path, limit: int) -> dict:
    """Map, price and simulate the StoX comparison (see the module docstring); return it."""
    target = load_target("stox")
    calibration = load_dataset(f"cifar10:{TRAIN_IMAGES}", CALIBRATION).images
    test: Dataset | None = None
    if limit:
        test = load_dataset(f"cifar10:{CIFAR10_IMAGES}", limit)
    float_graph = driver.float_reference(model)
    designs = {}
    for name, pipeline in stox_designs(target).items():
        program = driver.compile(model, target, passes=pipeline, calibration=calibration)
        report = estimate(program, target)
        accuracy = float_accuracy = quantized = None
        if test is not None:
            result = simulate(program, target, test, float_graph=float_graph, progress=True)
            accuracy, float_accuracy = result.accuracy, result.float_accuracy
            quantized = result.quantized_accuracy
        designs[name] = Design(name, pipeline, report, accuracy, float_accuracy, quantized)
    mtj = designs["mtj"].report
    return {
        "model": str(model.relative_to(ROOT) if model.is_relative_to(ROOT) else model),
        "trained": model == TRAINED,
        "test_images": limit,
        "paper": PAPER,
        "designs": {
            name: {
                "pipeline": d.pipeline,
                "accuracy": d.accuracy,
                "float_accuracy": d.float_accuracy,
                "quantized_accuracy": d.quantized_accuracy,
                "energy_j": d.report.energy_j,
                "latency_s": d.report.latency_s,
                "area_mm2": d.report.area_mm2,
                "macro_energy_j": macro(d.report, "energy"),
                "macro_area_mm2": macro(d.report, "area"),
                "energy_breakdown_j": d.report.energy_breakdown_j,
                "area_breakdown_mm2": d.report.area_breakdown_mm2,
            }
            for name, d in designs.items()
        },
        "ratios": {name: ratios(designs[name].report, mtj) for name in ("adc8", "adc4")},
    }


def percent(value: float | None) -> str:
    """Format an accuracy (n/a when not simulated)."""
    return "n/a" if value is None else f"{100 * value:.2f}%"


def stox_markdown(result: dict) -> str:
    """Return the comparison as markdown tables."""
    d, r = result["designs"], result["ratios"]
    trained = (
        "trained by PS-QAT"
        if result["trained"]
        else "not trained for the MTJs: the pretrained float network"
    )
    lines = [
        "# StoX-Net reproduced: ResNet-20 on CIFAR-10, stox target",
        "",
        f"Model: `{result['model']}` ({trained}); accuracy on the first "
        f"{result['test_images']} CIFAR-10 test images, bit-accurate.",
        "",
        "| accuracy | paper | imcc |",
        "|---|---|---|",
        f"| float | 91.48% (the same network) | {percent(d['mtj']['float_accuracy'])} |",
        f"| 4-bit, lossless converters | | {percent(d['mtj']['quantized_accuracy'])} |",
        f"| mapped, MTJ (16 / 4 samples) | {PAPER['accuracy']} | {percent(d['mtj']['accuracy'])} |",
        f"| mapped, 8-bit ADC | | {percent(d['adc8']['accuracy'])} |",
        f"| mapped, 4-bit ADC | | {percent(d['adc4']['accuracy'])} |",
        "",
        "| ratio (ADC design / MTJ design) | paper | 8-bit ADC, chip | 8-bit ADC, macro "
        "| 4-bit ADC, chip | 4-bit ADC, macro |",
        "|---|---|---|---|---|---|",
    ]
    for key in ("energy", "latency", "area", "edp"):
        lines.append(
            f"| {key} | {PAPER[key]} | {r['adc8']['chip_' + key]:.2f}x | "
            f"{r['adc8']['macro_' + key]:.2f}x | {r['adc4']['chip_' + key]:.2f}x | "
            f"{r['adc4']['macro_' + key]:.2f}x |"
        )
    lines += ["", "| energy (nJ) / area (mm2) by component | MTJ | 8-bit ADC | 4-bit ADC |"]
    lines.append("|---|---|---|---|")
    for kind, key, unit, digits in (
        ("energy", "energy_breakdown_j", 1e9, 2),
        ("area", "area_breakdown_mm2", 1.0, 4),
    ):
        names = dict.fromkeys(k for x in d.values() for k, v in x[key].items() if v)
        for name in names:
            values = (f"{d[x][key].get(name, 0) * unit:.{digits}f}" for x in d)
            lines.append(f"| {name} {kind} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=("stox",))
    parser.add_argument("--model", type=Path, help="default: the trained model, else the base")
    parser.add_argument("--limit", type=int, default=5000, help="test images simulated (0: none)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "reproduce")
    args = parser.parse_args()
    model = args.model or (TRAINED if TRAINED.is_file() else BASE)
    result = stox(model, args.limit)
    text = stox_markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text(text)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
