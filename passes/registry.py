"""The pass registry: pass names mapped to `"module:Class"`, imported on first use."""

from __future__ import annotations

import difflib
import importlib

from imcc.passes.base import Pass

_REGISTRY: dict[str, str | type[Pass]] = {
    "canonicalize": "imcc.passes.canonicalize:Canonicalize",
    "fold-batchnorm": "imcc.passes.fold_batchnorm:FoldBatchNorm",
    "fold-constants": "imcc.passes.fold_constants:FoldConstants",
    "quantize": "imcc.passes.quantize:Quantize",
    "assign-input-precision": "imcc.passes.assign_input_precision:AssignInputPrecision",
    "tile-crossbar": "imcc.passes.tile_crossbar:TileCrossbar",
    "share-columns": "imcc.passes.share_columns:ShareColumns",
    "select-adc": "imcc.passes.select_adc:SelectAdc",
    "place": "imcc.passes.place:Place",
    "encode-weights": "imcc.passes.encode_weights:EncodeWeights",
    "slice-weights": "imcc.passes.slice_weights:SliceWeights",
    "profile-converters": "imcc.passes.profile_converters:ProfileConverters",
    "calibrate-mtj": "imcc.passes.calibrate_mtj:CalibrateMtj",
    "calibrate-adc": "imcc.passes.calibrate_adc:CalibrateAdc",
    "allocate-samples": "imcc.passes.allocate_samples:AllocateSamples",
}


def register_pass(name: str, target: str | type[Pass]) -> None:
    """Register a pass under `name`: a `"module:Class"` string (imported lazily) or a class."""
    if name in _REGISTRY:
        raise ValueError(f"pass '{name}' is registered twice")
    _REGISTRY[name] = target


def unregister_pass(name: str) -> None:
    """Remove a pass from the registry (for tests that register their own)."""
    del _REGISTRY[name]


def registered_passes() -> list[str]:
    """Return the names of every registered pass, sorted."""
    return sorted(_REGISTRY)


def close_matches(name: str) -> list[str]:
    """Return registered pass names that look like `name`, best first."""
    return difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.6)


def load_pass(name: str) -> type[Pass]:
    """Return the class of a registered pass, importing its module; KeyError if unknown."""
    target = _REGISTRY[name]
    if isinstance(target, str):
        module_name, _, class_name = target.partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        _REGISTRY[name] = cls
    else:
        cls = target
    if not (isinstance(cls, type) and issubclass(cls, Pass)) or cls.name != name:
        raise TypeError(f"registry entry '{name}' -> {target!r} is not a Pass named '{name}'")
    return cls


def describe_passes() -> str:
    """Return the `imcc passes` listing: name and summary, then each option with type and default.

    ```
    fold-constants
        Replace nodes whose operands are all constants by their computed results.
        max_elements: int = 1048576    fold only results with at most this many elements
    ```
    """
    lines = []
    for name in registered_passes():
        cls = load_pass(name)
        lines.append(name)
        lines.append(f"    {cls.summary()}")
        for spec in cls.options():
            head = f"{spec.name}: {spec.kind.value}"
            head += " (required)" if spec.required else f" = {spec.format(spec.default)}"
            bounds = spec.bounds.describe()
            doc = f"{spec.doc} [{bounds}]" if bounds else spec.doc
            lines.append(f"    {head:<32} {doc}".rstrip())
    return "\n".join(lines) + "\n"
