"""The explicit configuration every pass receives: target, seed, free-form options, logger."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np


def _default_logger() -> logging.Logger:
    return logging.getLogger("imcc")


@dataclass(frozen=True, slots=True, eq=False)
class Context:
    """Configuration a pipeline runs under; passes read it instead of the environment.

    `target` is the hardware description (None until targets exist or when none is chosen),
    `seed` the root of every random choice a pass makes (see `rng`), `options` settings that are
    not pass options (e.g. from the command line), `logger` where passes report what they did.
    """

    target: object | None = None
    seed: int = 0
    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    logger: logging.Logger = field(default_factory=_default_logger)

    def rng(self, *salt: object) -> np.random.Generator:
        """Return a generator seeded from `seed` and `salt`, the same for the same arguments."""
        key = [self.seed, *(_stable_int(s) for s in salt)]
        return np.random.default_rng(key)


def _stable_int(value: object) -> int:
    """Map a salt to a non-negative int that does not depend on Python's hash seed."""
    if isinstance(value, int) and value >= 0:
        return value
    return int.from_bytes(hashlib.blake2b(repr(value).encode(), digest_size=8).digest(), "little")
