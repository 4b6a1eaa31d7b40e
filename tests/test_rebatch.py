"""rebatch: the batch axis of inputs, reshapes and whole-batch slices follows the new size."""

from __future__ import annotations

import numpy as np
import pytest

from imcc.backend.reference import run_graph
from imcc.errors import UserError
from imcc.ir import DType, GraphBuilder, TensorType
from imcc.ir.rebatch import rebatch


def shortcut_graph():
    """x -> conv; x[:, :, ::2, ::2] padded with channels; add; flatten (ResNet option A)."""
    rng = np.random.default_rng(0)
    b = GraphBuilder("g")
    x = b.add_input("x", TensorType((1, 2, 4, 4), DType.F32))
    w = b.add_constant(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    (c,) = b.add_node(
        "conv", [x, w], {"strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [1, 1]}
    )
    (s,) = b.add_node(
        "slice", [x], {"starts": [0, 0, 0, 0], "ends": [1, 2, 4, 4], "steps": [1, 1, 2, 2]}
    )
    (p,) = b.add_node("pad", [s], {"pads": [0, 1, 0, 0, 0, 1, 0, 0]})
    (a,) = b.add_node("add", [c, p])
    (f,) = b.add_node("reshape", [a], {"shape": [1, 16]})
    return b.build([f])


def test_rebatch_follows_reshapes_and_slices():
    graph = shortcut_graph()
    batched = rebatch(graph, 5)
    x = np.random.default_rng(1).standard_normal((5, 2, 4, 4)).astype(np.float32)
    together = run_graph(batched, {"x": x})[graph.outputs[0]]
    one_by_one = np.concatenate(
        [run_graph(graph, {"x": x[i : i + 1]})[graph.outputs[0]] for i in range(5)]
    )
    np.testing.assert_allclose(together, one_by_one, rtol=1e-6)


def test_rebatch_refuses_a_graph_that_mixes_the_batch_axis():
    b = GraphBuilder("g")
    x = b.add_input("x", TensorType((2, 3), DType.F32))
    (y,) = b.add_node("reshape", [x], {"shape": [3, 2]})
    with pytest.raises(UserError, match="cannot change the batch"):
        rebatch(b.build([y]), 4)
