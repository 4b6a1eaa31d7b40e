"""imcc finetune: the training product (crossbar_product) against the simulation's (product),
its straight-through gradients against the expression they stand for, the torch module against
the simulator, gradients through MTJ converters, and the command end to end."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from imcc import cli, driver
from imcc.backend import kernels
from imcc.backend.datapath import (
    Draws,
    Statistics,
    convert_mtj,
    crossbar_product,
    partial_sums,
    product,
)
from imcc.backend.simulator import CrossbarInterpreter
from imcc.driver import calibration_data, default_pipeline
from imcc.examples import example_path
from imcc.finetune.export import METADATA_KEY, learned_normalisation
from imcc.finetune.layers import ConvGeometry, _crossbar_conv
from imcc.finetune.module import MappedNetwork
from imcc.frontend.datasets import load_dataset
from imcc.frontend.hw import load_target
from imcc.ir.io import load_program
from imcc.ir.mapping import InputStreaming, WeightMapping
from imcc.ir.rebatch import rebatch
from imcc.passes.layers import crossbar_layers
from imcc.plan import Converter, LayerPlan, mtj_decoder
from imcc.target import ConverterKind

MAPPINGS = [  # (encoding, weight slices, devices, signed columns, signed inputs, input slices)
    ("differential", (2, 2, 2, 2), 2, True, False, (1,) * 8),
    ("differential", (4, 2, 2), 2, False, True, (3, 3, 2)),
    ("offset", (4, 4), 1, False, True, (4, 4)),
    ("center-offset", (2, 2, 2, 2), 2, True, False, (2, 2, 2, 2)),
    ("differential", (4, 4), 2, True, True, (8,)),  # one stream: the codes read as they are
]
CONVERTERS = [
    Converter(ConverterKind.SAR, 4),
    Converter(ConverterKind.FLASH, 3, range_rule="saturate"),
    Converter(ConverterKind.SENSE_AMP, 1),
    Converter(ConverterKind.SAR, 24, range_rule="saturate"),
]
TILE_ROWS, ACTIVE_ROWS = 64, 48  # row tiles of 64 rows read 48 at a time: short chunks too


def _plan(
    mapping: tuple,
    converter: Converter,
    rows: int,
    filters: int,
    centers: np.ndarray | None,
    layout: tuple[int, int] = (TILE_ROWS, ACTIVE_ROWS),
) -> LayerPlan:
    """Return the plan of a K = `rows` by N = `filters` product (one group) of a mapping, its
    rows in tiles of `layout[0]` read `layout[1]` at a time."""
    encoding, slices, devices, signed_columns, signed_inputs, input_slices = mapping
    return LayerPlan(
        "L",
        InputStreaming(8, input_slices, signed_inputs, False),
        WeightMapping(encoding, slices, devices),
        8,
        signed_columns,
        rows,
        filters,
        1,
        *layout,
        converter,
        None if centers is None else tuple(int(c) for c in centers),
    )


def _codes(rng: np.random.Generator, mapping: tuple, shape: tuple[int, ...]) -> np.ndarray:
    """Return random input codes of a mapping's input precision (signed or not)."""
    low, high = (-128, 127) if mapping[4] else (0, 255)
    return rng.integers(low, high + 1, shape)


@pytest.mark.parametrize("mapping", MAPPINGS)
@pytest.mark.parametrize("converter", CONVERTERS, ids=lambda c: f"{c.kind.value}{c.bits}")
def test_training_product_equals_simulation_product(mapping: tuple, converter: Converter) -> None:
    """crossbar_product (the training forward, float64 codes) is bit for bit the simulation's
    `product`, for a linear and for a convolution through the layers' unfold (against the
    simulator's im2col patches); with lossless converters its gradient is that of `x @ w`."""
    rng = np.random.default_rng(1)
    centers = rng.integers(-4, 5, 6) if mapping[0] == "center-offset" else None
    plan = _plan(mapping, converter, 130, 6, centers)
    assert plan.chunks == 5 and not plan.contiguous_chunks  # (0,48) (48,64) (64,112) ...
    x, w = _codes(rng, mapping, (19, 130)), rng.integers(-127, 128, (130, 6))
    expected = product(plan, x, w)
    got = crossbar_product(
        torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64), plan
    )
    assert got.dtype == torch.float64
    assert np.array_equal(got.numpy(), expected)
    if not plan.lossless:  # the converters do act: the comparison is not of two exact products
        assert not np.array_equal(expected, x @ w)
    xc, wc = _codes(rng, mapping, (2, 7, 6, 5)), rng.integers(-127, 128, (6, 7, 3, 3))
    geometry = ConvGeometry((2, 1), (1, 0, 1, 2), (1, 2))
    conv_plan = _plan(mapping, converter, 63, 6, centers)
    patches, out = kernels.im2col(
        xc, (3, 3), geometry.strides, geometry.pads, geometry.dilations, 1
    )
    expected = kernels.col2im(
        product(conv_plan, patches[0], kernels.conv_filters(wc, 1)[0])[None], 2, out
    )
    got = _crossbar_conv(
        torch.tensor(xc, dtype=torch.float64),
        torch.tensor(wc, dtype=torch.float64),
        conv_plan,
        geometry,
        None,
        None,
        "clamp",
    )
    assert np.array_equal(got.numpy(), expected)
    if plan.lossless:  # the integer product, and the straight-through rule is the identity
        assert np.array_equal(
            got.numpy(), kernels.conv(xc, wc, None, (2, 1), (1, 0, 1, 2), (1, 2), 1)
        )
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
        grad = torch.tensor(rng.standard_normal((19, 6)))
        (crossbar_product(xt, wt, plan) * grad).sum().backward()
        want_x, want_w = grad @ wt.detach().T, xt.detach().T @ grad
        assert torch.allclose(xt.grad, want_x, rtol=1e-5, atol=1e-5 * float(want_x.abs().max()))
        assert torch.allclose(wt.grad, want_w, rtol=1e-5, atol=1e-5 * float(want_w.abs().max()))
        # the convolution's patches pass the gradient back as torch's own convolution does
        leaves = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (xc, wc)]
        mapped = _crossbar_conv(*leaves, conv_plan, geometry, None, None, "clamp")
        grad = torch.tensor(rng.standard_normal(tuple(mapped.shape)))
        (mapped * grad).sum().backward()
        twins = [t.detach().clone().requires_grad_() for t in leaves]
        padded = torch.nn.functional.pad(twins[0], (0, 2, 1, 1))  # pads (1, 0, 1, 2): H 1+1, W 0+2
        reference = torch.nn.functional.conv2d(padded, twins[1], stride=(2, 1), dilation=(1, 2))
        (reference * grad).sum().backward()
        for leaf, twin in zip(leaves, twins, strict=True):  # float32 GEMMs in the backward
            top = float(twin.grad.abs().max())
            assert torch.allclose(leaf.grad, twin.grad, rtol=1e-5, atol=1e-5 * top)


def _straight_through(
    plan: LayerPlan,
    x: torch.Tensor,
    w: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    uniforms: torch.Tensor | None,
    backward: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the sliced product of codes x[P, K], w[K, N] written out with torch autograd as
    backend/datapath.py's docstring states its straight-through estimator, and the normalised
    sums (MTJ; else the partial sums): input slice j carries `width_j / bits / 2^shift_j` of
    x's gradient, stored slice (i, d) `sign_d * width_i / (bits_w * 2^shift_i * D)` of w's,
    partial sums per row chunk, an ADC's codes `ste(clamp(PS), code)`, an MTJ's value
    `(ste(surrogate, x_hat) - b) / a` with `x_hat` decoded by `convert_mtj` from `uniforms`
    [C, J, P, COLS], then shift-and-add and the encoding's digital correction."""
    streaming, mapping = plan.streaming, plan.mapping
    codes = x.detach()
    pattern = codes.to(torch.int64) & (2**streaming.bits - 1)
    planes = []
    for j, (width, shift) in enumerate(zip(streaming.slices, plan.input_shifts, strict=True)):
        value = (pattern >> shift) & (2**width - 1)
        if streaming.signed and j == 0:  # the top slice of a signed input is read signed
            value = value - (value >= 2 ** (width - 1)).to(torch.int64) * 2**width
        share = width / streaming.bits / 2**shift
        planes.append(value.to(torch.float64) + share * (x - codes))
    weights = w.detach().to(torch.int64)
    if mapping.encoding == "offset":
        stored = [weights + plan.offset_bias]
    else:
        if mapping.encoding == "center-offset":
            weights = weights - torch.tensor(plan.centers)[None, :]
        stored = [weights.clamp(min=0), (-weights).clamp(min=0)]
    bits_w = sum(mapping.slices)
    columns, significance = [], []  # per (weight slice, device): [K, N] and 2^shift_i * sign_d
    for width, shift in zip(mapping.slices, plan.weight_shifts, strict=True):
        parts = [(s >> shift) & (2**width - 1) for s in stored]
        if len(parts) == 2 and plan.signed_columns:  # the pair subtracts in the column
            parts = [parts[0] - parts[1]]
        for part, sign in zip(parts, plan.device_signs, strict=True):
            share = sign * width / (bits_w * 2**shift * plan.devices)
            columns.append(part.to(torch.float64) + share * (w - w.detach()))
            significance.append(2.0**shift * sign)
    filters = plan.filters
    sums = torch.stack(  # [C, J, P, I * D, N]
        [
            torch.stack(
                [
                    torch.stack([plane[:, lo:hi] @ column[lo:hi] for column in columns], dim=1)
                    for plane in planes
                ]
            )
            for lo, hi in plan.chunk_bounds
        ]
    )
    if plan.converter.is_mtj:
        a2, b2 = a.reshape(-1, filters), b.reshape(-1, filters)
        normalised = a2 * sums + b2
        s = plan.converter.sensitivity
        # x_hat as the datapath computes it: float32 `PS * a + b`, the same uniforms
        x32 = sums.detach().to(torch.float32).flatten(3) * a.detach().to(torch.float32)
        x32 = x32 + b.detach().to(torch.float32)
        columns_count = x32.shape[-1]
        convert_mtj(
            x32,
            torch.ones(columns_count),
            torch.zeros(columns_count),
            plan,
            uniforms,
            Statistics(),
        )
        x_hat = x32.to(torch.float64).view(sums.shape)
        if backward == "clamp":
            surrogate = torch.clamp(normalised, -1.0, 1.0)
        else:
            surrogate = (2.0 / s) * torch.tanh(s * normalised / 2.0)
        converted = (surrogate + (x_hat - surrogate).detach() - b2) / a2
        region = normalised.detach()
    else:
        low, high, step = plan.adc
        code = torch.clamp(torch.round(sums.detach() / step), low, high) * step
        clipped = torch.clamp(sums, low * step, high * step)
        converted = clipped + (code - clipped).detach()
        region = sums.detach()
    inputs = torch.tensor([2.0**s for s in plan.input_shifts], dtype=torch.float64)
    acc = torch.einsum(
        "cjpkn,j,k->pn", converted, inputs, torch.tensor(significance, dtype=torch.float64)
    )
    if mapping.encoding == "offset":
        acc = acc - plan.offset_bias * x.sum(dim=1, keepdim=True)
    elif mapping.encoding == "center-offset":
        centers = torch.tensor(plan.centers, dtype=torch.float64)
        acc = acc + x.sum(dim=1, keepdim=True) * centers
    return acc, region


MTJS = [
    Converter(ConverterKind.MTJ, 1, samples=samples, sensitivity=sensitivity)
    for samples, sensitivity in ((1, 4.0), (4, 4.0), (16, 2.5))
]
STE_CASES = [  # (converter, MTJ backward rule): every MTJ under both rules, and two ADCs
    *((mtj, backward) for mtj in MTJS for backward in ("clamp", "tanh")),
    (Converter(ConverterKind.SAR, 4), "clamp"),
    (Converter(ConverterKind.FLASH, 3, range_rule="saturate"), "clamp"),
]


@pytest.mark.parametrize("mapping", MAPPINGS)
@pytest.mark.parametrize(
    ("converter", "backward"),
    STE_CASES,
    ids=[
        f"{c.kind.value}{c.bits}x{c.samples}-{rule}" if c.is_mtj else f"{c.kind.value}{c.bits}"
        for c, rule in STE_CASES
    ],
)
@pytest.mark.parametrize("layout", [(TILE_ROWS, ACTIVE_ROWS), (32, 32)], ids=["short", "whole"])
def test_crossbar_product_gradients_equal_the_straight_through_expression(
    mapping: tuple, converter: Converter, backward: str, layout: tuple[int, int]
) -> None:
    """crossbar_product's forward is the sampled (or converted) datapath and its gradients in
    x, w and an MTJ's normalisation a, b are those of the straight-through expression
    (`_straight_through`) under autograd, for the same MTJ draws: one block of positions,
    whose uniforms are those of a generator seeded by (key, 0) (`Draws.stream`)."""
    rng = np.random.default_rng(5)
    gen = torch.Generator().manual_seed(3)
    centers = rng.integers(-4, 5, 5) if mapping[0] == "center-offset" else None
    plan = _plan(mapping, converter, 70, 5, centers, layout)
    assert plan.chunks == 3  # (0, 48) (48, 64) (64, 70), or (0, 32) (32, 64) (64, 70)
    assert plan.contiguous_chunks == (layout == (32, 32))  # the rows' slots: gathered or not
    x0 = torch.tensor(_codes(rng, mapping, (11, 70)), dtype=torch.float64)
    w0 = torch.tensor(rng.integers(-127, 128, (70, 5)), dtype=torch.float64)
    grad = torch.randn(11, 5, generator=gen, dtype=torch.float64)
    shape = (plan.chunks, plan.input_slices, 11, plan.columns)
    uniforms = Draws.stream(11).uniforms(shape, 0, 11)  # the forward's, as it draws them
    # per column a normalisation that leaves a good share of the sums outside [-1, 1]
    sums = torch.from_numpy(partial_sums(plan, x0, w0))  # [C, J, P, COLS]
    spread = sums.std(dim=(0, 1, 2)) + 1.0
    a0 = (torch.rand(plan.columns, generator=gen) * 0.6 + 0.7) / spread
    b0 = -a0 * sums.mean(dim=(0, 1, 2))
    b0 = b0 + torch.randn(plan.columns, generator=gen) * 0.3
    leaves = [t.clone().requires_grad_() for t in (x0, w0, a0, b0)]
    x, w, a, b = leaves
    if converter.is_mtj:
        out = crossbar_product(x, w, plan, 0, a, b, backward, key=11)
    else:
        out = crossbar_product(x, w, plan, backward=backward)
    (out * grad).sum().backward()
    reference = [t.clone().requires_grad_() for t in (x0, w0, a0, b0)]
    expected, region = _straight_through(plan, *reference[:2], *reference[2:], uniforms, backward)
    (expected * grad).sum().backward()
    scale = float(expected.detach().abs().max())
    assert torch.allclose(out.detach(), expected.detach(), rtol=1e-5, atol=1e-6 * scale)
    if converter.is_mtj:  # both regions of the straight-through rule are exercised
        assert 0.05 < float((region.abs() > 1).double().mean()) < 0.95
    elif converter.range_rule == "saturate":  # and an ADC's clipped sums
        low, high, step = plan.adc
        clipped = ((region < low * step) | (region > high * step)).double().mean()
        assert 0.0 < float(clipped) < 1.0
    names = ("x", "w", "a", "b") if converter.is_mtj else ("x", "w")
    for name, got, want in zip(names, leaves, reference, strict=False):
        assert got.grad is not None and want.grad is not None, name
        tolerance = 1e-4 * float(want.grad.abs().max()) + 1e-12
        assert torch.allclose(got.grad.double(), want.grad.double(), rtol=1e-4, atol=tolerance), (
            name,
            float((got.grad.double() - want.grad.double()).abs().max()),
            float(want.grad.abs().max()),
        )
    if not converter.is_mtj:
        assert a.grad is None and b.grad is None


@pytest.mark.parametrize("samples", [1, 4, 16])
def test_mtj_counts_are_binomial(samples: int) -> None:
    """convert_mtj's counts follow Binomial(samples, p) at p = sigmoid(s * x): the decoded
    values are the counter's table, and the counts' mean and variance and their full
    distribution (chi-square against the pmf) are the binomial's."""
    converter = Converter(ConverterKind.MTJ, 1, samples=samples)
    plan = _plan(MAPPINGS[0], converter, 8, 1, None)
    s = converter.sensitivity
    table = torch.from_numpy(mtj_decoder(samples, s))
    assert bool((table[1:] > table[:-1]).all())  # distinct: a decoded value names its count
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    for p in (0.02, 0.3, 0.5, 0.9):
        x = math.log(p / (1 - p)) / s  # inside [-1, 1]: p = sigmoid(s * x)
        values = torch.full((n, 1), x, dtype=torch.float32)
        stats = Statistics()
        convert_mtj(
            values, torch.ones(1), torch.zeros(1), plan, torch.rand(n, 1, generator=gen), stats
        )
        counts = (values - table).abs().argmin(dim=-1)
        assert torch.equal(table[counts], values[:, 0])  # every value is a table entry
        assert stats.conversions == n and stats.samples == n * samples
        assert stats.ones == int(counts.sum())
        mean, variance = samples * p, samples * p * (1 - p)
        counts64 = counts.double()
        assert abs(float(counts64.mean()) - mean) < 5 * math.sqrt(variance / n)
        assert float(counts64.var()) == pytest.approx(variance, rel=0.03)
        observed = np.bincount(counts.numpy(), minlength=samples + 1)
        expected = (
            np.array(
                [
                    math.comb(samples, k) * p**k * (1 - p) ** (samples - k)
                    for k in range(samples + 1)
                ]
            )
            * n
        )
        keep = expected > 5
        chi2 = float((((observed - expected) ** 2 / expected)[keep]).sum())
        freedom = max(1, int(keep.sum()) - 1)  # chi-square mean `freedom`, sd sqrt(2 freedom)
        assert chi2 < freedom + 6 * math.sqrt(2 * freedom), (p, observed, expected)


@pytest.fixture(scope="module")
def digits_program():
    """digits-cnn mapped for sotmtj by its default pipeline (MTJ converters, calibrated)."""
    model = example_path("digits-cnn")
    target = load_target("sotmtj")
    calibration, _ = calibration_data("digits-cnn", model)
    program = driver.compile(model, target, calibration=calibration, target_spec="sotmtj")
    return program, target


def test_module_with_lossless_converters_equals_simulator(digits_program) -> None:
    program, target = digits_program
    data = load_dataset("digits-cnn", 48)
    batched = rebatch(program, 48)
    expected = CrossbarInterpreter(target, seed=0, lossless=True).run(
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


@pytest.mark.parametrize("quantize", ["quantize", "quantize{method=percentile percentile=99.5}"])
def test_recalibrated_input_scales_equal_the_quantize_pass(quantize: str) -> None:
    """Fine-tuning re-measures input scales as the pipeline's quantize pass does (its method)."""
    from imcc.finetune.session import input_range
    from imcc.finetune.train import recalibrate_inputs

    target = load_target("sotmtj")
    model = example_path("digits-cnn")
    calibration, _ = calibration_data("digits-cnn", model)
    pipeline = default_pipeline(target).replace("quantize", quantize, 1)
    program = driver.compile(
        model, target, passes=pipeline, calibration=calibration, target_spec="sotmtj"
    )
    float_graph = driver.float_reference(model)
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
    program = driver.compile(
        model, target, passes=pipeline, calibration=calibration, target_spec="sotmtj"
    )
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
        TrainConfig(epochs=1, surrogate_epochs=2, batch=32),
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
        TrainConfig(epochs=2, batch=8, datapath_images=16),
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


def _state_run(program, target, data, tmp: Path | None, epochs: int, resume: bool = False):
    """Train digits-cnn for `epochs` (1 surrogate + the rest through the datapath), with
    augmentation, saving to / resuming from `tmp`; return the network and its records."""
    from imcc.finetune.train import TrainConfig, train

    network = MappedNetwork(program, target)
    config = TrainConfig(
        epochs=epochs - 1,
        surrogate_epochs=1,
        batch=16,
        weight_decay=5e-4,
        augment=True,
        state=str(tmp) if tmp else "",
        resume=resume,
    )
    return network, train(network, data.images, data.labels, config, data.images)


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
    digits_program, tmp_path: Path, monkeypatch
) -> None:
    """A run of 3 epochs (1 surrogate, 2 through the datapath with MTJ draws) stopped in its
    third epoch and resumed from the state saved after the second ends with the weights,
    normalisation and input scales of the same run never stopped, bit for bit."""
    from imcc.finetune import train as training

    program, target = digits_program
    data = load_dataset("digits-cnn", 48)
    whole, records = _state_run(program, target, data, None, 3)
    save = training.save_state

    def stop_in_epoch_three(*args, **kwargs):
        save(*args, **kwargs)
        if len(args[-1]) == 2:  # saved after epoch 2: the third starts, and is stopped
            monkeypatch.setattr(training, "recalibrate_inputs", _interrupt)

    monkeypatch.setattr(training, "save_state", stop_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        _state_run(program, target, data, tmp_path, 3)
    monkeypatch.undo()
    assert (tmp_path / training.STATE_FILE).is_file()
    resumed, again = _state_run(program, target, data, tmp_path, 3, resume=True)
    assert [r.forward for r in again] == ["surrogate", "mapped", "mapped"]
    assert [r.loss for r in again] == [r.loss for r in records]
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [x.quantizer for x in whole.layers] == [x.quantizer for x in resumed.layers]


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_a_saved_state_is_never_overwritten_unasked_nor_resumed_by_another_run(
    digits_program, tmp_path: Path
) -> None:
    from imcc.errors import UserError
    from imcc.finetune.train import STATE_FILE, TrainConfig, train

    program, target = digits_program
    data = load_dataset("digits-cnn", 32)
    _state_run(program, target, data, tmp_path, 1)
    saved = (tmp_path / STATE_FILE).read_bytes()
    with pytest.raises(UserError, match="holds a saved run"):
        _state_run(program, target, data, tmp_path, 2)
    network = MappedNetwork(program, target)
    config = TrainConfig(epochs=1, optimizer="adam", state=str(tmp_path), resume=True)
    with pytest.raises(UserError, match="cannot resume"):
        train(network, data.images, data.labels, config, data.images)
    assert (tmp_path / STATE_FILE).read_bytes() == saved  # nothing lost
    with pytest.raises(UserError, match="--state"):
        TrainConfig(resume=True)


def test_augmentation_shifts_and_flips_within_four_pixels() -> None:
    from imcc.finetune.train import shift_and_flip

    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) + 1
    rng = np.random.default_rng(0)
    out = shift_and_flip(x, rng)
    assert out.shape == x.shape
    for image, original in zip(out, x, strict=True):
        found = False
        for flip in (False, True):
            source = original.flip(-1) if flip else original
            padded = torch.nn.functional.pad(source, (4, 4, 4, 4))
            for top in range(9):
                for left in range(9):
                    crop = padded[:, top : top + 8, left : left + 8]
                    found |= torch.equal(crop, image)
        assert found
    assert torch.equal(shift_and_flip(x[0, 0], rng), x[0, 0])  # not an image batch: unchanged


def test_a_tiny_ps_qat_run_on_the_stox_design_point(tmp_path: Path) -> None:
    """PS-QAT end to end in seconds: digits-cnn on StoX-Net's design point (4-bit weights and
    inputs, MTJ converters with 16 and 4 samples), three epochs through the sampled datapath;
    the loss falls and the learned normalisation moves."""
    from imcc.finetune.train import TrainConfig, train

    model = example_path("digits-cnn")
    target = load_target("stox")
    calibration, _ = calibration_data("digits-cnn", model)
    program = driver.compile(model, target, calibration=calibration, target_spec="stox")
    samples = [n.attributes["converter"].samples for n in crossbar_layers(program)]
    assert samples[0] == 16 and set(samples[1:-1]) == {4} and samples[-1] == 1  # ADC last
    data = load_dataset("digits-cnn", 288)
    network = MappedNetwork(program, target)
    mtj = [layer for layer in network.layers if layer.offset is not None]
    assert len(mtj) == len(network.layers) - 1
    offsets = [layer.offset.detach().clone() for layer in mtj]
    torch.manual_seed(0)
    records = train(
        network,
        data.images,
        data.labels,
        TrainConfig(epochs=3, batch=16, lr=5e-3),
        data.images,
    )
    assert records[-1].loss < records[0].loss
    assert any(not torch.equal(o, layer.offset) for o, layer in zip(offsets, mtj, strict=True))


def test_fine_tuning_refuses_per_tensor_weight_scales():
    """Fine-tuning keeps one weight scale per output channel; a pipeline that quantizes per
    tensor would re-compile to other codes than those trained, so it is a user error."""
    from imcc.errors import UserError
    from imcc.finetune.session import input_range

    assert input_range("quantize{method=percentile}").method == "percentile"
    with pytest.raises(UserError, match="per output channel"):
        input_range("assign-input-precision,quantize{weight_granularity=tensor},tile-crossbar")


def test_distillation_loss_is_hintons_mix_of_hard_and_soft_targets():
    """(1 - a) CE + a T^2 KL(teacher || student), the KL averaged over the batch; a = 0 is
    the cross-entropy alone and a student equal to its teacher pays no soft term."""
    from imcc.finetune.train import distillation_loss

    gen = torch.Generator().manual_seed(0)
    logits, teacher = torch.randn(5, 10, generator=gen), torch.randn(5, 10, generator=gen)
    labels = torch.randint(0, 10, (5,), generator=gen)
    hard = torch.nn.functional.cross_entropy(logits, labels)
    p = torch.softmax(teacher / 3.0, dim=1)
    q = torch.softmax(logits / 3.0, dim=1)
    kl = (p * (p.log() - q.log())).sum(dim=1).mean()
    got = distillation_loss(logits, labels, teacher, 0.25, 3.0)
    assert torch.allclose(got, 0.75 * hard + 0.25 * 9.0 * kl, rtol=1e-6)
    assert torch.equal(distillation_loss(logits, labels, teacher, 0.0, 3.0), hard)
    same = distillation_loss(logits, labels, logits, 1.0, 3.0)
    assert abs(float(same)) < 1e-6


def test_a_distilled_run_learns_from_the_starting_float_network_frozen():
    """The teacher is the starting network's float forward and stays so while the student
    trains; a distilled run trains and records its settings; bad settings are user errors."""
    from imcc.errors import UserError
    from imcc.finetune.train import TrainConfig, frozen_teacher, train

    model = example_path("digits-cnn")
    target = load_target("stox")
    calibration, _ = calibration_data("digits-cnn", model)
    program = driver.compile(model, target, calibration=calibration, target_spec="stox")
    data = load_dataset("digits-cnn", 160)
    network = MappedNetwork(program, target)
    x = torch.from_numpy(data.images[:32])
    teacher = frozen_teacher(network)
    network.set_mode("float")
    with torch.no_grad():
        start = network(x)
    network.set_mode("mapped")
    for layer in network.layers:
        layer.observed = []
    with torch.no_grad():
        assert torch.equal(teacher(x), start)
    torch.manual_seed(0)
    records = train(
        network,
        data.images,
        data.labels,
        TrainConfig(epochs=2, batch=16, lr=5e-3, distill=0.5),
        data.images,
    )
    assert len(records) == 2 and all(np.isfinite(r.loss) for r in records)
    with torch.no_grad():
        assert torch.equal(teacher(x), start)  # a copy: the student's steps leave it
    for bad in ({"distill": 1.5}, {"temperature": 0.0}):
        with pytest.raises(UserError, match="--distill"):
            TrainConfig(**bad)


def test_a_second_backward_through_the_crossbar_product_is_refused():
    """The forward keeps its masks for one backward; a second (retain_graph) would read freed
    state, so it is an error rather than a wrong gradient."""
    rng = np.random.default_rng(2)
    plan = _plan(MAPPINGS[0], CONVERTERS[0], 70, 5, None)
    x = torch.tensor(_codes(rng, MAPPINGS[0], (4, 70)), dtype=torch.float64, requires_grad=True)
    w = torch.tensor(rng.integers(-127, 128, (70, 5)), dtype=torch.float64)
    out = crossbar_product(x, w, plan).sum()
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once per forward"):
        out.backward()


@pytest.mark.parametrize(
    "mapping", [*MAPPINGS, ("center-offset", (3, 4), 2, True, False, (3, 3, 2))]
)
def test_code_range_is_exactly_what_the_slices_store(mapping: tuple) -> None:
    """LayerPlan.code_range against brute force over the 8-bit weight codes quantize makes
    (-127..127): every code within it is stored, every code beyond is refused (stored_parts),
    filter by filter (centers near both ends)."""
    from imcc.backend.datapath import stored_parts
    from imcc.errors import MappingError

    centers = np.array([-100, -3, 0, 5, 90]) if mapping[0] == "center-offset" else None
    plan = _plan(mapping, CONVERTERS[0], 1, 5, centers)
    low, high = plan.code_range()
    for f in range(5):
        for code in range(-127, 128):
            codes = np.zeros((1, 5), np.int64)
            codes[0, :] = np.clip(code, low, high)  # the other filters within their range
            codes[0, f] = code
            try:
                stored_parts(plan, codes)
                fits = True
            except MappingError:
                fits = False
            assert fits == (low[f] <= code <= high[f]), (f, code)


def test_fine_tuning_keeps_weight_codes_within_the_centers_reach() -> None:
    """Training moves weights after the mapping chose its centers and slices: the forward
    holds each code within what its filter's slices store (no MappingError mid-training),
    and the gradient passes straight through."""
    from imcc.finetune.layers import CrossbarLayer, InputQuantizer

    mapping = ("center-offset", (3, 4), 2, True, False, (3, 3, 2))
    plan = _plan(mapping, CONVERTERS[0], 4, 2, np.array([-120, 100]))
    weight = np.array([[1.0, -1.0], [0.5, 0.2], [-0.9, 0.9], [0.0, 0.1]], np.float32)
    layer = CrossbarLayer("L", "gemm", weight, None, InputQuantizer(1.0, 0, 8, False), plan, None)
    codes, _ = layer.weight_codes()
    low, high = plan.code_range()
    assert (codes.detach().numpy() >= low).all() and (codes.detach().numpy() <= high).all()
    assert codes.detach()[0, 1] == -27  # -127 would sit 227 from its center 100
    codes.sum().backward()
    assert torch.all(layer.weight.grad != 0)
