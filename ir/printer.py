"""The printer of the canonical text form (`.imcir`); the parser reads exactly what it writes.

```
graph @net(%x: f32[1,1,8,8]) {
  %w = const f32[4,1,3,3] blob<"5d0c5e0b3f1a2c4d">
  %shape = const i64[2] dense<[1, 64]>
  %y = conv(%x, %w) {strides = [1, 1], pads = [1, 1, 1, 1], dilations = [1, 1], group = 1}
      : f32[1,4,8,8] loc("Conv_0")
  return %y
}
```
(each node is one line in real output). Constants of more than `INLINE_LIMIT` elements print
as a content digest (`blob<...>`) whose data lives in an `.npz` side file;
smaller ones print their elements (`dense<[...]>`).
"""

from __future__ import annotations

import json
import re

import numpy as np

from imcc.ir.attributes import format_float, format_value
from imcc.ir.graph import Constant, Graph, Node
from imcc.ir.types import DType

BARE_NAME = re.compile(r"[A-Za-z0-9_.$-]+")


def format_name(name: str) -> str:
    """Spell a value or graph name: bare when it is a simple identifier, else quoted."""
    return name if BARE_NAME.fullmatch(name) else json.dumps(name)


def format_element(value: object, dtype: DType) -> str:
    """Spell one element of a dense constant so that it reads back bit for bit."""
    if dtype is DType.BOOL:
        return "true" if value else "false"
    if dtype.is_integer:
        return str(int(value))
    if dtype is DType.F64:
        return format_float(float(value))
    text = str(value)  # numpy prints the shortest string that round-trips in f16 / f32
    if text in ("inf", "-inf", "nan"):
        return text
    return text if ("." in text or "e" in text) else text + ".0"


def parse_dense(elements: list[str], dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
    """Build the array of a dense constant from its element spellings."""
    if dtype is DType.BOOL:
        array = np.array([e == "true" for e in elements], dtype=bool)
    elif dtype.is_integer:
        array = np.array([int(e) for e in elements], dtype=dtype.numpy)
    else:
        array = np.array(elements, dtype=dtype.numpy)
    return array.reshape(shape)


def format_constant(constant: Constant) -> str:
    """Spell the definition of a constant."""
    head = f"%{format_name(constant.name)} = const {constant.type}"
    data = constant.data
    if constant.inline and data is not None:
        elements = [format_element(v, constant.type.dtype) for v in data.reshape(-1)]
        reread = parse_dense(elements, constant.type.dtype, constant.type.shape)
        if reread.tobytes() == np.ascontiguousarray(data).tobytes():
            return f"{head} dense<[{', '.join(elements)}]>"
    return f'{head} blob<"{constant.digest}">'


def format_node(node: Node, graph: Graph) -> str:
    """Spell one node with its result types and source name."""
    results = ", ".join(f"%{format_name(o)}" for o in node.outputs)
    operands = ", ".join(f"%{format_name(i)}" for i in node.inputs)
    text = f"{results} = {node.op}({operands})"
    if node.attributes:
        attrs = ", ".join(f"{k} = {format_value(v)}" for k, v in node.attributes.items())
        text += f" {{{attrs}}}"
    text += " : " + ", ".join(str(graph.types[o]) for o in node.outputs)
    if node.name:
        text += f" loc({json.dumps(node.name)})"
    return text


def print_graph(graph: Graph) -> str:
    """Return the canonical text of a graph, ending with a newline."""
    args = ", ".join(f"%{format_name(v.name)}: {v.type}" for v in graph.inputs)
    head = f"graph @{format_name(graph.name)}({args})"
    if graph.attributes:
        attrs = ", ".join(f"{k} = {format_value(v)}" for k, v in graph.attributes.items())
        head += f" attributes {{{attrs}}}"
    lines = [head + " {"]
    lines += [f"  {format_constant(c)}" for c in graph.constants.values()]
    lines += [f"  {format_node(n, graph)}" for n in graph.nodes]
    lines.append("  return " + ", ".join(f"%{format_name(o)}" for o in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"
