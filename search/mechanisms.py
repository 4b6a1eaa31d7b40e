"""Per-layer converter mechanisms: the coherent bundles of per-layer choices a hybrid chip mixes.

The raw search space of a target that offers every mechanism (targets/hybrid.hw) crosses each
layer's converter, precision, samples, input slicing, speculation, encoding, weight slices and
sharing independently: ~10^125 points on ResNet-20, almost all of them illegal (an MTJ with 6
bits) or pointless (speculation on 1-bit inputs). A `Mechanism` is one legal, coherent
bundle, named `converter:bits` (`:Nx` for N MTJ samples) plus its mechanisms, after the
design it comes from (the names below are targets/hybrid.hw's):

- `sar:8b` (ISAAC, Shafiee et al., ISCA 2016): bit-serial inputs, differential 2-bit weight
  slices, the widest unit-step ADC per 128 columns: the baseline, lossless or nearly so;
- `sar:7b+co`, `sar:6b+co` (RAELLA, Andrulis et al., ISCA 2023): Center+Offset weights with
  adaptive slicing, bit-serial inputs, a narrower unit-step ADC; `+spec` adds speculative
  3-3-2 input slices re-run bit-serially where the ADC saturates;
- `sar_fs:Bb`, `flash:Bb` (XPert, Moitra et al., DAC 2023): bit-serial inputs, differential 4-3
  weight slices, a B-bit full-scale ADC shared by 8 columns (XPert's baseline sharing);
- `mtj:Nx` (StoX-Net, Rogers et al., ICRC 2024): 4-bit input streams, 4-3 weight slices, one
  SOT-MTJ per column sampled N times;
- `sa`: a 1-bit sense amplifier per column, the MTJ's deterministic limit.

`menu(target)` lists the mechanisms a target can build, from what it offers (converters, bits,
samples, a Center+Offset unit, a speculation unit, input slice widths); `pipeline` turns one
mechanism per crossbar layer into the trial pipeline of the target's search space, which
`imcc compile --passes` replays. Column sharing does not change what a layer computes, only its
cost, so a mechanism fixes it and a cost-only step may change it later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from imcc.errors import MappingError
from imcc.passes.pipeline import parse_pipeline, print_pipeline
from imcc.search.space import SearchSpace
from imcc.target import ConverterKind, Target

CENTER_BITS = 4
"""Bits of a Center+Offset center: RAELLA's public model stores each filter's center in 4 bits
(mit-emze/raella models/common_components/raella_buffers.yaml, n_center_entry_bits; raella.hw)."""
SLICING = {"objective": "conversions"}
"""Adaptive slicing (`auto`) keeps, of the slicings within its error budget, the one with the
fewest conversions, speculation's recoveries included (slice-weights{objective=conversions}):
a speculating layer is then not held to RAELLA's 10% failures when more failures convert less."""
SPECULATIVE_SLICE = 3
"""RAELLA's speculative input slices are 3 bits wide (3-3-2 for 8-bit inputs)."""
MTJ_INPUT_SLICE = 4
"""StoX-Net streams 4-bit inputs in one pulse train (its public release's 4-bit activations)."""
FULL_SCALE_SHARING = 8
"""XPert's baseline shares each ADC among 8 columns (benchmarks/xpert.py BASELINE)."""
UNIT_STEP_SHARING = 128
"""ISAAC and RAELLA share each ADC among 128 columns."""
MIN_FULL_SCALE_BITS = 4
"""The narrowest full-scale ADC offered as a mechanism: XPert's precisions start at 4 bits."""
MIN_MTJ_SAMPLES = 4
"""The fewest MTJ samples offered as a mechanism: StoX-Net's inner layers take 4."""

OPTIONS = (
    "assign-input-precision.per_layer_slice",
    "assign-input-precision.per_layer_speculate",
    "encode-weights.per_layer_scheme",
    "select-adc.per_layer_converter",
    "select-adc.per_layer_bits",
    "select-adc.per_layer_samples",
    "slice-weights.per_layer_slices",
    "share-columns.per_layer",
)
"""The per-layer options a mechanism sets, in pipeline order (every mechanism sets all)."""
SPECULATE = "assign-input-precision.per_layer_speculate"
CONVERTER = "select-adc.per_layer_converter"
SHARING = "share-columns.per_layer"


@dataclass(frozen=True, slots=True)
class Mechanism:
    """One layer's mechanism: its name, the paper it comes from and the entries it sets, one
    per `OPTIONS` key, spelled as the search space spells them."""

    name: str
    family: str  # isaac, raella, xpert, stox or sense-amp
    entries: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.entries) != len(OPTIONS):
            raise ValueError(
                f"mechanism {self.name}: {len(self.entries)} entries, not {len(OPTIONS)}"
            )

    def entry(self, key: str) -> str:
        """Return the entry this mechanism sets for one of `OPTIONS`."""
        return self.entries[OPTIONS.index(key)]

    def choices(self, layer: int) -> dict[str, str]:
        """Return this mechanism's search choices for crossbar layer `layer`."""
        return {f"{key}[{layer}]": value for key, value in zip(OPTIONS, self.entries, strict=True)}


def _mechanism(
    name: str,
    family: str,
    converter: str,
    bits: int,
    *,
    slice_: int = 1,
    speculate: bool = False,
    scheme: str = "differential",
    samples: int = 1,
    slices: str = "4-3",
    sharing: int = 1,
) -> Mechanism:
    """Spell a mechanism's entries in `OPTIONS` order (defaults: bit-serial, differential 4-3
    weight slices, one converter per column)."""
    values = (slice_, "true" if speculate else "false", scheme, converter, bits, samples)
    return Mechanism(name, family, (*map(str, values), slices, str(sharing)))


def menu(target: Target) -> tuple[Mechanism, ...]:
    """Return the mechanisms `target` can build (module docstring), baseline first."""
    widths = set(target.input_driver.bits_per_cycle)
    found: list[Mechanism] = []
    for converter in target.converters:
        kind, name = converter.kind, converter.name
        sharing = converter.column_sharing or target.column_sharing
        if kind is ConverterKind.MTJ and MTJ_INPUT_SLICE in widths:
            found += [
                _mechanism(f"{name}:{n}x", "stox", name, 1, slice_=MTJ_INPUT_SLICE, samples=n)
                for n in converter.samples
                if n >= MIN_MTJ_SAMPLES
            ]
        elif kind is ConverterKind.SENSE_AMP and 1 in sharing:
            found.append(_mechanism(name, "sense-amp", name, 1))
        elif converter.range_rule == "saturate" and UNIT_STEP_SHARING in sharing:
            unit = {"sharing": UNIT_STEP_SHARING}
            widest = max(converter.bits)
            found.append(
                _mechanism(f"{name}:{widest}b", "isaac", name, widest, slices="2-2-2-1", **unit)
            )
            if target.center_offset is None:
                continue
            speculates = target.speculation is not None and SPECULATIVE_SLICE in widths
            for bits in sorted((b for b in converter.bits if b < widest), reverse=True)[:2]:
                co = {"scheme": "center-offset", "slices": "auto", **unit}
                found.append(_mechanism(f"{name}:{bits}b+co", "raella", name, bits, **co))
                if speculates:
                    found.append(
                        _mechanism(
                            f"{name}:{bits}b+co+spec",
                            "raella",
                            name,
                            bits,
                            slice_=SPECULATIVE_SLICE,
                            speculate=True,
                            **co,
                        )
                    )
        elif FULL_SCALE_SHARING in sharing:
            found += [
                _mechanism(f"{name}:{b}b", "xpert", name, b, sharing=FULL_SCALE_SHARING)
                for b in converter.bits
                if b >= MIN_FULL_SCALE_BITS
            ]
    found.sort(key=lambda m: m.family != "isaac")  # the baseline first, otherwise in order
    return tuple(found)


def pipeline(
    space: SearchSpace, chosen: Sequence[Mechanism], sharing: Sequence[int] | None = None
) -> str:
    """Return the trial pipeline that maps crossbar layer i with `chosen[i]`: the search
    space's template with every mechanism's entries, Center+Offset centers of `CENTER_BITS`
    and adaptive slicing by `SLICING`; without a speculating layer, no profile-converters
    (the cost model reads a profile only for speculation). `sharing` overrides the
    mechanisms' column sharing, one factor per layer."""
    if len(chosen) != len(space.layers):
        raise MappingError(
            f"{len(chosen)} mechanisms for {len(space.layers)} crossbar layers",
            hint="give one mechanism per crossbar layer",
        )
    choices: dict[str, str] = {}
    for layer, mechanism in enumerate(chosen):
        choices.update(mechanism.choices(layer))
    known = {d.key for d in space.dimensions}
    missing = sorted(set(choices) - known)
    if missing:
        raise MappingError(
            f"the target's search space has no {missing[0].split('[')[0]}",
            hint="mechanisms need a target that offers every option they set (targets/hybrid.hw)",
        )
    settings: dict[str, dict] = {
        "encode-weights": {"center_bits": CENTER_BITS},
        "slice-weights": SLICING,
    }
    if sharing is not None:
        settings["share-columns"] = {"per_layer": tuple(sharing)}
    speculates = any(m.entry(SPECULATE) == "true" for m in chosen)
    passes = [
        dataclasses.replace(p, **settings.get(p.name, {}))
        for p in parse_pipeline(space.pipeline(choices))
        if speculates or p.name != "profile-converters"  # only speculation reads a profile
    ]
    return print_pipeline(passes)


def uniform(space: SearchSpace, mechanism: Mechanism) -> str:
    """Return the pipeline that maps every crossbar layer with one mechanism."""
    return pipeline(space, [mechanism] * len(space.layers))
