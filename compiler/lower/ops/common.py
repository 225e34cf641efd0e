"""Helpers shared by every family's lowerings: constants, index arithmetic, broadcasting, loop
nests over a shape, and the work threshold for parallel loops."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from ...ir.types import DType
from ..kernel_ir import Buffer, Const, Expr, Loop, LoopKind, Stmt, Var, loop_nest

# Below this many element operations a parallel loop costs more than it saves.
PARALLEL_WORK = 1 << 15


def const(value: float | int | bool, dtype: DType) -> Const:
    """A constant of ``dtype`` from a Python number."""
    if dtype is DType.BOOL:
        return Const(bool(value), dtype)
    return Const(int(value) if dtype.is_int else float(value), dtype)


def idx(value: int) -> Const:
    """An index (i64) constant."""
    return Const(int(value), DType.I64)


def affine(terms: Sequence[tuple[Expr, int]], offset: int = 0) -> Expr:
    """sum(expr * coef) + offset, leaving out zero terms and unit factors."""
    result: Expr | None = None
    for expr, coef in terms:
        if coef == 0 or (isinstance(expr, Const) and expr.value == 0):
            continue
        term = expr if coef == 1 else expr * coef
        result = term if result is None else result + term
    if result is None:
        return idx(offset)
    return result + offset if offset else result


def broadcast_index(out_vars: Sequence[Expr], source: Buffer) -> list[Expr]:
    """Indices into ``source`` for the output position ``out_vars`` under numpy broadcasting:
    trailing axes align, an axis of extent 1 is read at 0."""
    offset = len(out_vars) - len(source.shape)
    return [
        Const(0, DType.I64) if extent == 1 else out_vars[offset + axis]
        for axis, extent in enumerate(source.shape)
    ]


def over(
    shape: Sequence[int],
    make_body: Callable[[list[Var]], Stmt],
    prefix: str = "i",
    parallel_outer: bool = False,
) -> Stmt:
    """A loop nest over every position of ``shape`` (the outermost loop parallel if asked)."""
    nest = loop_nest([f"{prefix}{axis}" for axis in range(len(shape))], shape, make_body)
    if parallel_outer and isinstance(nest, Loop):
        nest = replace(nest, kind=LoopKind.PARALLEL)
    return nest
