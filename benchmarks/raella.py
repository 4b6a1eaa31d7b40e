"""RAELLA (Andrulis, Emer, Sze; ISCA 2023, arXiv 2304.07935) with imcc: the ablation chain
against an ISAAC-like design, what the converters see, and why speculation fails.

    python benchmarks/reproduce.py raella [--models resnet20,resnet56,vgg16] [--limit 5000]

Three parts, each measured on the mapped programs:

1. The chain (`STEPS`, one pipeline string each): `isaac` (isaac.hw: 128x128 crossbars, 2-bit
   cells, 1-bit inputs, ISAAC's 8-bit ADC priced by the ADC survey model that prices RAELLA's
   ADCs, `adc8_survey`), `c+o` (raella.hw: 512x512 2T2R, Center+Offset weights with 4-bit
   centers in fixed 2-bit slices, 1-bit inputs), `+adaptive` (per-layer adaptive weight slicing,
   error budget 0.09, the last layer in 1-bit slices), `+spec` (3-3-2 speculative input slices
   with 1-bit recovery, profiled on calibration data; adaptive slicing also holds the failing
   share of speculative conversions within 10%), and imcc's variant `+spec/conv` (the same
   speculation, adaptive slicing choosing the fewest conversions, recoveries included, within
   the error budget and no cap on failures). Per model and step: converts per MAC, energy
   per MAC by component, energy efficiency and throughput over the isaac step at equal
   provisioned area (the isaac step fills ISAAC's 168-tile chip with copies of its slowest
   layers, every other step as many of its own tiles as fit in that area: `driver.fill_area`),
   the share of the provisioned crossbar cells the weights use, the failing share of speculative
   conversions, the weight slices chosen, and accuracy (the 8-bit network with lossless
   converters and the mapped one, bit-accurate) on the first `--limit` test images.
2. What the converters see (`column_sums`), per layer of the first model's +spec program: the
   mean |partial sum| of every conversion (row chunk, input slice, weight slice, column) and
   the share at the ADC's lowest or highest code, with the filters' centers and with c = 0
   (plain differential storage on the same slices), on held-out training images.
3. Why speculation fails (`failure_causes`): the failing share of speculative conversions at
   RAELLA's typical point (3 weight slices, 4-2-1 over the 7 magnitude bits of a symmetric
   8-bit weight, inputs 3-3-2, 512 rows, a 7-bit signed ADC at unit steps) with one factor
   changed at a time: the centers, the slice order of weights and inputs, the ADC's code
   range (one bit wider) and the weights' quantization grid.

Calibration (quantize, encode-weights, slice-weights, profile-converters) uses the first
`CALIBRATION` training images; the measurements of parts 2 and 3 the next `HELD_OUT`.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from formats import percent  # noqa: E402

from imcc import driver  # noqa: E402
from imcc.costmodel import CostReport  # noqa: E402
from imcc.frontend.datasets import Dataset, load_dataset  # noqa: E402
from imcc.frontend.hw import load_target  # noqa: E402
from imcc.ir.graph import Graph  # noqa: E402
from imcc.ir.mapping import WeightMapping  # noqa: E402
from imcc.passes.calibration import layer_products  # noqa: E402
from imcc.passes.context import Context  # noqa: E402
from imcc.passes.encode_weights import slice_score  # noqa: E402
from imcc.passes.layers import crossbar_layers  # noqa: E402
from imcc.passes.pipeline import DEFAULT_PIPELINE  # noqa: E402
from imcc.plan import columns_per_slice, graph_plan  # noqa: E402
from imcc.simulation import simulate  # noqa: E402
from tests.onnx_models import CIFAR10_IMAGES, CIFAR10_TRAIN, cifar_resnet, models_dir  # noqa: E402

STEPS = {
    "isaac": (
        "isaac",
        "assign-input-precision,quantize,tile-crossbar,select-adc{converter=adc8_survey},"
        "share-columns,place",
    ),
    "c+o": (
        "raella",
        "assign-input-precision{slice=1},quantize,tile-crossbar{slices=2,2,2,2},"
        "encode-weights{scheme=center-offset center_bits=4},select-adc,share-columns,place",
    ),
    "+adaptive": (
        "raella",
        "assign-input-precision{slice=1},quantize,tile-crossbar,"
        "encode-weights{scheme=center-offset center_bits=4},select-adc,"
        "slice-weights{adaptive=true error_budget=0.09 last_bitwise=true},"
        "share-columns,place",
    ),
    "+spec": (
        "raella",
        "assign-input-precision{speculate=true slices=3,3,2},quantize,"
        "tile-crossbar,encode-weights{scheme=center-offset center_bits=4},select-adc,"
        "slice-weights{adaptive=true error_budget=0.09 max_failures=0.1 "
        "last_bitwise=true},profile-converters,share-columns,place",
    ),
    "+spec/conv": (
        "raella",
        "assign-input-precision{speculate=true slices=3,3,2},quantize,"
        "tile-crossbar,encode-weights{scheme=center-offset center_bits=4},select-adc,"
        "slice-weights{adaptive=true error_budget=0.09 objective=conversions "
        "last_bitwise=true},profile-converters,share-columns,place",
    ),
}
"""RAELLA's ablation chain: step -> (target, mapping pipeline after the clean-up passes)."""


def steps(granularity: str = "channel") -> dict[str, tuple[str, str]]:
    """Return `STEPS` with the weights quantized on another grid (`quantize`'s
    `weight_granularity`: channel, the default, or tensor) in every step alike."""
    if granularity == "channel":
        return dict(STEPS)
    option = f",quantize{{weight_granularity={granularity}}},"
    return {k: (t, m.replace(",quantize,", option)) for k, (t, m) in STEPS.items()}


PAPER_CONVERTS = {
    "isaac": 0.25,
    "c+o": 0.0625,
    "+adaptive": 0.047,
    "+spec": 0.02,
    "+spec/conv": 0.02,
}
"""[RAELLA] converts per MAC: ISAAC 8 x 4 / 128; C+O 8 x 4 / 512; 3 slices 8 x 3 / 512; with
speculation about 0.02 (its Titanium law)."""

PAPER = {
    "efficiency": "3.9x geomean (2.9-4.9x); 2.8x without speculation",
    "throughput": "2.0x geomean (0.7-3.3x); 2.7x without speculation",
    "failures": "4-10% of speculative conversions",
    "slices": "most layers 3 (4-2-2), some 2 (4-4), the last 1-bit slices",
    "accuracy": "little or no loss, no retraining",
    "per_mac_fj": "ADC 61.5 -> 37.6, cells 6.9 -> 17.2, total ~101 -> ~84 with speculation",
}
"""[RAELLA]'s headline against 8-bit ISAAC (arXiv 2304.07935; its public model's breakdown)."""

CALIBRATION = 64
"""Training images that calibrate every compile."""
HELD_OUT = 16
"""Training images after those that the converter measurements of parts 2 and 3 run on."""

TYPICAL = (
    "assign-input-precision{{speculate=true slices={inputs}}},quantize{quantize},"
    "tile-crossbar{{slices={weights}}},encode-weights{{scheme={scheme}{centers}}},select-adc"
)
"""RAELLA's typical speculative layer as a pipeline: the factors of `CAUSES` fill it in."""

CAUSES = {
    "as mapped: 4-bit slice-sum centers, weights 4-2-1, inputs 3-3-2, per-channel scales": {},
    "c = 0 (plain differential storage)": {"scheme": "differential", "centers": ""},
    "4-bit centers on the unsliced chunk sum (weighted median)": {
        "centers": " center_bits=4 criterion=sum"
    },
    "weight slices 3-2-2": {"weights": "3,2,2"},
    "weight slices 2-2-3": {"weights": "2,2,3"},
    "weight slices 1-2-4": {"weights": "1,2,4"},
    "input slices 4-2-2": {"inputs": "4,2,2"},
    "input slices 2-3-3": {"inputs": "2,3,3"},
    "centers of any width (not 4 bits)": {"centers": " center_bits=0"},
    "per-tensor weight scales": {"quantize": "{weight_granularity=tensor}"},
}
"""One factor changed at a time from RAELLA's typical speculative layer (`TYPICAL`)."""
DEFAULTS = {
    "inputs": "3,3,2",
    "quantize": "",
    "weights": "4,2,1",
    "scheme": "center-offset",
    "centers": " center_bits=4",
}

RECORDED = {
    "layer": "ResNet-18 (ImageNet) layer3.0.conv1",
    "inputs": (0.0009, 0.022, 0.1091),
    "offsets": (0.0257, 0.1332, 0.3013),
}
"""[RAELLA]'s recorded statistics of one layer it ran (its public model, mit-emze/raella
workspace/dnn_layers/resnet18/010.yaml, torchvision's QuantizableResNet with 8-bit weights):
the share of inputs with bit 6, 5 and 4 set (`unsigned_offset`), and of weights whose offset
from the filter's median has bit 6, 5 and 4 set (`median_split_pos` + `median_split_neg`)."""
DENSITY_BITS = (6, 5, 4)
"""The bits whose densities part 2 compares with `RECORDED`."""

SEVEN_BITS = (-64.0, 63.0)
"""[RAELLA]'s 7-bit signed ADC at unit steps: its lowest and highest code."""
EIGHT_BITS = (-128.0, 127.0)
"""One bit wider: the signed code range's share of the failures."""


@dataclass(frozen=True)
class Model:
    """A benchmark network: its ONNX file and whether it has trained weights (accuracy)."""

    name: str
    path: Path
    trained: bool


def models(names: list[str]) -> list[Model]:
    """Return the requested networks that are available: the pretrained CIFAR-10 ResNets
    (models/cifar_resnet.py exports them), the trained VGG-16 of models/ (train_cifar.py),
    else VGG-16 with seeded weights (cost only)."""
    found = []
    for name in names:
        if name.startswith("resnet"):
            path = cifar_resnet(int(name[6:]))
            if name == "resnet20" and path is None:
                path = ROOT / "models" / "resnet20_cifar10.onnx"
            if path is None:
                print(f"{name}: not exported (run scripts/fetch_test_models.sh)")
                continue
            found.append(Model(name, path, CIFAR10_IMAGES.is_file()))  # else cost only
        elif name.startswith("vgg"):
            trained = ROOT / "models" / f"{name}_cifar10.onnx"  # models/README.md
            if trained.is_file():
                found.append(Model(name, trained, CIFAR10_IMAGES.is_file()))
                continue
            from imcc.models.vgg_cifar import export

            path = models_dir() / f"{name}_cifar.onnx"
            if not path.is_file():
                export(name, path)
            found.append(Model(name, path, False))
        else:
            raise SystemExit(f"unknown model {name}: resnet20, resnet56 or vgg16")
    return found


def per_mac(report: CostReport, *components: str) -> float:
    """Return the energy of some components per MAC in fJ (all components when none given)."""
    parts = components or tuple(report.energy_breakdown_j)
    return sum(report.energy_breakdown_j.get(c, 0.0) for c in parts) / report.macs * 1e15


def cell_use(program: Graph, target) -> float:
    """Return the share of the crossbar cells provisioned for the weights that hold one: every
    layer's rows x weight columns over its crossbars' cells (one copy a layer)."""
    used = provisioned = 0
    for node in crossbar_layers(program):
        plan = graph_plan(node, program, target)
        per_slice = columns_per_slice(plan.mapping, plan.signed_columns)
        used += plan.rows * plan.filters * plan.groups * plan.weight_slices * per_slice
        crossbar = target.crossbar
        provisioned += node.attr("tiling").crossbars * crossbar.rows * crossbar.columns
    return used / provisioned


def speculation(program: Graph) -> tuple[float | None, list[str]]:
    """Return the failing share of speculative conversions averaged over the speculative
    layers (their profiles; None without any) and every layer's weight slices."""
    failures, slices = [], []
    for node in crossbar_layers(program):
        mapping: WeightMapping = node.attr("weights")
        slices.append("-".join(str(s) for s in mapping.slices))
        if node.attr("input").speculate:
            failures.append(node.attributes["profile"].speculation_failures)
    return (float(np.mean(failures)) if failures else None), slices


def chain(
    model: Model, calibration: np.ndarray, test: Dataset | None, granularity: str = "channel"
) -> tuple[list[dict], dict[str, Graph]]:
    """Compile, price (at equal provisioned area) and simulate every step of `steps`; return
    a row per step and the mapped programs by step."""
    rows, base, programs = [], None, {}
    float_graph = driver.float_reference(model.path) if test is not None else None
    for step, (name, mapping) in steps(granularity).items():
        target = load_target(name)
        program = programs[step] = driver.compile(
            model.path, target, passes=f"{DEFAULT_PIPELINE},{mapping}", calibration=calibration
        )
        report = driver.fill_area(program, target, None if base is None else base.area_mm2)
        base = base or report
        failures, slices = speculation(program)
        row = {
            "model": model.name,
            "step": step,
            "target": name,
            "pipeline": mapping,
            "converts_per_mac": report.converts_per_mac,
            "paper_converts_per_mac": PAPER_CONVERTS[step],
            "fj_per_mac": per_mac(report),
            "fj_per_mac_by_component": {
                k: per_mac(report, k) for k, v in report.energy_breakdown_j.items() if v
            },
            "area_mm2": report.area_mm2,
            "tops": report.tops,
            "tops_per_w": report.tops_per_w,
            "efficiency": (base.energy_j / base.macs) / (report.energy_j / report.macs),
            "throughput": report.throughput_inferences_s / base.throughput_inferences_s,
            "cell_use": cell_use(program, target),
            "failures": failures,
            "slices": slices,
            "accuracy": None,
            "quantized_accuracy": None,
            "float_accuracy": None,
        }
        if test is not None:
            result = simulate(program, target, test, float_graph=float_graph, progress=True)
            row["accuracy"] = result.accuracy
            row["quantized_accuracy"] = result.quantized_accuracy
            row["float_accuracy"] = result.float_accuracy
        rows.append(row)
        print(f"  {model.name} {step}: done", file=sys.stderr, flush=True)
    return rows, programs


def converter_view(
    program: Graph, target, images: np.ndarray, codes: tuple[float, float] | None = None
) -> list[dict]:
    """Return per crossbar layer what its converters see on `images` (`slice_score` over every
    row chunk, input slice and weight slice as mapped): the mean |partial sum| and the share
    at the lowest or highest code, with the layer's centers and with c = 0, at `codes` (the
    layer's own ADC when None) and one bit wider."""
    ctx = Context(target=target, options={"calibration": images})
    layers = crossbar_layers(program)
    products = layer_products(program, ctx, layers, samples=len(images), salt="converter-view")
    rows = []
    for node in layers:
        plan = graph_plan(node, program, target)
        low, high, step = plan.adc
        own = codes or (low * step, high * step)
        wider = (2 * own[0], 2 * own[1] + 1)
        measured = {"layer": node.name or node.outputs[0], "rows": plan.rows}
        measured["filters"] = plan.filters * plan.groups
        measured["slices"] = "-".join(str(s) for s in plan.mapping.slices)
        measured["inputs"] = "-".join(str(s) for s in plan.streaming.slices)
        totals: dict[str, float] = {}
        count = 0
        layer = products[node.outputs[0]]
        inputs = np.concatenate([p.ravel() for p in layer.patches])
        measured["input_density"] = [float(np.mean((inputs >> b) & 1)) for b in DENSITY_BITS]
        offsets = np.concatenate(
            [
                np.abs(w - (plan.group_centers(g) if plan.centers else 0)).ravel()
                for g, w in enumerate(layer.filters)
            ]
        )
        measured["offset_density"] = [float(np.mean((offsets >> b) & 1)) for b in DENSITY_BITS]
        for group, (x, w) in enumerate(zip(layer.patches, layer.filters, strict=True)):
            centers = plan.group_centers(group)
            kinds = {"centered": centers, "differential": np.zeros(w.shape[1], np.int64)}
            if centers is None:
                kinds = {"differential": np.zeros(w.shape[1], np.int64)}
            for kind, c in kinds.items():
                score = slice_score(plan, x, w, c, own)
                wide = slice_score(plan, x, w, c, wider)
                for key, value in (
                    (f"mean_abs_{kind}", score.mean_abs),
                    (f"saturated_{kind}", score.saturated),
                    (f"saturated_wider_{kind}", wide.saturated),
                ):
                    totals[key] = totals.get(key, 0.0) + float(value.sum())
            count += w.shape[1]
        rows.append(measured | {k: v / count for k, v in totals.items()})
    return rows


def failure_causes(model: Model, calibration: np.ndarray, held_out: np.ndarray) -> list[dict]:
    """Return the failing share of speculative conversions (averaged over layers, on
    `held_out` images) at RAELLA's typical speculative layer and with one factor changed at a
    time (`CAUSES`), at the 7-bit signed codes and one bit wider."""
    target = load_target("raella")
    rows = []
    for label, change in CAUSES.items():
        factors = DEFAULTS | change
        mapping = TYPICAL.format(**factors)
        program = driver.compile(
            model.path, target, passes=f"{DEFAULT_PIPELINE},{mapping}", calibration=calibration
        )
        view = converter_view(program, target, held_out, SEVEN_BITS)
        kind = "centered" if factors["scheme"] == "center-offset" else "differential"
        rows.append(
            {
                "factor": label,
                "pipeline": mapping,
                "failures": float(np.mean([v[f"saturated_{kind}"] for v in view])),
                "failures_eight_bits": float(np.mean([v[f"saturated_wider_{kind}"] for v in view])),
                "mean_abs_sum": float(np.mean([v[f"mean_abs_{kind}"] for v in view])),
            }
        )
        print(f"  cause: {label}: done", file=sys.stderr, flush=True)
    return rows


def geomean(values: list[float]) -> float:
    """Return the geometric mean of positive numbers."""
    return math.prod(values) ** (1 / len(values))


def raella(names: list[str], limit: int, granularity: str = "channel") -> dict:
    """Run the three parts (module docstring) and return them (`granularity`: the weights'
    quantization grid in every step of the chain)."""
    chosen = models(names)
    train = load_dataset(f"cifar10:{CIFAR10_TRAIN}", CALIBRATION + HELD_OUT).images
    calibration, held_out = train[:CALIBRATION], train[CALIBRATION:]
    test = load_dataset(f"cifar10:{CIFAR10_IMAGES}", limit) if limit else None
    rows, first = [], chosen[0]
    for model in chosen:
        done, programs = chain(model, calibration, test if model.trained else None, granularity)
        rows += done
        if model is first:  # part 2 reads the first network's +spec program
            program = programs["+spec"]
    target = load_target(steps(granularity)["+spec"][0])
    geomeans = {}
    for step in STEPS:
        of = [r for r in rows if r["step"] == step]
        geomeans[step] = {
            "efficiency": geomean([r["efficiency"] for r in of]),
            "throughput": geomean([r["throughput"] for r in of]),
            "models": [r["model"] for r in of],
        }
    return {
        "paper": PAPER,
        "test_images": limit,
        "calibration_images": CALIBRATION,
        "held_out_images": HELD_OUT,
        "models": {m.name: {"path": str(m.path), "trained": m.trained} for m in chosen},
        "weight_granularity": granularity,
        "steps": rows,
        "geomean": geomeans,
        "layers_model": first.name,
        "layers": converter_view(program, target, held_out),
        "recorded": RECORDED,
        "causes": failure_causes(first, calibration, held_out),
    }


def densities(values: list[float]) -> str:
    """Format bit densities as percentages joined by slashes."""
    return " / ".join(f"{100 * v:.1f}" for v in values)


def markdown(result: dict) -> str:
    """Return the reproduction as markdown tables, the paper's figures beside imcc's."""
    paper = result["paper"]
    lines = [
        "## RAELLA (ISCA 2023) against an ISAAC-like design",
        "",
        f"Accuracy on the first {result['test_images']} CIFAR-10 test images (bit-accurate; "
        "`quant`: the 8-bit network with lossless converters); calibration on "
        f"{result['calibration_images']} training images; weights quantized per "
        f"{result['weight_granularity']} in every step. Ratios over the isaac step of the "
        "same network at equal provisioned area. `cell use`: the share of the provisioned "
        "crossbar cells holding a weight slice. `fail`: failing share of speculative "
        "conversions, averaged over layers.",
        "",
        "| model | step | conv/MAC (paper) | fJ/MAC | ADC | cells | DAC | buffers | other "
        "| eff. x | thru. x | cell use | fail | slices | quant | mapped |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["steps"]:
        parts = r["fj_per_mac_by_component"]
        named = ("converters", "array", "input_drivers", "buffers")
        other = r["fj_per_mac"] - sum(parts.get(k, 0.0) for k in named)
        counts: dict[int, int] = {}
        for s in r["slices"]:
            counts[len(s.split("-"))] = counts.get(len(s.split("-")), 0) + 1
        histogram = ", ".join(f"{n}x{k}" for k, n in sorted(counts.items()))
        lines.append(
            f"| {r['model']} | {r['step']} | {r['converts_per_mac']:.4f} "
            f"({r['paper_converts_per_mac']}) | {r['fj_per_mac']:.1f} | "
            f"{parts.get('converters', 0):.1f} | {parts.get('array', 0):.1f} | "
            f"{parts.get('input_drivers', 0):.1f} | {parts.get('buffers', 0):.1f} | "
            f"{other:.1f} | {r['efficiency']:.2f} | {r['throughput']:.2f} | "
            f"{100 * r['cell_use']:.0f}% | {percent(r['failures'])} | {histogram} | "
            f"{percent(r['quantized_accuracy'])} | {percent(r['accuracy'])} |"
        )
    lines += ["", "| geomean over the networks | energy efficiency | throughput | paper |"]
    lines.append("|---|---|---|---|")
    for step, g in result["geomean"].items():
        claim = {
            "+adaptive": "2.8x / 2.7x (without speculation)",
            "+spec": "3.9x / 2.0x",
        }.get(step, "")
        lines.append(
            f"| {step} ({', '.join(g['models'])}) | {g['efficiency']:.2f}x | "
            f"{g['throughput']:.2f}x | {claim} |"
        )
    lines += [
        "",
        f"Paper: failures {paper['failures']}; slices {paper['slices']}; energy per MAC "
        f"{paper['per_mac_fj']}; accuracy {paper['accuracy']}.",
        "",
        f"What the converters see, per layer of {result['layers_model']} (+spec as mapped; "
        f"{result['held_out_images']} held-out training images): mean |partial sum| of a "
        "conversion and the share at the 7-bit ADC's lowest or highest code, with the "
        "filters' centers (C+O) and with c = 0 (plain differential storage, same slices); "
        "the share of inputs, and of weights' offsets |w - c|, with bit 6 / 5 / 4 set.",
        "",
        "| layer | rows | filters | weight slices | mean abs sum diff. / C+O | reduction "
        "| at an extreme code diff. / C+O | inputs bit 6/5/4 | offsets bit 6/5/4 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in result["layers"]:
        before, after = v["mean_abs_differential"], v.get("mean_abs_centered", float("nan"))
        lines.append(
            f"| {v['layer']} | {v['rows']} | {v['filters']} | {v['slices']} | "
            f"{before:.1f} / {after:.1f} | {before / after:.2f}x | "
            f"{percent(v['saturated_differential'])} / "
            f"{percent(v.get('saturated_centered'))} | {densities(v['input_density'])} | "
            f"{densities(v['offset_density'])} |"
        )
    recorded = result["recorded"]
    lines.append(
        f"| [RAELLA]'s recorded {recorded['layer']} | | | | | | | "
        f"{densities(recorded['inputs'])} | {densities(recorded['offsets'])} |"
    )
    lines += [
        "",
        "Why speculation fails: the failing share of speculative conversions (averaged over "
        f"the layers of {result['layers_model']}, held-out images) at RAELLA's typical layer, "
        "one factor changed at a time; `8-bit codes`: the same sums against a signed ADC one "
        "bit wider.",
        "",
        "| factor | fail (7-bit codes) | fail (8-bit codes) | mean abs sum |",
        "|---|---|---|---|",
    ]
    for c in result["causes"]:
        lines.append(
            f"| {c['factor']} | {percent(c['failures'])} | {percent(c['failures_eight_bits'])} "
            f"| {c['mean_abs_sum']:.1f} |"
        )
    return "\n".join(lines) + "\n"
