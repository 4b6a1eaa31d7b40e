"""Cost models of mapped programs: energy, latency and area per component and layer.

`estimate(graph, target)` walks a mapped graph (the mapping passes set the crossbar ops'
attributes) and returns a `CostReport`; `format_table(report)` renders it for a terminal and
`report.to_json()` gives the JSON object the README documents.
"""

from imcc.costmodel.layer import LayerCost
from imcc.costmodel.report import CostReport, estimate, format_table

__all__ = ["CostReport", "LayerCost", "estimate", "format_table"]
