"""Stored conductance of a layer's weights: the numpy reduction behind the array energy.

A weight of `bits` bits (the sum of `weights.slices`) is written into one cell per slice and
device. The stored level of a slice of `width` bits is normalised by its largest level
`2**width - 1`, giving g in [0, 1]:

- `offset` encoding stores the unsigned `w + 2**(bits-1)` (clipped to `[0, 2**bits - 1]`);
- `differential` stores `|w|` on the positive device when w > 0, on the negative one otherwise
  (the other device of the pair holds level 0);
- `center-offset` stores `|w - c|` the same way, `c` the per-filter center: the op's `centers`
  (chosen by encode-weights on calibration data, as RAELLA does); a program without them falls
  back to the rounded median of the filter's weights (the center that minimises the mean
  |w - c|, i.e. the stored conductance).

`ConductanceSums` holds the sum of g over every cell of the layer and the number of cells, so
that one array read of all rows costs `cell_read_energy_j * g_sum + cell_base_energy_j * cells`.
The sums are cached per (weight digest, encoding, slices, devices, filter axis, centers): the
autotuner prices the same weights under many mappings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imcc.errors import MappingError
from imcc.ir.mapping import WeightMapping
from imcc.plan import slice_shifts, stored_values

DEFAULT_LEVEL = 0.5
"""Mean normalised level assumed when the weight data is not loaded."""

_CACHE_LIMIT = 8192
_cache: dict[tuple, ConductanceSums] = {}


@dataclass(frozen=True, slots=True)
class ConductanceSums:
    """Sum of normalised stored levels over a layer's cells, and how many cells there are."""

    level_sum: float
    cells: int

    @property
    def mean_level(self) -> float:
        """Return the mean normalised level of a cell."""
        return self.level_sum / self.cells if self.cells else 0.0


def _centers(weights: np.ndarray, filter_axis: int) -> np.ndarray:
    moved = np.moveaxis(weights, filter_axis, 0).reshape(weights.shape[filter_axis], -1)
    return np.rint(np.median(moved, axis=1)).astype(np.int64)


def stored_magnitudes(
    weights: np.ndarray,
    mapping: WeightMapping,
    filter_axis: int,
    centers: tuple[int, ...] | None = None,
    offset_bias: int = 0,
) -> np.ndarray:
    """Return the unsigned integer each weight stores (before slicing) under an encoding;
    `centers` (one per filter) are a center-offset encoding's (default: rounded medians),
    `offset_bias` an offset encoding's (the layer plan's `offset_bias`: 2^(B-1) for B-bit
    weights)."""
    capacity = (1 << sum(mapping.slices)) - 1
    w = np.asarray(weights, dtype=np.int64)
    chosen = None
    if mapping.encoding == "center-offset":
        shape = [1] * w.ndim
        shape[filter_axis] = -1
        if centers is None:
            chosen = _centers(w, filter_axis)
        elif len(centers) != w.shape[filter_axis]:
            raise MappingError(
                f"{len(centers)} centers for {w.shape[filter_axis]} filters",
                hint="give one center per filter (encode-weights sets them)",
            )
        else:
            chosen = np.asarray(centers, np.int64)
        chosen = chosen.reshape(shape)
    # the datapath's rule (plan.stored_values), clipped to the slices where it would refuse
    devices = stored_values(mapping.encoding, w, offset_bias, chosen)
    return np.clip(sum(devices), 0, capacity)


def level_sum(values: np.ndarray, slices: tuple[int, ...]) -> float:
    """Return the sum over values and slices (MSB first) of slice level / largest slice level."""
    total = 0.0
    flat = values.reshape(-1)
    for width, shift in zip(slices, slice_shifts(slices), strict=True):
        mask = (1 << width) - 1
        part = (flat >> shift) & mask if shift else flat & mask
        total += float(np.count_nonzero(part) if width == 1 else part.sum()) / mask
    return total


def conductance_sums(
    weights: np.ndarray | None,
    digest: str | None,
    mapping: WeightMapping,
    filter_axis: int,
    size: int,
    centers: tuple[int, ...] | None = None,
    offset_bias: int = 0,
) -> ConductanceSums:
    """Return the stored-level sums of a layer's weights (cached by digest, mapping, the
    centers of a center-offset encoding and the bias of an offset one)."""
    cells = size * len(mapping.slices) * mapping.devices
    if weights is None:
        return ConductanceSums(DEFAULT_LEVEL * cells, cells)
    if mapping.encoding != "center-offset":
        centers = None  # other encodings ignore centers: share their cache entry
    key = (
        digest,
        mapping.encoding,
        mapping.slices,
        mapping.devices,
        filter_axis,
        None if centers is None else tuple(centers),
        offset_bias,
    )
    cached = _cache.get(key) if digest is not None else None
    if cached is not None:
        return cached
    result = ConductanceSums(
        level_sum(
            stored_magnitudes(weights, mapping, filter_axis, centers, offset_bias), mapping.slices
        ),
        cells,
    )
    if digest is not None:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[key] = result
    return result


def clear_cache() -> None:
    """Forget every cached sum (benchmarks measure the cold path with it)."""
    _cache.clear()
