"""The `place` pass: assign crossbar layers to crossbars of the chip's tiles and replicate layers
into spare ones."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from imcc.costmodel.layer import array_cycle_s
from imcc.errors import MappingError
from imcc.ir.graph import Graph
from imcc.ir.mapping import InputStreaming, Placement, Tiling
from imcc.passes.base import Pass, option
from imcc.passes.context import Context
from imcc.passes.layers import (
    crossbar_layers,
    layer_label,
    matrix_shape,
    replace_nodes,
    require_target,
    with_attributes,
)
from imcc.plan import graph_plan, target_converter

FLOORPLANS = ("packed", "neurosim")
"""The layouts `place` offers (see `Place`)."""


@dataclass(frozen=True, slots=True)
class Place(Pass):
    """Place every crossbar layer on whole tiles of the chip and replicate the slowest layers.

    Each copy of a layer takes the layer's crossbars; layers and their copies are laid out in
    graph order in consecutive crossbar slots from slot 0, filling the tiles in order, so small
    layers share a tile (slot s is on tile s // crossbars_per_tile). By default the chip is
    sized to the network: one copy per layer, and the cost model prices the tiles used. A
    layer's time is its array cycles (output positions x input slices) divided over its copies,
    so copies balance a pipeline: with `replicate=true` the spare crossbars of a tile budget
    take extra copies of the layer with the most cycles per copy, one copy at a time while one
    fits. The
    budget is `tiles` when given, else the target's fixed chip (`tiles_per_chip`; a mapping
    that needs more tiles than a chip has takes as many chips as its weights need, all weights
    on chip as in ISAAC's multi-chip nodes, and their spare tiles). A target that sizes its
    chip to the network and no `tiles` leaves nothing to fill: `replicate=true` is an error.

    With `speedup` = N (N > 1), the layers are first copied as DNN+NeuroSim V1.4 duplicates
    them for its layer pipeline (Chip.cpp, ChipDesignInitialize, speedUpDegree): the layers with
    more output positions get more copies, so that each copy computes about as many positions as
    the smallest convolution. With P the output positions of a layer, P_max and P_min the
    largest and smallest over the layers with more than one position, the bound is
    max(P_min, P_max / N²) and a layer gets ceil(P / bound) copies (NeuroSim states it on the
    input side length: speed-up = ceil((IFM / ceil(IFM_max / N))²), N at most IFM_max / IFM_min,
    the same for stride-1 'same' convolutions). Fully connected layers keep one copy.
    `speedup=0` takes the target's `hierarchy { pipeline_speedup }` (0 unless set; the
    neurosim-rram22 targets set NeuroSim's 8); `speedup=1` copies nothing. `replicate` then
    fills the spare tiles of a fixed chip as above.

    With `floorplan=neurosim` (or the target's `hierarchy { floorplan = neurosim }` and no
    option), the layers are laid out as DNN+NeuroSim V1.3 lays out a chip run
    layer by layer with its conventional mapping (Chip.cpp ChipFloorPlan: TileDesignCM,
    PEDesign, SubArrayDup, OverallEachLayer; the simulator XPert runs, Param.cpp pipeline =
    false): every layer starts on a tile of its own and takes ceil(R / T) x ceil(C / T) tiles
    (R, C: its rows and columns in crossbars; T: the side of the target's square tile of
    crossbars_per_tile; NeuroSim sizes its tile to the widest layer, 8 x 8 crossbars of 128
    for any network with 512 output channels of 8-bit weights on 4-bit cells), and a layer
    with R <= T or C <= T is copied into the spare PEs and sub-arrays of its tiles: per side,
    floor((T / P) / ceil(n / P)) PE copies and, where R <= P or C <= P, floor(P / n) sub-array
    copies (at least 1 each; P = T / 2, the PE side NeuroSim picks when T is 8 crossbars, the
    only one above its floor of 2); the copies, at most one per output position, divide the
    layer's time (`neurosim_copies`). The slots of its tiles that no copy takes are its
    placement's `spare`: priced as NeuroSim prices them, crossbars with the layer's
    converters.

    ```
    // after: place{replicate=true speedup=0}
    %y.acc = conv(...) {..., placement = #placement<first_crossbar = 0, crossbars = 3,
             replicas = 4>} : i32[1,16,8,8]
    ```
    """

    name = "place"
    replicate: bool = option(False, "fill spare tiles with copies of the slowest layers")
    tiles: int = option(
        0,
        "tile budget that copies may fill; 0: the target's fixed chip (tiles_per_chip)",
        minimum=0,
        maximum=1 << 24,
    )
    speedup: int = option(
        0,
        "NeuroSim's pipeline duplication degree (speedUpDegree); "
        "0: the target's hierarchy pipeline_speedup, 1: none",
        minimum=0,
        maximum=1 << 16,
    )
    floorplan: str = option(
        "",
        "packed: layers share tiles, one copy each; neurosim: a tile of its own per layer, "
        "small layers copied within (NeuroSim V1.3, layer by layer); empty: the target's "
        "hierarchy floorplan",
        choices=("", *FLOORPLANS),
    )

    def run(self, graph: Graph, ctx: Context) -> Graph:
        target = require_target(ctx, self.name)
        layers = crossbar_layers(graph)
        sizes, cycles, positions, work = [], [], [], []
        for index, node in enumerate(layers):
            tiling, streaming = node.attributes.get("tiling"), node.attributes.get("input")
            if not isinstance(tiling, Tiling) or not isinstance(streaming, InputStreaming):
                raise MappingError(
                    f"{layer_label(node, index)} has no tiling or input slicing",
                    hint="run assign-input-precision and tile-crossbar first",
                )
            sizes.append(tiling.crossbars)
            positions.append(matrix_shape(node, graph).positions)
            cycles.append(positions[-1] * len(streaming.slices))
            work.append(cycles[-1] * copy_cycle_s(node, graph, target))
        speedup = self.speedup or target.hierarchy.pipeline_speedup
        replicas = pipeline_copies(positions, speedup)
        spares = [0] * len(layers)
        if (self.floorplan or target.hierarchy.floorplan) == "neurosim":
            replicas, spares = self._neurosim(ctx, layers, positions)
        else:
            self._fill(ctx, sizes, replicas, cycles, work)
        changed, first = {}, 0
        for index, (node, size, copies, spare) in enumerate(
            zip(layers, sizes, replicas, spares, strict=True)
        ):
            changed[node.outputs[0]] = with_attributes(
                node, placement=Placement(first, size, copies, spare)
            )
            ctx.decisions.record(
                self.name,
                layer_label(node, index),
                first_crossbar=first,
                crossbars=size,
                replicas=copies,
                **({"spare": spare} if spare else {}),
            )
            first += size * copies + spare
        ctx.logger.debug(
            "place: %d crossbars, %d of %s tiles",
            first,
            target.hierarchy.tiles_for(first),
            target.hierarchy.tiles_per_chip or "unbounded",
        )
        return replace_nodes(graph, changed)

    def _fill(
        self,
        ctx: Context,
        sizes: list[int],
        replicas: list[int],
        cycles: list[int],
        work: list[float],
    ) -> None:
        """Add copies of the slowest layers into the spare tiles of the budget (`replicate`;
        see `Place`), in place."""
        target = require_target(ctx, self.name)
        per_tile = target.hierarchy.crossbars_per_tile
        chip = target.hierarchy.tiles_per_chip
        slots = sum(c * r for c, r in zip(sizes, replicas, strict=True))
        used = target.hierarchy.tiles_for(slots)
        chips = target.hierarchy.chips_for(used)
        if chips > 1:
            ctx.logger.info("place: the model needs %d tiles, %d chips of %d", used, chips, chip)
        budget = self.tiles or chips * chip
        if self.replicate and not budget:
            raise MappingError(
                f"place{{replicate=true}}: target {target.name} sizes its chip to the network, "
                "so there are no spare tiles to fill",
                hint=f"give a tile budget, e.g. place{{replicate=true tiles={2 * used}}} "
                f"(the network needs {used})",
            )
        if self.replicate and budget < used:
            raise MappingError(
                f"place{{tiles={self.tiles}}}: the network needs {used} tiles",
                hint=f"give at least tiles={used}",
            )
        if self.replicate:
            spare = budget * per_tile - slots  # crossbar slots
            queue = [(-w / replicas[i], i) for i, w in enumerate(work)]
            heapq.heapify(queue)
            while queue:
                _, i = heapq.heappop(queue)
                if sizes[i] > spare or replicas[i] >= cycles[i]:
                    continue  # this layer no longer fits; a smaller one still may
                spare -= sizes[i]
                replicas[i] += 1
                heapq.heappush(queue, (-work[i] / replicas[i], i))

    def _neurosim(
        self, ctx: Context, layers: list, positions: list[int]
    ) -> tuple[list[int], list[int]]:
        """Return each layer's copies and spare slots in NeuroSim's layer-by-layer chip (see
        `Place`)."""
        target = require_target(ctx, self.name)
        if self.replicate or (self.speedup or target.hierarchy.pipeline_speedup) > 1:
            raise MappingError(
                "place{floorplan=neurosim} lays out a chip run layer by layer: it takes no "
                "replicate or pipeline speedup",
                hint="drop replicate=true and speedup, or use floorplan=packed",
            )
        per_tile = target.hierarchy.crossbars_per_tile
        side = math.isqrt(per_tile)
        if side * side != per_tile or side < 2:
            raise MappingError(
                f"place{{floorplan=neurosim}}: target {target.name} has {per_tile} crossbars "
                "per tile, not a square of at least 2 x 2",
                hint="set hierarchy { crossbars_per_tile } to 4, 16, 64, ...",
            )
        replicas, spares = [], []
        for node, count in zip(layers, positions, strict=True):
            tiling = node.attributes["tiling"]
            rows, columns = tiling.row_tiles, tiling.groups * tiling.column_tiles
            copies = min(neurosim_copies(rows, columns, side), max(count, 1))
            slots = tiling.crossbars * copies
            tiles = max(-(-rows // side) * -(-columns // side), target.hierarchy.tiles_for(slots))
            replicas.append(copies)
            spares.append(tiles * per_tile - slots)
        return replicas, spares

    def search_space(self, graph: Graph, ctx: Context) -> dict[str, list]:
        if ctx.target is not None and ctx.target.hierarchy.tiles_per_chip:
            return {"replicate": [False, True]}
        return {}


def copy_cycle_s(node, graph: Graph, target) -> float:
    """Return the time one copy of a crossbar layer takes per input slice and output
    position: its row phases at its array cycle (costmodel/layer.py, `array_cycle_s`), or 1
    before a converter is chosen (then copies balance array cycles alone)."""
    if "converter" not in node.attributes or "column_share" not in node.attributes:
        return 1.0
    plan = graph_plan(node, graph, target)
    spec = target_converter(target, node.attributes["converter"].name)
    return plan.chunks_per_tile * array_cycle_s(plan, target, spec)


def neurosim_copies(rows: int, columns: int, side: int) -> int:
    """Return the copies NeuroSim V1.3's layer-by-layer floorplan makes of a layer of `rows` x
    `columns` crossbars on tiles of `side` x `side` crossbars, PEs of side // 2 (Chip.cpp
    PEDesign and SubArrayDup; see `Place`): the product over both sides of the PE and
    sub-array copies."""
    pe = side // 2
    if rows > side and columns > side:
        return 1
    copies = 1
    for n in (rows, columns):
        copies *= max(1, (side // pe) // -(-n // pe))
        if rows <= pe or columns <= pe:
            copies *= max(1, pe // n)
    return copies


def pipeline_copies(positions: list[int], speedup: int) -> list[int]:
    """Return each layer's copies under NeuroSim's pipeline rule (see `Place`); all 1 when
    `speedup` is 0 or 1."""
    spatial = [p for p in positions if p > 1]
    if speedup <= 0 or not spatial:
        return [1] * len(positions)
    bound = max(min(spatial), max(spatial) / speedup**2)
    return [max(1, math.ceil(p / bound)) for p in positions]
