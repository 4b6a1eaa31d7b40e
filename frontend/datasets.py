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
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imcc.errors import UserError
from imcc.examples import EXAMPLE_DATA, HERE

KINDS = ("digits", "mnist:DIR", "fashion-mnist:DIR", "npz:FILE", "cifar10:FILE", *EXAMPLE_DATA)


@dataclass(frozen=True)
class Dataset:
    """Images (float32, NCHW) and labels (int64, or None) read from one spec."""

    name: str
    images: np.ndarray
    labels: np.ndarray | None

    def take(self, limit: int | None) -> Dataset:
        """Return the first `limit` samples (all when limit is None)."""
        if limit is None:
            return self
        labels = None if self.labels is None else self.labels[:limit]
        return Dataset(self.name, self.images[:limit], labels)


def load_dataset(spec: str, limit: int | None = None) -> Dataset:
    """Read the data set a spec names (see the module docstring)."""
    base, _, option = spec.partition(",scale=")
    if option:
        try:
            factor = float(option)
        except ValueError:
            raise UserError(f"bad scale in data set '{spec}'", hint="e.g. mnist:DIR,scale=255") \
                from None
        data = load_dataset(base, limit)
        return Dataset(spec, data.images * np.float32(factor), data.labels)
    kind, _, path = spec.partition(":")
    if spec in EXAMPLE_DATA:
        return _npz(spec, HERE / EXAMPLE_DATA[spec]).take(limit)
    if kind == "digits" and not path:
        return _digits().take(limit)
    if kind in ("mnist", "fashion-mnist") and path:
        return _idx_folder(spec, Path(path)).take(limit)
    if kind == "npz" and path:
        return _npz(spec, Path(path)).take(limit)
    if kind == "cifar10" and path:
        return _cifar10(spec, Path(path)).take(limit)
    raise UserError(f"unknown data set '{spec}'", hint=f"data sets: {', '.join(KINDS)}")


def _digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError("the `digits` data set needs scikit-learn",
                        hint="pip install scikit-learn") from None
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    return Dataset("digits", images, digits.target.astype(np.int64))


def _npz(name: str, path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read data set {path}: {exc}") from None
    images = arrays.get("image", arrays.get("x"))
    if images is None:
        raise UserError(f"{path} has no array 'image' (or 'x')",
                        hint=f"arrays in the file: {', '.join(arrays)}")
    labels = arrays.get("label", arrays.get("y"))
    return Dataset(name, images.astype(np.float32),
                   None if labels is None else labels.astype(np.int64))


def _cifar10(name: str, path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as data:
            images, labels = data["images"], data["labels"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot read CIFAR-10 images from {path}: {exc}",
                        hint="an .npz with uint8 `images` [N,32,32,3] and `labels`") from None
    x = images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    return Dataset(name, np.ascontiguousarray(x), labels.astype(np.int64))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic, big-endian sizes, unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * dims)
    if data.size != int(np.prod(shape)):
        raise UserError(f"{path}: header says {shape}, file holds {data.size} bytes")
    return data.reshape(shape)


def _idx_folder(name: str, folder: Path) -> Dataset:
    for split in ("t10k", "train"):
        for suffix in ("", ".gz"):
            images = sorted(folder.glob(f"{split}-images*idx3*{suffix}"))
            labels = sorted(folder.glob(f"{split}-labels*idx1*{suffix}"))
            if images and labels:
                x = read_idx(images[0]).astype(np.float32)[:, None] / 255.0
                return Dataset(name, x, read_idx(labels[0]).astype(np.int64))
    raise UserError(f"no IDX files (t10k-images-idx3-ubyte, ...) in {folder}",
                    hint="point at the folder that holds the MNIST/Fashion-MNIST IDX files")
