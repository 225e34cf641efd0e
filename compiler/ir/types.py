"""Element types, dimensions and tensor types of the graph IR.

A dimension is an ``int`` (static), a ``str`` naming a symbol (``"batch"``), or ``UNKNOWN``
(``"?"``) when nothing is known about it before the data is seen (NonZero's count, say).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import ml_dtypes
import numpy as np

Dim = int | str
UNKNOWN = "?"


class DType(enum.Enum):
    """Element types of tensors; the value is the spelling in the IR text form."""

    F16 = "f16"
    BF16 = "bf16"
    F32 = "f32"
    F64 = "f64"
    I8 = "i8"
    I16 = "i16"
    I32 = "i32"
    I64 = "i64"
    U8 = "u8"
    U16 = "u16"
    U32 = "u32"
    U64 = "u64"
    BOOL = "bool"

    @property
    def numpy(self) -> np.dtype:
        return _TO_NUMPY[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.F16, DType.BF16, DType.F32, DType.F64)

    @property
    def is_int(self) -> bool:
        return self.value[0] in "iu"

    @property
    def is_signed(self) -> bool:
        return self.is_float or self.value[0] == "i"

    @property
    def itemsize(self) -> int:
        return _TO_NUMPY[self].itemsize

    @staticmethod
    def from_numpy(dtype: np.dtype | type) -> DType:
        found = _FROM_NUMPY.get(np.dtype(dtype))
        if found is None:
            from ..errors import KilnError

            raise KilnError(f"numpy dtype {np.dtype(dtype)} has no Kiln element type")
        return found

    @staticmethod
    def parse(text: str) -> DType:
        try:
            return DType(text)
        except ValueError:
            from ..errors import ParseError

            raise ParseError(f"unknown element type {text!r}") from None


_TO_NUMPY: dict[DType, np.dtype] = {
    DType.F16: np.dtype(np.float16),
    DType.BF16: np.dtype(ml_dtypes.bfloat16),
    DType.F32: np.dtype(np.float32),
    DType.F64: np.dtype(np.float64),
    DType.I8: np.dtype(np.int8),
    DType.I16: np.dtype(np.int16),
    DType.I32: np.dtype(np.int32),
    DType.I64: np.dtype(np.int64),
    DType.U8: np.dtype(np.uint8),
    DType.U16: np.dtype(np.uint16),
    DType.U32: np.dtype(np.uint32),
    DType.U64: np.dtype(np.uint64),
    DType.BOOL: np.dtype(np.bool_),
}
_FROM_NUMPY = {v: k for k, v in _TO_NUMPY.items()}

FLOATS = frozenset(t for t in DType if t.is_float)
INTS = frozenset(t for t in DType if t.is_int)
NUMERIC = FLOATS | INTS
ALL = frozenset(DType)


def is_static(dim: Dim) -> bool:
    return isinstance(dim, int)


@dataclass(frozen=True)
class TensorType:
    """The type of a value: element type and shape (rank is ``len(shape)``)."""

    dtype: DType
    shape: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> int | None:
        """Element count, or None while any dimension is not static."""
        if not self.is_static:
            return None
        n = 1
        for d in self.shape:
            n *= int(d)
        return n

    @property
    def nbytes(self) -> int | None:
        n = self.numel
        return None if n is None else n * self.dtype.itemsize

    def with_shape(self, shape: tuple[Dim, ...]) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return f"{self.dtype.value}[{','.join(str(d) for d in self.shape)}]"

    @staticmethod
    def of(array: np.ndarray) -> TensorType:
        return TensorType(DType.from_numpy(array.dtype), tuple(int(d) for d in array.shape))


def shape_matches(actual: tuple[int, ...], declared: tuple[Dim, ...]) -> bool:
    """True when a concrete shape fits a declared one (symbols and '?' match any extent)."""
    if len(actual) != len(declared):
        return False
    return all(not isinstance(d, int) or d == a for a, d in zip(actual, declared, strict=True))
