"""The layer plan: every fact the crossbar arithmetic of one mapped layer needs, computed once.

A `LayerPlan` is built from a mapped crossbar op (conv / linear on integer codes carrying
`weights`, `tiling`, `input` and `converter`) and its target by `plan_layer`. The cost model,
the datapath (backend/datapath.py: simulation, fine-tuning, calibration), the data-aware passes
and the passes' checks read its fields; nothing else derives them.

The model it states (symbols: K rows and N filters of one group's product, J input slices,
I weight slices, D converted devices per slice):

1. Inputs. An input code `x` of `b` bits (two's complement when signed) streams as slices, most
   significant first (`#input<slices = [3, 3, 2]>`): slice `j` carries the bits
   `[shift_j, shift_j + width_j)` of `x mod 2^b` as an unsigned value, except that the top slice
   of a signed input is read as a signed `width`-bit number (bipolar drivers), so that
   `x = sum_j slice_j * 2^shift_j` holds exactly (`input_shifts`).
2. Weights. A weight code `w` (symmetric, `|w| <= 2^(B-1) - 1`) is stored by its encoding:
   `offset` stores `w + 2^(B-1)` (unsigned) on one device per slice, and the digital datapath
   subtracts `2^(B-1) * sum_k x_k`; `differential` stores `max(w, 0)` and `max(-w, 0)` on a
   device pair: with `signed_columns` the pair's currents subtract in the column (one signed
   partial sum per slice), otherwise both columns are converted and subtracted digitally.
   `center-offset` (RAELLA) stores the signed offset `w - c_n` from the filter's center `c_n`
   on the pair as `differential` does, and the digital datapath adds `c_n * sum_k x_k`. Each
   stored value splits into the weight slices of `#weights<...>` (`weight_shifts`); a value
   wider than the slices is a mapping error, never truncated. `devices` counts the columns a
   slice's sums are converted on: 1 for offset weights (on a pair target the second device of
   the pair holds nothing and is not converted) and for pairs subtracted in the column, else 2.
3. Partial sums. Row tile `t` of the layer holds rows `[t * T, (t + 1) * T)` (T = the tiling's
   rows); a read sums at most the crossbar's active rows (`parallel_rows`, NeuroSim's rows read
   in parallel) of one tile, so each tile's rows split into chunks of the active rows
   (`chunks`): per (row chunk, input slice, weight slice, device, column) one integer partial
   sum, what the column converter sees. `rows_per_sum` is the longest chunk.
4. Converters act on each partial sum: a B-bit ADC, a 1-bit sense amplifier (a 1-bit ADC) or a
   stochastic SOT-MTJ (StoX-Net), with the range of sums one read can produce (`sum_range`):
   the converter's full scale is set for it, a property of the mapped layer and the hardware,
   not of the data (unless calibrate-adc measured the layer's range, `full_scale`). ADC
   (`adc_levels`): codes in [lowest, highest] (two's complement when sums can be negative);
   `full-scale` range rule: a power-of-two step so that the largest possible sum fits,
   rounding to nearest, or, with a calibrated `full_scale`, the smallest integer step whose
   top code reaches it (larger sums clip); `saturate`: unit step, clip. MTJ: each sum is
   normalised,
   `x = clamp(a * PS + b, -1, 1)` with the per-column `a`, `b` of the layer's `ps_scale` /
   `ps_offset` (calibrate-mtj) or, without them, over the read's full range (`a = 1 / radius`,
   `b = -middle / radius`); it switches to +1 with `p = sigmoid(s * x)`; N samples are
   counted (Binomial(N, p)), and the counter's mean `m = 2 * ones / N - 1` is decoded by
   inverting its expectation `E[m] = tanh(s * x / 2)`: `x_hat = clip(2 * atanh(m) / s, -1,
   1)`, `PS_hat = (x_hat - b) / a` (`mtj_decoder`).
5. Shift-and-add: `acc = sum 2^shift_j * 2^wshift_i * sign_d * converted` over chunks, slices and
   devices, plus the encoding's digital correction. With lossless converters `acc == x @ w`.

Conversions per output position: `chunks * J * I * D * N * groups` (times the samples of an
MTJ, which `samples` gives). float32 keeps every integer below 2**24 exact, so the plan refuses
a layer whose partial sums can reach it (`MAX_EXACT`): every GEMM of the datapath is then exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from imcc.errors import MappingError
from imcc.ir.graph import Graph, Node
from imcc.ir.mapping import ConverterChoice, InputStreaming, Tiling, WeightMapping
from imcc.target import Converter as TargetConverter
from imcc.target import ConverterKind, Target

MAX_EXACT = 2**24
"""float32 represents every integer below this exactly, so GEMMs whose sums stay below it are."""

REQUIRED = (
    ("weights", "tile-crossbar"),
    ("tiling", "tile-crossbar"),
    ("input", "assign-input-precision"),
    ("column_share", "share-columns"),
    ("converter", "select-adc"),
)
"""The mapping attributes a crossbar op needs, with the pass that sets each."""

DATAPATH = ("weights", "tiling", "input", "converter")
"""The attributes of REQUIRED the arithmetic reads (column sharing is timing, not values)."""


def require_mapped(
    node: Node,
    label: str | None = None,
    needs: tuple[str, ...] = DATAPATH,
    before: str | None = None,
) -> None:
    """Raise MappingError naming the layer and the passes when an attribute of `needs` (the
    datapath's, or all of REQUIRED for pricing) is missing; `before` names the pass that
    needs them."""
    missing = [(a, p) for a, p in REQUIRED if a in needs and a not in node.attributes]
    if not missing:
        return
    passes = sorted({p for _, p in missing}, key=[p for _, p in REQUIRED].index)
    label = label or f"node {node.name or node.outputs[0]}"
    what = (
        "no converter ('converter' attribute)"
        if [a for a, _ in missing] == ["converter"]
        else "no " + ", ".join(f"'{a}'" for a, _ in missing) + " attribute"
    )
    raise MappingError(
        f"{before + ': ' if before else ''}crossbar op '{node.op}' ({label}) has {what}",
        hint="run "
        + ", ".join(passes)
        + (f" before {before}" if before else " first (imcc compile --target runs them all)"),
    )


@dataclass(frozen=True, slots=True)
class MatrixShape:
    """The matrix product a crossbar layer computes per output position and group."""

    rows: int  # K: weights summed per output (C_in/group * kernel size, or linear's K)
    columns: int  # N: outputs per group
    groups: int
    positions: int  # output positions per inference (batch included)


def matrix_shape(node: Node, graph: Graph) -> MatrixShape:
    """Return the K x N product, groups and output positions of a crossbar layer."""
    weight = graph.types[node.inputs[1]].shape
    out = graph.types[node.outputs[0]].shape
    if node.op == "conv":
        group = node.attr("group")
        return MatrixShape(
            math.prod(weight[1:]), weight[0] // group, group, out[0] * math.prod(out[2:])
        )
    return MatrixShape(weight[0], weight[1], 1, math.prod(out[:-1]))


def slice_shifts(widths: tuple[int, ...]) -> tuple[int, ...]:
    """Return the bit offset of each slice, most significant slice first ([3, 3, 2] -> 5, 2, 0)."""
    return tuple(sum(widths[i + 1 :]) for i in range(len(widths)))


@dataclass(frozen=True)
class Converter:
    """A column converter as the datapath applies it: kind, bits, samples, range rule, an MTJ's
    sensitivity and its per-column normalisation.

    `ps_scale` / `ps_offset` (MTJ only; empty: normalise over the read's full range) hold one
    entry per physical column of the layer, ordered [weight slice][device][filter] with the
    filters of all groups, so `x = clamp(ps_scale * PS + ps_offset, -1, 1)` column by column.
    `full_scale` (a `full-scale` ADC only; 0: the read's full range) is the calibrated
    partial-sum magnitude the ADC's top code stands for (calibrate-adc).
    """

    kind: ConverterKind
    bits: int
    samples: int = 1
    range_rule: str = "full-scale"
    sensitivity: float = 4.0
    ps_scale: tuple[float, ...] = ()
    ps_offset: tuple[float, ...] = ()
    full_scale: int = 0

    def __post_init__(self) -> None:
        if len(self.ps_scale) != len(self.ps_offset):
            raise MappingError(
                "ps_scale and ps_offset need one entry per column each",
                hint="rerun calibrate-mtj after the weight passes",
            )
        if any(not a > 0 for a in self.ps_scale):  # also rejects nan
            raise MappingError("ps_scale entries must be positive", hint="rerun calibrate-mtj")
        if self.full_scale < 0:
            raise MappingError("full_scale must not be negative", hint="rerun calibrate-adc")

    @property
    def is_mtj(self) -> bool:
        """Say whether this is a stochastic MTJ (else an ADC or sense amplifier)."""
        return self.kind is ConverterKind.MTJ


LOSSLESS = Converter(ConverterKind.SAR, 24, range_rule="saturate")
"""A converter wide enough for every partial sum: the quantized network, computed exactly."""


def target_converter(target: Target, name: str, where: str = "") -> TargetConverter:
    """Return the target's converter called `name`, or a MappingError listing those it has
    (`where` prefixes the message, e.g. "node conv1: ")."""
    try:
        return target.converter(name)
    except KeyError:
        offered = ", ".join(c.name for c in target.converters)
        raise MappingError(
            f"{where}target {target.name} has no converter '{name}'",
            hint=f"converters: {offered}",
        ) from None


def layer_converter(
    choice: ConverterChoice,
    target: Target,
    ps_scale: tuple[float, ...] = (),
    ps_offset: tuple[float, ...] = (),
    full_scale: int = 0,
) -> Converter:
    """Return the converter the datapath applies for a layer's converter choice on a target."""
    spec = target_converter(target, choice.name)
    return Converter(
        ConverterKind(choice.kind),
        choice.bits,
        choice.samples,
        spec.range_rule,
        spec.sensitivity,
        tuple(float(v) for v in ps_scale),
        tuple(float(v) for v in ps_offset),
        full_scale if spec.range_rule == "full-scale" else 0,
    )


def adc_levels(converter: Converter, low: float, high: float) -> tuple[int, int, float]:
    """Return an ADC's lowest and highest code and its step for sums in [low, high].

    `full-scale` rule, uncalibrated: the power-of-two step that fits the largest sum of the
    read (`max(|low|, |high|)`); calibrated (`converter.full_scale` = F): the smallest integer
    step whose top code reaches F, `ceil(F / highest)`, one step for the whole layer, which the
    shift-and-add applies once per result. `saturate`: unit step.
    """
    bits = 1 if converter.kind is ConverterKind.SENSE_AMP else converter.bits
    signed = low < 0
    levels_low, levels_high = (
        (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    )
    step = 1.0
    if converter.range_rule == "full-scale":
        span = max(abs(low), abs(high))
        if converter.full_scale and levels_high > 0:
            step = float(max(1, math.ceil(min(converter.full_scale, span) / levels_high)))
        else:
            needed = math.ceil(math.log2(span + 1)) + (1 if signed else 0)
            step = 2.0 ** max(0, needed - bits)
    return levels_low, levels_high, step


def mtj_decoder(samples: int, sensitivity: float) -> np.ndarray:
    """Return the normalised value `x_hat` an MTJ's counter decodes to, per count of ones
    (0..samples): the inverse of `E[m] = tanh(s * x / 2)` at `m = 2 * ones / samples - 1`,
    clipped to [-1, 1] (float32)."""
    m = 2.0 * np.arange(samples + 1) / samples - 1.0
    with np.errstate(divide="ignore"):
        x = 2.0 * np.arctanh(m) / sensitivity
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def columns_per_slice(mapping: WeightMapping, signed_columns: bool) -> int:
    """Return the physical crossbar columns one weight slice of a filter occupies (layout, not
    conversions: see `LayerPlan.devices`): one per device, except a pair subtracted in the
    column, which shares one."""
    return 1 if signed_columns or mapping.devices == 1 else mapping.devices


def stored_values(
    encoding: str, codes: np.ndarray, offset_bias: int, centers: np.ndarray | None = None
) -> list[np.ndarray]:
    """Return what each device of a weight stores before slicing (int64, one array per device):
    `offset`: `w + offset_bias`; `differential`: `max(w, 0)` and `max(-w, 0)`;
    `center-offset`: the same of `w - c` (`centers` broadcast against the codes)."""
    codes = np.asarray(codes, np.int64)
    if encoding == "offset":
        return [codes + offset_bias]
    if encoding == "center-offset":
        codes = codes - np.asarray(centers, np.int64)
    return [np.maximum(codes, 0), np.maximum(-codes, 0)]


def row_chunks(rows: int, tile_rows: int, active_rows: int) -> tuple[tuple[int, int], ...]:
    """Return the [start, stop) rows of each partial sum: row tiles of `tile_rows`, each read
    `active_rows` at a time."""
    chunks = []
    for tile in range(0, rows, tile_rows):
        end = min(tile + tile_rows, rows)
        chunks.extend((s, min(s + active_rows, end)) for s in range(tile, end, active_rows))
    return tuple(chunks)


@dataclass(frozen=True)
class LayerPlan:
    """One crossbar layer's arithmetic (see the module docstring); built by `plan_layer`."""

    name: str
    streaming: InputStreaming
    mapping: WeightMapping
    weight_bits: int
    signed_columns: bool
    rows: int  # K per group
    filters: int  # N per group
    groups: int
    tile_rows: int  # rows one crossbar tile holds (the tiling's)
    active_rows: int  # rows one read sums (the crossbar's parallel rows)
    converter: Converter
    centers: tuple[int, ...] | None = None  # per filter, all groups (center-offset)
    positions: int = 0  # output positions per inference, batch included (0: unknown)
    # layout of one group's columns (timing, not values): the tiling's column tiles, the
    # columns one crossbar tile has, and the columns each converter serves (column sharing)
    column_tiles: int = 1
    tile_columns: int = 0  # 0: unknown (no tiling)
    share: int = 1

    def __post_init__(self) -> None:
        low, high = self.sum_range
        if max(abs(low), abs(high)) >= MAX_EXACT:
            raise MappingError(
                f"layer {self.name}: partial sums up to {max(abs(low), abs(high)):.0f} exceed "
                "the 2**24 that float32 keeps exact",
                hint="use fewer rows per sum or narrower slices",
            )
        if self.streaming.speculate and self.converter.is_mtj:
            raise MappingError(
                f"layer {self.name}: speculation needs an ADC that flags saturated codes, "
                "not an MTJ",
                hint="select an ADC for speculative layers",
            )

    # -- rows -------------------------------------------------------------------------------
    @cached_property
    def chunk_bounds(self) -> tuple[tuple[int, int], ...]:
        """Return the [start, stop) rows of each partial sum (row tiles, then active rows)."""
        return row_chunks(self.rows, self.tile_rows, self.active_rows)

    @property
    def chunks(self) -> int:
        """Return the partial sums per column and output: row chunks of the product."""
        return len(self.chunk_bounds)

    @property
    def rows_per_sum(self) -> int:
        """Return the most rows one partial sum adds (the converter's range is set for it)."""
        return min(self.tile_rows, self.active_rows, self.rows)

    @property
    def chunks_per_tile(self) -> int:
        """Return the reads one row tile takes in turn (NeuroSim's phases of parallel rows)."""
        return math.ceil(min(self.rows, self.tile_rows) / self.active_rows)

    @cached_property
    def row_index(self) -> np.ndarray:
        """Return, per chunk and row slot, the product row it holds ([chunks * rows_per_sum];
        `rows` marks an empty slot of a short chunk, read as zero)."""
        index = np.full((self.chunks, self.rows_per_sum), self.rows, np.int64)
        for c, (start, stop) in enumerate(self.chunk_bounds):
            index[c, : stop - start] = np.arange(start, stop)
        return index.reshape(-1)

    @property
    def contiguous_chunks(self) -> bool:
        """Say whether every chunk but the last is full, so a zero pad at the end lays the rows
        out (no gather)."""
        return all(stop - start == self.rows_per_sum for start, stop in self.chunk_bounds[:-1])

    # -- slices and columns ---------------------------------------------------------------------
    @property
    def input_shifts(self) -> tuple[int, ...]:
        """Return each input slice's bit offset (MSB first)."""
        return slice_shifts(self.streaming.slices)

    @property
    def weight_shifts(self) -> tuple[int, ...]:
        """Return each weight slice's bit offset (MSB first)."""
        return slice_shifts(self.mapping.slices)

    @property
    def input_slices(self) -> int:
        """Return J, the input slices streamed per output."""
        return len(self.streaming.slices)

    @property
    def weight_slices(self) -> int:
        """Return I, the weight slices per weight."""
        return len(self.mapping.slices)

    @property
    def devices(self) -> int:
        """Return D, the columns whose sums are converted per weight slice and filter."""
        return 1 if self.signed_columns or self.mapping.encoding == "offset" else 2

    @property
    def device_signs(self) -> tuple[float, ...]:
        """Return the sign each device's converted sum is added with."""
        return (1.0,) if self.devices == 1 else (1.0, -1.0)

    @property
    def columns(self) -> int:
        """Return the converted columns of one group's product: I x D x N."""
        return self.weight_slices * self.devices * self.filters

    @property
    def columns_per_crossbar(self) -> int:
        """Return the converted columns of the fullest crossbar of a group: the group's
        `columns` spread evenly over its column tiles."""
        return math.ceil(self.columns / self.column_tiles)

    @property
    def converter_turns(self) -> int:
        """Return the conversions the busiest converter of a crossbar makes per array read,
        when only the columns that hold weights are converted: the fullest crossbar's converted
        columns spread over its `tile_columns / share` converters, at most `share` (the columns
        one converter serves). A converter's columns are fixed by the hardware, which of them a
        layer's weights occupy is the mapping's choice, so the columns are spread evenly."""
        if not self.tile_columns:
            return self.share
        converters = max(1, self.tile_columns // max(self.share, 1))
        return min(self.share, math.ceil(self.columns_per_crossbar / converters))

    @property
    def stored_capacity(self) -> int:
        """Return the largest value the weight slices hold."""
        return 2 ** sum(self.mapping.slices) - 1

    def code_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the lowest and highest integer weight code the slices can store, per filter
        of all groups (int64): what `stored_values` keeps within `stored_capacity` (a
        center-offset filter's codes within the capacity of its center)."""
        filters = self.filters * self.groups
        cap, bias = self.stored_capacity, self.offset_bias
        if self.mapping.encoding == "offset":
            low, high = np.full(filters, -bias), np.full(filters, cap - bias)
        else:
            low, high = np.full(filters, -cap), np.full(filters, cap)
        if self.mapping.encoding == "center-offset":
            centers = np.concatenate([self.group_centers(g) for g in range(self.groups)])
            low, high = centers - cap, centers + cap
        return low.astype(np.int64), high.astype(np.int64)

    @property
    def offset_bias(self) -> int:
        """Return the bias an offset encoding adds to every weight (0 for the others)."""
        return 2 ** (self.weight_bits - 1) if self.mapping.encoding == "offset" else 0

    # -- converter -----------------------------------------------------------------------------
    @cached_property
    def sum_range(self) -> tuple[float, float]:
        """Return the smallest and largest partial sum one read can produce."""
        streaming, mapping = self.streaming, self.mapping
        in_high = max(  # a signed input's top slice is read signed: at most 2^(w-1) - 1
            2 ** (w - 1) - 1 if streaming.signed and j == 0 else 2**w - 1
            for j, w in enumerate(streaming.slices)
        )
        in_low = -(2 ** (streaming.slices[0] - 1)) if streaming.signed else 0
        w_high = max(2**s - 1 for s in mapping.slices)
        w_low = -w_high if mapping.encoding != "offset" and self.signed_columns else 0
        rows = self.rows_per_sum
        corners = [a * b * rows for a in (in_low, in_high) for b in (w_low, w_high)]
        return float(min(corners)), float(max(corners))

    @property
    def lossless(self) -> bool:
        """Say whether the converter reproduces every partial sum the read can produce."""
        converter = self.converter
        if converter.is_mtj:
            return False
        low, high = self.sum_range
        levels_low, levels_high, step = adc_levels(converter, low, high)
        return step == 1.0 and levels_low <= low and high <= levels_high

    @property
    def can_saturate(self) -> bool:
        """Say whether a sum of the read's range can fall outside the ADC's codes."""
        low, high = self.sum_range
        levels_low, levels_high, step = self.adc
        return round(high / step) > levels_high or round(low / step) < levels_low

    @property
    def adc(self) -> tuple[int, int, float]:
        """Return the ADC's lowest and highest code and its step (ADC and sense amp only)."""
        return adc_levels(self.converter, *self.sum_range)

    @property
    def samples(self) -> int:
        """Return the MTJ samples per conversion (1 for an ADC)."""
        return self.converter.samples if self.converter.is_mtj else 1

    def normalisation(self, group: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Return an MTJ's scale and offset per column of one group's product (float32
        [columns], ordered [weight slice][device][filter]): the calibrated ones, else the
        read's full range."""
        converter = self.converter
        if not converter.ps_scale:
            low, high = self.sum_range
            middle, radius = (high + low) / 2, max((high - low) / 2, 1.0)
            return (
                np.full(self.columns, 1 / radius, np.float32),
                np.full(self.columns, -middle / radius, np.float32),
            )
        every = self.weight_slices * self.devices * self.filters * self.groups
        if len(converter.ps_scale) != every:
            raise MappingError(
                f"layer {self.name}: the MTJ normalisation has {len(converter.ps_scale)} "
                f"columns but the layer has {every} (weight slices x devices x filters)",
                hint="rerun calibrate-mtj after the weight slicing and encoding passes",
            )
        part = slice(group * self.filters, (group + 1) * self.filters)
        scale = np.asarray(converter.ps_scale, np.float32).reshape(-1, self.filters * self.groups)
        offset = np.asarray(converter.ps_offset, np.float32).reshape(-1, self.filters * self.groups)
        return np.ascontiguousarray(scale[:, part]).ravel(), np.ascontiguousarray(
            offset[:, part]
        ).ravel()

    def group_centers(self, group: int) -> np.ndarray | None:
        """Return the center-offset centers of one group's filters (None for the other
        encodings; a MappingError when a center-offset layer has not got one per filter)."""
        if self.mapping.encoding != "center-offset":
            return None
        if self.centers is None or len(self.centers) != self.filters * self.groups:
            raise MappingError(
                f"center-offset weights need their per-filter centers (layer {self.name}: "
                f"one per filter, {self.filters * self.groups})",
                hint="run encode-weights{scheme=center-offset}, which sets them",
            )
        return np.asarray(self.centers[group * self.filters : (group + 1) * self.filters], np.int64)

    # -- counts --------------------------------------------------------------------------------
    @property
    def conversions_per_position(self) -> int:
        """Return the converter conversions of one output position (all groups; an MTJ's
        samples not counted: see `samples`)."""
        return self.chunks * self.input_slices * self.columns * self.groups

    def gemms(self, positions: int) -> list[tuple[int, int, int, int]]:
        """Return the GEMMs (batch, M, K, N) that compute the partial sums of `positions`
        output positions of every group: the floor a simulation of the layer is measured
        against."""
        shape = (self.chunks, self.input_slices * positions, self.rows_per_sum, self.columns)
        return [shape] * self.groups

    def with_converter(self, converter: Converter) -> LayerPlan:
        """Return this plan with another converter (e.g. LOSSLESS: the quantized network)."""
        return replace(self, converter=converter)

    def with_mapping(
        self, mapping: WeightMapping | None = None, streaming: InputStreaming | None = None
    ) -> LayerPlan:
        """Return this plan with other weight slices / encoding or input streaming (the
        data-aware passes try candidates through it)."""
        return replace(self, mapping=mapping or self.mapping, streaming=streaming or self.streaming)


def plan_layer(
    node: Node,
    target: Target,
    shape: MatrixShape,
    *,
    label: str | None = None,
    lossless: bool = False,
    before: str | None = None,
) -> LayerPlan:
    """Return the plan of a mapped crossbar op whose product has `shape` on `target`
    (`lossless`: with LOSSLESS converters, the quantized network computed exactly, or a layer
    whose converter is not chosen yet; `before`:
    the pass that asks, named in the error when the layer is not mapped)."""
    needs = tuple(n for n in DATAPATH if n != "converter") if lossless else DATAPATH
    require_mapped(node, label, needs, before=before)
    a = node.attributes
    streaming: InputStreaming = a["input"]
    mapping: WeightMapping = a["weights"]
    tiling: Tiling = a["tiling"]
    converter = LOSSLESS
    if not lossless:
        choice: ConverterChoice = a["converter"]
        converter = layer_converter(
            choice,
            target,
            tuple(a.get("ps_scale") or ()),
            tuple(a.get("ps_offset") or ()),
            int(a.get("full_scale") or 0),
        )
    centers = a.get("centers")
    return LayerPlan(
        label or node.name or node.outputs[0],
        streaming,
        mapping,
        target.weight_bits,
        target.crossbar.signed_columns,
        shape.rows,
        shape.columns,
        shape.groups,
        tiling.rows,
        target.crossbar.active_rows,
        converter,
        None if centers is None else tuple(int(c) for c in centers),
        shape.positions,
        tiling.column_tiles,
        tiling.columns,
        int(a.get("column_share", 1)),
    )


def graph_plan(node: Node, graph: Graph, target: Target, **options) -> LayerPlan:
    """Return the plan of a crossbar op of `graph` (its shape read from the graph's types)."""
    return plan_layer(node, target, matrix_shape(node, graph), **options)
