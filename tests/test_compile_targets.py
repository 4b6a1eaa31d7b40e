"""Every light_* model, the MNIST models and the example compile for every built-in target:
the mapped program verifies and round-trips, and its report has the design.md keys with
breakdowns that add up to the totals."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest

from imcc.cli import main
from imcc.costmodel import estimate
from imcc.driver import MAPPING_PIPELINE
from imcc.examples import example_path
from imcc.frontend.hw import load_target
from imcc.frontend.onnx import import_onnx
from imcc.ir.io import parse_program
from imcc.ir.printer import print_graph
from imcc.passes.context import Context
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline
from imcc.targets import BUILTIN_TARGETS
from tests.onnx_models import LIGHT_DIR, LIGHT_MODELS, lenet5_onnx, missing_model, mnist_conv_dir

REPORT_KEYS = {
    "energy_j",
    "latency_s",
    "area_mm2",
    "edap",
    "tops_per_w",
    "tops_per_mm2",
    "macs",
    "energy_breakdown_j",
    "area_breakdown_mm2",
    "layers",
}
AFTER_QUANTIZE = MAPPING_PIPELINE.replace("quantize,", "")


@functools.cache
def quantized(model: str):
    """Import, clean up and quantize a light model once (one seeded calibration sample)."""
    graph = import_onnx(LIGHT_DIR / f"{model}.onnx")
    ctx = Context(seed=0)
    pipeline = (
        f"{DEFAULT_PIPELINE},quantize{{weight_bits=8 input_bits=8 method=minmax "
        f"percentile=99.99 samples=1}}"
    )
    images = np.random.default_rng(0).random((1, *graph.inputs[0].type.shape[1:]), dtype=np.float32)
    ctx = Context(options={"calibration": images})
    return PassManager(parse_pipeline(pipeline)).run(graph, ctx)


def check_report(record: dict) -> None:
    assert REPORT_KEYS <= set(record)
    assert math.isclose(
        sum(record["energy_breakdown_j"].values()), record["energy_j"], rel_tol=1e-9
    )
    assert math.isclose(
        sum(record["area_breakdown_mm2"].values()), record["area_mm2"], rel_tol=1e-9
    )
    assert math.isclose(
        record["edap"], record["energy_j"] * record["latency_s"] * record["area_mm2"], rel_tol=1e-9
    )
    assert record["macs"] == sum(layer["macs"] for layer in record["layers"]) > 0
    assert record["energy_j"] > 0 and record["latency_s"] > 0 and record["area_mm2"] > 0


@pytest.mark.parametrize("target", BUILTIN_TARGETS)
@pytest.mark.parametrize("model", LIGHT_MODELS)
def test_light_model_maps_on_every_target(model, target):
    hardware = load_target(target)
    graph = quantized(model)
    mapped = PassManager(parse_pipeline(AFTER_QUANTIZE)).run(graph, Context(target=hardware))
    assert print_graph(parse_program(print_graph(mapped))) == print_graph(mapped)
    check_report(estimate(mapped, hardware).to_dict())


def _mnist_models():
    models = [("digits-cnn", str(example_path("digits-cnn")))]
    folder, lenet = mnist_conv_dir(), lenet5_onnx()
    models.append(("mnist-conv", str(folder / "model.onnx") if folder else None))
    models.append(("lenet5", str(lenet) if lenet else None))
    return models


@pytest.mark.parametrize("target", BUILTIN_TARGETS)
@pytest.mark.parametrize(("name", "path"), _mnist_models(), ids=lambda v: str(v))
def test_cli_compile_writes_the_report(name, path, target, tmp_path, capsys):
    if path is None:
        missing_model(name)
    report = tmp_path / "r.json"
    code = main(
        [
            "compile",
            path,
            "--target",
            target,
            "--report",
            str(report),
            "-o",
            str(tmp_path / "p.imcir"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"cost report: target {target}")
    record = json.loads(report.read_text())
    check_report(record)
    assert record["target"] == target
    assert main(["cost", str(tmp_path / "p.imcir"), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["energy_j"] == record["energy_j"] and again["edap"] == record["edap"]


def test_the_stox_target_compiles_stox_nets_design_point_with_no_flag():
    """`imcc compile MODEL --target stox` maps StoX-Net's design point (ICRC 2024 and its public
    release): 4-bit weights in one slice, 4-bit inputs in one stream, one MTJ per column with
    16 samples in the first layer and 4 in the others, the normalisation calibrated, the
    classifier on the 8-bit ADC."""
    from pathlib import Path

    import numpy as np

    from imcc import driver
    from imcc.frontend.hw import load_target
    from imcc.passes.layers import crossbar_layers

    model = Path(__file__).resolve().parents[1] / "models" / "resnet20_cifar10.onnx"
    target = load_target("stox")
    images = np.random.default_rng(0).random((8, 3, 32, 32), dtype=np.float32)
    layers = crossbar_layers(driver.compile(model, target, calibration=images))
    assert len(layers) == 20
    for index, node in enumerate(layers):
        a = node.attributes
        assert a["weights"].slices == (3,)  # |w| <= 7 on each device of the pair
        assert (a["input"].bits, a["input"].slices) == (4, (4,))
        if index == len(layers) - 1:  # the classifier on the 8-bit ADC
            assert (a["converter"].name, a["converter"].bits) == ("adc8", 8)
            assert a["column_share"] == 128 and "ps_scale" not in a
            continue
        assert a["converter"].kind == "mtj" and a["column_share"] == 1
        assert a["converter"].samples == (16 if index == 0 else 4)
        assert len(a["ps_scale"]) == len(a["ps_offset"]) > 0  # calibrate-mtj ran
