"""The compiler driver: one compile session (import, target attributes, pipeline, context with
calibration data, pass manager) for every caller, the default pipelines and the calibration data.

`compile` is what `imcc compile`, `imcc opt`, `imcc run`, `imcc finetune`, the search and the
benchmarks run; `float_reference` is the cleaned-up float graph `imcc simulate` compares with.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from imcc.errors import UserError
from imcc.examples import EXAMPLE_DATA, example_path
from imcc.frontend.datasets import load_dataset
from imcc.ir.graph import Graph
from imcc.passes.base import Pass
from imcc.passes.context import Context, Decisions
from imcc.passes.instruments import PassInstrument
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline
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


def import_model(path: str | Path, batch: int | None = None, *, explicit: bool = True) -> Graph:
    """Import an ONNX model; `batch` replaces a symbolic batch dimension, and one the user gave
    (`explicit`) must also match a fixed one, which it cannot change."""
    from imcc.frontend.onnx import import_onnx

    if not Path(path).exists():
        raise UserError(
            f"cannot read {path}: no such file",
            hint="give an .onnx file or a built-in example name (digits-cnn)",
        )
    graph = import_onnx(path) if batch is None else import_onnx(path, batch=batch)
    fixed = {value.type.shape[0] for value in graph.inputs if value.type.shape}
    if explicit and batch is not None and fixed != {batch}:
        raise UserError(
            f"{path} has a fixed batch of {', '.join(map(str, sorted(fixed)))}: --batch {batch} "
            "cannot change it",
            hint="drop --batch, or export the model with a symbolic batch dimension",
        )
    return graph


def pipeline_passes(
    passes: str | Sequence[Pass] | None,
    target: Target | None = None,
    label: str = "<pipeline>",
) -> list[Pass]:
    """Return the passes a compile runs: `passes` parsed (a string; `label` names it in error
    carets) or as given (a list), else `default_pipeline(target)`."""
    if passes is None:
        passes = default_pipeline(target)
    if isinstance(passes, str):
        return parse_pipeline(passes, label)
    return list(passes)


def context(
    target: Target | None = None,
    *,
    calibration: np.ndarray | None = None,
    seed: int = 0,
    decisions: Decisions | None = None,
    logger: logging.Logger | None = None,
) -> Context:
    """Return the Context a compile runs its passes under: the calibration images go to
    `options["calibration"]` (quantize, calibrate-mtj, profile-converters read them)."""
    return Context(
        target=target,
        seed=seed,
        options={} if calibration is None else {"calibration": calibration},
        logger=logger or logging.getLogger("imcc"),
        decisions=decisions if decisions is not None else Decisions(),
    )


def compile(
    model: str | Path | Graph,
    target: Target | None = None,
    *,
    passes: str | Sequence[Pass] | None = None,
    calibration: np.ndarray | None = None,
    seed: int = 0,
    target_spec: str | None = None,
    instruments: Sequence[PassInstrument] = (),
    verify_each: bool = True,
    reproducer: str | Path | None = None,
    decisions: Decisions | None = None,
    logger: logging.Logger | None = None,
    source: str | Path | None = None,
    label: str = "<pipeline>",
) -> Graph:
    """Import a model and run a pipeline on it; return the result.

    `model` is an ONNX file (imported with its own batch) or a graph already imported (or a
    program). The graph records `target_spec` as its `target` attribute (`imcc cost` and
    `imcc simulate` read it back) and, when mapped for a `target`, the resolved model file as
    `source` (the float reference of `imcc simulate`): `model` when it is a path, else
    `source`. The pipeline is `passes` (a string, `label` naming it in error carets, or a
    list of passes), else `default_pipeline(target)`. The passes run under `context(...)`
    with the pass manager's `instruments`, `verify_each` and `reproducer`; `decisions`
    collects the per-layer tables (`--stats`).
    """
    if isinstance(model, Graph):
        graph = model
    else:
        graph, source = import_model(model), model
    if target_spec is not None:
        graph = graph.replace(attributes={**graph.attributes, "target": target_spec})
    if target is not None and source is not None:
        graph = graph.replace(
            attributes={**graph.attributes, "source": str(Path(source).resolve())}
        )
    manager = PassManager(
        pipeline_passes(passes, target, label),
        instruments,
        verify_each=verify_each,
        reproducer=reproducer,
    )
    ctx = context(target, calibration=calibration, seed=seed, decisions=decisions, logger=logger)
    return manager.run(graph, ctx)


def float_reference(model: str | Path | Graph, seed: int = 0) -> Graph:
    """Return the source model imported and cleaned up by DEFAULT_PIPELINE: the float graph
    `imcc simulate` compares a mapped program with."""
    return compile(model, None, passes=DEFAULT_PIPELINE, seed=seed)


def fill_area(program: Graph, target: Target, area_mm2: float | None = None):
    """Return the cost report (costmodel.estimate) of a mapped program placed again to fill an
    area with copies of its slowest layers (`place{replicate=true tiles=N}`): the target's
    fixed chip when `area_mm2` is None, else as many tiles as fit in `area_mm2`, the budget
    shrinking until the chip with its copies fits (designs are compared at equal provisioned
    area this way). A network that alone needs more than `area_mm2` keeps one copy a layer."""
    from imcc.costmodel import estimate

    if area_mm2 is None:
        return estimate(compile(program, target, passes="place{replicate=true}"), target)
    own = estimate(program, target)
    tiles = int(area_mm2 // (own.area_mm2 / own.tiles))
    while tiles > own.tiles:
        option = f"place{{replicate=true tiles={tiles}}}"
        report = estimate(compile(program, target, passes=option), target)
        if report.area_mm2 <= area_mm2:
            return report
        tiles = min(tiles - 1, int(tiles * area_mm2 / report.area_mm2))
    return own
