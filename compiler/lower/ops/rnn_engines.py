"""The engines of the recurrent lowerings (compiler/lower/ops/rnn.py): how RNN, GRU and LSTM
compute their two matrix products, and where a step's cell finds the gate terms.

- ``TiledRecurrence`` (f32, constant W and R, constant or no B): both products are tiled like
  MatMul (``packed_product`` of compiler/lower/ops/nn_matmul.py) on weights packed at compile
  time. The input projection is one GEMM over every step, direction and gate,
  ``XW[row of X, direction * gates] = X @ W^T + biases``, with R's bias folded in too but for
  GRU's h gate with ``linear_before_reset`` (the reset gate scales it: ``r`` adds it). The
  recurrent product of each step is register tiles of batch rows by gate columns (a GEMV at
  batch 1; at batch 1 it streams R from L2, the recurrence's bound), run for every sequence,
  ended ones too (the update keeps their state).
- ``ScalarRecurrence`` (any other case): scalar loops with the reduction innermost,
  ``XW[direction, step, batch, gates]`` with W's bias, the recurrent product with R's bias,
  skipping ended sequences.

The sequence length and the batch may be known only at run time (run-time loop extents, the
tiled products' rows: steps x batch and batch); the input and hidden sizes must be static.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ...ir.op import Op
from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Buffer,
    Const,
    Declare,
    Expr,
    If,
    Kernel,
    Loop,
    LoopKind,
    Stmt,
    Var,
    as_index,
    binary,
    block,
    extent_mul,
)
from ..registry import LowerContext
from .common import PARALLEL_WORK, Extent, product, work_estimate
from .nn_matmul import packed_product


def unflatten(flat: Expr, extents: Sequence[Extent]) -> list[Expr]:
    """Row-major indices of position ``flat`` in a nest of ``extents``."""
    indices: list[Expr] = []
    for axis in range(len(extents) - 1, -1, -1):
        indices.append(flat % extents[axis] if axis else flat)
        flat = flat // extents[axis]
    return indices[::-1]


def flat_loop(name: str, extents: Sequence[Extent], body: Callable[[list[Expr]], Stmt],
              work_per_item: int) -> Loop:
    """One loop over every position of ``extents`` (parallel when the work is large)."""
    count = product(extents)
    var = Var(name)
    parallel = (not isinstance(count, int) or count > 1) and (
        work_estimate(count) * work_per_item > PARALLEL_WORK)
    return Loop(var, as_index(count), body(unflatten(var, extents)),
                LoopKind.PARALLEL if parallel else LoopKind.SERIAL)


def reduce_sum(name: str, extent: int, init: Expr, term: Callable[[Var], Expr],
               finish: Callable[[Expr], Stmt]) -> Stmt:
    """``acc = init; for k < extent: acc += term(k); finish(acc)``."""
    acc, k = Var(f"{name}_acc", init.dtype), Var(f"{name}_k")
    return block(
        Declare(acc, init),
        Loop(k, Const(extent, DType.I64), Assign(acc, acc + term(k))),
        finish(acc),
    )


class Recurrence:
    """What the driver and the cells share: sizes, attributes, the state buffers. An engine
    (subclass) adds the projection kernel, the recurrent product of a segment of gate columns
    (GRU without ``linear_before_reset`` runs its h gate's apart), and where a step finds its
    gate terms: ``x`` (input projection plus the biases it holds), ``r`` (recurrent term)."""

    def __init__(self, ctx: LowerContext, segments: list[tuple[int, int]]) -> None:
        x, r = ctx.input(0), ctx.input(2)
        ctx.require_static(r, ctx.input(1))
        if not isinstance(x.shape[2], int):
            raise ctx.fail("the input size (X's axis 2) is known only at run time; the lowering "
                           f"of {ctx.op.value} needs it at compile time")
        self.ctx = ctx
        self.layout = int(ctx.attr("layout"))
        self.compute = DType.F64 if x.dtype is DType.F64 else DType.F32
        self.steps, self.batch, self.input_size = (
            x.shape if self.layout == 0 else (x.shape[1], x.shape[0], x.shape[2]))
        self.dirs, self.gated, self.hidden = r.shape
        clip = ctx.attr("clip")
        self.clip = None if clip is None else float(clip)
        self.segments = segments
        self.h = ctx.scratch("h", self.compute, (self.batch, self.hidden))
        self.c = (ctx.scratch("c", self.compute, (self.batch, self.hidden))
                  if ctx.op is Op.LSTM else None)

    def load(self, buffer: Buffer, *indices: Expr | int) -> Expr:
        return buffer.load(*indices).cast(self.compute)

    def clipped(self, x: Expr) -> Expr:
        if self.clip is None:
            return x
        return binary("min", binary("max", x, -self.clip), self.clip)

    def state(self, index: int, d: int, b: Expr, j: Expr) -> Expr:
        """Element (b, j) of initial state input ``index`` of direction ``d`` (0 if absent)."""
        if not self.ctx.has_input(index):
            return Const(0.0, self.compute)
        source = self.ctx.input(index)
        return self.load(source, d, b, j) if self.layout == 0 else self.load(source, b, d, j)

    def length(self, b: Expr) -> Expr:
        """Sequence ``b``'s length, clamped to [0, steps]."""
        if not self.ctx.has_input(4):
            return as_index(self.steps)
        value = self.ctx.input(4).load(b).cast(DType.I64)
        return binary("min", binary("max", value, 0), self.steps)

    def projection(self) -> Kernel:
        raise NotImplementedError

    def product(self, d: int, segment: int, source: Buffer, s: Var) -> Stmt:
        """The ``r`` terms of the gate columns ``segments[segment]`` at step ``s``:
        ``source @ R[d]^T`` for those columns."""
        raise NotImplementedError

    def x(self, d: int, t: Expr, b: Expr, gate: int, j: Expr) -> Expr:
        raise NotImplementedError

    def r(self, d: int, b: Expr, gate: int, j: Expr) -> Expr:
        raise NotImplementedError


class ScalarRecurrence(Recurrence):
    """Scalar loops; W's bias in the projection, R's in the recurrent product."""

    def __init__(self, ctx: LowerContext, segments: list[tuple[int, int]]) -> None:
        super().__init__(ctx, segments)
        self.xw = ctx.scratch("xw", self.compute, (self.dirs, self.steps, self.batch,
                                                   self.gated))
        self.gates = ctx.scratch("gates", self.compute, (self.batch, self.gated))

    def bias(self, d: Expr | int, g: Expr, which: int) -> Expr:
        """W's (``which`` 0) or R's (1) bias of gate column ``g`` (0 without B)."""
        if not self.ctx.has_input(3):
            return Const(0.0, self.compute)
        return self.load(self.ctx.input(3), d, g + which * self.gated)

    def projection(self) -> Kernel:
        """``XW[d, t, b, g] = Wb[d, g] + sum_i X[t, b, i] * W[d, g, i]`` in a parallel loop over
        (d, t, b) with the reduction innermost."""
        x, w = self.ctx.input(0), self.ctx.input(1)

        def body(idx: list[Expr]) -> Stmt:
            d, t, b = idx
            g = Var("proj_g")
            xs = (t, b) if self.layout == 0 else (b, t)
            return Loop(g, Const(self.gated, DType.I64), reduce_sum(
                "proj", self.input_size, self.bias(d, g, 0),
                lambda i: self.load(x, *xs, i) * self.load(w, d, g, i),
                lambda acc: self.xw.store([d, t, b, g], acc),
            ))

        loop = flat_loop("proj_dtb", (self.dirs, self.steps, self.batch), body,
                         self.gated * self.input_size)
        return self.ctx.kernel(loop, outputs=[], scratch=[self.xw])

    def product(self, d: int, segment: int, source: Buffer, s: Var) -> Stmt:
        first, last = self.segments[segment]
        r = self.ctx.input(2)

        def body(idx: list[Expr]) -> Stmt:
            b, g = idx[0], idx[1] + first
            return If(s < self.length(b), reduce_sum(
                f"mm{segment}", self.hidden, self.bias(d, g, 1),
                lambda k: self.load(source, b, k) * self.load(r, d, g, k),
                lambda acc: self.gates.store([b, g], acc),
            ))

        return flat_loop(f"mm{segment}_bg", (self.batch, last - first), body, self.hidden)

    def x(self, d: int, t: Expr, b: Expr, gate: int, j: Expr) -> Expr:
        return self.load(self.xw, d, t, b, j + gate * self.hidden)

    def r(self, d: int, b: Expr, gate: int, j: Expr) -> Expr:
        return self.load(self.gates, b, j + gate * self.hidden)


def tiles(ctx: LowerContext) -> bool:
    """Whether ``TiledRecurrence`` handles this node: f32, constant W and R, B constant or
    absent, nothing empty."""
    x, w, r = ctx.input(0), ctx.input(1), ctx.input(2)
    return (x.dtype is DType.F32 and (not isinstance(x.numel, int) or x.numel > 0)
            and min(w.numel, r.numel) > 0
            and ctx.const(1) is not None and ctx.const(2) is not None
            and (not ctx.has_input(3) or ctx.const(3) is not None))


class TiledRecurrence(Recurrence):
    """Tiled products on weights packed at compile time (see the module docstring)."""

    def __init__(self, ctx: LowerContext, segments: list[tuple[int, int]],
                 lbr: bool) -> None:
        super().__init__(ctx, segments)
        # the gate whose R bias stays out of the projection (GRU's h gate, linear_before_reset)
        self.r_bias_gate = 2 if lbr and ctx.has_input(3) else None
        self.xw = ctx.scratch("xw", DType.F32, (extent_mul(self.steps, self.batch),
                                                self.dirs * self.gated))
        self.gates = [ctx.scratch("gates", DType.F32, (self.batch, last - first))
                      for first, last in segments]

    def projection(self) -> Kernel:
        ctx, x, w = self.ctx, self.ctx.input(0), self.ctx.input(1)
        # [I, dirs * gates]: every direction's W^T side by side
        w_t = np.asarray(ctx.const(1), np.float32).transpose(2, 0, 1).reshape(
            self.input_size, self.dirs * self.gated)
        finish: Callable[[Expr, list[Expr]], Expr] = lambda value, _: value  # noqa: E731
        if ctx.has_input(3):
            biases = np.asarray(ctx.const(3), np.float32).reshape(self.dirs, 2, self.gated)
            folded = biases[:, 0] + biases[:, 1]
            suffix = ""
            if self.r_bias_gate is not None:
                kept = slice(self.r_bias_gate * self.hidden, (self.r_bias_gate + 1)
                             * self.hidden)
                folded[:, kept] = biases[:, 0, kept]
                suffix = f"_without{self.r_bias_gate}"
            bias = ctx.derived_constant(f"{ctx.input(3).name}.rnn_bias{suffix}",
                                        folded.reshape(-1))
            finish = lambda value, index: value + bias.load(index[1])  # noqa: E731
        body = packed_product(ctx, x, extent_mul(self.steps, self.batch), w_t,
                              f"{w.name}.rnn_t",
                              self.xw, finish)
        return ctx.kernel(body, outputs=[], scratch=[self.xw])

    def product(self, d: int, segment: int, source: Buffer, s: Var) -> Stmt:
        first, last = self.segments[segment]
        r_t = np.asarray(self.ctx.const(2), np.float32)[d, first:last].T
        name = f"{self.ctx.input(2).name}.rnn{d}_{first}_{last}_t"
        return packed_product(self.ctx, source, self.batch, r_t, name, self.gates[segment],
                              lambda value, _: value)

    def x(self, d: int, t: Expr, b: Expr, gate: int, j: Expr) -> Expr:
        row = t * self.batch + b if self.layout == 0 else b * self.steps + t
        return self.xw.load(row, j + (d * self.gated + gate * self.hidden))

    def r(self, d: int, b: Expr, gate: int, j: Expr) -> Expr:
        column = gate * self.hidden
        segment, (first, _) = next((i, s) for i, s in enumerate(self.segments)
                                   if s[0] <= column < s[1])
        value: Expr = self.gates[segment].load(b, j + (column - first))
        if gate == self.r_bias_gate:
            value = value + self.load(self.ctx.input(3), d, j + (self.gated + column))
        return value
