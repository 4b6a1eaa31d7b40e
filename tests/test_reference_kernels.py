"""Reference kernels against torch.nn.functional (an independent oracle), on random geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from imcc.backend import kernels

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TORCH_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
TORCH_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def close(ours: np.ndarray, theirs: torch.Tensor) -> None:
    expected = theirs.numpy()
    assert ours.shape == expected.shape
    assert ours.dtype == expected.dtype
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_conv_matches_torch(data):
    spatial = data.draw(st.integers(1, 3))
    group = data.draw(st.integers(1, 3))
    per_group_in = data.draw(st.integers(1, 3))
    per_group_out = data.draw(st.integers(1, 3))
    kernel = [data.draw(st.integers(1, 3)) for _ in range(spatial)]
    dilation = [data.draw(st.integers(1, 2)) for _ in range(spatial)]
    stride = [data.draw(st.integers(1, 3)) for _ in range(spatial)]
    pad = [data.draw(st.integers(0, 2)) for _ in range(spatial)]
    size = [
        data.draw(st.integers(d * (k - 1) + 1, 7)) for k, d in zip(kernel, dilation, strict=True)
    ]
    batch = data.draw(st.integers(1, 2))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x = rng.standard_normal((batch, group * per_group_in, *size)).astype(np.float32)
    w = rng.standard_normal((group * per_group_out, per_group_in, *kernel)).astype(np.float32)
    b = rng.standard_normal(group * per_group_out).astype(np.float32)
    ours = kernels.conv(x, w, b, tuple(stride), tuple(pad + pad), tuple(dilation), group)
    theirs = TORCH_CONV[spatial](
        torch.from_numpy(x),
        torch.from_numpy(w),
        torch.from_numpy(b),
        stride=stride,
        padding=pad,
        dilation=dilation,
        groups=group,
    )
    close(ours, theirs)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_max_pool_matches_torch(data):
    spatial = data.draw(st.integers(1, 3))
    kernel = [data.draw(st.integers(1, 3)) for _ in range(spatial)]
    dilation = [data.draw(st.integers(1, 2)) for _ in range(spatial)]
    stride = [data.draw(st.integers(1, 3)) for _ in range(spatial)]
    pad = [data.draw(st.integers(0, k // 2)) for k in kernel]
    size = [
        data.draw(st.integers(d * (k - 1) + 1, 8)) for k, d in zip(kernel, dilation, strict=True)
    ]
    ceil = data.draw(st.booleans())
    x = np.random.default_rng(0).standard_normal((2, 3, *size)).astype(np.float32)
    ours = kernels.max_pool(
        x, tuple(kernel), tuple(stride), tuple(pad + pad), tuple(dilation), ceil
    )
    theirs = TORCH_MAX[spatial](torch.from_numpy(x), kernel, stride, pad, dilation, ceil_mode=ceil)
    close(ours, theirs)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_avg_pool_matches_torch(data):
    spatial = data.draw(st.integers(1, 3))
    kernel = [data.draw(st.integers(1, 3)) for _ in range(spatial)]
    stride = [data.draw(st.integers(1, 3)) for _ in range(spatial)]
    pad = [data.draw(st.integers(0, k // 2)) for k in kernel]
    size = [data.draw(st.integers(k, 8)) for k in kernel]
    ceil = data.draw(st.booleans())
    include = data.draw(st.booleans())
    x = np.random.default_rng(1).standard_normal((2, 3, *size)).astype(np.float32)
    ours = kernels.avg_pool(
        x, tuple(kernel), tuple(stride), tuple(pad + pad), (1,) * spatial, ceil, include
    )
    theirs = TORCH_AVG[spatial](
        torch.from_numpy(x), kernel, stride, pad, ceil_mode=ceil, count_include_pad=include
    )
    close(ours, theirs)


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn_matches_torch(size):
    """Odd sizes only: for even sizes torch centres the window one channel earlier than ONNX."""
    x = np.random.default_rng(size).standard_normal((2, 7, 4, 4)).astype(np.float32)
    ours = kernels.lrn(x, size, 1e-2, 0.75, 2.0)
    theirs = F.local_response_norm(torch.from_numpy(x), size, alpha=1e-2, beta=0.75, k=2.0)
    close(ours, theirs)


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn_matches_onnxruntime(size):
    """Odd sizes only: onnxruntime rejects even ones (and onnx.reference's LRN loops over the
    batch axis instead of the channels, so it is no oracle)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=1e-2, beta=0.75, bias=2.0)
    graph = helper.make_graph(
        [node],
        "lrn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 7, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 7, 4, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    x = np.random.default_rng(size).standard_normal((2, 7, 4, 4)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x})
    np.testing.assert_allclose(
        kernels.lrn(x, size, 1e-2, 0.75, 2.0), expected, rtol=1e-5, atol=1e-6
    )


def test_float32_matmul_is_rounded_once_inside_rounded_once():
    # the oracle: each entry's exact sum (float32 products are exact in float64, math.fsum
    # rounds their sum once) rounded to float32; float32 BLAS misses it in many entries
    import math

    rng = np.random.default_rng(3)
    a = rng.standard_normal((64, 2304), dtype=np.float32)
    b = rng.standard_normal((2304, 48), dtype=np.float32)
    wide_a, wide_b = a.astype(np.float64), b.astype(np.float64)
    expected = np.array(
        [[math.fsum(wide_a[i] * wide_b[:, j]) for j in range(b.shape[1])] for i in range(64)],
        dtype=np.float32,
    )
    with kernels.rounded_once():
        ours = kernels.exact_matmul(a, b)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, expected)
    outside = kernels.exact_matmul(a, b)  # float32 BLAS, as onnxruntime: not rounded once
    np.testing.assert_array_equal(outside, np.matmul(a, b))
    assert not np.array_equal(outside, expected)


def test_calibration_values_do_not_depend_on_blas_threads():
    """`collect` (the calibration forward) gives the same bytes on 1 and 2 BLAS threads for a
    conv and a matmul (without `rounded_once` these sizes' float32 BLAS sums differ)."""
    import os
    import subprocess
    import sys

    script = (
        "import hashlib, numpy as np\n"
        "from imcc.backend.reference import collect\n"
        "from imcc.ir import DType, GraphBuilder, TensorType\n"
        "r = np.random.default_rng(0)\n"
        "b = GraphBuilder('t')\n"
        "x = b.add_input('x', TensorType((8, 256, 8, 8), DType.F32))\n"
        "w = b.add_constant(r.standard_normal((256, 256, 3, 3), dtype=np.float32), 'w')\n"
        "a = {'strides': [1, 1], 'pads': [1, 1, 1, 1], 'dilations': [1, 1]}\n"
        "(y,) = b.add_node('conv', [x, w], a, name='c')\n"
        "(f,) = b.add_node('reshape', [y], {'shape': [8, 16384]}, name='f')\n"
        "v = b.add_constant(r.standard_normal((16384, 64), dtype=np.float32), 'v')\n"
        "(z,) = b.add_node('matmul', [f, v], {}, name='m')\n"
        "g = b.build([z])\n"
        "images = r.standard_normal((16, 256, 8, 8), dtype=np.float32)\n"
        "out = collect(g, images, [y, z])\n"
        "print(hashlib.sha256(out[y].tobytes() + out[z].tobytes()).hexdigest())\n"
    )
    digests = set()
    for threads in ("1", "2"):
        env = {
            **os.environ,
            "OPENBLAS_NUM_THREADS": threads,
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
        }
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        digests.add(done.stdout.strip())
    assert len(digests) == 1
