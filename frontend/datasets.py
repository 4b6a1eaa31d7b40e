"""Data sets for calibration and accuracy: built-in digits, MNIST / Fashion-MNIST IDX folders,
`.npz` archives and the built-in examples' data, named by one spec string.

| spec                      | what                                                      |
|---------------------------|-----------------------------------------------------------|
| `digits`                  | scikit-learn's 1,797 8x8 digits, [N,1,8,8] in [0, 1]      |
| `mnist:DIR`               | MNIST IDX files in DIR (t10k, else train), [N,1,28,28] in [0, 1] |
| `fashion-mnist:DIR`       | Fashion-MNIST, the same layout                             |
| `npz:FILE`                | arrays `image` (or `x`) and optional `label` (or `y`)     |
| `cifar10:FILE`            | `.npz`: uint8 `images` [N,32,32,3], `labels` -> [N,3,32,32] |
| `digits-cnn` (an example) | the held-out data shipped with a built-in example         |

Images are float32 in [0, 1]; a model that expects another range either rescales at its input
or is fed with a `,scale=S` suffix on the spec (`mnist:DIR,scale=255` multiplies by 255).
A `,from=N` suffix starts the data set at sample N (0-based), so that one file serves several
splits: `cifar10:cifar10_train.npz,from=45000` is the CIFAR-10 training set's images 45,000
onwards (a limit then counts from there). A spec is read strictly: an empty `,scale=`, a
`,from=` that is not a whole number within the data set, an option given twice, a path given
to a kind that takes none (`digits:`) and a kind that needs one given none (`mnist:`) are
refused, never guessed.

Every data set passes one check when it is loaded (`_validated`): images are a numeric array
of samples [N, ...] with N >= 1, finite after scaling; labels, when present, are 1-D integers
>= 0 (and within int64), one per image; float64 images beyond float32's range are refused
before the cast. A limit takes the first N samples and must be at least 1; a limit above
the data set's size takes all of it and the Dataset remembers what was asked (`limit`), so that
reports can say so. Whether labels fit a model's classes is known only where the model is:
`check_labels` (simulation.py calls it).
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from imcc.errors import UserError
from imcc.examples import EXAMPLE_DATA, HERE
from imcc.inputs import Unreadable, read_npz

KINDS = ("digits", "mnist:DIR", "fashion-mnist:DIR", "npz:FILE", "cifar10:FILE", *EXAMPLE_DATA)

NPZ_HINT = (
    "a data set .npz holds `image` [N,...] and `label` [N], e.g. "
    "numpy.savez(FILE, image=x, label=y)"
)
CIFAR_HINT = "a CIFAR-10 .npz holds uint8 `images` [N,32,32,3] and integer `labels` [N]"


@dataclass(frozen=True)
class Dataset:
    """Images (float32, NCHW) and labels (int64, or None) read from one spec; `limit` is the
    sample count a caller asked for (None: all), which may exceed the samples there are."""

    name: str
    images: np.ndarray
    labels: np.ndarray | None
    limit: int | None = None

    def take(self, limit: int | None) -> Dataset:
        """Return the first `limit` samples (all when limit is None); limit must be >= 1."""
        if limit is None:
            return self
        _check_limit(limit)
        labels = None if self.labels is None else self.labels[:limit]
        return Dataset(self.name, self.images[:limit], labels, limit)


@dataclass(frozen=True)
class _Arrays:
    """The arrays of a data set as its file stores them, before the one check."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str  # the file or folder, for messages
    layout: str = "samples"  # "samples" [N,...] as is; "idx" [N,H,W]; "nhwc" CIFAR [N,H,W,3]
    divide: float = 1.0  # byte images are scaled to [0, 1]


def load_dataset(spec: str, limit: int | None = None) -> Dataset:
    """Read the data set a spec names (see the module docstring); UserError on bad data."""
    if limit is not None:
        _check_limit(limit)
    base, options = _options(spec)
    factor = _scale(spec, options["scale"]) if "scale" in options else 1.0
    raw = _read(base)
    if "from" in options:
        images, labels = raw.images, raw.labels
        paired = images.ndim >= 1 and (labels is None or labels.shape[:1] == images.shape[:1])
        if paired:
            first = _first(spec, options["from"], len(images))
            labels = None if labels is None else labels[first:]
            raw = replace(raw, images=images[first:], labels=labels)
        else:  # the one check below names what is wrong, on the whole data set
            _first(spec, options["from"], 2**62)
    return _validated(spec, raw, limit, factor)


SUFFIXES = ("scale", "from")
"""The options a spec may end in, `,NAME=VALUE` each."""


def _options(spec: str) -> tuple[str, dict[str, str]]:
    """Split a spec into its base and its trailing `,scale=` / `,from=` options."""
    base, options = spec, {}
    while True:
        at, name = max((base.rfind(f",{name}="), name) for name in SUFFIXES)
        if at < 0:
            return base, options
        if name in options:
            raise UserError(
                f"data set '{spec}': ,{name}= is given twice",
                hint=f"give ,{name}= once",
            )
        options[name] = base[at + len(name) + 2 :]
        base = base[:at]


def _first(spec: str, option: str, count: int) -> int:
    """Return the sample a `,from=N` suffix starts at: a whole number below the samples."""
    if not (option.isascii() and option.isdigit()):
        raise UserError(
            f"bad start in data set '{spec}': ,from={option} is not a whole number >= 0",
            hint="e.g. cifar10:FILE,from=45000 starts at sample 45,000",
        )
    first = int(option)
    if first >= count:
        raise UserError(
            f"bad start in data set '{spec}': ,from={first} is beyond its {count:,} samples",
            hint=f"give a start below {count:,}",
        )
    return first


def _check_limit(limit: int) -> None:
    # a negative limit would slice from the end and 0 would leave nothing: both are mistakes
    if limit < 1:
        raise UserError(
            f"the sample limit must be at least 1, not {limit}",
            hint="--limit N takes the first N samples of the data set",
        )


def _scale(spec: str, option: str) -> float:
    if not option:
        raise UserError(
            f"bad scale in data set '{spec}': ,scale= gives no number",
            hint="give a positive number, e.g. mnist:DIR,scale=255, or leave ,scale= out",
        )
    try:
        factor = float(option)
    except ValueError:
        factor = math.nan
    if not (math.isfinite(factor) and factor > 0):  # nan/inf/0 would poison every image
        raise UserError(
            f"bad scale in data set '{spec}': '{option}' is not a positive number",
            hint="e.g. mnist:DIR,scale=255",
        )
    return factor


def _read(spec: str) -> _Arrays:
    kind, colon, path = spec.partition(":")
    if spec in EXAMPLE_DATA:
        return _npz(HERE / EXAMPLE_DATA[spec])
    if kind == "digits" and not path:
        if colon:  # `digits:` is no path given to a kind that takes none
            raise UserError(
                f"data set '{spec}': digits is built in and takes no path",
                hint="give --data digits (no ':')",
            )
        return _digits()
    if kind in EXAMPLE_DATA and colon:
        raise UserError(
            f"data set '{spec}': {kind} is a built-in example's data and takes no path",
            hint=f"give --data {kind} (no ':')",
        )
    if kind in ("mnist", "fashion-mnist", "npz", "cifar10") and not path:
        what = "DIR" if kind in ("mnist", "fashion-mnist") else "FILE"
        raise UserError(
            f"data set '{spec}': {kind} needs a {'folder' if what == 'DIR' else 'file'}, "
            f"{kind}:{what}",
            hint=f"e.g. --data {kind}:{'data/mnist' if what == 'DIR' else 'data.npz'}",
        )
    if kind in ("mnist", "fashion-mnist") and path:
        return _idx_folder(Path(path))
    if kind == "npz" and path:
        return _npz(Path(path))
    if kind == "cifar10" and path:
        return _cifar10(Path(path))
    raise UserError(f"unknown data set '{spec}'", hint=f"data sets: {', '.join(KINDS)}")


def _validated(name: str, raw: _Arrays, limit: int | None, factor: float) -> Dataset:
    """The one check every data set passes; returns float32 NCHW images and int64 labels."""
    images, labels, where = raw.images, raw.labels, raw.source
    if images.dtype.kind not in "biuf":  # strings, objects, complex numbers, dates
        raise UserError(
            f"data set {where}: images are {images.dtype}, not numbers",
            hint="store the images as a float or integer array",
        )
    want = {
        "samples": "[N, ...] with one sample per row",
        "idx": "[N, rows, columns]",
        "nhwc": "[N, 32, 32, 3]",
    }[raw.layout]
    rank_ok = {
        "samples": images.ndim >= 2,
        "idx": images.ndim == 3,
        "nhwc": images.ndim == 4 and images.shape[-1:] == (3,),
    }[raw.layout]
    if not rank_ok:
        raise UserError(
            f"data set {where}: images have shape {list(images.shape)}, not {want}",
            hint=NPZ_HINT
            if raw.layout == "samples"
            else CIFAR_HINT
            if raw.layout == "nhwc"
            else "the IDX images file is not 3-D",
        )
    if len(images) == 0:
        raise UserError(
            f"data set {where} holds no samples", hint="point at a data set with at least one image"
        )
    if labels is not None:
        _check_label_array(labels, len(images), where)
    if limit is not None:
        images = images[:limit]
        labels = None if labels is None else labels[:limit]
    if images.dtype.kind == "f" and images.dtype.itemsize > 4:  # float64 and wider
        with np.errstate(invalid="ignore"):
            beyond = np.isfinite(images) & (np.abs(images) > np.finfo(np.float32).max)
        if beyond.any():  # the cast would make them infinite (numpy warns): say so instead
            first = int(np.argwhere(beyond.reshape(len(images), -1).any(axis=1))[0, 0])
            count = int(beyond.sum())
            largest = float(np.abs(images[beyond]).max())
            raise UserError(
                f"data set {where}: {count} image value{'s are' if count > 1 else ' is'} "
                f"beyond float32's range (up to {largest:g}, float32 holds "
                f"{float(np.finfo(np.float32).max):.3g}; the first in sample {first})",
                hint="images are read as float32: rescale the data, e.g. to [0, 1]",
            )
    with np.errstate(over="ignore", invalid="ignore"):  # checked above and below
        x = images.astype(np.float32)
    if raw.layout == "idx":
        x = x[:, None]
    elif raw.layout == "nhwc":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
        if raw.divide != 1.0:
            x /= np.float32(raw.divide)
        if factor != 1.0:
            x *= np.float32(factor)
    bad = ~np.isfinite(x)  # NaN/Inf in the file, or a scale that overflows float32
    if bad.any():
        first = int(np.argwhere(bad.reshape(len(x), -1).any(axis=1))[0, 0])
        count = int(bad.sum())
        scaled = f" after ,scale={factor:g}" if factor != 1.0 else ""
        raise UserError(
            f"data set {where}: {count} image value{'s are' if count > 1 else ' is'}"
            f" NaN or infinite{scaled} (the first in sample {first})",
            hint="clean the data, or give a smaller ,scale=S"
            if factor != 1.0
            else "clean the data: every pixel must be a finite number",
        )
    return Dataset(name, x, None if labels is None else labels.astype(np.int64), limit)


def _check_label_array(labels: np.ndarray, count: int, where: str) -> None:
    """Labels are 1-D, one per image, non-negative integers (their upper bound is the model's
    business: check_labels)."""
    if labels.ndim != 1 or len(labels) != count:
        raise UserError(
            f"data set {where}: labels have shape {list(labels.shape)}, the images "
            f"need one label each: [{count}]",
            hint="store the labels as a 1-D array of class numbers",
        )
    if labels.dtype.kind not in "iu":  # floats would be truncated, bools and strings guessed
        raise UserError(
            f"data set {where}: labels are {labels.dtype}, not integers",
            hint="store class numbers, e.g. label.astype(numpy.int64)",
        )
    if count and labels.min() < 0:
        raise UserError(
            f"data set {where}: labels must be class numbers >= 0, found {labels.min()}",
            hint="store class numbers 0..C-1",
        )
    # compared in the labels' own type: a uint64 beyond int64 would wrap when converted
    if count and labels.dtype.kind == "u" and labels.max() > np.iinfo(np.int64).max:
        first = int(np.argmax(labels > np.iinfo(np.int64).max))
        raise UserError(
            f"data set {where}: label {int(labels.max())} is no class number (beyond int64; "
            f"the first such label in sample {first})",
            hint="store class numbers 0..C-1",
        )


def check_labels(data: Dataset, classes: int | None) -> None:
    """Raise UserError unless the data set has one label per image, each in 0..classes-1
    (a label a model cannot predict would silently lower its accuracy; None: no bound)."""
    if data.labels is None:
        raise UserError(f"data set {data.name} has no labels", hint="accuracy needs labels")
    _check_label_array(data.labels, len(data.images), data.name)
    if classes is not None and len(data.labels) and int(data.labels.max()) >= classes:
        raise UserError(
            f"data set {data.name}: labels go up to {int(data.labels.max())}, but "
            f"the model has {classes} outputs (classes 0..{classes - 1})",
            hint="pick the data set the model was trained for",
        )


def _digits() -> _Arrays:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError(
            "the `digits` data set needs scikit-learn", hint="pip install scikit-learn"
        ) from None
    digits = load_digits()
    return _Arrays(digits.images[:, None], digits.target, "digits", divide=16.0)


def _read_npz(
    path: Path, keys: dict[str, tuple[str, ...]], hint: str
) -> dict[str, np.ndarray | None]:
    """Return the first present name of every role in `keys` (None when absent and optional,
    i.e. its tuple ends with ""); a file that is no readable archive is a UserError naming it."""
    try:
        data = read_npz(path)
    except Unreadable as exc:
        raise UserError(f"data set {path} {exc}", hint=hint) from None
    found: dict[str, np.ndarray | None] = {}
    for role, names in keys.items():
        name = next((n for n in names if n and n in data), None)
        if name is None and names[-1] != "":
            first, *others = (f"`{n}`" for n in names if n)
            wanted = first + (f" (or {', '.join(others)})" if others else "")
            listed = ", ".join(data) or "none"
            raise UserError(
                f"data set {path} has no array {wanted}",
                hint=f"arrays in the file: {listed}; {hint}",
            )
        found[role] = None if name is None else data[name]
    return found


def _npz(path: Path) -> _Arrays:
    arrays = _read_npz(path, {"images": ("image", "x"), "labels": ("label", "y", "")}, NPZ_HINT)
    assert arrays["images"] is not None
    return _Arrays(arrays["images"], arrays["labels"], str(path))


def _cifar10(path: Path) -> _Arrays:
    arrays = _read_npz(path, {"images": ("images",), "labels": ("labels",)}, CIFAR_HINT)
    assert arrays["images"] is not None
    return _Arrays(arrays["images"], arrays["labels"], str(path), layout="nhwc", divide=255.0)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic, big-endian sizes, unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    hint = "MNIST IDX files: 0x00000803 images [N,28,28], 0x00000801 labels [N] (or .gz)"
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as exc:  # a folder, unreadable, broken gzip
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UserError(f"cannot read {path}: {reason}", hint=hint) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(
            f"{path} is not an IDX file of unsigned bytes (magic "
            f"{raw[:4].hex() or 'missing'}, expected 000008xx)",
            hint=hint,
        )
    dims = raw[3]
    if len(raw) < 4 + 4 * dims:
        raise UserError(
            f"{path} is truncated: its header names {dims} sizes, the file ends before them",
            hint=hint,
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * dims)
    if data.size != math.prod(shape):
        raise UserError(
            f"{path}: header says {shape} ({math.prod(shape)} bytes), file holds {data.size} bytes",
            hint="the file is truncated or damaged; " + hint,
        )
    return data.reshape(shape)


def _idx_folder(folder: Path) -> _Arrays:
    hint = "point at the folder that holds the MNIST/Fashion-MNIST IDX files"
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(f"data set folder {folder} {what}", hint=hint)
    for split in ("t10k", "train"):
        for suffix in ("", ".gz"):
            images = sorted(folder.glob(f"{split}-images*idx3*{suffix}"))
            labels = sorted(folder.glob(f"{split}-labels*idx1*{suffix}"))
            if images and labels:
                return _Arrays(
                    read_idx(images[0]),
                    read_idx(labels[0]),
                    str(folder),
                    layout="idx",
                    divide=255.0,
                )
    raise UserError(f"no IDX files (t10k-images-idx3-ubyte, ...) in {folder}", hint=hint)
