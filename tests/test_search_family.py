"""Channel depth in the XPert co-search: a width family's candidates trained on real
Fashion-MNIST with a tiny proxy budget, phase 1 over the network, the choice recorded and
the search resumed from the cached candidates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imcc.cli import main
from imcc.errors import UserError
from imcc.search.family import parse_family
from tests.onnx_models import fashion_mnist_dir

DATA = fashion_mnist_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="Fashion-MNIST not fetched")


def _search(out: Path, capsys) -> dict:
    code = main(
        [
            "search",
            "--family",
            "vgg:fashion-mnist:0.5,1",
            "--target",
            "xpert",
            "--data",
            f"fashion-mnist:{DATA}",
            "--strategy",
            "xpert",
            "--trials",
            "8",
            "--family-images",
            "512",
            "--limit",
            "32",
            "--probe",
            "16",
            "--check",
            "32",
            "--random-trials",
            "0",
            "--out",
            str(out),
        ]
    )
    out_text = capsys.readouterr().out
    assert code == 0, out_text
    return json.loads((out / "network.json").read_text())


@needs_data
def test_xpert_phase_one_chooses_the_fastest_accurate_network_and_resumes(
    tmp_path: Path, capsys
) -> None:
    record = _search(tmp_path, capsys)
    candidates = record["candidates"]
    assert len(candidates) == 8  # 2 multipliers ^ 3 stages
    assert {tuple(c["widths"]) for c in candidates} == {
        (a, b, c) for a in (8, 16) for b in (16, 32) for c in (32, 64)
    }
    widest = next(c for c in candidates if c["widths"] == [16, 32, 64])
    assert record["reference_accuracy"] == widest["accuracy"]
    accurate = [c for c in candidates if c["accurate_enough"]]
    assert all(c["accuracy"] >= record["accuracy_floor"] for c in accurate)
    assert all(c["phase1_latency_s"] is None for c in candidates if not c["accurate_enough"])
    chosen = next(c for c in candidates if c["label"] == record["chosen"])
    assert chosen["phase1_latency_s"] == min(
        c["phase1_latency_s"] for c in accurate if c["phase1_latency_s"] is not None
    )
    assert all(Path(c["model"]).is_file() for c in candidates)
    pareto = json.loads((tmp_path / "pareto.json").read_text())
    assert pareto["model"] == chosen["model"]  # phase 2 ran on the chosen network
    again = _search(tmp_path, capsys)  # resumed: candidates from the cache, same choice
    assert [c["seconds"] for c in again["candidates"]] == [0.0] * 8
    assert [c["accuracy"] for c in again["candidates"]] == [c["accuracy"] for c in candidates]
    assert again["chosen"] == record["chosen"]


@pytest.mark.parametrize(
    "text",
    ["vgg:fashion-mnist", "alexnet:fashion-mnist:1", "vgg:cifar:1", "vgg:mnist:0,1", "vgg:mnist:a"],
)
def test_bad_family_is_a_user_error(text: str) -> None:
    with pytest.raises(UserError) as info:
        parse_family(text)
    assert "--family" in str(info.value) and "e.g." in info.value.render()


def test_family_needs_the_xpert_strategy(capsys) -> None:
    code = main(
        [
            "search",
            "--family",
            "vgg:fashion-mnist:1",
            "--target",
            "xpert",
            "--data",
            "digits-cnn",
            "--strategy",
            "pareto",
            "--out",
            "/nonexistent/never",
        ]
    )
    assert code == 2 and "--strategy xpert" in capsys.readouterr().err
    code = main(["search", "--target", "xpert", "--data", "digits-cnn"])
    assert code == 2 and "MODEL" in capsys.readouterr().err
