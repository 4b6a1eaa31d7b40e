"""The compiler driver: the default pipelines and the calibration data a compile runs with."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imcc.examples import EXAMPLE_DATA, example_path
from imcc.frontend.datasets import load_dataset
from imcc.passes.pipeline import DEFAULT_PIPELINE
from imcc.target import Target

MAPPING_PIPELINE = "assign-input-precision,quantize,tile-crossbar,select-adc,share-columns,place"
"""The passes that map a float graph onto a target, after the target-independent clean-up."""

CALIBRATION_SAMPLES = 64


def default_pipeline(target: Target | None) -> str:
    """Return the pipeline `imcc compile` runs without `--passes`: clean-up, then mapping (the
    target's own `pipeline` when its .hw file gives one, else MAPPING_PIPELINE)."""
    if target is None:
        return DEFAULT_PIPELINE
    return f"{DEFAULT_PIPELINE},{target.pipeline or MAPPING_PIPELINE}"


def calibration_data(
    spec: str | None, model: str | Path, samples: int = CALIBRATION_SAMPLES
) -> tuple[np.ndarray | None, str]:
    """Return the calibration images for a compile and a phrase saying where they came from.

    `spec` is a data set (`--calib`, see frontend/datasets.py). Without one, a built-in example
    model calibrates on its own data; any other model on `quantize`'s seeded uniform inputs.
    """
    if spec is None:
        for name in EXAMPLE_DATA:
            example = example_path(name)
            if example is not None and Path(model).resolve() == example.resolve():
                spec = name
        if spec is None:
            return None, "seeded uniform [0, 1) inputs (no --calib given)"
    data = load_dataset(spec, samples)
    return data.images, f"{len(data.images)} samples of {spec}"
