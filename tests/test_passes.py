"""Passes: pipeline text round trips, pinned errors, registry, instruments, failures, rewrites."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imcc import cli
from imcc.backend.reference import run_graph
from imcc.errors import MappingError, PassFailure, PipelineError
from imcc.ir import DType, Graph, GraphBuilder, TensorType
from imcc.ir.io import load_program, parse_program
from imcc.ir.printer import print_graph
from imcc.passes import (
    Context,
    Pass,
    PassManager,
    load_pass,
    option,
    parse_pipeline,
    print_pipeline,
    register_pass,
    registered_passes,
)
from imcc.passes.base import Bounds, OptionKind, OptionSpec
from imcc.passes.instruments import DumpIR, PrintIR, TimePasses
from imcc.passes.registry import describe_passes, unregister_pass


@dataclass(frozen=True, slots=True)
class Knobs(Pass):
    """Do nothing, with an option of every kind (for round-trip tests)."""

    name = "test-knobs"
    rows: int = option(128, "rows")
    ratio: float = 0.5
    fast: bool = False
    encoding: str = "differential"
    slices: tuple[int, ...] = (4, 2, 2)
    gains: tuple[float, ...] = ()

    def run(self, graph: Graph, ctx: Context) -> Graph:
        return graph


@dataclass(frozen=True, slots=True)
class Explode(Pass):
    """Raise a bug-like exception."""

    name = "test-explode"

    def run(self, graph: Graph, ctx: Context) -> Graph:
        raise ZeroDivisionError("boom")


@dataclass(frozen=True, slots=True)
class BreakIR(Pass):
    """Return a graph whose output is not defined."""

    name = "test-break-ir"

    def run(self, graph: Graph, ctx: Context) -> Graph:
        return graph.replace(outputs=("nowhere",))


@dataclass(frozen=True, slots=True)
class Unmappable(Pass):
    """Reject the graph as a mapping problem."""

    name = "test-unmappable"

    def run(self, graph: Graph, ctx: Context) -> Graph:
        raise MappingError("layer %c needs 300 rows, the crossbar has 256", hint="tile it")


TEST_PASSES = [Knobs, Explode, BreakIR, Unmappable]


@pytest.fixture(autouse=True, scope="module")
def registered_test_passes():
    for cls in TEST_PASSES:
        register_pass(cls.name, cls)
    yield
    for cls in TEST_PASSES:
        unregister_pass(cls.name)


CONV_BN = """\
graph @net(%x: f32[1,2,5,5]) {
  %w = const f32[3,2,3,3] blob<"W">
  %b = const f32[3] dense<[0.5, -0.5, 0.25]>
  %s = const f32[3] dense<[2.0, 3.0, 0.5]>
  %t = const f32[3] dense<[0.1, 0.2, 0.3]>
  %m = const f32[3] dense<[1.0, 0.0, -1.0]>
  %v = const f32[3] dense<[1.0, 4.0, 0.25]>
  %c = conv(%x, %w, %b) {strides = [1, 1], pads = [1, 1, 1, 1], dilations = [1, 1], group = 1} \
: f32[1,3,5,5]
  %y = batch_norm(%c, %s, %t, %m, %v) {epsilon = 0.001} : f32[1,3,5,5]
  %r = relu(%y) : f32[1,3,5,5]
  return %r
}
"""


def conv_bn(seed: int = 0) -> Graph:
    """A conv + batch_norm + relu graph with random conv weights (a blob constant)."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    from imcc.ir.weights import digest

    return parse_program(
        CONV_BN.replace('"W"', f'"{digest(weights)}"'), "conv_bn.imcir", {digest(weights): weights}
    )


# -- pipeline text -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "canonicalize",
        "canonicalize,fold-constants{max_elements=1048576},fold-batchnorm,canonicalize",
        "test-knobs{rows=128 ratio=0.5 fast=false encoding=differential slices=[4,2,2] gains=[]}",
        'test-knobs{rows=-3 ratio=1e-05 fast=true encoding="a b,c{}" slices=[] gains=[0.5,inf]}',
    ],
)
def test_canonical_pipelines_round_trip(text: str) -> None:
    assert print_pipeline(parse_pipeline(text)) == text


def test_pipeline_spelling_is_lenient_and_defaults_fill_in() -> None:
    passes = parse_pipeline(" canonicalize , test-knobs{ slices=[8, 8]  rows=+7 ratio=1 } ")
    assert passes == [load_pass("canonicalize")(), Knobs(rows=7, ratio=1.0, slices=(8, 8))]
    assert str(passes[1]) == (
        "test-knobs{rows=7 ratio=1.0 fast=false encoding=differential slices=[8,8] gains=[]}"
    )
    assert str(load_pass("canonicalize")()) == "canonicalize"
    # a list written bare inside the braces reads as the bracketed one
    assert parse_pipeline("test-knobs{slices=4,2,2 gains=0.5},canonicalize") == [
        Knobs(slices=(4, 2, 2), gains=(0.5,)),
        load_pass("canonicalize")(),
    ]


_VALUES = {
    OptionKind.INT: st.integers(-(2**40), 2**40),
    OptionKind.FLOAT: st.floats(allow_nan=False),
    OptionKind.BOOL: st.booleans(),
    OptionKind.STR: st.text(max_size=12),
    OptionKind.INTS: st.lists(st.integers(-1000, 1000), max_size=5).map(tuple),
    OptionKind.FLOATS: st.lists(st.floats(allow_nan=False), max_size=5).map(tuple),
    OptionKind.STRS: st.lists(
        st.sampled_from(["sar", "flash", "mtj", "a b", "x-1"]), max_size=4
    ).map(tuple),
    OptionKind.BOOLS: st.lists(st.booleans(), max_size=5).map(tuple),
}
_ELEMENT = {
    OptionKind.INTS: OptionKind.INT,
    OptionKind.FLOATS: OptionKind.FLOAT,
    OptionKind.STRS: OptionKind.STR,
    OptionKind.BOOLS: OptionKind.BOOL,
}


def _legal(spec: OptionSpec) -> st.SearchStrategy:
    """Values of an option within its declared bounds (every value, where it declares none)."""
    bounds = spec.bounds
    if bounds == Bounds():
        return _VALUES[spec.kind]
    kind = _ELEMENT.get(spec.kind, spec.kind)
    if bounds.choices is not None:
        element = st.sampled_from(bounds.choices)
    elif kind is OptionKind.INT:
        element = st.integers(
            int(bounds.minimum if bounds.minimum is not None else -(2**40)),
            int(bounds.maximum if bounds.maximum is not None else 2**40),
        )
    else:
        low = bounds.above if bounds.above is not None else bounds.minimum
        element = st.floats(
            low,
            bounds.maximum,
            exclude_min=bounds.above is not None,
            allow_nan=False,
            allow_infinity=False,
        )
    if spec.kind in _ELEMENT:
        return st.lists(element, max_size=5).map(tuple)
    return element


@st.composite
def passes(draw: st.DrawFn) -> Pass:
    cls = load_pass(draw(st.sampled_from(registered_passes())))
    values = {spec.name: draw(_legal(spec)) for spec in cls.options() if draw(st.booleans())}
    return cls(**values)


@settings(max_examples=300, deadline=None)
@given(st.lists(passes(), max_size=5))
def test_every_registered_pass_round_trips(pipeline: list[Pass]) -> None:
    for p in pipeline:
        assert parse_pipeline(str(p)) == [p]
    text = print_pipeline(pipeline)
    assert parse_pipeline(text) == pipeline
    assert print_pipeline(parse_pipeline(text)) == text


@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        (
            "canonicalise",
            """\
--passes:1:1: error: unknown pass 'canonicalise'
canonicalise
^
hint: did you mean canonicalize?""",
        ),
        (
            "canonicalize,fold-batchnorn{}",
            """\
--passes:1:14: error: unknown pass 'fold-batchnorn'
canonicalize,fold-batchnorn{}
             ^
hint: did you mean fold-batchnorm?""",
        ),
        (
            "frobnicate",
            """\
--passes:1:1: error: unknown pass 'frobnicate'
frobnicate
^
hint: `imcc passes` lists them""",
        ),
        (
            "fold-constants{max=3}",
            """\
--passes:1:16: error: pass 'fold-constants' has no option 'max'
fold-constants{max=3}
               ^
hint: valid options: max_elements""",
        ),
        (
            "canonicalize{x=1}",
            """\
--passes:1:14: error: pass 'canonicalize' has no option 'x'
canonicalize{x=1}
             ^
hint: it takes no options""",
        ),
        (
            "fold-constants{max_elements=many}",
            """\
--passes:1:29: error: option 'max_elements' of pass 'fold-constants' expects an integer, \
got 'many'
fold-constants{max_elements=many}
                            ^""",
        ),
        (
            "test-knobs{slices=[4,x]}",
            """\
--passes:1:19: error: option 'slices' of pass 'test-knobs' expects a list of integers like \
[4,2,2], got '[4,x]'
test-knobs{slices=[4,x]}
                  ^""",
        ),
        (
            "test-knobs{fast=yes}",
            """\
--passes:1:17: error: option 'fast' of pass 'test-knobs' expects true or false, got 'yes'
test-knobs{fast=yes}
                ^""",
        ),
        (
            "test-knobs{rows=1,ratio=2}",
            """\
--passes:1:18: error: unexpected ',' after option 'rows'
test-knobs{rows=1,ratio=2}
                 ^
hint: separate options with spaces: {a=1 b=2}""",
        ),
        (
            "test-knobs{rows=1 rows=2}",
            """\
--passes:1:19: error: option 'rows' of pass 'test-knobs' is given twice
test-knobs{rows=1 rows=2}
                  ^""",
        ),
        (
            "test-knobs{rows 1}",
            """\
--passes:1:16: error: expected '=' after option 'rows', found ' '
test-knobs{rows 1}
               ^""",
        ),
        (
            "test-knobs{rows=1",
            """\
--passes:1:11: error: unclosed '{' of pass 'test-knobs'
test-knobs{rows=1
          ^
hint: close the options with '}'""",
        ),
        (
            "canonicalize fold-batchnorm",
            """\
--passes:1:14: error: unexpected 'f' after pass 'canonicalize'
canonicalize fold-batchnorm
             ^
hint: separate passes with ','""",
        ),
        (
            "canonicalize,",
            """\
--passes:1:14: error: expected a pass name, found end of pipeline
canonicalize,
             ^""",
        ),
    ],
)
def test_pipeline_errors_are_pinned(text: str, rendered: str) -> None:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, "--passes")
    assert info.value.render() == rendered
    assert info.value.exit_code == 2


# -- registry ------------------------------------------------------------------------------


def test_registry_lists_the_passes_lazily() -> None:
    names = [n for n in registered_passes() if not n.startswith("test-")]
    assert names == [
        "allocate-samples",
        "assign-input-precision",
        "calibrate-adc",
        "calibrate-mtj",
        "canonicalize",
        "encode-weights",
        "fold-batchnorm",
        "fold-constants",
        "place",
        "profile-converters",
        "quantize",
        "select-adc",
        "share-columns",
        "slice-weights",
        "tile-crossbar",
    ]
    for name in ["canonicalize", "fold-batchnorm", "fold-constants"]:
        cls = load_pass(name)
        assert cls.name == name and cls.summary()
        assert cls().search_space(conv_bn(), Context()) == {}


def test_imcc_passes_listing_is_derived_from_the_code() -> None:
    text = describe_passes()
    assert (
        "canonicalize\n"
        "    Simplify the graph with local rewrites that keep its results, then drop dead code.\n"
    ) in text
    assert (
        "fold-constants\n"
        "    Replace nodes whose operands are all constants by their results, computed once.\n"
        "    max_elements: int = 1048576      fold only results with at most this many elements"
        " [>= 0]\n"
    ) in text
    assert "    slices: tuple[int, ...] = [4,2,2]\n" in text


# -- instruments ---------------------------------------------------------------------------

PIPELINE = "canonicalize,fold-constants,fold-batchnorm,canonicalize"


def test_print_ir_after_all_is_a_stream_of_parseable_programs() -> None:
    stream = io.StringIO()
    graph = conv_bn()
    PassManager(parse_pipeline(PIPELINE), [PrintIR(after_all=True, stream=stream)]).run(graph)
    chunks = re.split(r"(?m)^(?=// -----// IR Dump)", stream.getvalue())[1:]
    assert [c.splitlines()[0] for c in chunks] == [
        f"// -----// IR Dump After {spec} //----- //"
        for spec in [
            "canonicalize",
            "fold-constants{max_elements=1048576}",
            "fold-batchnorm",
            "canonicalize",
        ]
    ]
    for chunk in chunks:
        parse_program(chunk)  # the header is a comment


def test_print_ir_after_change_and_before() -> None:
    stream = io.StringIO()
    instrument = PrintIR(before={"fold-batchnorm"}, after_change=True, stream=stream)
    PassManager(parse_pipeline(PIPELINE), [instrument]).run(conv_bn())
    headers = [line for line in stream.getvalue().splitlines() if line.startswith("// ---")]
    assert headers == [
        "// -----// IR Dump Before fold-batchnorm //----- //",
        "// -----// IR Dump After fold-batchnorm //----- //",
    ]


def test_dump_ir_dir_writes_numbered_programs_and_one_weight_file(tmp_path: Path) -> None:
    PassManager(parse_pipeline(PIPELINE), [DumpIR(tmp_path)]).run(conv_bn())
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "00-input.imcir",
        "01-canonicalize.imcir",
        "02-fold-constants.imcir",
        "03-fold-batchnorm.imcir",
        "04-canonicalize.imcir",
        "weights.npz",
    ]
    x = np.random.default_rng(1).standard_normal((1, 2, 5, 5)).astype(np.float32)
    first = run_graph(load_program(tmp_path / "00-input.imcir"), {"x": x})["r"]
    last = run_graph(load_program(tmp_path / "04-canonicalize.imcir"), {"x": x})["r"]
    np.testing.assert_allclose(last, first, rtol=1e-5, atol=1e-5)


def test_time_passes_prints_a_row_per_pass() -> None:
    stream = io.StringIO()
    PassManager(parse_pipeline(PIPELINE), [TimePasses(stream)]).run(conv_bn())
    lines = stream.getvalue().splitlines()
    assert lines[0] == "===- pass timing (wall clock) -==="
    assert [line.split()[-1] for line in lines[2:]] == [
        "canonicalize",
        "fold-constants{max_elements=1048576}",
        "fold-batchnorm",
        "canonicalize",
        "(verifier)",
        "total",
    ]


# -- failures and reproducers --------------------------------------------------------------


def test_failing_pass_names_itself_and_writes_a_reproducer(tmp_path: Path, capsys) -> None:
    repro = tmp_path / "repro.imcir"
    passes = parse_pipeline("canonicalize,fold-constants,test-explode,canonicalize")
    graph = conv_bn()
    with pytest.raises(PassFailure) as info:
        PassManager(passes, reproducer=repro).run(graph)
    failure = info.value
    assert failure.pass_spec == "test-explode"
    assert failure.previous == ("canonicalize", "fold-constants{max_elements=1048576}")
    assert failure.reproducer == str(repro)
    message = str(failure).splitlines()
    assert message[0] == "pass 'test-explode' failed: raised ZeroDivisionError: boom"
    assert message[1].startswith("  raised at: ") and message[1].endswith(" in run")
    assert message[2:] == [
        "  passes before it: canonicalize, fold-constants{max_elements=1048576}",
        f"  reproducer: {repro}",
        f"  replay with: imcc opt {repro} --run-reproducer",
    ]
    text = repro.read_text()
    assert text.splitlines()[0] == '// imcc-reproducer: --passes "test-explode,canonicalize"'
    assert load_program(repro).constants["w"].data is not None  # the weights came along

    assert (
        cli.main(
            ["opt", str(repro), "--run-reproducer", "--reproducer", str(tmp_path / "again.imcir")]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("error: pass 'test-explode' failed: raised ZeroDivisionError: boom\n")
    assert "  passes before it: none\n" in err
    assert (tmp_path / "again.imcir").read_text() == text


def test_verifier_after_each_pass_catches_broken_ir(tmp_path: Path) -> None:
    passes = parse_pipeline("canonicalize,test-break-ir")
    with pytest.raises(PassFailure) as info:
        PassManager(passes, reproducer=tmp_path / "r.imcir").run(conv_bn())
    assert str(info.value).splitlines()[0] == (
        "pass 'test-break-ir' failed: produced invalid IR: graph output %nowhere is not defined"
    )
    assert info.value.previous == ("canonicalize",)
    unchecked = PassManager(passes, verify_each=False).run(conv_bn())
    assert unchecked.outputs == ("nowhere",)


def test_mapping_error_keeps_exit_code_two(tmp_path: Path, capsys) -> None:
    path = tmp_path / "in.imcir"
    path.write_text("graph @g(%x: f32[2]) {\n  %y = relu(%x) : f32[2]\n  return %y\n}\n")
    assert cli.main(["opt", str(path), "--passes", "canonicalize,test-unmappable"]) == 2
    assert capsys.readouterr().err == (
        "error: pass 'test-unmappable': layer %c needs 300 rows, the crossbar has 256\n"
        "hint: tile it\n"
    )


# -- the passes ----------------------------------------------------------------------------


def test_default_pipeline_folds_batchnorm_and_keeps_results() -> None:
    graph = conv_bn(3)
    result = PassManager(parse_pipeline(PIPELINE)).run(graph)
    assert [n.op for n in result.nodes] == ["conv", "relu"]
    x = np.random.default_rng(4).standard_normal((1, 2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(
        run_graph(result, {"x": x})["r"], run_graph(graph, {"x": x})["r"], rtol=1e-5, atol=1e-5
    )


def _norm_parameters(
    b: GraphBuilder, rng: np.random.Generator, channels: int, prefix: str = ""
) -> list[str]:
    """Add a batch_norm's scale, shift, mean and variance (random, variance in [0.1, 2])."""
    return [
        b.add_constant(a.astype(np.float32), prefix + n)
        for n, a in [
            ("s", rng.standard_normal(channels)),
            ("t", rng.standard_normal(channels)),
            ("m", rng.standard_normal(channels)),
            ("v", rng.uniform(0.1, 2.0, channels)),
        ]
    ]


def test_fold_batchnorm_linear_without_bias_matches_reference() -> None:
    rng = np.random.default_rng(5)
    b = GraphBuilder("lin")
    x = b.add_input("x", TensorType((4, 6), DType.F32))
    w = b.add_constant(rng.standard_normal((6, 3)).astype(np.float32), "w")
    params = _norm_parameters(b, rng, 3)
    (y,) = b.add_node("linear", [x, w])
    (z,) = b.add_node("batch_norm", [y, *params])
    graph = b.build([z])
    folded = PassManager(parse_pipeline("fold-batchnorm")).run(graph)
    assert [n.op for n in folded.nodes] == ["linear"] and folded.outputs == (z,)
    feed = {"x": rng.standard_normal((4, 6)).astype(np.float32)}
    np.testing.assert_allclose(
        run_graph(folded, feed)[z], run_graph(graph, feed)[z], rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("bias", [True, False])
def test_fold_batchnorm_ahead_of_a_linear_matches_reference(bias: bool) -> None:
    """A batch_norm of pooled features feeding the classifier folds into the linear's input
    side; a batch_norm with a second user stays."""
    rng = np.random.default_rng(6)
    b = GraphBuilder("head")
    x = b.add_input("x", TensorType((4, 6), DType.F32))
    params = _norm_parameters(b, rng, 6)
    (y,) = b.add_node("batch_norm", [x, *params])
    w = b.add_constant(rng.standard_normal((6, 3)).astype(np.float32), "w")
    extra = [b.add_constant(rng.standard_normal(3).astype(np.float32), "b")] if bias else []
    (z,) = b.add_node("linear", [y, w, *extra])
    graph = b.build([z])
    folded = PassManager(parse_pipeline("fold-batchnorm")).run(graph)
    assert [n.op for n in folded.nodes] == ["linear"] and folded.nodes[0].inputs[0] == x
    feed = {"x": rng.standard_normal((4, 6)).astype(np.float32)}
    np.testing.assert_allclose(
        run_graph(folded, feed)[z], run_graph(graph, feed)[z], rtol=1e-5, atol=1e-5
    )
    shared = b.build([z, y])  # the normalised features are an output too: nothing folds
    kept = PassManager(parse_pipeline("fold-batchnorm")).run(shared)
    assert [n.op for n in kept.nodes] == ["batch_norm", "linear"]
    # batch_norm -> linear -> batch_norm: the linear takes one fold (the one after it)
    after = _norm_parameters(b, rng, 3, "after.")
    (u,) = b.add_node("batch_norm", [z, *after])
    chain = b.build([u])
    folded = PassManager(parse_pipeline("fold-batchnorm")).run(chain)
    assert [n.op for n in folded.nodes] == ["batch_norm", "linear"]
    np.testing.assert_allclose(
        run_graph(folded, feed)[u], run_graph(chain, feed)[u], rtol=1e-5, atol=1e-5
    )


def test_canonicalize_and_fold_constants_are_idempotent() -> None:
    text = (Path(__file__).parent / "filecheck" / "canonicalize.imcir").read_text()
    graph = parse_program(text)
    for name in ("canonicalize", "fold-constants", "fold-batchnorm"):
        once = PassManager(parse_pipeline(name)).run(graph)
        twice = PassManager(parse_pipeline(name)).run(once)
        assert print_graph(twice) == print_graph(once)


def test_fold_constants_needs_loaded_weights() -> None:
    graph = parse_program(
        'graph @g(%x: f32[4,4]) {\n  %w = const f32[4,4] blob<"0123456789abcdef">\n'
        "  %t = transpose(%w) {perm = [1, 0]} : f32[4,4]\n  %y = add(%x, %t) : f32[4,4]\n"
        "  return %y\n}\n"
    )
    with pytest.raises(Exception) as info:
        PassManager(parse_pipeline("fold-constants")).run(graph)
    assert info.value.exit_code == 2
    assert str(info.value) == (
        "pass 'fold-constants{max_elements=1048576}': fold-constants needs "
        "the data of constant %w (read by transpose -> %t)"
    )
