"""models/train_cifar.py: a resumed run ends with the weights of an uninterrupted one, the
augmentation only shifts and flips, and the exported model is the best validation epoch's."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from imcc.models.cifar_resnet import CifarResNet
from imcc.models.train_cifar import (
    PAD,
    augment,
    build,
    export,
    full_state,
    initial_weights,
    load_state,
    train,
)


def tiny_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(96, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (96,), generator=generator)
    return x[:64], y[:64], x[64:], y[64:]


def tiny_model():
    torch.manual_seed(0)
    return build("vgg11", width=1 / 16)


@pytest.mark.parametrize(
    ("autocast", "channels_last"),
    [(None, False), (torch.bfloat16, False), (None, True)],
    ids=["float32", "bf16", "channels-last"],
)
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
    tmp_path, autocast, channels_last
):
    data = tiny_data()
    whole = tiny_model()
    kw = {
        "epochs": 2,
        "batch": 16,
        "progress": False,
        "autocast": autocast,
        "channels_last": channels_last,
    }
    log = train(whole, data, state=tmp_path / "whole.pt", **kw)
    assert [row["epoch"] for row in log.log] == [1, 2]
    parts = tiny_model()
    state = tmp_path / "parts.pt"
    train(parts, data, state=state, stop_after=1, **kw)
    assert load_state(state)["run"]["done"] == 1
    resumed = tiny_model()  # a fresh process: the weights come from the checkpoint
    run = train(resumed, data, state=state, resume=True, **kw)
    assert run.done == 2 and [row["loss"] for row in run.log] == [row["loss"] for row in log.log]
    for (name, a), (_, b) in zip(
        whole.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    with pytest.raises(SystemExit, match=r"lr 0\.1 -> 0\.05"):  # another schedule: refused
        train(tiny_model(), data, state=state, resume=True, **{**kw, "lr": 0.05})
    other = None if autocast is not None else torch.bfloat16
    with pytest.raises(SystemExit, match="autocast"):  # another precision: refused
        train(tiny_model(), data, state=state, resume=True, **{**kw, "autocast": other})
    with pytest.raises(SystemExit, match="channels_last"):  # another layout: refused
        train(
            tiny_model(),
            data,
            state=state,
            resume=True,
            **{**kw, "channels_last": not channels_last},
        )


def test_a_channels_last_run_trains_and_exports_as_an_nchw_one(tmp_path):
    """NHWC order changes the order of float sums, not the recipe: from the same start the
    epoch losses agree within 1%, and the exported model computes what the trained one does."""
    data = tiny_data()
    runs = [tiny_model() for _ in range(2)]
    logs = [
        train(model, data, epochs=1, batch=16, progress=False, channels_last=last).log[0]["loss"]
        for model, last in zip(runs, [False, True], strict=True)
    ]
    assert logs[1] == pytest.approx(logs[0], rel=0.01)
    assert runs[1].network.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    path = export(runs[1], tmp_path / "nhwc.onnx")
    x = data[2][:4]
    with torch.no_grad():
        expected = runs[1].eval()(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = np.concatenate([session.run(None, {name: image[None].numpy()})[0] for image in x])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_a_warm_restart_starts_from_the_best_weights_of_another_run(tmp_path):
    """`init` loads the other run's best epoch (not its last, not a random start), records it in
    the settings, and a resume of the restart keeps it: another start is refused."""
    data = tiny_data()
    first = tmp_path / "first.pt"
    train(tiny_model(), data, epochs=2, batch=16, state=first, progress=False)
    best = load_state(first)["best"]
    captured = {}
    restarted = tiny_model()
    original = restarted.load_state_dict

    def spy(weights, *args, **kwargs):
        captured.setdefault("weights", weights)
        return original(weights, *args, **kwargs)

    restarted.load_state_dict = spy
    state = tmp_path / "restart.pt"
    kw = {"epochs": 2, "batch": 16, "lr": 0.05, "progress": False}
    run = train(restarted, data, state=state, init=first, stop_after=1, **kw)
    assert captured["weights"] is not None
    for name, tensor in best["model"].items():
        assert torch.equal(captured["weights"][name], tensor), name
    assert run.settings["init"] == f"{first} (epoch {best['epoch']})"
    # the first step moves from the loaded weights: the loss is that of a trained start
    scratch = train(tiny_model(), data, epochs=1, batch=16, lr=0.05, progress=False)
    assert run.log[0]["loss"] != scratch.log[0]["loss"]
    resumed = train(tiny_model(), data, state=state, init=first, resume=True, **kw)
    assert resumed.done == 2
    with pytest.raises(SystemExit, match="init"):  # a resume without the same start: refused
        train(tiny_model(), data, state=state, resume=True, **kw)


def test_a_warm_restart_starts_from_an_exported_model(tmp_path):
    """`init` takes a model `export` wrote: every weight and batch-norm statistic of the
    exported network is the restart's start, the settings name the file by its digest, and an
    export of another network is refused."""
    import hashlib

    data = tiny_data()
    trained = tiny_model()
    train(trained, data, epochs=1, batch=16, progress=False)
    trained.eval()
    onnx_file = export(trained, tmp_path / "trained.onnx")
    weights, label = initial_weights(onnx_file)
    start = full_state(tiny_model(), weights, onnx_file)
    digest = hashlib.sha256(onnx_file.read_bytes()).hexdigest()[:12]
    assert label == f"{onnx_file} (sha256 {digest})"
    for name, tensor in trained.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(start[name], tensor), name
    assert not torch.equal(
        tiny_model().state_dict()["network.features.0.weight"], start["network.features.0.weight"]
    )
    run = train(tiny_model(), data, epochs=1, batch=16, init=onnx_file, progress=False)
    assert run.settings["init"] == label
    torch.manual_seed(0)
    other = export(build("vgg11", width=1 / 8).eval(), tmp_path / "other.onnx")
    with pytest.raises(SystemExit, match="not this network's weights"):
        train(tiny_model(), data, epochs=1, batch=16, init=other, progress=False)


def test_bf16_steps_train_as_float32_ones_do(tmp_path):
    """Mixed precision changes the arithmetic, not the recipe: from the same start the two runs'
    epoch losses agree within 1% and their weights differ (the bf16 path really ran)."""
    data = tiny_data()
    runs = [tiny_model() for _ in range(2)]
    logs = [
        train(model, data, epochs=1, batch=16, progress=False, autocast=autocast).log[0]["loss"]
        for model, autocast in zip(runs, [None, torch.bfloat16], strict=True)
    ]
    a, b = (torch.cat([p.flatten() for p in m.parameters()]) for m in runs)
    assert not torch.equal(a, b)
    assert logs[1] == pytest.approx(logs[0], rel=0.01)


def test_augmentation_shifts_within_the_padding_and_flips():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(200, 3, 32, 32, generator=generator)
    out = augment(images, torch.Generator().manual_seed(2))
    assert out.shape == images.shape
    for image, moved in zip(images, out, strict=True):
        padded = torch.nn.functional.pad(image, (PAD, PAD, PAD, PAD))
        found = any(
            torch.equal(candidate[:, dy : dy + 32, dx : dx + 32], moved)
            for candidate in (padded, padded.flip(2))
            for dy in range(2 * PAD + 1)
            for dx in range(2 * PAD + 1)
        )
        assert found
    assert not torch.equal(out, images)


def test_the_export_takes_unit_range_images_and_matches_torch(tmp_path):
    model = tiny_model().eval()
    path = export(model, tmp_path / "tiny.onnx")
    image = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": image})
    with torch.no_grad():
        expected = model(torch.from_numpy(image)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_stox_resnet20_is_built_exported_and_refuses_widths(tmp_path):
    """StoX-Net's ResNet-20: 19 convs (the first and one per block), hardtanh outputs only,
    the exported model equal to torch's, and no width options."""
    torch.manual_seed(0)
    model = build("stox-resnet20")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 19 and [c.out_channels for c in convs[-2:]] == [64, 64]
    image = np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        model.train()(torch.rand(8, 3, 32, 32))  # batch statistics away from the defaults
    model.eval()
    seen: list[torch.Tensor] = []
    hooks = [c.register_forward_pre_hook(lambda _, a: seen.append(a[0])) for c in convs[1:]]
    with torch.no_grad():
        expected = model(torch.from_numpy(image)).numpy()
    for hook in hooks:
        hook.remove()
    assert all(float(x.abs().max()) <= 1.0 for x in seen)  # every crossbar input in [-1, 1]
    assert any(float(x.min()) < 0 for x in seen)
    path = export(model, tmp_path / "stox.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": image})
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="own widths"):
        build("stox-resnet20", width=0.5)


def test_he_resnets_are_built_with_their_depths_and_refuse_widths():
    """--arch resnet20 / resnet56: He et al.'s CIFAR ResNets (6n + 2 layers), exported as the
    pretrained ones are (cifar_resnet.CifarResNet)."""
    for arch, convs in (("resnet20", 19), ("resnet56", 55)):
        model = build(arch)
        found = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(found) == convs and isinstance(model, CifarResNet)
        with pytest.raises(ValueError, match="no --width or --widths"):
            build(arch, widths=[16] * convs)


def test_an_average_is_the_mean_of_the_weights_with_batch_norms_measured_again(tmp_path):
    """`average` loads the element-wise mean of its sources' weights (a checkpoint's best epoch
    and an exported model alike) and measures every batch norm again on the images: its running
    mean is the mean of the per-batch means of that layer's input (equal batches: the mean over
    all images), its running variance the mean of the per-batch unbiased variances; the model
    ends in eval mode, and an average of one network with itself is that network's weights."""
    from imcc.models.train_cifar import average

    data = tiny_data()
    first = tmp_path / "first.pt"
    train(tiny_model(), data, epochs=1, batch=16, state=first, progress=False)
    other = tiny_model()
    train(other, data, epochs=1, batch=16, lr=0.05, seed=1, progress=False)
    exported = export(other.eval(), tmp_path / "other.onnx")
    sources = [full_state(tiny_model(), initial_weights(f)[0], f) for f in (first, exported)]
    images = data[0][:48]
    model = average(tiny_model(), [first, exported], images, batch=16)
    assert not model.training
    state = model.state_dict()
    for name, tensor in sources[0].items():
        if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        assert torch.allclose(state[name], (tensor + sources[1][name]) / 2, atol=1e-7), name
        if name.endswith("weight"):  # trained: the sources differ
            assert not torch.equal(tensor, sources[1][name]), name
    # the first batch norm's input, by the averaged weights, over the three batches
    norm = model.network.features[1]
    assert isinstance(norm, torch.nn.BatchNorm2d)
    seen = []
    handle = norm.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    with torch.no_grad():
        for start in range(0, 48, 16):
            model(images[start : start + 16])
    handle.remove()
    means = torch.stack([batch.mean((0, 2, 3)) for batch in seen])
    variances = torch.stack([batch.var((0, 2, 3), unbiased=True) for batch in seen])
    assert torch.allclose(norm.running_mean, means.mean(0), atol=1e-5)
    assert torch.allclose(norm.running_mean, torch.cat(seen).mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(norm.running_var, variances.mean(0), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(norm.running_mean, sources[0]["network.features.1.running_mean"])
    # one network averaged with itself: its weights, the statistics of the images
    alone = average(tiny_model(), [first, first], images, batch=16).state_dict()
    for name, tensor in sources[0].items():
        if "running" not in name and "num_batches" not in name:
            assert torch.equal(alone[name], tensor), name


def test_averaging_refuses_another_network_and_the_cli_needs_an_output(
    tmp_path, monkeypatch, capsys
):
    """An average of models of other shapes is refused (`full_state`), and `--average`
    without `--out` or training without `--state` stops with a usage error (exit 2)."""
    import sys

    from imcc.models import train_cifar
    from imcc.models.train_cifar import average

    torch.manual_seed(0)
    other = export(build("vgg11", width=1 / 8).eval(), tmp_path / "other.onnx")
    mine = export(tiny_model().eval(), tmp_path / "mine.onnx")
    with pytest.raises(SystemExit, match="not this network's weights"):
        average(tiny_model(), [mine, other], tiny_data()[0])
    for argv, message in [
        (["--average", str(mine)], "--out"),
        ([], "--state"),
    ]:
        monkeypatch.setattr(
            sys, "argv", ["train_cifar.py", "--arch", "vgg11", "--data", "cifar10:x", *argv]
        )
        with pytest.raises(SystemExit) as stopped:
            train_cifar.main()
        assert stopped.value.code == 2
        assert message in capsys.readouterr().err
