"""ONNX Slice (constant starts / ends / axes / steps, negative and out-of-range indices) imports
as the IR's normalised `slice` and runs as onnxruntime does."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from imcc.backend.reference import run_graph
from imcc.frontend.onnx import import_onnx

CASES = [
    ([0, 0], [2**63 - 1, 2**63 - 1], [2, 3], [2, 2]),  # the ResNet option-A shortcut
    ([1], [-1], [1], [1]),
    ([-3, 1], [100, 4], [3, 1], [1, 2]),
    ([2], [2], [2], [1]),  # empty
]


@pytest.mark.parametrize(("starts", "ends", "axes", "steps"), CASES)
def test_slice_matches_onnxruntime(starts, ends, axes, steps):
    inits = [
        numpy_helper.from_array(np.array(v, np.int64), name)
        for name, v in (("s", starts), ("e", ends), ("a", axes), ("k", steps))
    ]
    node = helper.make_node("Slice", ["x", "s", "e", "a", "k"], ["y"], name="slice")
    graph = helper.make_graph(
        [node],
        "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = np.random.default_rng(0).standard_normal((1, 4, 6, 6)).astype(np.float32)
    (expected,) = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {"x": x})
    imported = import_onnx(model)
    assert [n.op for n in imported.nodes] == ["slice"]
    np.testing.assert_array_equal(run_graph(imported, {"x": x})["y"], expected)
