"""The quantized network agrees with onnxruntime running the equivalent QDQ model.

Each model is compiled with the default pipeline plus `quantize` (8-bit inputs and weights),
run by the reference interpreter (`backend/reference.py`, the lossless-converter semantics) and,
exported by `imcc.backend.qdq.export_qdq`, by onnxruntime (CPU, basic graph optimisations) on
the same inputs. Basic, not the default `all`: the extended level fuses `DQ -> MatMul -> Add ->
Relu -> Q` into a QGemm kernel that rounds the float bias to int32 units of `s_x * s_w` and
requantizes in its own way (seen: codes 4 apart on LeNet5); that kernel approximates the QDQ
graph, while the basic level runs it as the ONNX ops define it. Models and data:

- `digits-cnn` (built-in example): calibrated on 64 of its held-out digits, compared on 64
  others;
- ONNX zoo mnist-conv (input 0..255) and LeNet5 (input 0..1): calibrated on 16 real 8x8 digits
  scaled 3x and padded to 28x28 (MNIST's layout: a 20-24 px digit centred in 28x28), compared on
  8 others and on mnist-conv's shipped `test_data_set_0` image;
- light_squeezenet (concats, pooling), light_resnet50 (residual adds), light_densenet121
  (concats, average pools): one seeded uniform calibration sample, compared on the input onnx's
  test runner feeds them (`onnx_models.light_input`).

Metric, per model:

1. codes: at every `quantize` op the reference's integer codes against ORT's QuantizeLinear
   (then Clip) codes: no element may differ by more than one code. The cause of an off-by-one
   code: after a quantized layer ORT computes `sum(float32(xq * s_x) * float32(wq * s_w))` in
   float32 where the reference takes the exact integer sum times `float32(s_x * s_w)`; the two
   floats differ by float32 rounding (~1e-7 relative), and a later quantize rounds a value that
   lies within that distance of a .5 boundary of x / scale the other way. Such a code then
   moves the layers after it by one code times a weight, which flips more codes downstream:
   how many depends on the network (light_resnet50's activations repeat, 739 distinct values in
   800k at one layer, so one tie can flip a whole channel: 92,042 of its 10.7M codes with one
   calibration, 157 or 1,670 with another). So the check is on the roots: an off-by-one code at
   a quantize whose upstream codes (the nearest quantizes before it, or the graph input) all
   agree with ORT's must lie within `TIE` of a .5 boundary (every root; a wrong scale, bias or
   rounding would put them anywhere), and fewer than 0.1% of all code elements may be roots.
   The first quantize (the graph input) is always exact. Measured with 8 bits: digits-cnn,
   mnist-conv, LeNet5 exact; squeezenet 76, resnet50 167, densenet121 14 roots, all ties;
   every output within one step.
2. outputs: every element of every graph output within one output quantization step of ORT's:
   the step is the scale an 8-bit minmax `quantize` would give that output on the compared
   samples (max|y| / 255 when y >= 0, else / 127), i.e. the granularity the network's own
   quantization has there. (The last layer's dequantize scale `s_x * s_w` is no measure: with
   wide accumulators it lies below float32's resolution of the output, e.g. 1.3e-8 on outputs
   of 0.46 in densenet121.) Elements may exceed it only behind an off-by-one code; they are
   counted and must stay under 0.1% of the output; without any off-by-one code none may.

A tiny conv + linear program with 4-, 8- and 12-bit inputs checks the exporter where everything
is exact (integer data, power-of-two scales), and the CLI test runs `imcc export-qdq`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from imcc.backend.qdq import export_qdq, weight_scales
from imcc.backend.reference import run_graph
from imcc.cli import main
from imcc.examples import example_path
from imcc.frontend.datasets import load_dataset
from imcc.frontend.onnx import import_onnx
from imcc.ir.graph import Graph, GraphBuilder
from imcc.ir.io import save_program
from imcc.ir.types import DType, TensorType
from imcc.passes.context import Context
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline
from imcc.passes.quantize import input_scale
from tests.onnx_models import (
    lenet5_onnx,
    light_input,
    light_path,
    load_tensor,
    missing_model,
    mnist_conv_dir,
)

LIMIT = 1e-3
"""The largest fraction of code elements allowed to be roots of an off-by-one code, and of
output elements allowed beyond one step (module docstring)."""
LIGHT = ("light_squeezenet", "light_resnet50", "light_densenet121")


@dataclass
class Agreement:
    """Counts of a comparison: code elements, and output elements beyond one step."""

    codes: int = 0
    codes_off: int = 0
    codes_worst: int = 0
    outputs: int = 0
    outputs_off: int = 0
    first_exact: bool = True
    per_quantize: dict[str, int] = field(default_factory=dict)
    roots: int = 0  # off-by-one codes whose upstream codes all agree (module docstring)
    roots_unexplained: int = 0  # of those, codes not within float rounding of a .5 tie


def quantized(graph: Graph, calibration: np.ndarray, bits: int = 8) -> Graph:
    """Run the default pipeline and a `bits`-bit `quantize` (weights and inputs) calibrated on
    `calibration`."""
    pipeline = (
        f"{DEFAULT_PIPELINE},quantize{{weight_bits={bits} input_bits={bits} "
        f"samples={len(calibration)}}}"
    )
    return PassManager(parse_pipeline(pipeline)).run(
        graph, Context(options={"calibration": calibration})
    )


def ort_session(model: bytes | str) -> ort.InferenceSession:
    """Return an onnxruntime CPU session with basic graph optimisations (no QDQ fusions)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def output_step(reference: np.ndarray, bits: int = 8) -> float:
    """Return the scale a `bits`-wide minmax `quantize` would give an output on these values."""
    return input_scale(reference, bits, "minmax", 100.0)[0]


TIE = 1e-5
"""How near a .5 boundary of x / scale (relative to |x / scale|) a root off-by-one code must
lie: float32 sums of a few thousand products differ by about 1e-7 relative (module
docstring: measured within 4e-6 of .5)."""


def upstream_codes(program: Graph, codes: list[str]) -> dict[str, set[str]]:
    """Return, per quantize output, the quantize outputs (and graph inputs) its input is
    computed from without another quantize in between."""
    producers = program.producers
    feeds = {value.name for value in program.inputs}
    found: dict[str, set[str]] = {}
    for name in codes:
        seen, todo, sources = set(), [producers[name].inputs[0]], set()
        while todo:
            value = todo.pop()
            if value in seen:
                continue
            seen.add(value)
            node = producers.get(value)
            if (node is None and value in feeds) or (node is not None and node.op == "quantize"):
                sources.add(value)
            elif node is not None:  # (constants agree)
                todo.extend(node.inputs)
        found[name] = sources
    return found


def compare(program: Graph, samples: list[np.ndarray]) -> Agreement:
    """Run the program and its QDQ export on each sample; count where they disagree."""
    codes = [n.outputs[0] for n in program.nodes if n.op == "quantize"]
    model = export_qdq(program, codes)
    session = ort_session(model.SerializeToString())
    names = [o.name for o in session.get_outputs()]
    upstream = upstream_codes(program, codes)
    quantizers = {name: program.producers[name] for name in codes}
    inputs = {name: node.inputs[0] for name, node in quantizers.items()}
    probe = program.replace(
        outputs=tuple(dict.fromkeys([*program.outputs, *codes, *inputs.values()]))
    )
    result = Agreement(per_quantize=dict.fromkeys(codes, 0))
    feed = program.inputs[0].name
    outputs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in program.outputs}
    for x in samples:
        ours = run_graph(probe, {feed: x})
        theirs = dict(zip(names, session.run(None, {feed: x}), strict=True))
        agree = {feed}
        for index, name in enumerate(codes):
            assert theirs[name].dtype.kind in "iu", name
            diff = np.abs(ours[name].astype(np.int64) - theirs[name].astype(np.int64))
            result.codes += diff.size
            result.codes_off += int(np.count_nonzero(diff))
            result.codes_worst = max(result.codes_worst, int(diff.max(initial=0)))
            result.per_quantize[name] += int(np.count_nonzero(diff))
            if index == 0 and inputs[name] == feed:
                result.first_exact &= not diff.any()
            if not diff.any():
                agree.add(name)
            elif upstream[name] <= agree:  # a root: its inputs' codes are ORT's own
                scaled = ours[inputs[name]].astype(np.float64) / quantizers[name].attr("scale")
                gap = np.abs(scaled - np.floor(scaled) - 0.5)
                off = diff > 0
                result.roots += int(np.count_nonzero(off))
                unexplained = off & (gap > TIE * np.maximum(np.abs(scaled), 1.0))
                result.roots_unexplained += int(np.count_nonzero(unexplained))
        for name in program.outputs:
            outputs[name].append((ours[name], theirs[name]))
    for pairs in outputs.values():
        ours_all = np.concatenate([a.ravel() for a, _ in pairs])
        theirs_all = np.concatenate([b.ravel() for _, b in pairs])
        diff = np.abs(ours_all.astype(np.float64) - theirs_all)
        result.outputs += diff.size
        result.outputs_off += int(np.count_nonzero(diff > output_step(ours_all)))
    return result


def check(agreement: Agreement) -> None:
    """Assert the metric of the module docstring."""
    assert agreement.first_exact, "the codes of the graph input differ"
    assert agreement.codes_worst <= 1, agreement
    assert agreement.roots_unexplained == 0, agreement
    assert agreement.roots < LIMIT * agreement.codes, agreement
    assert (agreement.roots > 0) == (agreement.codes_off > 0), agreement  # a root starts each
    assert agreement.outputs_off < LIMIT * agreement.outputs, agreement
    if agreement.codes_off == 0:  # without an off-by-one code every output is within a step
        assert agreement.outputs_off == 0, agreement


def mnist_images(start: int, count: int) -> np.ndarray:
    """Return real 8x8 digits scaled 3x and padded to 28x28 (MNIST layout), in [0, 1]."""
    digits = load_dataset("digits").images[start : start + count]
    large = np.kron(digits, np.ones((1, 1, 3, 3), np.float32))
    return np.pad(large, ((0, 0), (0, 0), (2, 2), (2, 2)))


def test_digits_cnn_matches_onnxruntime():
    data = load_dataset("digits-cnn")
    program = quantized(import_onnx(example_path("digits-cnn")), data.images[:64])
    check(compare(program, [data.images[i : i + 1] for i in range(64, 128)]))


@pytest.mark.parametrize("name", ["mnist-conv", "lenet5"])
def test_mnist_model_matches_onnxruntime(name):
    if name == "mnist-conv":
        folder = mnist_conv_dir()
        if folder is None:
            missing_model("mnist-conv")
        path, scale = folder / "model.onnx", 255.0
        shipped = [load_tensor(folder / "test_data_set_0" / "input_0.pb")]
    else:
        path, scale, shipped = lenet5_onnx(), 1.0, []
        if path is None:
            missing_model("lenet5")
    calibration = mnist_images(0, 16) * np.float32(scale)
    program = quantized(import_onnx(path), calibration)
    samples = [image[None] for image in mnist_images(100, 8) * np.float32(scale)]
    check(compare(program, samples + shipped))


@pytest.mark.parametrize("bits", [2, 4])
def test_low_bit_cifar_resnet20_matches_onnxruntime(bits):
    """StoX-Net's precisions: the CIFAR-10 ResNet-20 with 4-bit (and 2-bit) per-channel
    symmetric weights and per-tensor inputs, calibrated on 16 CIFAR-10 images, against
    onnxruntime's QDQ model on 6 others (codes within one step; the metric above)."""
    from tests.onnx_models import CIFAR10_IMAGES

    if not CIFAR10_IMAGES.is_file():
        missing_model("cifar10")
    data = load_dataset(f"cifar10:{CIFAR10_IMAGES}", 22)
    model = Path(__file__).resolve().parents[1] / "models" / "resnet20_cifar10.onnx"
    program = quantized(import_onnx(model), data.images[:16], bits)
    agreement = compare(program, [data.images[i : i + 1] for i in range(16, 22)])
    check(agreement)
    assert agreement.codes > 0


def test_stox_resnet20_signed_inputs_match_onnxruntime(tmp_path):
    """StoX-Net's ResNet-20 (hardtanh activations, a shortcut per conv: every crossbar layer
    after the first reads signed inputs in [-1, 1]) at 4-bit weights and inputs, untrained
    with batch statistics from random images, against onnxruntime's QDQ model."""
    import torch

    from imcc.models.cifar_resnet import StoxResNet
    from imcc.models.common import export_onnx

    torch.manual_seed(0)
    model = StoxResNet(1)
    images = np.random.default_rng(0).random((22, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():  # batch statistics, so the activations spread over [-1, 1]
        model.train()(torch.from_numpy(images[:16]))
    path = export_onnx(model, tmp_path / "stox.onnx", torch.zeros(1, 3, 32, 32))
    program = quantized(import_onnx(path), images[:16], 4)
    signed = [n.attr("signed") for n in program.nodes if n.op == "quantize"]
    assert signed[0] and sum(signed) == len(signed)  # the image and every hardtanh output
    agreement = compare(program, [images[i : i + 1] for i in range(16, 22)])
    check(agreement)
    assert agreement.codes > 0


@functools.cache
def _light_program(name: str) -> Graph:
    graph = import_onnx(light_path(name))
    shape = (1, *graph.inputs[0].type.shape[1:])
    return quantized(graph, np.random.default_rng(0).random(shape, dtype=np.float32))


@pytest.mark.parametrize("name", LIGHT)
def test_light_model_matches_onnxruntime(name):
    program = _light_program(name)
    feeds = light_input(onnx.load(str(light_path(name))))
    check(compare(program, list(feeds.values())))


def _tiny_program(bits: int, signed: bool) -> Graph:
    """conv(3x3, pad 1) -> relu -> reshape -> linear, quantized by hand with power-of-two
    scales so that every float on both sides is exact."""
    rng = np.random.default_rng(bits)
    builder = GraphBuilder("tiny")
    x = builder.add_input("x", TensorType((1, 2, 4, 4), DType.F32))
    attrs = {"scale": 0.25, "bits": bits, "signed": signed}
    (xq,) = builder.add_node("quantize", [x], attrs, hint="x.q")
    w = builder.add_constant(rng.integers(-7, 8, (3, 2, 3, 3)).astype(np.int32), "w.q")
    (acc,) = builder.add_node(
        "conv",
        [xq, w],
        {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1]},
        hint="y.acc",
    )
    scales = builder.add_constant(np.array([2**-3, 2**-4, 2**-2], np.float32) * 0.25, "y.scale")
    bias = builder.add_constant(np.array([0.5, -1.0, 0.25], np.float32), "y.bias")
    (y,) = builder.add_node("dequantize", [acc, scales, bias], {"axis": 1}, hint="y")
    (r,) = builder.add_node("relu", [y], hint="r")
    (flat,) = builder.add_node("reshape", [r], {"shape": [1, 48]}, hint="flat")
    (fq,) = builder.add_node("quantize", [flat], {**attrs, "scale": 0.5}, hint="flat.q")
    v = builder.add_constant(rng.integers(-100, 101, (48, 5)).astype(np.int32), "v.q")
    (acc2,) = builder.add_node("linear", [fq, v], hint="z.acc")
    s2 = builder.add_constant(np.full(5, 2**-8, np.float32), "z.scale")
    (z,) = builder.add_node("dequantize", [acc2, s2], {"axis": 1}, hint="z")
    return builder.build([z, y])


@pytest.mark.parametrize(
    ("bits", "signed"), [(8, False), (8, True), (4, False), (4, True), (12, True), (16, False)]
)
def test_tiny_program_is_exact(bits, signed):
    program = _tiny_program(bits, signed)
    x = (np.random.default_rng(1).integers(-80, 80, (1, 2, 4, 4)) / 8).astype(np.float32)
    model = export_qdq(program, ["x.q", "flat.q"])
    session = ort_session(model.SerializeToString())
    theirs = dict(
        zip([o.name for o in session.get_outputs()], session.run(None, {"x": x}), strict=True)
    )
    ours = run_graph(program.replace(outputs=("z", "y", "x.q", "flat.q")), {"x": x})
    for name in ("x.q", "flat.q"):
        np.testing.assert_array_equal(ours[name], theirs[name].astype(np.int32))
    if bits == 4:  # the 4-bit range clips: the Clip on the codes did its work
        assert ours["x.q"].max() == (7 if signed else 15)
    for name in ("z", "y"):
        np.testing.assert_array_equal(ours[name], theirs[name])


def test_weight_scales_reproduce_the_program_scale():
    rng = np.random.default_rng(0)
    s_x = np.float32(0.0123)
    s_w = rng.random(1000) * 0.01 + 1e-4
    scales = (np.float64(s_x) * s_w).astype(np.float32)
    recovered = weight_scales(scales, s_x)
    product = (np.float64(s_x) * recovered.astype(np.float64)).astype(np.float32)
    # float32(s_x * s) skips some float32 values when s_x's mantissa exceeds the product's,
    # so the program's scale is hit exactly in most channels and within one ulp in all
    assert np.mean(product == scales) > 0.8
    assert np.all(np.abs(product - scales) <= np.spacing(scales))
    s_w32 = s_w.astype(np.float32)
    assert np.all(np.abs(recovered - s_w32) <= np.spacing(s_w32))


def test_cli_export_qdq(tmp_path: Path, capsys):
    data = load_dataset("digits-cnn")
    program = quantized(import_onnx(example_path("digits-cnn")), data.images[:8])
    save_program(program, tmp_path / "p.imcir")
    out = tmp_path / "m.onnx"
    assert main(["export-qdq", str(tmp_path / "p.imcir"), "-o", str(out)]) == 0
    model = onnx.load(str(out))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    session = ort_session(str(out))
    x = data.images[:1]
    (theirs,) = session.run(None, {program.inputs[0].name: x})
    ours = run_graph(program, {program.inputs[0].name: x})[program.outputs[0]]
    assert np.abs(ours - theirs).max() <= output_step(ours)
    assert main(["export-qdq", str(tmp_path / "missing.imcir"), "-o", str(out)]) == 2
    assert "error:" in capsys.readouterr().err
