"""Mapping decisions as typed, frozen structured attributes of the crossbar ops.

A `conv` or `linear` on integer operands is a crossbar op once the mapping passes have set
these optional attributes (each pass sets its own):

- `weights` (tile-crossbar, encode-weights, slice-weights):
  `#weights<encoding = "offset", slices = [2, 2, 2, 2], devices = 1>`
- `centers` (encode-weights, center-offset encoding): one integer center per filter (output
  channel, all groups), `[3, -1, ...]`; each weight is stored as the offset `w - c`
- `tiling` (tile-crossbar):
  `#tiling<rows = 128, columns = 128, row_tiles = 2, column_tiles = 4, groups = 1>`
- `input` (assign-input-precision):
  `#input<bits = 8, slices = [1, 1, ...], signed = false, speculate = false>`
- `column_share` (share-columns): `8`, the columns that share one converter
- `converter` (select-adc): `#converter<name = "sar", kind = "sar", bits = 8, samples = 1>`
- `ps_scale`, `ps_offset` (calibrate-mtj): the per-column normalisation of an MTJ converter,
  `x = clamp(ps_scale * PS + ps_offset, -1, 1)`, one entry per physical column of a group's
  product, ordered [weight slice][device][filter] (filters of all groups)
- `full_scale` (calibrate-adc): the partial-sum magnitude a `full-scale` ADC's top code stands
  for, measured on calibration data (absent: the read's largest possible sum), `412`
- `profile` (profile-converters): what the converters did on calibration data,
  `#profile<samples = 16, saturation = 0.01, speculation_failures = 0.06, recoveries = 0.2>`
- `placement` (place): `#placement<first_crossbar = 0, crossbars = 3, replicas = 1>`: the
  layer's copies hold consecutive crossbar slots of the chip from `first_crossbar`, `crossbars`
  each (tiles are filled in order, so small layers share a tile)

Slices are listed most significant first; their bits add up to the operand's precision.

Validity lives here, in one place per rule, so that every program that verifies is one the
cost model and the simulator can price and run. A structured attribute checks its own fields
when it is built (`__post_init__`: ranges, slices that add up, kinds), so the parser reports a
bad field at its caret. What needs the layer (its K x N product, its other attributes) is a
rule per attribute in `LAYER_RULES`, and what needs the graph (which quantize feeds a layer,
how the placements share the chip) are `check_input_codes` and `check_placements`; the
verifier calls them. None of them knows the target: `imcc.passes.program_target` checks that a
mapping fits the hardware it names.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imcc.ir.attributes import AttrKind, AttrSpec, structured_attribute
from imcc.target import ConverterKind

MAPPING_HINT = (
    "mapping attributes are what `imcc compile --target T` decided: compile the model "
    "again rather than edit them"
)
"""The hint of every error about a mapping attribute in a user's program."""

ENCODINGS = ("offset", "differential", "center-offset")
CONVERTER_KINDS = tuple(kind.value for kind in ConverterKind)
ONE_BIT_KINDS = (ConverterKind.SENSE_AMP.value, ConverterKind.MTJ.value)

# Bounds a target can never exceed (the .hw loader's limits, frontend/hw_schema.py): beyond
# them a field is nonsense on every target, and the simulator's tables (2**bits entries) and
# the area model's loops (one per tile) would not finish.
MAX_CROSSBAR_SIDE = 65536  # crossbar rows / columns
MAX_BITS_PER_CELL = 8  # one weight slice lives in one cell
MAX_STORED_BITS = 32  # all weight slices together: the datapath's int64 arithmetic stays exact
MAX_INPUT_BITS = 16  # activations (and the quantize op) have at most 16 bits
MAX_CONVERTER_BITS = 16
MAX_SAMPLES = 4096  # MTJ samples per conversion
MAX_CENTER = 2**16  # |center| of a weight of at most 16 bits


def _require(ok: bool, message: str) -> None:
    if not ok:  # the parser reports it as `bad #name: message` at the attribute
        raise ValueError(message)


def _in_range(name: str, value: int, low: int, high: int | None = None) -> None:
    if high is None:
        _require(value >= low, f"{name} = {value} must be >= {low}")
    else:
        _require(low <= value <= high, f"{name} = {value} must be in {low}..{high}")


def _share(name: str, value: float) -> None:  # a measured fraction (nan fails it too)
    _require(0.0 <= value <= 1.0, f"{name} = {value} must be a fraction in [0, 1]")


@structured_attribute("weights")
@dataclass(frozen=True, slots=True)
class WeightMapping:
    """How weights are stored: encoding, bit slices (MSB first), devices per slice."""

    encoding: str
    slices: tuple[int, ...]
    devices: int

    def __post_init__(self) -> None:
        _require(
            self.encoding in ENCODINGS,
            f"encoding {self.encoding!r} must be one of {', '.join(ENCODINGS)}",
        )
        _require(
            bool(self.slices) and all(1 <= s <= MAX_BITS_PER_CELL for s in self.slices),
            f"slices {list(self.slices)} must be 1..{MAX_BITS_PER_CELL} bits each (one "
            "cell per slice), at least one",
        )
        _require(
            sum(self.slices) <= MAX_STORED_BITS,
            f"slices {list(self.slices)} hold {sum(self.slices)} bits, more than {MAX_STORED_BITS}",
        )
        _require(self.devices in (1, 2), f"devices = {self.devices} must be 1 or 2")
        # a signed weight split over a positive and a negative device needs the pair
        _require(
            self.encoding == "offset" or self.devices == 2,
            f"{self.encoding} encoding stores each slice on a device pair: devices "
            f"must be 2, not {self.devices}",
        )


@structured_attribute("tiling")
@dataclass(frozen=True, slots=True)
class Tiling:
    """The crossbar tiles of one matrix product: groups x row tiles x column tiles crossbars."""

    rows: int
    columns: int
    row_tiles: int
    column_tiles: int
    groups: int

    def __post_init__(self) -> None:
        _in_range("rows", self.rows, 1, MAX_CROSSBAR_SIDE)
        _in_range("columns", self.columns, 1, MAX_CROSSBAR_SIDE)
        for name in ("row_tiles", "column_tiles", "groups"):
            _in_range(name, getattr(self, name), 1)

    @property
    def crossbars(self) -> int:
        """Return the number of crossbars one copy of the layer occupies."""
        return self.groups * self.row_tiles * self.column_tiles


@structured_attribute("input")
@dataclass(frozen=True, slots=True)
class InputStreaming:
    """How inputs enter the array: precision, slices streamed (MSB first), speculation."""

    bits: int
    slices: tuple[int, ...]
    signed: bool
    speculate: bool

    def __post_init__(self) -> None:
        _in_range("bits", self.bits, 1, MAX_INPUT_BITS)
        if sum(self.slices) != self.bits or any(s < 1 for s in self.slices):
            raise ValueError(
                f"input slices {list(self.slices)} must add up to {self.bits} bits, each at least 1"
            )


@structured_attribute("converter")
@dataclass(frozen=True, slots=True)
class ConverterChoice:
    """The converter of a layer's columns: the target's converter name, kind, bits, samples."""

    name: str
    kind: str
    bits: int
    samples: int

    def __post_init__(self) -> None:
        _require(bool(self.name), "name must name one of the target's converters")
        _require(
            self.kind in CONVERTER_KINDS,
            f"kind {self.kind!r} must be one of {', '.join(CONVERTER_KINDS)}",
        )
        _in_range("bits", self.bits, 1, MAX_CONVERTER_BITS)
        # the .hw loader's rule: sense amplifiers and MTJs resolve one bit
        _require(
            self.kind not in ONE_BIT_KINDS or self.bits == 1,
            f"a {self.kind} converter resolves 1 bit, not bits = {self.bits}",
        )
        _in_range("samples", self.samples, 1, MAX_SAMPLES)
        _require(
            self.kind == ConverterKind.MTJ.value or self.samples == 1,
            f"only an mtj converter takes several samples, not a {self.kind} "
            f"(samples = {self.samples})",
        )


@structured_attribute("placement")
@dataclass(frozen=True, slots=True)
class Placement:
    """Where a layer sits on the chip: its first crossbar slot, crossbars per copy, copies, and
    the spare slots after them that its tiles hold unused (a layout that gives each layer whole
    tiles: place{floorplan=neurosim}; printed only when not 0) (slot s is crossbar s mod
    crossbars_per_tile of tile s // crossbars_per_tile)."""

    first_crossbar: int
    crossbars: int
    replicas: int
    spare: int = dataclasses.field(default=0, metadata={"omit_default": True})

    def __post_init__(self) -> None:
        _in_range("first_crossbar", self.first_crossbar, 0)
        _in_range("crossbars", self.crossbars, 1)
        _in_range("replicas", self.replicas, 1)
        _in_range("spare", self.spare, 0)

    @property
    def end(self) -> int:
        """Return the first crossbar slot after the layer's copies and spare slots."""
        return self.first_crossbar + self.crossbars * self.replicas + self.spare


@structured_attribute("activation_stats")
@dataclass(frozen=True, slots=True)
class ActivationStats:
    """Calibration statistics of a quantized tensor: fraction of ones per bit (LSB first), and
    the fraction of exact zeros; the cost model derives input activity from them."""

    bit_density: tuple[float, ...]
    zero_fraction: float
    samples: int

    def __post_init__(self) -> None:
        _require(
            len(self.bit_density) <= MAX_INPUT_BITS,
            f"bit_density has {len(self.bit_density)} entries, more than the "
            f"{MAX_INPUT_BITS} bits of any code",
        )
        for density in self.bit_density:
            _share("a bit_density entry", density)
        _share("zero_fraction", self.zero_fraction)
        _in_range("samples", self.samples, 1)


@structured_attribute("profile")
@dataclass(frozen=True, slots=True)
class ConverterProfile:
    """What a layer's converters did on calibration data: the inputs simulated, the share of
    conversions that saturated, the share of speculative conversions that failed (hit a min /
    max code), and the 1-bit recovery conversions per speculative conversion."""

    samples: int
    saturation: float
    speculation_failures: float
    recoveries: float

    def __post_init__(self) -> None:
        _in_range("samples", self.samples, 1)
        _share("saturation", self.saturation)
        _share("speculation_failures", self.speculation_failures)
        # a failed slice re-runs as one 1-bit conversion per bit it carried
        _require(
            0.0 <= self.recoveries <= MAX_INPUT_BITS,
            f"recoveries = {self.recoveries} must be in [0, {MAX_INPUT_BITS}] (1-bit "
            "conversions per speculative conversion)",
        )


MAPPING_ATTRIBUTES = (
    AttrSpec("weights", AttrKind.STRUCT, optional=True, struct=WeightMapping),
    AttrSpec("centers", AttrKind.INTS, optional=True),
    AttrSpec("tiling", AttrKind.STRUCT, optional=True, struct=Tiling),
    AttrSpec("input", AttrKind.STRUCT, optional=True, struct=InputStreaming),
    AttrSpec("column_share", AttrKind.INT, optional=True),
    AttrSpec("converter", AttrKind.STRUCT, optional=True, struct=ConverterChoice),
    AttrSpec("ps_scale", AttrKind.FLOATS, optional=True),
    AttrSpec("ps_offset", AttrKind.FLOATS, optional=True),
    AttrSpec("full_scale", AttrKind.INT, optional=True),
    AttrSpec("profile", AttrKind.STRUCT, optional=True, struct=ConverterProfile),
    AttrSpec("placement", AttrKind.STRUCT, optional=True, struct=Placement),
)
"""The optional mapping attributes every crossbar op (conv, linear) accepts, in print order."""

CROSSBAR_OPS = ("conv", "linear")

FLOAT_MAPPING = ("input",)
"""The mapping attributes a layer may carry before it is quantized (assign-input-precision runs
before quantize); every other one describes integer codes on crossbars."""


@dataclass(frozen=True, slots=True)
class LayerShape:
    """The product a crossbar op computes: K rows and N columns per group, G groups, at P
    output positions (batch included)."""

    rows: int
    columns: int
    groups: int
    positions: int

    @property
    def filters(self) -> int:
        """Return the output channels of all groups."""
        return self.columns * self.groups

    @classmethod
    def of(cls, op: str, weight: Sequence[int], out: Sequence[int], group: int) -> LayerShape:
        """Return the product of a conv (w [M, C/G, *kernel]) or linear (w [K, N]) op."""
        if op == "conv":
            return cls(
                math.prod(weight[1:]), weight[0] // group, group, out[0] * math.prod(out[2:])
            )
        return cls(weight[0], weight[1], 1, math.prod(out[:-1]))


class MappingRuleError(ValueError):
    """A mapping attribute breaks a rule; `value` names the value whose definition is at fault
    (so that a program file's error points at its line)."""

    def __init__(self, message: str, value: str | None = None) -> None:
        super().__init__(message)
        self.value = value


LayerRule = Callable[[Any, Mapping[str, Any], LayerShape], None]


def _centers(centers: tuple[int, ...], attrs: Mapping[str, Any], shape: LayerShape) -> None:
    mapping = attrs.get("weights")
    # encode-weights drops them with any other encoding; the datapath reads them only there
    _require(
        isinstance(mapping, WeightMapping) and mapping.encoding == "center-offset",
        "centers belong to a center-offset encoding: the layer's weights attribute must "
        'say encoding = "center-offset"',
    )
    _require(
        len(centers) == shape.filters,
        f"{len(centers)} centers for {shape.filters} filters: one per filter",
    )
    _require(
        all(abs(c) <= MAX_CENTER for c in centers),
        f"centers must be within +-{MAX_CENTER} (the center of a weight of at most 16 bits)",
    )


def _tiling(tiling: Tiling, attrs: Mapping[str, Any], shape: LayerShape) -> None:
    _require(
        tiling.groups == shape.groups,
        f"groups = {tiling.groups} must be the layer's {shape.groups} channel groups",
    )
    row_tiles = -(-shape.rows // tiling.rows)
    # the cost model reads one partial sum per row tile; the simulator sums every K row
    _require(
        tiling.row_tiles == row_tiles,
        f"row_tiles = {tiling.row_tiles} must be ceil(K / rows) = ceil({shape.rows} / "
        f"{tiling.rows}) = {row_tiles}: the row tiles hold the layer's K = {shape.rows} "
        "rows",
    )
    mapping = attrs.get("weights")
    _require(
        isinstance(mapping, WeightMapping),
        "a tiling needs the layer's weights attribute (its slices and devices say how "
        "many columns a weight takes)",
    )
    # one crossbar column per slice, two for a pair unless the target subtracts it in analog
    fewest = -(-shape.columns * len(mapping.slices) // tiling.columns)
    most = -(-shape.columns * len(mapping.slices) * mapping.devices // tiling.columns)
    span = f"{fewest}" if fewest == most else f"{fewest}..{most}"
    _require(
        fewest <= tiling.column_tiles <= most,
        f"column_tiles = {tiling.column_tiles} must be {span}: N = {shape.columns} "
        f"columns x {len(mapping.slices)} slices"
        + (f" (x {mapping.devices} devices)" if mapping.devices > 1 else "")
        + f" on {tiling.columns} crossbar columns",
    )


def _column_share(share: int, attrs: Mapping[str, Any], shape: LayerShape) -> None:
    tiling = attrs.get("tiling")
    _require(isinstance(tiling, Tiling), "column sharing needs the layer's tiling")
    # one converter serves `share` columns in turn: a whole number of converters per crossbar
    _require(
        share >= 1 and tiling.columns % share == 0,
        f"column_share = {share} must be >= 1 and divide the tiling's {tiling.columns} columns",
    )


def _ps(name: str) -> LayerRule:
    def rule(values: tuple[float, ...], attrs: Mapping[str, Any], shape: LayerShape) -> None:
        other = "ps_offset" if name == "ps_scale" else "ps_scale"
        partner = attrs.get(other)
        _require(
            partner is not None and len(partner) == len(values),
            f"{name} has {len(values)} entries and needs {other} with as many (one of "
            "each per column)",
        )
        if name == "ps_scale":  # x = a * PS + b: a must be a positive finite gain
            _require(
                all(math.isfinite(v) and v > 0 for v in values),
                "ps_scale entries must be finite and > 0",
            )
        else:
            _require(all(math.isfinite(v) for v in values), "ps_offset entries must be finite")
        # [weight slice][device][filter]: a whole number of filter rows
        _require(
            bool(values) and len(values) % shape.filters == 0,
            f"{name} has {len(values)} entries, not a multiple of the layer's "
            f"{shape.filters} filters",
        )
        mapping = attrs.get("weights")
        if isinstance(mapping, WeightMapping):
            rows = len(values) // shape.filters
            legal = sorted({len(mapping.slices), len(mapping.slices) * mapping.devices})
            _require(
                rows in legal,
                f"{name} has {rows} columns per filter; the weights' "
                f"{len(mapping.slices)} slices x devices give "
                f"{' or '.join(map(str, legal))}",
            )

    return rule


def _full_scale(value: int, attrs: Mapping[str, Any], shape: LayerShape) -> None:
    _require(value >= 1, f"full_scale = {value} must be >= 1 (a partial-sum magnitude)")
    choice = attrs.get("converter")
    _require(
        isinstance(choice, ConverterChoice) and choice.kind in ("sar", "flash"),
        "full_scale needs the layer's converter to be an ADC (sar or flash)",
    )


def _placement(placement: Placement, attrs: Mapping[str, Any], shape: LayerShape) -> None:
    tiling = attrs.get("tiling")
    _require(isinstance(tiling, Tiling), "a placement needs the layer's tiling")
    _require(
        placement.crossbars == tiling.crossbars,
        f"crossbars = {placement.crossbars} must be the layer's {tiling.crossbars} crossbars "
        "(its tiling): a copy holds them all",
    )
    streaming = attrs.get("input")
    slices = len(streaming.slices) if isinstance(streaming, InputStreaming) else MAX_INPUT_BITS
    cycles = shape.positions * slices
    # place stops copying a layer when every copy has one array cycle left
    _require(
        placement.replicas <= cycles,
        f"replicas = {placement.replicas} must not exceed the layer's {cycles} array "
        f"cycles ({shape.positions} positions x {slices} input slices)",
    )


LAYER_RULES: dict[str, LayerRule] = {
    "centers": _centers,
    "tiling": _tiling,
    "column_share": _column_share,
    "ps_scale": _ps("ps_scale"),
    "ps_offset": _ps("ps_offset"),
    "full_scale": _full_scale,
    "placement": _placement,
}
"""The rule of each mapping attribute that needs the layer's product or its other attributes
(the fields of a structured one check themselves when it is built)."""


def check_layer(attrs: Mapping[str, Any], shape: LayerShape, integer: bool) -> None:
    """Raise MappingRuleError naming the first mapping attribute of a crossbar op that breaks
    its rule; `integer` says whether the op computes on integer codes."""
    for spec in MAPPING_ATTRIBUTES:
        if spec.name not in attrs:
            continue
        if not integer and spec.name not in FLOAT_MAPPING:
            raise MappingRuleError(
                f"attribute '{spec.name}': a float layer has no crossbar "
                "mapping (run quantize before the mapping passes)"
            )
        rule = LAYER_RULES.get(spec.name)
        try:
            if rule is not None:
                rule(attrs[spec.name], attrs, shape)
        except ValueError as exc:
            raise MappingRuleError(f"attribute '{spec.name}': {exc}") from None


def check_input_codes(streaming: InputStreaming, bits: int, signed: bool, source: str) -> None:
    """Raise MappingRuleError unless a layer streams its input codes as the quantize op that
    makes them (`bits`, `signed`, named `source`) wrote them: the datapath slices the codes'
    bit pattern by `streaming`, so another width or sign would silently read other numbers."""

    def spell(b: int, s: bool) -> str:
        return f"{b}-bit {'signed' if s else 'unsigned'}"

    if (streaming.bits, streaming.signed) != (bits, signed):
        raise MappingRuleError(
            f"attribute 'input': streams {spell(streaming.bits, streaming.signed)} codes but "
            f"its operand holds the {spell(bits, signed)} codes of quantize {source}"
        )


def check_placements(placed: Sequence[tuple[str, Placement]]) -> None:
    """Raise MappingRuleError unless the placed layers (result name, placement) fill the
    chip's crossbar slots from slot 0 without gaps or overlaps, as `place` lays them out: each
    copy owns its crossbars, and the area model builds every tile up to the last one used."""
    end = 0
    for value, placement in sorted(placed, key=lambda item: item[1].first_crossbar):
        first = placement.first_crossbar
        if first != end:
            problem = (
                "overlaps the crossbars of another layer"
                if first < end
                else f"leaves crossbars {end}..{first - 1} unused"
            )
            raise MappingRuleError(
                f"attribute 'placement': first_crossbar = {first} {problem}: the layers' "
                f"placements must follow each other from crossbar 0 (this one should start "
                f"at crossbar {end})",
                value,
            )
        end = placement.end
