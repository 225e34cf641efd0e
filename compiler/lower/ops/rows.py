"""Row kernels: loops over the rows of a tensor (the positions of its kept axes) with folds
along each row (its reduced axes, the last one contiguous) that vectorize.

The kernel IR keeps a float fold in order (``acc = acc + x`` over a serial loop), which LLVM
must not reorder, so such a loop runs one element at a time. ``fold_lanes`` reorders it
explicitly: ``lanes`` partial accumulators, lane ``k`` folding the positions ``j`` with
``j % lanes == k`` of the row's last axis, kept in a scratch row the inner loop updates as a
whole (a VECTORIZE loop over the lanes, no dependence between them), then combined pairwise
(lane k with lane k + lanes/2, as a vector reduction does). LLVM keeps the scratch row in
vector registers across the row (the loop-invariant address is promoted, or the stores
forwarded once the row loop is unrolled; keep fold terms short for that: a long term such as
an exp between the loads and stores of the partials defeats the forwarding), so the scratch
is touched once per row. Sums are reordered the way numpy's pairwise sums and onnxruntime's
vector sums reorder them; min / max folds give identical results in any order (NaN
propagates through the kernel IR's min / max).

``rows_of`` runs rows in parallel blocks; each block has its own scratch row (its ``slot``),
so concurrent blocks never share partial sums and the scratch stays small however many rows.

Run-time extents: a run-time number of rows (a batch) splits into at most MAX_BLOCKS parallel
blocks at run time (the scratch has MAX_BLOCKS slots), each row keeping its static vectorized
body; a row whose folded last axis is a run-time extent folds in order (no lanes), and its
independent passes loop over the run-time extent (still VECTORIZE: LLVM handles the trip
count).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...machine import Machine
from ..kernel_ir import (
    Assign,
    Binary,
    Block,
    Declare,
    Expr,
    Loop,
    LoopKind,
    Stmt,
    Var,
    as_index,
    block,
)
from ..registry import LowerContext
from .common import PARALLEL_WORK, Extent, idx, product, work_estimate
from .nn_common import unravel

# Parallel blocks of rows at most: enough to balance any thread count, few scratch rows.
MAX_BLOCKS = 256

# Rows of at least this many vectors fold into two vectors of lanes: two dependency chains
# are worth their extra combine step only when the row is long.
LONG_ROW_VECTORS = 16
Combine = Callable[[Expr, Expr], Expr]


def lane_count(machine: Machine, length: Extent) -> int:
    """Partial accumulators for a fold along ``length`` contiguous elements: two vectors of
    f32 lanes for long rows, one for medium rows, none (1: an in-order fold) for rows shorter
    than two vectors, where the lanes' combine (a few operations per lane, see the module
    docstring) would cost about what it saves, and the in-order chains of independent rows
    overlap anyway."""
    vector = machine.f32_lanes
    if not isinstance(length, int) or vector <= 1 or length < 2 * vector:
        return 1
    return 2 * vector if length >= LONG_ROW_VECTORS * vector else vector


@dataclass(frozen=True)
class Rows:
    """The rows of a tensor (the positions of ``kept``) in ``blocks`` blocks of ``size`` rows;
    blocks run in parallel when there is more than one. ``blocks`` is also the number of
    scratch slots: a row's ``slot`` (its block) differs from that of any row running at the
    same time. With a run-time number of rows and ``parallel``, the blocks are counted at run
    time (at most MAX_BLOCKS, the slots)."""

    kept: tuple[Extent, ...]
    blocks: int
    size: int
    parallel: bool = False

    @property
    def count(self) -> Extent:
        return product(self.kept)

    def loops(self, make: Callable[[list[Expr], Expr], Stmt], prefix: str = "row") -> Stmt:
        """The loops over every row; ``make(coords, slot)`` builds one row's statements."""
        rows = self.count
        r = Var(f"{prefix}_r")
        if not isinstance(rows, int):
            if not self.parallel:
                return Loop(r, rows, make(unravel(r, self.kept), idx(0)))
            b = Var(f"{prefix}_b")
            # ceil(rows / MAX_BLOCKS) rows per block; the last block may be short
            size = Binary("max", (rows + (MAX_BLOCKS - 1)) // MAX_BLOCKS, idx(1))
            inner = Loop(r, Binary("min", size, rows - b * size),
                         make(unravel(b * size + r, self.kept), b))
            return Loop(b, (rows + size - 1) // size, inner, LoopKind.PARALLEL)
        if rows == 0:
            return Block(())
        if self.blocks <= 1:
            body = make(unravel(r, self.kept), idx(0))
            return body if rows == 1 else Loop(r, idx(rows), body)
        b = Var(f"{prefix}_b")
        size = self.size
        # the last block may be short
        extent: Expr = idx(size) if rows % size == 0 else Binary("min", idx(size),
                                                                 rows - b * size)
        inner = Loop(r, extent, make(unravel(b * size + r, self.kept), b))
        return Loop(b, idx(self.blocks), inner, LoopKind.PARALLEL)


def rows_of(kept: Sequence[Extent], work: Extent) -> Rows:
    """The rows of ``kept``, in parallel blocks when ``work`` (scalar operations of the whole
    nest, see ``work_estimate``) is large."""
    rows = product(kept)
    large = work_estimate(work) > PARALLEL_WORK
    if not isinstance(rows, int):
        return Rows(tuple(kept), MAX_BLOCKS if large else 1, 1, large)
    blocks = min(rows, MAX_BLOCKS) if large else 1
    size = -(-rows // max(blocks, 1))
    return Rows(tuple(int(n) for n in kept), -(-rows // size) if rows else 1, max(size, 1))


def fold_lanes(ctx: LowerContext, hint: str, rows: Rows, slot: Expr, extents: Sequence[Extent],
               init: Expr, combine: Combine, term: Callable[[list[Expr]], Expr],
               also: Callable[[list[Expr], Expr], Stmt] | None = None
               ) -> tuple[list[Stmt], Expr]:
    """Statements folding ``term(index)`` (cast to ``init``'s type) over every index of
    ``extents`` (the row's axes; the last one contiguous) with ``combine`` from ``init``, and
    the expression of the result (to be read after the statements). ``also(index, value)``,
    when given, runs at each position with the term's value (e.g. storing it). Long rows fold
    into lane partials in ``rows``' scratch slot ``slot``; short rows fold in order."""
    lanes = lane_count(ctx.machine, extents[-1] if extents else 0)
    value = Var(f"{hint}_v", term([idx(0)] * len(extents)).dtype)

    def visit(index: list[Expr], fold: Callable[[Expr], Stmt]) -> Stmt:
        stmts: list[Stmt] = [Declare(value, term(index))]
        if also is not None:
            stmts.append(also(index, value))
        stmts.append(fold(value.cast(init.dtype)))
        return block(stmts)

    if lanes == 1:
        acc = Var(hint, init.dtype)
        step = _nest(hint, list(extents),
                     lambda index: visit(index, lambda v: Assign(acc, combine(acc, v))))
        return [Declare(acc, init), step], acc
    part = ctx.scratch(hint, init.dtype, [rows.blocks, lanes])
    k, b = Var(f"{hint}_k"), Var(f"{hint}_b")
    full, tail = divmod(extents[-1], lanes)

    def update(prefix: list[Expr], position: Expr, count: int) -> Loop:
        body = visit([*prefix, position],
                     lambda v: part.store([slot, k], combine(part.load(slot, k), v)))
        return Loop(k, idx(count), body, LoopKind.VECTORIZE)

    def along_row(prefix: list[Expr]) -> Stmt:
        stmts: list[Stmt] = []
        if full:
            stmts.append(Loop(b, idx(full), update(prefix, b * lanes + k, lanes)))
        if tail:
            stmts.append(update(prefix, k + full * lanes, tail))
        return block(stmts)

    start = Loop(k, idx(lanes), part.store([slot, k], init), LoopKind.VECTORIZE)
    partials: list[Expr] = [part.load(slot, idx(lane)) for lane in range(lanes)]
    while len(partials) > 1:
        half = len(partials) // 2
        partials = [combine(partials[i], partials[i + half]) for i in range(half)]
    return [start, _nest(f"{hint}_o", list(extents[:-1]), along_row)], partials[0]


def _nest(prefix: str, extents: Sequence[Extent], make: Callable[[list[Expr]], Stmt]) -> Stmt:
    """Serial loops over ``extents`` (unit axes bound to 0)."""
    index: list[Expr] = [idx(0) if _unit(n) else Var(f"{prefix}{a}")
                         for a, n in enumerate(extents)]
    body = make(index)
    for var, n in reversed(list(zip(index, extents, strict=True))):
        if isinstance(var, Var):
            body = Loop(var, as_index(n), body)
    return body


def row_loop(prefix: str, extents: Sequence[Extent], make: Callable[[list[Expr]], Stmt]
             ) -> Stmt:
    """Loops over the row's axes with independent positions (the last one VECTORIZE)."""
    index: list[Expr] = [idx(0) if _unit(n) else Var(f"{prefix}{a}")
                         for a, n in enumerate(extents)]
    body = make(index)
    last = max((a for a, n in enumerate(extents) if not _unit(n)), default=None)
    for axis in reversed(range(len(extents))):
        var = index[axis]
        if isinstance(var, Var):
            kind = LoopKind.VECTORIZE if axis == last else LoopKind.SERIAL
            body = Loop(var, as_index(extents[axis]), body, kind)
    return body


def _unit(extent: Extent) -> bool:
    return isinstance(extent, int) and extent == 1
