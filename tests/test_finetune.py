"""imcc finetune: the torch datapath against the numpy one, the torch module against the
simulator, gradients through MTJ converters, and the command end to end."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from imcc import cli
from imcc.backend import kernels
from imcc.backend.crossbar import Converter, Statistics, crossbar_matmul, mtj_decoder
from imcc.backend.simulator import CrossbarInterpreter
from imcc.driver import calibration_data, default_pipeline
from imcc.examples import example_path
from imcc.finetune.datapath import (
    Datapath,
    MTJConversion,
    crossbar_conv,
    crossbar_linear,
    fuse_converters,
    mtj_counts,
    ste,
)
from imcc.finetune.export import METADATA_KEY, learned_normalisation
from imcc.finetune.module import MappedNetwork
from imcc.finetune.session import compile_model
from imcc.frontend.datasets import load_dataset
from imcc.frontend.hw import load_target
from imcc.ir.io import load_program
from imcc.ir.mapping import InputStreaming, WeightMapping
from imcc.ir.rebatch import rebatch
from imcc.target import ConverterKind

MAPPINGS = [  # (encoding, weight slices, devices, signed columns, signed inputs, input slices)
    ("differential", (2, 2, 2, 2), 2, True, False, (1,) * 8),
    ("differential", (4, 2, 2), 2, False, True, (3, 3, 2)),
    ("offset", (4, 4), 1, False, True, (4, 4)),
    ("center-offset", (2, 2, 2, 2), 2, True, False, (2, 2, 2, 2)),
]
CONVERTERS = [
    Converter(ConverterKind.SAR, 4),
    Converter(ConverterKind.FLASH, 3, range_rule="saturate"),
    Converter(ConverterKind.SENSE_AMP, 1),
    Converter(ConverterKind.SAR, 24, range_rule="saturate"),
]


def _path(
    mapping: tuple, converter: Converter, rows: int, centers: np.ndarray | None
) -> tuple[Datapath, InputStreaming, WeightMapping]:
    encoding, slices, devices, signed_columns, signed_inputs, input_slices = mapping
    streaming = InputStreaming(8, input_slices, signed_inputs, False)
    weights = WeightMapping(encoding, slices, devices)
    return (
        Datapath(
            streaming,
            weights,
            8,
            rows,
            signed_columns,
            converter,
            None if centers is None else tuple(int(c) for c in centers),
        ),
        streaming,
        weights,
    )


@pytest.mark.parametrize("mapping", MAPPINGS)
@pytest.mark.parametrize("converter", CONVERTERS, ids=lambda c: f"{c.kind.value}{c.bits}")
def test_torch_datapath_equals_numpy_datapath(mapping: tuple, converter: Converter) -> None:
    rng = np.random.default_rng(1)
    signed_inputs = mapping[4]
    low, high = (-128, 127) if signed_inputs else (0, 255)
    centers = rng.integers(-4, 5, 6) if mapping[0] == "center-offset" else None
    path, streaming, weights = _path(mapping, converter, 48, centers)
    x, w = rng.integers(low, high + 1, (19, 130)), rng.integers(-127, 128, (130, 6))
    expected = crossbar_matmul(
        x,
        w,
        streaming,
        weights,
        8,
        48,
        mapping[3],
        converter,
        np.random.default_rng(0),
        Statistics(),
        fast=False,
        centers=centers,
    )
    got = crossbar_linear(
        torch.tensor(x, dtype=torch.float64),
        torch.tensor(w, dtype=torch.float64),
        path,
        None,
        None,
        None,
    )
    assert np.array_equal(got.numpy(), expected)
    xc, wc = rng.integers(low, high + 1, (2, 7, 6, 5)), rng.integers(-127, 128, (6, 7, 3, 3))
    patches, out = kernels.im2col(xc, (3, 3), (2, 1), (1, 0, 1, 2), (1, 2), 1)
    expected = kernels.col2im(
        crossbar_matmul(
            patches[0],
            kernels.conv_filters(wc, 1)[0],
            streaming,
            weights,
            8,
            48,
            mapping[3],
            converter,
            np.random.default_rng(0),
            Statistics(),
            fast=False,
            centers=centers,
        )[None],
        2,
        out,
    )
    got = crossbar_conv(
        torch.tensor(xc, dtype=torch.float64),
        torch.tensor(wc, dtype=torch.float64),
        path,
        (2, 1),
        (1, 0, 1, 2),
        (1, 2),
        None,
        None,
        None,
    )
    assert np.array_equal(got.numpy(), expected)
    if converter.bits == 24:  # lossless: the integer product, and the STE is the identity
        assert np.array_equal(
            got.numpy(), kernels.conv(xc, wc, None, (2, 1), (1, 0, 1, 2), (1, 2), 1)
        )
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
        grad = torch.tensor(rng.standard_normal((19, 6)))
        (crossbar_linear(xt, wt, path, None, None, None) * grad).sum().backward()
        assert torch.allclose(xt.grad, grad @ wt.detach().T)
        assert torch.allclose(wt.grad, xt.detach().T @ grad)


@pytest.fixture(scope="module")
def digits_program():
    """digits-cnn mapped for sotmtj by its default pipeline (MTJ converters, calibrated)."""
    model = example_path("digits-cnn")
    target = load_target("sotmtj")
    calibration, _ = calibration_data("digits-cnn", model)
    program = compile_model(model, target, "sotmtj", default_pipeline(target), calibration, 0)
    return program, target


def test_module_with_lossless_converters_equals_simulator(digits_program) -> None:
    program, target = digits_program
    data = load_dataset("digits-cnn", 48)
    batched = rebatch(program, 48)
    expected = CrossbarInterpreter(target, np.random.default_rng(0), lossless=True).run(
        batched, {batched.inputs[0].name: data.images}
    )[batched.outputs[0]]
    network = MappedNetwork(program, target, lossless=True)
    for layer in network.layers:
        layer.exact = True
    with torch.no_grad():
        got = network(torch.from_numpy(data.images)).numpy()
    assert np.array_equal(got, expected)  # bit for bit: integer products, same float ops


@pytest.mark.parametrize("backward", ["clamp", "tanh"])
def test_gradients_reach_weights_and_normalisation_through_mtj(
    digits_program, backward: str
) -> None:
    program, target = digits_program
    data = load_dataset("digits-cnn", 32)
    network = MappedNetwork(program, target, backward=backward)
    torch.manual_seed(0)
    loss = torch.nn.functional.cross_entropy(
        network(torch.from_numpy(data.images)), torch.from_numpy(data.labels)
    )
    loss.backward()
    for layer in network.layers:
        assert layer.log_scale is not None and layer.offset is not None
        for parameter in (layer.weight, layer.bias, layer.log_scale, layer.offset):
            assert parameter.grad is not None and float(parameter.grad.abs().sum()) > 0


def imcc(capsys, *argv: object) -> tuple[int, str, str]:
    """Run `imcc ARGV` in-process; return exit status, stdout and stderr."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_finetune_command_reports_the_simulation_of_the_exported_model(
    capsys, tmp_path: Path
) -> None:
    out = tmp_path / "ft.onnx"
    code, stdout, err = imcc(
        capsys,
        "finetune",
        "digits-cnn",
        "--target",
        "sotmtj",
        "--data",
        "digits-cnn",
        "--epochs",
        "1",
        "--train",
        "96",
        "--holdout",
        "72",
        "--report",
        tmp_path / "r.json",
        "-o",
        out,
    )
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["holdout"] == 72 and report["after"]["samples"] == 72
    assert f"after:  mapped accuracy {report['accuracy_after']:.2%}" in stdout
    # the exported model: new weights, batch norms folded away, the learned normalisation
    model = onnx.load(str(out))
    assert "BatchNormalization" not in {node.op_type for node in model.graph.node}
    assert METADATA_KEY in {prop.key for prop in model.metadata_props}
    learned = learned_normalisation(out)
    program = load_program(tmp_path / "ft.imcir")
    mtj = [n for n in program.nodes if "ps_scale" in n.attributes]
    assert {n.name for n in mtj} == set(learned)
    for node in mtj:
        assert list(node.attr("ps_scale")) == learned[node.name][0]
    # the accuracy reported is imcc simulate's on the held-out images of the exported program
    code, stdout, err = imcc(
        capsys,
        "simulate",
        report["program"],
        "--data",
        f"npz:{report['holdout_data']}",
        "--batch",
        report["sim_batch"],
        "--json",
    )
    assert code == 0, err
    assert json.loads(stdout)["accuracy"] == report["accuracy_after"]
    # a plain compile of the exported model maps it with the learned normalisation
    code, stdout, err = imcc(
        capsys,
        "compile",
        out,
        "--target",
        "sotmtj",
        "--calib",
        "digits-cnn",
        "--simulate",
        "digits-cnn",
        "--limit",
        "64",
        "-o",
        tmp_path / "plain.imcir",
    )
    assert code == 0, err
    assert "mapped accuracy" in stdout
    assert f"note: {len(mtj)} MTJ layers take the normalisation learned" in err
    plain = load_program(tmp_path / "plain.imcir")
    for node in (n for n in plain.nodes if "ps_scale" in n.attributes):
        assert list(node.attr("ps_scale")) == learned[node.name][0]
        assert list(node.attr("ps_offset")) == learned[node.name][1]
    # fine-tuning the exported model again starts from where the first run ended
    code, stdout, err = imcc(
        capsys,
        "finetune",
        out,
        "--target",
        "sotmtj",
        "--data",
        "digits-cnn",
        "--epochs",
        "0",
        "--train",
        "96",
        "--holdout",
        "72",
        "--report",
        tmp_path / "again.json",
        "-o",
        tmp_path / "again.onnx",
    )
    assert code == 0, err
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["before"]["accuracy"] == report["accuracy_after"]
    assert again["before"]["layers"] == report["after"]["layers"]
    assert f"finetune: {len(mtj)} MTJ layers start from the normalisation ft.onnx learned" in stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ("--epochs", "-1"),
            "error: finetune: --epochs must be >= 0, not -1\n",
        ),
        (
            ("--datapath-images", "-1"),
            "error: finetune: --datapath-images must be >= 0 (0: all), not -1\n",
        ),
        (
            ("--train", "300", "--holdout", "72"),
            "error: finetune: --train 300 and --holdout 72 do not fit the 360 images of "
            "digits-cnn\n",
        ),
        (
            ("--train", "10"),
            "error: finetune: --train 10 does not cover the first 64 images calibration uses\n",
        ),
        (
            ("--backward", "sign"),
            "error: argument --backward: invalid choice: 'sign' (choose from clamp, tanh)\n",
        ),
    ],
)
def test_finetune_bad_flags_exit_2(capsys, tmp_path: Path, argv: tuple, message: str) -> None:
    code, _, err = imcc(
        capsys,
        "finetune",
        "digits-cnn",
        "--target",
        "sotmtj",
        "--data",
        "digits-cnn",
        "-o",
        tmp_path / "x.onnx",
        *argv,
    )
    assert code == 2
    assert err.startswith(message)
    assert "Traceback" not in err


def test_finetune_refuses_unfolded_batch_norms(capsys, tmp_path: Path) -> None:
    """A pipeline without the clean-up keeps a model's batch norms, which the exported model
    would fold into the weights: refused before any simulation, with the fix as hint."""
    from tests.onnx_models import fashion_mnist_dir

    folder = fashion_mnist_dir()
    if folder is None:
        pytest.skip("Fashion-MNIST not fetched")
    root = Path(__file__).resolve().parents[1]
    code, _, err = imcc(
        capsys,
        "finetune",
        root / "models" / "fashion_vgg.onnx",
        "--target",
        "sotmtj",
        "--data",
        f"fashion-mnist:{folder}",
        "--passes",
        "assign-input-precision,quantize,tile-crossbar,select-adc,share-columns,place",
        "-o",
        tmp_path / "x.onnx",
    )
    assert code == 2 and "still has batch norms" in err and "fold-batchnorm" in err
    assert not (tmp_path / "x.onnx").exists()


def test_finetune_needs_data(capsys, tmp_path: Path) -> None:
    code, _, err = imcc(
        capsys, "finetune", "digits-cnn", "--target", "sotmtj", "-o", tmp_path / "x.onnx"
    )
    assert code == 2
    assert err.startswith("error: the following arguments are required: --data\n")


@pytest.mark.parametrize("samples", [1, 4, 16])
@pytest.mark.parametrize("backward", ["clamp", "tanh"])
def test_mtj_conversion_gradients_equal_the_straight_through_expression(
    samples: int, backward: str
) -> None:
    """The fused MTJ node's forward is the sampled decoding and its backward the derivative of
    `(ste(surrogate, x_hat) - b) / a` under autograd, for the same draws."""
    converter = Converter(ConverterKind.MTJ, 1, samples=samples)
    gen = torch.Generator().manual_seed(3)
    sums = torch.randn(5, 6, 4, 3, generator=gen, dtype=torch.float64) * 40
    a0 = torch.rand(1, 6, 1, 1, generator=gen, dtype=torch.float64) * 0.05 + 0.01
    b0 = torch.randn(1, 6, 1, 1, generator=gen, dtype=torch.float64) * 0.3
    grad = torch.randn(5, 6, 4, 3, generator=gen, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (sums, a0, b0)]
    out = MTJConversion.apply(*leaves, converter, torch.Generator().manual_seed(7), backward)
    (out * grad).sum().backward()
    ref_leaves = [t.clone().requires_grad_() for t in (sums, a0, b0)]
    ps, a, b = ref_leaves
    x = a * ps + b
    clamped = torch.clamp(x, -1.0, 1.0)
    p = torch.sigmoid(converter.sensitivity * clamped.detach())
    counts = mtj_counts(p, samples, torch.Generator().manual_seed(7))
    x_hat = torch.from_numpy(mtj_decoder(samples, converter.sensitivity)).double()[counts.long()]
    surrogate = (
        clamped
        if backward == "clamp"
        else (2.0 / converter.sensitivity) * torch.tanh(converter.sensitivity * x / 2.0)
    )
    expected = (ste(surrogate, x_hat) - b) / a
    (expected * grad).sum().backward()
    assert torch.allclose(out, expected)
    assert 0.05 < float((x.detach().abs() > 1).double().mean()) < 0.95  # both STE regions
    for got, want in zip(leaves, ref_leaves, strict=True):
        assert torch.allclose(got.grad, want.grad)


@pytest.mark.parametrize("samples", [1, 4, 16])
def test_mtj_counts_are_binomial(samples: int) -> None:
    """The sampler's counts follow Binomial(samples, p): mean, variance and the full
    distribution at a few p (chi-square against the pmf)."""
    gen = torch.Generator().manual_seed(0)
    for p in (0.02, 0.3, 0.5, 0.9):
        counts = mtj_counts(torch.full((200_000,), p, dtype=torch.float32), samples, gen)
        observed = np.bincount(counts.numpy(), minlength=samples + 1)
        expected = (
            np.array(
                [
                    math.comb(samples, k) * p**k * (1 - p) ** (samples - k)
                    for k in range(samples + 1)
                ]
            )
            * counts.numel()
        )
        keep = expected > 5
        chi2 = float((((observed - expected) ** 2 / expected)[keep]).sum())
        freedom = max(1, int(keep.sum()) - 1)  # chi-square mean `freedom`, sd sqrt(2 freedom)
        assert chi2 < freedom + 6 * math.sqrt(2 * freedom), (p, observed, expected)


@pytest.mark.parametrize("backward", ["clamp", "tanh"])
def test_fused_mtj_conversion_samples_the_binomial_and_keeps_the_ste(backward: str) -> None:
    """The compiled MTJ kernel (training's default): decoded values from the counter's table,
    counts Binomial(N, sigmoid(s * clamp(x))) per column, the backward's tensors as eager."""
    samples, s = 4, 4.0
    converter = Converter(ConverterKind.MTJ, 1, samples=samples, sensitivity=s)
    x = torch.tensor([-1.5, -0.4, 0.0, 0.3, 1.2])  # normalised sums, two outside [-1, 1]
    a = torch.tensor([0.02, 0.05, 0.1, 0.04, 0.01]).reshape(1, -1)
    b = torch.tensor([0.1, -0.2, 0.0, 0.3, -0.1]).reshape(1, -1)
    sums = ((x - b) / a).expand(100_000, -1).contiguous().requires_grad_()
    fuse_converters(True)
    try:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # the compiled kernel, no fallback
            out = MTJConversion.apply(sums, a, b, converter, None, backward)
        grad = torch.randn(out.shape)
        (out * grad).sum().backward()
    finally:
        fuse_converters(False)
    table = mtj_decoder(samples, s)
    x_hat = (out.detach() * a + b).numpy()
    counts = np.abs(x_hat[..., None] - table).argmin(axis=-1)
    assert np.allclose(table[counts], x_hat, atol=1e-5)
    for column, value in enumerate(x.tolist()):
        p = 1.0 / (1.0 + math.exp(-s * max(-1.0, min(1.0, value))))
        observed = np.bincount(counts[:, column], minlength=samples + 1)
        expected = np.array(
            [math.comb(samples, k) * p**k * (1 - p) ** (samples - k) for k in range(samples + 1)]
        ) * len(counts)
        keep = expected > 5
        chi2 = float((((observed - expected) ** 2 / expected)[keep]).sum())
        freedom = max(1, int(keep.sum()) - 1)
        assert chi2 < freedom + 6 * math.sqrt(2 * freedom), (value, observed, expected)
    inside = (
        ((x >= -1) & (x <= 1)).double()
        if backward == "clamp"
        else 1 - torch.tanh(s * x.double() / 2) ** 2
    )
    assert torch.allclose(sums.grad.double(), grad.double() * inside, atol=1e-6)


@pytest.mark.parametrize("quantize", ["quantize", "quantize{method=percentile percentile=99.5}"])
def test_recalibrated_input_scales_equal_the_quantize_pass(quantize: str) -> None:
    """Fine-tuning re-measures input scales as the pipeline's quantize pass does (its method)."""
    from imcc.finetune.session import input_range
    from imcc.finetune.train import recalibrate_inputs
    from imcc.frontend.onnx import import_onnx
    from imcc.passes.context import Context
    from imcc.passes.manager import PassManager
    from imcc.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline

    target = load_target("sotmtj")
    model = example_path("digits-cnn")
    calibration, _ = calibration_data("digits-cnn", model)
    pipeline = default_pipeline(target).replace("quantize", quantize, 1)
    program = compile_model(model, target, "sotmtj", pipeline, calibration, 0)
    float_graph = PassManager(parse_pipeline(DEFAULT_PIPELINE)).run(
        import_onnx(str(model)), Context(seed=0)
    )
    network = MappedNetwork(program, target, float_graph)
    expected = [layer.quantizer.scale for layer in network.layers]
    for layer in network.layers:  # forget them: recalibration must measure them again
        layer.quantizer = replace(layer.quantizer, scale=1.0)
    recalibrate_inputs(network, calibration, input_range=input_range(pipeline))
    got = [layer.quantizer.scale for layer in network.layers]
    assert got == pytest.approx(expected, rel=1e-5)
    if "percentile" in quantize:  # and the method matters: minmax gives other scales
        recalibrate_inputs(network, calibration)
        assert [layer.quantizer.scale for layer in network.layers] != pytest.approx(
            expected, rel=1e-3
        )


@pytest.mark.parametrize("samples", [1, 4])
def test_surrogate_error_has_the_moments_of_the_datapath_error(samples: int) -> None:
    """The surrogate forward adds, per output channel, an error with the mean and spread the
    sampled MTJ datapath's error has on the same inputs."""
    from imcc.finetune.train import measure_datapath_error

    target = load_target("sotmtj")
    model = example_path("digits-cnn")
    calibration, _ = calibration_data("digits-cnn", model)
    pipeline = default_pipeline(target).replace("select-adc", f"select-adc{{samples={samples}}}")
    program = compile_model(model, target, "sotmtj", pipeline, calibration, 0)
    network = MappedNetwork(program, target)
    torch.manual_seed(0)
    measure_datapath_error(network, calibration[:32])
    layer = network.layers[1]  # a conv: channels on axis 1
    assert layer.surrogate_error is not None
    bias, spread = layer.surrogate_error
    assert float(spread.min()) > 0  # sampling noise in every MTJ channel
    x = torch.randn(256, 8, 4, 4).abs() * 4 * layer.quantizer.scale
    with torch.no_grad():
        codes = layer._input_codes(x)
        w_codes = layer.weight_codes()[0].to(torch.float32)
        exact = layer._product(codes, w_codes, float_op=True)
        layer.mode = "surrogate"
        rms = exact.pow(2).mean(dim=(0, 2, 3)).sqrt()
        rms = torch.maximum(rms, rms.median())
        dequantized = layer(x) - layer._bias_shape()
        scales = (layer.quantizer.scale * layer.weight_codes()[1]).to(torch.float32)
        error = dequantized / scales.reshape(1, -1, 1, 1) - exact
    assert torch.allclose(
        error.mean(dim=(0, 2, 3)) / rms, bias, atol=0.02 + 0.05 * float(spread.max())
    )
    assert torch.allclose(error.std(dim=(0, 2, 3)) / rms, spread, rtol=0.1, atol=1e-3)


def test_surrogate_epochs_run_before_the_datapath_epochs(digits_program) -> None:
    from imcc.finetune.train import TrainConfig, train

    program, target = digits_program
    data = load_dataset("digits-cnn", 64)
    network = MappedNetwork(program, target)
    before = [layer.weight.detach().clone() for layer in network.layers]
    records = train(
        network,
        data.images,
        data.labels,
        TrainConfig(epochs=1, surrogate_epochs=2, batch=32, fuse=False),
        data.images,
    )
    assert [r.forward for r in records] == ["surrogate", "surrogate", "mapped"]
    assert all(layer.mode == "mapped" for layer in network.layers)
    assert any(
        not torch.equal(b, layer.weight) for b, layer in zip(before, network.layers, strict=True)
    )


def test_datapath_epochs_train_on_a_fresh_subset_of_datapath_images(digits_program) -> None:
    from imcc.errors import UserError
    from imcc.finetune.train import TrainConfig, train

    program, target = digits_program
    data = load_dataset("digits-cnn", 64)
    network = MappedNetwork(program, target)
    seen: list[torch.Tensor] = []
    network.layers[0].register_forward_hook(
        lambda module, args, out: (
            seen.append(args[0].detach().clone()) if module.mode == "mapped" else None
        )
    )
    records = train(
        network,
        data.images,
        data.labels,
        TrainConfig(epochs=2, batch=8, datapath_images=16, fuse=False),
        data.images,
    )
    assert [r.forward for r in records] == ["mapped", "mapped"]
    assert sum(len(x) for x in seen) == 2 * 16  # 16 of the 64 images per epoch, 2 epochs
    first, second = torch.cat(seen[:2]), torch.cat(seen[2:])
    assert not torch.equal(first, second)  # each epoch draws its own subset
    with pytest.raises(UserError):
        TrainConfig(datapath_images=-1)


def test_each_stage_has_its_own_cosine_from_the_peak() -> None:
    from imcc.finetune.train import learning_rate_factor

    stages = (100, 10)
    assert learning_rate_factor(0, stages) == 1.0
    assert learning_rate_factor(50, stages) == pytest.approx(0.5)
    assert learning_rate_factor(99, stages) < 0.01
    assert learning_rate_factor(100, stages) == 1.0  # the datapath stage restarts at the peak
    assert learning_rate_factor(105, stages) == pytest.approx(0.5)
    assert learning_rate_factor(110, stages) == 0.0
    assert learning_rate_factor(0, (0, 10)) == 1.0  # no surrogate epochs
    assert learning_rate_factor(100, stages, (1.0, 0.3)) == pytest.approx(0.3)  # --datapath-lr
    assert learning_rate_factor(105, stages, (1.0, 0.3)) == pytest.approx(0.15)


def test_surrogate_strength_ramps_over_the_first_half() -> None:
    from imcc.finetune.train import surrogate_strength

    assert [surrogate_strength(e, 4) for e in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert [surrogate_strength(e, 6) for e in range(6)] == pytest.approx(
        [1 / 3, 2 / 3, 1.0, 1.0, 1.0, 1.0]
    )
    assert surrogate_strength(0, 1) == 1.0
    assert [surrogate_strength(e, 4, ramp=0.0) for e in range(4)] == [1.0] * 4
