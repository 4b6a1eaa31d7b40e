"""How well the NASWOT score ranks XPert's channel candidates by trained accuracy.

XPert (Moitra et al., DAC 2023) filters its phase-1 channel candidates by the NASWOT score
(Mellor et al., ICML 2021) of the untrained network instead of training them; this measures
what that proxy is worth on the same backbone. Candidates: `--candidates` VGG-16 backbones
(13 convs, models/vgg_cifar.py) whose per-layer widths are drawn (seeded, distinct) from
`--widths`, XPert's {64, 128, 256, 512} divided by 8 by default so that each trains in
minutes on a CPU. Each is scored as search/channels.py scores it (128 seeded training-split
images), then trained by models/train_cifar.py's recipe for `--epochs` epochs on the training
images (the first `--images` of 0-44,999) and its accuracy measured on the validation images
45,000-49,999. Reported: the
Spearman and Kendall rank correlations between score and accuracy (and Spearman's between
the parameter count and accuracy, the trivial proxy it should beat or match), a table, JSON,
and a scatter plot.

    python benchmarks/naswot.py [--candidates 10] [--epochs 2] [--images 15000]
        [--widths 8,16,32,64] [--data cifar10:FILE] [--threads 1] [--out out/naswot]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from imcc.models import train_cifar  # noqa: E402
from imcc.models.vgg_cifar import conv_widths  # noqa: E402
from imcc.search.channels import naswot_batch, network  # noqa: E402
from imcc.search.naswot import naswot_score  # noqa: E402
from tests.onnx_models import CIFAR10_TRAIN  # noqa: E402


def ranks(values: np.ndarray) -> np.ndarray:
    """Return 1-based ranks, ties given their mean rank."""
    order = np.argsort(values, kind="stable")
    result = np.empty(len(values))
    result[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        result[tied] = result[tied].mean()
    return result


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's correlation of the ranks."""
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def kendall(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b over all pairs."""
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da == db:
                concordant += 1
            else:
                discordant += 1
    pairs_a = concordant + discordant + ties_b
    pairs_b = concordant + discordant + ties_a
    return float((concordant - discordant) / np.sqrt(pairs_a * pairs_b))


def draw(count: int, widths: list[int], layers: int, seed: int) -> list[tuple[int, ...]]:
    """Return `count` distinct per-layer width vectors drawn uniformly (seeded)."""
    rng = np.random.default_rng(seed)
    found: list[tuple[int, ...]] = []
    while len(found) < count:
        candidate = tuple(int(w) for w in rng.choice(widths, layers))
        if candidate not in found:
            found.append(candidate)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--images", type=int, default=15_000, help="training images used (of 0-44,999)"
    )
    parser.add_argument("--widths", default="8,16,32,64")
    parser.add_argument("--data", default=f"cifar10:{CIFAR10_TRAIN}")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "naswot")
    args = parser.parse_args()
    if args.candidates < 3:
        parser.error("a rank correlation needs at least 3 candidates")
    if args.threads:
        torch.set_num_threads(args.threads)
    from tqdm import tqdm

    args.out.mkdir(parents=True, exist_ok=True)
    layers = len(conv_widths("vgg16"))
    candidates = draw(args.candidates, [int(w) for w in args.widths.split(",")], layers, args.seed)
    x, y, vx, vy = train_cifar.load(args.data)
    batch = torch.from_numpy(naswot_batch(x.numpy(), seed=args.seed))  # drawn from 0-44,999
    data = (x[: args.images], y[: args.images], vx, vy)
    cache = args.out / "candidates.json"
    done = json.loads(cache.read_text()) if cache.is_file() else {}
    rows = []
    for widths in tqdm(candidates, desc="candidates", unit="net"):
        key = "-".join(map(str, widths))
        budget = {"epochs": args.epochs, "images": len(data[0])}
        if key not in done or done[key]["budget"] != budget:
            model = network("vgg16", widths, args.seed)
            score = naswot_score(model, batch)
            start = time.perf_counter()
            run = train_cifar.train(model, data, epochs=args.epochs, seed=args.seed, progress=False)
            done[key] = {
                "widths": list(widths),
                "naswot": score,
                "parameters": sum(p.numel() for p in model.parameters()),
                "validation": max(entry["validation"] for entry in run.log),
                "budget": budget,
                "seconds": time.perf_counter() - start,
            }
            cache.write_text(json.dumps(done, indent=1))
        rows.append(done[key])
    score = np.array([r["naswot"] for r in rows])
    accuracy = np.array([r["validation"] for r in rows])
    parameters = np.array([r["parameters"] for r in rows], dtype=float)
    result = {
        "candidates": rows,
        "epochs": args.epochs,
        "images": len(data[0]),
        "spearman": spearman(score, accuracy),
        "kendall": kendall(score, accuracy),
        "spearman_parameters": spearman(parameters, accuracy),
    }
    (args.out / "naswot.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"NASWOT against accuracy after {args.epochs} epochs of {len(data[0]):,} training "
        f"images (accuracy on the validation images "
        f"45,000-49,999), {len(rows)} VGG-16 backbones with widths from {{{args.widths}}}",
        "",
        "| widths | parameters | NASWOT | validation | train s |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["naswot"]):
        lines.append(
            f"| {'-'.join(map(str, r['widths']))} | {r['parameters']:,} | {r['naswot']:.1f} "
            f"| {100 * r['validation']:.2f}% | {r['seconds']:.0f} |"
        )
    lines += [
        "",
        f"Spearman {result['spearman']:.3f}, Kendall {result['kendall']:.3f} "
        f"(parameter count: Spearman {result['spearman_parameters']:.3f})",
    ]
    text = "\n".join(lines) + "\n"
    (args.out / "naswot.md").write_text(text)
    print(text)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 4))
    axes.scatter(score, 100 * accuracy)
    axes.set_xlabel("NASWOT score (untrained, 128 images)")
    axes.set_ylabel(f"validation accuracy after {args.epochs} epochs (%)")
    axes.set_title(f"Spearman {result['spearman']:.2f}")
    figure.tight_layout()
    figure.savefig(args.out / "naswot.png", dpi=120)


if __name__ == "__main__":
    main()
