"""Price a mapped graph on a target: `estimate`, the `CostReport` and its JSON and table forms.

Totals: energy is the sum over layers and components. Latency (one image) and throughput
(`throughput_inferences_s`, images per second in steady state) come from the target's timing
mode (costmodel/timing.py): a pipeline of layers (latency = fill + the slowest layer,
throughput = 1 / the slowest layer) or a synchronous chip (one clock, layers in turn). Area
(`area_mm2`) is the provisioned chip: the tiles the mapping uses and their shared periphery
(area.py); a target that names a fixed chip also gets `chip_area_mm2` (the whole chip, or
chips, the mapping needs) and `utilization` (tiles used / tiles on those chips), else both
are null. Figures of merit count two operations per MAC: TOPS = 2 * MACs * throughput / 1e12,
TOPS/W = 2 * MACs / energy / 1e12, TOPS/mm² = TOPS / area_mm2, EDAP = energy_j * latency_s *
area_mm2 (J*s*mm²).

Per layer the JSON also carries `recovery_conversions` (speculation's 1-bit re-runs, part of
`conversions`) and `profile`: what profile-converters measured on calibration data
(`samples`, `saturation_rate`, `speculation_failure_rate`, `recoveries_per_conversion`), or
null when the layer has no profile.

`estimate` refuses a report whose totals are not finite and positive or whose figures of merit
are not finite (`check_report`): the `.hw` loader's ranges should make that unreachable, so it
is a last resort against a target whose numbers are legal one by one but absurd together.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from imcc.costmodel.area import chip_area, tiles_used
from imcc.costmodel.interpreter import CostInterpreter
from imcc.costmodel.layer import LayerCost
from imcc.costmodel.timing import chip_timing
from imcc.errors import UserError
from imcc.ir.graph import Graph
from imcc.target import Target

ENERGY_COMPONENTS = (
    "array",
    "input_drivers",
    "converters",
    "shift_add",
    "accumulators",
    "buffers",
    "interconnect",
    "digital",
    "center_offset",
    "speculation",
    "mtj_reset",
    "counters",
    "column_mux",
)


@dataclass(frozen=True, slots=True)
class CostReport:
    """Energy, latency, area and figures of merit of one mapped graph on one target."""

    target: str
    macs: int
    energy_j: float
    latency_s: float
    area_mm2: float
    energy_breakdown_j: dict[str, float]
    area_breakdown_mm2: dict[str, float]
    layers: tuple[LayerCost, ...]
    throughput_inferences_s: float = 0.0
    timing: str = "pipelined"
    tiles: int = 0  # tiles the mapping uses
    chip_area_mm2: float | None = None  # the fixed chip(s) of the target, when it names one
    utilization: float | None = None  # tiles used / tiles of the fixed chip(s)
    clock_s: float | None = None  # synchronous timing: the chip's clock period

    @property
    def operations(self) -> int:
        """Return the operations counted by the figures of merit: two per MAC."""
        return 2 * self.macs

    @property
    def edap(self) -> float:
        """Return energy * latency * area in J*s*mm²."""
        return self.energy_j * self.latency_s * self.area_mm2

    @property
    def tops_per_w(self) -> float:
        """Return tera-operations per joule (= TOPS per watt)."""
        return self.operations / self.energy_j / 1e12 if self.energy_j else 0.0

    @property
    def tops(self) -> float:
        """Return tera-operations per second at the steady-state throughput."""
        return self.operations * self.throughput_inferences_s / 1e12

    @property
    def tops_per_mm2(self) -> float:
        """Return TOPS per mm² of chip area."""
        return self.tops / self.area_mm2 if self.area_mm2 else 0.0

    @property
    def conversions(self) -> float:
        """Return the converter conversions (MTJ samples) of the whole graph."""
        return sum(layer.conversions for layer in self.layers)

    @property
    def converts_per_mac(self) -> float:
        """Return conversions per MAC over the crossbar layers."""
        macs = sum(layer.macs for layer in self.layers if layer.conversions)
        return self.conversions / macs if macs else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the report as one JSON-ready object, the README's keys (SI units)."""
        return {
            "target": self.target,
            "energy_j": self.energy_j,
            "latency_s": self.latency_s,
            "throughput_inferences_s": self.throughput_inferences_s,
            "timing": self.timing,
            "clock_s": self.clock_s,
            "area_mm2": self.area_mm2,
            "tiles": self.tiles,
            "chip_area_mm2": self.chip_area_mm2,
            "utilization": self.utilization,
            "edap": self.edap,
            "tops": self.tops,
            "tops_per_w": self.tops_per_w,
            "tops_per_mm2": self.tops_per_mm2,
            "macs": self.macs,
            "converts_per_mac": self.converts_per_mac,
            "energy_breakdown_j": dict(self.energy_breakdown_j),
            "area_breakdown_mm2": dict(self.area_breakdown_mm2),
            "layers": [
                {
                    "name": layer.name,
                    "op": layer.op,
                    "macs": layer.macs,
                    "energy_j": layer.energy_j,
                    "latency_s": layer.latency_s,
                    "bound": layer.timing.bound_at(self.clock_s),
                    "cycle_s": layer.timing.cycle_s or None,
                    "crossbars": layer.crossbars,
                    "conversions": layer.conversions,
                    "converts_per_mac": layer.converts_per_mac,
                    "recovery_conversions": layer.recovery_conversions,
                    "profile": _profile(layer),
                    "energy_breakdown_j": dict(layer.energy_breakdown_j),
                }
                for layer in self.layers
            ],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """Return the report as a JSON text (see `to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent)


def _profile(layer: LayerCost) -> dict[str, float] | None:
    """Return what profile-converters measured for a layer (None when it did not run)."""
    if layer.profile is None:
        return None
    return {
        "samples": layer.profile.samples,
        "saturation_rate": layer.profile.saturation,
        "speculation_failure_rate": layer.profile.speculation_failures,
        "recoveries_per_conversion": layer.profile.recoveries,
    }


def estimate(graph: Graph, target: Target) -> CostReport:
    """Return the cost report of a mapped graph on a target."""
    walk = CostInterpreter(graph, target)
    walk.estimate()
    energy = dict.fromkeys(ENERGY_COMPONENTS, 0.0)
    for layer in walk.layers:
        for component, value in layer.energy_breakdown_j.items():
            energy[component] += value
    area = {k: v * 1e6 for k, v in chip_area(target, walk.areas).items()}
    used = tiles_used(target, walk.areas)
    chip_mm2 = utilization = None
    fixed = target.hierarchy.tiles_per_chip
    if fixed and walk.areas:
        tiles = target.hierarchy.chips_for(used) * fixed
        chip_mm2 = sum(chip_area(target, walk.areas, tiles).values()) * 1e6
        utilization = used / tiles
    timing = chip_timing(target.timing, [layer.timing for layer in walk.layers])
    layers = tuple(
        dataclasses.replace(layer, latency_s=time)
        for layer, time in zip(walk.layers, timing.layer_s, strict=True)
    )
    report = CostReport(
        target=target.name,
        macs=sum(layer.macs for layer in layers),
        energy_j=sum(energy.values()),
        latency_s=timing.latency_s,
        area_mm2=sum(area.values()),
        energy_breakdown_j=energy,
        area_breakdown_mm2=area,
        layers=layers,
        throughput_inferences_s=timing.throughput_inferences_s,
        timing=target.timing,
        tiles=used,
        chip_area_mm2=chip_mm2,
        utilization=utilization,
        clock_s=timing.clock_s,
    )
    check_report(report, target)
    return report


def check_report(report: CostReport, target: Target) -> None:
    """Raise a UserError when a total is not finite and positive or a figure of merit is not
    finite, naming the figure and the layer or component that made it."""
    hint = (
        f"the values of target `{target.name}`"
        f"{f' ({target.source})' if target.source else ''} are the likely cause: check "
        "its energies, latencies and areas"
    )
    layer_energy = [
        (f"layer `{layer.name}`, component `{part}`", value)
        for layer in report.layers
        for part, value in layer.energy_breakdown_j.items()
    ]
    totals = (
        ("energy", report.energy_j, "J", layer_energy, "no layer spends any energy"),
        (
            "latency",
            report.latency_s,
            "s",
            [(f"layer `{layer.name}`", layer.latency_s) for layer in report.layers],
            "no layer takes any time",
        ),
        (
            "area",
            report.area_mm2,
            "mm2",
            [(f"component `{part}`", value) for part, value in report.area_breakdown_mm2.items()],
            "no component has any area",
        ),
    )
    for figure, total, unit, parts, nothing in totals:
        if math.isfinite(total) and total > 0:
            continue
        culprit = next((name for name, value in parts if not math.isfinite(value)), None)
        if culprit is None:
            culprit = next((name for name, value in parts if value < 0), None)
        where = (
            f" (from {culprit})" if culprit is not None else f": {nothing}" if total == 0 else ""
        )
        raise UserError(f"the cost report's total {figure} is {total:g} {unit}{where}", hint)
    for figure, value in (
        ("EDAP", report.edap),
        ("TOPS/W", report.tops_per_w),
        ("TOPS/mm2", report.tops_per_mm2),
        ("throughput", report.throughput_inferences_s),
    ):
        if not math.isfinite(value):
            raise UserError(
                f"the cost report's {figure} is {value:g} (energy "
                f"{report.energy_j:g} J, latency {report.latency_s:g} s, area "
                f"{report.area_mm2:g} mm2)",
                hint,
            )


def _energy(joules: float) -> str:
    for unit, scale in (("mJ", 1e-3), ("uJ", 1e-6), ("nJ", 1e-9), ("pJ", 1e-12)):
        if abs(joules) >= scale:
            return f"{joules / scale:8.3f} {unit}"
    return f"{joules / 1e-12:8.3f} pJ"


def _time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:8.3f} {unit}"
    return f"{seconds / 1e-9:8.3f} ns"


def format_table(report: CostReport) -> str:
    """Return a terminal table: one row per layer, then the totals and the breakdowns."""
    name_width = max([len("layer"), *(len(layer.name) for layer in report.layers)])
    name_width = min(name_width, 32)
    head = (
        f"{'layer':<{name_width}}  {'op':<16} {'MACs':>12} {'energy':>11} "
        f"{'latency':>11} {'xbars':>6} {'conv/MAC':>9}"
    )
    lines = [f"cost report: target {report.target}", head, "-" * len(head)]
    for layer in report.layers:
        cpm = f"{layer.converts_per_mac:9.4f}" if layer.conversions else f"{'':9}"
        xbars = f"{layer.crossbars:6d}" if layer.crossbars else f"{'':6}"
        lines.append(
            f"{layer.name[:name_width]:<{name_width}}  {layer.op:<16} {layer.macs:>12,} "
            f"{_energy(layer.energy_j):>11} {_time(layer.latency_s):>11} {xbars} {cpm}"
        )
    lines.append("-" * len(head))
    lines.append(
        f"{'total':<{name_width}}  {'':<16} {report.macs:>12,} {_energy(report.energy_j):>11} "
        f"{_time(report.latency_s):>11} {'':6} {report.converts_per_mac:9.4f}"
    )
    lines.append("")
    lines.append(
        f"throughput  {report.throughput_inferences_s:12.4g} inferences/s   "
        f"({report.timing} timing"
        + (f", clock {_time(report.clock_s).strip()}" if report.clock_s else "")
        + ")"
    )
    lines.append(f"area        {report.area_mm2:12.4f} mm2   ({report.tiles} tiles provisioned)")
    if report.chip_area_mm2 is not None:
        lines.append(
            f"chip area   {report.chip_area_mm2:12.4f} mm2   "
            f"(utilization {report.utilization:.1%} of the fixed chip's tiles)"
        )
    lines.append(f"TOPS/W      {report.tops_per_w:12.4f}   (2 operations per MAC)")
    lines.append(f"TOPS/mm2    {report.tops_per_mm2:12.4f}")
    lines.append(f"EDAP        {report.edap:12.4e} J*s*mm2")
    lines.append("")
    lines.append(f"{'component':<16} {'energy':>11} {'share':>7}   {'area mm2':>12} {'share':>7}")
    components = list(dict.fromkeys([*report.energy_breakdown_j, *report.area_breakdown_mm2]))
    for component in components:
        energy = report.energy_breakdown_j.get(component, 0.0)
        area = report.area_breakdown_mm2.get(component, 0.0)
        if not energy and not area:
            continue
        e_share = energy / report.energy_j if report.energy_j else 0.0
        a_share = area / report.area_mm2 if report.area_mm2 else 0.0
        lines.append(
            f"{component:<16} {_energy(energy):>11} {e_share:7.1%}   {area:12.4f} {a_share:7.1%}"
        )
    return "\n".join(lines) + "\n"
