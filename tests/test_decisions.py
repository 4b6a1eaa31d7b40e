"""Every mapping pass reports what it decided per layer: `--stats` tables and the report's
`decisions` hold the same rows, and they agree with what the program carries."""

from __future__ import annotations

import json

from imcc.cli import main
from imcc.ir.io import load_program
from imcc.passes.layers import crossbar_layers


def test_stats_and_report_decisions_match_the_program(tmp_path, capsys):
    program, report = tmp_path / "d.imcir", tmp_path / "r.json"
    assert (
        main(
            [
                "compile",
                "digits-cnn",
                "--target",
                "raella",
                "--stats",
                "-o",
                str(program),
                "--report",
                str(report),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    decisions = json.loads(report.read_text())["decisions"]
    passes = [
        "assign-input-precision",
        "quantize",
        "tile-crossbar",
        "encode-weights",
        "select-adc",
        "share-columns",
        "place",
    ]
    assert list(decisions) == passes
    for name in passes:
        assert f"{name}:\n  layer " in err  # one aligned table per pass on stderr
        assert len(decisions[name]) == 3
    layers = crossbar_layers(load_program(program))
    for node, row in zip(layers, decisions["encode-weights"], strict=True):
        assert node.attr("weights").encoding == row["scheme"] == "center-offset"
    for node, row in zip(layers, decisions["place"], strict=True):
        placement = node.attr("placement")
        assert (placement.first_crossbar, placement.crossbars, placement.replicas) == (
            row["first_crossbar"],
            row["crossbars"],
            row["replicas"],
        )
