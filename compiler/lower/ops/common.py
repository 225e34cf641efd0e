"""Helpers shared by every family's lowerings: constants, index arithmetic, broadcasting, loop
nests over a shape, and the work threshold for parallel loops.

Extents may be run-time expressions (kernel_ir's ``DIMS``). Work estimates that choose parallel
loops count such an extent as ``RUNTIME_EXTENT_GUESS`` (``work_estimate``): a run-time batch or
sequence axis is usually long, and a parallel loop that turns out to have one iteration runs
inline in the runtime (no thread hand-off), so guessing large costs little when wrong.
Broadcasting against a run-time extent that is not the output's own extent reads index
``select(extent == 1, 0, i)`` and checks at run time that the extents broadcast
(``broadcast_checks``), never reading out of bounds when they do not."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Binary,
    Block,
    Buffer,
    Const,
    Declare,
    Expr,
    If,
    Loop,
    LoopKind,
    Report,
    Stmt,
    Var,
    as_index,
    extent_mul,
    loop_nest,
    select,
)

# Below this many element operations a parallel loop costs more than it saves.
PARALLEL_WORK = 1 << 15

# What a run-time extent counts as in work estimates (see the module docstring).
RUNTIME_EXTENT_GUESS = 64

Extent = int | Expr


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


def same_extent(a: Extent, b: Extent) -> bool:
    """Whether two extents are known to be equal at compile time (equal ints, or one run-time
    expression: the lowering gives one object per symbolic extent)."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return a is b


def product(extents: Sequence[Extent]) -> Extent:
    """The product of static or run-time extents (an int when all are static)."""
    total: Extent = 1
    for extent in extents:
        total = extent_mul(total, extent)
    return total


def work_estimate(work: Extent) -> int:
    """``work`` (a count of operations) with each run-time extent in it counted as
    RUNTIME_EXTENT_GUESS."""
    if isinstance(work, int):
        return work
    if isinstance(work, Const):
        return int(work.value)
    if isinstance(work, Binary) and work.op in ("add", "mul", "div", "min", "max"):
        a, b = work_estimate(work.a), work_estimate(work.b)
        return {"add": a + b, "mul": a * b, "div": a // max(b, 1), "min": min(a, b),
                "max": max(a, b)}[work.op]
    return RUNTIME_EXTENT_GUESS


def broadcast_index(out_vars: Sequence[Expr], source: Buffer,
                    out_shape: Sequence[Extent] | None = None) -> list[Expr]:
    """Indices into ``source`` for the output position ``out_vars`` under numpy broadcasting:
    trailing axes align, an axis of extent 1 is read at 0. Given the output's ``out_shape``, a
    run-time extent of ``source`` that is not the output's own is read at
    ``select(extent == 1, 0, i)`` (guard the loads with ``broadcast_checks``); without it a
    run-time extent is taken as the output's."""
    offset = len(out_vars) - len(source.shape)
    indices: list[Expr] = []
    for axis, extent in enumerate(source.shape):
        index = out_vars[offset + axis]
        if isinstance(extent, int):
            indices.append(Const(0, DType.I64) if extent == 1 else index)
        elif out_shape is None or same_extent(extent, out_shape[offset + axis]):
            indices.append(index)
        else:
            indices.append(select(extent.eq(1), 0, index))
    return indices


# A run-time condition and the message reported when it fails.
Check = tuple[Expr, str]


def broadcast_conditions(out_shape: Sequence[Extent], sources: Sequence[Sequence[Extent]],
                         what: str) -> list[Check]:
    """The run-time checks that every run-time extent of the ``sources`` shapes that is not the
    output's own is 1 or the output's extent (numpy broadcasting), naming ``what`` (the node),
    the input and the axis. Static extents were checked by the type rules."""
    checks: list[Check] = []
    for number, shape in enumerate(sources):
        offset = len(out_shape) - len(shape)
        for axis, extent in enumerate(shape):
            target = out_shape[offset + axis]
            if isinstance(extent, int) or same_extent(extent, target):
                continue
            checks.append((Binary("or", extent.eq(1), extent.eq(target)),
                           f"{what}: input {number} axis {axis} has a run-time extent that is "
                           "neither 1 nor the output's extent on that axis (the shapes do not "
                           "broadcast)"))
    return checks


def checked(checks: Sequence[Check], body: Stmt) -> Stmt:
    """``body`` run only when every check holds; each failing one Reports its message (so the
    body never reads out of bounds on shapes that do not broadcast)."""
    if not checks:
        return body
    every = checks[0][0]
    for cond, _ in checks[1:]:
        every = Binary("and", every, cond)
    reports = [If(cond, Block(()), Report(message)) for cond, message in checks]
    return Block((*reports, If(every, body)))


def broadcast_checks(out_shape: Sequence[Extent], sources: Sequence[Buffer | None],
                     body: Stmt, what: str) -> Stmt:
    """``body`` guarded by the broadcast checks of ``sources`` against ``out_shape``."""
    shapes = [() if b is None else b.shape for b in sources]
    return checked(broadcast_conditions(out_shape, shapes, what), body)


def broadcast_extent(extents: Sequence[Extent], what: str, name: str
                     ) -> tuple[list[Stmt], Var]:
    """Statements declaring the local ``name``, the numpy broadcast of ``extents`` (each 1 or
    the common extent), with a Report naming ``what`` when two differ and neither is 1."""
    value = Var(name)
    first, *rest = [as_index(e) for e in extents]
    stmts: list[Stmt] = [Declare(value, first)]
    for extent in rest:
        clash = Binary("and", Binary("and", extent.ne(1), value.ne(1)), extent.ne(value))
        stmts.append(If(clash, Report(f"{what}: the inputs' run-time shapes do not broadcast "
                                      "together (an extent is neither 1 nor the others')")))
        stmts.append(Assign(value, select(value.eq(1), extent, value)))
    return stmts, value


def over(
    shape: Sequence[Extent],
    make_body: Callable[[list[Var]], Stmt],
    prefix: str = "i",
    parallel_outer: bool = False,
) -> Stmt:
    """A loop nest over every position of ``shape`` (the outermost loop parallel if asked)."""
    nest = loop_nest([f"{prefix}{axis}" for axis in range(len(shape))], shape, make_body)
    if parallel_outer and isinstance(nest, Loop):
        nest = replace(nest, kind=LoopKind.PARALLEL)
    return nest
