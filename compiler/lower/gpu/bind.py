"""Binding kernels to GPU blocks and threads without a dedicated schedule.

- ``flat_kernel``: one thread per position of a flat range (``total`` positions), blocks of up
  to ``FLAT_THREADS`` threads, a bounds guard for the last block (elementwise ops and fused
  elementwise groups use it directly).
- ``bind``: any CPU-form kernel (its matmul tiles expanded, every loop made serial). Each
  top-level statement becomes a kernel of its own (kernels run in order, which keeps the
  statements' order; scalar statements storing nothing before the first one that stores are
  repeated by every thread of each). In a statement's perfect loop nest, the outermost loops
  whose iterations are provably independent are flattened onto blocks x threads and the rest
  runs serially in each thread. Independence: every buffer the nest writes is accessed
  (loaded and stored) only at positions that determine the iteration (through index
  functions of the loop variables alone, the same in every access: ``_independent``), and no
  local declared outside the nest is assigned. A statement without such loops (or a kernel
  whose top-level statements share locals) runs on one thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from ...ir.types import DType
from ..inline import walk
from ..kernel_ir import (
    Assign,
    Binary,
    Block,
    Const,
    Declare,
    Expr,
    If,
    Kernel,
    Load,
    Loop,
    LoopKind,
    MatmulTile,
    Stmt,
    Store,
    Var,
    unravel,
)
from ..ops.common import idx
from .form import BLOCK_VAR, MAX_GRID, THREAD_VAR, gpu_kernel, grid_loop, phase

FLAT_THREADS = 256
WARP = 32


def flat_threads(total: int) -> int:
    """Threads per block for ``total`` independent positions: whole warps, at most
    ``FLAT_THREADS``."""
    return max(WARP, min(FLAT_THREADS, -(-total // WARP) * WARP))


def flat_kernel(base: Kernel, total: int, make: Callable[[Expr], Stmt],
                name: str | None = None) -> Kernel:
    """``base`` running ``make(flat)`` for every flat position 0 <= flat < ``total``."""
    return replace(base, name=name or base.name, body=flat_body(total, make))


def flat_body(total: int, make: Callable[[Expr], Stmt]) -> Loop:
    """A GPU body running ``make(flat)`` for every flat position 0 <= flat < ``total``, one
    thread each (blocks beyond ``MAX_GRID`` loop over waves)."""
    threads = flat_threads(total)
    blocks = max(1, -(-total // threads))
    grid = min(blocks, MAX_GRID)
    waves = -(-blocks // grid)
    flat = Var("gpu_flat")
    if waves == 1:
        at: Expr = BLOCK_VAR * threads + THREAD_VAR
        work: Stmt = Block((Declare(flat, at), If(flat < total, make(flat))))
    else:
        wave = Var("gpu_wave")
        at = (wave * grid + BLOCK_VAR) * threads + THREAD_VAR
        work = Loop(wave, idx(waves), Block((Declare(flat, at), If(flat < total, make(flat)))))
    return grid_loop(grid, phase(threads, work))


def serial(stmt: Stmt) -> Stmt:
    """``stmt`` with every loop serial (unrolled loops stay unrolled) and every matmul tile
    replaced by its scalar loop nest."""
    if isinstance(stmt, MatmulTile):
        return serial(stmt.expanded())
    if isinstance(stmt, Block):
        return Block(tuple(serial(s) for s in stmt.body))
    if isinstance(stmt, Loop):
        kind = LoopKind.UNROLL if stmt.kind is LoopKind.UNROLL else LoopKind.SERIAL
        return replace(stmt, body=serial(stmt.body), kind=kind, vector_width=0)
    if isinstance(stmt, If):
        return If(stmt.cond, serial(stmt.then),
                  None if stmt.otherwise is None else serial(stmt.otherwise))
    return stmt


def bind(kernel: Kernel) -> list[Kernel]:
    """``kernel`` in GPU form: one or more kernels, run in order (see the module docstring)."""
    body = serial(kernel.body)
    parts = _top_level(body)
    # leading scalar work (no stores: an index read and checked...) is repeated by every
    # thread of each part that follows
    split = next((i for i, s in enumerate(parts) if _stores(s)), len(parts))
    prelude, rest = parts[:split], parts[split:]
    locals_ = {n.var.name for s in prelude for n in walk(s) if isinstance(n, Declare)}
    read = {n.buffer.name for s in prelude for n in walk(s) if isinstance(n, Load)}
    later = [n for s in rest for n in walk(s)]
    if not rest or any(isinstance(s, Declare | Assign) for s in rest) or any(
            isinstance(n, Assign) and n.var.name in locals_
            or isinstance(n, Store) and n.buffer.name in read for n in later):
        # the statements share locals (or the prelude reads what they write, which repeating
        # it would change): keep them together, on one thread
        return [gpu_kernel(kernel, 1, phase(1, body))]
    if len(rest) == 1:
        return [_bind_statement(kernel, prelude, rest[0], kernel.name)]
    return [_bind_statement(kernel, prelude, s, f"{kernel.name}_p{i}")
            for i, s in enumerate(rest)]


def _top_level(stmt: Stmt) -> list[Stmt]:
    if isinstance(stmt, Block):
        return [s for inner in stmt.body for s in _top_level(inner)]
    return [stmt]


def _stores(stmt: Stmt) -> bool:
    return any(isinstance(n, Store) for n in walk(stmt))


def _bind_statement(kernel: Kernel, prelude: list[Stmt], stmt: Stmt, name: str) -> Kernel:
    nest: list[Loop] = []
    inner = stmt
    while isinstance(inner, Loop) and isinstance(inner.extent, Const):
        nest.append(inner)
        inner = _single(inner.body)
    for depth in range(len(nest), 0, -1):
        chosen = nest[:depth]
        if _independent(chosen, chosen[-1].body):
            return _flattened(kernel, prelude, chosen, name)
    return gpu_kernel(kernel, 1, phase(1, [*prelude, stmt]), name=name)


def _single(stmt: Stmt) -> Stmt:
    """A block of one statement is that statement."""
    while isinstance(stmt, Block) and len(stmt.body) == 1:
        stmt = stmt.body[0]
    return stmt


def _flattened(kernel: Kernel, prelude: list[Stmt], loops: Sequence[Loop], name: str) -> Kernel:
    extents = [int(loop.extent.value) for loop in loops]  # type: ignore[attr-defined]
    total = 1
    for extent in extents:
        total *= extent

    def make(flat: Expr) -> Stmt:
        coords = unravel(flat, extents)
        return Block((*prelude,
                      *(Declare(loop.var, c) for loop, c in zip(loops, coords, strict=True)),
                      loops[-1].body))

    return flat_kernel(kernel, total, make, name)


def _independent(loops: Sequence[Loop], body: Stmt) -> bool:
    """Whether iterations of ``loops`` (around ``body``) touch disjoint locations of every
    buffer ``body`` writes and assign no outer local: every access of such a buffer has axes
    indexed by functions of the loops' variables alone, the same functions in every access,
    that together take a different value at each iteration (evaluated over all of them)."""
    declared = {n.var.name for n in walk(body) if isinstance(n, Declare | Loop)}
    if any(isinstance(n, Assign) and n.var.name not in declared for n in walk(body)):
        return False
    written = {n.buffer.name for n in walk(body) if isinstance(n, Store)}
    extents = [int(loop.extent.value) for loop in loops]  # type: ignore[attr-defined]
    total = int(np.prod(extents))
    if total > MAX_EVALUATED:
        return False
    grid = {loop.var.name: np.arange(extent, dtype=np.int64).reshape(
        [extent if k == axis else 1 for k in range(len(loops))])
        for axis, (loop, extent) in enumerate(zip(loops, extents, strict=True))}
    # buffer -> axis -> the index's values at every iteration
    owned: dict[str, dict[int, np.ndarray]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for node in walk(body):
        if not isinstance(node, Load | Store) or node.buffer.name not in written:
            continue
        name = node.buffer.name
        if shapes.setdefault(name, node.buffer.shape) != node.buffer.shape:
            return False  # one buffer under two shapes: the axes do not compare
        found = {}
        for axis, index_expr in enumerate(node.indices):
            values = _evaluate(index_expr, grid)
            if values is not None:
                found[axis] = np.broadcast_to(values, extents).reshape(-1)
        known = owned.get(name)
        owned[name] = found if known is None else {
            axis: values for axis, values in known.items()
            if axis in found and np.array_equal(values, found[axis])}
    return all(_injective(axes, total) for axes in owned.values())


# loop nests of more iterations are not analysed (their index functions are evaluated)
MAX_EVALUATED = 1 << 22


def _injective(axes: dict[int, np.ndarray], total: int) -> bool:
    if total == 1:
        return True
    if not axes:
        return False
    rows = np.stack(list(axes.values()), axis=1)
    return len(np.unique(rows, axis=0)) == total


_INDEX_OPS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "min": np.minimum,
              "max": np.maximum}


def _evaluate(expr: Expr, grid: dict[str, np.ndarray]) -> np.ndarray | None:
    """``expr`` (i64 index arithmetic of the variables in ``grid`` and constants) at every
    point of the grid; None where it involves anything else."""
    if isinstance(expr, Const):
        return np.array(int(expr.value), dtype=np.int64)
    if isinstance(expr, Var):
        return grid.get(expr.name)
    if not isinstance(expr, Binary) or expr.dtype is not DType.I64:
        return None
    a, b = _evaluate(expr.a, grid), _evaluate(expr.b, grid)
    if a is None or b is None:
        return None
    if expr.op in _INDEX_OPS:
        return _INDEX_OPS[expr.op](a, b)  # type: ignore[no-any-return]
    if expr.op in ("div", "rem") and np.all(b > 0) and np.all(a >= 0):
        return a // b if expr.op == "div" else a % b  # type: ignore[no-any-return]
    return None
