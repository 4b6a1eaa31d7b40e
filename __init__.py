"""imcc: a compiler from ONNX models to crossbar in-memory-computing accelerators."""

from __future__ import annotations

__version__ = "0.1.0"

RESULTS_VERSION = 1
"""The version of the numbers imcc computes for a given model, target, pipeline and data: the
simulator's arithmetic and sampling, the calibration rules and the cost model. Everything that
keeps computed results for reuse (search studies, evaluation stores, the reproductions'
caches) records it and reuses nothing recorded under another version. The golden files pin it:
tests/golden/costs (the cost reports) and tests/golden/simulations (simulated accuracies and
converter statistics) carry the version they were written under, and rewriting one with other
figures under the same version is refused, so a change of any rule that moves a result raises
this number."""
