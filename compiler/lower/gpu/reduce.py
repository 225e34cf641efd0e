"""GPU schedules of the reductions: Reduce* and ArgMax/ArgMin.

Rows (compiler/lower/gpu/rows.py) are the positions of the kept axes; a row's elements are the
positions of the reduced axes. Long rows (``LONG_ROW`` elements or more, or at least a warp's
worth when there are few rows) get one block each (``RowBlock``: strided per-thread folds and
a ``BlockReduce``); short rows get one thread each (a serial fold, flat over the rows). The
folds, accumulator types and final maps are the CPU lowering's (compiler/lower/ops/reduce.py),
so the results follow the reference kernels; ReduceProd has no block reduction and always runs
one thread per row. ArgMax/ArgMin in a block: each thread finds its first (or last) extreme, a
max (min) across the block gives the extreme, a min (max) of the indices of the threads that
hold it gives the answer (NaN counts as the extreme, as in numpy).
"""

from __future__ import annotations

from ...ir.op import Op
from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Block,
    BlockReduce,
    Buffer,
    Const,
    Declare,
    Expr,
    Kernel,
    Loop,
    Stmt,
    Unary,
    Var,
    select,
)
from ..ops.common import idx
from ..ops.elementwise_scalar import (
    both,
    either,
    exp,
    highest,
    is_finite,
    log,
    lowest,
    wide,
)
from ..ops.reduce import REDUCE, reduced_axes
from ..ops.reduce_axis import replaces_extreme
from ..ops.reduce_loops import normalized_axis
from ..registry import LowerContext
from .bind import flat_body
from .form import THREAD_VAR, phase
from .rows import RowBlock, Rows

LONG_ROW = 256
FEW_ROWS = 1024
# the Reduce* combines that are block reductions
_BLOCK_OPS = {Op.REDUCE_MAX: "max", Op.REDUCE_MIN: "min"}


def one_block_per_row(rows: Rows) -> bool:
    return rows.length >= LONG_ROW or (rows.length >= 32 and rows.count < FEW_ROWS)


def _out_index(rows: Rows, row: Expr, keepdims: bool) -> list[Expr]:
    """The output index of row ``row`` (reduced axes at 0 when kept)."""
    coords = rows.kept_coords(row)
    if not keepdims:
        return coords
    full: list[Expr] = [idx(0)] * len(rows.shape)
    for axis, coord in zip(rows.kept, coords, strict=True):
        full[axis] = coord
    return full


def reduce_gpu(ctx: LowerContext) -> list[Kernel] | None:
    data, out = ctx.input(0), ctx.output()
    rows = Rows(data.shape, reduced_axes(ctx))
    keepdims = bool(ctx.attr("keepdims"))
    if rows.count == 0:
        return None
    log_sum_exp = ctx.op is Op.REDUCE_LOG_SUM_EXP
    fold = None if log_sum_exp else REDUCE[ctx.op]
    acc_type = wide(data.dtype) if fold is None else fold.accumulator(data.dtype)
    blockable = acc_type is DType.F32 and ctx.op is not Op.REDUCE_PROD
    if blockable and rows.length > 0 and one_block_per_row(rows):
        block = RowBlock(rows, ctx.name)

        def x(at: list[Expr]) -> Expr:
            return data.load(*at).cast(acc_type)

        if fold is None:
            peak_stmts, peak = block.fold("peak", "max", lowest(acc_type), x)
            shift = Var("shift", acc_type)
            sum_stmts, total = block.fold("total", "add", Const(0.0, acc_type),
                                          lambda at: exp(x(at) - shift))
            stmts = [*peak_stmts, Declare(shift, select(is_finite(peak), peak, 0.0)),
                     *sum_stmts]
            value: Expr = log(total) + shift
        else:
            op = _BLOCK_OPS.get(ctx.op, "add")
            stmts, total = block.fold("acc", op, fold.init(acc_type), lambda at: fold.term(x(at)))
            value = total if fold.final is None else fold.final(total, rows.length)
        store = out.store(_out_index(rows, block.row, keepdims), value.cast(out.dtype))
        return [block.kernel(ctx, [*stmts, block.single([store])])]
    if fold is None:
        return None  # LogSumExp of short rows: the CPU lowering, bound generically

    def per_row(row: Expr) -> Stmt:
        acc, element = Var("acc", acc_type), Var("gpu_l")
        step = Assign(acc, fold.step(acc, data.load(*rows.position(row, element)).cast(
            acc_type)))
        value = acc if fold.final is None else fold.final(acc, rows.length)
        return Block((Declare(acc, fold.init(acc_type)),
                      Loop(element, idx(rows.length), step),
                      out.store(_out_index(rows, row, keepdims), value.cast(out.dtype))))

    return [ctx.kernel(flat_body(rows.count, per_row))]


def arg_reduce_gpu(ctx: LowerContext) -> list[Kernel] | None:
    data, out = ctx.input(0), ctx.output()
    axis = normalized_axis(ctx, int(ctx.attr("axis")), len(data.shape))
    rows = Rows(data.shape, (axis,))
    if rows.length == 0 or rows.count == 0 or not one_block_per_row(rows):
        return None  # the CPU lowering (one thread per row once bound) or its error
    largest, last = ctx.op is Op.ARGMAX, bool(ctx.attr("select_last_index"))
    block = RowBlock(rows, ctx.name)
    dtype = data.dtype
    best, where = Var("best", dtype), Var("where")
    neutral = lowest(dtype) if largest else highest(dtype)

    def scan(at: list[Expr]) -> Stmt:
        x = data.load(*at)
        better = replaces_extreme(x, best, largest, last)
        element = at[axis]
        # a thread's first element always replaces the neutral start
        better = either(better, where < 0)
        return Block((Assign(where, select(better, element, where)),
                      Assign(best, select(better, x, best))))

    values = Buffer(f"{ctx.name}_best", dtype, (block.threads,))
    found = Buffer(f"{ctx.name}_where", DType.I64, (block.threads,))
    block.arrays += [values, found]
    peak, winner = Var("peak", dtype), Var("winner")
    missing = -1 if last else rows.length
    holds: Expr = where >= 0
    if dtype.is_float:
        holds = both(holds, either(best.eq(peak), both(Unary("isnan", best),
                                                       Unary("isnan", peak))))
    else:
        holds = both(holds, best.eq(peak))
    th = THREAD_VAR
    stmts: list[Stmt] = [
        phase(block.threads, [
            Declare(best, neutral), Declare(where, Const(-1, DType.I64)),
            block.strided(scan, "a"),
            values.store([th], best), found.store([th], where)]),
        Declare(peak, neutral),
        BlockReduce(values, "max" if largest else "min", peak),
        phase(block.threads, [
            Declare(best, values.load(th)), Declare(where, found.load(th)),
            found.store([th], select(holds, where, Const(missing, DType.I64)))]),
        Declare(winner, Const(missing, DType.I64)),
        BlockReduce(found, "max" if last else "min", winner),
    ]
    keepdims = bool(ctx.attr("keepdims"))
    stmts.append(block.single([out.store(_out_index(rows, block.row, keepdims), winner)]))
    return [block.kernel(ctx, stmts)]

