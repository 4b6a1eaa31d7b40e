"""A short PS-quantization-aware fine-tune of a design with MTJ converters before its accuracy
counts (StoX-Net's premise: sampled partial sums need a network trained through them).

A searched design whose compiled program has MTJ layers is fine-tuned through its own mapped
datapath (`imcc finetune` with the design's pipeline: sampled MTJ forward, straight-through
backward, the MTJ normalisation learned) on the training images of `PsQat.data`, and its
accuracy and costs are then those of the exported model compiled by the same pipeline (a
re-compile re-measures the input ranges and re-chooses data-aware slicing, as `imcc compile`
of that model does). The fine-tuned model is cached per design (model, pipeline and settings)
in `PsQat.folder`, so a repeated design is not trained again and its replay names that file.
Designs without MTJ layers are evaluated as they are, and so are single-layer measurements
(`only`): a layer's untuned drop bounds its tuned one from above, so the composition stays on
the safe side and the verified design gets the fine-tune.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from imcc import RESULTS_VERSION
from imcc.errors import UserError
from imcc.ir.graph import Graph

LEARNING_RATE = 0.003
"""Peak learning rate: the one models/README.md's StoX-Net PS-QAT of ResNet-20 used (higher
rates threw the pretrained network out of its basin through the sampled forward)."""
BATCH = 64
WEIGHT_DECAY = 5e-4
"""The CIFAR-10 recipe's weight decay (He et al., 2016), as in that PS-QAT."""


@dataclass(frozen=True)
class PsQat:
    """How a design with MTJ layers is fine-tuned: `data` (labelled training images, the first
    `train` of which train; default all but the last), `images` per epoch through the sampled
    datapath (a fresh random subset each epoch), `epochs`, the seed, and where the fine-tuned
    models are kept."""

    data: str
    images: int = 2048
    epochs: int = 1
    train: int | None = None
    seed: int = 0
    folder: Path = Path("psqat")

    def __post_init__(self) -> None:
        if self.images < 1 or self.epochs < 1:
            raise UserError(
                f"PS-QAT needs at least one image and one epoch, not {self.images} and "
                f"{self.epochs}",
                hint="e.g. --psqat 2048 (images of one epoch through the sampled datapath)",
            )

    @property
    def digest(self) -> str:
        """The settings' part of every cache key (the folder is not one), with the results
        version (`imcc.RESULTS_VERSION`): a model fine-tuned through other arithmetic is
        trained again."""
        settings = {k: v for k, v in asdict(self).items() if k != "folder"}
        settings["results_version"] = RESULTS_VERSION
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]

    def finetuned(self, model: Path, target: str, pipeline: str) -> Path:
        """Return the model fine-tuned for the mapping `pipeline` (a search's: without the
        clean-up) on `target` (a built-in name or .hw file), training it when no earlier run
        left it in the folder."""
        from imcc.finetune.session import FinetuneConfig, run_finetune
        from imcc.finetune.train import TrainConfig
        from imcc.passes.pipeline import DEFAULT_PIPELINE

        weights = hashlib.sha256(model.read_bytes()).hexdigest()
        key = f"{weights}|{target}|{pipeline}|{self.digest}"
        folder = self.folder / hashlib.sha256(key.encode()).hexdigest()[:16]
        done = folder / "model.onnx"
        if done.is_file():
            return done
        work = folder / "partial"  # a stop mid-training leaves no model behind
        shutil.rmtree(work, ignore_errors=True)
        config = FinetuneConfig(
            model=str(model),
            target=target,
            data=self.data,
            output=str(work / "model.onnx"),
            train=TrainConfig(
                epochs=self.epochs,
                lr=LEARNING_RATE,
                batch=BATCH,
                seed=self.seed,
                weight_decay=WEIGHT_DECAY,
                datapath_images=self.images,
                augment=True,
            ),
            train_images=self.train,
            holdout=1,  # the design's accuracy is measured by the search, on its own subset
            passes=f"{DEFAULT_PIPELINE},{pipeline}",  # the search's clean-up, then the design
        )
        run_finetune(config, log=lambda _: None)
        (work / "model.onnx").replace(done)
        (folder / "design.json").write_text(
            json.dumps({"model": str(model), "target": target, "pipeline": pipeline,
                        "psqat": {**asdict(self), "folder": str(self.folder)}}, indent=1)
            + "\n"
        )  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)
        return done


def has_mtj(program: Graph) -> bool:
    """Say whether a compiled program converts any crossbar layer with MTJs."""
    from imcc.finetune.export import mtj_layers

    return bool(mtj_layers(program))
