"""Lowerings of the normalization family: batch (inference and training), instance, layer,
group and RMS normalization, LRN and mean-variance normalization.

Each normalized group (a set of kept indices) is one row of a row loop (rows.py: parallel
blocks of groups): vectorized lane folds over the group's reduced axes accumulate the mean,
then the centred variance (two passes, as the reference computes it), then a vectorized pass
writes the outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...ir.op import Op
from ...ir.shapes import normalize_axes, normalize_axis
from ...ir.types import DType
from ..kernel_ir import Binary, Buffer, Declare, Expr, Kernel, Stmt, Var, block, extent_mul
from ..registry import LowerContext, lowering
from .common import Extent, broadcast_index, const, idx, product
from .elementwise_scalar import add
from .nn_common import acc_dtype, add_to, all_of, guarded, nest, sqrt
from .rows import fold_lanes, row_loop, rows_of

Inner = Callable[[list[Expr]], Stmt]


@dataclass(frozen=True)
class Grouping:
    """Normalized groups: kept extents (the parallel loop), reduced extents (each group's
    elements) and how kept and reduced indices make a full index of the tensor."""

    kept: tuple[Extent, ...]
    reduced: tuple[Extent, ...]
    expand: Callable[[list[Expr], list[Expr]], list[Expr]]

    @property
    def count(self) -> Extent:
        return product(self.reduced)


def by_axes(shape: Sequence[Extent], reduced_axes: Sequence[int]) -> Grouping:
    """Groups over ``reduced_axes``, one per position of the other axes."""
    reduced = sorted(reduced_axes)
    kept = [a for a in range(len(shape)) if a not in reduced]

    def expand(kv: list[Expr], rv: list[Expr]) -> list[Expr]:
        full: list[Expr] = [idx(0)] * len(shape)
        for axis, var in zip(kept + reduced, kv + rv, strict=True):
            full[axis] = var
        return full

    return Grouping(tuple(shape[a] for a in kept), tuple(shape[a] for a in reduced), expand)


@dataclass(frozen=True)
class Group:
    """One normalized group inside its row loop: ``fold`` reduces a term over the group's
    elements (vectorized lane partials, see rows.py), ``each`` visits them independently
    (vectorized); both call their callbacks with full indices of the tensor."""

    fold: Callable[[str, Expr, Callable[[list[Expr]], Expr]], tuple[list[Stmt], Expr]]
    each: Callable[[Inner, str], Stmt]


def grouped(ctx: LowerContext, grouping: Grouping,
            make: Callable[[list[Expr], Group], Stmt]) -> Stmt:
    """Loops over the groups (parallel blocks when the work is large); ``make(kept_vars,
    group)`` builds each group's statements."""
    rows = rows_of(grouping.kept, extent_mul(4, product([*grouping.kept, *grouping.reduced])))

    def body(kv: list[Expr], slot: Expr) -> Stmt:
        def fold(hint: str, init: Expr, term: Callable[[list[Expr]], Expr]
                 ) -> tuple[list[Stmt], Expr]:
            return fold_lanes(ctx, hint, rows, slot, grouping.reduced, init, add,
                              lambda rv: term(grouping.expand(kv, rv)))

        def each(inner: Inner, prefix: str) -> Stmt:
            return row_loop(prefix, grouping.reduced, lambda rv: inner(grouping.expand(kv, rv)))

        return make(kv, Group(fold, each))

    return rows.loops(body, "g")



def moments(group: Group, load: Callable[[list[Expr]], Expr], count: Extent, dtype: DType
            ) -> tuple[list[Stmt], Var, Var]:
    """Statements declaring ``mean`` and the centred (population) ``var`` of ``load``: two
    passes, as the reference computes them."""
    mean, var = Var("mean", dtype), Var("var", dtype)
    zero = const(0, dtype)
    sum_stmts, total = group.fold("sum", zero, load)

    def square(i: list[Expr]) -> Expr:
        centred = load(i) - mean
        return centred * centred

    square_stmts, squares = group.fold("squares", zero, square)
    return [*sum_stmts, Declare(mean, total / real(count, dtype)), *square_stmts,
            Declare(var, squares / real(count, dtype))], mean, var


def real(count: Extent, dtype: DType) -> Expr:
    """An element count as a float of ``dtype`` (a run-time count converted at run time)."""
    return const(float(count), dtype) if isinstance(count, int) else count.cast(dtype)


def _stats_store(buffer: Buffer | None, index: list[Expr], value: Expr) -> list[Stmt]:
    if buffer is None:
        return []
    kept = [idx(0) if isinstance(extent, int) and extent == 1 else i
            for i, extent in zip(index, buffer.shape, strict=True)]
    return [buffer.store(kept, value.cast(buffer.dtype))]


@lowering(Op.BATCH_NORMALIZATION)
def lower_batch_norm(ctx: LowerContext) -> list[Kernel]:
    x, scale, bias, mean_in, var_in = (ctx.input(i) for i in range(5))
    out = ctx.output()
    acc = acc_dtype(x.dtype)
    eps = float(ctx.attr("epsilon"))
    training = bool(ctx.attr("training_mode"))
    momentum = float(ctx.attr("momentum"))
    running = [ctx.outputs[i] if len(ctx.outputs) > i else None for i in (1, 2)]
    count = product([n for a, n in enumerate(x.shape) if a != 1])

    def make(kv: list[Expr], group: Group) -> Stmt:
        c = kv[0]

        def load(i: list[Expr]) -> Expr:
            return x.load(*i).cast(acc)

        stmts: list[Stmt] = []
        if training:
            stmts, mean, var = moments(group, load, count, acc)
            for buffer, given, batch in ((running[0], mean_in, mean), (running[1], var_in, var)):
                updated = given.load(c).cast(acc) * momentum + batch * (1.0 - momentum)
                stmts += _stats_store(buffer, [c], updated)
        else:
            mean, var = Var("mean", acc), Var("var", acc)
            stmts = [Declare(mean, mean_in.load(c).cast(acc)),
                     Declare(var, var_in.load(c).cast(acc))]
        gain, shift, denom = Var("gain", acc), Var("shift", acc), Var("denom", acc)
        stmts += [Declare(gain, scale.load(c).cast(acc)), Declare(shift, bias.load(c).cast(acc)),
                  Declare(denom, sqrt(var + eps))]
        stmts.append(group.each(lambda i: out.store(
            i, ((gain * (load(i) - mean)) / denom + shift).cast(out.dtype)), "w"))
        return block(stmts)

    reduced = [a for a in range(len(x.shape)) if a != 1]
    return [ctx.kernel(grouped(ctx, by_axes(x.shape, reduced), make))]


def _standardized(
    ctx: LowerContext, x: Buffer, grouping: Grouping, dtype: DType,
    write: Callable[[list[Expr], Expr], Stmt],
    stats: Callable[[list[Expr], Var, Var], list[Stmt]] | None = None,
) -> Stmt:
    """write(index, (x - mean) * inv_std) over each group, inv_std = 1 / sqrt(var + eps)."""
    eps = float(ctx.attr("epsilon"))

    def make(kv: list[Expr], group: Group) -> Stmt:
        stmts, mean, var = moments(group, lambda i: x.load(*i).cast(dtype), grouping.count,
                                   dtype)
        inv = Var("inv_std", dtype)
        stmts.append(Declare(inv, const(1.0, dtype) / sqrt(var + eps)))
        if stats is not None:
            stmts += stats(kv, mean, inv)
        stmts.append(group.each(lambda i: write(i, (x.load(*i).cast(dtype) - mean) * inv), "w"))
        return block(stmts)

    return grouped(ctx, grouping, make)


@lowering(Op.INSTANCE_NORMALIZATION)
def lower_instance_norm(ctx: LowerContext) -> list[Kernel]:
    x, scale, bias, out = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    acc = acc_dtype(x.dtype)

    def write(i: list[Expr], normalized: Expr) -> Stmt:
        value = normalized * scale.load(i[1]).cast(acc) + bias.load(i[1]).cast(acc)
        return out.store(i, value.cast(out.dtype))

    grouping = by_axes(x.shape, range(2, len(x.shape)))
    return [ctx.kernel(_standardized(ctx, x, grouping, acc, write))]


@lowering(Op.LAYER_NORMALIZATION)
def lower_layer_norm(ctx: LowerContext) -> list[Kernel]:
    x, scale, out = ctx.input(0), ctx.input(1), ctx.output()
    bias = ctx.input(2) if ctx.has_input(2) else None
    axis = normalize_axis(int(ctx.attr("axis")), len(x.shape))
    stash = ctx.attr("stash_type")
    mean_out = ctx.outputs[1] if len(ctx.outputs) > 1 else None
    inv_out = ctx.outputs[2] if len(ctx.outputs) > 2 else None

    def write(i: list[Expr], normalized: Expr) -> Stmt:
        value = normalized.cast(x.dtype) * scale.load(*broadcast_index(i, scale))
        if bias is not None:
            value = value + bias.load(*broadcast_index(i, bias))
        return out.store(i, value)

    def stats(kv: list[Expr], mean: Var, inv: Var) -> list[Stmt]:
        index = [*kv, *([idx(0)] * (len(x.shape) - axis))]
        return _stats_store(mean_out, index, mean) + _stats_store(inv_out, index, inv)

    grouping = by_axes(x.shape, range(axis, len(x.shape)))
    return [ctx.kernel(_standardized(ctx, x, grouping, stash, write, stats))]


@lowering(Op.GROUP_NORMALIZATION)
def lower_group_norm(ctx: LowerContext) -> list[Kernel]:
    x, scale, bias, out = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    groups = int(ctx.attr("num_groups"))
    per_group = x.shape[1] // groups
    spatial = list(x.shape[2:])

    def expand(kv: list[Expr], rv: list[Expr]) -> list[Expr]:
        n, g = kv
        channel = rv[0] if groups == 1 else g * per_group + rv[0]
        return [n, channel, *rv[1:]]

    def write(i: list[Expr], normalized: Expr) -> Stmt:
        value = normalized.cast(x.dtype) * scale.load(i[1]).cast(x.dtype) + bias.load(
            i[1]).cast(x.dtype)
        return out.store(i, value)

    grouping = Grouping((x.shape[0], groups), (per_group, *spatial), expand)
    return [ctx.kernel(_standardized(ctx, x, grouping, ctx.attr("stash_type"), write))]


@lowering(Op.RMS_NORMALIZATION)
def lower_rms_norm(ctx: LowerContext) -> list[Kernel]:
    x, scale, out = ctx.input(0), ctx.input(1), ctx.output()
    axis = normalize_axis(int(ctx.attr("axis")), len(x.shape))
    stash = ctx.attr("stash_type")
    eps = float(ctx.attr("epsilon"))
    count = product(x.shape[axis:])

    def make(kv: list[Expr], group: Group) -> Stmt:
        root = Var("root", stash)

        def load(i: list[Expr]) -> Expr:
            return x.load(*i).cast(stash)

        def square(i: list[Expr]) -> Expr:
            value = load(i)
            return value * value

        def write(i: list[Expr]) -> Stmt:
            normalized = (load(i) / root).cast(x.dtype)
            return out.store(i, normalized * scale.load(*broadcast_index(i, scale)))

        stmts, total = group.fold("squares", const(0, stash), square)
        return block(stmts, Declare(root, sqrt(total / real(count, stash) + eps)),
                     group.each(write, "w"))

    return [ctx.kernel(grouped(ctx, by_axes(x.shape, range(axis, len(x.shape))), make))]


@lowering(Op.LRN)
def lower_lrn(ctx: LowerContext) -> list[Kernel]:
    x, out = ctx.input(0), ctx.output()
    acc = acc_dtype(x.dtype)
    size = int(ctx.attr("size"))
    before = (size - 1) // 2
    channels = x.shape[1]
    alpha, beta, bias = (float(ctx.attr(k)) for k in ("alpha", "beta", "bias"))

    def body(i: list[Expr]) -> Stmt:
        total, value = Var("total", acc), Var("value", acc)

        def tap(j: list[Expr]) -> Stmt:
            channel = i[1] + j[0] - before
            ok = all_of([channel >= 0, channel < channels])
            inner = block(Declare(value, x.load(i[0], channel, *i[2:]).cast(acc)),
                          add_to(total, value * value))
            return guarded(ok, inner)

        scaled = Binary("pow", total * (alpha / size) + bias, const(beta, acc))
        return block(Declare(total, const(0, acc)), nest([size], tap, "j"),
                     out.store(i, (x.load(*i).cast(acc) / scaled).cast(out.dtype)))

    return [ctx.kernel(nest(list(x.shape), body, "o", work=x.numel * size))]


@lowering(Op.MEAN_VARIANCE_NORMALIZATION)
def lower_mvn(ctx: LowerContext) -> list[Kernel]:
    x, out = ctx.input(0), ctx.output()
    acc = acc_dtype(x.dtype)
    axes = normalize_axes(ctx.attr("axes"), len(x.shape))
    count = product([x.shape[a] for a in axes])

    def make(kv: list[Expr], group: Group) -> Stmt:
        mean, std = Var("mean", acc), Var("std", acc)

        def load(i: list[Expr]) -> Expr:
            return x.load(*i).cast(acc)

        def square(i: list[Expr]) -> Expr:
            value = load(i)
            return value * value

        sum_stmts, total = group.fold("sum", const(0, acc), load)
        square_stmts, squares = group.fold("squares", const(0, acc), square)
        return block(
            sum_stmts, square_stmts, Declare(mean, total / real(count, acc)),
            Declare(std, sqrt(squares / real(count, acc) - mean * mean) + 1e-9),
            group.each(lambda i: out.store(i, ((load(i) - mean) / std).cast(out.dtype)), "w"),
        )

    return [ctx.kernel(grouped(ctx, by_axes(x.shape, axes), make))]
