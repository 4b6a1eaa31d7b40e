#!/usr/bin/env bash
# Build imcc's wheel, install it into a fresh virtual environment outside the checkout, and run
# the main commands from there: compile (an ADC and an MTJ target), simulate, finetune with no
# epochs, and a two-trial search. Proves the wheel carries every module and data file it needs.
# Usage: scripts/wheel_check.sh [PYTHON]   (default python3; CI runs it after `make test`)
set -euo pipefail

python="${1:-python3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$python" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip install -q)
"${pip[@]}" --upgrade pip
"${pip[@]}" torch==2.13.0  # the CPU build on local disk (an open range pulls a CUDA build)
rm -rf "$root/build"  # stale modules in setuptools' build/lib would enter the wheel
"$work/venv/bin/python" -m pip wheel -q --no-deps -w "$work/dist" "$root"
"${pip[@]}" "$work"/dist/imcc-*.whl

cd "$work"  # nothing of the checkout is importable from here
imcc="$work/venv/bin/imcc"
set -x
"$work/venv/bin/python" -c "import imcc, sys; assert '$root' not in imcc.__file__, imcc.__file__"
"$imcc" compile digits-cnn --target isaac -o isaac.imcir
"$imcc" compile digits-cnn --target sotmtj -o sotmtj.imcir
"$imcc" simulate isaac.imcir --data digits --limit 50
"$imcc" finetune digits-cnn --target sotmtj --data digits --epochs 0 --train 64 --holdout 32 \
    -o tuned.onnx
"$imcc" search digits-cnn --target isaac --data digits --trials 2 --limit 16 --probe 8 \
    --check 16 --random-trials 0 --out search
echo "wheel check: passed"
