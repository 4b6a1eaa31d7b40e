"""The `select-adc` pass: the converter of each crossbar layer, its precision or samples."""

from __future__ import annotations

from dataclasses import dataclass

from imcc.errors import MappingError
from imcc.ir.graph import Graph
from imcc.ir.mapping import ConverterChoice
from imcc.passes.base import Pass, option
from imcc.passes.context import Context
from imcc.passes.layers import (
    check_choice,
    crossbar_layers,
    layer_label,
    per_layer,
    replace_nodes,
    require_target,
    with_attributes,
)
from imcc.target import ConverterKind


@dataclass(frozen=True, slots=True)
class SelectAdc(Pass):
    """Choose per crossbar layer the converter (SAR / Flash ADC, sense amplifier, MTJ), its
    precision and, for stochastic MTJ converters, the number of samples.

    `converter` names one of the target's converters (empty: its first); `bits=0` takes that
    converter's widest legal precision, `samples=0` its smallest legal sample count. Every
    choice must be one the target offers. Per-layer lists (one entry per crossbar layer)
    override the uniform values: `per_layer_converter=[flash,flash,sar]`, `per_layer_bits=[...]`,
    `per_layer_samples=[16,4,4]`.

    ```
    // after: select-adc{converter=sar bits=8 ...}
    %y.acc = conv(...) {..., converter = #converter<name = "sar", kind = "sar", bits = 8,
             samples = 1>} : i32[1,16,8,8]
    ```
    """

    name = "select-adc"
    converter: str = option("", "a converter of the target (empty: its first)")
    bits: int = option(0, "converter precision (0: the converter's widest)")
    samples: int = option(0, "samples per conversion of an MTJ converter (0: its fewest)")
    per_layer_converter: tuple[str, ...] = option((), "converter name per crossbar layer")
    per_layer_bits: tuple[int, ...] = option((), "converter precision per crossbar layer")
    per_layer_samples: tuple[int, ...] = option((), "MTJ samples per crossbar layer")

    def run(self, graph: Graph, ctx: Context) -> Graph:
        target = require_target(ctx, self.name)
        layers = crossbar_layers(graph)
        count = len(layers)
        names = per_layer(self.per_layer_converter,
                          self.converter or target.converters[0].name, count,
                          "per_layer_converter")
        bits = per_layer(self.per_layer_bits, self.bits, count, "per_layer_bits")
        samples = per_layer(self.per_layer_samples, self.samples, count, "per_layer_samples")
        offered = [c.name for c in target.converters]
        changed = {}
        for index, node in enumerate(layers):
            where = layer_label(node, index)
            check_choice(names[index], offered, "converter", where)
            converter = target.converter(names[index])
            width = bits[index] or max(converter.bits)
            count_ = samples[index] or min(converter.samples)
            check_choice(width, converter.bits, f"{converter.name} precision", where)
            check_choice(count_, converter.samples, f"{converter.name} sample count", where)
            if converter.kind is not ConverterKind.MTJ and count_ != 1:
                raise MappingError(f"{where}: only MTJ converters take several samples")
            choice = ConverterChoice(converter.name, converter.kind.value, width, count_)
            changed[node.outputs[0]] = with_attributes(node, converter=choice)
            ctx.decisions.record(self.name, where, converter=choice.name, kind=choice.kind,
                                 bits=choice.bits, samples=choice.samples)
        return replace_nodes(graph, changed)

    def search_space(self, graph: Graph, ctx: Context) -> dict[str, list]:
        target = require_target(ctx, self.name)
        return {
            "converter": [c.name for c in target.converters],
            "bits": sorted({b for c in target.converters for b in c.bits}),
            "samples": sorted({s for c in target.converters for s in c.samples}),
        }
