"""The IR: printing is a fixpoint, parse errors are pinned, the verifier names node and rule."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from imcc.errors import ParseError, VerificationError
from imcc.ir import DType, GraphBuilder, TensorType
from imcc.ir.attributes import structured_attribute
from imcc.ir.io import load_program, parse_program, save_program
from imcc.ir.parser import parse_graph
from imcc.ir.printer import print_graph
from imcc.ir.verifier import verify

SMALL = """\
graph @net(%x: f32[1,1,4,4]) {
  %w = const f32[2,1,3,3] blob<"0123456789abcdef">
  %shape = const i64[2] dense<[1, 32]>
  %c = conv(%x, %w) {strides = [1, 1], pads = [1, 1, 1, 1], dilations = [1, 1], group = 1} \
: f32[1,2,4,4] loc("Conv_0")
  %r = relu(%c) : f32[1,2,4,4]
  %"flat/out" = reshape(%r) {shape = [1, 32]} : f32[1,32]
  return %"flat/out"
}
"""


def build_small(seed: int = 0):
    rng = np.random.default_rng(seed)
    b = GraphBuilder("net")
    x = b.add_input("x", TensorType((1, 1, 4, 4), DType.F32))
    w = b.add_constant(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), "w")
    bias = b.add_constant(np.array([0.1, -2.5], np.float32), "b")
    (c,) = b.add_node(
        "conv",
        [x, w, bias],
        {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1]},
        name="Conv_0",
    )
    (r,) = b.add_node("relu", [c])
    (f,) = b.add_node("reshape", [r], {"shape": [1, 32]}, hint="flat/out")
    return b.build([f])


def test_text_is_a_fixpoint_without_weights():
    graph = parse_program(SMALL, "small.imcir")
    assert print_graph(graph) == SMALL
    assert graph.constants["w"].data is None


def test_file_round_trip_with_side_weights(tmp_path):
    graph = build_small()
    save_program(graph, tmp_path / "net.imcir")
    assert (tmp_path / "net.npz").exists()
    loaded = load_program(tmp_path / "net.imcir")
    assert print_graph(loaded) == print_graph(graph)
    np.testing.assert_array_equal(loaded.constants["w"].data, graph.constants["w"].data)


@pytest.mark.parametrize("dtype", [d for d in DType])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_dense_and_blob_constants_round_trip_bit_for_bit(dtype, data):
    array = data.draw(hnp.arrays(dtype.numpy, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)))
    b = GraphBuilder("g")
    c = b.add_constant(array, "c")
    (y,) = b.add_node(
        "neg" if dtype is not DType.BOOL else "cast",
        [c],
        {} if dtype is not DType.BOOL else {"to": DType.BOOL},
    )
    graph = b.build([y])
    text = print_graph(graph)
    store = {k.digest: k.data for k in graph.constants.values()}
    again = parse_graph(text, "g.imcir", store)
    assert print_graph(again) == text
    assert again.constants["c"].data.tobytes() == np.ascontiguousarray(array).tobytes()


@structured_attribute("test_tile")
@dataclass(frozen=True)
class _Tile:
    rows: int
    cols: int
    slices: tuple[int, ...]
    scheme: str


def test_structured_attribute_prints_and_parses():
    from imcc.ir.attributes import format_value

    tile = _Tile(128, 64, (4, 2, 2), "center-offset")
    text = format_value(tile)
    assert text == '#test_tile<rows = 128, cols = 64, slices = [4, 2, 2], scheme = "center-offset">'
    from imcc.ir.parser import _Builder

    assert _Builder("", "f", {}).value(_value_tree(text)) == tile


def _value_tree(text: str):
    import lark

    from imcc.ir.parser import GRAMMAR

    parser = lark.Lark(
        GRAMMAR.replace("start: graph", "start: value"),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
    )
    return parser.parse(text).children[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "graph @a(%x: f32[1]) {\n  %y = relu(%q) : f32[1]\n  return %y\n}\n",
            "bad.imcir:2:13: error: use of undefined value %q\n  %y = relu(%q) : f32[1]\n"
            "            ^\nhint: values must be defined before use",
        ),
        (
            "graph @a(%x: f32[1]) {\n  %y = relux(%x) : f32[1]\n  return %y\n}\n",
            "bad.imcir:2:8: error: unknown op 'relux'\n  %y = relux(%x) : f32[1]\n"
            "       ^\nhint: did you mean relu?",
        ),
        (
            "graph @a(%x: f32[1]) {\n  %y = relu(%x) : f32[1\n  return %y\n}\n",
            "bad.imcir:3:3: error: unexpected 'return'\n  return %y\n  ^\n"
            "hint: expected ',' or ']'",
        ),
        (
            "graph @a(%x: f32[1]) {\n  %x = relu(%x) : f32[1]\n  return %x\n}\n",
            "bad.imcir:2:4: error: value %x is defined twice\n  %x = relu(%x) : f32[1]\n   ^",
        ),
        (
            "graph @a(%x: f32[1]) {\n  %y = leaky_relu(%x) {beta = 2} : f32[1]\n  return %y\n}\n",
            "bad.imcir:2:23: error: 'leaky_relu' has no attribute 'beta' (valid attributes: "
            "alpha)\n  %y = leaky_relu(%x) {beta = 2} : f32[1]\n                      ^",
        ),
        (
            "graph @a(%x: f32[1]) {\n  %y = relu(%x) : f32[1]\n",
            "bad.imcir:2:24: error: unexpected end of input\n  %y = relu(%x) : f32[1]\n"
            "                       ^\nhint: a graph ends with `return %value` and `}`",
        ),
    ],
)
def test_parse_errors_are_pinned(text, message):
    with pytest.raises(ParseError) as info:
        parse_graph(text, "bad.imcir")
    assert info.value.render() == message
    assert info.value.exit_code == 2


def test_verifier_names_node_and_rule():
    text = SMALL.replace(": f32[1,2,4,4] loc", ": f32[1,2,5,5] loc")
    with pytest.raises(VerificationError) as info:
        parse_program(text, "v.imcir")
    assert str(info.value) == (
        "node #0 'conv' (Conv_0) -> %c: result %c is declared f32[1,2,5,5] but the op yields "
        "f32[1,2,4,4]"
    )


def test_verifier_rejects_non_canonical_attribute():
    graph = build_small()
    node = graph.nodes[0]
    broken = graph.replace(
        nodes=(node.replace(attributes={**node.attributes, "group": 1.0}), *graph.nodes[1:])
    )
    with pytest.raises(VerificationError, match="attribute 'group'"):
        verify(broken)


def test_verifier_rejects_use_before_definition():
    graph = build_small()
    broken = graph.replace(nodes=(graph.nodes[1], graph.nodes[0], graph.nodes[2]))
    with pytest.raises(VerificationError, match="operand %Conv_0 is not defined before use"):
        verify(broken)


def test_graph_attributes_print_and_parse():
    text = SMALL.replace(
        "graph @net(%x: f32[1,1,4,4]) {",
        'graph @net(%x: f32[1,1,4,4]) attributes {target = "isaac"} {',
    )
    graph = parse_program(text, "t.imcir")
    assert graph.attributes == {"target": "isaac"}
    assert print_graph(graph) == text
    bad = text.replace("target =", "targt =")
    with pytest.raises(ParseError, match="unknown graph attribute 'targt'"):
        parse_program(bad, "t.imcir")
