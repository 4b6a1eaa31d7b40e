"""The search space of a model on a target: what the tunable mapping passes declare, per layer.

A trial is a mapping pipeline built from one choice per `Dimension`. The pipeline template
(`template`) lists the mapping passes a target needs in order; each pass declares the legal
values of its options (`Pass.search_space`) and which uniform options have per-layer list
counterparts (`Pass.per_layer_options`). An option with a counterpart becomes one dimension
per crossbar layer (`select-adc.per_layer_bits[2]`); one without becomes one dimension for the
whole graph (`place.replicate`). Choices are kept as the options' canonical spellings, so a
dimension's values are plain strings (what optuna stores) and read back exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imcc.ir.graph import Graph
from imcc.passes.base import OptionSpec, Pass
from imcc.passes.calibrate_adc import calibrated_converters
from imcc.passes.context import Context
from imcc.passes.encode_weights import supported_schemes
from imcc.passes.layers import crossbar_layers, layer_label
from imcc.passes.pipeline import DEFAULT_PIPELINE, print_pipeline
from imcc.passes.registry import load_pass
from imcc.target import ConverterKind, Target

CALIBRATION_SAMPLES = 16
"""Calibration images `quantize` uses in a trial (of the 64 a compile loads): cheap and exact."""


@dataclass(frozen=True, slots=True)
class Step:
    """One pass of the trial pipeline: options it always gets and options it is not searched on."""

    name: str
    fixed: tuple[tuple[str, Any], ...] = ()
    skip: tuple[str, ...] = ()


def template(target: Target) -> tuple[Step, ...]:
    """Return the mapping passes a trial runs on this target, in order.

    `tile-crossbar`'s uniform slices are not searched: `slice-weights` chooses them per layer.
    `encode-weights` joins when the target stores weights in more than one way,
    `profile-converters` when it speculates (the cost model prices speculation from its profile),
    `calibrate-mtj` after the slicing when it offers an MTJ converter (an uncalibrated MTJ
    column converts coin flips; the pass leaves layers with other converters alone), and
    `calibrate-adc` when it offers an ADC with the `full-scale` range rule (uncalibrated, such
    an ADC spans sums the data never reach and rounds the real ones to a few codes).
    """
    steps = [
        Step("assign-input-precision"),
        Step("quantize", fixed=(("samples", CALIBRATION_SAMPLES),)),
        Step("tile-crossbar", skip=("slices",)),
    ]
    if len(supported_schemes(target)) > 1:
        steps.append(Step("encode-weights"))
    steps += [Step("select-adc"), Step("slice-weights")]
    if any(c.kind is ConverterKind.MTJ for c in target.converters):
        steps.append(Step("calibrate-mtj"))
    if calibrated_converters(target):
        steps.append(Step("calibrate-adc"))
    steps.append(Step("share-columns"))
    if target.speculation is not None:
        steps.append(Step("profile-converters"))
    steps.append(Step("place"))
    return tuple(steps)


@dataclass(frozen=True, slots=True)
class Dimension:
    """One searched choice: a uniform option of a pass, or one layer's entry of a list option."""

    pass_name: str
    option: str
    layer: int | None  # None: a uniform option for the whole graph
    choices: tuple[str, ...]  # canonical spellings (a list option's entries: one element)

    @property
    def key(self) -> str:
        """Return the parameter name the search stores: `select-adc.per_layer_bits[0]`."""
        suffix = "" if self.layer is None else f"[{self.layer}]"
        return f"{self.pass_name}.{self.option}{suffix}"

    @property
    def searched(self) -> bool:
        """Say whether there is a choice to make (more than one legal value)."""
        return len(self.choices) > 1


@dataclass(frozen=True, slots=True)
class SearchSpace:
    """The trial template, its dimensions and the crossbar layers they refer to."""

    steps: tuple[Step, ...]
    dimensions: tuple[Dimension, ...]
    layers: tuple[str, ...]  # crossbar layers in graph order, as messages name them

    def searched(self) -> tuple[Dimension, ...]:
        """Return the dimensions with more than one choice."""
        return tuple(d for d in self.dimensions if d.searched)

    def size(self) -> int:
        """Return the number of points in the space (legal or not)."""
        total = 1
        for dimension in self.dimensions:
            total *= len(dimension.choices)
        return total

    def uniform(self, values: Mapping[str, str]) -> dict[str, str]:
        """Return the choices that give every layer of each named option (`PASS.OPTION`) the
        same value."""
        return {
            d.key: values[f"{d.pass_name}.{d.option}"]
            for d in self.dimensions
            if f"{d.pass_name}.{d.option}" in values
        }

    def pipeline(self, choices: Mapping[str, str]) -> str:
        """Return the mapping pipeline of a trial: every pass of the template with its fixed
        options and the chosen values. A dimension missing from `choices` (a single legal
        value excepted) leaves its option at the pass default; a list option is set only when
        every layer has a choice."""
        passes = []
        for step in self.steps:
            cls = load_pass(step.name)
            specs = {spec.name: spec for spec in cls.options()}
            values: dict[str, Any] = dict(step.fixed)
            lists: dict[str, list[Any]] = {}
            for dimension in self.dimensions:
                if dimension.pass_name != step.name:
                    continue
                spelled = choices.get(dimension.key)
                if spelled is None and not dimension.searched:
                    spelled = dimension.choices[0]
                spec = specs[dimension.option]
                if dimension.layer is None:
                    if spelled is not None:
                        values[dimension.option] = spec.parse(spelled)
                    continue
                entries = lists.setdefault(dimension.option, [])
                entries.append(None if spelled is None else _parse_entry(spec, spelled))
            for option, entries in lists.items():
                if entries and all(e is not None for e in entries):
                    values[option] = tuple(entries)
            passes.append(cls(**values))
        return print_pipeline(passes)

    def full_pipeline(self, choices: Mapping[str, str]) -> str:
        """Return the pipeline `imcc compile --passes` replays: clean-up, then the trial's."""
        return f"{DEFAULT_PIPELINE},{self.pipeline(choices)}"


def _spell_entry(spec: OptionSpec, value: Any) -> str:
    """Spell one entry of a list option (the list's spelling without its brackets)."""
    return spec.format((value,))[1:-1]


def _parse_entry(spec: OptionSpec, text: str) -> Any:
    return spec.parse(f"[{text}]")[0]


def _pass_dimensions(instance: Pass, step: Step, graph: Graph, ctx: Context) -> list[Dimension]:
    """Return a pass's dimensions: per-layer entries where declared, else uniform options."""
    specs = {spec.name: spec for spec in instance.options()}
    uniform = instance.search_space(graph, ctx)
    per_layer = instance.layer_search_space(graph, ctx)
    covered = {
        name
        for declared in instance.per_layer_options
        for name in (declared.uniform, *declared.supersedes)
    }
    dimensions = []
    fixed = {name for name, _ in step.fixed}
    for option, layers in per_layer.items():
        if option in step.skip or option in fixed:
            continue
        for index, entries in enumerate(layers):
            spelled = tuple(dict.fromkeys(_spell_entry(specs[option], e) for e in entries))
            if spelled:
                dimensions.append(Dimension(instance.name, option, index, spelled))
    for option, values in uniform.items():
        if option in covered or option in step.skip or option in fixed:
            continue
        spelled = tuple(dict.fromkeys(specs[option].format(v) for v in values))
        if spelled:
            dimensions.append(Dimension(instance.name, option, None, spelled))
    return dimensions


def build_space(graph: Graph, target: Target) -> SearchSpace:
    """Return the search space of a cleaned-up float graph on a target."""
    ctx = Context(target=target)
    steps = template(target)
    dimensions: list[Dimension] = []
    for step in steps:
        instance = load_pass(step.name)(**dict(step.fixed))
        dimensions += _pass_dimensions(instance, step, graph, ctx)
    layers = tuple(layer_label(node, index) for index, node in enumerate(crossbar_layers(graph)))
    return SearchSpace(steps, tuple(dimensions), layers)
