"""`imcc compile --print-ir-after-all` on the nine light_* models prints parseable IR, and
`imcc opt` of every dump with an empty pipeline reproduces it byte for byte."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest

from imcc.cli import main
from imcc.ir.io import load_program, parse_program
from imcc.ir.printer import print_graph

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = sorted(p.stem for p in LIGHT.glob("light_*.onnx"))
HEADER = re.compile(r"^// -----// IR Dump (Before|After) (.+) //----- //$", re.M)


def split_dumps(stream: str) -> list[tuple[str, str]]:
    """Split an instrument stream into (header, program text) pairs."""
    marks = list(HEADER.finditer(stream))
    chunks = []
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        end = following.start() if following else len(stream)
        chunks.append((mark.group(2), stream[mark.end() + 1 : end]))
    return chunks


def test_nine_light_models_are_shipped():
    assert len(MODELS) == 9


@pytest.mark.parametrize("model", MODELS)
def test_print_ir_after_all_is_parseable_and_opt_reprints_it(model, tmp_path, capsys):
    assert (
        main(
            [
                "compile",
                str(LIGHT / f"{model}.onnx"),
                "--print-ir-after-all",
                "-o",
                str(tmp_path / "final.imcir"),
            ]
        )
        == 0
    )
    dumps = split_dumps(capsys.readouterr().err)
    assert [name for name, _ in dumps] == [
        "canonicalize",
        "fold-constants{max_elements=1048576}",
        "fold-batchnorm",
        "canonicalize",
    ]
    for index, (_, text) in enumerate(dumps):
        graph = parse_program(text, f"{model}-dump{index}")
        assert print_graph(graph) == text
        path = tmp_path / f"dump{index}.imcir"
        path.write_text(text)
        assert main(["opt", str(path)]) == 0
        assert capsys.readouterr().out == text
    final = load_program(tmp_path / "final.imcir")
    assert print_graph(final) == dumps[-1][1]
    assert all(c.data is not None for c in final.constants.values())
