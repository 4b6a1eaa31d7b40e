"""Graph-to-graph passes, the pipeline language that names them, and the pass manager."""

from __future__ import annotations

from imcc.passes.base import Pass, option
from imcc.passes.context import Context
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline, print_pipeline
from imcc.passes.registry import load_pass, register_pass, registered_passes

__all__ = [
    "DEFAULT_PIPELINE",
    "Context",
    "Pass",
    "PassManager",
    "load_pass",
    "option",
    "parse_pipeline",
    "print_pipeline",
    "register_pass",
    "registered_passes",
]
