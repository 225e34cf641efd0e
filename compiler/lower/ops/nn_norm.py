"""Lowerings of the normalization family: batch (inference and training), instance, layer,
group and RMS normalization, LRN and mean-variance normalization.

Each normalized group (a set of kept indices) is one iteration of the outer, parallel loop:
serial passes over the group's reduced axes accumulate the mean, then the centred variance
(two passes, as the reference computes it), then a last pass writes the outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...ir.op import Op
from ...ir.shapes import normalize_axes, normalize_axis
from ...ir.types import DType
from ..kernel_ir import Assign, Binary, Buffer, Declare, Expr, Kernel, Stmt, Var, block
from ..registry import LowerContext, lowering
from .common import broadcast_index, const, idx
from .nn_common import acc_dtype, add_to, all_of, guarded, nest, sqrt

Inner = Callable[[list[Expr]], Stmt]
Over = Callable[[Inner, str], Stmt]


@dataclass(frozen=True)
class Grouping:
    """Normalized groups: kept extents (the parallel loop), reduced extents (each group's
    elements) and how kept and reduced indices make a full index of the tensor."""

    kept: tuple[int, ...]
    reduced: tuple[int, ...]
    expand: Callable[[list[Expr], list[Expr]], list[Expr]]

    @property
    def count(self) -> int:
        return math.prod(self.reduced)


def by_axes(shape: Sequence[int], reduced_axes: Sequence[int]) -> Grouping:
    """Groups over ``reduced_axes``, one per position of the other axes."""
    reduced = sorted(reduced_axes)
    kept = [a for a in range(len(shape)) if a not in reduced]

    def expand(kv: list[Expr], rv: list[Expr]) -> list[Expr]:
        full: list[Expr] = [idx(0)] * len(shape)
        for axis, var in zip(kept + reduced, kv + rv, strict=True):
            full[axis] = var
        return full

    return Grouping(tuple(shape[a] for a in kept), tuple(shape[a] for a in reduced), expand)


def grouped(grouping: Grouping, make: Callable[[list[Expr], Over], Stmt]) -> Stmt:
    """A parallel loop over the groups; ``make(kept_vars, over)`` builds each body, where
    ``over(inner, prefix)`` loops over the group's elements calling ``inner(full index)``."""

    def body(kv: list[Expr]) -> Stmt:
        def over(inner: Inner, prefix: str) -> Stmt:
            return nest(grouping.reduced, lambda rv: inner(grouping.expand(kv, rv)), prefix)

        return make(kv, over)

    work = 4 * math.prod(grouping.kept) * grouping.count
    return nest(grouping.kept, body, "g", work=work)


def moments(
    over: Over, load: Callable[[list[Expr]], Expr], count: int, dtype: DType
) -> tuple[list[Stmt], Var, Var]:
    """Statements declaring ``mean`` and the centred (population) ``var`` of ``load``."""
    mean, var = Var("mean", dtype), Var("var", dtype)
    stmts: list[Stmt] = [
        Declare(mean, const(0, dtype)),
        over(lambda i: add_to(mean, load(i)), "a"),
        Assign(mean, mean / float(count)),
        Declare(var, const(0, dtype)),
    ]
    centred = Var("centred", dtype)
    stmts.append(over(lambda i: block(Declare(centred, load(i) - mean),
                                      add_to(var, centred * centred)), "b"))
    stmts.append(Assign(var, var / float(count)))
    return stmts, mean, var


def _stats_store(buffer: Buffer | None, index: list[Expr], value: Expr) -> list[Stmt]:
    if buffer is None:
        return []
    kept = [i if extent > 1 else idx(0) for i, extent in zip(index, buffer.shape, strict=True)]
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
    count = x.numel // x.shape[1]

    def make(kv: list[Expr], over: Over) -> Stmt:
        c = kv[0]

        def load(i: list[Expr]) -> Expr:
            return x.load(*i).cast(acc)

        stmts: list[Stmt] = []
        if training:
            stmts, mean, var = moments(over, load, count, acc)
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
        stmts.append(over(lambda i: out.store(
            i, ((gain * (load(i) - mean)) / denom + shift).cast(out.dtype)), "w"))
        return block(stmts)

    reduced = [a for a in range(len(x.shape)) if a != 1]
    return [ctx.kernel(grouped(by_axes(x.shape, reduced), make))]


def _standardized(
    ctx: LowerContext, x: Buffer, grouping: Grouping, dtype: DType,
    write: Callable[[list[Expr], Expr], Stmt],
    stats: Callable[[list[Expr], Var, Var], list[Stmt]] | None = None,
) -> Stmt:
    """write(index, (x - mean) * inv_std) over each group, inv_std = 1 / sqrt(var + eps)."""
    eps = float(ctx.attr("epsilon"))

    def make(kv: list[Expr], over: Over) -> Stmt:
        stmts, mean, var = moments(over, lambda i: x.load(*i).cast(dtype), grouping.count, dtype)
        inv = Var("inv_std", dtype)
        stmts.append(Declare(inv, const(1.0, dtype) / sqrt(var + eps)))
        if stats is not None:
            stmts += stats(kv, mean, inv)
        stmts.append(over(lambda i: write(i, (x.load(*i).cast(dtype) - mean) * inv), "w"))
        return block(stmts)

    return grouped(grouping, make)


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
    count = math.prod(x.shape[axis:])

    def make(kv: list[Expr], over: Over) -> Stmt:
        total, root = Var("total", stash), Var("root", stash)
        value = Var("value", stash)

        def load(i: list[Expr]) -> Expr:
            return x.load(*i).cast(stash)

        def square(i: list[Expr]) -> Stmt:
            return block(Declare(value, load(i)), add_to(total, value * value))

        def write(i: list[Expr]) -> Stmt:
            normalized = (load(i) / root).cast(x.dtype)
            return out.store(i, normalized * scale.load(*broadcast_index(i, scale)))

        return block(Declare(total, const(0, stash)), over(square, "a"),
                     Declare(root, sqrt(total / float(count) + eps)), over(write, "w"))

    return [ctx.kernel(grouped(by_axes(x.shape, range(axis, len(x.shape))), make))]


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
    count = math.prod(x.shape[a] for a in axes)

    def make(kv: list[Expr], over: Over) -> Stmt:
        mean, square, value = Var("mean", acc), Var("square", acc), Var("value", acc)
        std = Var("std", acc)

        def load(i: list[Expr]) -> Expr:
            return x.load(*i).cast(acc)

        return block(
            Declare(mean, const(0, acc)), Declare(square, const(0, acc)),
            over(lambda i: block(Declare(value, load(i)), add_to(mean, value),
                                 add_to(square, value * value)), "a"),
            Assign(mean, mean / float(count)),
            Declare(std, sqrt(square / float(count) - mean * mean) + 1e-9),
            over(lambda i: out.store(i, ((load(i) - mean) / std).cast(out.dtype)), "w"),
        )

    return [ctx.kernel(grouped(by_axes(x.shape, axes), make))]
