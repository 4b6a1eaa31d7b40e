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


class StringSyntaxError(ValueError):
    """A quoted string that JSON (the spelling `json.dumps` writes) does not allow."""

    def __init__(self, message: str, offset: int, hint: str) -> None:
        super().__init__(message)
        self.offset = offset  # of the offending character, from the opening quote
        self.hint = hint


_ESCAPES = '"\\/bfnrtu'
_CONTROL_NAMES = {"\t": "a tab", "\r": "a carriage return", "\n": "a line break"}


def parse_string(quoted: str) -> str:
    """Read back a string `format_name` / `format_value` quoted, or raise StringSyntaxError.

    Checked before `json.loads`, whose errors name neither the character nor a fix; raw control
    characters (a tab, a CR) are refused because the printer never writes them.
    """
    i = 1
    while i < len(quoted) - 1:
        char = quoted[i]
        if char == "\\":
            escape = quoted[i + 1]
            if escape not in _ESCAPES:
                raise StringSyntaxError(
                    f"bad escape '\\{escape}' in a string",
                    i,
                    'valid escapes: \\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX',
                )
            if escape == "u":
                hexits = quoted[i + 2 : i + 6]
                if len(hexits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in hexits):
                    raise StringSyntaxError(
                        "bad escape '\\u' in a string",
                        i,
                        "write \\u and four hex digits, e.g. \\u00e9",
                    )
                i += 4
            i += 2
            continue
        if ord(char) < 0x20:
            what = _CONTROL_NAMES.get(char, f"control character U+{ord(char):04X}")
            raise StringSyntaxError(
                f"{what} inside a quoted string",
                i,
                f"write it as the escape {json.dumps(char)[1:-1]}",
            )
        i += 1
    value = json.loads(quoted)
    lone = next((c for c in value if 0xD800 <= ord(c) <= 0xDFFF), None)
    if lone is not None:  # half a UTF-16 pair: it has no UTF-8 spelling, so it cannot be printed
        raise StringSyntaxError(
            f"unpaired surrogate \\u{ord(lone):04x} in a string",
            0,
            "escape a character outside the BMP as a \\ud8xx\\udcxx pair",
        )
    return value


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


def element_problem(text: str, dtype: DType) -> str | None:
    """Say why `text` is not an element of `dtype` as `format_element` spells them, or None.

    numpy alone would read `5` as a false bool, wrap `300` in an i8 or round `1e99` to an f16
    inf: a silently different constant.
    """
    if dtype is DType.BOOL:
        return (
            None if text in ("true", "false") else f"bool element must be true or false, not {text}"
        )
    if dtype.is_integer:
        if not text.lstrip("-").isdigit():
            return f"{dtype.value} element must be an integer, not {text}"
        info = np.iinfo(dtype.numpy)
        if len(text) > 24 or not info.min <= int(text) <= info.max:
            return f"{text[:24]} is out of range for {dtype.value} ({info.min}..{info.max})"
        return None
    if text in ("true", "false"):
        return f"{dtype.value} element must be a number, not {text}"
    with np.errstate(over="ignore"):
        finite = np.isfinite(np.array(text, dtype.numpy))
    if not finite and "inf" not in text and "nan" not in text:
        return f"{text} is out of range for {dtype.value}"
    return None


def parse_dense(elements: list[str], dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
    """Build the array of a dense constant from its element spellings (see element_problem)."""
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
