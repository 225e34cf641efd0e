"""Lowerings of Det and (through misc_signal / misc_random) the signal and random ops.

Constant needs no lowering: the graph lowering stores constants as weights.

Det: per matrix (a parallel loop over the batch when large), LU decomposition with partial
pivoting in a scratch copy, in f32 (f64 for f64 input) like the reference; the determinant is
the product of the pivots, negated per row swap. A zero pivot leaves the column unreduced (the
product is 0 already), so no division by zero turns it into NaN.
"""

from __future__ import annotations

from ...ir.op import Op
from ...ir.types import DType
from ..kernel_ir import Assign, Const, Declare, Expr, If, Kernel, Loop, Stmt, Unary, Var, block
from ..registry import LowerContext, lowering
from . import misc_random, misc_signal  # noqa: F401 - registers their lowerings
from .rnn import flat_loop


@lowering(Op.DET)
def lower_det(ctx: LowerContext) -> list[Kernel]:
    x, out = ctx.input(0), ctx.output()
    size = x.shape[-1]
    batch = out.numel
    compute = DType.F64 if x.dtype is DType.F64 else DType.F32
    lu = ctx.scratch("lu", compute, (batch, size, size))

    def matrix(idx: list[Expr]) -> Stmt:
        p = Var("det_b")  # the flat batch index: the variable of the loop below
        i, j, k, r = Var("det_i"), Var("det_j"), Var("det_k"), Var("det_r")
        det, best = Var("det_value", compute), Var("det_best", compute)
        pivot_row, pivot, factor = Var("det_row"), Var("det_pivot", compute), Var("det_f", compute)
        swap = Var("det_swap", compute)
        p_expr: Expr = p
        below = Const(size, DType.I64) - k - 1

        def at(row: Expr, col: Expr) -> Expr:
            return lu.load(p_expr, row, col)

        copy = Loop(i, Const(size, DType.I64), Loop(j, Const(size, DType.I64), lu.store(
            [p, i, j], x.load(*idx, i, j).cast(compute))))
        choose: list[Stmt] = [
            Declare(pivot_row, k), Declare(best, Unary("abs", at(k, k))),
            Loop(r, below, If(Unary("abs", at(k + 1 + r, k)) > best, block(
                Assign(pivot_row, k + 1 + r), Assign(best, Unary("abs", at(k + 1 + r, k)))))),
        ]
        exchange = If(pivot_row.ne(k), block(
            Loop(j, Const(size, DType.I64), block(
                Declare(swap, at(k, j)),
                lu.store([p, k, j], at(pivot_row, j)),
                lu.store([p, pivot_row, j], swap),
            )),
            Assign(det, -det),
        ))
        eliminate = If(pivot.ne(0.0), Loop(r, below, block(
            Declare(factor, at(k + 1 + r, k) / pivot),
            Loop(j, below, lu.store([p, k + 1 + r, k + 1 + j],
                                    at(k + 1 + r, k + 1 + j) - factor * at(k, k + 1 + j))),
        )))
        step = block(choose, exchange, Declare(pivot, at(k, k)), Assign(det, det * pivot),
                     eliminate)
        return block(
            copy, Declare(det, Const(1.0, compute)),
            Loop(k, Const(size, DType.I64), step), out.store(idx, det.cast(out.dtype)),
        )

    return [ctx.kernel(flat_loop("det_b", out.shape, matrix, size * size * size))]

