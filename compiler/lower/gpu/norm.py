"""GPU schedules of Softmax / LogSoftmax and the normalizations (Layer-, Instance-, Group-,
RMSNormalization): one block per row (compiler/lower/gpu/rows.py), block reductions for the
row's max and sum (Softmax), mean and variance (two passes as the reference computes them) or
mean square, then a phase writing every element. f32 only (other types: the CPU lowering,
bound generically)."""

from __future__ import annotations

from ...ir.op import Op
from ...ir.types import DType
from ..kernel_ir import Buffer, Const, Declare, Expr, Kernel, Stmt, Unary, Var
from ..ops.common import broadcast_index, idx
from ..ops.elementwise_scalar import divide, exp, log, lowest
from ..ops.reduce_loops import normalized_axis
from ..registry import LowerContext
from .rows import RowBlock, Rows


def softmax_gpu(ctx: LowerContext) -> list[Kernel] | None:
    data, out = ctx.input(0), ctx.output()
    if data.dtype is not DType.F32 or data.numel == 0:
        return None
    axis = normalized_axis(ctx, int(ctx.attr("axis")), len(data.shape))
    block = RowBlock(Rows(data.shape, (axis,)), ctx.name)
    f32 = DType.F32
    peak_stmts, peak = block.fold("peak", "max", lowest(f32), lambda at: data.load(*at))
    sum_stmts, total = block.fold("total", "add", Const(0.0, f32),
                                  lambda at: exp(data.load(*at) - peak))
    stmts: list[Stmt] = [*peak_stmts, *sum_stmts]
    if ctx.op is Op.SOFTMAX:
        write = block.each(lambda at: out.store(at, divide(exp(data.load(*at) - peak), total)))
    else:
        log_total = Var("log_total", f32)
        stmts.append(Declare(log_total, log(total)))
        write = block.each(lambda at: out.store(at, data.load(*at) - peak - log_total))
    return [block.kernel(ctx, [*stmts, write])]


def _standardize(block: RowBlock, x: Buffer, eps: float) -> tuple[list[Stmt], Var, Var]:
    """Statements declaring the row's ``mean`` and ``inv_std`` = 1 / sqrt(var + eps) of ``x``
    (f32; two passes, the centred variance, as the reference computes them)."""
    f32 = DType.F32
    count = float(block.rows.length)
    sum_stmts, total = block.fold("sum", "add", Const(0.0, f32), lambda at: x.load(*at))
    mean, inv = Var("mean", f32), Var("inv_std", f32)

    def square(at: list[Expr]) -> Expr:
        centred = x.load(*at) - mean
        return centred * centred

    square_stmts, squares = block.fold("squares", "add", Const(0.0, f32), square)
    return [*sum_stmts, Declare(mean, total / count), *square_stmts,
            Declare(inv, Const(1.0, f32) / Unary("sqrt", squares / count + eps))], mean, inv


def _float32(ctx: LowerContext, *buffers: Buffer | None) -> bool:
    stash = ctx.attr("stash_type")
    return (stash is None or stash is DType.F32) and all(
        b is None or b.dtype is DType.F32 for b in buffers) and ctx.input(0).numel > 0


def layer_norm_gpu(ctx: LowerContext) -> list[Kernel] | None:
    x, scale, out = ctx.input(0), ctx.input(1), ctx.output()
    bias = ctx.input(2) if ctx.has_input(2) else None
    if not _float32(ctx, x, scale, bias, out):
        return None
    axis = normalized_axis(ctx, int(ctx.attr("axis")), len(x.shape))
    rows = Rows(x.shape, tuple(range(axis, len(x.shape))))
    block = RowBlock(rows, ctx.name)
    stmts, mean, inv = _standardize(block, x, float(ctx.attr("epsilon")))

    def write(at: list[Expr]) -> Stmt:
        value = (x.load(*at) - mean) * inv * scale.load(*broadcast_index(at, scale))
        if bias is not None:
            value = value + bias.load(*broadcast_index(at, bias))
        return out.store(at, value)

    stats = []
    for position, value in ((1, mean), (2, inv)):
        target = ctx.outputs[position] if len(ctx.outputs) > position else None
        if target is not None:
            stats.append(target.store(_stat_index(rows, block, target), value))
    if stats:
        stmts.append(block.single(stats))
    stmts.append(block.each(write))
    return [block.kernel(ctx, stmts)]


def instance_norm_gpu(ctx: LowerContext) -> list[Kernel] | None:
    """InstanceNormalization: a row per (image, channel) over the spatial axes."""
    x, scale, bias, out = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    if not _float32(ctx, x, scale, bias, out):
        return None
    block = RowBlock(Rows(x.shape, tuple(range(2, len(x.shape)))), ctx.name)
    stmts, mean, inv = _standardize(block, x, float(ctx.attr("epsilon")))
    stmts.append(block.each(lambda at: out.store(
        at, (x.load(*at) - mean) * inv * scale.load(at[1]) + bias.load(at[1]))))
    return [block.kernel(ctx, stmts)]


def group_norm_gpu(ctx: LowerContext) -> list[Kernel] | None:
    """GroupNormalization: a row per (image, group of channels), over the x and y seen as
    [N, groups, channels of a group x spatial] (views of the same memory)."""
    x, scale, bias, out = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    if not _float32(ctx, x, scale, bias, out) or x.strides is not None:
        return None
    groups = int(ctx.attr("num_groups"))
    per_group = x.shape[1] // groups
    plane = x.numel // (x.shape[0] * x.shape[1])
    shape = (x.shape[0], groups, per_group * plane)
    xv, outv = (Buffer(b.name, b.dtype, shape) for b in (x, out))
    block = RowBlock(Rows(shape, (2,)), ctx.name)
    stmts, mean, inv = _standardize(block, xv, float(ctx.attr("epsilon")))

    def write(at: list[Expr]) -> Stmt:
        channel = at[1] * per_group + at[2] // plane
        value = (xv.load(*at) - mean) * inv * scale.load(channel) + bias.load(channel)
        return outv.store(at, value)

    stmts.append(block.each(write))
    return [block.kernel(ctx, stmts)]


def rms_norm_gpu(ctx: LowerContext) -> list[Kernel] | None:
    """RMSNormalization: x / sqrt(mean(x^2) + eps) * scale per row of the trailing axes."""
    x, scale, out = ctx.input(0), ctx.input(1), ctx.output()
    if not _float32(ctx, x, scale, out):
        return None
    axis = normalized_axis(ctx, int(ctx.attr("axis")), len(x.shape))
    block = RowBlock(Rows(x.shape, tuple(range(axis, len(x.shape)))), ctx.name)
    f32 = DType.F32
    sum_stmts, squares = block.fold("squares", "add", Const(0.0, f32),
                                    lambda at: x.load(*at) * x.load(*at))
    root = Var("root", f32)
    mean_square = squares / float(block.rows.length) + float(ctx.attr("epsilon"))
    return [block.kernel(ctx, [*sum_stmts, Declare(root, Unary("sqrt", mean_square)),
                               block.each(lambda at: out.store(at, x.load(*at) / root * scale.load(
                                   *broadcast_index(at, scale))))])]


def _stat_index(rows: Rows, block: RowBlock, target: Buffer) -> list[Expr]:
    """Where a row's statistic goes: the kept axes, then 1-extent axes."""
    coords = rows.kept_coords(block.row)
    return [*coords, *([idx(0)] * (len(target.shape) - len(coords)))]
