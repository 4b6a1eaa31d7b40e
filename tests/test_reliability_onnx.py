"""Hostile ONNX input through the command line: each is one `error:` message with a `hint:`,
exit status 2 and no traceback, never a crash or a silent wrong number.

One test per class of input: corrupt protobufs, external data, empty and zero-size graphs,
negative dimensions, huge paddings, non-finite weights, malformed graphs, and
`imcc run --check-ort` on a model onnxruntime refuses or on outputs that are not finite.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from imcc.cli import main
from imcc.errors import FrontendError
from imcc.frontend.onnx import import_onnx

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "examples" / "digits_cnn.onnx"


def imcc(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """Run the command line; return the exit status, stdout and stderr."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    """Run a command that must be refused as a user error; return its message."""
    code, _, err = imcc(capsys, *argv)
    assert code == 2, f"{argv}: exit {code}, stderr: {err}"
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(("error:", "hint:"))]
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], err
    return err


def conv_model(
    x_shape: tuple[int, ...] = (1, 1, 8, 8),
    weight: np.ndarray | None = None,
    **attrs: object,
) -> onnx.ModelProto:
    """x -> Conv(w) -> y, opset 17; the output's shape is left for shape inference."""
    weight = np.ones((2, 1, 3, 3), np.float32) if weight is None else weight
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv0", **attrs)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def small_model(
    nodes: list[onnx.NodeProto],
    initializers: tuple[TensorProto, ...] = (),
    x_shape: list[int | str] | None = None,
    x_type: int = TensorProto.FLOAT,
    opset: int = 17,
) -> onnx.ModelProto:
    """A graph x[1,4] -> nodes -> y, opset 17."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", x_type, x_shape or [1, 4])],
        [helper.make_tensor_value_info("y", x_type, None)],
        list(initializers),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def save(model: onnx.ModelProto, path: Path) -> Path:
    """Write a model without checking it (the point is that it may be malformed), its output
    types filled in by shape inference where it can (the checker wants them declared)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        known = {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    except (onnx.shape_inference.InferenceError, ValueError, RuntimeError):
        known = {}
    for output in model.graph.output:
        if output.type.tensor_type.HasField("shape"):
            continue
        if output.name in known and known[output.name].tensor_type.HasField("shape"):
            output.type.CopyFrom(known[output.name])
        else:
            output.type.tensor_type.shape.SetInParent()
    path.write_bytes(model.SerializeToString())
    return path


def test_corrupt_protobufs(capsys, tmp_path: Path) -> None:
    data = DIGITS.read_bytes()
    cases = {
        "truncated.onnx": (data[: len(data) // 2], "its bytes do not decode"),
        "text.onnx": (b"this is not a model\n", "its bytes do not decode"),
        "empty.onnx": (b"", "the file is empty"),
    }
    # A damaged name: protobuf hands invalid UTF-8 over as bytes, which broke the printer.
    model = onnx.load(DIGITS)
    model.graph.node[0].name = "NAME_MARK_0"
    flipped = model.SerializeToString().replace(b"NAME_MARK_0", b"NAME\xff\xfeMARK0")
    cases["flipped.onnx"] = (flipped, "model.graph.node[0].name is not valid UTF-8 text")
    rng = np.random.default_rng(0)
    for i in range(5):  # random bytes: never a traceback, always the file named
        cases[f"random{i}.onnx"] = (rng.bytes(int(rng.integers(1, 400))), "")
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        err = refused(capsys, "compile", path)
        assert err.startswith(f"error: {path}: "), err
        assert message in err, err
    with pytest.raises(FrontendError, match=r"cannot read ONNX model .*: a directory"):
        import_onnx(tmp_path)


def _external_model(folder: Path, location: str, data: bytes | None) -> Path:
    """Save conv_model() with its weight `w` stored at `location` (written when data given)."""
    model = conv_model()
    tensor = model.graph.initializer[0]
    raw = numpy_helper.to_array(tensor).tobytes()
    tensor.ClearField("float_data")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    if data is not None:
        (folder / location).write_bytes(raw)
    folder.mkdir(exist_ok=True)
    return save(model, folder / "model.onnx")


def test_external_data_stays_in_the_model_folder(capsys, tmp_path: Path) -> None:
    outside = tmp_path / "secret.bin"
    outside.write_bytes(np.ones(18, np.float32).tobytes())
    (tmp_path / "m").mkdir()
    cases = [
        ("missing.bin", None, "tensor 'w': its external data file 'missing.bin' is missing"),
        (
            "../secret.bin",
            None,
            "tensor 'w': refusing external data location '../secret.bin': "
            "it points outside the model's folder",
        ),
        (
            str(outside),
            None,
            f"tensor 'w': refusing the absolute external data location '{outside}'",
        ),
    ]
    for location, data, message in cases:
        path = _external_model(tmp_path / "m", location, data)
        err = refused(capsys, "compile", path)
        assert err.startswith(f"error: {path}: "), err
        assert message in err, err
    # A symbolic link beside the model that leads out of the folder is refused as well.
    (tmp_path / "m" / "link.bin").symlink_to(outside)
    err = refused(capsys, "compile", _external_model(tmp_path / "m", "link.bin", None))
    assert "points outside the model's folder" in err
    # Data that does stay beside the model loads.
    path = _external_model(tmp_path / "m", "w.bin", b"")
    assert imcc(capsys, "compile", path, "-o", tmp_path / "m.imcir")[0] == 0


def test_empty_graphs_and_zero_size_values(capsys, tmp_path: Path) -> None:
    passthrough = helper.make_graph(
        [],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
    )
    no_outputs = small_model([helper.make_node("Relu", ["x"], ["y"])])
    del no_outputs.graph.output[:]
    cases = [
        (
            helper.make_model(passthrough, opset_imports=[helper.make_opsetid("", 17)]),
            (),
            "the graph has no nodes, so there is nothing to compile",
        ),
        (no_outputs, (), "the graph has no outputs, so there is nothing to compute"),
        (
            conv_model(weight=np.ones((0, 1, 3, 3), np.float32)),
            ("--target", "isaac"),
            "Conv node 'conv0': 'w' of type f32[0,1,3,3] has no elements",
        ),
        (
            conv_model(x_shape=(0, 1, 8, 8)),
            (),
            "Conv node 'conv0': 'x' of type f32[0,1,8,8] has no elements",
        ),
        (conv_model(x_shape=(1, 1, -8, 8)), (), "graph input 'x' has a negative dimension 2 (-8)"),
        (
            small_model([helper.make_node("Relu", ["x"], ["y"])], x_shape=[2**20, 2**20]),
            (),
            "graph input 'x' [1048576, 1048576] has 1,099,511,627,776 elements, more than imcc "
            "handles (2^31)",
        ),
    ]
    for i, (model, flags, message) in enumerate(cases):
        err = refused(capsys, "compile", save(model, tmp_path / f"m{i}.onnx"), *flags)
        assert message in err, err


def test_huge_paddings(capsys, tmp_path: Path) -> None:
    pads = numpy_helper.from_array(np.array([0, 10**6, 0, 10**6], np.int64), "p")
    cases = [
        (
            conv_model(pads=[10**6] * 4),
            "Conv node 'conv0': pads [1000000, 1000000, 1000000, 1000000]: the begin pad 1000000 "
            "of spatial axis 0 exceeds both its size 8 and the kernel's reach 2",
        ),
        (conv_model(pads=[0, 10**6, 0, 0]), "the begin pad 1000000 of spatial axis 1"),
        (
            small_model([helper.make_node("Pad", ["x", "p"], ["y"], name="pad0")], (pads,)),
            "Pad node 'pad0': pads [0, 1000000, 0, 1000000]: axis 1 of size 4 is padded by more "
            "than its size",
        ),
    ]
    for i, (model, message) in enumerate(cases):
        err = refused(capsys, "compile", save(model, tmp_path / f"m{i}.onnx"), "--target", "isaac")
        assert message in err, err
    # SAME-style padding of a 1x1 map by a 5x5 kernel stays legal (the kernel's reach is 4).
    model = conv_model(
        x_shape=(1, 1, 1, 1), weight=np.ones((2, 1, 5, 5), np.float32), pads=[2, 2, 2, 2]
    )
    assert imcc(capsys, "compile", save(model, tmp_path / "same.onnx"))[0] == 0


def test_non_finite_weights(capsys, tmp_path: Path) -> None:
    # Infinite Clip bounds mean "no bound" and stay legal.
    bound = numpy_helper.from_array(np.array(-np.inf, np.float32), "low")
    clip = small_model([helper.make_node("Clip", ["x", "low"], ["y"])], (bound,))
    assert imcc(capsys, "compile", save(clip, tmp_path / "clip.onnx"))[0] == 0
    for value, counts in ((np.nan, "1 NaN and 0 infinite"), (np.inf, "0 NaN and 1 infinite")):
        weight = np.ones((2, 1, 3, 3), np.float32)
        weight[1, 0, 2, 2] = value
        path = save(conv_model(weight=weight), tmp_path / f"w{counts[0]}.onnx")
        err = refused(capsys, "compile", path, "--target", "isaac")
        assert (
            f"error: {path}: initializer 'w' (read by Conv node 'conv0') holds {counts} "
            "values" in err
        ), err
    # A weight that only becomes infinite when Gemm's alpha scales it.
    big = numpy_helper.from_array(np.full((4, 4), 1e38, np.float32), "w")
    gemm = small_model([helper.make_node("Gemm", ["x", "w"], ["y"], alpha=1e3, name="fc")], (big,))
    err = refused(capsys, "compile", save(gemm, tmp_path / "gemm.onnx"))
    assert "Gemm node 'fc': constant 'w.scaled' (derived from the model) holds 0 NaN" in err


def test_malformed_graphs(capsys, tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    weight.dims[0] = 1  # the data holds more elements than the dims say
    oversized = conv_model()
    oversized.graph.initializer[0].CopyFrom(weight)
    evil = small_model([helper.make_node("Relu", ["x"], ["y"], domain="com.evil")])
    evil.opset_import.append(helper.make_opsetid("com.evil", 1))
    shape = numpy_helper.from_array(np.array([2**62, 2**62], np.int64), "s")
    cases = [
        (oversized, "initializer 'w' cannot be decoded"),
        (
            small_model(
                [helper.make_node("LeakyRelu", ["x"], ["y"], alpha=float("nan"), name="lr")]
            ),
            "LeakyRelu node 'lr': attribute 'alpha' is nan; imcc needs a finite number",
        ),
        (
            conv_model(x_shape=(1, 3, 8, 8), group=0),
            "Conv node 'conv0': group 0 does not divide the 3 input channels",
        ),
        (evil, "ops of other domains are not supported: com.evil::Relu"),
        (
            small_model(
                [
                    helper.make_node("ConstantOfShape", ["s"], ["c"], name="cos"),
                    helper.make_node("Add", ["x", "c"], ["y"]),
                ],
                (shape,),
            ),
            "constant ConstantOfShape node 'cos' would make 21,267,647,932,558,653,966,460,912,"
            "964,485,513,216 elements, more than imcc handles (2^31)",
        ),
        (
            small_model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add0")]),
            "input 'ghost' of node: name: add0 OpType: Add is not output of any previous nodes",
        ),
        (
            small_model(
                [helper.make_node("Relu", ["z"], ["y"]), helper.make_node("Relu", ["y"], ["z"])]
            ),
            "topologically sorted",
        ),
        (
            small_model(
                [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["x"], ["y"])]
            ),
            "'y' has been used as output names multiple times",
        ),
        (
            small_model([helper.make_node("Relu", ["x"], ["y"])], opset=3),
            "ONNX opset 3 is not supported",
        ),
        (
            small_model([helper.make_node("LeakyRelu", ["x"], ["y"], alpha="big")]),
            "Mismatched attribute type",
        ),
        (
            small_model([helper.make_node("Relu", ["x"], ["y"])], x_shape=["N", "C"]),
            "graph input 'x' has an unknown dimension 1 ('C')",
        ),
    ]
    for i, (model, message) in enumerate(cases):
        path = save(model, tmp_path / f"m{i}.onnx")
        err = refused(capsys, "compile", path)
        assert err.startswith(f"error: {path}: "), err
        assert message in err, err


def test_check_ort_refusal_is_one_message(capsys, tmp_path: Path) -> None:
    # imcc runs Relu on int16; onnxruntime has no kernel for it.
    model = small_model(
        [helper.make_node("Relu", ["x"], ["y"], name="relu0")], x_type=TensorProto.INT16
    )
    path = save(model, tmp_path / "relu16.onnx")
    np.save(tmp_path / "x.npy", np.array([[-1, 2, -3, 4]], np.int16))
    code, out, err = imcc(capsys, "run", path, "--input", tmp_path / "x.npy", "--check-ort")
    assert code == 2 and "Traceback" not in err
    assert "%y: i16[1,4]  min 0  max 4" in out  # imcc's own result comes first
    assert err.startswith(
        f"error: --check-ort: onnxruntime cannot load {path}: "
        "NOT_IMPLEMENTED : Could not find an implementation for Relu"
    ), err
    assert len(err.splitlines()) == 2 and err.splitlines()[1].startswith("hint: drop --check-ort")


def test_check_ort_does_not_pass_non_finite_outputs(capsys, tmp_path: Path) -> None:
    """0 / 0 is NaN in both: a NaN error shows no agreement, so the check fails (exit 2) after
    printing every line and writing -o."""
    model = small_model(
        [helper.make_node("Div", ["x", "x"], ["y"]), helper.make_node("Relu", ["x"], ["z"])]
    )
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    path = save(model, tmp_path / "div.onnx")
    np.save(tmp_path / "x.npy", np.array([[0, 1, 2, 3]], np.float32))
    with np.errstate(all="ignore"):
        code, out, err = imcc(
            capsys,
            "run",
            path,
            "--input",
            tmp_path / "x.npy",
            "--check-ort",
            "-o",
            tmp_path / "out.npz",
        )
    assert code == 2 and "Traceback" not in err
    assert (
        "onnxruntime: %y not finite: ours has 1 NaN or infinite values, onnxruntime's has 1" in out
    )
    assert "max relative error 0" in out  # the other output is compared as usual
    assert "error: --check-ort: cannot compare with onnxruntime: %y is not finite" in err
    assert "hint: " in err
    assert set(np.load(tmp_path / "out.npz").files) == {"y", "z"}


def test_a_batch_norm_that_folds_beyond_float32_is_refused(capsys, tmp_path: Path) -> None:
    model = onnx.load(str(Path(__file__).parent.parent / "examples" / "digits_cnn.onnx"))
    scale = next(t for t in model.graph.initializer if t.name == "features.1.weight")
    values = np.full(numpy_helper.to_array(scale).shape, 3e38, np.float32)  # finite, but the
    scale.CopyFrom(numpy_helper.from_array(values, scale.name))  # folded weights are not
    err = refused(capsys, "compile", save(model, tmp_path / "bn.onnx"))
    assert (
        "folding /features/features.1/BatchNormalization into /features/features.0/Conv "
        "gives weights beyond float32" in err
    ), err


def test_activations_that_overflow_on_calibration_data_are_refused(capsys, tmp_path) -> None:
    """Finite weights whose products overflow float32: the last layer's calibration input was
    infinite, and quantize's scale check raised inside the pass (exit 1)."""
    big = np.full((4, 4), 1e20, np.float32)
    layers = [
        helper.make_node("MatMul", [a, w], [b], name=w)
        for a, w, b in (("x", "w0", "h0"), ("h0", "w1", "h1"), ("h1", "w2", "y"))
    ]
    model = small_model(layers, tuple(numpy_helper.from_array(big, f"w{i}") for i in range(3)))
    err = refused(capsys, "compile", save(model, tmp_path / "overflow.onnx"), "--target", "isaac")
    assert "its input is NaN or infinite on the calibration data" in err, err
    assert err.startswith("error: "), err  # and no numpy RuntimeWarning before it
