"""The `share-columns` pass: how many crossbar columns share one converter, per layer."""

from __future__ import annotations

from dataclasses import dataclass

from imcc.errors import MappingError
from imcc.ir.graph import Graph
from imcc.ir.mapping import ConverterChoice, Tiling
from imcc.passes.base import Pass, PerLayerOption, option
from imcc.passes.context import Context
from imcc.passes.layers import (
    crossbar_layers,
    layer_label,
    per_layer,
    replace_nodes,
    require_target,
    with_attributes,
)


@dataclass(frozen=True, slots=True)
class ShareColumns(Pass):
    """Choose the column-sharing factor of each crossbar layer: columns per converter.

    One converter serves `factor` columns through a multiplexer: converter area falls ~1/factor,
    conversions take `factor` turns per array read, and (on targets that re-drive the rows per
    column group) array energy grows with it. `factor=0` takes the target's first legal factor;
    the factor must be one the target offers with the layer's converter (the converter's own
    list, else the target's; `factor=0` takes its first) and divide the crossbar columns used.
    Needs `tile-crossbar` and `select-adc` first. Per-layer factors: `per_layer=[16,16,4,...]`.

    ```
    // after: share-columns{factor=8 per_layer=[]} (after select-adc)
    %y.acc = conv(...) {..., tiling = #tiling<...>, column_share = 8} : i32[1,16,8,8]
    ```
    """

    name = "share-columns"
    per_layer_options = (PerLayerOption("factor", "per_layer"),)
    factor: int = option(0, "columns per converter (0: the first legal factor)", minimum=0)
    per_layer: tuple[int, ...] = option(
        (), "columns per converter, one per crossbar layer", minimum=1
    )

    def run(self, graph: Graph, ctx: Context) -> Graph:
        target = require_target(ctx, self.name)
        layers = crossbar_layers(graph)
        factors = per_layer(self.per_layer, self.factor, len(layers), "per_layer")
        changed = {}
        for index, (node, factor) in enumerate(zip(layers, factors, strict=True)):
            where = layer_label(node, index)
            tiling, choice = node.attributes.get("tiling"), node.attributes.get("converter")
            if not isinstance(tiling, Tiling) or not isinstance(choice, ConverterChoice):
                raise MappingError(
                    f"{where} has no tiling or converter",
                    hint="run tile-crossbar and select-adc first",
                )
            legal = target.column_sharing_for(target.converter(choice.name))
            factor = factor or legal[0]
            if factor not in legal:
                raise MappingError(
                    f"{where}: column sharing {factor} is not offered with converter {choice.name}",
                    hint=f"legal values: {', '.join(map(str, legal))}",
                )
            if tiling.columns % factor:
                raise MappingError(
                    f"{where}: {factor} columns per converter do not divide "
                    f"the {tiling.columns} crossbar columns"
                )
            changed[node.outputs[0]] = with_attributes(node, column_share=factor)
            ctx.decisions.record(
                self.name,
                where,
                converter=choice.name,
                column_share=factor,
                converters_per_crossbar=tiling.columns // factor,
            )
        return replace_nodes(graph, changed)

    def search_space(self, graph: Graph, ctx: Context) -> dict[str, list]:
        target = require_target(ctx, self.name)
        factors = {f for c in target.converters for f in target.column_sharing_for(c)}
        return {"factor": sorted(factors)}
