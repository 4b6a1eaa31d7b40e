"""The compile driver: `driver.compile` is the compile `imcc compile` runs, and
`driver.float_reference` the cleaned-up float graph `imcc simulate` compares with."""

from __future__ import annotations

from pathlib import Path

import pytest

from imcc import cli, driver
from imcc.errors import UserError
from imcc.examples import example_path
from imcc.frontend.hw import load_target
from imcc.frontend.onnx import import_onnx
from imcc.ir.io import load_program
from imcc.ir.printer import print_graph
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline

MODEL = example_path("digits-cnn")


@pytest.fixture(scope="module")
def cli_program(tmp_path_factory: pytest.TempPathFactory) -> str:
    """digits-cnn compiled for isaac by `imcc compile` (in-process), printed."""
    output = tmp_path_factory.mktemp("driver") / "digits.imcir"
    assert cli.main(["compile", str(MODEL), "--target", "isaac", "-o", str(output)]) == 0
    return print_graph(load_program(output))


def test_compile_prints_the_program_of_the_cli(cli_program: str, capsys) -> None:
    capsys.readouterr()
    target = load_target("isaac")
    calibration, _ = driver.calibration_data(None, MODEL)  # the example calibrates on its data
    graph = driver.compile(MODEL, target, calibration=calibration, target_spec="isaac")
    assert graph.attributes["target"] == "isaac"
    assert graph.attributes["source"] == str(Path(MODEL).resolve())
    assert print_graph(graph) == cli_program


def test_compile_of_an_imported_graph_with_a_pass_list_is_the_same(cli_program: str) -> None:
    target = load_target("isaac")
    calibration, _ = driver.calibration_data(None, MODEL)
    passes = driver.pipeline_passes(None, target)
    graph = driver.compile(
        driver.import_model(MODEL),
        target,
        passes=passes,
        calibration=calibration,
        target_spec="isaac",
        source=MODEL,
    )
    assert print_graph(graph) == cli_program


def test_float_reference_is_the_cleaned_up_model() -> None:
    expected = PassManager(parse_pipeline(DEFAULT_PIPELINE)).run(import_onnx(str(MODEL)))
    reference = driver.float_reference(MODEL)
    assert print_graph(reference) == print_graph(expected)
    assert "target" not in reference.attributes and "source" not in reference.attributes


def test_a_pipeline_typo_names_its_label() -> None:
    with pytest.raises(UserError) as caught:
        driver.compile(MODEL, passes="canonicalise", label="--passes")
    assert caught.value.render().startswith("--passes:1:1: error: unknown pass 'canonicalise'")


def test_backend_imports_only_the_ir_the_target_and_the_plan() -> None:
    """backend/ stays below the compiler: it may import ir/, target.py, plan.py, errors.py and
    itself, never frontend/, passes/, the driver or the commands."""
    import ast

    allowed = ("imcc.ir", "imcc.target", "imcc.plan", "imcc.errors", "imcc.backend")
    backend = Path(__file__).resolve().parents[1] / "backend"
    found = {}
    for path in sorted(backend.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("imcc"):
                found.setdefault(node.module, path.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("imcc"):
                        found.setdefault(alias.name, path.name)
    assert found  # the scan sees backend's own imports
    bad = {m: f for m, f in found.items() if not m.startswith(allowed)}
    assert not bad, f"backend/ imports {bad}"
