"""Reproduce a paper's headline with imcc, the paper's figure beside ours, measured the same way.

    python benchmarks/reproduce.py stox [--model M.onnx] [--limit 5000] [--seeds 2] [--out DIR]
    python benchmarks/reproduce.py raella [--models resnet20,resnet56,vgg16] [--limit 5000]
    python benchmarks/reproduce.py xpert [--trials 30] [--inner-trials 30]
    python benchmarks/reproduce.py hybrid [--samples 256] [--verify 1000] [--budget 1.0]
                                          [--limit 5000]

Writes DIR/NAME.md and DIR/NAME.json (default DIR: out/reproduce) and prints the markdown;
`xpert` draws DIR/xpert.png too (`xpert.plot`).
`raella` is benchmarks/raella.py, `xpert` benchmarks/xpert.py and `hybrid` benchmarks/hybrid.py
(their docstrings say what they measure).

`stox` (StoX-Net, Rogers et al., ICRC 2024, arXiv 2407.12378): the CIFAR-10 ResNet-20 on the
stox target, mapped three ways on the same arrays and the same 4-bit network: StoX-Net's design
(one SOT-MTJ per column, 16 samples in the first layer and 4 in the others: the target's
default pipeline, with the normalisation the model learned when it was trained by
`imcc finetune`), ISAAC's 8-bit SAR ADC per 128 columns at unit steps with 2-bit input slices
(a standard ADC, run as ISAAC runs it) and a 4-bit ADC per 128 columns on the MTJ design's
4-bit input stream (a low-bit ADC; `BASELINES`). Rows: accuracy (float; the 4-bit network
with lossless converters; mapped, bit-accurate, per design) on the first `--limit` CIFAR-10
test images; each ADC design's energy, latency, area and EDP over the MTJ design's at three
levels: the converter bank of one full 128x128 array (`CONVERTER_BANK`: the swap undiluted,
as the paper's "up to" figures are), the network's in-memory macro (`MACRO`: arrays, input
drivers, converters with an MTJ's reset and counter, shift-and-add, accumulators) and the
whole chip; per layer, the columns used, the samples, each design's time and converter
energy; the component breakdown; and the sampling schemes (uniform samples, the
inhomogeneous allocation at equal sample draws, the preset) with accuracy over `--seeds`
MTJ draws and standard errors. The paper's figures stand beside them: up to 16x energy, 8x
latency and 10x area against a standard ADC, 130x EDP against a full-precision ADC and 24x
against a sparse low-bit ADC, near-software accuracy.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from formats import percent  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from imcc import driver  # noqa: E402
from imcc.costmodel import CostReport, estimate  # noqa: E402
from imcc.driver import default_pipeline  # noqa: E402
from imcc.finetune.export import with_learned_normalisation  # noqa: E402
from imcc.frontend.datasets import Dataset, load_dataset  # noqa: E402
from imcc.frontend.hw import load_target  # noqa: E402
from imcc.frontend.onnx import import_onnx  # noqa: E402
from imcc.ir.graph import Graph  # noqa: E402
from imcc.passes.quantize import GRANULARITIES  # noqa: E402
from imcc.plan import matrix_shape, plan_layer  # noqa: E402
from imcc.simulation import SimulationReport, simulate  # noqa: E402
from tests.onnx_models import CIFAR10_IMAGES, CIFAR10_TRAIN  # noqa: E402

TRAINED = ROOT / "models" / "resnet20_stox.onnx"
"""StoX-Net's ResNet-20 after PS-QAT (models/README.md gives the command), when committed."""
BASE = ROOT / "models" / "resnet20_cifar10.onnx"
CALIBRATION = 64
"""Training images that calibrate every compile (quantize, calibrate-mtj)."""
ARRAY_SAMPLES = 4
"""MTJ samples of the full-array comparison: the samples of StoX-Net's inner layers."""

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


BASELINES = {"adc8": ("adc8_unit", 2), "adc4": ("adc4", 4)}
"""The ADC designs: their converter and input slice width. The standard ADC runs as ISAAC runs
its 8-bit ADC, at unit steps, with the widest input slices that keep the lossless accuracy (2
bits; stox.hw's adc8_unit gives the validation measurement: 1-bit slices are exact at twice the
conversions, 4-bit slices clip); the low-bit ADC keeps
the MTJ design's 4-bit stream (StoX-Net's and the ADC-less work's networks are trained for
their converters; this one is not, so its accuracy is the untrained one)."""


def stox_designs(target) -> dict[str, str]:
    """Return the three designs' pipelines: the target's default (MTJ) and the same mapping
    up to the converter choice and input slicing with each of its two ADCs (`BASELINES`)."""
    default = default_pipeline(target)
    head = default[: default.index(",select-adc")]
    designs = {"mtj": default}
    for name, (converter, width) in BASELINES.items():
        sliced = re.sub(r"(assign-input-precision\{[^}]*slice=)\d+", rf"\g<1>{width}", head)
        # calibrate-adc sets a full-scale ADC's range from data (adc8_unit has unit steps)
        designs[name] = (
            f"{sliced},select-adc{{converter={converter}}},calibrate-adc,share-columns,place"
        )
    return designs


def full_array_model(rows: int, columns: int, seed: int = 0) -> Graph:
    """Return one linear layer that fills a crossbar: `rows` inputs, `columns` outputs (seeded
    weights; a converter's cost does not depend on their values)."""
    weight = np.random.default_rng(seed).standard_normal((rows, columns)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "full_array",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, columns])],
        [numpy_helper.from_array((weight / np.sqrt(rows)).astype(np.float32), "w")],
    )
    return import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


def full_array(target, designs: dict[str, str], samples: int) -> dict[str, CostReport]:
    """Price one read of a crossbar whose every row and column holds weights, in each design
    (the MTJ with `samples` samples): where a converter swap shows undiluted, as the paper's
    'up to' figures are."""
    crossbar = target.crossbar
    model = full_array_model(crossbar.rows, crossbar.columns)
    calibration = np.random.default_rng(1).random((CALIBRATION, crossbar.rows), np.float32)
    mtj = re.sub(
        r"select-adc\{[^}]*\}", f"select-adc{{type=mtj samples={samples}}}", designs["mtj"]
    )
    return {
        name: estimate(
            driver.compile(model, target, passes=pipeline, calibration=calibration), target
        )
        for name, pipeline in {**designs, "mtj": mtj}.items()
    }


CONVERTER_BANK = ("converters", "mtj_reset", "counters", "column_mux")
"""A crossbar's converter bank: what StoX-Net's MTJs replace (with their reset and counters)."""


def components(report: CostReport, kind: str, names: tuple[str, ...]) -> float:
    """Return the energy (J) or area (mm2) of a report's components `names`."""
    parts = report.energy_breakdown_j if kind == "energy" else report.area_breakdown_mm2
    return sum(parts.get(name, 0.0) for name in names)


def bank(report: CostReport, kind: str) -> float:
    """Return the converter bank's energy (J) or area (mm2) of a report."""
    return components(report, kind, CONVERTER_BANK)


def array_time(report: CostReport) -> float:
    """Return the time (s) the arrays of a report's one crossbar layer take for its input:
    its array cycles (every input slice) times the cycle, the converters' turns included."""
    (timing,) = (layer.timing for layer in report.layers if layer.crossbars)
    return timing.cycles * timing.cycle_s / timing.replicas


def macro(report: CostReport, kind: str) -> float:
    """Return the macro's energy (J) or area (mm2) of a report."""
    return components(report, kind, MACRO)


def ratios(
    base: CostReport, mtj: CostReport, array_base: CostReport, array_mtj: CostReport
) -> dict[str, float]:
    """Return a baseline's energy, latency, area and EDP over the MTJ design's: for the whole
    chip and the macro alone on the network, and for the converter bank of one full array
    (energy and time of one input vector, every slice; area)."""
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
    array = {
        "energy": bank(array_base, "energy") / bank(array_mtj, "energy"),
        "latency": array_time(array_base) / array_time(array_mtj),
        "area": bank(array_base, "area") / bank(array_mtj, "area"),
    }
    array["edp"] = array["energy"] * array["latency"]
    return {
        **{f"chip_{k}": v for k, v in chip.items()},
        **{f"macro_{k}": v for k, v in inner.items()},
        **{f"array_{k}": v for k, v in array.items()},
    }


def layer_rows(target, designs: dict[str, Design], programs: dict[str, Graph]) -> list[dict]:
    """Return, per crossbar layer, what sets its converters' share of the ratios: the columns
    it uses per crossbar, the MTJ's samples, each design's time per image and converter
    energy."""
    rows = []
    program = programs["mtj"]
    crossbar = [n for n in program.nodes if "converter" in n.attributes]
    nodes = {n.name or n.outputs[0]: n for n in crossbar}
    for index, layer in enumerate(designs["mtj"].report.layers):
        if not layer.crossbars:
            continue
        node = nodes[layer.name]
        plan = plan_layer(node, target, matrix_shape(node, program))
        row = {
            "layer": layer.name,
            "columns": plan.columns_per_crossbar,
            "samples": plan.samples,
        }
        for name, design in designs.items():
            other = design.report.layers[index]
            row[f"{name}_time_s"] = other.latency_s
            row[f"{name}_converter_j"] = sum(
                other.energy_breakdown_j.get(k, 0.0) for k in CONVERTER_BANK
            )
        rows.append(row)
    return rows


def mapped(model: Path, target, pipeline: str, calibration: np.ndarray) -> Graph:
    """Compile as `imcc compile` does: with the MTJ normalisation the model learned in
    `imcc finetune`, when it has one, in place of the data-calibrated values. A pipeline that
    allocates samples takes the learned normalisation before allocate-samples, so that the
    layers' sensitivities are measured on the converters the model was trained for."""
    head, found, tail = pipeline.partition(",allocate-samples")
    program = driver.compile(model, target, passes=head, calibration=calibration)
    program = with_learned_normalisation(program, model)[0]
    if not found:
        return program
    return driver.compile(
        program, target, passes="allocate-samples" + tail, calibration=calibration, source=model
    )


def sampling_schemes(target) -> dict[str, str]:
    """Return the sampling schemes compared: uniform samples (the inner layers' count
    everywhere), the inhomogeneous allocation at the same sample draws (allocate-samples with
    that budget) and the target's preset (more samples in the first layer)."""
    default = default_pipeline(target)
    select = re.search(r"select-adc\{([^}]*)\}", default)
    assert select is not None
    options = dict(item.split("=") for item in select.group(1).split())
    uniform_options = " ".join(f"{k}={v}" for k, v in options.items() if k != "first_samples")
    uniform = default.replace(select.group(0), f"select-adc{{{uniform_options}}}")
    budget = options["samples"]
    return {
        f"uniform, {budget} samples": uniform,
        f"inhomogeneous, {budget} samples per conversion on average": re.sub(
            r"calibrate-mtj(\{[^}]*\})?", rf"\g<0>,allocate-samples{{budget={budget}}}", uniform
        ),
        "preset (first layer 16)": default,
    }


def sampling(
    model: Path,
    target,
    calibration: np.ndarray,
    test: Dataset,
    float_graph: Graph,
    seeds: int,
    known: dict[str, tuple[Graph, CostReport, SimulationReport]],
) -> list[dict]:
    """Compare the sampling schemes on the test images: per scheme its MTJ sample draws per
    image, its accuracy averaged over `seeds` draws of the MTJs, and the difference to the
    first (uniform) scheme with its standard error, paired by image (each image's correctness
    averaged over the seeds). `known`: pipelines mapped, priced and simulated at seed 0
    already (the designs), reused."""
    rows, first = [], None
    for name, pipeline in sampling_schemes(target).items():
        if pipeline in known:
            program, report, done = known[pipeline]
        else:
            program = mapped(model, target, pipeline, calibration)
            report, done = estimate(program, target), None
        draws = sum(  # an MTJ layer's conversions count its samples
            layer.conversions
            for layer in report.layers
            if layer.energy_breakdown_j.get("mtj_reset")
        )
        correct = np.zeros(len(test.images))
        for seed in range(seeds):
            result = (
                done
                if seed == 0 and done is not None
                else simulate(
                    program, target, test, float_graph=float_graph, seed=seed, progress=True
                )
            )
            correct += np.asarray(result.predictions) == np.asarray(test.labels)
        correct /= seeds
        first = correct if first is None else first
        difference = correct - first
        rows.append(
            {
                "scheme": name,
                "pipeline": pipeline,
                "samples": [
                    n.attr("converter").samples
                    for n in program.nodes
                    if "converter" in n.attributes and n.attr("converter").kind == "mtj"
                ],
                "draws": draws,
                "accuracy": float(correct.mean()),
                "standard_error": float(correct.std(ddof=1) / np.sqrt(len(correct))),
                "difference": float(difference.mean()),
                "difference_error": float(difference.std(ddof=1) / np.sqrt(len(correct))),
            }
        )
    return rows


def stox(model: Path, limit: int, seeds: int = 2) -> dict:
    """Map, price and simulate the StoX comparison (see the module docstring); return it."""
    target = load_target("stox")
    calibration = load_dataset(f"cifar10:{CIFAR10_TRAIN}", CALIBRATION).images
    test: Dataset | None = None
    if limit:
        test = load_dataset(f"cifar10:{CIFAR10_IMAGES}", limit)
    float_graph = driver.float_reference(model)
    designs, programs, known = {}, {}, {}
    pipelines = stox_designs(target)
    for name, pipeline in pipelines.items():
        program = programs[name] = mapped(model, target, pipeline, calibration)
        report = estimate(program, target)
        accuracy = float_accuracy = quantized = None
        if test is not None:
            result = simulate(program, target, test, float_graph=float_graph, progress=True)
            known[pipeline] = (program, report, result)
            accuracy, float_accuracy = result.accuracy, result.float_accuracy
            quantized = result.quantized_accuracy
        designs[name] = Design(name, pipeline, report, accuracy, float_accuracy, quantized)
    mtj = designs["mtj"].report
    array = full_array(target, pipelines, ARRAY_SAMPLES)
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
        "array_samples": ARRAY_SAMPLES,
        "array_shape": f"{target.crossbar.rows}x{target.crossbar.columns}",
        "full_array": {
            name: {
                "converter_energy_j": bank(r, "energy"),
                "time_s": array_time(r),
                "converter_area_mm2": bank(r, "area"),
                "energy_breakdown_j": r.energy_breakdown_j,
                "area_breakdown_mm2": r.area_breakdown_mm2,
            }
            for name, r in array.items()
        },
        "ratios": {
            name: ratios(designs[name].report, mtj, array[name], array["mtj"])
            for name in ("adc8", "adc4")
        },
        "layers": layer_rows(target, designs, programs),
        "sampling": []
        if test is None
        else sampling(model, target, calibration, test, float_graph, seeds, known),
        "seeds": seeds,
    }


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
        f"| float, this model's weights | 91.48% (the pretrained network) | "
        f"{percent(d['mtj']['float_accuracy'])} |",
        f"| 4-bit, lossless converters | | {percent(d['mtj']['quantized_accuracy'])} |",
        f"| mapped, MTJ (16 / 4 samples) | {PAPER['accuracy']} | {percent(d['mtj']['accuracy'])} |",
        f"| mapped, 8-bit ADC | | {percent(d['adc8']['accuracy'])} |",
        f"| mapped, 4-bit ADC | | {percent(d['adc4']['accuracy'])} |",
        "",
        f"Ratios, ADC design over MTJ design, at three levels: the converter bank of one full "
        f"{result['array_shape']} array (energy and time of one input vector, area; the MTJ at "
        f"{result['array_samples']} samples with its reset and counters: the converter swap "
        "undiluted), the ResNet-20 macro (arrays, drivers, converters, counters, shift-and-add) "
        "and the whole chip (plus buffers, interconnect, digital units).",
        "",
        "| ratio | paper | 8-bit ADC: bank / macro / chip | 4-bit ADC: bank / macro / chip |",
        "|---|---|---|---|",
    ]
    for key in ("energy", "latency", "area", "edp"):
        cells = [
            " / ".join(f"{r[adc][f'{level}_{key}']:.2f}x" for level in ("array", "macro", "chip"))
            for adc in ("adc8", "adc4")
        ]
        lines.append(f"| {key} | {PAPER[key]} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        "Per crossbar layer: the columns a crossbar uses, the MTJ's samples, each design's time "
        "per image (us; the chip's pipeline runs at the slowest) and converter energy (nJ per "
        "image; an MTJ's with its reset and counter).",
        "",
        "| layer | columns | samples | time MTJ / 8-bit / 4-bit | converters MTJ / 8-bit / 4-bit |",
        "|---|---|---|---|---|",
    ]
    for row in result["layers"]:
        times = " / ".join(f"{row[f'{n}_time_s'] * 1e6:.2f}" for n in ("mtj", "adc8", "adc4"))
        energy = " / ".join(f"{row[f'{n}_converter_j'] * 1e9:.2f}" for n in ("mtj", "adc8", "adc4"))
        lines.append(
            f"| {row['layer']} | {row['columns']} | {row['samples']} | {times} | {energy} |"
        )
    if result["sampling"]:
        lines += [
            "",
            f"Sampling schemes on the same images (accuracy averaged over {result['seeds']} "
            "draws of the MTJs; standard errors over images, the difference paired by image).",
            "",
            "| scheme | samples per MTJ layer | MTJ samples per image | accuracy | vs uniform |",
            "|---|---|---|---|---|",
        ]
        for row in result["sampling"]:
            per_layer = ",".join(str(n) for n in row["samples"])
            lines.append(
                f"| {row['scheme']} | {per_layer} | {row['draws']:,.0f} | "
                f"{percent(row['accuracy'])} "
                f"± {100 * row['standard_error']:.2f} | {100 * row['difference']:+.2f} "
                f"± {100 * row['difference_error']:.2f} points |"
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
    parser.add_argument("name", choices=("stox", "raella", "xpert", "hybrid"))
    parser.add_argument("--model", type=Path, help="stox: default the trained model, else the base")
    parser.add_argument(
        "--models", default="resnet20,resnet56,vgg16", help="raella: networks (first: per layer)"
    )
    parser.add_argument("--limit", type=int, help="test images simulated (default 5000; 0: none)")
    parser.add_argument("--seeds", type=int, default=2, help="stox: MTJ draws per sampling scheme")
    parser.add_argument(
        "--weights",
        choices=GRANULARITIES,
        default="channel",
        help="raella: weight quantization grid in every step",
    )
    parser.add_argument("--trials", type=int, default=30, help="xpert: networks tried")
    parser.add_argument(
        "--floorplan",
        choices=("packed", "neurosim"),
        help="xpert: lay xpert.hw's chip out this way (default: its own; give another --out)",
    )
    parser.add_argument(
        "--inner-trials", type=int, default=30, help="xpert: peripheral designs per network"
    )
    parser.add_argument(
        "--check",
        type=int,
        default=None,
        help="xpert: validation images that confirm the float-matched baseline and decide "
        "phase 2's designs (default 2000; 0: 500 images decide, nothing confirms)",
    )
    parser.add_argument(
        "--samples", type=int, default=256, help="hybrid: validation images per single-layer design"
    )
    parser.add_argument(
        "--psqat",
        type=int,
        default=0,
        help="hybrid: PS-QAT images (one epoch) for every design with MTJ layers (0: none)",
    )
    parser.add_argument(
        "--verify",
        type=int,
        help="hybrid: validation images per composed or paper design (default --samples)",
    )
    parser.add_argument(
        "--budget", type=float, default=1.0, help="hybrid: accuracy points below isaac's"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "reproduce")
    args = parser.parse_args()
    if args.name == "hybrid":
        import hybrid

        limit = 5000 if args.limit is None else args.limit
        result = hybrid.hybrid(
            args.samples,
            limit,
            args.budget,
            args.out / "hybrid",
            verify=args.verify,
            psqat=args.psqat,
        )
        text = hybrid.markdown(result)
    elif args.name == "xpert":
        import xpert

        xpert.FLOORPLAN = args.floorplan
        check = xpert.CHECK if args.check is None else args.check or None
        if check is not None and check < xpert.SAMPLES:  # the images that choose the baselines
            parser.error(f"--check {check}: give at least {xpert.SAMPLES} validation images, or 0")
        result = xpert.phase_one(args.out / "xpert", args.trials, args.inner_trials)
        text = xpert.markdown(result)
        limit = 5000 if args.limit is None else args.limit
        if xpert.BASELINE_MODEL.is_file():
            store = xpert.JsonStore.named_by(args.out / "xpert", "baselines", {})
            result["baselines"] = xpert.baseline_designs(xpert.SAMPLES, limit, store, check)
            text += "\n" + xpert.baselines_markdown(result["baselines"])
        network = xpert.searched_network(result["chosen"]["widths"])
        if xpert.BASELINE_MODEL.is_file() and network is not None:
            second = xpert.phase_two(
                args.out / "xpert", result, args.trials, xpert.SAMPLES, limit, network, store, check
            )
            result["phase2"] = second
            text += "\n" + xpert.phase_two_markdown(second)
        else:
            text += (
                f"\nPhase 2 waits for the trained networks: {xpert.BASELINE_MODEL.name} and "
                "the chosen widths' (trained by the command above into "
                f"{xpert.SEARCHED_MODEL.name}) in models/ (models/README.md). The paper, after "
                f"phase 2: {xpert.PAPER['edap']}x lower EDAP, {xpert.PAPER['tops_per_w']}x "
                f"TOPS/W, {xpert.PAPER['tops_per_mm2']}x TOPS/mm2 at {xpert.PAPER['accuracy']}%.\n"
            )
        if xpert.BASELINE_MODEL.is_file():
            text += "\n" + xpert.breakdown_markdown(xpert.cost_designs(args.out / "xpert", result))
        xpert.plot(result, args.out / "xpert.png")
        drawn = "phase 1's networks: latency against NASWOT score"
        if "phase2" in result:
            drawn += "; phase 2's designs: energy against validation accuracy"
        text += f"\nFigure: `xpert.png` ({drawn}).\n"
    elif args.name == "raella":
        import raella

        limit = 5000 if args.limit is None else args.limit
        result = raella.raella(args.models.split(","), limit, args.weights)
        text = raella.markdown(result)
    else:
        model = args.model or (TRAINED if TRAINED.is_file() else BASE)
        result = stox(model, 5000 if args.limit is None else args.limit, args.seeds)
        text = stox_markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text(text)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
