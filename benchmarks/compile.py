"""Compile-time benchmark: import + verify + print light_resnet50, as a ratio to creating an
onnxruntime InferenceSession for the same file, both measured in this process.

    python benchmarks/compile.py [--repeat 3] [--model light_resnet50]

Prints the best-of-N time of each and the ratio (imcc / onnxruntime); lower is better.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import onnx
import onnxruntime as ort

from imcc.frontend.onnx import import_onnx
from imcc.ir.printer import print_graph
from imcc.ir.verifier import verify

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def best_of(repeat: int, fn) -> float:
    """Return the shortest wall time of `repeat` calls of fn."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", default="light_resnet50")
    args = parser.parse_args()
    path = LIGHT / f"{args.model}.onnx"

    def imcc_compile() -> None:
        graph = import_onnx(path)
        verify(graph)
        print_graph(graph)

    def ort_session() -> None:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    ours = best_of(args.repeat, imcc_compile)
    theirs = best_of(args.repeat, ort_session)
    print(f"model: {args.model}")
    print(f"imcc import+verify+print: {ours:.3f} s")
    print(f"onnxruntime InferenceSession: {theirs:.3f} s")
    print(f"ratio imcc / onnxruntime: {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
