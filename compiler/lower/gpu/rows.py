"""Rows for the GPU reduction schedules: a tensor seen as ``count`` rows (the positions of the
kept axes) of ``length`` elements (the positions of the reduced axes, in order).

``RowBlock`` is the one-block-per-row schedule: block b owns row b; thread t visits elements
t, t + threads, ... of it. ``fold`` reduces a term over the row (each thread into a register,
then a ``BlockReduce`` across the block) into a uniform local; ``each`` visits every element
(a phase); ``single`` runs statements once (thread 0: a phase)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Binary,
    Block,
    BlockReduce,
    Buffer,
    Declare,
    Expr,
    If,
    Kernel,
    Loop,
    Stmt,
    Var,
    unravel,
)
from ..ops.common import idx
from ..registry import LowerContext
from .bind import WARP
from .form import BLOCK_VAR, THREAD_VAR, grid_loop, phase

ROW_THREADS = 256


@dataclass(frozen=True)
class Rows:
    shape: tuple[int, ...]
    reduced: tuple[int, ...]

    @property
    def kept(self) -> tuple[int, ...]:
        return tuple(a for a in range(len(self.shape)) if a not in self.reduced)

    @property
    def count(self) -> int:
        return math.prod(self.shape[axis] for axis in self.kept)

    @property
    def length(self) -> int:
        return math.prod(self.shape[axis] for axis in self.reduced)

    def kept_coords(self, row: Expr) -> list[Expr]:
        return unravel(row, [self.shape[a] for a in self.kept])

    def position(self, row: Expr, element: Expr) -> list[Expr]:
        """The full index of element ``element`` of row ``row``."""
        full: list[Expr] = [idx(0)] * len(self.shape)
        coords = self.kept_coords(row) + unravel(element, [self.shape[a] for a in self.reduced])
        for axis, coord in zip(self.kept + self.reduced, coords, strict=True):
            full[axis] = coord
        return full


def row_threads(length: int) -> int:
    p = WARP
    while p < min(length, ROW_THREADS):
        p *= 2
    return p


class RowBlock:
    """One block per row of ``rows`` (see the module docstring); ``name`` prefixes its
    thread-local arrays, collected in ``arrays``."""

    def __init__(self, rows: Rows, name: str) -> None:
        self.rows = rows
        self.name = name
        self.threads = row_threads(rows.length)
        self.arrays: list[Buffer] = []
        self.row = BLOCK_VAR

    def position(self, element: Expr) -> list[Expr]:
        return self.rows.position(self.row, element)

    def strided(self, make: Callable[[list[Expr]], Stmt], hint: str) -> Stmt:
        """Thread t's visit of elements t, t + threads, ... (in order)."""
        step, element = Var(f"{hint}_s"), Var(f"{hint}_l")
        rounds = -(-self.rows.length // self.threads)
        body: Stmt = make(self.position(element))
        if self.rows.length % self.threads:
            body = If(element < self.rows.length, body)
        return Loop(step, idx(rounds),
                    Block((Declare(element, step * self.threads + THREAD_VAR), body)))

    def fold(self, hint: str, op: str, init: Expr,
             term: Callable[[list[Expr]], Expr]) -> tuple[list[Stmt], Var]:
        """Statements reducing ``term`` over the row by ``op`` from ``init`` (the identity)
        into a uniform local, and that local."""
        dtype: DType = init.dtype
        partial = Buffer(f"{self.name}_{hint}", dtype, (self.threads,))
        self.arrays.append(partial)
        acc, total = Var(f"{hint}_acc", dtype), Var(hint, dtype)
        work = phase(self.threads, [
            Declare(acc, init),
            # max and min propagate NaN, as the block reduction does
            self.strided(lambda at: Assign(acc, Binary(op, acc, term(at))), hint),
            partial.store([THREAD_VAR], acc),
        ])
        return [work, Declare(total, init), BlockReduce(partial, op, total)], total

    def each(self, make: Callable[[list[Expr]], Stmt], hint: str = "w") -> Stmt:
        return phase(self.threads, self.strided(make, hint))

    def single(self, stmts: Sequence[Stmt]) -> Stmt:
        return phase(self.threads, If(THREAD_VAR.eq(0), Block(tuple(stmts))))

    def kernel(self, ctx: LowerContext, stmts: Sequence[Stmt]) -> Kernel:
        """The node's kernel running ``stmts`` in each row's block."""
        return replace(ctx.kernel(grid_loop(self.rows.count, list(stmts))),
                       thread_local=tuple(self.arrays))
