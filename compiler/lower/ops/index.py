"""Lowerings of the index ops: gathers, OneHot, and the selections with static output shapes.

Indices read from data wrap once when negative (ONNX); one outside ``[-extent, extent)`` makes
the kernel ``Report`` (the run fails with that message) and is clamped so no access leaves the
buffer. Each index is read and checked once, outside the loop copying the slice it selects.
Scatters live in ``index_scatter``, TopK in ``index_topk``. Compress (constant condition) and
NonZero (constant input) reach lowering only when their output extent is static; they scan with
a running output position. Unique and NonMaxSuppression have no lowering yet.
"""

from __future__ import annotations

from ...ir.op import Op
from ...ir.shapes import normalize_axis
from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Block,
    Declare,
    Expr,
    If,
    Kernel,
    Stmt,
    Var,
    block,
    select,
)
from ..registry import LowerContext, lowering
from . import index_scatter, index_topk  # noqa: F401 - registers
from .common import affine, const, idx
from .index_common import (
    check_extents,
    empty_axis_kernel,
    nd_empty,
    nd_positions,
    out_of_range,
)
from .movement_loops import checked_index, logical, loops, numel


@lowering(Op.GATHER)
def lower_gather(ctx: LowerContext) -> list[Kernel]:
    data, indices, out = ctx.input(0), ctx.input(1), ctx.output()
    axis = normalize_axis(ctx.attr("axis"), len(data.shape))
    extent = data.shape[axis]
    pre, post = data.shape[:axis], data.shape[axis + 1:]
    if extent == 0 and indices.numel > 0:
        return empty_axis_kernel(ctx, extent)
    message = out_of_range(ctx, extent)

    def select_slice(v: list[Expr]) -> Stmt:
        head, at = v[:len(pre)], v[len(pre):]
        check, pos = checked_index(indices.load(*at), extent, "pos", message)
        copy = loops(post, lambda p: out.store([*head, *at, *p], data.load(*head, pos, *p)),
                     "gp", parallel=False)
        return block(check, copy)

    return [ctx.kernel(loops(pre + indices.shape, select_slice, "g", work=out.numel,
                             vectorize=not post))]


@lowering(Op.GATHER_ELEMENTS)
def lower_gather_elements(ctx: LowerContext) -> list[Kernel]:
    data, indices, out = ctx.input(0), ctx.input(1), ctx.output()
    axis = normalize_axis(ctx.attr("axis"), len(data.shape))
    check_extents(ctx, data, indices, axis)
    extent = data.shape[axis]
    if extent == 0 and indices.numel > 0:
        return empty_axis_kernel(ctx, extent)
    message = out_of_range(ctx, extent)

    def body(o: list[Expr]) -> Stmt:
        check, pos = checked_index(indices.load(*o), extent, "pos", message)
        source = list(o)
        source[axis] = pos
        return block(check, out.store(o, data.load(*source)))

    return [ctx.kernel(loops(out.shape, body, "g"))]


@lowering(Op.GATHER_ND)
def lower_gather_nd(ctx: LowerContext) -> list[Kernel]:
    data, indices, out = ctx.input(0), ctx.input(1), ctx.output()
    b = ctx.attr("batch_dims")
    k = indices.shape[-1]
    if nd_empty(data, indices, b):
        return empty_axis_kernel(ctx, 0)
    rest = data.shape[b + k:]

    def select_slice(v: list[Expr]) -> Stmt:
        check, positions = nd_positions(ctx, data, indices, v, b)
        copy = loops(rest, lambda r: out.store([*v, *r], data.load(*v[:b], *positions, *r)),
                     "gp", parallel=False)
        return block(check, copy)

    return [ctx.kernel(loops(indices.shape[:-1], select_slice, "g", work=out.numel,
                             vectorize=not rest))]


@lowering(Op.ONE_HOT)
def lower_one_hot(ctx: LowerContext) -> list[Kernel]:
    """values[1] where the position on the new axis equals the (wrapped) index; out-of-range
    indices give an all-off row, as ONNX specifies."""
    indices, values, out = ctx.input(0), ctx.input(2), ctx.output()
    axis = normalize_axis(ctx.attr("axis"), len(out.shape))
    depth = out.shape[axis]
    on, off = Var("on", out.dtype), Var("off", out.dtype)

    def body(o: list[Expr]) -> Stmt:
        raw = indices.load(*o[:axis], *o[axis + 1:]).cast(DType.I64)
        wrapped = select(raw < 0, raw + depth, raw)
        return out.store(o, select(wrapped.eq(o[axis]), on, off))

    return [ctx.kernel(block(Declare(on, values.load(idx(1))), Declare(off, values.load(idx(0))),
                             loops(out.shape, body, "h")), inputs=[indices, values])]


@lowering(Op.COMPRESS)
def lower_compress(ctx: LowerContext) -> list[Kernel]:
    """A scan over the condition with a running output position (the condition is a
    build-time constant here, which is what makes the output extent static)."""
    data, condition, out = ctx.input(0), ctx.input(1), ctx.output()
    if ctx.const(1) is None:
        raise ctx.fail("the output extent depends on the condition's values, known only at run "
                       "time; dynamic shapes are not supported yet")
    count = Var("count")
    axis = ctx.attr("axis")
    if axis is None:
        strides = [numel(data.shape[a + 1:]) for a in range(len(data.shape))]
        limit = min(condition.shape[0], data.numel)

        def element(v: list[Expr]) -> Stmt:
            flat = affine(list(zip(v, strides, strict=True)))
            take = logical("and", [flat < limit, condition.load(
                select(flat < limit, flat, idx(0)))])
            return If(take, block(out.store([count], data.load(*v)), Assign(count, count + 1)))

        scan = loops(data.shape, element, "c", parallel=False, vectorize=False)
        return [ctx.kernel(block(Declare(count, idx(0)), scan))]
    axis = normalize_axis(axis, len(data.shape))
    pre, post = data.shape[:axis], data.shape[axis + 1:]

    def chosen(v: list[Expr]) -> Stmt:
        i = v[0]
        copy = loops([*pre, *post], lambda p: out.store(
            [*p[:axis], count, *p[axis:]], data.load(*p[:axis], i, *p[axis:])), "cp",
            parallel=False)
        return If(condition.load(i), block(copy, Assign(count, count + 1)))

    scan = loops([min(condition.shape[0], data.shape[axis])], chosen, "c", parallel=False,
                 vectorize=False)
    return [ctx.kernel(block(Declare(count, idx(0)), scan))]


@lowering(Op.NONZERO)
def lower_nonzero(ctx: LowerContext) -> list[Kernel]:
    """A scan writing each non-zero element's coordinates at a running position (the input is
    a build-time constant here, which is what makes the output extent static)."""
    data, out = ctx.input(0), ctx.output()
    if ctx.const(0) is None:
        raise ctx.fail("the output extent depends on the input's values, known only at run "
                       "time; dynamic shapes are not supported yet")
    if out.numel == 0:
        return [ctx.kernel(Block(()))]
    count = Var("count")
    capacity = out.shape[1]

    def element(v: list[Expr]) -> Stmt:
        found = logical("and", [data.load(*v).ne(const(0, data.dtype)), count < capacity])
        stores = [out.store([idx(d), count], v[d]) for d in range(len(v))]
        return If(found, block(stores, Assign(count, count + 1)))

    scan = loops(data.shape, element, "n", parallel=False, vectorize=False)
    return [ctx.kernel(block(Declare(count, idx(0)), scan))]


@lowering(Op.UNIQUE, Op.NON_MAX_SUPPRESSION)
def lower_data_dependent(ctx: LowerContext) -> list[Kernel]:
    raise ctx.fail(f"{ctx.op.value} has no lowering: its output extents depend on input "
                   "values, and dynamic shapes are not supported yet")
