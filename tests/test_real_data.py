"""Accuracy on real data through imcc, a representative subset in CI (benchmarks/accuracy.py runs
the full sets): the pretrained CIFAR-10 ResNet-20 (models/resnet20_cifar10.onnx, exported by
models/cifar_resnet.py) on the shared CIFAR-10 test images, and the ONNX zoo MNIST CNN and
LeNet-5 on MNIST t10k: float (ideal backend), quantized (lossless crossbars) and mapped."""

from __future__ import annotations

from pathlib import Path

import pytest

from imcc import driver
from imcc.frontend.datasets import Dataset, load_dataset
from imcc.frontend.hw import load_target
from imcc.simulation import simulate
from imcc.targets import BUILTIN_TARGETS
from tests.onnx_models import CIFAR10_IMAGES, lenet5_onnx, missing_model, mnist_conv_dir, mnist_dir

RESNET20 = Path(__file__).resolve().parents[1] / "models" / "resnet20_cifar10.onnx"
CALIBRATION = 64


def run(
    model, data_spec: str, target: str, samples: int, pipeline: str | None = None, batch: int = 100
):
    """Compile `model` for `target` (calibrated on the first 64 samples) and simulate the next
    `samples` ones."""
    data = load_dataset(data_spec, samples + CALIBRATION)
    test = Dataset(data.name, data.images[CALIBRATION:], data.labels[CALIBRATION:])
    hardware = load_target(target)
    graph = driver.import_model(model)
    floating = driver.float_reference(graph)
    program = driver.compile(
        graph, hardware, passes=pipeline, calibration=data.images[:CALIBRATION]
    )
    return simulate(program, hardware, test, float_graph=floating, batch=min(samples, batch))


def cifar() -> str:
    if not CIFAR10_IMAGES.is_file():
        missing_model("CIFAR-10 test images")
    return f"cifar10:{CIFAR10_IMAGES}"


def mnist_models() -> list[tuple[str, Path | None, str]]:
    conv = mnist_conv_dir()
    return [
        ("mnist-conv", conv / "model.onnx" if conv else None, ",scale=255"),
        ("lenet5", lenet5_onnx(), ""),
    ]


def test_cifar10_resnet20_on_isaac_stays_within_one_point_of_float():
    report = run(RESNET20, cifar(), "isaac", 300)
    assert report.float_accuracy >= 0.88  # 91.48% on all 5,000 images
    assert report.accuracy >= report.float_accuracy - 0.01


def test_cifar10_resnet20_keeps_its_accuracy_on_raella_with_two_bit_slices():
    slices = 'tile-crossbar{rows=0 columns=0 slices=[2,2,2,2] encoding=""}'
    pipeline = driver.default_pipeline(load_target("raella")).replace("tile-crossbar", slices)
    report = run(RESNET20, cifar(), "raella", 200, pipeline=pipeline)
    assert report.quantized_accuracy >= report.float_accuracy - 0.03
    assert report.accuracy >= report.quantized_accuracy - 0.03


def test_mnist_cnn_on_isaac_stays_within_half_a_point_of_float():
    name, model, scale = mnist_models()[0]
    if model is None or mnist_dir() is None:
        missing_model(f"{name} or MNIST data")
    report = run(model, f"mnist:{mnist_dir()}{scale}", "isaac", 1000, batch=250)
    assert report.float_accuracy >= 0.97  # 98.91% on all 10,000 images
    assert report.accuracy >= report.float_accuracy - 0.005


@pytest.mark.parametrize("target", BUILTIN_TARGETS)
@pytest.mark.parametrize("which", ["mnist-conv", "lenet5", "resnet20"])
def test_simulate_runs_on_every_target(which, target):
    """A few real samples per target: the run completes and reports every layer; the loss of
    stochastic or low-resolution converters is measured (benchmarks/accuracy.py reports it)."""
    if which == "resnet20":
        model, spec = RESNET20, cifar()
    else:
        _, model, scale = next(m for m in mnist_models() if m[0] == which)
        if model is None or mnist_dir() is None:
            missing_model(f"{which} or MNIST data")
        spec = f"mnist:{mnist_dir()}{scale}"
    report = run(model, spec, target, 16)
    assert report.samples == 16 and report.layers
    assert report.quantized_accuracy >= report.float_accuracy - 0.2
    assert all(0.0 <= layer.saturation_rate <= 1.0 for layer in report.layers)
