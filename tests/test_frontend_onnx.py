"""The ONNX frontend: real models import, verify and round-trip; normalisation rules; errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_models import (
    LIGHT_MODELS,
    PYTORCH_CONVERTED_DIR,
    imported,
    lenet5_onnx,
    light_path,
    missing_model,
    mnist_conv_dir,
    pytorch_converted_tests,
)

from imcc.errors import FrontendError
from imcc.frontend.onnx import import_onnx
from imcc.frontend.onnx_shape_ops import reshape_target
from imcc.ir.parser import parse_graph
from imcc.ir.printer import print_graph
from imcc.ir.types import DType

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, initializers=(), opset=13) -> onnx.ModelProto:
    """Build a model; outputs given without a shape take the one ONNX infers (the checker
    wants output shapes)."""
    graph = helper.make_graph(nodes, "t", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if all(o.type.tensor_type.HasField("shape") for o in outputs):
        return model
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    for output in model.graph.output:
        if not output.type.tensor_type.HasField("shape") and output.name in types:
            output.CopyFrom(types[output.name])
    return model


def _vi(name, shape, elem=F):
    return helper.make_tensor_value_info(name, elem, shape)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _ops(graph) -> list[str]:
    return [n.op for n in graph.nodes]


def _round_trips(graph) -> bool:
    text = print_graph(graph)
    weights = {c.digest: c.data for c in graph.constants.values()}
    return print_graph(parse_graph(text, weights=weights)) == text


# --- real models ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_imports_and_round_trips(name):
    graph = imported(str(light_path(name)))
    assert len(LIGHT_MODELS) == 9
    assert _round_trips(graph)
    assert graph.inputs[0].type.shape == (1, 3, 224, 224)
    assert graph.types[graph.outputs[0]].shape[:2] == (1, 1000)
    assert "conv" in _ops(graph)


PYTORCH_OPS = {
    "Conv": "conv",
    "BatchNorm": "batch_norm",
    "AvgPool": "avg_pool",
    "MaxPool": "max_pool",
    "Linear": "linear",
    "ReLU": "relu",
    "ZeroPad2d": "pad",
    "ConstantPad2d": "pad",
    "Softmax": "softmax",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "LeakyReLU": "leaky_relu",
}


@pytest.mark.parametrize("test", pytorch_converted_tests())
def test_pytorch_converted_model_imports(test):
    graph = import_onnx(PYTORCH_CONVERTED_DIR / test / "model.onnx")
    assert _round_trips(graph)
    prefix = next(p for p in PYTORCH_OPS if test.removeprefix("test_").startswith(p))
    assert PYTORCH_OPS[prefix] in _ops(graph)


def test_mnist_conv_imports():
    folder = mnist_conv_dir()
    if folder is None:
        missing_model("mnist-conv")
    graph = imported(str(folder / "model.onnx"))
    assert _ops(graph) == [
        "conv",
        "add",
        "relu",
        "max_pool",
        "conv",
        "add",
        "relu",
        "max_pool",
        "reshape",
        "linear",
        "add",
    ]
    assert graph.inputs[0].type.shape == (1, 1, 28, 28)


def test_lenet5_imports_with_a_symbolic_batch():
    path = lenet5_onnx()
    if path is None:
        missing_model("LeNet5")
    graph = imported(str(path), batch=4)
    assert _ops(graph) == [
        "conv",
        "relu",
        "max_pool",
        "conv",
        "relu",
        "max_pool",
        "reshape",
        "linear",
        "relu",
        "linear",
    ]
    assert graph.inputs[0].type.shape == (4, 1, 28, 28)
    assert graph.outputs == ("logits",)
    assert graph.types["logits"].shape == (4, 10)


# --- errors ---------------------------------------------------------------------------------


def test_unsupported_ops_are_listed_once():
    nodes = [
        helper.make_node("Foo", ["x"], ["a"], name="n1"),
        helper.make_node("Relu", ["a"], ["b"], name="r"),
        helper.make_node("Foo", ["b"], ["c"], name="n2"),
        helper.make_node("Bar", ["c"], ["y"], name="n3"),
    ]
    model = _model(nodes, [_vi("x", [1, 4])], [_vi("y", [1, 4])])
    with pytest.raises(FrontendError) as info:
        import_onnx(model)
    assert str(info.value) == (
        "<model t>: unsupported ONNX ops: Foo (nodes: n1, n2), Bar (nodes: n3)"
    )
    assert "imcc translates" in info.value.hint


def test_unsupported_known_ops_with_generated_names():
    nodes = [helper.make_node("Elu", ["x"], ["a"]), helper.make_node("Softplus", ["a"], ["y"])]
    model = _model(nodes, [_vi("x", [1, 4])], [_vi("y", [1, 4])])
    with pytest.raises(
        FrontendError,
        match=r"^<model t>: unsupported ONNX ops: "
        r"Elu \(nodes: Elu_0\), Softplus \(nodes: Softplus_1\)$",
    ):
        import_onnx(model)


def test_malformed_files(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\x00 not a protobuf \x12\x34" * 10)
    with pytest.raises(FrontendError, match=r"garbage.onnx") as info:
        import_onnx(garbage)
    assert info.value.hint
    with pytest.raises(FrontendError, match="no such file"):
        import_onnx(tmp_path / "missing.onnx")
    relu = helper.make_node("Relu", ["nowhere"], ["y"])
    broken = _model([relu], [_vi("x", [1])], [_vi("y", [1])])
    onnx.save(broken, tmp_path / "broken.onnx")
    with pytest.raises(FrontendError, match=r"broken.onnx: the ONNX checker rejects the model"):
        import_onnx(tmp_path / "broken.onnx")


def test_opsets_and_domains_are_checked():
    relu = helper.make_node("Relu", ["x"], ["y"])
    with pytest.raises(FrontendError, match="opset 5 is not supported"):
        import_onnx(_model([relu], [_vi("x", [1])], [_vi("y", [1])], opset=5))
    custom = helper.make_node("Relu", ["x"], ["y"], domain="com.example")
    model = _model([custom], [_vi("x", [1])], [_vi("y", [1])])
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(FrontendError, match=r"other domains.*com.example::Relu"):
        import_onnx(model)


def test_symbolic_dimensions():
    relu = helper.make_node("Relu", ["x"], ["y"])
    graph = import_onnx(_model([relu], [_vi("x", ["N", 3])], [_vi("y", ["N", 3])]), batch=5)
    assert graph.inputs[0].type.shape == (5, 3)
    with pytest.raises(FrontendError, match="'x' has an unknown dimension 1 \\('C'\\)"):
        import_onnx(_model([relu], [_vi("x", [1, "C"])], [_vi("y", [1, "C"])]))


def test_mismatched_element_types():
    inputs = [_vi("x", [2]), _vi("k", [2], TensorProto.DOUBLE)]
    for op in ("Add", "Sum"):
        model = _model([helper.make_node(op, ["x", "k"], ["y"], name="n")], inputs, [_vi("y", [2])])
        with pytest.raises(FrontendError) as info:
            import_onnx(model)
        assert str(info.value) == (
            f"<model t>: {op} node 'n': operands have different element types (f32, f64)"
        )


def test_dilated_average_pool_keeps_its_dilations():
    pool = helper.make_node(
        "AveragePool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1]
    )
    graph = import_onnx(_model([pool], [_vi("x", [1, 3, 5, 5])], [_vi("y", None)], opset=19))
    assert _ops(graph) == ["avg_pool"] and graph.nodes[0].attr("dilations") == (2, 2)
    assert graph.types[graph.outputs[0]].shape == (1, 3, 5, 5)


def test_training_features_are_rejected_naming_the_node():
    x, y = _vi("x", [1, 2, 3, 3]), _vi("y", [1, 2, 3, 3])
    params = [_init(n, np.ones(2, np.float32)) for n in "sbmv"]
    bn = helper.make_node(
        "BatchNormalization",
        ["x", "s", "b", "m", "v"],
        ["y", "rm", "rv"],
        name="bn",
        training_mode=1,
    )
    with pytest.raises(FrontendError, match="BatchNormalization node 'bn': training"):
        import_onnx(_model([bn], [x], [y, _vi("rm", [2]), _vi("rv", [2])], params, opset=15))
    drop = helper.make_node("Dropout", ["x"], ["y", "mask"], name="drop")
    with pytest.raises(FrontendError, match="Dropout node 'drop': the Dropout mask"):
        import_onnx(_model([drop], [x], [y, _vi("mask", [1, 2, 3, 3], TensorProto.BOOL)]))
    pool = helper.make_node("MaxPool", ["x"], ["y", "idx"], name="mp", kernel_shape=[1, 1])
    with pytest.raises(FrontendError, match="MaxPool node 'mp': the Indices output"):
        import_onnx(_model([pool], [x], [y, _vi("idx", [1, 2, 3, 3], TensorProto.INT64)]))


# --- normalisation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auto_pad", "pads", "shape"),
    [
        ("SAME_UPPER", (1, 1, 2, 2), (1, 4, 8, 8)),
        ("SAME_LOWER", (2, 2, 1, 1), (1, 4, 8, 8)),
        ("VALID", (0, 0, 0, 0), (1, 4, 5, 5)),
    ],
)
def test_conv_auto_pad(auto_pad, pads, shape):
    w = _init("w", np.zeros((4, 2, 4, 4), np.float32))
    conv = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=auto_pad, strides=[1, 1])
    graph = import_onnx(_model([conv], [_vi("x", [1, 2, 8, 8])], [_vi("y", None)], [w]))
    (node,) = graph.nodes
    assert node.attr("pads") == pads and node.attr("strides") == (1, 1)
    assert node.attr("dilations") == (1, 1) and node.attr("group") == 1
    assert graph.types["y"].shape == shape


def test_max_pool_same_upper_and_ceil_mode():
    pool = helper.make_node(
        "MaxPool", ["x"], ["y"], kernel_shape=[3], strides=[2], auto_pad="SAME_UPPER"
    )
    graph = import_onnx(_model([pool], [_vi("x", [1, 1, 6])], [_vi("y", None)]))
    assert graph.nodes[0].attr("pads") == (0, 1) and graph.types["y"].shape == (1, 1, 3)
    pool = helper.make_node(
        "AveragePool", ["x"], ["y"], kernel_shape=[2], strides=[2], ceil_mode=1, count_include_pad=1
    )
    graph = import_onnx(_model([pool], [_vi("x", [1, 1, 5])], [_vi("y", None)]))
    node = graph.nodes[0]
    assert node.attr("ceil_mode") and node.attr("count_include_pad")
    assert graph.types["y"].shape == (1, 1, 3)


def test_gemm_with_constant_b_becomes_linear():
    b = np.arange(12, dtype=np.float32).reshape(4, 3)  # transB: B is [N=4, K=3]
    c = np.arange(4, dtype=np.float32)
    gemm = helper.make_node("Gemm", ["x", "b", "c"], ["y"], transB=1, alpha=2.0, beta=0.5)
    graph = import_onnx(
        _model([gemm], [_vi("x", [2, 3])], [_vi("y", [2, 4])], [_init("b", b), _init("c", c)])
    )
    (node,) = graph.nodes
    assert node.op == "linear" and node.outputs == ("y",)
    np.testing.assert_array_equal(graph.constant_data(node.inputs[1]), 2 * b.T)
    np.testing.assert_array_equal(graph.constant_data(node.inputs[2]), 0.5 * c)


def test_gemm_with_runtime_b_and_full_c():
    gemm = helper.make_node("Gemm", ["x", "b", "c"], ["y"], transA=1, transB=1)
    c = _init("c", np.ones((2, 4), np.float32))  # (M, N): not a bias
    graph = import_onnx(
        _model([gemm], [_vi("x", [3, 2]), _vi("b", [4, 3])], [_vi("y", [2, 4])], [c])
    )
    assert _ops(graph) == ["transpose", "transpose", "matmul", "add"]
    assert graph.outputs == ("y",)


def test_matmul_with_constant_rhs_is_linear():
    w = _init("w", np.ones((3, 5), np.float32))
    mm = helper.make_node("MatMul", ["x", "w"], ["y"])
    assert _ops(import_onnx(_model([mm], [_vi("x", [2, 3])], [_vi("y", None)], [w]))) == ["linear"]
    mm = helper.make_node("MatMul", ["x", "z"], ["y"])
    model = _model([mm], [_vi("x", [2, 3]), _vi("z", [3, 5])], [_vi("y", None)])
    assert _ops(import_onnx(model)) == ["matmul"]


def test_reshape_target_rules():
    assert reshape_target((2, 3, 4), [0, -1]) == (2, 12)
    assert reshape_target((2, 3, 4), [-1, 0, 2]) == (4, 3, 2)
    assert reshape_target((0, 3), [0, 3], allowzero=True) == (0, 3)
    assert reshape_target((2, 3, 4), [4, 0, -1]) == (4, 3, 2)


def test_reshape_flatten_squeeze_unsqueeze_become_static_reshapes():
    shape = _init("s", np.array([0, -1], np.int64))
    axes = _init("axes", np.array([0], np.int64))
    nodes = [
        helper.make_node("Reshape", ["x", "s"], ["r"]),  # [2,3,4] -> [2,12]
        helper.make_node("Unsqueeze", ["r", "axes"], ["u"]),  # -> [1,2,12]
        helper.make_node("Squeeze", ["u", "axes"], ["q"]),  # -> [2,12]
        helper.make_node("Flatten", ["q"], ["y"], axis=0),  # -> [1,24]
    ]
    graph = import_onnx(_model(nodes, [_vi("x", [2, 3, 4])], [_vi("y", None)], [shape, axes]))
    assert [n.attr("shape") for n in graph.nodes] == [(2, 12), (1, 2, 12), (2, 12), (1, 24)]
    with pytest.raises(FrontendError, match=r"Reshape node 'Reshape_0'.*must be a constant"):
        import_onnx(
            _model(
                nodes[:1],
                [_vi("x", [2, 3, 4]), _vi("s", [2], TensorProto.INT64)],
                [_vi("r", [2, 12])],
            )
        )


def test_softmax_coercion_before_opset_13():
    soft = helper.make_node("Softmax", ["x"], ["y"], axis=1)
    old = import_onnx(_model([soft], [_vi("x", [2, 3, 4])], [_vi("y", None)], opset=11))
    assert _ops(old) == ["reshape", "softmax", "reshape"] and old.outputs == ("y",)
    assert old.nodes[0].attr("shape") == (2, 12)
    new = import_onnx(_model([soft], [_vi("x", [2, 3, 4])], [_vi("y", None)], opset=13))
    assert _ops(new) == ["softmax"] and new.nodes[0].attr("axis") == 1


def test_constant_subgraphs_are_folded():
    nodes = [
        helper.make_node("Constant", [], ["shape"], value=_init("v", np.array([2, 3], np.int64))),
        helper.make_node(
            "ConstantOfShape", ["shape"], ["w"], value=_init("f", np.array([0.5], np.float32))
        ),
        helper.make_node("Range", ["zero", "three", "one"], ["k"]),  # not an IR op: folded
        helper.make_node("Cast", ["k"], ["kf"], to=F),
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "kf"], ["y"]),
    ]
    scalars = [
        _init(n, np.array(v, np.float32)) for n, v in [("zero", 0), ("three", 3), ("one", 1)]
    ]
    graph = import_onnx(_model(nodes, [_vi("x", [1, 2])], [_vi("y", None)], scalars))
    assert _ops(graph) == ["linear", "add"]
    np.testing.assert_array_equal(graph.constant_data("w"), np.full((2, 3), 0.5, np.float32))
    np.testing.assert_array_equal(graph.constant_data("kf"), [0, 1, 2])


def test_shape_of_static_values_is_folded():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Reshape", ["x", "s2"], ["r"]),
        helper.make_node("Reshape", ["r", "s"], ["y"]),
    ]
    s2 = _init("s2", np.array([-1], np.int64))
    graph = import_onnx(_model(nodes, [_vi("x", ["N", 3])], [_vi("y", ["N", 3])], [s2]), batch=2)
    assert [n.attr("shape") for n in graph.nodes] == [(6,), (2, 3)]


def test_freeze_inputs_and_initializers_listed_as_inputs():
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"])
    w = np.ones((2, 1, 1, 1), np.float32)
    inputs = [_vi("x", [1, 1, 3, 3]), _vi("w", [2, 1, 1, 1]), _vi("b", [2])]
    model = _model([conv], inputs, [_vi("y", None)], [_init("b", np.zeros(2, np.float32))])
    graph = import_onnx(model, freeze_inputs={"w": w})
    assert [v.name for v in graph.inputs] == ["x"] and set(graph.constants) == {"w", "b"}
    with pytest.raises(FrontendError, match="cannot freeze 'q'"):
        import_onnx(model, freeze_inputs={"q": w})
    with pytest.raises(FrontendError, match="frozen input 'w' is float64"):
        import_onnx(model, freeze_inputs={"w": w.astype(np.float64)})


def test_old_broadcast_axis_and_dropout_identity():
    nodes = [
        helper.make_node("Add", ["x", "c"], ["a"], broadcast=1, axis=1),
        helper.make_node("Dropout", ["a"], ["d"], is_test=1),
        helper.make_node("Identity", ["d"], ["y"]),
    ]
    c = _init("c", np.arange(3, dtype=np.float32))
    graph = import_onnx(_model(nodes, [_vi("x", [1, 3, 2, 2])], [_vi("y", None)], [c], opset=6))
    assert _ops(graph) == ["add"] and graph.outputs == ("y",)
    assert graph.types[graph.nodes[0].inputs[1]].shape == (3, 1, 1)


def test_pad_clip_cast_concat_transpose():
    nodes = [
        helper.make_node("Pad", ["x", "pads", "", "axes"], ["p"], mode="reflect"),
        helper.make_node("Clip", ["p", "lo", ""], ["c"]),
        helper.make_node("Concat", ["c", "c"], ["k"], axis=-1),
        helper.make_node("Transpose", ["k"], ["t"]),
        helper.make_node("Cast", ["t"], ["y"], to=TensorProto.FLOAT16),
    ]
    inits = [
        _init("pads", np.array([1, 2], np.int64)),
        _init("axes", np.array([-1], np.int64)),
        _init("lo", np.array(0.0, np.float32)),
    ]
    output = _vi("y", [12, 2], TensorProto.FLOAT16)
    graph = import_onnx(_model(nodes, [_vi("x", [2, 3])], [output], inits, opset=18))
    pad, clip, concat, transpose, cast = graph.nodes
    assert pad.attr("pads") == (0, 1, 0, 2) and pad.attr("mode") == "reflect"
    assert clip.attr("min") == 0.0 and clip.attr("max") == float("inf")
    assert concat.attr("axis") == 1 and transpose.attr("perm") == (1, 0)
    assert cast.attr("to") is DType.F16 and graph.types["y"].shape == (12, 2)
