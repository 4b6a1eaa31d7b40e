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
- `profile` (profile-converters): what the converters did on calibration data,
  `#profile<samples = 16, saturation = 0.01, speculation_failures = 0.06, recoveries = 0.2>`
- `placement` (place): `#placement<first_tile = 0, tiles = 3, replicas = 1>`

Slices are listed most significant first; their bits add up to the operand's precision.
"""

from __future__ import annotations

from dataclasses import dataclass

from imcc.ir.attributes import AttrKind, AttrSpec, structured_attribute

ENCODINGS = ("offset", "differential", "center-offset")


@structured_attribute("weights")
@dataclass(frozen=True, slots=True)
class WeightMapping:
    """How weights are stored: encoding, bit slices (MSB first), devices per slice."""

    encoding: str
    slices: tuple[int, ...]
    devices: int

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}")
        if not self.slices or any(s < 1 for s in self.slices) or self.devices not in (1, 2):
            raise ValueError("slices must be >= 1 bit each and devices 1 or 2")


@structured_attribute("tiling")
@dataclass(frozen=True, slots=True)
class Tiling:
    """The crossbar tiles of one matrix product: groups x row tiles x column tiles crossbars."""

    rows: int
    columns: int
    row_tiles: int
    column_tiles: int
    groups: int

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
        if sum(self.slices) != self.bits or any(s < 1 for s in self.slices):
            raise ValueError(f"input slices {list(self.slices)} must add up to {self.bits} bits")


@structured_attribute("converter")
@dataclass(frozen=True, slots=True)
class ConverterChoice:
    """The converter of a layer's columns: the target's converter name, kind, bits, samples."""

    name: str
    kind: str
    bits: int
    samples: int


@structured_attribute("placement")
@dataclass(frozen=True, slots=True)
class Placement:
    """Where a layer sits on the chip: its first tile, tiles per copy, and copies."""

    first_tile: int
    tiles: int
    replicas: int


@structured_attribute("activation_stats")
@dataclass(frozen=True, slots=True)
class ActivationStats:
    """Calibration statistics of a quantized tensor: fraction of ones per bit (LSB first), and
    the fraction of exact zeros; the cost model derives input activity from them."""

    bit_density: tuple[float, ...]
    zero_fraction: float
    samples: int


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


MAPPING_ATTRIBUTES = (
    AttrSpec("weights", AttrKind.STRUCT, optional=True, struct=WeightMapping),
    AttrSpec("centers", AttrKind.INTS, optional=True),
    AttrSpec("tiling", AttrKind.STRUCT, optional=True, struct=Tiling),
    AttrSpec("input", AttrKind.STRUCT, optional=True, struct=InputStreaming),
    AttrSpec("column_share", AttrKind.INT, optional=True),
    AttrSpec("converter", AttrKind.STRUCT, optional=True, struct=ConverterChoice),
    AttrSpec("ps_scale", AttrKind.FLOATS, optional=True),
    AttrSpec("ps_offset", AttrKind.FLOATS, optional=True),
    AttrSpec("profile", AttrKind.STRUCT, optional=True, struct=ConverterProfile),
    AttrSpec("placement", AttrKind.STRUCT, optional=True, struct=Placement),
)
"""The optional mapping attributes every crossbar op (conv, linear) accepts, in print order."""

CROSSBAR_OPS = ("conv", "linear")
