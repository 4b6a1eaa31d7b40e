"""Element types and static tensor types of the IR."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np


class DType(enum.Enum):
    """An element type; the value is its spelling in the text form."""

    BOOL = "bool"
    I8 = "i8"
    I16 = "i16"
    I32 = "i32"
    I64 = "i64"
    U8 = "u8"
    U16 = "u16"
    U32 = "u32"
    U64 = "u64"
    F16 = "f16"
    F32 = "f32"
    F64 = "f64"

    @property
    def numpy(self) -> np.dtype:
        """Return the numpy dtype that holds this element type."""
        return np.dtype(_NUMPY_NAMES[self])

    @property
    def is_float(self) -> bool:
        """Say whether this is a floating-point type."""
        return self in (DType.F16, DType.F32, DType.F64)

    @property
    def is_integer(self) -> bool:
        """Say whether this is a (signed or unsigned) integer type."""
        return not self.is_float and self is not DType.BOOL

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> DType:
        """Return the element type of a numpy dtype, or raise KeyError."""
        return _FROM_NUMPY[np.dtype(dtype).name]


_NUMPY_NAMES = {
    DType.BOOL: "bool",
    DType.I8: "int8",
    DType.I16: "int16",
    DType.I32: "int32",
    DType.I64: "int64",
    DType.U8: "uint8",
    DType.U16: "uint16",
    DType.U32: "uint32",
    DType.U64: "uint64",
    DType.F16: "float16",
    DType.F32: "float32",
    DType.F64: "float64",
}
_FROM_NUMPY = {name: dtype for dtype, name in _NUMPY_NAMES.items()}


@dataclass(frozen=True, slots=True)
class TensorType:
    """A tensor with a static shape and an element type, printed `f32[1,3,224,224]`."""

    shape: tuple[int, ...]
    dtype: DType

    def __post_init__(self) -> None:
        if any(not isinstance(d, int) or d < 0 for d in self.shape):
            raise ValueError(f"tensor dimensions must be non-negative integers: {self.shape}")

    @property
    def rank(self) -> int:
        """Return the number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Return the number of elements."""
        return math.prod(self.shape)

    def with_shape(self, shape: tuple[int, ...]) -> TensorType:
        """Return the same element type with another shape."""
        return TensorType(tuple(shape), self.dtype)

    def __str__(self) -> str:
        return f"{self.dtype.value}[{','.join(str(d) for d in self.shape)}]"

    @classmethod
    def of(cls, array: np.ndarray) -> TensorType:
        """Return the type of a numpy array."""
        return cls(tuple(int(d) for d in array.shape), DType.from_numpy(array.dtype))
