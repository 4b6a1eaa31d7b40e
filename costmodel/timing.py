"""Timing: a crossbar layer's array cycle from its stages, and the chip's latency and throughput.

Array cycle of a crossbar layer (one input slice through every crossbar of the layer, per row
phase; `Stages`): the stages are

- `array`: the analog read, `crossbar.read_latency` (rows driven, column currents settled);
- `converters`: the converter bank, the columns of one converter converted in turn, each
  `conversion` long (an MTJ: samples x (switch + reset)): with sample-and-hold the held columns
  that hold weights, spread over the crossbar's converters (`plan.converter_turns`, at most m,
  the columns one converter serves); in reactivate mode all m column groups;
- `shift_add`: one shift-and-add per conversion result, one lane per converter.

With `column_share_mode = sample-hold` (ISAAC, RAELLA) the read is held and the next slice's
read overlaps the conversions, so the cycle is the slowest stage, max(array, converters,
shift_add). With `reactivate` (NeuroSim's column mux) each of the m column groups is read and
then converted, so the cycle is max(m x (array + conversion), shift_add). A layer's time per
image is `positions x slices x phases x cycle / replicas` (phases: `plan.chunks_per_tile`, the
row groups read one after another), or its buffer or interconnect traffic at the declared
bandwidths when that is longer; `bound` names the stage that sets it.

The chip (`chip_timing`), by the target's `timing`:

- `pipelined` (ISAAC, RAELLA: every layer has its own crossbars and runs as a pipeline stage):
  throughput = 1 / the slowest layer's time per image. Latency of one image: a layer starts once
  its producer has written the rows its first window needs and finishes no earlier than the
  producer's last rows allow (layers in graph order, each fed by the one before):
  `start_l = start_{l-1} + T_{l-1} * min(1, window_l / rows_{l-1})`,
  `finish_l = max(start_l + T_l, finish_{l-1} + T_l / rows_l)`; latency = finish of the last.
  `rows` are a layer's output rows (conv: batch x output height; others: their output's, 1 for
  vectors) and `window` the input rows its first output needs (conv: the kernel height;
  element-wise and pooling ops: 1 or the pooling window; a linear layer: all of them).
- `synchronous` (NeuroSim, XPert: DNN+NeuroSim V1.3 main.cpp and Chip.cpp, ChipCalculatePerformance
  with CalculateclkFreq, run the layers one after another on one clock): the clock period is
  the slowest sensing of one column group in any crossbar layer (SubArray.cpp
  CalculateLatency: "clk freq is decided by the longest sensing latency"; reactivate mode: the
  read and one conversion, sample-and-hold: the whole array cycle), every crossbar layer takes
  `positions x slices x phases x m` clocks (m column groups sensed in turn per input bit), and
  latency = the sum of the layers' times; throughput = 1 / latency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TIMING_MODES = ("pipelined", "synchronous")


@dataclass(frozen=True, slots=True)
class Stages:
    """The stage times of one array cycle of a crossbar layer (seconds)."""

    array: float
    conversion: float  # one conversion (an MTJ: all its samples)
    share: int  # conversions one converter makes in turn per read (reactivate: the m groups)
    shift_add: float  # one shift-and-add
    sample_hold: bool

    def times(self) -> dict[str, float]:
        """Return each stage's time per array cycle."""
        if self.sample_hold:
            return {
                "array": self.array,
                "converters": self.share * self.conversion,
                "shift_add": self.share * self.shift_add,
            }
        return {
            "array+converters": self.share * (self.array + self.conversion),
            "shift_add": self.share * self.shift_add,
        }

    @property
    def cycle(self) -> float:
        """Return the array cycle: the slowest stage."""
        return max(self.times().values())

    @property
    def groups(self) -> int:
        """Return the column groups sensed one after another per array cycle (reactivate: m)."""
        return 1 if self.sample_hold else self.share

    @property
    def sense(self) -> float:
        """Return one column group's sensing time: the read and one conversion (reactivate),
        else the whole cycle."""
        return self.cycle if self.sample_hold else self.array + self.conversion

    @property
    def bound(self) -> str:
        """Return the stage that sets the cycle."""
        times = self.times()
        return max(times, key=lambda name: times[name])


@dataclass(frozen=True, slots=True)
class LayerTiming:
    """What the chip's timing needs of one layer: its array cycles per image and copy, the cycle,
    its traffic time, and its output rows and input window (for the pipeline's fill)."""

    cycles: float = 0.0  # array cycles per image on one copy (0: not a crossbar layer)
    cycle_s: float = 0.0
    replicas: int = 1
    other_s: float = 0.0  # digital work, or buffer / interconnect traffic, per image
    rows: int = 1
    window: float = 1.0  # math.inf: the producer's whole output
    bound: str = ""
    groups: int = 1  # column groups sensed one after another per cycle (reactivate: m)
    sense_s: float = 0.0  # one column group's sensing time (a synchronous chip's clock)

    def array_s(self, clock_s: float | None = None) -> float:
        """Return the layer's array time per image: its cycles at its own cycle, or, on a
        synchronous chip, its column-group sensings at the chip's clock."""
        if clock_s is None:
            return self.cycles * self.cycle_s / max(self.replicas, 1)
        return self.cycles * self.groups * clock_s / max(self.replicas, 1)

    def time_s(self, clock_s: float | None = None) -> float:
        """Return the layer's time per image (see `array_s`), or its traffic time when that is
        longer."""
        return max(self.array_s(clock_s), self.other_s)

    def bound_at(self, clock_s: float | None = None) -> str:
        """Return what sets the layer's time: a stage of its cycle, the synchronous `clock`
        (a slower layer's sensing), `traffic` or `digital`."""
        if not self.cycles:
            return self.bound or "digital"
        if self.other_s > self.array_s(clock_s):
            return "traffic"
        return self.bound if clock_s is None or clock_s == self.sense_s else "clock"


@dataclass(frozen=True, slots=True)
class ChipTiming:
    """Latency of one image, throughput, and each layer's time on the chip."""

    latency_s: float
    throughput_inferences_s: float
    layer_s: tuple[float, ...]
    clock_s: float | None  # synchronous: the chip's clock period


def chip_timing(mode: str, layers: Sequence[LayerTiming]) -> ChipTiming:
    """Return the chip's timing of layers in graph order (see the module docstring)."""
    if mode not in TIMING_MODES:
        raise ValueError(f"unknown timing mode {mode!r}")
    clock = None
    if mode == "synchronous":
        clock = max((layer.sense_s for layer in layers if layer.cycles), default=0.0)
        times = tuple(layer.time_s(clock if layer.cycles else None) for layer in layers)
        latency = sum(times)
        return ChipTiming(latency, 1.0 / latency if latency > 0 else 0.0, times, clock)
    times = tuple(layer.time_s() for layer in layers)
    start = finish = 0.0
    previous: LayerTiming | None = None
    previous_time = 0.0
    for layer, time in zip(layers, times, strict=True):
        if previous is not None:
            start += previous_time * min(1.0, layer.window / max(previous.rows, 1))
        finish = max(start + time, finish + time / max(layer.rows, 1))
        previous, previous_time = layer, time
    slowest = max(times, default=0.0)
    return ChipTiming(finish, 1.0 / slowest if slowest > 0 else 0.0, times, clock)


def output_rows(shape: Sequence[int]) -> int:
    """Return the rows a layer's output streams in: batch x height of an image-shaped tensor,
    else 1 (a vector is produced whole)."""
    if len(shape) >= 3:
        return max(1, int(shape[0]) * int(shape[2]))
    return 1
