"""Imported models run by the float reference interpreter agree with onnxruntime.

Every model of `test_frontend_onnx.py` is imported, run with `imcc.backend.reference.run_graph`
and compared with onnxruntime on the same input, and with the output the model ships where
there is one:

- light models (`onnx/backend/test/data/light`): they ship only `*_output_0.pb`; its input is
  the one onnx's test runner generates, `arange(n).reshape(shape) / n` (see
  `onnx_models.light_input`). Since their weights are constants (0.02), the final softmax is
  nearly uniform, so every intermediate value that keeps its ONNX name is compared as well.
  Constant weights also make huge logits (squeezenet: ~1e10), where float32 rounding alone
  moves the softmax arbitrarily: a softmax whose input exceeds 100 in magnitude (so that the
  tolerance below admits an absolute input error above 0.01) is checked through its input and
  by summing to one, not element by element.
- pytorch-converted layer tests: their shipped `input_0.pb` / `output_0.pb`.
- MNIST: the zoo mnist-conv with its `test_data_set_0` and a seeded random image batch;
  LeNet5 with a seeded random batch of 4 (and the onnx.helper fallback graph against the torch
  export).

Metric: relative error max|ours - reference| / max(max|reference|, 1e-6) <= 1e-4 per tensor.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import version_converter
from onnx_models import (
    LIGHT_MODELS,
    PYTORCH_CONVERTED_DIR,
    imported,
    lenet5_onnx,
    lenet5_weights,
    light_input,
    light_path,
    load_tensor,
    missing_model,
    mnist_conv_dir,
    pytorch_converted_tests,
    relative_error,
)

from imcc.backend.reference import run_graph
from imcc.frontend.onnx import import_onnx

TOLERANCE = 1e-4


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray], extra: list[str] = ()) -> list:
    """Run onnxruntime; `extra` intermediate values are appended to the model's outputs.

    onnxruntime has no kernels for some opset-6 ops (AveragePool-1, BatchNormalization-6):
    such models are first converted to opset 13 with onnx's version converter.
    """
    if model.opset_import[0].version < 7:
        model = version_converter.convert_version(model, 13)
    if extra:
        model = onnx.shape_inference.infer_shapes(model)
        infos = {v.name: v for v in model.graph.value_info}
        model.graph.output.extend(infos[name] for name in extra)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, feeds)


def _assert_close(got: np.ndarray, reference: np.ndarray, what: str) -> None:
    assert got.dtype == reference.dtype, what
    error = relative_error(got, reference)
    assert error <= TOLERANCE, f"{what}: relative error {error:.3g}"


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model(name):
    path = light_path(name)
    model = onnx.load(str(path))
    graph = imported(str(path))
    feeds = light_input(model)
    produced = {o for node in model.graph.node for o in node.output}
    extra = [
        o for node in graph.nodes for o in node.outputs if o in produced and o not in graph.outputs
    ]
    # softmax inputs are needed to judge the conditioning of the softmax (see above)
    extra += [
        n.inputs[0]
        for n in graph.nodes
        if n.op == "softmax" and n.inputs[0] not in extra and n.inputs[0] in produced
    ]
    ours = run_graph(graph.replace(outputs=graph.outputs + tuple(extra)), feeds)
    theirs = _ort(model, feeds, extra)
    names = list(graph.outputs) + extra
    producers = {out: node for node in graph.nodes for out in node.outputs}
    conditioned = {}
    for value in names:
        node = producers[value]
        source = ours[node.inputs[0]] if node.inputs[0] in ours else None
        if node.op == "softmax" and source is not None and np.abs(source).max() * TOLERANCE > 1e-2:
            np.testing.assert_allclose(ours[value].sum(axis=node.attr("axis")), 1, rtol=1e-4)
            conditioned[value] = False
        else:
            conditioned[value] = True
    for value, reference in zip(names, theirs, strict=True):
        if conditioned[value]:
            _assert_close(ours[value], reference, f"{name}: value '{value}'")
    shipped = load_tensor(path.with_name(f"{name}_output_0.pb"))
    if conditioned[graph.outputs[0]]:
        _assert_close(ours[graph.outputs[0]], shipped, f"{name}: shipped output")


@pytest.mark.parametrize("test", pytorch_converted_tests())
def test_pytorch_converted(test):
    folder = PYTORCH_CONVERTED_DIR / test
    model = onnx.load(str(folder / "model.onnx"))
    graph = import_onnx(model)
    x = load_tensor(folder / "test_data_set_0" / "input_0.pb")
    feeds = {graph.inputs[0].name: x}
    ours = run_graph(graph, feeds)[graph.outputs[0]]
    _assert_close(ours, _ort(model, feeds)[0], f"{test} vs onnxruntime")
    _assert_close(ours, load_tensor(folder / "test_data_set_0" / "output_0.pb"), f"{test} shipped")


def test_mnist_conv():
    folder = mnist_conv_dir()
    if folder is None:
        missing_model("mnist-conv")
    model = onnx.load(str(folder / "model.onnx"))
    graph = imported(str(folder / "model.onnx"))
    name = graph.inputs[0].name
    shipped_in = load_tensor(folder / "test_data_set_0" / "input_0.pb")
    shipped_out = load_tensor(folder / "test_data_set_0" / "output_0.pb")
    ours = run_graph(graph, {name: shipped_in})[graph.outputs[0]]
    _assert_close(ours, shipped_out, "mnist-conv shipped output")
    _assert_close(ours, _ort(model, {name: shipped_in})[0], "mnist-conv vs onnxruntime")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(1, 1, 28, 28)).astype(np.float32)
    ours = run_graph(graph, {name: image})[graph.outputs[0]]
    _assert_close(ours, _ort(model, {name: image})[0], "mnist-conv random image")


def test_lenet5():
    path = lenet5_onnx()
    if path is None:
        missing_model("LeNet5")
    model = onnx.load(str(path))
    graph = imported(str(path), batch=4)
    images = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    ours = run_graph(graph, {"input": images})["logits"]
    _assert_close(ours, _ort(model, {"input": images})[0], "lenet5 vs onnxruntime")


def test_lenet5_helper_graph_matches_the_torch_export():
    weights, path = lenet5_weights(), lenet5_onnx()
    if weights is None or path is None:
        missing_model("LeNet5")
    from tests.models.lenet5 import build_with_helper, load_state_dict

    fallback = build_with_helper(load_state_dict(weights))
    images = np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32)
    exported = _ort(onnx.load(str(path)), {"input": images})[0]
    _assert_close(_ort(fallback, {"input": images})[0], exported, "helper graph vs export")
    ours = run_graph(import_onnx(fallback, batch=2), {"input": images})["logits"]
    _assert_close(ours, exported, "helper graph imported")
