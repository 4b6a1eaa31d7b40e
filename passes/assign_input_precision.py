"""The `assign-input-precision` pass: bits and streamed slices of every crossbar layer's input."""

from __future__ import annotations

from dataclasses import dataclass

from imcc.errors import MappingError
from imcc.ir.graph import Graph
from imcc.ir.mapping import InputStreaming
from imcc.passes.base import Pass, PerLayerOption, option
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
from imcc.passes.quantize import MAX_INPUT_BITS, MIN_INPUT_BITS

MAX_SEARCH_SLICES = 4
"""Longest non-uniform slicing the search space offers (RAELLA speculates with 3 slices)."""


def split_bits(bits: int, width: int) -> tuple[int, ...]:
    """Split `bits` into slices of `width` bits, most significant first (8, 3 -> 3, 3, 2)."""
    slices = [width] * (bits // width)
    if bits % width:
        slices.append(bits % width)
    return tuple(slices)


def wide_slicings(bits: int, widths: tuple[int, ...], most: int) -> list[tuple[int, ...]]:
    """Return the ways to cut `bits` into at most `most` slices of legal `widths`, widest (most
    significant) first, each non-increasing: 8 bits in widths 1..4 -> [4, 4], [4, 3, 1], ..."""
    found: list[tuple[int, ...]] = []

    def extend(prefix: tuple[int, ...], left: int) -> None:
        if left == 0:
            found.append(prefix)
            return
        if len(prefix) == most:
            return
        for width in sorted(widths, reverse=True):
            if width <= left and (not prefix or width <= prefix[-1]):
                extend((*prefix, width), left - width)

    extend((), bits)
    return found


@dataclass(frozen=True, slots=True)
class AssignInputPrecision(Pass):
    """Choose per crossbar layer the input precision and the width of the streamed slices.

    Sets `input = #input<bits, slices, signed, speculate>` on every conv / linear with constant
    weights; `quantize` (which runs after it) quantizes that layer's input to `bits` and fills in
    `signed` from the calibration range. On a graph quantized already, the bits must be those
    of the layer's `quantize` op, whose signedness it takes. `bits=0` takes the target's widest
    legal precision, `slice=0` its narrowest legal slice (bit-serial when it offers 1-bit
    slices). Slices are cut most significant first: 8 bits in 3-bit slices stream as [3, 3, 2].
    `slices=[3,3,2]` gives the widths explicitly (MSB first) for every layer and overrides
    `slice`; the widths must add up to each layer's bits and each be a width the target's
    drivers stream. Per-layer lists override the uniform values (one entry per crossbar layer, in
    graph order): `per_layer_slice` cuts that layer's bits in slices of its width, whatever
    `slices` says. `speculate=true` (RAELLA: the wide slices run speculatively, a conversion that
    hits the ADC's min / max code is discarded and its input bits re-run as 1-bit slices) needs a
    target with a speculation unit; the cost model then needs `profile-converters` to have
    measured the recoveries on calibration data. `per_layer_speculate=[true,false,...]` decides
    it layer by layer (a chip that speculates only where its converters saturate rarely).

    ```
    // before
    %y = conv(%x, %w) {strides = [1, 1], ...} : f32[1,8,8,8]
    // after: assign-input-precision{bits=8 slice=1 ...}
    %y = conv(%x, %w) {strides = [1, 1], ..., input = #input<bits = 8,
         slices = [1, 1, 1, 1, 1, 1, 1, 1], signed = false, speculate = false>} : f32[1,8,8,8]
    // after: assign-input-precision{bits=8 speculate=true slices=[3,3,2] ...} (RAELLA)
    %y = conv(%x, %w) {..., input = #input<bits = 8, slices = [3, 3, 2], signed = false,
         speculate = true>} : f32[1,8,8,8]
    ```
    """

    name = "assign-input-precision"
    per_layer_options = (
        PerLayerOption("bits", "per_layer_bits"),
        PerLayerOption("slice", "per_layer_slice", supersedes=("slices",)),
        PerLayerOption("speculate", "per_layer_speculate"),
    )
    bits: int = option(0, "input precision in bits (0: the target's widest)", minimum=0, maximum=32)
    slice: int = option(
        0, "bits streamed per array cycle (0: the target's narrowest)", minimum=0, maximum=32
    )
    speculate: bool = option(False, "stream wide slices and re-run saturated columns bit-serially")
    per_layer_bits: tuple[int, ...] = option(
        (), "input bits per crossbar layer", minimum=1, maximum=32
    )
    per_layer_slice: tuple[int, ...] = option(
        (), "slice width per crossbar layer", minimum=1, maximum=32
    )
    slices: tuple[int, ...] = option(
        (),
        "slice widths, MSB first, for every layer (overrides slice; e.g. [3,3,2])",
        minimum=1,
        maximum=32,
    )
    per_layer_speculate: tuple[bool, ...] = option((), "speculate per crossbar layer")

    def run(self, graph: Graph, ctx: Context) -> Graph:
        target = require_target(ctx, self.name)
        driver = target.input_driver
        layers = crossbar_layers(graph)
        bits = per_layer(
            self.per_layer_bits, self.bits or max(driver.input_bits), len(layers), "per_layer_bits"
        )
        widths = per_layer(
            self.per_layer_slice,
            self.slice or min(driver.bits_per_cycle),
            len(layers),
            "per_layer_slice",
        )
        speculating = per_layer(
            self.per_layer_speculate, self.speculate, len(layers), "per_layer_speculate"
        )
        if any(speculating) and target.speculation is None:
            raise MappingError(
                f"target {target.name} has no speculation unit",
                hint="drop speculate=true or use a target that offers it",
            )
        decided = {}
        for index, node in enumerate(layers):
            where = layer_label(node, index)
            check_choice(bits[index], driver.input_bits, "input precision", where)
            if self.slices and not self.per_layer_slice:
                cut = self.slices
                for width in cut:
                    check_choice(width, driver.bits_per_cycle, "input slice width", where)
                if sum(cut) != bits[index]:
                    raise MappingError(
                        f"{where}: input slices {list(cut)} add up to {sum(cut)} bits, not the "
                        f"layer's {bits[index]}",
                        hint="give slices whose widths add up to bits",
                    )
            else:
                check_choice(widths[index], driver.bits_per_cycle, "input slice width", where)
                cut = split_bits(bits[index], widths[index])
                for width in cut:  # the last slice takes the remainder: offered too?
                    check_choice(width, driver.bits_per_cycle, "input slice width", where)
            signed = False
            producer = graph.producers.get(node.inputs[0])
            if producer is not None and producer.op == "quantize":  # quantized already
                if producer.attr("bits") != bits[index]:
                    raise MappingError(
                        f"{where}: its input is quantized to {producer.attr('bits')} bits, not "
                        f"{bits[index]}",
                        hint="run assign-input-precision before quantize",
                    )
                signed = producer.attr("signed")
            streaming = InputStreaming(bits[index], cut, signed, speculating[index])
            decided[node.outputs[0]] = with_attributes(node, input=streaming)
            ctx.decisions.record(
                self.name,
                where,
                bits=streaming.bits,
                slices=list(streaming.slices),
                speculate=streaming.speculate,
            )
        return replace_nodes(graph, decided)

    def search_space(self, graph: Graph, ctx: Context) -> dict[str, list]:
        """Return the legal bits and uniform slice widths; on a target with a speculation unit
        also `speculate` and the non-uniform `slices` (`[]`: cut by `slice`) of its
        precisions, at most `MAX_SEARCH_SLICES` slices, widest first. Precisions the
        quantize pass cannot give (1 bit: no signed code) are left out, so that a random
        design of a deep network is not almost always illegal."""
        target = require_target(ctx, self.name)
        driver = target.input_driver
        space: dict[str, list] = {
            "bits": [b for b in driver.input_bits if MIN_INPUT_BITS <= b <= MAX_INPUT_BITS],
            "slice": list(driver.bits_per_cycle),
        }
        if target.speculation is not None:
            cuts = [
                cut
                for bits in space["bits"]
                for cut in wide_slicings(bits, driver.bits_per_cycle, MAX_SEARCH_SLICES)
            ]
            space["speculate"] = [False, True]
            space["slices"] = [(), *dict.fromkeys(cuts)]
        return space
