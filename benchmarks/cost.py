"""Cost-model benchmark: layer evaluations per second of `estimate` on a mapped light_resnet50.

    python benchmarks/cost.py [--model light_resnet50] [--target isaac] [--seconds 2]

Maps the model with the mapping passes (`assign-input-precision,quantize,tile-crossbar,
select-adc,share-columns,place`) for the target (the built-in `isaac`, or an ISAAC-like target
written here when the built-in is not there yet), then calls `estimate` in a loop. Prints
crossbar-layer and node evaluations per second (the peer anchor, CiMLoop, is ~1,000 layer
mappings/s), the first (cold-cache) call, and the time of one call as a ratio to a baseline
measured in the same run: one numpy pass (`np.abs(w).sum()`) over the same crossbar weights.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx

from imcc import driver
from imcc.costmodel import estimate
from imcc.costmodel.conductance import clear_cache
from imcc.errors import UserError
from imcc.frontend.onnx import import_onnx
from imcc.passes.layers import crossbar_layers
from imcc.passes.pipeline import DEFAULT_PIPELINE
from imcc.target import (
    Buffer,
    Converter,
    ConverterKind,
    Crossbar,
    DigitalUnit,
    Hierarchy,
    InputDriver,
    Interconnect,
    Target,
    Technology,
)

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MAPPING = "assign-input-precision,quantize,tile-crossbar,select-adc,share-columns,place"


def fallback_isaac() -> Target:
    """An ISAAC-like target (Shafiee et al., ISCA 2016) for when the built-in is not available."""
    return Target(
        name="isaac-bench",
        description="ISAAC-like",
        technology=Technology(32, 1.28e9),
        crossbar=Crossbar(
            128, 128, "rram", 2, cell_read_energy_j=2e-15, read_latency_s=100e-9, cell_area_m2=1e-14
        ),
        input_driver=InputDriver((1,), energy_per_row_j=4e-15, input_bits=(8,)),
        converters=(Converter("sar", ConverterKind.SAR, bits=(8,), sample_rate_hz=1.28e9),),
        column_sharing=(128,),
        column_share_mode="sample-hold",
        shift_add=DigitalUnit(0.2e-12, 1e-9, 60e-12),
        accumulator=DigitalUnit(0.1e-12, 1e-9),
        digital=DigitalUnit(0.5e-12, 1e-9, 0.05e-6, count=64),
        buffers=(Buffer("edram", 64 * 1024, 1e-12, 0.08e-6),),
        hierarchy=Hierarchy(8),
        interconnect=Interconnect(0.1e-12),
    )


def load(name: str) -> Target:
    """Return the built-in target, or the fallback when the loader or the file is missing."""
    try:
        from imcc.frontend.hw import load_target

        return load_target(name)
    except (ImportError, UserError):
        return fallback_isaac()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="light_resnet50")
    parser.add_argument("--target", default="isaac")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()

    target = load(args.target)
    graph = import_onnx(LIGHT / f"{args.model}.onnx")
    shape = graph.inputs[0].type.shape
    images = np.random.default_rng(0).random((2, *shape[1:]), dtype=np.float32)
    start = time.perf_counter()
    mapped = driver.compile(
        graph, target, passes=f"{DEFAULT_PIPELINE},{MAPPING}", calibration=images
    )
    map_time = time.perf_counter() - start
    layers = crossbar_layers(mapped)
    weights = [mapped.constant_data(n.inputs[1]) for n in layers]

    clear_cache()
    start = time.perf_counter()
    report = estimate(mapped, target)
    cold = time.perf_counter() - start

    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < args.seconds:
        estimate(mapped, target)
        calls += 1
    per_call = elapsed / calls

    runs, start = 0, time.perf_counter()
    while (base_elapsed := time.perf_counter() - start) < args.seconds / 2:
        for w in weights:
            np.abs(w).sum()
        runs += 1
    baseline = base_elapsed / runs

    print(
        f"model: {args.model}  target: {target.name}  ({len(layers)} crossbar layers, "
        f"{len(mapped.nodes)} nodes; mapping took {map_time:.2f} s)"
    )
    print(f"first estimate (cold weight-statistics cache): {cold * 1e3:.1f} ms")
    print(f"estimate: {per_call * 1e3:.3f} ms per call over {calls} calls")
    print(
        f"crossbar layer evaluations per second: {len(layers) / per_call:,.0f} "
        f"(peer anchor ~1,000/s)"
    )
    print(f"node evaluations per second: {len(mapped.nodes) / per_call:,.0f}")
    print(f"baseline, one numpy pass over the crossbar weights: {baseline * 1e3:.3f} ms")
    print(f"ratio estimate / baseline: {per_call / baseline:.2f}")
    print(
        f"energy {report.energy_j:.4e} J, latency {report.latency_s:.4e} s, "
        f"area {report.area_mm2:.2f} mm2, TOPS/W {report.tops_per_w:.3f}"
    )


if __name__ == "__main__":
    main()
