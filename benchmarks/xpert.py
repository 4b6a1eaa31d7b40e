"""XPert (Moitra, Bhattacharjee, Kim, Panda; DAC 2023, arXiv 2303.17646) with imcc: the VGG-16
baseline on one uniform peripheral design, and phase 1 of the co-search with per-layer channel
depth (search/channels.py).

    python benchmarks/reproduce.py xpert [--trials 30] [--inner-trials 30]

The baseline (`BASELINE`): CIFAR-10 VGG-16 (models/vgg_cifar.py, untrained: phase 1 prices
latency and area, which do not depend on the weights) on xpert.hw with every layer alike, as
XPert's public code runs its network when nothing is searched
(Intelligent-Computing-Lab-Yale/XPert: inference.py's defaults ADCprecision = 6 and wl_activate
= 4; NeuroSIM/Param.cpp numColMuxed = 8 and SARADC = false, i.e. NeuroSim's multi-level sense
amplifier, imcc's Flash converter; 8-bit weights): a 6-bit Flash converter per 8 columns, 4-bit
inputs. What the code does not show: which of these its paper's baseline row used (the paper
gives no table of it) and the cell (its XPertSim_Tool runs an SRAM array of 1-bit cells;
xpert.hw prices the paper's 4-bit RRAM cells).

Phase 1 (`phase_one`): per-layer output channels in {64, 128, 256, 512}, converter type and
column sharing, the lowest latency with the chip's area within +-5% of the baseline design's
(iso-area), candidates guarded by the NASWOT score of the untrained network (at least the
baseline VGG-16's own); the precisions stay the baseline's. The chosen network must then be
trained (the command is printed) before phase 2 and accuracy.

Phase 2 (`phase_two`, once both trained networks are in models/: `BASELINE_MODEL`,
`SEARCHED_MODEL`): the baseline design's mapped accuracy on the validation split (training
images 45,000-49,999, `--samples` of them) sets the floor, `FLOOR_DROP` below it (imcc's
choice, from the targets 92.0% baseline and 91.5% searched); then per-layer input and
converter bits on the trained searched network, phase 1's structure fixed, for the least
energy within the area window and the floor (search/channels.py `cheapest_precisions`).
Both final designs are simulated bit-accurately on the test images and priced: EDAP, TOPS/W
and TOPS/mm2 against the baseline, beside XPert's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imcc import driver  # noqa: E402
from imcc.frontend.hw import load_target  # noqa: E402
from imcc.search.channels import (  # noqa: E402
    AREA_WINDOW,
    CANDIDATES,
    ChannelSpace,
    export_candidate,
    search_channels,
)
from imcc.search.evaluate import Evaluator, Metrics, Problem  # noqa: E402
from imcc.search.space import build_space  # noqa: E402
from tests.onnx_models import CIFAR10_TRAIN  # noqa: E402

BASELINE = {
    "select-adc.per_layer_converter": "flash",
    "select-adc.per_layer_bits": "6",
    "assign-input-precision.per_layer_bits": "4",
    "share-columns.per_layer": "8",
}
"""XPert's uniform design as its public code runs it (module docstring)."""
PRECISIONS = ("select-adc.per_layer_bits", "assign-input-precision.per_layer_bits")
"""The baseline's options that phase 1 keeps (phase 2 searches them)."""
DATA = f"cifar10:{CIFAR10_TRAIN}"
PAPER = {"edap": 10.24, "tops_per_w": 1.72, "tops_per_mm2": 1.93, "accuracy": 92.46}
"""[XPert]'s CIFAR-10 headline: the searched design against its VGG-16 baseline."""
BASELINE_MODEL = ROOT / "models" / "vgg16_cifar10.onnx"
SEARCHED_MODEL = ROOT / "models" / "xpert_vgg16_cifar10.onnx"
"""The trained baseline VGG-16 and the trained phase-1 network (models/README.md)."""
VALIDATION = f"{DATA},from=45000"
"""The validation split: CIFAR-10 training images 45,000-49,999 (never trained on)."""
FLOOR_DROP = 0.005
"""Phase 2's accuracy floor: the baseline's mapped validation accuracy less half a point."""


def baseline(model: Path, data: str = DATA) -> tuple[str, Metrics]:
    """Return the baseline design's full pipeline and cost on `model` (xpert.hw)."""
    target = load_target("xpert")
    problem = Problem.load(model, target, data, search_samples=1, probe_samples=1, check_samples=1)
    space = build_space(problem.graph, target)
    choices = space.uniform(BASELINE)
    evaluation = Evaluator(problem).evaluate(space.pipeline(choices), accuracy=False)
    assert evaluation.metrics is not None, evaluation.illegal
    return space.full_pipeline(choices), evaluation.metrics


def phase_one(out: Path, trials: int, inner_trials: int, seed: int = 0) -> dict:
    """Run phase 1 on VGG-16 at the baseline design's area; return the record."""
    space = ChannelSpace("vgg16")
    # the search's own file of the reference network, its first candidate: exported once
    name = f"{space.label(space.baseline())}.onnx"
    reference = export_candidate("vgg16", space.baseline(), out / "channels" / CANDIDATES / name)
    pipeline, metrics = baseline(reference)
    best, tried = search_channels(
        space,
        target=load_target("xpert"),
        data=DATA,
        area_mm2=metrics.area_mm2,
        out=out / "channels",
        trials=trials,
        inner_trials=inner_trials,
        pinned={k: BASELINE[k] for k in PRECISIONS},
        seed=seed,
        progress=True,
    )
    return {
        "baseline": {"pipeline": pipeline, "metrics": metrics.to_dict()},
        "area_window": AREA_WINDOW,
        "chosen": best.to_dict(),
        "tried": [c.to_dict() for c in tried],
        "train": (
            "python models/train_cifar.py --arch vgg16 --widths "
            + ",".join(map(str, best.widths))
            + " --data cifar10:cifar10_train.npz --epochs 30"
            " --state runs/xpert/state.pt --out models/xpert_vgg16_cifar10.onnx"
        ),
    }


def compiled(model: Path, pipeline: str) -> Any:
    """Compile a design as phase 2's search does (calibrated on the validation split's first
    images, never on test images)."""
    calibration, _ = driver.calibration_data(VALIDATION, model)
    return driver.compile(model, load_target("xpert"), passes=pipeline, calibration=calibration)


def mapped_accuracy(program: Any, data: str, samples: int) -> float:
    """Return a compiled design's bit-accurate accuracy on the first `samples` images of
    `data`."""
    from imcc.frontend.datasets import load_dataset
    from imcc.simulation import simulate

    report = simulate(program, load_target("xpert"), load_dataset(data, samples), progress=True)
    return report.accuracy


def phase_two(out: Path, record: dict, trials: int, samples: int, test_images: int) -> dict:
    """Run phase 2 on the trained searched network (module docstring) after `phase_one`'s
    `record`; return both final designs' costs (on the trained networks) and accuracies."""
    from imcc.costmodel import estimate
    from imcc.search.channels import cheapest_precisions, inner_choices
    from imcc.search.storage import open_storage, storage_url
    from tests.onnx_models import CIFAR10_IMAGES

    target = load_target("xpert")
    base = record["baseline"]
    baseline = compiled(BASELINE_MODEL, base["pipeline"])
    floor = mapped_accuracy(baseline, VALIDATION, samples) - FLOOR_DROP
    chosen = record["chosen"]
    structure = inner_choices(out / "channels", ChannelSpace("vgg16").label(chosen["widths"]))
    area = base["metrics"]["area_mm2"]
    window = (area * (1 - AREA_WINDOW), area * (1 + AREA_WINDOW))
    found = cheapest_precisions(
        SEARCHED_MODEL,
        target,
        VALIDATION,
        open_storage(storage_url(None, out)),
        "phase2",
        structure,
        trials,
        window,
        floor,
        samples,
    )
    if found is None:
        raise SystemExit(
            f"phase 2 found no design at or above {100 * floor:.2f}% within the area window"
        )
    test = f"cifar10:{CIFAR10_IMAGES}"
    searched = compiled(SEARCHED_MODEL, found.pipeline)
    return {
        "floor": floor,
        "baseline": {
            "pipeline": base["pipeline"],
            "metrics": Metrics.of(estimate(baseline, target)).to_dict(),
            "accuracy": mapped_accuracy(baseline, test, test_images),
        },
        "searched": {
            "pipeline": found.pipeline,
            "metrics": Metrics.of(estimate(searched, target)).to_dict(),
            "validation_accuracy": found.accuracy,
            "accuracy": mapped_accuracy(searched, test, test_images),
        },
        "test_images": test_images,
    }


def phase_two_markdown(result: dict) -> str:
    """Return phase 2's table: paper vs imcc, the ratios of the searched design."""
    base, searched = result["baseline"]["metrics"], result["searched"]["metrics"]
    edap = base["edap"] / searched["edap"]
    tops_w = searched["tops_per_w"] / base["tops_per_w"]
    tops_mm2 = searched["tops_per_mm2"] / base["tops_per_mm2"]
    n = result["test_images"]
    lines = [
        "## XPert phase 2: per-layer input and converter bits on the trained networks",
        "",
        f"Accuracy floor (validation, baseline design less {100 * FLOOR_DROP:.1f} points): "
        f"{100 * result['floor']:.2f}%. Accuracies: bit-accurate, first {n:,} test images.",
        "",
        "| figure | paper | imcc |",
        "|---|---|---|",
        f"| EDAP, baseline / searched | {PAPER['edap']}x | {edap:.2f}x |",
        f"| TOPS/W, searched / baseline | {PAPER['tops_per_w']}x | {tops_w:.2f}x |",
        f"| TOPS/mm2, searched / baseline | {PAPER['tops_per_mm2']}x | {tops_mm2:.2f}x |",
        f"| accuracy, searched | {PAPER['accuracy']}% | "
        f"{100 * result['searched']['accuracy']:.2f}% |",
        f"| accuracy, baseline | | {100 * result['baseline']['accuracy']:.2f}% |",
        "",
        f"Pipeline: `{result['searched']['pipeline']}`",
    ]
    return "\n".join(lines) + "\n"


def design_rows(pipeline: str, widths: list[int]) -> list[tuple[int, str, str, str, str]]:
    """Return per conv layer of a design: output channels, converter, its bits, column
    sharing and input bits, read from the passes of its pipeline string."""
    passes = {p.name: p for p in driver.pipeline_passes(pipeline)}
    adc, share = passes["select-adc"], passes["share-columns"]
    inputs = passes["assign-input-precision"]
    return [
        (
            width,
            adc.per_layer_converter[i],
            str(adc.per_layer_bits[i]),
            str(share.per_layer[i]),
            str(inputs.per_layer_bits[i]),
        )
        for i, width in enumerate(widths)
    ]


def markdown(result: dict) -> str:
    """Return phase 1's record as markdown."""
    base = result["baseline"]["metrics"]
    chosen = result["chosen"]
    tried = result["tried"]
    lines = [
        "## XPert (DAC 2023): phase 1 with per-layer channel depth on CIFAR-10 VGG-16",
        "",
        "Baseline: VGG-16 on xpert.hw, every layer a 6-bit Flash converter per 8 columns, "
        "4-bit inputs (XPert's code defaults). Phase 1: per-layer channels, converter type and "
        f"column sharing, lowest latency, area within +-{100 * result['area_window']:.0f}% of "
        "the baseline's, NASWOT at least the baseline's; precisions as the baseline. Costs "
        "from xpert.hw (NeuroSim V1.3 rules); latency and area do not depend on the weights.",
        "",
        "| design | latency (us) | area (mm2) | latency x |",
        "|---|---|---|---|",
        f"| baseline | {1e6 * base['latency_s']:.1f} | {base['area_mm2']:.2f} | 1.00 |",
        f"| phase 1 | {1e6 * chosen['latency_s']:.1f} | {chosen['area_mm2']:.2f} | "
        f"{base['latency_s'] / chosen['latency_s']:.2f} |",
        "",
        f"Candidates tried: {len(tried)}, within the NASWOT floor and the area window: "
        f"{sum(c['feasible'] for c in tried)}. Chosen widths: "
        f"{'-'.join(map(str, chosen['widths']))} (NASWOT {chosen['naswot']:.1f}).",
        "",
        "| conv | channels | converter | bits | column sharing | input bits |",
        "|---|---|---|---|---|---|",
        *(
            f"| {i + 1} | {' | '.join(map(str, row))} |"
            for i, row in enumerate(design_rows(chosen["pipeline"], chosen["widths"]))
        ),
        "",
        f"Train it (`cifar10_train.npz`: the 50,000 CIFAR-10 training images): `{result['train']}`",
        "",
        f"Paper, after phase 2 on the trained network: {PAPER['edap']}x lower EDAP, "
        f"{PAPER['tops_per_w']}x TOPS/W, {PAPER['tops_per_mm2']}x TOPS/mm2 at "
        f"{PAPER['accuracy']}% (not yet measured here).",
        "",
        f"Pipeline: `{chosen['pipeline']}`",
    ]
    return "\n".join(lines) + "\n"
