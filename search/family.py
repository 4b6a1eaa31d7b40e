"""Channel depth for the co-search: a model family of per-stage width multipliers, each
candidate trained briefly on real data (a proxy budget) and cached.

A family is `ARCH:DATA:M1,M2,...` (e.g. `vgg:fashion-mnist:0.5,0.75,1`): the architectures of
models/fashion_cnn.py (`vgg`, `resnet20`: three stages of default widths 16/32/64) trained on
Fashion-MNIST or MNIST, every stage's width multiplied by one of the multipliers, so a family
of m multipliers holds m^3 networks. XPert (Moitra et al., DAC 2023) co-searches channel depth with
the peripherals: the `xpert` strategy's phase 1 takes the network too (search/run.py).

Proxy budget: each candidate trains `epochs` epochs of `images` training images (seeded SGD,
the reference models' recipe, models/fashion_cnn.py) and its float accuracy is measured on the
first `test_images` test images. A candidate trained before (same family, widths, budget and
seed) is read from the cache folder instead: `NAME.onnx` and `NAME.json`, its record.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from imcc.errors import UserError
from imcc.files import write_text

ARCHITECTURES = ("vgg", "resnet20")
DATA_SETS = ("fashion-mnist", "mnist")
STAGE_WIDTHS = (16, 32, 64)


@dataclass(frozen=True)
class ProxyBudget:
    """How briefly each candidate trains: epochs x images, and the test images it reports."""

    epochs: int = 1
    images: int = 6000
    test_images: int = 2000
    seed: int = 0

    def batch(self) -> int:
        """Return the training batch: the reference models' 128, smaller for tiny budgets so
        that an epoch still takes 16 steps of the one-cycle schedule."""
        return 128 if self.images >= 16 * 128 else max(1, self.images // 16)


@dataclass(frozen=True)
class NetworkFamily:
    """Networks of one architecture and data set whose stage widths take the multipliers."""

    arch: str
    data: str
    multipliers: tuple[float, ...]

    def candidates(self) -> list[tuple[int, int, int]]:
        """Return every candidate's stage widths, narrowest first."""
        options = [sorted({max(1, round(w * m)) for m in self.multipliers}) for w in STAGE_WIDTHS]
        return sorted(itertools.product(*options), key=lambda w: (sum(w), w))

    def widest(self) -> tuple[int, int, int]:
        """Return the stage widths of the widest candidate (the family's reference)."""
        return max(self.candidates(), key=lambda w: (sum(w), w))


def parse_family(text: str) -> NetworkFamily:
    """Parse `ARCH:DATA:M1,M2,...` (UserError with a hint when malformed)."""
    hint = (
        "e.g. --family vgg:fashion-mnist:0.5,0.75,1 (arch vgg or resnet20, data "
        "fashion-mnist or mnist, width multipliers)"
    )
    parts = text.split(":")
    if len(parts) != 3:
        raise UserError(f"--family {text!r} is not ARCH:DATA:MULTIPLIERS", hint=hint)
    arch, data, multipliers = parts
    if arch not in ARCHITECTURES or data not in DATA_SETS:
        raise UserError(f"--family {text!r}: unknown architecture or data set", hint=hint)
    try:
        values = tuple(float(m) for m in multipliers.split(","))
    except ValueError:
        raise UserError(f"--family {text!r}: multipliers must be numbers", hint=hint) from None
    if not values or any(not 0 < m <= 4 for m in values):
        raise UserError(f"--family {text!r}: multipliers must be in (0, 4]", hint=hint)
    return NetworkFamily(arch, data, tuple(sorted(set(values))))


@dataclass(frozen=True)
class Candidate:
    """One trained member of a family: stage widths, ONNX file, float accuracy on the test
    images of the proxy budget, parameters, training seconds (0 when read from the cache)."""

    widths: tuple[int, int, int]
    path: Path
    accuracy: float
    parameters: int
    seconds: float

    @property
    def label(self) -> str:
        """Return the candidate's name, e.g. `w8-16-32`."""
        return "w" + "-".join(str(w) for w in self.widths)

    def to_dict(self) -> dict:
        """Return the candidate as a JSON-ready object."""
        return {
            "widths": list(self.widths),
            "label": self.label,
            "model": str(self.path),
            "accuracy": self.accuracy,
            "parameters": self.parameters,
            "seconds": self.seconds,
        }


def candidate(
    family: NetworkFamily,
    widths: tuple[int, int, int],
    budget: ProxyBudget,
    cache: Path,
    data_dir: Path | None = None,
) -> Candidate:
    """Return a trained candidate: from the cache when it holds the same record, else trained
    on the family's data with the proxy budget, exported and recorded."""
    name = f"{family.arch}-{family.data}-w{'-'.join(map(str, widths))}"
    onnx_path, record_path = cache / f"{name}.onnx", cache / f"{name}.json"
    identity = {
        "arch": family.arch,
        "data": family.data,
        "widths": list(widths),
        "budget": asdict(budget),
    }
    if onnx_path.is_file() and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("identity") == identity:
            return Candidate(widths, onnx_path, record["accuracy"], record["parameters"], 0.0)
    import torch

    from imcc.models import fashion_cnn

    torch.manual_seed(budget.seed)
    folder = fashion_cnn.data_dir(family.data, data_dir)
    with contextlib.redirect_stdout(io.StringIO()):  # the trainer's per-epoch lines
        x_train, y_train = fashion_cnn.load_split(folder, "train")
        x_test, y_test = fashion_cnn.load_split(folder, "t10k")
        model = fashion_cnn.build(family.arch, widths=list(widths))
        start = time.perf_counter()
        fashion_cnn.train(
            model,
            x_train,
            y_train,
            epochs=budget.epochs,
            per_epoch=budget.images,
            batch=budget.batch(),
            lr=0.1,
            seed=budget.seed,
            device=torch.device("cpu"),
        )
        seconds = time.perf_counter() - start
    accuracy = fashion_cnn.accuracy(
        model, x_test[: budget.test_images], y_test[: budget.test_images], torch.device("cpu")
    )
    parameters = sum(p.numel() for p in model.parameters())
    fashion_cnn.export(model, onnx_path)
    write_text(
        record_path,
        json.dumps(
            {
                "identity": identity,
                "accuracy": accuracy,
                "parameters": parameters,
                "seconds": seconds,
            },
            indent=1,
        ),
    )
    return Candidate(widths, onnx_path, accuracy, parameters, seconds)
