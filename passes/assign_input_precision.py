"""The `assign-input-precision` pass: bits and streamed slices of every crossbar layer's input."""

from __future__ import annotations

from dataclasses import dataclass

from imcc.errors import MappingError
from imcc.ir.graph import Graph
from imcc.ir.mapping import InputStreaming
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


def split_bits(bits: int, width: int) -> tuple[int, ...]:
    """Split `bits` into slices of `width` bits, most significant first (8, 3 -> 3, 3, 2)."""
    slices = [width] * (bits // width)
    if bits % width:
        slices.append(bits % width)
    return tuple(slices)


@dataclass(frozen=True, slots=True)
class AssignInputPrecision(Pass):
    """Choose per crossbar layer the input precision and the width of the streamed slices.

    Sets `input = #input<bits, slices, signed, speculate>` on every conv / linear with constant
    weights; `quantize` (which runs after it) quantizes that layer's input to `bits` and fills in
    `signed` from the calibration range. On a graph quantized already, the bits must be those
    of the layer's `quantize` op, whose signedness it takes. `bits=0` takes the target's widest
    legal precision, `slice=0` its narrowest legal slice (bit-serial when it offers 1-bit
    slices). Slices are cut
    most significant first: 8 bits in 3-bit slices stream as [3, 3, 2]. Per-layer lists override
    the uniform values (one entry per crossbar layer, in graph order). `speculate=true` (wide
    slices with 1-bit recovery of saturated columns) needs a target with a speculation unit.

    ```
    // before
    %y = conv(%x, %w) {strides = [1, 1], ...} : f32[1,8,8,8]
    // after: assign-input-precision{bits=8 slice=1 ...}
    %y = conv(%x, %w) {strides = [1, 1], ..., input = #input<bits = 8,
         slices = [1, 1, 1, 1, 1, 1, 1, 1], signed = false, speculate = false>} : f32[1,8,8,8]
    ```
    """

    name = "assign-input-precision"
    bits: int = option(0, "input precision in bits (0: the target's widest)")
    slice: int = option(0, "bits streamed per array cycle (0: the target's narrowest)")
    speculate: bool = option(False, "stream wide slices and re-run saturated columns bit-serially")
    per_layer_bits: tuple[int, ...] = option((), "input bits per crossbar layer")
    per_layer_slice: tuple[int, ...] = option((), "slice width per crossbar layer")

    def run(self, graph: Graph, ctx: Context) -> Graph:
        target = require_target(ctx, self.name)
        driver = target.input_driver
        layers = crossbar_layers(graph)
        bits = per_layer(self.per_layer_bits, self.bits or max(driver.input_bits), len(layers),
                         "per_layer_bits")
        widths = per_layer(self.per_layer_slice, self.slice or min(driver.bits_per_cycle),
                           len(layers), "per_layer_slice")
        if self.speculate and target.speculation is None:
            raise MappingError(f"target {target.name} has no speculation unit",
                               hint="drop speculate=true or use a target that offers it")
        decided = {}
        for index, node in enumerate(layers):
            where = layer_label(node, index)
            check_choice(bits[index], driver.input_bits, "input precision", where)
            check_choice(widths[index], driver.bits_per_cycle, "input slice width", where)
            signed = False
            producer = graph.producers.get(node.inputs[0])
            if producer is not None and producer.op == "quantize":  # quantized already
                if producer.attr("bits") != bits[index]:
                    raise MappingError(
                        f"{where}: its input is quantized to {producer.attr('bits')} bits, not "
                        f"{bits[index]}", hint="run assign-input-precision before quantize")
                signed = producer.attr("signed")
            streaming = InputStreaming(bits[index], split_bits(bits[index], widths[index]),
                                       signed, self.speculate)
            decided[node.outputs[0]] = with_attributes(node, input=streaming)
            ctx.decisions.record(self.name, where, bits=streaming.bits,
                                 slices=list(streaming.slices), speculate=streaming.speculate)
        return replace_nodes(graph, decided)

    def search_space(self, graph: Graph, ctx: Context) -> dict[str, list]:
        target = require_target(ctx, self.name)
        return {"bits": list(target.input_driver.input_bits),
                "slice": list(target.input_driver.bits_per_cycle)}
