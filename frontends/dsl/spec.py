"""Type specs of DSL inputs: ``dsl.f32["batch", 784]`` is a ``TensorSpec``.

A ``DTypeSpec`` (``f32``, ``f16``, ``f64``, ``i32``, ``i64``, ``bool_``) names an element type;
indexing it with dims gives a ``TensorSpec``. A dim is a non-negative int or a symbol (an
identifier such as ``"batch"``) bound when the model is built or run. ``as_dtype`` accepts
every spelling of an element type the DSL takes as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.types import Dim, DType, TensorType

from .errors import dsl_error


@dataclass(frozen=True)
class DTypeSpec:
    """An element type; ``spec[dims...]`` makes a TensorSpec of it."""

    dtype: DType

    def __getitem__(self, dims: Any) -> TensorSpec:
        return TensorSpec(self.dtype, dims if isinstance(dims, tuple) else (dims,))

    def __repr__(self) -> str:
        return f"dsl.{_NAMES[self.dtype]}"


@dataclass(frozen=True)
class TensorSpec:
    """The declared type of a model input: element type and shape (ints and symbols)."""

    dtype: DType
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", as_dtype(self.dtype))
        if not isinstance(self.shape, (tuple, list)):
            raise dsl_error(f"TensorSpec shape {self.shape!r}",
                            "the shape must be a tuple of ints and symbol names")
        object.__setattr__(self, "shape", tuple(_check_dim(d, self.shape) for d in self.shape))

    @property
    def type(self) -> TensorType:
        return TensorType(self.dtype, self.shape)

    def __str__(self) -> str:
        return str(self.type)


def _check_dim(dim: Any, shape: Any) -> Dim:
    if isinstance(dim, (int, np.integer)) and not isinstance(dim, bool) and dim >= 0:
        return int(dim)
    if isinstance(dim, str) and dim.isidentifier():
        return dim
    raise dsl_error(
        f"shape {list(shape)}",
        f"dim {dim!r} is neither a non-negative int nor a symbol name such as 'batch'",
    )


f32 = DTypeSpec(DType.F32)
f16 = DTypeSpec(DType.F16)
f64 = DTypeSpec(DType.F64)
i32 = DTypeSpec(DType.I32)
i64 = DTypeSpec(DType.I64)
bool_ = DTypeSpec(DType.BOOL)
_NAMES = {DType.F32: "f32", DType.F16: "f16", DType.F64: "f64", DType.I32: "i32",
          DType.I64: "i64", DType.BOOL: "bool_"}


def as_dtype(dtype: Any) -> DType:
    """A DType from a DType, a DTypeSpec, its text (``"f32"``) or a numpy dtype."""
    if isinstance(dtype, DType):
        return dtype
    if isinstance(dtype, DTypeSpec):
        return dtype.dtype
    if isinstance(dtype, str) and dtype in _BY_TEXT:
        return _BY_TEXT[dtype]
    try:
        # np.dtype(None) would read as float64: None is no element type.
        if dtype is not None:
            return DType.from_numpy(np.dtype(dtype))
    except (TypeError, KilnError):
        pass
    raise dsl_error(f"dtype {dtype!r}", "not an element type (use dsl.f32, dsl.i64, ...)")


_BY_TEXT = {t.value: t for t in DType}
