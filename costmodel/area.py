"""Chip area from the placement of the crossbar layers, per component.

- Tiles. A layer with a `placement` occupies crossbar slots [first_crossbar, first_crossbar +
  crossbars * replicas), slot s on tile s // crossbars_per_tile, so small layers share a tile;
  one without is packed after the others (one copy).
  The provisioned chip (`chip_area` without `chip_tiles`) has the tiles the mapping uses; a target
  that names a fixed chip (`tiles_per_chip`) is also priced whole (`chip_tiles` = its tiles, times
  the chips the mapping needs), its unused tiles built like the largest used one.
- Crossbars: tiles * crossbars_per_tile * crossbar area (cells plus the crossbar's peripherals).
- Bounding box. When the target gives the cell's layout width and height, a crossbar is priced
  as NeuroSim prices a sub-array (DNN+NeuroSim V1.4 SubArray.cpp, CalculateArea): the array is
  columns * cell_width wide and rows * cell_height tall; the circuits per row (the crossbar's
  `row_periphery_area` per row and the input drivers) stand beside it at the array's height and
  widen the box by their area / array height; the circuits per column (`column_periphery_area`
  per column, the crossbar's converters and counters and the units counted per crossbar:
  shift-and-add, accumulators, ...) stand beneath it at the array's width and heighten the box
  by their area / array width. Each crossbar costs the whole box. The breakdown keeps the
  converters, drivers and digital units under their own names; `array` gets the rest of the box
  (cells, row and column periphery, and the space the stacked circuits leave empty). With a
  short, wide array (a 1T1R cell is 4F x 12F) and tall row drivers, that empty space is most of
  the chip, as in NeuroSim.
- Column mux: a layer that shares converters (m > 1) needs a mux and decoder per crossbar
  it occupies (layer.py `mux_area`).
- Converters: a layer needs ceil(columns / column_share) converters of its kind per crossbar
  it occupies; a tile holds the converters of the crossbars on it. Tiles of a fixed chip that
  no layer uses are built like the largest used tile. An MTJ converter's counter is booked
  under `counters`.
- Input drivers (per row) on every crossbar of the chip; shift-and-add, accumulator, digital,
  center+offset and speculation units `count` per their `level` (crossbar, tile or chip);
  tile-level buffers and interconnect on every tile; chip-level buffers once.
The total is the sum of the breakdown.
"""

from __future__ import annotations

from collections.abc import Sequence

from imcc.costmodel.layer import CrossbarArea
from imcc.target import DigitalUnit, Target

COMPONENTS = (
    "array",
    "input_drivers",
    "converters",
    "counters",
    "column_mux",
    "shift_add",
    "accumulators",
    "buffers",
    "interconnect",
    "digital",
    "center_offset",
    "speculation",
)


def _slots(needs: Sequence[CrossbarArea]) -> list[tuple[CrossbarArea, int, int]]:
    """Return each need's crossbar slots [first, end) on the chip: its placement's, or, for a
    layer without one, packed after the others (one copy)."""
    placed, free = [], 0
    for need in needs:
        if need.placement is not None:
            first, end = need.placement.first_crossbar, need.placement.end
        else:
            first, end = free, free + max(need.crossbars, 1)
        free = max(free, end)
        placed.append((need, first, end))
    return placed


def tiles_used(target: Target, needs: Sequence[CrossbarArea]) -> int:
    """Return the tiles the crossbar layers occupy (copies included)."""
    end = max((last for _, _, last in _slots(needs)), default=0)
    return target.hierarchy.tiles_for(end)


def chip_area(
    target: Target, needs: Sequence[CrossbarArea], chip_tiles: int | None = None
) -> dict[str, float]:
    """Return the area of each component in m² of a chip of `chip_tiles` tiles (default: the
    tiles the crossbar layers' needs occupy) holding those layers."""
    per_tile = target.hierarchy.crossbars_per_tile
    converter_need: dict[int, float] = {}
    counter_need: dict[int, float] = {}
    mux_need: dict[int, float] = {}
    next_free = 0
    for need, first, end in _slots(needs):
        next_free = max(next_free, end)
        counter_area = need.converter.counter_area_m2
        unit = need.converter.area_m2 - counter_area
        for tile in range(first // per_tile, target.hierarchy.tiles_for(end)):
            on_tile = min(end, (tile + 1) * per_tile) - max(first, tile * per_tile)
            converters = on_tile * need.converters_per_crossbar
            converter_need[tile] = converter_need.get(tile, 0.0) + converters * unit
            counter_need[tile] = counter_need.get(tile, 0.0) + converters * counter_area
            mux_need[tile] = mux_need.get(tile, 0.0) + on_tile * need.mux_area_m2
    used = target.hierarchy.tiles_for(next_free)
    tiles = used if chip_tiles is None else max(chip_tiles, used)
    idle = max(tiles - len(converter_need), 0)
    crossbars = tiles * per_tile
    xbar = target.crossbar
    area = dict.fromkeys(COMPONENTS, 0.0)
    area["array"] = crossbars * xbar.area_m2
    if xbar.bounding_box:
        area["array"] = _bounding_boxes(target, converter_need, counter_need, tiles)
    area["input_drivers"] = crossbars * xbar.rows * target.input_driver.area_per_row_m2
    area["converters"] = sum(converter_need.values()) + idle * max(
        converter_need.values(), default=0.0
    )
    area["counters"] = sum(counter_need.values()) + idle * max(counter_need.values(), default=0.0)
    area["column_mux"] = sum(mux_need.values()) + idle * max(mux_need.values(), default=0.0)
    area["shift_add"] = instances(target.shift_add, crossbars, tiles) * target.shift_add.area_m2
    area["accumulators"] = (
        instances(target.accumulator, crossbars, tiles) * target.accumulator.area_m2
    )
    area["buffers"] = sum(b.area_m2 * (tiles if b.level == "tile" else 1) for b in target.buffers)
    area["interconnect"] = tiles * target.interconnect.area_per_tile_m2
    area["digital"] = instances(target.digital, crossbars, tiles) * target.digital.area_m2
    for name in ("center_offset", "speculation"):
        unit_spec = getattr(target, name)
        if unit_spec is not None:
            area[name] = instances(unit_spec, crossbars, tiles) * unit_spec.area_m2
    return area


def _bounding_boxes(
    target: Target, converter_need: dict[int, float], counter_need: dict[int, float], tiles: int
) -> float:
    """Return the `array` share of the crossbars' bounding boxes over all tiles: each box less
    the converters, counters, drivers and crossbar-level units booked under their own names."""
    xbar, per_tile = target.crossbar, target.hierarchy.crossbars_per_tile
    row_side = xbar.rows * target.input_driver.area_per_row_m2
    units = [
        target.shift_add,
        target.accumulator,
        target.digital,
        target.center_offset,
        target.speculation,
    ]
    digital = sum(u.count * u.area_m2 for u in units if u is not None and u.level == "crossbar")
    idle = (max(converter_need.values(), default=0.0), max(counter_need.values(), default=0.0))
    total = 0.0
    for tile in range(tiles):
        converters = converter_need.get(tile, idle[0]) + counter_need.get(tile, idle[1])
        column_side = converters / per_tile + digital
        box = xbar.box_area_m2(row_side, column_side) + xbar.peripheral_area_m2
        total += per_tile * (box - row_side - column_side)
    return total


def instances(unit: DigitalUnit, crossbars: int, tiles: int) -> int:
    """Return how many copies of a unit the chip holds: `count` per crossbar, tile or chip."""
    per = {"crossbar": crossbars, "tile": tiles}.get(unit.level, 1)
    return unit.count * per
