"""The GPU form of a kernel (see compiler/lower/kernel_ir.py): builders and the checker.

``gpu_kernel`` wraps a block body in the one GPU_BLOCK loop, ``phase`` makes a GPU_THREAD loop,
and ``check_gpu_form`` enforces the contract the NVPTX emitter relies on, raising
``GpuFormError`` naming the kernel and what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from ...errors import KilnError
from ..inline import child_stmts, own_exprs, walk
from ..kernel_ir import (
    Assign,
    Block,
    BlockReduce,
    Buffer,
    Const,
    Declare,
    Expr,
    If,
    Kernel,
    Load,
    Loop,
    LoopKind,
    MatmulTile,
    Report,
    Stmt,
    Store,
    Var,
    operands,
)
from ..ops.common import idx

MAX_THREADS = 1024
MAX_GRID = 2**31 - 1
BLOCK_VAR = Var("gpu_b")
THREAD_VAR = Var("gpu_t")


class GpuFormError(KilnError):
    """A kernel is not in the GPU form the CUDA backend needs."""


def phase(threads: int, body: Stmt | list[Stmt]) -> Loop:
    """A phase: thread ``THREAD_VAR`` of ``threads`` runs ``body``."""
    stmt = Block(tuple(body)) if isinstance(body, list) else body
    return Loop(THREAD_VAR, idx(threads), stmt, LoopKind.GPU_THREAD)


def grid_loop(grid: int, body: Stmt | list[Stmt]) -> Loop:
    """The GPU_BLOCK loop: each of ``grid`` blocks (``BLOCK_VAR``) runs ``body``."""
    stmt = Block(tuple(body)) if isinstance(body, list) else body
    return Loop(BLOCK_VAR, idx(grid), stmt, LoopKind.GPU_BLOCK)


def gpu_kernel(base: Kernel, grid: int, body: Stmt | list[Stmt], *,
               name: str | None = None) -> Kernel:
    """``base`` (its parameters and source) with ``body`` run by each of ``grid`` blocks."""
    return replace(base, name=name or base.name, body=grid_loop(grid, body))


def _loads(expr: Expr) -> Iterator[Load]:
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Load):
            yield node
        stack.extend(operands(node))


class _Checker:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.threads: int | None = None
        self.shared = {b.name for b in kernel.shared}
        self.local = {b.name: b for b in kernel.thread_local}

    def fail(self, message: str) -> GpuFormError:
        return GpuFormError(f"kernel {self.kernel.name} is not in GPU form: {message}")

    def check(self) -> tuple[int, int]:
        body = self.kernel.body
        if not (isinstance(body, Loop) and body.kind is LoopKind.GPU_BLOCK):
            raise self.fail("the body must be one GPU_BLOCK loop")
        if not isinstance(body.extent, Const) or not 1 <= int(body.extent.value) <= MAX_GRID:
            raise self.fail(f"the grid must be a constant in 1..{MAX_GRID}")
        names = [b.name for b in (*self.kernel.params, *self.kernel.shared,
                                  *self.kernel.thread_local)]
        if len(set(names)) != len(names):
            raise self.fail("a buffer name is used twice among parameters and GPU arrays")
        for buffer in self.kernel.thread_local:
            if not buffer.shape:
                raise self.fail(f"thread-local {buffer.name} needs a leading thread axis")
        self.uniform(body.body)
        if self.threads is None:
            raise self.fail("no GPU_THREAD loop")
        for buffer in self.kernel.thread_local:
            if buffer.shape[0] != self.threads:
                raise self.fail(f"thread-local {buffer.name} has {buffer.shape[0]} rows for a "
                                f"block of {self.threads} threads")
        return int(body.extent.value), self.threads

    def uniform(self, stmt: Stmt) -> None:
        """``stmt`` runs outside any phase."""
        if isinstance(stmt, Loop) and stmt.kind is LoopKind.GPU_THREAD:
            self.phase_loop(stmt)
            return
        if isinstance(stmt, Store | MatmulTile):
            raise self.fail("a uniform statement (outside every GPU_THREAD loop) stores")
        if isinstance(stmt, Loop) and stmt.kind not in (LoopKind.SERIAL, LoopKind.UNROLL):
            raise self.fail(f"a {stmt.kind.value} loop {stmt.var.name} inside the GPU_BLOCK "
                            "loop")
        if isinstance(stmt, BlockReduce):
            local = self.local.get(stmt.source.name)
            if local is None or len(local.shape) != 1:
                raise self.fail(f"block reduction of {stmt.source.name}, not a (threads,) "
                                "thread-local array")
        self.accesses(stmt, None)
        for child in child_stmts(stmt):
            self.uniform(child)

    def phase_loop(self, loop: Loop) -> None:
        if not isinstance(loop.extent, Const):
            raise self.fail("a GPU_THREAD loop's extent must be a constant")
        threads = int(loop.extent.value)
        if not 1 <= threads <= MAX_THREADS:
            raise self.fail(f"{threads} threads per block (1..{MAX_THREADS})")
        if self.threads is not None and threads != self.threads:
            raise self.fail(f"GPU_THREAD loops of {self.threads} and {threads} threads")
        self.threads = threads
        private = {n.var.name for n in walk(loop.body) if isinstance(n, Declare | Loop)}
        for node in walk(loop.body):
            if isinstance(node, Assign) and node.var.name not in private:
                raise self.fail(f"a GPU phase assigns {node.var.name}, a local declared "
                                "outside it (uniform locals are the same for every thread)")
        self.in_phase(loop.body, loop.var)

    def in_phase(self, stmt: Stmt, thread: Var) -> None:
        if isinstance(stmt, Loop) and stmt.kind not in (LoopKind.SERIAL, LoopKind.UNROLL):
            raise self.fail(f"a {stmt.kind.value} loop {stmt.var.name} inside a GPU phase")
        if isinstance(stmt, MatmulTile):
            raise self.fail("a matmul tile (a CPU register schedule) in a GPU kernel")
        if isinstance(stmt, BlockReduce):
            raise self.fail("a block reduction inside a GPU phase")
        if not isinstance(stmt, Store | Block | Loop | If | Declare | Assign | Report):
            raise self.fail(f"unknown statement {type(stmt).__name__}")
        self.accesses(stmt, thread)
        for child in child_stmts(stmt):
            self.in_phase(child, thread)

    def accesses(self, stmt: Stmt, thread: Var | None) -> None:
        """Thread-local accesses are indexed by the phase's thread variable; uniform code
        does not touch thread-local arrays (a BlockReduce reads them)."""
        found: list[tuple[Buffer, tuple[Expr, ...]]] = [
            (load.buffer, load.indices) for e in own_exprs(stmt) for load in _loads(e)]
        if isinstance(stmt, Store):
            found.append((stmt.buffer, stmt.indices))
        for buffer, indices in found:
            if buffer.name not in self.local:
                continue
            first = indices[0] if indices else None
            if thread is None or not (isinstance(first, Var) and first.name == thread.name):
                raise self.fail(f"an access of thread-local {buffer.name} whose first index "
                                "is not the GPU_THREAD loop's variable")


def check_gpu_form(kernel: Kernel) -> tuple[int, int]:
    """Raise ``GpuFormError`` unless ``kernel`` is in GPU form: one top GPU_BLOCK loop with a
    constant grid; phases (GPU_THREAD loops) of one constant block size <= 1024, never nested;
    no stores outside phases; no assignment in a phase to a local declared outside it; no
    parallel or vectorized loops or matmul tiles inside the block; thread-local arrays of
    shape (threads, ...) indexed first by the thread variable; block reductions only uniform,
    of (threads,) thread-local arrays. Returns the launch configuration (grid, threads)."""
    return _Checker(kernel).check()
