"""Converter cost models: energy and latency per conversion, area per converter.

Four models price the column converters a target offers (`Converter.model`, `Converter.kind`):

- `survey` (ADC): the regression of Murmann's ADC survey used by the RAELLA / CiMLoop authors
  (Andrulis et al., CiMLoop, arXiv 2404.06553), with B the resolution (valid for B >= 4), T the
  node in nm, f the samples per second of one ADC::

      SNDR  = 6.0206*B + 1.7609                                   # dB
      FOM_S = min(213.7807 - 2.8719*ln(f), 128.3068 + 3.2205*ceil(B))
      E_pJ  = exp(26.0496 + 1.8800*ln(T) - 2.8291*ln(B) - 1.4702) / (2 * 10**((FOM_S - SNDR)/10))
      A_um2 = exp(1.3462 + 0.99328*ln(T) + 0.18072*ln(f) + 0.29912*ln(E_pJ))

  E_pJ is the total energy of one conversion; the customary 20% leakage share is only a
  reporting split (`ConverterCost.leakage_j`), never added on top. Latency is 1/f.
- `neurosim` (the architecture rule of DNN+NeuroSim, which XPert, DAC 2023, prices with): a SAR ADC
  takes B+1 steps of one clock (`step_latency_s`, else 1 / technology.clock_hz, ~1 ns) with one
  comparator and occupies `A_min * (478 + 182*(B-1))`, A_min the converter's `unit_area_m2`, else
  the layout footprint of a minimum transistor at the node (`MIN_TRANSISTOR_AREA_F2` F²). Its energy
  is NeuroSim's (DNN+NeuroSim V1.3 SarADC.cpp GetColumnPower): the bias power `bit_power_w * B +
  base_power_w` plus the column-current power `column_power_w`, over its B+1 steps; a target without
  bias powers gives B+1 comparisons of `comparator_energy_j`. A Flash ADC (NeuroSim's multilevel
  sense amplifier, MultilevelSenseAmp.cpp) resolves in one step with 2^B-1 comparators, each biased
  for the step (`comparator_energy_j`), plus the column-current power over the step: energy and area
  grow as 2^B (`comparator_area_m2` each; `DEFAULT_COMPARATOR_TRANSISTORS` minimum transistors when
  the target leaves it 0); its `latency_s` is the encoder's time after the step. Latencies are the
  steps times NeuroSim's sensing-latency factor (`latency_factor`, Param.cpp `validated`: 1.4);
  energies use the unscaled steps.
- `fixed`: the converter's own `energy_j`, `latency_s`, `area_m2`.
- `mtj` kind (any model): one stochastic SOT-MTJ sample costs `energy_j` (switching) plus
  `reset_energy_j` plus one counter step `counter_energy_j`, takes `latency_s +
  reset_latency_s`; a converter is the MTJ plus its counter (`area_m2 + counter_area_m2`).
  Energies are per *sample*: the layer model multiplies by the sample count.
- `sense-amp` kind: a 1-bit sense amplifier, always priced as `fixed`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from imcc.errors import MappingError
from imcc.target import Converter, ConverterKind, ConverterModel, Technology

LEAKAGE_SHARE = 0.2
"""Share of the survey energy customarily booked as leakage (reporting split only)."""

MIN_TRANSISTOR_AREA_F2 = 38.4
"""Footprint of a minimum transistor in F²: ~6.4F wide (poly plus a contact and its spacing on
each side) by ~6F tall (2F diffusion plus poly extensions and spacing), following the
NeuroSim layout rules; A_min = MIN_TRANSISTOR_AREA_F2 * F²."""

DEFAULT_COMPARATOR_TRANSISTORS = 64
"""Minimum transistors per Flash comparator when the target gives no comparator area."""

SAR_BASE_TRANSISTORS = 478
SAR_TRANSISTORS_PER_BIT = 182


@dataclass(frozen=True, slots=True)
class ConverterCost:
    """The cost of one converter: energy and latency per conversion (per sample for an MTJ)."""

    energy_j: float  # converter energy per conversion / per MTJ sample (excl. reset, counter)
    latency_s: float  # per conversion / per MTJ sample (incl. reset)
    area_m2: float  # per converter (incl. an MTJ's counter)
    reset_energy_j: float = 0.0  # MTJ: per sample
    counter_area_m2: float = 0.0  # MTJ: the counter's share of area_m2
    counter_energy_j: float = 0.0  # MTJ: per sample
    leakage_j: float = 0.0  # reporting split of energy_j (survey model), already included


def survey_adc_energy_pj(bits: float, node_nm: float, rate_hz: float) -> float:
    """Return the survey-regression energy of one conversion in pJ (CiMLoop, arXiv 2404.06553)."""
    if bits < 4:
        raise MappingError(
            f"the ADC survey regression needs >= 4 bits, got {bits}",
            hint="price low-resolution converters with model neurosim or fixed",
        )
    sndr = 6.0206 * bits + 1.7609
    fom = min(213.7807 - 2.8719 * math.log(rate_hz), 128.3068 + 3.2205 * math.ceil(bits))
    numerator = math.exp(26.0496 + 1.8800 * math.log(node_nm) - 2.8291 * math.log(bits) - 1.4702)
    return numerator / (2 * 10 ** ((fom - sndr) / 10))


def survey_adc_area_um2(bits: float, node_nm: float, rate_hz: float) -> float:
    """Return the survey-regression area of one ADC in um² (CiMLoop, arXiv 2404.06553)."""
    energy = survey_adc_energy_pj(bits, node_nm, rate_hz)
    return math.exp(
        1.3462
        + 0.99328 * math.log(node_nm)
        + 0.18072 * math.log(rate_hz)
        + 0.29912 * math.log(energy)
    )


def minimum_transistor_area_m2(node_nm: float) -> float:
    """Return A_min, the footprint of a minimum transistor at a node, in m²."""
    feature = node_nm * 1e-9
    return MIN_TRANSISTOR_AREA_F2 * feature * feature


def _neurosim(converter: Converter, bits: int, technology: Technology) -> ConverterCost:
    step = converter.step_latency_s or 1.0 / technology.clock_hz
    a_min = converter.unit_area_m2 or minimum_transistor_area_m2(technology.node_nm)
    comparator_area = converter.comparator_area_m2 or DEFAULT_COMPARATOR_TRANSISTORS * a_min
    factor = converter.latency_factor
    if converter.kind is ConverterKind.SAR:
        steps = bits + 1
        area = a_min * (SAR_BASE_TRANSISTORS + SAR_TRANSISTORS_PER_BIT * (bits - 1))
        if converter.bit_power_w or converter.base_power_w:
            power = converter.bit_power_w * bits + converter.base_power_w
            energy = (power + converter.column_power_w) * steps * step
        else:
            energy = steps * (converter.comparator_energy_j + converter.column_power_w * step)
        return ConverterCost(energy, steps * step * factor, area)
    if converter.kind is ConverterKind.FLASH:
        comparators = 2**bits - 1
        energy = comparators * converter.comparator_energy_j + converter.column_power_w * step
        latency = (step + converter.latency_s) * factor  # + its encoder's time
        return ConverterCost(energy, latency, comparators * comparator_area)
    raise MappingError(
        f"converter '{converter.name}': model neurosim prices only sar and flash ADCs, "
        f"not {converter.kind.value}"
    )


@lru_cache(maxsize=1024)
def converter_cost(converter: Converter, bits: int, technology: Technology) -> ConverterCost:
    """Return the per-conversion (per-sample for MTJ) energy, latency and area of a converter."""
    if converter.kind is ConverterKind.MTJ:
        return ConverterCost(
            converter.energy_j,
            converter.latency_s + converter.reset_latency_s,
            converter.area_m2 + converter.counter_area_m2,
            reset_energy_j=converter.reset_energy_j,
            counter_area_m2=converter.counter_area_m2,
            counter_energy_j=converter.counter_energy_j,
        )
    if converter.kind is ConverterKind.SENSE_AMP or converter.model is ConverterModel.FIXED:
        return ConverterCost(converter.energy_j, converter.latency_s, converter.area_m2)
    if converter.model is ConverterModel.SURVEY:
        rate = converter.sample_rate_hz
        energy = survey_adc_energy_pj(bits, technology.node_nm, rate) * 1e-12
        area = survey_adc_area_um2(bits, technology.node_nm, rate) * 1e-12
        return ConverterCost(energy, 1.0 / rate, area, leakage_j=LEAKAGE_SHARE * energy)
    return _neurosim(converter, bits, technology)
