"""Accuracy on real data through imcc, a representative subset in CI (benchmarks/ runs the full
sets): the pretrained CIFAR-10 ResNet-20 on the shared test images, the ONNX zoo MNIST CNN and
LeNet-5 on MNIST t10k; float (ideal backend), quantized (lossless crossbars) and mapped."""

from __future__ import annotations

import pytest

from imcc.backend.simulate import simulate
from imcc.driver import default_pipeline
from imcc.frontend.datasets import load_dataset
from imcc.frontend.hw import load_target
from imcc.frontend.onnx import import_onnx
from imcc.passes.context import Context
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline
from tests.onnx_models import (
    CIFAR10_IMAGES,
    cifar_resnet,
    lenet5_onnx,
    missing_model,
    mnist_conv_dir,
    mnist_dir,
)


def run(model, data_spec: str, target: str, samples: int, calibration: int = 64,
        pipeline: str | None = None):
    data = load_dataset(data_spec, samples + calibration)
    calib, test = data.take(calibration), load_dataset(data_spec, samples + calibration)
    test = type(data)(data.name, data.images[calibration:], data.labels[calibration:])
    hardware = load_target(target)
    graph = import_onnx(model)
    floating = PassManager(parse_pipeline(DEFAULT_PIPELINE)).run(graph, Context())
    ctx = Context(target=hardware, options={"calibration": calib.images})
    program = PassManager(parse_pipeline(pipeline or default_pipeline(hardware))).run(graph, ctx)
    return simulate(program, hardware, test, float_graph=floating, batch=min(samples, 100))


def test_cifar10_resnet20_keeps_its_accuracy_on_raella_with_two_bit_slices():
    model = cifar_resnet(20)
    if model is None or not CIFAR10_IMAGES.is_file():
        missing_model("CIFAR-10 ResNet-20")
    slices = 'tile-crossbar{rows=0 columns=0 slices=[2,2,2,2] encoding=""}'
    pipeline = default_pipeline(load_target("raella")).replace("tile-crossbar", slices)
    report = run(model, f"cifar10:{CIFAR10_IMAGES}", "raella", 300, pipeline=pipeline)
    assert report.float_accuracy >= 0.88  # 91.48% on all 5,000 images
    assert report.quantized_accuracy >= report.float_accuracy - 0.03
    assert report.accuracy >= report.quantized_accuracy - 0.03


@pytest.mark.parametrize("which", ["mnist-conv", "lenet5"])
def test_mnist_models_on_mnist(which):
    folder = mnist_dir()
    model = (mnist_conv_dir() / "model.onnx" if mnist_conv_dir() else None) \
        if which == "mnist-conv" else lenet5_onnx()
    if folder is None or model is None:
        missing_model(f"{which} or MNIST data")
    scale = ",scale=255" if which == "mnist-conv" else ""  # the zoo model takes 0..255
    report = run(model, f"mnist:{folder}{scale}", "xpert", 300)
    assert report.float_accuracy >= 0.97  # 98.9% on all 10,000 images
    assert report.quantized_accuracy >= report.float_accuracy - 0.02
