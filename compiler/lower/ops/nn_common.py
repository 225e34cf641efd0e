"""Building blocks shared by the nn lowerings: accumulation types, loop nests that skip unit
axes and parallelize large work, affine index expressions, guards and requantization."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Binary,
    Buffer,
    Expr,
    If,
    Loop,
    LoopKind,
    Stmt,
    Unary,
    Var,
    as_index,
)
from ..kernel_ir import unravel as unravel  # one definition, also used by MatmulTile
from .common import PARALLEL_WORK, Extent, affine, const, idx, work_estimate

# Below this many scalar operations a parallel loop costs more than it saves.


def acc_dtype(dtype: DType) -> DType:
    """Where the reference computes a float op: f64 stays f64, narrower floats use f32."""
    return DType.F64 if dtype is DType.F64 else DType.F32






def lowest(dtype: DType) -> float | int:
    """The identity of max over ``dtype`` (-inf for floats)."""
    return -math.inf if dtype.is_float else int(np.iinfo(dtype.numpy).min)




def all_of(conds: Sequence[Expr | None]) -> Expr | None:
    """The conjunction of the present conditions (None when there are none)."""
    found = [c for c in conds if c is not None]
    if not found:
        return None
    result = found[0]
    for cond in found[1:]:
        result = Binary("and", result, cond)
    return result


def guarded(cond: Expr | None, body: Stmt) -> Stmt:
    return body if cond is None else If(cond, body)


def nest(
    extents: Sequence[Extent],
    make_body: Callable[[list[Expr]], Stmt],
    prefix: str,
    work: Extent = 0,
    vectorize_inner: bool = False,
) -> Stmt:
    """Loops over ``extents`` (static unit axes bound to 0 instead of looped); the outermost
    loop is parallel when ``work`` (scalar operations of the whole nest, see
    ``work_estimate``) is large, the innermost is vectorized if asked."""
    variables: list[Expr] = []
    looped: list[tuple[Var, Extent]] = []
    for axis, extent in enumerate(extents):
        if isinstance(extent, int) and extent == 1:
            variables.append(idx(0))
        else:
            var = Var(f"{prefix}{axis}")
            variables.append(var)
            looped.append((var, extent if isinstance(extent, Expr) else int(extent)))
    body = make_body(variables)
    large = work_estimate(work) > PARALLEL_WORK
    for position in reversed(range(len(looped))):
        var, extent = looped[position]
        kind = LoopKind.SERIAL
        if position == 0 and large:
            kind = LoopKind.PARALLEL
        elif position == len(looped) - 1 and vectorize_inner:
            kind = LoopKind.VECTORIZE
        body = Loop(var, as_index(extent), body, kind)
    return body


def add_to(acc: Var, value: Expr) -> Assign:
    return Assign(acc, acc + value)


def ravel(coords: Sequence[Expr], shape: Sequence[Extent]) -> Expr:
    """Row-major flat index of ``coords`` in ``shape``."""
    if all(isinstance(extent, int) for extent in shape):
        strides, step = [], 1
        for extent in reversed(shape):
            strides.append(step)
            step *= extent  # type: ignore[operator]
        return affine(list(zip(coords, reversed(strides), strict=True)))
    flat: Expr = idx(0)
    for coord, stride in zip(coords, Buffer("", DType.I64, tuple(shape)).element_strides,
                             strict=True):
        flat = flat + coord * stride
    return flat


def requantize(value: Expr, zero: Expr, out: DType) -> Expr:
    """round-half-even(value) + zero point, saturated to ``out`` (computed in f64, where the
    rounded value and an 8/16-bit zero point add exactly)."""
    info = np.iinfo(out.numpy)
    shifted = Unary("round", value).cast(DType.F64) + zero.cast(DType.F64)
    clipped = Binary("min", Binary("max", shifted, const(info.min, DType.F64)),
                     const(info.max, DType.F64))
    return clipped.cast(out)


def sqrt(x: Expr) -> Expr:
    return Unary("sqrt", x)
