"""Lowerings of the reduce ops that work along one axis: ArgMax/ArgMin, Hardmax, Softmax,
LogSoftmax, LpNormalization, CumSum and CumProd (semantics: compiler/reference/kernels/reduce.py).

Each loops over the slices along the axis; per slice, serial passes fold the slice into scalar
locals, and a last pass (vectorized where positions are independent) stores the results.
Softmax / LogSoftmax along the (contiguous) last axis are row kernels instead (rows.py): their
folds run on vector lanes and rows run in parallel blocks. A CumSum/CumProd axis known only at
run time picks among the loop nests of every axis at run time.
"""

from __future__ import annotations

from ...ir.op import Op
from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Binary,
    Buffer,
    Const,
    Declare,
    Expr,
    If,
    Kernel,
    Loop,
    Report,
    Stmt,
    Unary,
    Var,
    as_index,
    block,
    select,
)
from ..registry import LowerContext, lowering
from .common import Extent, const
from .elementwise_scalar import (
    add,
    both,
    divide,
    either,
    exp,
    fabs,
    fmax,
    log,
    lowest,
    negate,
    wide,
)
from .reduce_loops import Position, accumulate, along, at, normalized_axis, over_slices
from .rows import fold_lanes, row_loop, rows_of


def replaces_extreme(x: Expr, best: Expr, largest: bool, last: bool) -> Expr:
    """Whether ``x`` replaces ``best`` in a scan for the largest (or smallest) element in index
    order: the first (or with ``last`` the last) extreme wins, NaN counts as the extreme."""
    if last:
        better: Expr = x >= best if largest else x <= best
    else:
        better = x > best if largest else x < best
    if x.dtype.is_float:
        x_nan, best_nan = Unary("isnan", x), Unary("isnan", best)
        # The first NaN wins over numbers; with ``last``, each later NaN replaces it.
        better = either(both(better, negate(best_nan)), x_nan if last else
                        both(x_nan, negate(best_nan)))
    return better


def arg_extreme(data: Buffer, position: Position, axis: int, largest: bool,
                last: bool) -> tuple[list[Stmt], Var]:
    """Statements finding the index of the first (or ``last``) largest (or smallest) element of
    a slice along ``axis`` (non-empty), as numpy's argmax: NaN counts as the extreme."""
    best, where, k = Var("best", data.dtype), Var("where"), Var("k")
    x = data.load(*at(position, axis, k + 1))
    better = replaces_extreme(x, best, largest, last)
    update = block(Assign(where, select(better, k + 1, where)),
                   Assign(best, select(better, x, best)))
    stmts = [Declare(best, data.load(*at(position, axis, 0))),
             Declare(where, Const(0, DType.I64)),
             Loop(k, as_index(data.shape[axis] - 1), update)]
    return stmts, where


def nonempty(ctx: LowerContext, extent: Extent, body: Stmt, report: bool) -> Stmt:
    """``body`` guarded against a run-time ``extent`` of 0 along the axis (a static one was
    handled already): with ``report``, a Report naming the node instead."""
    if isinstance(extent, int):
        return body
    message = f"{ctx.node.describe()}: the axis is empty at run time (extent 0)"
    return If(extent > 0, body, Report(message) if report else None)


def _axis(ctx: LowerContext) -> int:
    return normalized_axis(ctx, int(ctx.attr("axis")), len(ctx.input(0).shape))


@lowering(Op.ARGMAX, Op.ARGMIN)
def lower_arg_reduce(ctx: LowerContext) -> list[Kernel]:
    data, out = ctx.input(0), ctx.output()
    axis = _axis(ctx)
    if isinstance(data.shape[axis], int) and data.shape[axis] == 0:
        raise ctx.fail(f"cannot take the {ctx.op.value} of an empty axis {axis}")
    keepdims = bool(ctx.attr("keepdims"))

    def slice_body(position: Position) -> Stmt:
        stmts, where = arg_extreme(data, position, axis, ctx.op is Op.ARGMAX,
                                   bool(ctx.attr("select_last_index")))
        index = at(position, axis, 0) if keepdims else [p for p in position if p is not None]
        return block(stmts, out.store(index, where))

    nest = over_slices(data.shape, [axis], slice_body)
    return [ctx.kernel(nonempty(ctx, data.shape[axis], nest, report=True))]


@lowering(Op.HARDMAX)
def lower_hardmax(ctx: LowerContext) -> list[Kernel]:
    """1 at the first maximum of each slice along the axis, 0 elsewhere."""
    data, out = ctx.input(0), ctx.output()
    axis = _axis(ctx)
    if isinstance(data.shape[axis], int) and data.shape[axis] == 0:
        return [ctx.kernel(block())]  # the output is empty

    def slice_body(position: Position) -> Stmt:
        stmts, where = arg_extreme(data, position, axis, largest=True, last=False)
        one, zero = const(1, out.dtype), const(0, out.dtype)
        fill = along("j", data.shape, position,
                     lambda index: out.store(index, select(index[axis].eq(where), one, zero)),
                     vectorize=True)
        return block(stmts, fill)

    nest = over_slices(data.shape, [axis], slice_body)
    return [ctx.kernel(nonempty(ctx, data.shape[axis], nest, report=False))]


@lowering(Op.SOFTMAX, Op.LOG_SOFTMAX)
def lower_softmax(ctx: LowerContext) -> list[Kernel]:
    """exp(x - max) / sum, or (x - max) - log(sum), per slice along the axis; every step
    rounds to the input's type as the reference does (float16 sums accumulate in float32).
    Along the last axis: ``_softmax_rows``."""
    data = ctx.input(0)
    axis = _axis(ctx)
    if axis == len(data.shape) - 1:
        return [ctx.kernel(_softmax_rows(ctx))]
    out = ctx.output()
    dtype = data.dtype
    acc_type = _softmax_acc(dtype)
    shape = data.shape

    def slice_body(position: Position) -> Stmt:
        peak_stmts, peak = accumulate("peak", shape, position, lowest(dtype),
                                      lambda acc, index: fmax(acc, data.load(*index)))
        total = Var("total", acc_type)
        if ctx.op is Op.SOFTMAX:
            # Store exp(x - max) on the way, then scale by the rounded sum.
            e = Var("e", dtype)
            sums = along("s", shape, position, lambda index: block(
                Declare(e, exp(data.load(*index) - peak)),
                out.store(index, e),
                Assign(total, total + e.cast(acc_type))))
            norm = Var("norm", dtype)
            scale = along("w", shape, position,
                          lambda index: out.store(index, divide(out.load(*index), norm)),
                          vectorize=True)
        else:
            sums = along("s", shape, position, lambda index: Assign(
                total, total + exp(data.load(*index) - peak).cast(acc_type)))
            norm = Var("log_total", dtype)
            scale = along("w", shape, position,
                          lambda index: out.store(index, data.load(*index) - peak - norm),
                          vectorize=True)
        rounded = total.cast(dtype)
        return block(peak_stmts, Declare(total, const(0, acc_type)), sums,
                     Declare(norm, rounded if ctx.op is Op.SOFTMAX else log(rounded)), scale)

    return [ctx.kernel(over_slices(shape, [axis], slice_body))]



def _larger(a: Expr, b: Expr) -> Expr:
    """max(a, b) where NaN need not propagate (one vector max, not three operations): a row
    with a NaN gives NaN everywhere anyway, through exp(NaN - peak) in the sum."""
    return select(b > a, b, a)


def _softmax_acc(dtype: DType) -> DType:
    return DType.F32 if dtype is DType.F16 else dtype


def _softmax_rows(ctx: LowerContext) -> Stmt:
    """Softmax / LogSoftmax along the contiguous last axis, one row at a time: a lane fold
    (vectorized) finds the max, a second one sums exp(x - max) (Softmax first stores the exps
    and sums what it stored: a short fold body keeps its lanes in registers), then a
    vectorized pass writes the results. Where the reference's max would be NaN
    (a NaN in the row), the results are NaN all the same: the sum is NaN."""
    data, out = ctx.input(0), ctx.output()
    dtype, shape = data.dtype, data.shape
    zero = const(0, _softmax_acc(dtype))
    length = shape[-1]
    softmax = ctx.op is Op.SOFTMAX
    compute = wide(dtype)
    rows = rows_of(shape[:-1], data.numel * 8)

    def row(coords: list[Expr], slot: Expr) -> Stmt:
        def x(j: list[Expr]) -> Expr:
            return data.load(*coords, *j)

        peak = Var("peak", dtype)
        peak_stmts, peak_value = fold_lanes(ctx, "peak", rows, slot, [length], lowest(dtype),
                                            _larger, x)
        stmts = [*peak_stmts, Declare(peak, peak_value)]
        if softmax:
            # e * (1 / sum), the reciprocal in the compute type: within an ulp of the
            # reference's e / sum, with a multiply per element instead of a division
            scale = Var("scale", compute)
            sum_stmts, total = fold_lanes(ctx, "total", rows, slot, [length], zero, add,
                                          lambda j: out.load(*coords, *j))
            return block(
                stmts,
                row_loop("e", [length], lambda j: out.store([*coords, *j], exp(x(j) - peak))),
                sum_stmts,
                Declare(scale, divide(1, total.cast(dtype).cast(compute))),
                row_loop("w", [length], lambda j: out.store(
                    [*coords, *j], (out.load(*coords, *j).cast(compute) * scale).cast(dtype))))
        log_total = Var("log_total", dtype)
        sum_stmts, total = fold_lanes(ctx, "total", rows, slot, [length], zero, add,
                                      lambda j: exp(x(j) - peak))
        return block(
            stmts, sum_stmts, Declare(log_total, log(total.cast(dtype))),
            row_loop("w", [length], lambda j: out.store([*coords, *j],
                                                        x(j) - peak - log_total)))

    return rows.loops(row)


@lowering(Op.LP_NORMALIZATION)
def lower_lp_normalization(ctx: LowerContext) -> list[Kernel]:
    """x / ||slice||_p along the axis (p = 1 or 2); a zero norm gives zeros."""
    data, out = ctx.input(0), ctx.output()
    acc_type = wide(data.dtype)
    squares = ctx.attr("p") == 2

    def term(index: list[Expr]) -> Expr:
        x = data.load(*index).cast(acc_type)
        return x * x if squares else fabs(x)

    def slice_body(position: Position) -> Stmt:
        stmts, total = accumulate("total", data.shape, position, const(0, acc_type),
                                  lambda acc, index: acc + term(index))
        norm = Var("norm", acc_type)
        scaled = along("w", data.shape, position, lambda index: out.store(index, select(
            norm.eq(0), 0, divide(data.load(*index).cast(acc_type), norm)).cast(out.dtype)),
            vectorize=True)
        return block(stmts, Declare(norm, Unary("sqrt", total) if squares else total), scaled)

    return [ctx.kernel(over_slices(data.shape, [_axis(ctx)], slice_body))]


@lowering(Op.CUMSUM, Op.CUMPROD)
def lower_scan(ctx: LowerContext) -> list[Kernel]:
    """Running sum/product along the axis input (optionally exclusive, reversed). A constant
    axis gives one loop nest; an axis known only at run time selects, at run time, among the
    nests of every axis (a Report when it is out of range)."""
    data = ctx.input(0)
    rank = len(data.shape)
    axis_value = ctx.const(1)
    if axis_value is not None:
        axis = normalized_axis(ctx, int(axis_value.reshape(-1)[0]), rank)
        return [ctx.kernel(_scan_along(ctx, axis))]
    given = Var("scan_axis")
    axis_input = ctx.input(1)
    chosen: Stmt = Report(f"{ctx.node.describe()}: the axis input is out of range for rank "
                          f"{rank}")
    for axis in reversed(range(rank)):
        chosen = If(Binary("or", given.eq(axis), given.eq(axis - rank)), _scan_along(ctx, axis),
                    chosen)
    read = Declare(given, axis_input.load(*([0] * len(axis_input.shape))).cast(DType.I64))
    return [ctx.kernel(block(read, chosen))]


def _scan_along(ctx: LowerContext, axis: int) -> Stmt:
    """The scan along ``axis``: a loop nest over the slices, a serial loop along each."""
    data, out = ctx.input(0), ctx.output()
    acc_type = wide(data.dtype)
    extent = data.shape[axis]
    product = ctx.op is Op.CUMPROD

    def slice_body(position: Position) -> Stmt:
        acc, k = Var("acc", acc_type), Var("k")
        j = (extent - 1) - k if ctx.attr("reverse") else k
        x = data.load(*at(position, axis, j)).cast(acc_type)
        update = Assign(acc, acc * x if product else acc + x)
        store = out.store(at(position, axis, j), acc.cast(out.dtype))
        body = block(store, update) if ctx.attr("exclusive") else block(update, store)
        return block(Declare(acc, const(1 if product else 0, acc_type)),
                     Loop(k, as_index(extent), body))

    return over_slices(data.shape, [axis], slice_body)
