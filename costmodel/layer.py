"""Cost of one crossbar layer: action counts times per-action costs, per component.

One documented model (symbols: P output positions, K rows and N columns of the product per
group, G groups, S_i input slices, S_w weight slices, D devices per slice, m column share):

- Work. A crossbar op computes, per output position (conv: batch x output pixels; linear: the
  product of the leading dims), a K x N product per group (conv: K = C_in/G * prod(kernel),
  N = C_out/G). MACs = P * K * N * G.
- Row partial sums (the layer plan's, plan.py). Each row tile sums its rows into one partial
  sum per column, or, when the crossbar reads only `parallel_rows` rows at once (NeuroSim's
  rows in parallel), one per `parallel_rows` of its rows: R = `plan.chunks`, the sum over row
  tiles of ceil(rows of the tile / parallel_rows) (row_tiles when all rows read at once).
- Array reads. Per position and input slice every crossbar of the layer is read once; in
  `reactivate` column-share mode the rows are driven m times (once per column group), in
  `sample-hold` mode once. Cell energy: a cell on an active row costs `cell_read_energy_j * g +
  cell_base_energy_j` per read of its column, g its normalised stored level (conductance.py);
  each column is read once per input slice (the mux leaves unselected bitlines floating), so the
  cell energy per slice is a * (E_read * sum g + E_base * cells), a the row activity of the
  slice: the mean normalised slice value sum_b 2^(b-lo) density_b / (2^(hi-lo+1) - 1) from the
  `stats` of the `quantize` that produces the input (0.5 without stats).
- Input drivers, per driven row (K * column_tiles * G rows) and array read (m reads per slice
  in reactivate mode): `base_energy_per_row_j` (the switch that connects the row, whatever the
  input) plus `energy_per_row_j` per activation: a bit-serial driver activates a row when its
  bit is 1 (the slice's activity), a pulse-train driver once per pulse (a w-bit slice of mean
  normalised value a sends a * (2^w - 1) pulses), a voltage DAC on every read (NeuroSim's row
  driver, E_off + (E_on - E_off) x input: DNN+NeuroSim V1.3 NewSwitchMatrix.cpp and
  SubArray.cpp readDynamicEnergyArray).
- Conversions per position = S_i * S_w * D * N * G * R (`plan.conversions_per_position`), D
  the converted devices per slice (`plan.devices`: 1 for offset weights, whose second device on
  a pair target holds nothing, and for a 2T2R pair subtracted in analog (`signed_columns`); 2
  for a pair converted column by column), times the samples of an MTJ converter
  (`plan.samples`). Converts per MAC = S_i * S_w * D * R / K (ISAAC: 8 * 4 / 128 = 0.25).
- Speculation (`input.speculate`, RAELLA): the S_i wide slices run speculatively; a conversion
  that hits the ADC's min / max code is discarded, a flag is set, and the same input bits are
  re-run as 1-bit slices, converting only the flagged columns. How many recoveries that takes
  is data-dependent: it is read from the layer's `profile` (profile-converters measures it on
  calibration data with the bit-accurate simulator); a speculative layer without a profile is
  a MappingError (no guessed constant). With F the profile's `speculation_failures` and r its
  `recoveries` (1-bit conversions per speculative conversion; a failed s-bit slice re-runs as
  s conversions):
  - Array reads: the `bits` 1-bit recovery cycles run whenever any conversion of the layer can
    fail (F > 0), at every position: a crossbar read of hundreds of columns almost always has
    some flagged column, which is why RAELLA's array runs 11 cycles instead of 8 (3 + 8). With
    F = 0 measured, none run. Every recovery cycle reads the whole array (cell energy at the
    bit's activity) and drives its rows, like any input slice; it takes a slice's time.
  - Conversions = speculative conversions * (1 + r): only flagged columns are converted again.
    Shift-and-add: one operation per conversion result, recoveries included.
  - Speculation unit: one action (compare the code against the min / max code, store the flag
    that gates the recovery conversions) per speculative conversion.
  - Input register: the recovery cycles stream the same input bits again from the macro's
    input register, which is read twice when recovery cycles run ([RAELLA]'s public model,
    mit-emze/raella models/common_components/raella_buffers.yaml, `raella_input_buffer`:
    "read once for normal operation, twice for speculation"); the inputs stay in the register
    meanwhile, so the activations buffer is read once, as without speculation.
  A speculative layer needs an ADC (an MTJ has no min / max code to flag).
- Column mux (`column_mux`, where a converter serves m > 1 columns; DNN+NeuroSim V1.3 Mux.cpp
  and RowDecoder.cpp in MUX mode): per array read of each crossbar, every column's pass gate
  switches once (`gate_energy_j`) and the decoder selects m groups (`decoder_energy_j` each).
- Shift-and-add: one operation per conversion result: an MTJ's N samples are integrated by its
  counter, and the shift-and-add takes the count once. Accumulators: one add per output element per
  row partial sum beyond the first, P * N * G * (R - 1) (the shift-add already merges the input and
  weight slices and the devices of a pair). Center+offset (`center-offset` encoding): a running
  input sum, one add per input element per position (P * K * G), and one multiply-subtract per
  output element (P * N * G). MTJ reset and counter: one each per sample.
- Buffers, by their `role`, each at its own energy per byte: `activations` buffers carry the
  im2col input traffic, K * P * G * input_bits / 8 bytes read, and the N * P * G bytes of 8-bit
  outputs written; `input-register`s the input bits of every array read, driven rows x the
  bits streamed / 8 per position (times m row drives in reactivate mode); `output-register`s
  one `PARTIAL_SUM_BYTES` word per conversion result. Interconnect: the 8-bit outputs,
  N * P * G * 8 bits, sent on to the next layer.
- Timing (costmodel/timing.py, `layer_stages`): the layer's array cycle is its slowest stage (the
  analog read, the converter bank: with sample-and-hold the weight-holding columns of the busiest
  converter, `plan.converter_turns`, in reactivate mode all m column groups; the shift-and-add);
  the layer takes positions x reads per position x `plan.chunks_per_tile` cycles per image over its
  replicas, or its buffer / interconnect traffic time at the declared bandwidths when that is longer
  (each tile the layer's copies occupy moves its share through its own tile-level buffers and
  router). `latency_s` is that time; the chip's latency and throughput come from the target's timing
  mode (report.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

from imcc.costmodel.conductance import conductance_sums
from imcc.costmodel.converters import ConverterCost, converter_cost
from imcc.costmodel.timing import LayerTiming, Stages
from imcc.errors import MappingError
from imcc.ir.graph import Node
from imcc.ir.mapping import (
    ActivationStats,
    ConverterChoice,
    ConverterProfile,
    InputStreaming,
    Placement,
)
from imcc.plan import (
    REQUIRED,
    LayerPlan,
    MatrixShape,
    plan_layer,
    require_mapped,
    slice_shifts,
    target_converter,
)
from imcc.target import Converter as TargetConverter
from imcc.target import ConverterKind, Target

DEFAULT_ACTIVITY = 0.5
"""Row activity of an input slice when its quantize op carries no calibration stats."""

OUTPUT_BITS = 8
"""Bits per output element a crossbar layer writes and sends on (requantized activations)."""

PARTIAL_SUM_BYTES = 2
"""Bytes of one partial-sum word in an output register: 16 bits (ISAAC, ISCA 2016, Table 2:
16-bit output registers; RAELLA, ISCA 2023: 16-bit partial sums)."""


@dataclass(frozen=True, slots=True)
class LayerCost:
    """The energy (per component), latency and action counts of one layer."""

    name: str
    op: str
    macs: int
    energy_j: float
    latency_s: float
    energy_breakdown_j: dict[str, float]
    crossbars: int = 0
    conversions: float = 0.0
    recovery_conversions: float = 0.0  # of `conversions`: speculation's 1-bit recoveries
    profile: ConverterProfile | None = None  # what profile-converters measured, if it ran
    # what the chip's timing needs (costmodel/timing.py)
    timing: LayerTiming = field(default_factory=LayerTiming)
    results: float = 0.0  # conversion results (an MTJ's samples counted once), shift-adds

    @property
    def converts_per_mac(self) -> float:
        """Return conversions per multiply-accumulate (0 for layers without crossbars)."""
        return self.conversions / self.macs if self.macs and self.conversions else 0.0


@dataclass(frozen=True, slots=True)
class CrossbarArea:
    """What a crossbar layer needs on the tiles it occupies (for the area model)."""

    placement: Placement | None
    crossbars: int
    converters_per_crossbar: int
    converter: ConverterCost
    converter_name: str
    mux_area_m2: float = 0.0  # per crossbar: the column mux and its decoder (m > 1)


def mux_area(target: Target, share: int) -> float:
    """Return the area of one crossbar's column mux and decoder at column sharing `share`: a
    pass gate per column and 2^ceil(log2 m) decoder outputs (0 without sharing or a mux)."""
    mux = target.column_mux
    if mux is None or share <= 1:
        return 0.0
    outputs = 1 << math.ceil(math.log2(share))
    return target.crossbar.columns * mux.gate_area_m2 + outputs * mux.decoder_area_m2


def mux_latency(target: Target, share: int) -> float:
    """Return the time the column mux's select path adds to a read at sharing `share`: its
    decoder drives columns / m pass gates per select line (0 without sharing or a mux)."""
    mux = target.column_mux
    if mux is None or share <= 1:
        return 0.0
    return mux.latency_s + mux.load_latency_s * target.crossbar.columns / share


def layer_stages(plan: LayerPlan, target: Target, cost: ConverterCost) -> Stages:
    """Return the stage times of one array cycle of a planned layer (costmodel/timing.py):
    the analog read (and the column mux's select path), one conversion (an MTJ: all its
    samples) and one shift-and-add, with the column groups converted in turn: with
    sample-and-hold only the held columns that hold weights, the busiest converter's
    `plan.converter_turns` (the converter bank's controller skips empty columns; CiMLoop
    counts an ADC's actions, and from them its time, by the columns the mapping uses); in
    NeuroSim's reactivate mode every one of the m column groups (SubArray.cpp, CalculateLatency:
    numColMuxed reads per input bit, whatever the layer occupies)."""
    reactivate = target.column_share_mode == "reactivate"
    return Stages(
        array=target.crossbar.read_latency_s + mux_latency(target, plan.share),
        conversion=cost.latency_s * plan.samples,
        share=plan.share if reactivate else plan.converter_turns,
        shift_add=target.shift_add.latency_s,
        sample_hold=not reactivate,
    )


def array_cycle_s(plan: LayerPlan, target: Target, converter: TargetConverter) -> float:
    """Return a planned layer's array cycle in seconds (its slowest stage; `layer_stages`)."""
    return layer_stages(
        plan, target, converter_cost(converter, plan.converter.bits, target.technology)
    ).cycle


@lru_cache(maxsize=4096)
def slice_activities(streaming: InputStreaming, stats: ActivationStats | None) -> tuple[float, ...]:
    """Return the row activity of each input slice (MSB first) from the bit densities."""
    if stats is None or not stats.bit_density:
        return (DEFAULT_ACTIVITY,) * len(streaming.slices)
    density = stats.bit_density
    out = []
    for width, lo in zip(streaming.slices, slice_shifts(streaming.slices), strict=True):
        value = sum(
            (1 << (b - lo)) * (density[b] if b < len(density) else 0.0)
            for b in range(lo, lo + width)
        )
        out.append(value / ((1 << width) - 1))
    return tuple(out)


def _bit_activities(streaming: InputStreaming, stats: ActivationStats | None) -> list[float]:
    if stats is None or not stats.bit_density:
        return [DEFAULT_ACTIVITY] * streaming.bits
    d = stats.bit_density
    return [d[b] if b < len(d) else 0.0 for b in range(streaming.bits)]


def _check_speculation(
    label: str, target: Target, kind: ConverterKind, profile: ConverterProfile | None
) -> None:
    """Raise MappingError unless a speculative layer can be priced: a speculation unit, an ADC
    and the measured recoveries."""
    if target.speculation is None:
        raise MappingError(
            f"node {label}: input speculation needs a speculation unit, "
            f"which target {target.name} does not have"
        )
    if kind is ConverterKind.MTJ:
        raise MappingError(
            f"node {label}: speculation needs an ADC that flags saturated codes, not an MTJ",
            hint="select an ADC for speculative layers",
        )
    if profile is None:
        raise MappingError(
            f"node {label}: speculative input slicing is priced from the "
            "recoveries measured on calibration data, and this layer has no "
            "'profile' attribute",
            hint="run profile-converters after the last pass that changes the "
            "mapping (select-adc, share-columns, encode-weights, slice-weights); "
            "imcc compile --calib DATA profiles on real data",
        )


def crossbar_layer(
    node: Node,
    target: Target,
    *,
    positions: int,
    rows: int,
    columns: int,
    groups: int,
    filter_axis: int,
    weights,
    weights_digest: str | None,
    weights_size: int,
    stats: ActivationStats | None,
    rows_out: int = 1,
    window: float = 1.0,
) -> tuple[LayerCost, CrossbarArea]:
    """Return the cost of one mapped crossbar op (rows = K, columns = N per group): the counts
    of its plan (plan.py) times the target's per-action costs; `rows_out` and `window` are
    its output rows and the input rows its first output needs (costmodel/timing.py)."""
    shape = MatrixShape(rows, columns, groups, positions)
    require_mapped(node, needs=tuple(name for name, _ in REQUIRED))
    a = node.attributes
    mapping, tiling, streaming = a["weights"], a["tiling"], a["input"]
    share: int = a["column_share"]
    choice: ConverterChoice = a["converter"]
    label = node.name or node.outputs[0]
    converter = target_converter(target, choice.name, f"node {label}: ")
    if mapping.encoding == "center-offset" and target.center_offset is None:
        raise MappingError(
            f"node {label}: center-offset encoding needs a center_offset unit, "
            f"which target {target.name} does not have"
        )
    profile: ConverterProfile | None = a.get("profile")
    if streaming.speculate:
        _check_speculation(label, target, converter.kind, profile)
    plan = plan_layer(node, target, shape)
    xbar = target.crossbar
    cost = converter_cost(converter, choice.bits, target.technology)
    samples = plan.samples
    reactivate = target.column_share_mode == "reactivate"
    partials, phases = plan.chunks, plan.chunks_per_tile
    outputs = positions * columns * groups

    # per position: array reads, columns converted per read, summed row activity
    activities = slice_activities(streaming, stats)
    reads, activity_sum = len(activities), sum(activities)
    # pulse-train drivers: the expected pulses per position (a w-bit slice of mean normalised
    # value a sends a * (2^w - 1) pulses)
    pulses = sum(a * ((1 << w) - 1) for a, w in zip(activities, streaming.slices, strict=True))
    recovering = streaming.speculate and profile.speculation_failures > 0
    if recovering:  # the 1-bit re-run of the input bits, one array cycle per bit
        recovery = _bit_activities(streaming, stats)
        reads += len(recovery)
        activity_sum += sum(recovery)
        pulses += sum(recovery)

    macs = positions * rows * columns * groups
    # the wide (speculative, when speculating) slices' conversions, then the measured recoveries
    first = positions * plan.conversions_per_position * samples
    recoveries = first * profile.recoveries if streaming.speculate else 0.0
    conversions = first + recoveries
    results = conversions / samples  # what the shift-and-add receives: one per conversion
    sums = conductance_sums(
        weights,
        weights_digest,
        mapping,
        filter_axis,
        weights_size,
        a.get("centers"),
        plan.offset_bias,
    )
    cell_energy = xbar.cell_read_energy_j * sums.level_sum + xbar.cell_base_energy_j * sums.cells
    row_reads = share if reactivate else 1
    driven = rows * tiling.column_tiles * groups
    driver = target.input_driver
    weight = {"pulse-train": pulses, "bit-serial": activity_sum}.get(driver.kind, reads)
    per_row = driver.energy_per_row_j * weight + driver.base_energy_per_row_j * reads

    energy = {
        "array": positions * activity_sum * cell_energy,
        "input_drivers": positions * row_reads * driven * per_row,
        "converters": conversions * cost.energy_j,
        "shift_add": results * target.shift_add.energy_j,
        "accumulators": outputs * (partials - 1) * target.accumulator.energy_j,
    }
    in_bytes = rows * positions * groups * streaming.bits / 8
    out_bytes = outputs * OUTPUT_BITS / 8
    streamed_bits = streaming.bits * (2 if recovering else 1)
    traffic = {
        "activations": in_bytes + out_bytes,
        "input-register": positions * row_reads * driven * streamed_bits / 8,
        "output-register": results * PARTIAL_SUM_BYTES,
    }
    energy["buffers"] = sum(traffic[b.role] * b.energy_per_byte_j for b in target.buffers)
    out_bits = outputs * OUTPUT_BITS
    energy["interconnect"] = out_bits * target.interconnect.energy_per_bit_j
    if mapping.encoding == "center-offset":
        energy["center_offset"] = (positions * rows * groups + outputs) * (
            target.center_offset.energy_j
        )
    if streaming.speculate:
        energy["speculation"] = first * target.speculation.energy_j
    if converter.kind is ConverterKind.MTJ:
        energy["mtj_reset"] = conversions * cost.reset_energy_j
        energy["counters"] = conversions * cost.counter_energy_j
    mux = target.column_mux if share > 1 else None
    if mux is not None:  # per array read: every column switched once, m group selects
        per_read = xbar.columns * mux.gate_energy_j + share * mux.decoder_energy_j
        energy["column_mux"] = positions * reads * tiling.crossbars * per_read

    stages = layer_stages(plan, target, cost)
    placement = a.get("placement")
    replicas = 1 if placement is None else placement.replicas
    span = tiling.crossbars if placement is None else placement.end - placement.first_crossbar
    # every tile the layer's copies occupy moves its share through its own buffers and router
    tiles = target.hierarchy.tiles_for(span)
    moving = [
        traffic[b.role] / (b.bandwidth_bytes_per_s * (tiles if b.level == "tile" else 1))
        for b in target.buffers
        if b.bandwidth_bytes_per_s
    ]
    if target.interconnect.bandwidth_bits_per_s:
        moving.append(out_bits / (target.interconnect.bandwidth_bits_per_s * tiles))
    timing = LayerTiming(
        cycles=positions * reads * phases,
        cycle_s=stages.cycle,
        replicas=max(replicas, 1),
        other_s=max(moving, default=0.0),
        rows=rows_out,
        window=window,
        bound=stages.bound,
        groups=stages.groups,
        sense_s=stages.sense,
    )
    record = LayerCost(
        name=label,
        op=node.op,
        macs=macs,
        energy_j=sum(energy.values()),
        latency_s=timing.time_s(),
        energy_breakdown_j=energy,
        crossbars=tiling.crossbars * replicas,
        conversions=conversions,
        recovery_conversions=recoveries,
        profile=profile,
        timing=timing,
        results=results,
    )
    need = CrossbarArea(
        placement=a.get("placement"),
        crossbars=tiling.crossbars,
        converters_per_crossbar=math.ceil(xbar.columns / max(share, 1)),
        converter=cost,
        converter_name=converter.name,
        mux_area_m2=mux_area(target, share),
    )
    return record, need
