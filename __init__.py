"""imcc: a compiler from ONNX models to crossbar in-memory-computing accelerators."""

from __future__ import annotations

__version__ = "0.1.0"
