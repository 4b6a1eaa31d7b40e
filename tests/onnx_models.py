"""Where the tests find ONNX models, the inputs those models were checked with, and a cache.

- `onnx` wheel test data (pinned onnx version): `light/` (nine ImageNet architectures whose
  weights come from ConstantOfShape nodes) and `pytorch-converted/` (opset-6 layer tests).
- Pretrained MNIST models fetched by `scripts/fetch_test_models.sh` into `$IMCC_TEST_MODELS`
  (default `<repo>/.cache/models`): the ONNX zoo `mnist-conv/` (from the qonnx 1.0.0 wheel, also
  found in an installed qonnx) and `lenet5/lenet5.onnx` (advertorch 0.2.3 LeNet5).

Imported graphs are cached for the whole test session: the light models take seconds to fold.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from imcc.ir.graph import Graph

REPO = Path(__file__).resolve().parent.parent
ONNX_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
LIGHT_DIR = ONNX_DATA / "light"
PYTORCH_CONVERTED_DIR = ONNX_DATA / "pytorch-converted"
LIGHT_MODELS = sorted(p.stem for p in LIGHT_DIR.glob("light_*.onnx"))
PYTORCH_PREFIXES = (
    "Conv",
    "BatchNorm",
    "AvgPool",
    "MaxPool",
    "Linear",
    "ReLU",
    "ZeroPad2d",
    "ConstantPad2d",
    "Softmax",
    "Sigmoid",
    "Tanh",
    "LeakyReLU",
)
FETCH_HINT = "run scripts/fetch_test_models.sh (or set IMCC_TEST_MODELS)"


def missing_model(what: str) -> None:
    """Skip a test whose model is not fetched; under CI (CI set) fail instead, so that a
    missing install step cannot pass silently."""
    message = f"{what} not fetched: {FETCH_HINT}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def pytorch_converted_tests() -> list[str]:
    """Return the pytorch-converted test folders in scope (not ConvTranspose)."""
    names = []
    for path in sorted(PYTORCH_CONVERTED_DIR.iterdir()):
        op = path.name.removeprefix("test_")
        if op.startswith(PYTORCH_PREFIXES) and not op.startswith("ConvTranspose"):
            names.append(path.name)
    return names


def models_dir() -> Path:
    """Return the folder the fetch script fills."""
    return Path(os.environ.get("IMCC_TEST_MODELS", REPO / ".cache" / "models"))


def mnist_conv_dir() -> Path | None:
    """Return the ONNX zoo mnist-conv folder (cache, else an installed qonnx), or None."""
    cached = models_dir() / "mnist-conv"
    if (cached / "model.onnx").is_file():
        return cached
    spec = importlib.util.find_spec("qonnx")  # locates the package without importing it
    if spec is not None and spec.origin:
        installed = Path(spec.origin).parent / "data" / "onnx" / "mnist-conv"
        if (installed / "model.onnx").is_file():
            return installed
    return None


def lenet5_onnx() -> Path | None:
    """Return the exported LeNet5 model, or None when it has not been fetched."""
    path = models_dir() / "lenet5" / "lenet5.onnx"
    return path if path.is_file() else None


def cifar_resnet(depth: int) -> Path | None:
    """Return the exported CIFAR-10 ResNet-20/56, or None when it has not been fetched."""
    path = models_dir() / "cifar10" / f"resnet{depth}.onnx"
    return path if path.is_file() else None


def mnist_dir() -> Path | None:
    """Return the folder of the MNIST IDX files, or None when they have not been fetched."""
    path = models_dir() / "mnist"
    return path if (path / "t10k-images-idx3-ubyte").is_file() else None


def fashion_mnist_dir() -> Path | None:
    """Return the folder of the Fashion-MNIST IDX files (gzipped, from Debian's
    dataset-fashion-mnist), or None when they have not been fetched."""
    path = models_dir() / "fashion-mnist"
    return path if (path / "t10k-images-idx3-ubyte.gz").is_file() else None


CIFAR10_IMAGES = REPO.parent / "shared" / "data" / "cifar10" / "cifar10_test_first5000.npz"
CIFAR10_TRAIN = CIFAR10_IMAGES.with_name("cifar10_train.npz")
"""The 50,000 CIFAR-10 training images (images 0-44,999 train, 45,000-49,999 validate)."""


def lenet5_weights() -> Path | None:
    """Return the advertorch LeNet5 state dict, or None when it has not been fetched."""
    path = models_dir() / "lenet5" / "mnist_lenet5_clntrained.pt"
    return path if path.is_file() else None


def light_path(name: str) -> Path:
    """Return the model file of a light model."""
    return LIGHT_DIR / f"{name}.onnx"


def light_input(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Return the input the shipped `*_output_0.pb` was computed from.

    The light models ship no input: onnx's backend test runner feeds each non-initializer input
    `arange(n).reshape(shape) / n` in float32 (`generate_dummy_data(..., random=False)`).
    """
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
        n = int(np.prod(shape))
        feeds[value.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    return feeds


def load_tensor(path: Path) -> np.ndarray:
    """Read a serialized TensorProto (`input_0.pb`, `output_0.pb`)."""
    return numpy_helper.to_array(onnx.load_tensor(str(path)))


def relative_error(got: np.ndarray, reference: np.ndarray) -> float:
    """Return max|got - reference| / max(max|reference|, 1e-6) (0 for two empty arrays)."""
    got, reference = np.asarray(got, np.float64), np.asarray(reference, np.float64)
    if got.shape != reference.shape:
        raise AssertionError(f"shape {got.shape} differs from the reference {reference.shape}")
    if reference.size == 0:
        return 0.0
    return float(np.max(np.abs(got - reference)) / max(np.max(np.abs(reference)), 1e-6))


@functools.cache
def imported(path: str, batch: int = 1) -> Graph:
    """Import a model once per test session."""
    from imcc.frontend.onnx import import_onnx

    return import_onnx(path, batch=batch)
