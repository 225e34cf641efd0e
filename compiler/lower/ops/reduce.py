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

Run-time extents keep these schedules (run-time loops around the static row bodies); a Reduce*
whose axes input is a run-time value gets a shape kernel and a generic fold
(``_reduce_runtime_axes``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...ir.op import Op
from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Binary,
    Buffer,
    Declare,
    Expr,
    If,
    Kernel,
    Loop,
    LoopKind,
    Report,
    Stmt,
    Unary,
    Var,
    as_index,
    block,
    define_dim,
    flat_view,
    select,
    unravel,
)
from ..registry import LowerContext, lowering
from .common import PARALLEL_WORK, Extent, const, idx, product, work_estimate
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
    negate,
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
    final: Callable[[Expr, Extent], Expr] | None = None
    accumulator: Callable[[DType], DType] = wide

    def step(self, acc: Expr, x: Expr) -> Expr:
        return self.combine(acc, self.term(x))


def _sqrt(acc: Expr, count: Extent) -> Expr:
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
    Op.REDUCE_MEAN: Fold(_zero, add, final=lambda acc, count: divide(
        acc, count if isinstance(count, int) else count.cast(acc.dtype)),
                         accumulator=lambda dtype: wide(dtype) if dtype.is_float else DType.F64),
    Op.REDUCE_PROD: Fold(lambda dtype: const(1, dtype), lambda acc, x: acc * x),
    Op.REDUCE_MAX: Fold(lowest, fmax),
    Op.REDUCE_MIN: Fold(highest, fmin),
}


def reduced_axes(ctx: LowerContext) -> tuple[int, ...] | None:
    """The axes a Reduce* node reduces over, from its constant axes input; None when they are
    known only at run time (``_reduce_runtime_axes``).

    A run-time axes input whose values cannot matter is settled here: an empty axes input, a
    rank-0 output (every axis reduced), or data whose every extent is 1 (reducing any subset of
    its axes gives the same values)."""
    data, rank = ctx.input(0), len(ctx.input(0).shape)
    axes = ctx.const(1) if ctx.has_input(1) else None
    if ctx.has_input(1) and axes is None and not (
            isinstance(ctx.input(1).numel, int) and ctx.input(1).numel == 0):
        if (not ctx.attr("keepdims") and ctx.output().shape == ()) or all(
                _unit(d) for d in data.shape):
            return tuple(range(rank))
        return None
    if axes is None or axes.size == 0:
        return () if ctx.attr("noop_with_empty_axes") else tuple(range(rank))
    chosen = tuple(sorted({normalized_axis(ctx, int(a), rank) for a in axes.reshape(-1)}))
    if len(chosen) != axes.size:
        raise ctx.fail(f"repeated entries in axes {axes.reshape(-1).tolist()}")
    return chosen


def _unit(extent: Extent) -> bool:
    return isinstance(extent, int) and extent == 1


def _output_index(position: Position, axes: Sequence[int], keepdims: bool) -> list[Expr | int]:
    if keepdims:
        return [0 if p is None else p for p in position]
    return [p for p in position if p is not None]


@lowering(*REDUCE, Op.REDUCE_LOG_SUM_EXP)
def lower_reduce(ctx: LowerContext) -> list[Kernel]:
    """Per output position: fold the reduced axes into an accumulator, store its final map."""
    data, out = ctx.input(0), ctx.output()
    found = reduced_axes(ctx)
    if found is None:
        return _reduce_runtime_axes(ctx)
    axes = found
    keepdims = bool(ctx.attr("keepdims"))
    count = product([data.shape[a] for a in axes])
    last = len(data.shape) - 1
    if data.shape and last not in axes and not _unit(data.shape[-1]) and (
            ctx.op is not Op.REDUCE_LOG_SUM_EXP):
        return [ctx.kernel(_reduce_rows(ctx, REDUCE[ctx.op], axes, keepdims, count))]
    # a run-time count may be 0: the lane folds then leave the identity
    if data.shape and last in axes and not (isinstance(count, int) and count == 0):
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


def _reduce_runtime_axes(ctx: LowerContext) -> list[Kernel]:
    """A Reduce* whose axes are values known only at run time (generic, unvectorized code).

    The shape kernel reads the axes into per-axis flags (scratch: 1 = reduced), Reporting an
    entry out of range or repeated (an empty axes input reduces every axis, or none with
    ``noop_with_empty_axes``), and defines the output extents: per axis 1 or the data's
    (keepdims), or the extents of the kept axes in order. The compute kernel then folds, per
    output element o (row-major over the kept extents K, flag ? 1 : extent), every element r
    of the reduced extents R (flag ? extent : 1): data at unravel(o, K) + unravel(r, R)."""
    data, axes, out = ctx.input(0), ctx.input(1), ctx.output()
    rank, keepdims = len(data.shape), bool(ctx.attr("keepdims"))
    what = ctx.node.describe()
    flags = ctx.scratch("reduced", DType.I64, [max(rank, 1)])
    k, a, seen = Var("k"), Var("axis"), Var("seen")
    entry = axes.load(*([k] if axes.shape else [])).cast(DType.I64)
    read: list[Stmt] = [Loop(k, as_index(rank), flags.store([k], 0)), Loop(
        k, as_index(axes.numel), block(
            Declare(a, select(entry < 0, entry + rank, entry)),
            If(Binary("or", a < 0, a >= rank),
               Report(f"{what}: an axes entry is out of range for rank {rank}"),
               If(flags.load(a).eq(1), Report(f"{what}: the axes input repeats an axis"),
                  flags.store([a], 1)))))]
    if not ctx.attr("noop_with_empty_axes"):
        read.append(If(as_index(axes.numel).eq(0),
                       Loop(k, as_index(rank), flags.store([k], 1))))
    undefined = {id(d) for d in ctx.undefined_dims}

    def settle(out_extent: Extent, value: Expr) -> Stmt:
        """Define an undefined output extent; check one the type rule gave."""
        if id(out_extent) in undefined:
            return define_dim(out_extent, value)  # type: ignore[arg-type]
        return If(value.ne(as_index(out_extent)), Report(
            f"{what}: the axes input gives an output shape other than the declared one"))

    defines: list[Stmt] = [Declare(seen, idx(0))]
    for axis, dim in enumerate(data.shape):
        reduced, extent = flags.load(axis).eq(1), as_index(dim)
        if keepdims:
            defines.append(settle(out.shape[axis], select(reduced, 1, extent)))
            continue
        kept = [If(seen.eq(j), settle(d, extent)) for j, d in enumerate(out.shape)]
        defines.append(If(negate(reduced), block(kept, Assign(seen, seen + 1))))
    shape_kernel = ctx.kernel(block(read, defines), inputs=[axes], outputs=[], scratch=[flags])

    o, r = Var("o"), Var("r")
    kept_extents = [Var(f"kept{axis}") for axis in range(rank)]
    reduced_extents = [Var(f"red{axis}") for axis in range(rank)]
    extents: list[Stmt] = []
    for axis, dim in enumerate(data.shape):
        reduced, extent = flags.load(axis).eq(1), as_index(dim)
        extents += [Declare(kept_extents[axis], select(reduced, 1, extent)),
                    Declare(reduced_extents[axis], select(reduced, extent, 1))]
    count = product(reduced_extents)
    coords = [p + q for p, q in zip(unravel(o, kept_extents), unravel(r, reduced_extents),
                                    strict=True)]

    def fold(name: str, init: Expr, step: Callable[[Expr, Expr], Expr]) -> tuple[list[Stmt], Var]:
        acc = Var(name, init.dtype)
        x = data.load(*coords)
        return [Declare(acc, init), Loop(r, as_index(count), Assign(acc, step(acc, x)))], acc

    if ctx.op is Op.REDUCE_LOG_SUM_EXP:
        acc_type = wide(data.dtype)
        peak_stmts, peak = fold("peak", lowest(acc_type), lambda acc, x: fmax(acc, x.cast(
            acc_type)))
        shift = Var("shift", acc_type)
        sum_stmts, total = fold("total", const(0, acc_type),
                                lambda acc, x: acc + exp(x.cast(acc_type) - shift))
        stmts = [*peak_stmts, Declare(shift, select(is_finite(peak), peak, 0)), *sum_stmts]
        value: Expr = log(total) + shift
    else:
        spec = REDUCE[ctx.op]
        acc_type = spec.accumulator(data.dtype)
        stmts, acc = fold("acc", spec.init(acc_type),
                          lambda acc, x: spec.step(acc, x.cast(acc_type)))
        value = acc if spec.final is None else spec.final(acc, count)
    element = block(stmts, flat_view(out).store([o], value.cast(out.dtype)))
    kept_count = as_index(product(kept_extents))
    # (a declared shape the axes contradict was reported: never write past the output)
    kind = LoopKind.PARALLEL if work_estimate(data.numel) > PARALLEL_WORK else LoopKind.SERIAL
    compute = block(extents, If(kept_count.eq(as_index(out.numel)),
                                Loop(o, kept_count, element, kind)))
    return [shape_kernel, ctx.kernel(compute, inputs=[data], scratch=[flags])]


def _reduce_lanes(ctx: LowerContext, axes: Sequence[int], keepdims: bool, count: Extent
                  ) -> Stmt:
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
                 count: Extent) -> Stmt:
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
        return Loop(j, as_index(data.shape[last]), body, LoopKind.VECTORIZE)

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


def _log_sum_exp(shape: Sequence[Extent], position: Position, data: Buffer
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
