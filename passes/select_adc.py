"""The `select-adc` pass: the converter of each crossbar layer, its precision or samples."""

from __future__ import annotations

from dataclasses import dataclass

from imcc.errors import MappingError
from imcc.ir.graph import Graph
from imcc.ir.mapping import ConverterChoice
from imcc.passes.base import Pass, PerLayerOption, option
from imcc.passes.context import Context
from imcc.passes.layers import (
    check_choice,
    crossbar_layers,
    layer_label,
    per_layer,
    replace_nodes,
    require_quantized,
    require_target,
    with_attributes,
)
from imcc.target import ConverterKind, Target


@dataclass(frozen=True, slots=True)
class SelectAdc(Pass):
    """Choose per crossbar layer the converter (SAR / Flash ADC, sense amplifier, MTJ), its
    precision and, for stochastic MTJ converters, the number of samples.

    `converter` names one of the target's converters (empty: its first, or with `type` the
    first of that kind: `sar`, `flash`, `sense-amp` or `mtj`, e.g.
    `select-adc{type=mtj samples=4}`); `bits=0` takes that converter's widest legal
    precision, `samples=0` its smallest legal sample count. Every
    choice must be one the target offers. Per-layer lists (one entry per crossbar layer)
    override the uniform values: `per_layer_converter=[flash,flash,sar]`, `per_layer_bits=[...]`,
    `per_layer_samples=[16,4,4]`. `first_samples` sets the first layer's samples alone
    (StoX-Net's inhomogeneous preset, 16 in the first conv and 4 in the others:
    `select-adc{type=mtj samples=4 first_samples=16}`, whatever the network's depth), and
    `last_converter` the last layer's converter (at its widest precision and fewest samples:
    StoX-Net keeps its classifier precise, `last_converter=adc8`).

    ```
    // after: select-adc{converter=sar bits=8 ...}
    %y.acc = conv(...) {..., converter = #converter<name = "sar", kind = "sar", bits = 8,
             samples = 1>} : i32[1,16,8,8]
    ```
    """

    name = "select-adc"
    per_layer_options = (
        PerLayerOption("converter", "per_layer_converter"),
        PerLayerOption("bits", "per_layer_bits"),
        PerLayerOption("samples", "per_layer_samples"),
    )
    converter: str = option("", "a converter of the target (empty: its first)")
    type: str = option(
        "",
        "kind of converter: sar, flash, sense-amp, mtj (empty: any)",
        choices=("", *(kind.value for kind in ConverterKind)),
    )
    bits: int = option(0, "converter precision (0: the converter's widest)", minimum=0, maximum=32)
    samples: int = option(
        0, "samples per conversion of an MTJ converter (0: its fewest)", minimum=0
    )
    first_samples: int = option(
        0,
        "samples of the first crossbar layer's MTJ (0: as `samples`; StoX-Net's preset: 16)",
        minimum=0,
    )
    last_converter: str = option(
        "",
        "converter of the last crossbar layer, at its own widest precision (empty: as the "
        "others; StoX-Net keeps the classifier precise: adc8)",
    )
    per_layer_converter: tuple[str, ...] = option((), "converter name per crossbar layer")
    per_layer_bits: tuple[int, ...] = option(
        (), "converter precision per crossbar layer", minimum=0, maximum=32
    )
    per_layer_samples: tuple[int, ...] = option((), "MTJ samples per crossbar layer", minimum=0)

    def run(self, graph: Graph, ctx: Context) -> Graph:
        target = require_target(ctx, self.name)
        layers = crossbar_layers(graph)
        count = len(layers)
        default = self._default(target)
        names = per_layer(
            self.per_layer_converter, self.converter or default, count, "per_layer_converter"
        )
        bits = per_layer(self.per_layer_bits, self.bits, count, "per_layer_bits")
        samples = per_layer(self.per_layer_samples, self.samples, count, "per_layer_samples")
        if self.first_samples and samples:
            samples = [self.first_samples, *samples[1:]]
        if self.last_converter and names:
            names[-1], bits[-1], samples[-1] = self.last_converter, 0, 0
        offered = [c.name for c in target.converters]
        changed = {}
        for index, node in enumerate(layers):
            where = layer_label(node, index)
            require_quantized(node, graph, where, self.name)
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
            ctx.decisions.record(
                self.name,
                where,
                converter=choice.name,
                kind=choice.kind,
                bits=choice.bits,
                samples=choice.samples,
            )
        return replace_nodes(graph, changed)

    def _default(self, target: Target) -> str:
        """Return the converter a layer gets by default: the first (of kind `type`)."""
        if not self.type:
            return target.converters[0].name
        named = [c for c in target.converters if c.name == self.converter]
        if named and named[0].kind.value != self.type:
            raise MappingError(
                f"select-adc: converter {self.converter} is not of type {self.type}",
                hint="give converter or type, not both",
            )
        for converter in target.converters:
            if converter.kind.value == self.type:
                return converter.name
        offered = ", ".join(f"{c.name} ({c.kind.value})" for c in target.converters)
        raise MappingError(
            f"select-adc: target {target.name} has no {self.type} converter",
            hint=f"its converters: {offered}",
        )

    def search_space(self, graph: Graph, ctx: Context) -> dict[str, list]:
        target = require_target(ctx, self.name)
        return {
            "converter": [c.name for c in target.converters],
            "bits": sorted({b for c in target.converters for b in c.bits}),
            "samples": sorted({s for c in target.converters for s in c.samples}),
        }
