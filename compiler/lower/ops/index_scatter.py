"""Lowerings of ScatterElements, ScatterND and TensorScatter.

Each first copies the data into the output, then applies the updates in the reference's
order, so duplicate indices resolve as numpy does (the last write wins; reductions accumulate
in order). ScatterElements runs its outer non-axis loops in parallel (updates there never meet)
with the axis loop serial and innermost; ScatterND walks its index tuples serially. Extents may
be known only at run time; an indexed axis that may be empty then guards the whole update.
"""

from __future__ import annotations

from ...ir.op import Op
from ...ir.shapes import normalize_axis
from ...ir.types import DType
from ..kernel_ir import Binary, Block, Declare, Expr, If, Kernel, Report, Stmt, Var, block
from ..registry import LowerContext, lowering
from .common import idx
from .index_common import (
    all_static,
    check_extents,
    empty_axis_kernel,
    guard_empty,
    nd_empty,
    nd_guard,
    nd_positions,
    out_of_range,
    within_extents,
)
from .movement_loops import checked_index, copy_reshaped, logical, loops, numel


def _combine(reduction: str, old: Expr, new: Expr) -> Expr:
    """The value stored for an update under ``reduction`` (bool: add/max = or, mul/min = and,
    like numpy's ufuncs on bool arrays)."""
    if reduction == "none":
        return new
    if old.dtype is DType.BOOL:
        return Binary("or" if reduction in ("add", "max") else "and", old, new)
    return Binary(reduction, old, new)


def _scatter_kernel(ctx: LowerContext, updates: Stmt) -> list[Kernel]:
    data, out = ctx.input(0), ctx.output()
    return [ctx.kernel(block(copy_reshaped(data, out, "copy"), updates))]


@lowering(Op.SCATTER_ELEMENTS)
def lower_scatter_elements(ctx: LowerContext) -> list[Kernel]:
    data, indices, updates, out = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    rank = len(data.shape)
    axis = normalize_axis(ctx.attr("axis"), rank)
    violations = check_extents(ctx, data, indices, axis)
    extent = data.shape[axis]
    static = all_static([*data.shape, *indices.shape])
    if static and extent == 0 and indices.numel > 0:
        return empty_axis_kernel(ctx, extent)
    reduction = ctx.attr("reduction")
    message = out_of_range(ctx, extent)
    # Loop order: the non-axis axes, then the axis (serial, innermost): updates meeting at
    # one element differ only along the axis, so they keep their order.
    order = [a for a in range(rank) if a != axis] + [axis]

    def body(v: list[Expr]) -> Stmt:
        at: list[Expr] = [idx(0)] * rank
        for a, var in zip(order, v, strict=True):
            at[a] = var
        check, pos = checked_index(indices.load(*at), extent, "pos", message)
        target = list(at)
        target[axis] = pos
        value = _combine(reduction, out.load(*target), updates.load(*at))
        return block(check, out.store(target, value))

    outer_real = any(not isinstance(indices.shape[a], int) or indices.shape[a] > 1
                     for a in order[:-1])
    nest = loops([indices.shape[a] for a in order], body, "u", vectorize=False,
                 parallel=outer_real)
    if not static:
        nest = within_extents(ctx, violations, guard_empty(ctx, [extent], numel(indices.shape),
                                                           nest))
    return _scatter_kernel(ctx, nest)


@lowering(Op.SCATTER_ND)
def lower_scatter_nd(ctx: LowerContext) -> list[Kernel]:
    data, indices, updates, out = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    k = indices.shape[-1]
    assert isinstance(k, int)
    static = all_static([*data.shape, *indices.shape])
    if static and nd_empty(data, indices, 0):
        return empty_axis_kernel(ctx, 0)
    reduction = ctx.attr("reduction")
    rest = data.shape[k:]

    def apply(v: list[Expr]) -> Stmt:
        check, positions = nd_positions(ctx, data, indices, v, 0)
        write = loops(rest, lambda r: out.store([*positions, *r], _combine(
            reduction, out.load(*positions, *r), updates.load(*v, *r))), "ur", parallel=False)
        return block(check, write)

    # Tuples may repeat, so they are applied one after another.
    nest = loops(indices.shape[:-1], apply, "u", parallel=False, vectorize=False)
    return _scatter_kernel(ctx, nest if static else nd_guard(ctx, data, indices, 0, nest))


@lowering(Op.TENSOR_SCATTER)
def lower_tensor_scatter(ctx: LowerContext) -> list[Kernel]:
    cache, update, out = ctx.input(0), ctx.input(1), ctx.output()
    rank = len(cache.shape)
    axis = normalize_axis(ctx.attr("axis"), rank)
    capacity, length = cache.shape[axis], update.shape[axis]
    circular = ctx.attr("mode") == "circular"
    start = Var("start")
    sizes = (f"{length} updates overruns the cache extent {capacity}"
             if all_static([capacity, length]) else "the update length overruns the cache")
    message = f"{ctx.node.describe()}: a write index plus {sizes}"

    def per_batch(v: list[Expr]) -> Stmt:
        b = v[0]
        first = ctx.input(2).load(b) if ctx.has_input(2) else idx(0)

        def write(w: list[Expr]) -> Stmt:
            at = [b, *w]
            pos = start + at[axis]
            if circular:
                pos = (pos % capacity + capacity) % capacity
            target = list(at)
            target[axis] = pos
            store = out.store(target, update.load(*at))
            if circular:
                return store
            return If(logical("and", [pos >= 0, pos < capacity]), store)

        stmts: list[Stmt] = [Declare(start, first.cast(DType.I64))]
        if not circular:
            stmts.append(If(logical("or", [start < 0, start + length > capacity]),
                            Block((Report(message),))))
        stmts.append(loops(update.shape[1:], write, "w", parallel=False))
        return block(stmts)

    static = all_static([capacity, length])
    if static and capacity == 0 and length > 0 and circular:
        raise ctx.fail("circular mode needs a non-empty cache axis")
    nest = loops(update.shape[:1], per_batch, "b", work=update.numel, vectorize=False)
    if circular and not static:
        # A circular write into an empty cache axis has nowhere to go.
        nest = guard_empty(ctx, [capacity], numel(update.shape), nest, "write position")
    return _scatter_kernel(ctx, nest)
