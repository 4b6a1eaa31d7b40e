"""The hardware target model: what a `.hw` file describes, in SI units, as frozen dataclasses.

Every quantity is stored in SI base units (joules, seconds, hertz, square metres, bytes); the
`.hw` language (frontend/hw.py) converts the units written there (`pJ`, `ns`, `GHz`, `um2`,
`KiB`, ...). Passes read the legal mapping choices from a Target; the cost model reads the
per-action energies, latencies and areas.

Energy of a crossbar read (per cell, per array cycle): a cell on an active row (input bit or
pulse non-zero) costs `cell_read_energy_j * g + cell_base_energy_j`, where `g` in [0, 1] is its
stored conductance level normalised to the largest level; cells on inactive rows cost nothing.
So an encoding that lowers the stored levels, or inputs with fewer active bits, lower the array
energy, as the calibration data shows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ConverterKind(enum.Enum):
    """The kinds of column converters a target can offer."""

    SAR = "sar"
    FLASH = "flash"
    SENSE_AMP = "sense-amp"
    MTJ = "mtj"


class ConverterModel(enum.Enum):
    """Which cost model prices a converter."""

    SURVEY = "survey"  # Murmann ADC-survey regression (energy, area from bits, node, rate)
    NEUROSIM = "neurosim"  # SAR: B+1 steps, 1 comparator; Flash: 1 step, 2^B-1 comparators
    FIXED = "fixed"  # the energy, latency and area written in the target


@dataclass(frozen=True, slots=True)
class Technology:
    """Process node and clock of the whole chip."""

    node_nm: float
    clock_hz: float
    supply_v: float = 0.9


@dataclass(frozen=True, slots=True)
class Crossbar:
    """One crossbar array: geometry, cell technology and per-cell read costs."""

    rows: int
    columns: int
    cell: str  # rram, sram, sot-mtj, stt-mram, pcm, fefet
    bits_per_cell: int
    devices_per_slice: int = 1  # 1: offset encoding; 2: differential / 2T2R pair
    parallel_rows: int = 0  # rows driven at once (0: all rows); NeuroSim's "rows in parallel"
    cell_read_energy_j: float = 0.0  # at the largest conductance level, input active
    cell_base_energy_j: float = 0.0  # per active cell regardless of level (wire, access device)
    # the analog read alone: rows driven and column currents settled for one input slice
    # (conversion times belong to the converters; see costmodel/timing.py)
    read_latency_s: float = 0.0
    cell_area_m2: float = 0.0  # one device
    peripheral_area_m2: float = 0.0  # per crossbar: decoders, drivers not modelled elsewhere
    signed_columns: bool = False  # the column circuit subtracts a device pair in analog
    # Bounding-box layout (NeuroSim's SubArray.cpp rule), used when both cell sizes are given:
    # the row circuits stand beside the array at its height, the column circuits beneath it at
    # its width, and the crossbar costs the whole rectangle (see `box_area_m2`).
    cell_width_m: float = 0.0  # layout pitch of one cell along a row
    cell_height_m: float = 0.0  # layout pitch of one cell along a column
    row_periphery_area_m2: float = 0.0  # per row: drivers, level shifters, switch matrix
    column_periphery_area_m2: float = 0.0  # per column: level shifter, switch matrix, mux

    @property
    def active_rows(self) -> int:
        """Return the rows summed into one column partial sum."""
        return self.parallel_rows or self.rows

    @property
    def bounding_box(self) -> bool:
        """Return whether the crossbar is priced as a layout bounding box."""
        return self.cell_width_m > 0 and self.cell_height_m > 0

    def box_area_m2(self, row_circuits_m2: float = 0.0, column_circuits_m2: float = 0.0) -> float:
        """Return the bounding box of the array and its periphery.

        The array is `columns * cell_width` wide and `rows * cell_height` tall. Everything per
        row (`row_periphery_area` per row plus `row_circuits_m2` for the whole crossbar) is laid
        out beside it at the array's height, so it adds `area / array height` to the width;
        everything per column (`column_periphery_area` per column plus `column_circuits_m2`:
        converters, crossbar-level digital units) beneath it at the array's width, adding
        `area / array width` to the height. The box is width x height; what the circuits leave
        empty in it is paid for too, as on silicon.
        """
        width = self.columns * self.cell_width_m
        height = self.rows * self.cell_height_m
        row_side = self.rows * self.row_periphery_area_m2 + row_circuits_m2
        column_side = self.columns * self.column_periphery_area_m2 + column_circuits_m2
        return (width + row_side / height) * (height + column_side / width)

    @property
    def area_m2(self) -> float:
        """Return the area of one crossbar: the cell array plus its own peripherals, or, with
        cell sizes given, its bounding box with the row and column periphery alone."""
        if self.bounding_box:
            return self.box_area_m2() + self.peripheral_area_m2
        return self.rows * self.columns * self.cell_area_m2 + self.peripheral_area_m2


@dataclass(frozen=True, slots=True)
class InputDriver:
    """Row drivers / DACs: how many input bits one array cycle carries, and what a row costs."""

    bits_per_cycle: tuple[int, ...]  # legal input slice widths (1 = bit-serial)
    kind: str = "bit-serial"  # bit-serial, pulse-train, voltage-dac
    # per activation of a driven row: bit-serial, when its bit is 1; pulse-train, per pulse;
    # voltage-dac, every array cycle
    energy_per_row_j: float = 0.0
    base_energy_per_row_j: float = 0.0  # per driven row per array cycle, whatever the input
    area_per_row_m2: float = 0.0
    input_bits: tuple[int, ...] = (8,)  # legal activation precisions


@dataclass(frozen=True, slots=True)
class Converter:
    """One converter on offer with its legal options and the model that prices it."""

    name: str
    kind: ConverterKind
    bits: tuple[int, ...] = ()  # legal precisions (sense-amp: (1,); mtj: (1,))
    samples: tuple[int, ...] = (1,)  # legal sample counts (MTJ)
    model: ConverterModel = ConverterModel.SURVEY
    signed: bool = False
    sample_rate_hz: float = 1.0e9
    energy_j: float = 0.0  # per conversion (FIXED) or per sample (MTJ)
    latency_s: float = 0.0  # per conversion (FIXED) or per sample (MTJ)
    area_m2: float = 0.0  # per converter (FIXED, MTJ)
    reset_energy_j: float = 0.0  # MTJ: reset between samples
    reset_latency_s: float = 0.0
    counter_energy_j: float = 0.0  # MTJ: one up/down count per sample
    counter_area_m2: float = 0.0
    comparator_energy_j: float = 0.0  # NEUROSIM model: one comparison
    comparator_area_m2: float = 0.0
    column_sharing: tuple[int, ...] = ()  # legal factors with this converter (empty: target's)
    step_latency_s: float = 0.0  # NEUROSIM model: one SAR bit cycle or one flash comparison
    # NEUROSIM model (DNN+NeuroSim V1.3 SarADC.cpp / MultilevelSenseAmp.cpp GetColumnPower): a
    # SAR's bias power (bit_power x B + base_power) over its B+1 steps; both models add the
    # column-current power over the conversion; `latency_factor` is NeuroSim's validated
    # sensing-latency factor (Param.cpp: 1.4), applied to the time, not the energy
    bit_power_w: float = 0.0
    base_power_w: float = 0.0
    column_power_w: float = 0.0
    latency_factor: float = 1.0
    unit_area_m2: float = 0.0  # NEUROSIM SAR: A_min in area = A_min*(478 + 182*(B-1))
    # how a B-bit ADC maps a partial sum to codes: full-scale (a power-of-two step so the
    # largest possible sum of the read fits, round to nearest) or saturate (unit step, clip)
    range_rule: str = "full-scale"
    sensitivity: float = 4.0  # MTJ: switching probability sigmoid(sensitivity * x)


@dataclass(frozen=True, slots=True)
class DigitalUnit:
    """A digital unit with a per-operation energy and latency and an area per instance."""

    energy_j: float = 0.0
    latency_s: float = 0.0
    area_m2: float = 0.0
    count: int = 1  # instances per `level`
    level: str = "crossbar"  # what `count` counts per: crossbar, tile or chip


@dataclass(frozen=True, slots=True)
class Buffer:
    """An on-chip buffer: capacity, cost per byte moved, area, and the traffic it carries
    (`role`, costmodel/layer.py): `activations` (a layer's input read once and its output
    written once, e.g. ISAAC's eDRAM), `input-register` (the input bits of every array read,
    per crossbar) or `output-register` (one partial-sum word per conversion result)."""

    name: str
    size_bytes: int
    energy_per_byte_j: float
    area_m2: float
    level: str = "tile"  # tile or chip
    bandwidth_bytes_per_s: float = 0.0
    role: str = "activations"


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """How crossbars group into tiles and tiles into a chip."""

    crossbars_per_tile: int
    tiles_per_chip: int = 0  # 0: as many as the mapping needs
    # DNN+NeuroSim's layer duplication for its layer pipeline (Chip.cpp, speedUpDegree): the
    # default of `place{speedup=0}`; 0 or 1: each layer once (see passes/place.py)
    pipeline_speedup: int = 0
    # how `place` lays the layers out when its `floorplan` option is not given: packed (layers
    # share tiles, one copy each) or neurosim (DNN+NeuroSim V1.3 run layer by layer: a tile of
    # its own per layer, small layers copied within; see passes/place.py)
    floorplan: str = "packed"

    def tiles_for(self, crossbars: int) -> int:
        """Return the tiles that hold `crossbars` consecutive crossbar slots from slot 0."""
        return -(-crossbars // self.crossbars_per_tile)

    def chips_for(self, tiles: int) -> int:
        """Return the fixed chips that hold `tiles` tiles (1 when the chip is sized to them)."""
        return -(-tiles // self.tiles_per_chip) if self.tiles_per_chip else 1


@dataclass(frozen=True, slots=True)
class ColumnMux:
    """The column multiplexer that lets one converter serve m columns (column sharing > 1) and
    its decoder of ceil(log2 m) address bits (DNN+NeuroSim V1.3 SubArray.cpp Initialize: Mux
    of numCol/m outputs and m selections, a RowDecoder in MUX mode). Per crossbar: one pass
    gate per column (`gate_area`, `gate_energy` per column switched per read) and the
    decoder's 2^ceil(log2 m) output stages (`decoder_area` each, `decoder_energy` per select)."""

    gate_area_m2: float = 0.0
    gate_energy_j: float = 0.0
    decoder_area_m2: float = 0.0
    decoder_energy_j: float = 0.0
    # the select path's time beyond the row path, added to each read: `latency_s` plus
    # `load_latency_s` per pass gate a select line drives (columns / m)
    latency_s: float = 0.0
    load_latency_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Interconnect:
    """The network between tiles."""

    energy_per_bit_j: float = 0.0
    bandwidth_bits_per_s: float = 0.0
    area_per_tile_m2: float = 0.0


@dataclass(frozen=True, slots=True)
class Target:
    """A complete hardware target: crossbars, converters, digital units and the chip around them."""

    name: str
    description: str
    technology: Technology
    crossbar: Crossbar
    input_driver: InputDriver
    converters: tuple[Converter, ...]
    column_sharing: tuple[int, ...] = (1,)  # legal columns per converter; the first is the default
    # reactivate: the rows are driven again for each group of shared columns (NeuroSim's mux);
    # sample-hold: the array is read once and the held column values converted in turn (ISAAC)
    column_share_mode: str = "reactivate"
    # pipelined: layers run as stages of a pipeline, each at its own array cycle (ISAAC,
    # RAELLA); synchronous: one chip clock set by the slowest sub-array read, layers one after
    # another (NeuroSim). See costmodel/timing.py. Every .hw file states it.
    timing: str = "pipelined"
    weight_bits: int = 8
    shift_add: DigitalUnit = field(default_factory=DigitalUnit)
    accumulator: DigitalUnit = field(default_factory=DigitalUnit)
    digital: DigitalUnit = field(default_factory=DigitalUnit)  # non-crossbar ops, per element
    center_offset: DigitalUnit | None = None  # RAELLA correction unit (None: not offered)
    speculation: DigitalUnit | None = None  # RAELLA speculation flags and recovery control
    column_mux: ColumnMux | None = None  # priced where a converter serves m > 1 columns
    buffers: tuple[Buffer, ...] = ()
    hierarchy: Hierarchy = field(default_factory=lambda: Hierarchy(8))
    interconnect: Interconnect = field(default_factory=Interconnect)
    area_budget_m2: float | None = None
    # the mapping passes `imcc compile` runs for this target without --passes (after the
    # target-independent clean-up); empty: the driver's MAPPING_PIPELINE
    pipeline: str = ""
    source: str = ""  # the file it was read from

    def column_sharing_for(self, converter: Converter) -> tuple[int, ...]:
        """Return the legal column-sharing factors with a converter (its own list, else the
        target's); the first is the default."""
        return converter.column_sharing or self.column_sharing

    def converter(self, name: str) -> Converter:
        """Return the converter with this name, or raise KeyError."""
        for converter in self.converters:
            if converter.name == name:
                return converter
        raise KeyError(name)
