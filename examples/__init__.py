"""Built-in example models and data shipped with imcc, usable by name from any directory."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent

EXAMPLES: dict[str, tuple[str, str]] = {
    "digits-cnn": (
        "digits_cnn.onnx",
        "2-conv CNN for 8x8 digits (BatchNorm kept), 96.7% on 360 held-out digits; "
        "models/digits_cnn.py regenerates it",
    ),
}
EXAMPLE_DATA: dict[str, str] = {"digits-cnn": "digits_test.npz"}


def example_path(name: str) -> Path | None:
    """Return the file of a built-in example model (`digits-cnn`), or None if no such name."""
    entry = EXAMPLES.get(name.removesuffix(".onnx").replace("_", "-"))
    return HERE / entry[0] if entry else None


def resolve_model(argument: str) -> Path:
    """Return the model path for a CLI argument: an existing file, else a built-in example."""
    if not argument:
        from imcc.errors import UserError

        raise UserError("no model given", hint="give an .onnx file or a built-in example name")
    path = Path(argument)
    if path.exists():
        return path
    builtin = example_path(argument)
    return builtin if builtin is not None else path
