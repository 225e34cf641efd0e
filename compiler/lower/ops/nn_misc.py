"""Lowerings of Dropout, AffineGrid and the NLL / softmax cross-entropy losses."""

from __future__ import annotations

import math
from collections.abc import Callable

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
from .common import const, idx
from .misc_random import seed_key, uniform
from .nn_common import acc_dtype, add_to, all_of, nest
from .nn_conv import scalar
from .rnn import flat_loop


def _training(ctx: LowerContext) -> Expr | bool:
    """Whether Dropout must randomize: statically (a bool) or as a run-time condition."""
    training, ratio = ctx.const(2), ctx.const(1)
    # .flat[0]: a constant scalar may arrive as a one-element array.
    if not ctx.has_input(2) or (training is not None and not bool(training.flat[0])):
        return False
    if ctx.has_input(1) and ratio is not None and float(ratio.flat[0]) == 0.0:
        return False
    conds: list[Expr | None] = []
    if training is None:
        conds.append(scalar(ctx.input(2)))
    if ctx.has_input(1) and ratio is None:
        conds.append(scalar(ctx.input(1)).ne(0.0))
    found = all_of(conds)
    return True if found is None else found


@lowering(Op.DROPOUT)
def lower_dropout(ctx: LowerContext) -> list[Kernel]:
    """Identity with an all-true mask, unless in training mode with a nonzero ratio (known at
    build time or tested at run time): then ``mask = uniform >= ratio`` and
    ``out = x * mask / (1 - ratio)``. The uniforms come from the counter-based generator of
    misc_random.py keyed by ``seed`` (seed 0 without one): same distribution as the
    reference's numpy draws, not the same values."""
    x, out = ctx.input(0), ctx.output(0)
    mask = ctx.outputs[1] if len(ctx.outputs) > 1 else None
    active = _training(ctx)
    if active is False:
        def copy(i: list[Expr]) -> Stmt:
            stores = [out.store(i, x.load(*i))]
            if mask is not None:
                stores.append(mask.store(i, const(True, DType.BOOL)))
            return block(stores)

        return [ctx.kernel(nest(list(x.shape), copy, "o", work=x.numel, vectorize_inner=True),
                           inputs=[x])]

    known = ctx.const(1)
    if not ctx.has_input(1) or known is not None:
        rate: Expr = const(0.5 if known is None else float(known.flat[0]), DType.F64)
    else:
        rate = scalar(ctx.input(1)).cast(DType.F64)
    # The reference divides by 1 - ratio computed in f64, then rounded to x's type.
    divisor = (const(1.0, DType.F64) - rate).cast(x.dtype)
    key = seed_key(ctx.attr("seed"))
    flat, keep = Var("drop_e"), Var("drop_keep", DType.BOOL)

    def body(i: list[Expr]) -> Stmt:
        stmts: list[Stmt] = []
        u = uniform(stmts, "drop_u", key, flat)
        stmts.append(Declare(keep, u >= rate))
        # x * keep as the reference computes it (a dropped inf gives NaN, a negative -0).
        value: Expr = x.load(*i) * keep.cast(x.dtype) / divisor
        kept: Expr = keep
        if isinstance(active, Expr):  # run-time inference mode: the identity
            value = select(active, value, x.load(*i))
            kept = Binary("or", kept, Unary("not", active))
        stmts.append(out.store(i, value))
        if mask is not None:
            stmts.append(mask.store(i, kept))
        return block(stmts)

    return [ctx.kernel(flat_loop(flat.name, x.shape, body, 16))]


def _nll(
    ctx: LowerContext, log_prob: Buffer, target: Buffer, weight: Buffer | None, out: Buffer,
    dtype: DType,
) -> Stmt:
    """NegativeLogLikelihoodLoss over ``log_prob`` [N, C, ...] computed in ``dtype``."""
    classes = log_prob.shape[1]
    bound = classes if isinstance(classes, int) else "the class count"
    ignore = ctx.attr("ignore_index")
    reduction = ctx.attr("reduction")
    total, weights = Var("total", dtype), Var("weights", dtype)

    def element(i: list[Expr], emit: Callable[[Expr, Expr], Stmt]) -> Stmt:
        label, safe, w = Var("label"), Var("safe"), Var("w", dtype)
        valid = None if ignore is None else label.ne(int(ignore))
        safe_value: Expr = label if valid is None else select(valid, label, idx(0))
        picked = log_prob.load(i[0], safe, *i[1:]).cast(dtype)
        weight_value = (const(1.0, dtype) if weight is None else weight.load(safe).cast(dtype))
        if valid is not None:
            weight_value = select(valid, weight_value, const(0.0, dtype))
        return block(
            Declare(label, target.load(*i).cast(DType.I64)),
            Declare(safe, safe_value),
            If(Binary("or", safe < 0, safe >= classes),
               Report(f"{ctx.op.value}: target holds a class outside [0, {bound})"),
               block(Declare(w, weight_value), emit(-picked * w, w))),
        )

    if reduction == "none":
        return nest(list(target.shape),
                    lambda i: element(i, lambda loss, _w: out.store(i, loss.cast(out.dtype))),
                    "o", work=4 * target.numel)
    loop = nest(list(target.shape),
                lambda i: element(i, lambda loss, w: block(add_to(total, loss),
                                                           add_to(weights, w))), "o")
    result: Expr = total
    if reduction == "mean":
        result = select(weights.eq(0.0), total * 0.0, total / weights)
    return block(Declare(total, const(0, dtype)), Declare(weights, const(0, dtype)), loop,
                 out.store([], result.cast(out.dtype)))


@lowering(Op.NEGATIVE_LOG_LIKELIHOOD_LOSS)
def lower_nll_loss(ctx: LowerContext) -> list[Kernel]:
    x, target, out = ctx.input(0), ctx.input(1), ctx.output()
    weight = ctx.input(2) if ctx.has_input(2) else None
    return [ctx.kernel(_nll(ctx, x, target, weight, out, x.dtype))]


@lowering(Op.SOFTMAX_CROSS_ENTROPY_LOSS)
def lower_softmax_cross_entropy(ctx: LowerContext) -> list[Kernel]:
    scores, labels = ctx.input(0), ctx.input(1)
    weight = ctx.input(2) if ctx.has_input(2) else None
    loss = ctx.output(0)
    log_out = ctx.outputs[1] if len(ctx.outputs) > 1 else None
    acc = acc_dtype(scores.dtype)
    log_prob = ctx.scratch("log_prob", acc, scores.shape)
    classes = scores.shape[1]
    positions = [scores.shape[0], *scores.shape[2:]]

    def body(p: list[Expr]) -> Stmt:
        peak, total = Var("peak", acc), Var("total", acc)

        def at(c: Expr) -> list[Expr]:
            return [p[0], c, *p[1:]]

        def shifted(c: Expr) -> Expr:
            return scores.load(*at(c)).cast(acc) - peak

        def write(c: list[Expr]) -> Stmt:
            value = Var("value", acc)
            stores = [log_prob.store(at(c[0]), value)]
            if log_out is not None:
                stores.append(log_out.store(at(c[0]), value.cast(log_out.dtype)))
            return block(Declare(value, shifted(c[0]) - Unary("log", total)), stores)

        return block(
            Declare(peak, const(-math.inf, acc)),
            nest([classes], lambda c: Assign(peak, Binary("max", peak, scores.load(*at(c[0]))
                                                          .cast(acc))), "a"),
            Declare(total, const(0, acc)),
            nest([classes], lambda c: add_to(total, Unary("exp", shifted(c[0]))), "b"),
            nest([classes], write, "w"),
        )

    outputs = [b for b in (log_out,) if b is not None]
    return [
        ctx.kernel(nest(positions, body, "p", work=4 * scores.numel), inputs=[scores],
                   outputs=outputs),
        ctx.kernel(_nll(ctx, log_prob, labels, weight, loss, acc),
                   inputs=[labels] + ([weight] if weight is not None else []), outputs=[loss]),
    ]


@lowering(Op.AFFINE_GRID)
def lower_affine_grid(ctx: LowerContext) -> list[Kernel]:
    """The grid of normalized pixel coordinates mapped by each theta. A size input known only
    at run time first goes through a shape kernel that defines the spatial extents (and Reports
    a size whose N is not theta's or whose extents are negative)."""
    theta, out = ctx.input(0), ctx.output()
    acc = acc_dtype(theta.dtype)
    align = bool(ctx.attr("align_corners"))
    spatial = list(out.shape[1:-1])
    rank = len(spatial)
    kernels = _affine_grid_shape(ctx) if ctx.undefined_dims else []

    def base(position: Expr, size: int | Expr) -> Expr:
        """Normalized coordinate of pixel ``position`` along an axis of ``size`` (f64)."""
        f64 = DType.F64
        if isinstance(size, Expr):
            extent = size.cast(f64)
            if align:
                return select(size.eq(1), const(0.0, f64),
                              position.cast(f64) * Binary("div", const(2.0, f64), extent - 1.0)
                              - 1.0)
            return (position.cast(f64) * 2.0 + 1.0) / extent - 1.0
        if align:
            if size == 1:
                return const(0.0, f64)
            return position.cast(f64) * (2.0 / (size - 1)) - 1.0
        return (position.cast(f64) * 2.0 + 1.0) / float(size) - 1.0

    def body(v: list[Expr]) -> Stmt:
        n, s, j = v[0], v[1:-1], v[-1]
        # Homogeneous point (x, y[, z], 1): x runs along the last spatial axis.
        value: Expr = theta.load(n, j, rank).cast(acc)
        terms = [base(s[rank - 1 - k], spatial[rank - 1 - k]).cast(acc)
                 * theta.load(n, j, k).cast(acc) for k in range(rank)]
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return out.store(v, (total + value).cast(out.dtype))

    work = extent_mul(out.numel, rank + 1)
    return [*kernels, ctx.kernel(nest(list(out.shape), body, "o", work=work), inputs=[theta])]


def _affine_grid_shape(ctx: LowerContext) -> list[Kernel]:
    """The shape kernel of an AffineGrid whose size input is a run-time value."""
    theta, size, out = ctx.input(0), ctx.input(1), ctx.output()
    what = ctx.node.describe()
    stmts: list[Stmt] = [If(size.load(0).ne(as_index(theta.shape[0])), Report(
        f"{what}: size[0] (N) differs from theta's batch extent"))]
    undefined = {id(d) for d in ctx.undefined_dims}
    for axis, extent in enumerate(out.shape[1:-1]):
        given = size.load(axis + 2)
        stmts.append(If(given < 0, Report(f"{what}: size holds a negative extent")))
        if id(extent) in undefined:
            stmts.append(define_dim(extent, Binary("max", given, idx(0))))
        else:
            stmts.append(If(given.ne(as_index(extent)), Report(
                f"{what}: size gives a spatial extent other than the declared one")))
    return [ctx.kernel(block(stmts), inputs=[size], outputs=[])]
