"""Lowerings of the pooling family: windowed pools (average, max with indices, Lp), global
pools, MaxUnpool, MaxRoiPool and RoiAlign.

Windowed pools loop over batch x channels (fused) and the output positions, with the taps as
the innermost reduction into locals; padded taps are skipped by guards (``nn_window``). Average
and max pools (without indices) compute the output positions whose windows stay inside the
input along the last axis in a vectorized loop with the taps unrolled (``nn_pool_interior``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

from ...ir.op import Op
from ...ir.rules.nn_geometry import Window, kernel_shape_of, resolve_window
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
    Report,
    Stmt,
    Unary,
    Var,
    as_index,
    block,
    define_dim,
    extent_mul,
    select,
)
from ..registry import LowerContext, lowering
from .common import const, idx, product
from .elementwise_scalar import add, fmax
from .nn_common import acc_dtype, add_to, all_of, lowest, nest, ravel, unravel
from .nn_pool_interior import MAX_TAPS, Interior, interior_span, pool_interior
from .nn_sample import roi_align_body
from .nn_window import by_image, in_bounds, over_window, runtime_window
from .rows import fold_lanes, rows_of

TapBody = Callable[[list[Expr], list[Expr]], Stmt]
PoolBody = Callable[[Expr, list[Expr], Callable[[TapBody], Stmt]], Stmt]


def _pool_window(ctx: LowerContext, x: Buffer) -> tuple[Window, list[Kernel]]:
    """The pooling window, and (run-time spatial extents) the kernel defining the output's."""
    kernel = kernel_shape_of(ctx.attrs, None, len(x.shape) - 2, ctx.fail)
    ceil_mode = bool(ctx.attr("ceil_mode"))
    if not _static_planes(x):
        return runtime_window(ctx, x, kernel, ceil_mode)
    return resolve_window(ctx.attrs, x.shape[2:], kernel, ctx.fail, ceil_mode), []


def _static_planes(x: Buffer) -> bool:
    """Whether ``x``'s spatial extents are static (else generic loops guard every tap)."""
    return Buffer("", x.dtype, x.shape[2:]).is_static


def _pooled(ctx: LowerContext, x: Buffer, make: PoolBody,
            interior: Interior | None = None) -> list[Kernel]:
    """One kernel over [N*C, *out]; ``make(plane, out_vars, taps)`` builds each output's body,
    where ``taps(inner)`` loops over the window's in-input taps. With ``interior``, the output
    positions along the last axis whose windows never leave the input along it are computed
    by ``interior`` (a vectorized loop, see ``pool_interior``), the border ones by ``make``."""
    win, shape = _pool_window(ctx, x)
    out = ctx.output()
    outs = list(out.shape[2:])
    planes = extent_mul(x.shape[0], x.shape[1])

    def body(v: list[Expr]) -> Stmt:
        def taps(inner: TapBody) -> Stmt:
            return over_window(win, x.shape[2:], outs, v[1:], inner, "k")

        return make(v[0], v[1:], taps)

    work = extent_mul(out.numel, math.prod(win.kernel))
    span = (None if interior is None or not _static_planes(x)
            else interior_span(win, x.shape[2:], outs))
    if interior is None or span is None:
        return [*shape, ctx.kernel(nest([planes, *outs], body, "o", work=work))]
    low, high = span

    def row(v: list[Expr]) -> Stmt:
        ow = Var("ow")
        stmts: list[Stmt] = []
        if low > 0:
            stmts.append(Loop(ow, idx(low), body([*v, ow])))
        stmts.append(interior(v[0], v[1:], low, high))
        if high < outs[-1]:
            stmts.append(Loop(ow, idx(outs[-1] - high), body([*v, ow + high])))
        return block(stmts)

    return [ctx.kernel(nest([planes, *outs[:-1]], row, "o", work=work))]


def _plane_load(x: Buffer, plane: Expr, positions: list[Expr]) -> Expr:
    n, c = unravel(plane, x.shape[:2])
    return x.load(n, c, *positions)


def _plane_store(out: Buffer, plane: Expr, o: list[Expr], value: Expr) -> Stmt:
    n, c = unravel(plane, out.shape[:2])
    return out.store([n, c, *o], value.cast(out.dtype))


@lowering(Op.AVERAGE_POOL)
@functools.partial(by_image, generic=True)
def lower_average_pool(ctx: LowerContext) -> list[Kernel]:
    x, out = ctx.input(0), ctx.output()
    win = _pool_window(ctx, x)[0]
    acc_type = acc_dtype(x.dtype)
    include_pad = bool(ctx.attr("count_include_pad"))
    n = win.rank
    outs = list(out.shape[2:])
    # Taps on the explicit pads count toward the divisor; ceil-mode overhang does not.
    lows = [-p for p in win.pads[:n]] if include_pad else [0] * n
    highs = [s + p for s, p in zip(x.shape[2:], win.pads[n:], strict=True)] if include_pad \
        else list(x.shape[2:])

    def make(plane: Expr, o: list[Expr], taps: Callable[[TapBody], Stmt]) -> Stmt:
        acc, count = Var("acc", acc_type), Var("count")

        def add(positions: list[Expr]) -> Stmt:
            return add_to(acc, _plane_load(x, plane, positions).cast(acc_type))

        if include_pad:
            def inner(_taps: list[Expr], positions: list[Expr]) -> Stmt:
                cond = in_bounds(win, x.shape[2:], outs, positions)
                load = add(positions)
                return block(add_to(count, idx(1)), load if cond is None else If(cond, load))

            loops = over_window(win, x.shape[2:], outs, o, inner, "k", lows, highs)
        else:
            loops = taps(lambda _t, positions: block(add_to(count, idx(1)), add(positions)))
        return block(Declare(acc, const(0, acc_type)), Declare(count, idx(0)), loops,
                     _plane_store(out, plane, o, acc / count.cast(acc_type)))

    def interior(plane: Expr, rows: list[Expr], low: int, high: int) -> Stmt:
        def value(taps: list[tuple[Expr | None, Expr]], counted: Expr) -> Expr:
            total: Expr = const(0, acc_type)
            for valid, tap in taps:
                term = tap.cast(acc_type)
                total = total + (term if valid is None else select(valid, term, 0))
            return total / counted

        return pool_interior(x, out, win, plane, rows, low, high, value,
                             (lows, highs, acc_type))

    return _pooled(ctx, x, make, interior if math.prod(win.kernel) <= MAX_TAPS else None)


@lowering(Op.LP_POOL)
@functools.partial(by_image, generic=True)
def lower_lp_pool(ctx: LowerContext) -> list[Kernel]:
    x, out = ctx.input(0), ctx.output()
    acc_type = acc_dtype(x.dtype)
    p = float(ctx.attr("p"))

    def make(plane: Expr, o: list[Expr], taps: Callable[[TapBody], Stmt]) -> Stmt:
        acc = Var("acc", acc_type)

        def add(_taps: list[Expr], positions: list[Expr]) -> Stmt:
            value = Unary("abs", _plane_load(x, plane, positions).cast(acc_type))
            return add_to(acc, Binary("pow", value, const(p, acc_type)))

        root = Binary("pow", acc, const(1.0 / p, acc_type))
        return block(Declare(acc, const(0, acc_type)), taps(add),
                     _plane_store(out, plane, o, root))

    return _pooled(ctx, x, make)


def improves(value: Expr, best: Expr) -> Expr:
    """value replaces the running max: greater, or the first NaN (numpy's argmax)."""
    if not value.dtype.is_float:
        return value > best
    return Binary("or", value > best,
                  Binary("and", Unary("isnan", value), Unary("not", Unary("isnan", best))))


@lowering(Op.MAX_POOL)
@functools.partial(by_image, index_output=1, generic=True)
def lower_max_pool(ctx: LowerContext) -> list[Kernel]:
    x, out = ctx.input(0), ctx.output()
    indices = ctx.outputs[1] if len(ctx.outputs) > 1 else None
    spatial = list(x.shape[2:])
    column_major = ctx.attr("storage_order") == 1
    plane_size = math.prod(spatial)

    def flat(plane: Expr, positions: list[Expr]) -> Expr:
        if column_major:
            inner = ravel(list(reversed(positions)), list(reversed(spatial)))
        else:
            inner = ravel(positions, spatial)
        return plane * plane_size + inner

    def make(plane: Expr, o: list[Expr], taps: Callable[[TapBody], Stmt]) -> Stmt:
        best = Var("best", x.dtype)
        start = Declare(best, const(lowest(x.dtype), x.dtype))
        if indices is None:
            def update(_t: list[Expr], positions: list[Expr]) -> Stmt:
                return Assign(best, Binary("max", best, _plane_load(x, plane, positions)))

            return block(start, taps(update), _plane_store(out, plane, o, best))
        where = Var("where")

        def track(_t: list[Expr], positions: list[Expr]) -> Stmt:
            value = Var("value", x.dtype)
            return block(
                Declare(value, _plane_load(x, plane, positions)),
                If(Binary("or", where < 0, improves(value, best)),
                   block(Assign(best, value), Assign(where, flat(plane, positions)))),
            )

        n, c = unravel(plane, x.shape[:2])
        return block(start, Declare(where, idx(-1)), taps(track),
                     _plane_store(out, plane, o, best), indices.store([n, c, *o], where))

    def interior(plane: Expr, rows: list[Expr], low: int, high: int) -> Stmt:
        def value(taps: list[tuple[Expr | None, Expr]], counted: Expr) -> Expr:
            best: Expr = const(lowest(x.dtype), x.dtype)
            for valid, tap in taps:
                identity = const(lowest(x.dtype), x.dtype)
                best = Binary("max", best, tap if valid is None else select(valid, tap, identity))
            return best

        return pool_interior(x, out, win, plane, rows, low, high, value, None)

    win = _pool_window(ctx, x)[0]
    fast = indices is None and math.prod(win.kernel) <= MAX_TAPS
    return _pooled(ctx, x, make, interior if fast else None)


def _global(ctx: LowerContext, init: Expr, combine: Callable[[Expr, Expr], Expr],
            term: Callable[[Expr], Expr], result: Callable[[Expr], Expr],
            convert: DType) -> list[Kernel]:
    """out[n, c, 1...] = result(the fold of term(x as ``convert``) over the plane's elements
    with ``combine``), one row per plane, vectorized along the plane (rows.py)."""
    x, out = ctx.input(0), ctx.output()
    spatial = x.shape[2:]
    rows = rows_of(x.shape[:2], x.numel)

    def row(nc: list[Expr], slot: Expr) -> Stmt:
        # one fold over the plane's flat index, read at its digits (the loads stay
        # contiguous: LLVM folds (f // w) * w + f % w back into f)
        def value(flat: list[Expr]) -> Expr:
            return term(x.load(*nc, *unravel(flat[0], spatial)).cast(convert))

        stmts, total = fold_lanes(ctx, "acc", rows, slot, [product(spatial)], init, combine,
                                  value)
        index = [*nc, *([idx(0)] * len(spatial))]
        return block(stmts, out.store(index, result(total).cast(out.dtype)))

    return [ctx.kernel(rows.loops(row), inputs=[x])]


@lowering(Op.GLOBAL_AVERAGE_POOL)
@functools.partial(by_image, generic=True)
def lower_global_average_pool(ctx: LowerContext) -> list[Kernel]:
    x = ctx.input(0)
    acc_type = acc_dtype(x.dtype)
    plane = product(x.shape[2:])
    count = const(plane, acc_type) if isinstance(plane, int) else plane.cast(acc_type)
    return _global(ctx, const(0, acc_type), add, _same, lambda a: a / count, acc_type)


@lowering(Op.GLOBAL_MAX_POOL)
@functools.partial(by_image, generic=True)
def lower_global_max_pool(ctx: LowerContext) -> list[Kernel]:
    x = ctx.input(0)
    return _global(ctx, const(lowest(x.dtype), x.dtype), fmax, _same, _same, x.dtype)


@lowering(Op.GLOBAL_LP_POOL)
@functools.partial(by_image, generic=True)
def lower_global_lp_pool(ctx: LowerContext) -> list[Kernel]:
    acc_type = acc_dtype(ctx.input(0).dtype)
    p = const(float(ctx.attr("p")), acc_type)
    root = const(1.0 / float(ctx.attr("p")), acc_type)
    return _global(ctx, const(0, acc_type), add, lambda v: Binary("pow", Unary("abs", v), p),
                   lambda a: Binary("pow", a, root), acc_type)




def _same(a: Expr) -> Expr:
    return a


@lowering(Op.MAX_UNPOOL)
def lower_max_unpool(ctx: LowerContext) -> list[Kernel]:
    """Zero the output, then scatter X into it. A run-time output_shape (or batch) gives
    output extents known only at run time: a first kernel defines them (from output_shape's
    values, reporting negative ones; else the natural unpooled shape)."""
    x, where, out = ctx.input(0), ctx.input(1), ctx.output()
    n = len(x.shape) - 2
    kernel = [int(k) for k in ctx.attr("kernel_shape")]
    strides = ctx.attr("strides") or (1,) * n
    pads = ctx.attr("pads") or (0,) * (2 * n)
    natural: list[int | Expr] = list(x.shape[:2]) + [
        (size - 1) * s + k - pads[i] - pads[n + i]
        for i, (size, s, k) in enumerate(zip(x.shape[2:], strides, kernel, strict=True))
    ]
    total = product(natural)
    kernels = _unpool_extents(ctx, natural, out)
    # Indices address the natural unpooled shape; a different output_shape crops or zero-pads
    # it at the end of each axis.
    zero = nest(list(out.shape), lambda v: out.store(v, const(0, out.dtype)), "z",
                vectorize_inner=True)
    where_text = (f" {natural}" if all(isinstance(e, int) for e in natural) else "")

    def scatter(v: list[Expr]) -> Stmt:
        target = Var("target")
        coords = unravel(target, natural)
        fits = all_of([c < e for c, e, full in zip(coords, out.shape, natural, strict=True)
                       if not (isinstance(e, int) and isinstance(full, int)) or e < full])
        store = out.store(coords, x.load(*v))
        return block(
            Declare(target, where.load(*v)),
            If(Binary("and", target >= 0, target < total),
               store if fits is None else If(fits, store),
               Report(f"MaxUnpool: indices fall outside the unpooled shape{where_text}")),
        )

    # Serial scatter: duplicate indices keep the last write, as numpy's assignment does.
    return [*kernels, ctx.kernel(block(zero, nest(list(x.shape), scatter, "s")))]


def _unpool_extents(ctx: LowerContext, natural: list[int | Expr], out: Buffer) -> list[Kernel]:
    """The kernel defining MaxUnpool's run-time output extents, if any."""
    given = ctx.input(2) if ctx.has_input(2) else None
    if given is not None and given.shape != (len(natural),):
        raise ctx.fail(f"output_shape must be a static vector of {len(natural)} values, got "
                       f"%{given.name} of shape {given.shape}")
    stmts: list[Stmt] = []
    for axis, extent in enumerate(out.shape):
        if not (isinstance(extent, Expr) and any(extent is u for u in ctx.undefined_dims)):
            continue
        value: Expr = as_index(natural[axis])
        if given is not None:
            value = given.load(idx(axis)).cast(DType.I64)
            stmts.append(If(value < 0, Report(
                f"{ctx.node.describe()}: output_shape has a negative value on axis {axis}")))
            value = Binary("max", value, idx(0))
        stmts.append(define_dim(extent, value))
    return [ctx.kernel(block(stmts), outputs=[], scratch=[])] if stmts else []


def _round_half_away(v: Expr) -> Expr:
    return Unary("sign", v) * Unary("floor", Unary("abs", v) + 0.5)


@lowering(Op.MAX_ROI_POOL)
def lower_max_roi_pool(ctx: LowerContext) -> list[Kernel]:
    x, rois, out = ctx.input(0), ctx.input(1), ctx.output()
    pooled = [int(v) for v in ctx.attr("pooled_shape")]
    scale = const(float(ctx.attr("spatial_scale")), DType.F64)
    height, width = x.shape[2:]
    f64 = DType.F64

    def roi(r: Expr, column: int) -> Expr:
        return rois.load(r, column).cast(f64)

    def bounds(r: Expr, b: Expr, axis: int, size: int) -> tuple[Expr, Expr]:
        start = _round_half_away(roi(r, 1 + axis) * scale)
        end = _round_half_away(roi(r, 3 + axis) * scale)
        step = Binary("max", end - start + 1.0, const(1.0, f64)) / float(pooled[1 - axis])
        low = Unary("floor", b.cast(f64) * step) + start
        high = Unary("ceil", (b + 1).cast(f64) * step) + start

        def clip(v: Expr) -> Expr:
            return Binary("min", Binary("max", v, const(0, f64)), const(size, f64)).cast(
                DType.I64)

        return clip(low), clip(high)

    def body(v: list[Expr]) -> Stmt:
        r, c, i, j = v
        batch, best, seen = Var("batch"), Var("best", x.dtype), Var("seen", DType.BOOL)
        (y0, y1), (x0, x1) = bounds(r, i, 1, height), bounds(r, j, 0, width)
        top, left = Var("top"), Var("left")
        h, w = Var("h"), Var("w")
        scan = Loop(h, y1 - top, Loop(w, x1 - left, block(
            Assign(best, Binary("max", best, x.load(batch, c, top + h, left + w))),
            Assign(seen, const(True, DType.BOOL)))))
        return block(
            Declare(batch, rois.load(r, 0).cast(DType.I64)),
            If(Binary("and", batch >= 0, batch < x.shape[0]),
               block(Declare(best, const(lowest(x.dtype), x.dtype)),
                     Declare(seen, const(False, DType.BOOL)),
                     Declare(top, y0), Declare(left, x0), scan,
                     out.store([r, c, i, j], select(seen, best, const(0, x.dtype)))),
               Report("MaxRoiPool: a region's batch index is outside the input batch")),
        )

    work = out.numel * height * width
    return [ctx.kernel(nest(list(out.shape), body, "o", work=work))]


@lowering(Op.ROI_ALIGN)
def lower_roi_align(ctx: LowerContext) -> list[Kernel]:
    x, rois, batch_indices, out = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    body = roi_align_body(ctx, x, rois, batch_indices, out)
    return [ctx.kernel(nest(list(out.shape), body, "o", work=out.numel * 16))]
