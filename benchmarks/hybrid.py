"""One chip mixing the three papers' mechanisms layer by layer, against each paper's own design.

    python benchmarks/reproduce.py hybrid [--samples 256] [--verify 1000] [--psqat 2048]
                                          [--limit 5000] [--budget 1.0]

On targets/hybrid.hw (128x128 2T2R ReRAM, ISAAC's components: one array technology for all),
the CIFAR-10 ResNet-20 trained on the training split (`MODEL`; models/README.md) is mapped as
five families of designs:

- `isaac`: ISAAC's dataflow on every layer (bit-serial inputs, 2-bit slices, an 8-bit unit-step
  SAR per 128 columns): the target's default and the reference of every ratio;
- `raella`: RAELLA's recipe on every layer (Center+Offset with 4-bit centers, adaptive slicing,
  speculative 3-3-2 inputs into a 7-bit unit-step SAR);
- `stox`: StoX-Net's inhomogeneous sampling (an MTJ per column, 16 samples in the first layer
  and 4 in the others, 4-bit input streams), calibrated, and with `--psqat N` fine-tuned
  through its sampled datapath (one epoch of N training-split images, search/psqat.py);
- `xpert`: XPert's choice, per layer a full-scale SAR or Flash ADC of 4-8 bits, found by the
  sensitivity search (`explore`) on that family alone, then its column sharing per layer
  (XPert searches sharing too);
- `hybrid`: the sensitivity search (search/sensitivity.py `explore`) over the whole menu,
  from the baseline, from each paper's design and from the uniform designs cheaper than the
  best found, then its column sharing per layer.
  RAELLA's, StoX-Net's and ISAAC's designs keep their own sharing (128, 1, 128).

Accuracy is measured bit-accurately on `--samples` validation images (training images
45,000-49,999, never trained on) for the single-layer designs and on `--verify` of them (default
`--samples`) for the composed and the papers' designs, within `--budget` points of the
baseline, then on the first `--limit` test images for each family's design. With `--psqat N`
every verified design with MTJ layers (the stox family's, and composed ones) is measured after
that fine-tune, on its fine-tuned model (cached in `--out/psqat`; the replay names it); the
single-layer measurements stay untuned, which bounds an MTJ layer's tuned drop from above.
Every evaluation is kept in `--out/evaluations-DIGEST.json` (one file per network, target,
validation data and results version: JsonStore.named_by), keyed by pipeline, so a stopped run
resumes where it stopped.
Writes the markdown table, the per-layer choices of the hybrid with each layer's measured
sensitivity, and `pareto.png` (EDAP against validation accuracy, every measured design).
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from formats import percent  # noqa: E402

from imcc.frontend.datasets import Dataset  # noqa: E402
from imcc.frontend.hw import load_target  # noqa: E402
from imcc.passes.pipeline import DEFAULT_PIPELINE  # noqa: E402
from imcc.search.evaluate import Evaluator, Problem  # noqa: E402
from imcc.search.evaluations import JsonStore  # noqa: E402
from imcc.search.mechanisms import menu  # noqa: E402
from imcc.search.psqat import PsQat  # noqa: E402
from imcc.search.sensitivity import (  # noqa: E402
    Measured,
    Sensitivity,
    best,
    evaluated,
    explore,
    measure,
    tune_sharing,
)
from imcc.search.space import build_space  # noqa: E402

MODEL = ROOT / "models" / "resnet20_split.onnx"
"""He et al.'s ResNet-20 trained on training images 0-44,999 only (train_cifar --arch resnet20):
the pretrained weights of models/resnet20_cifar10.onnx saw the validation images."""
TARGET = "hybrid"
FAMILIES = ("isaac", "raella", "stox", "xpert", "hybrid")
STOX_SAMPLES = (16, 4)
"""StoX-Net's inhomogeneous sampling: 16 samples in the first layer, 4 in the others."""
RAELLA = "sar:7b+co+spec"
TRAIN_SPLIT = 45000
"""The training split: CIFAR-10 training images 0-44,999 (45,000-49,999 validate)."""
"""RAELLA's recipe as a hybrid mechanism (its 7-bit ADCs)."""


def restricted(table: Sensitivity, families: Sequence[str]) -> Sensitivity:
    """Return the part of a sensitivity table whose mechanisms belong to `families` (the
    baseline always)."""
    kept = tuple(m for i, m in enumerate(table.menu) if i == 0 or m.family in families)
    names = {m.name for m in kept}
    return Sensitivity(
        kept,
        table.baseline,
        {k: v for k, v in table.single.items() if k[1] in names},
        table.reference,
    )


def family_designs(
    evaluator: Evaluator,
    space: Any,
    table: Sensitivity,
    budget: float,
    verifier: Evaluator | None = None,
) -> dict[str, Measured]:
    """Return each family's design (module docstring), measured on the validation subset:
    the `verifier`'s (a larger one, `table.reference` measured by it) when given."""
    check = verifier or evaluator
    by_name = {m.name: m for m in table.menu}
    layers = len(space.layers)
    mtj = [m for m in table.menu if m.family == "stox"]
    first, rest = (next(m for m in mtj if m.name.endswith(f":{count}x")) for count in STOX_SAMPLES)
    designs = {
        "isaac": table.verified_baseline,
        "raella": evaluated(check, space, [by_name[RAELLA]] * layers),
        "stox": evaluated(check, space, [first] + [rest] * (layers - 1)),
    }
    xpert = restricted(table, ("xpert",))
    found = best(xpert, explore(evaluator, space, xpert, budget, verifier=verifier), budget)
    designs["xpert"] = tune_sharing(check, space, xpert, found)  # XPert searches sharing
    # the hybrid's space holds every paper's design: search from the baseline, from each of
    # them and from the uniform designs, and keep the best within the budget
    papers = [design for family, design in designs.items() if family != "isaac"]
    found = explore(evaluator, space, table, budget, origins=papers, verifier=verifier)
    designs["hybrid"] = tune_sharing(check, space, table, best(table, found, budget))
    return designs


def test_accuracy(evaluator: Evaluator, program_pipeline: str, data: Dataset) -> float:
    """Return a design's bit-accurate accuracy on a test data set."""
    from imcc.simulation import simulate

    graph = evaluator.compile(program_pipeline)
    return simulate(graph, evaluator.problem.target, data, progress=True).accuracy


def hybrid(
    samples: int,
    limit: int,
    budget_points: float,
    out: Path,
    *,
    model: Path = MODEL,
    validation: str | None = None,
    test: str | None = None,
    mechanisms: Sequence[str] | None = None,
    verify: int | None = None,
    psqat: int = 0,
    training: str | None = None,
    train: int | None = TRAIN_SPLIT,
) -> dict:
    """Run the comparison (module docstring); return what the markdown and JSON show.
    `model`, `validation` and `test` (data specs) default to the CIFAR-10 ones; `mechanisms`
    restricts the menu (names; the baseline, RAELLA's and StoX-Net's must stay); `verify`
    validation images (default `samples`) verify the composed and the papers' designs;
    `psqat` > 0 fine-tunes every verified design with MTJ layers on that many images of
    `training` (its first `train`; default the CIFAR-10 training split) first
    (search/psqat.py)."""
    from tqdm import tqdm

    from imcc.frontend.datasets import load_dataset
    from tests.onnx_models import CIFAR10_IMAGES, CIFAR10_TRAIN

    if not model.is_file():
        raise SystemExit(
            f"{model.name} is missing: python models/train_cifar.py --arch resnet20 "
            "--data cifar10:cifar10_train.npz --epochs 30 --autocast bf16 "
            f"--state runs/resnet20/state.pt --out models/{MODEL.name}"
        )
    target = load_target(TARGET)
    validation = validation or f"cifar10:{CIFAR10_TRAIN},from=45000"
    test = test or f"cifar10:{CIFAR10_IMAGES}"
    problem = Problem.load(
        model,
        target,
        validation,
        search_samples=samples,
        probe_samples=samples,
        check_samples=samples,
    )
    identity = {
        "weights": hashlib.sha256(Path(model).read_bytes()).hexdigest(),
        "target": hashlib.sha256(Path(target.source).read_bytes()).hexdigest(),
        "data": validation,
    }
    store = JsonStore.named_by(out, "evaluations", identity)
    tuning = None
    if psqat:
        tuning = PsQat(
            training or f"cifar10:{CIFAR10_TRAIN}", images=psqat, train=train, folder=out / "psqat"
        )
    evaluator = Evaluator(problem, store=store, psqat=tuning)
    space = build_space(problem.graph, target)
    offered = tuple(m for m in menu(target) if mechanisms is None or m.name in mechanisms)
    total = 1 + len(space.layers) * (len(offered) - 1)
    with tqdm(total=total, desc="sensitivity") as bar:
        table = measure(evaluator, space, offered, report=lambda _: bar.update())
    verifier = None
    if verify is not None and verify != samples:
        larger = Problem.load(
            model,
            target,
            validation,
            search_samples=verify,
            probe_samples=verify,
            check_samples=verify,
        )
        verifier = Evaluator(larger, store=store, psqat=tuning)
        table.reference = evaluated(verifier, space, [offered[0]] * len(space.layers))
    family_of = {m.name: m.family for m in offered}
    budget = budget_points / 100
    designs = family_designs(evaluator, space, table, budget, verifier)
    base = designs["isaac"].metrics
    test_data = load_dataset(test, limit) if limit else None
    rows = []
    for family in FAMILIES:
        design = designs[family]
        metrics = design.metrics
        rows.append(
            {
                "family": family,
                "mechanisms": design.mechanisms,
                "pipeline": design.pipeline,
                "replay": f"{DEFAULT_PIPELINE},{design.pipeline}",
                "finetuned": design.finetuned,
                "metrics": None if metrics is None else metrics.to_dict(),
                "edap_vs_isaac": None if metrics is None else base.edap / metrics.edap,
                "validation": design.accuracy,
                "test": None
                if test_data is None
                else test_accuracy(
                    (verifier or evaluator).for_design(design.pipeline), design.pipeline, test_data
                ),
            }
        )
    layers = [
        {
            "layer": space.layers[index],
            "chosen": designs["hybrid"].mechanisms[index],
            "drops": {m.name: table.drop(index, m.name) for m in offered},
        }
        for index in range(len(space.layers))
    ]
    result = {
        "model": model.name,
        "target": TARGET,
        "validation_samples": samples,
        "verification_samples": verify or samples,
        "psqat_images": psqat,
        "validation": _label(validation),
        "test_images": limit,
        "budget_points": budget_points,
        "families": rows,
        "layers": layers,
        "points": [
            {"family": family_of[name], "mechanism": name, "layer": layer, **_point(found)}
            for (layer, name), found in table.single.items()
        ],
    }
    plot(result, out / "pareto.png")
    return result


def _label(spec: str) -> str:
    """Return a data spec without its file's folder (`cifar10:cifar10_train.npz,from=45000`)."""
    kind, _, rest = spec.partition(":")
    if not rest:
        return spec
    path, comma, options = rest.partition(",")
    return f"{kind}:{Path(path).name}{comma}{options}"


def _point(found: Measured) -> dict:
    return {
        "edap": None if found.metrics is None else found.metrics.edap,
        "validation": found.accuracy,
    }


def plot(result: dict, path: Path) -> None:
    """Write EDAP against validation accuracy: every single-layer design by family, and each
    family's design."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "isaac": "black",
        "raella": "tab:blue",
        "stox": "tab:red",
        "xpert": "tab:green",
        "hybrid": "tab:purple",
        "sense-amp": "tab:gray",
    }
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for point in result["points"]:
        if point["edap"] and point["validation"] is not None:
            axes.scatter(
                100 * point["validation"],
                point["edap"],
                s=8,
                alpha=0.35,
                color=colours.get(point["family"], "gray"),
            )
    designs: dict[tuple[float, float], list[str]] = {}  # families that found the same design
    for row in result["families"]:
        if row["metrics"] and row["validation"] is not None:
            at = (100 * row["validation"], row["metrics"]["edap"])
            designs.setdefault(at, []).append(row["family"])
    for (accuracy, edap), families in designs.items():
        axes.scatter(
            accuracy,
            edap,
            s=90 + 60 * (len(families) - 1),  # a shared star is larger and named by all
            marker="*",
            color=colours[families[-1]],
            label=" = ".join(families),
            edgecolors="black",
        )
    axes.set_yscale("log")
    axes.set_xlabel(
        f"validation accuracy, % (dots: {result['validation_samples']} images, "
        f"designs: {result['verification_samples']})"
    )
    axes.set_ylabel("EDAP (J·s·mm²)")
    axes.set_title(
        f"{result['model']} on {result['target']}: one layer changed (dots), designs (*)"
    )
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def markdown(result: dict) -> str:
    """Return the comparison table and the hybrid's per-layer choices as markdown."""
    lines = [
        f"## The hybrid chip: {result['model']} on {result['target']}",
        "",
        f"Validation: the first {result['validation_samples']} images of "
        f"`{result['validation']}` for the single-layer designs, the first "
        f"{result['verification_samples']} for the designs; "
        f"test: the first {result['test_images']} test images; budget "
        f"{result['budget_points']} points below the isaac design.",
        "",
        "| family | mechanisms per layer | energy | latency | area | EDAP | EDAP x lower than "
        "isaac | validation | test |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["families"]:
        m = row["metrics"]
        mix = ", ".join(f"{n} x{c}" for n, c in Counter(row["mechanisms"]).items())
        cost = (
            f"{m['energy_j'] * 1e6:.2f} uJ | {m['latency_s'] * 1e6:.1f} us | "
            f"{m['area_mm2']:.3f} mm2 | {m['edap']:.3e} | {row['edap_vs_isaac']:.2f}"
            if m
            else "| | | |"
        )
        lines.append(
            f"| {row['family']} | {mix} | {cost} | {percent(row['validation'], '')} | "
            f"{percent(row['test'], '')} |"
        )
    lines += [
        "",
        "The hybrid's choice per layer, and each mechanism's measured accuracy drop "
        "when that layer alone uses it (points):",
        "",
    ]
    names = list(result["layers"][0]["drops"]) if result["layers"] else []
    lines.append("| layer | chosen | " + " | ".join(names) + " |")
    lines.append("|---|---|" + "---|" * len(names))
    for layer in result["layers"]:
        drops = ["illegal" if d is None else f"{100 * d:.1f}" for d in layer["drops"].values()]
        lines.append(f"| {layer['layer']} | {layer['chosen']} | " + " | ".join(drops) + " |")
    winner = next(r for r in result["families"] if r["family"] == "hybrid")
    lines += [
        "",
        "Replay the hybrid design:",
        "",
        "```sh",
        f"imcc compile {winner['finetuned'] or 'models/' + result['model']} "
        f"--target {result['target']} "
        f"--passes '{winner['replay']}'",
        "```",
        "",
    ]
    if not math.isfinite(winner["edap_vs_isaac"] or math.nan):
        lines.append("(the hybrid search found no design)")
    return "\n".join(lines) + "\n"
