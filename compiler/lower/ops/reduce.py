"""Lowerings of the reduce ops: Reduce*, ArgMax/ArgMin, Softmax/LogSoftmax/Hardmax,
CumSum/CumProd and LpNormalization.

All share one shape: a (parallel) loop nest over the slices (the positions of the axes that are
not reduced), and per slice serial loops over the reduced axes that fold the slice into scalar
locals (``Declare``/``Assign``), then store results. Two schedules vectorize: a reduction that
keeps the last axis accumulates whole rows along it (``_reduce_rows``), one that reduces it
folds each slice on vector lanes (``_reduce_lanes``, rows.py). Semantics follow the reference
kernels (compiler/reference/kernels/reduce.py): float16/bfloat16 accumulate in float32 and round
once (Softmax/LogSoftmax round every step in the input's type, accumulating float16 sums in
float32 and bfloat16 sums in bfloat16, as numpy does), integers in their own type (means in
float64), and empty reductions give the ONNX identities.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...ir.op import Op
from ...ir.types import DType
from ..kernel_ir import (
    Buffer,
    Const,
    Declare,
    Expr,
    Kernel,
    Loop,
    LoopKind,
    Stmt,
    Unary,
    Var,
    block,
    select,
)
from ..registry import LowerContext, lowering
from .common import const, idx
from .elementwise_scalar import (
    add,
    divide,
    exp,
    fabs,
    fmax,
    fmin,
    highest,
    is_finite,
    log,
    lowest,
    wide,
)
from .reduce_loops import Position, accumulate, along, normalized_axis, over_slices
from .rows import fold_lanes, rows_of


@dataclass(frozen=True)
class Fold:
    """A Reduce* op: accumulator type from the data type, identity, the term each element
    contributes, how two partial results combine (associative, so lane partials may be
    combined in any grouping), final map."""

    init: Callable[[DType], Expr]
    combine: Callable[[Expr, Expr], Expr]
    term: Callable[[Expr], Expr] = lambda x: x
    final: Callable[[Expr, int], Expr] | None = None
    accumulator: Callable[[DType], DType] = wide

    def step(self, acc: Expr, x: Expr) -> Expr:
        return self.combine(acc, self.term(x))


def _sqrt(acc: Expr, count: int) -> Expr:
    # Integer L2 norms are the float64 root of the integer sum, truncated at the store.
    return Unary("sqrt", acc if acc.dtype.is_float else acc.cast(DType.F64))


def _zero(dtype: DType) -> Expr:
    return const(0, dtype)



def _square(x: Expr) -> Expr:
    return x * x


REDUCE: dict[Op, Fold] = {
    Op.REDUCE_SUM: Fold(_zero, add),
    Op.REDUCE_SUM_SQUARE: Fold(_zero, add, _square),
    Op.REDUCE_L1: Fold(_zero, add, fabs),
    Op.REDUCE_L2: Fold(_zero, add, _square, _sqrt),
    Op.REDUCE_LOG_SUM: Fold(_zero, add, final=lambda acc, count: log(acc)),
    # The empty mean is 0/0 = NaN; integer means are float64 sums, truncated at the store.
    Op.REDUCE_MEAN: Fold(_zero, add, final=lambda acc, count: divide(acc, count),
                         accumulator=lambda dtype: wide(dtype) if dtype.is_float else DType.F64),
    Op.REDUCE_PROD: Fold(lambda dtype: const(1, dtype), lambda acc, x: acc * x),
    Op.REDUCE_MAX: Fold(lowest, fmax),
    Op.REDUCE_MIN: Fold(highest, fmin),
}


def reduced_axes(ctx: LowerContext) -> tuple[int, ...]:
    """The axes a Reduce* node reduces over, from its constant axes input.

    A run-time axes input is accepted only where the static output shape settles the result:
    an empty axes input, a rank-0 output (every axis reduced), or data whose every extent is 1
    (reducing any subset of its axes gives the same values)."""
    data, rank = ctx.input(0), len(ctx.input(0).shape)
    axes = ctx.const(1) if ctx.has_input(1) else None
    if ctx.has_input(1) and axes is None and ctx.input(1).numel != 0:
        if (not ctx.attr("keepdims") and ctx.output().shape == ()) or all(
                d == 1 for d in data.shape):
            return tuple(range(rank))
        raise ctx.fail(
            "the axes input is not a compile-time constant; compiled code needs the reduced "
            "axes at build time (make axes a constant or an initializer)"
        )
    if axes is None or axes.size == 0:
        return () if ctx.attr("noop_with_empty_axes") else tuple(range(rank))
    chosen = tuple(sorted({normalized_axis(ctx, int(a), rank) for a in axes.reshape(-1)}))
    if len(chosen) != axes.size:
        raise ctx.fail(f"repeated entries in axes {axes.reshape(-1).tolist()}")
    return chosen


def _output_index(position: Position, axes: Sequence[int], keepdims: bool) -> list[Expr | int]:
    if keepdims:
        return [0 if p is None else p for p in position]
    return [p for p in position if p is not None]


@lowering(*REDUCE, Op.REDUCE_LOG_SUM_EXP)
def lower_reduce(ctx: LowerContext) -> list[Kernel]:
    """Per output position: fold the reduced axes into an accumulator, store its final map."""
    data, out = ctx.input(0), ctx.output()
    axes = reduced_axes(ctx)
    keepdims = bool(ctx.attr("keepdims"))
    count = 1
    for axis in axes:
        count *= data.shape[axis]
    last = len(data.shape) - 1
    if data.shape and last not in axes and data.shape[-1] > 1 and (
            ctx.op is not Op.REDUCE_LOG_SUM_EXP):
        return [ctx.kernel(_reduce_rows(ctx, REDUCE[ctx.op], axes, keepdims, count))]
    if data.shape and last in axes and count > 0:
        return [ctx.kernel(_reduce_lanes(ctx, axes, keepdims, count))]

    def slice_body(position: Position) -> Stmt:
        if ctx.op is Op.REDUCE_LOG_SUM_EXP:
            stmts, value = _log_sum_exp(data.shape, position, data)
        else:
            fold = REDUCE[ctx.op]
            acc_type = fold.accumulator(data.dtype)
            stmts, acc = accumulate(
                "acc", data.shape, position, fold.init(acc_type),
                lambda acc, index: fold.step(acc, data.load(*index).cast(acc_type)))
            value = acc if fold.final is None else fold.final(acc, count)
        return block(stmts, out.store(_output_index(position, axes, keepdims),
                                      value.cast(out.dtype)))

    return [ctx.kernel(over_slices(data.shape, axes, slice_body))]


def _reduce_lanes(ctx: LowerContext, axes: Sequence[int], keepdims: bool, count: int) -> Stmt:
    """A reduction over axes that include the contiguous last one: per output position (a row
    of the row loop), lane folds along the reduced axes (rows.py), vectorized."""
    data, out = ctx.input(0), ctx.output()
    shape = data.shape
    kept = [a for a in range(len(shape)) if a not in axes]
    rows = rows_of([shape[a] for a in kept], data.numel * 2)

    def full_index(kv: list[Expr], rv: list[Expr]) -> list[Expr]:
        index: list[Expr] = [idx(0)] * len(shape)
        for axis, var in zip([*kept, *axes], [*kv, *rv], strict=True):
            index[axis] = var
        return index

    def row(kv: list[Expr], slot: Expr) -> Stmt:
        position: list[Expr | None] = [None] * len(shape)
        for axis, var in zip(kept, kv, strict=True):
            position[axis] = var

        def fold(hint: str, init: Expr, combine: Callable[[Expr, Expr], Expr],
                 term: Callable[[Expr], Expr]) -> tuple[list[Stmt], Expr]:
            return fold_lanes(ctx, hint, rows, slot, [shape[a] for a in axes], init, combine,
                              lambda rv: term(data.load(*full_index(kv, rv))))

        if ctx.op is Op.REDUCE_LOG_SUM_EXP:
            acc_type = wide(data.dtype)
            peak_stmts, peak = fold("peak", lowest(acc_type), fmax, lambda x: x.cast(acc_type))
            shift = Var("shift", acc_type)
            sum_stmts, total = fold("total", const(0, acc_type), add,
                                    lambda x: exp(x.cast(acc_type) - shift))
            stmts = [*peak_stmts, Declare(shift, select(is_finite(peak), peak, 0)), *sum_stmts]
            value: Expr = log(total) + shift
        else:
            spec = REDUCE[ctx.op]
            acc_type = spec.accumulator(data.dtype)
            stmts, acc = fold("acc", spec.init(acc_type), spec.combine,
                              lambda x: spec.term(x.cast(acc_type)))
            value = acc if spec.final is None else spec.final(acc, count)
        return block(stmts, out.store(_output_index(position, axes, keepdims),
                                      value.cast(out.dtype)))

    return rows.loops(row)


def _reduce_rows(ctx: LowerContext, fold: Fold, axes: Sequence[int], keepdims: bool,
                 count: int) -> Stmt:
    """A Reduce* that keeps the last axis: whole rows along it are accumulated at once, so the
    innermost loop is contiguous with independent positions (vectorized). The accumulator is
    the output itself unless the fold changes type or has a final map (then scratch)."""
    data, out = ctx.input(0), ctx.output()
    last = len(data.shape) - 1
    acc_type = fold.accumulator(data.dtype)
    in_place = fold.final is None and acc_type == out.dtype
    acc = out if in_place else ctx.scratch(
        "acc", acc_type, [n for a, n in enumerate(data.shape) if a not in axes])
    j = Var("j")

    def acc_index(row: Position) -> list[Expr | int]:
        return _output_index(row, axes, keepdims) if in_place else [
            p for p in row if p is not None]

    def row_loop(body: Stmt) -> Loop:
        return Loop(j, Const(data.shape[last], DType.I64), body, LoopKind.VECTORIZE)

    def outer_body(position: Position) -> Stmt:
        row = [j if a == last else p for a, p in enumerate(position)]
        stmts = [
            row_loop(acc.store(acc_index(row), fold.init(acc_type))),
            along("r", data.shape, row, lambda index: row_loop(acc.store(acc_index(row), (
                fold.step(acc.load(*acc_index(row)), data.load(*index).cast(acc_type)))))),
        ]
        if not in_place:
            value = acc.load(*acc_index(row))
            final = value if fold.final is None else fold.final(value, count)
            stmts.append(row_loop(out.store(_output_index(row, axes, keepdims),
                                            final.cast(out.dtype))))
        return block(stmts)

    return over_slices(data.shape, [*axes, last], outer_body)


def _log_sum_exp(shape: Sequence[int], position: Position, data: Buffer
                 ) -> tuple[list[Stmt], Expr]:
    """log(sum(exp(x - peak))) + peak, shifting only by a finite peak (an infinite one would
    give inf - inf)."""
    acc_type = wide(data.dtype)
    peak_stmts, peak = accumulate("peak", shape, position, lowest(acc_type),
                                  lambda acc, index: fmax(acc, data.load(*index).cast(acc_type)))
    shift = Var("shift", acc_type)
    sum_stmts, total = accumulate(
        "total", shape, position, const(0, acc_type),
        lambda acc, index: acc + exp(data.load(*index).cast(acc_type) - shift))
    stmts = [*peak_stmts, Declare(shift, select(is_finite(peak), peak, 0)), *sum_stmts]
    return stmts, log(total) + shift


from . import reduce_axis  # noqa: E402,F401  (registers the lowerings along one axis)
