"""Lowerings of linear quantization: QuantizeLinear, DequantizeLinear (per-tensor, per-axis
and blocked scales) and DynamicQuantizeLinear (a range pass, then the quantizing pass)."""

from __future__ import annotations

from ...ir.op import Op
from ...ir.shapes import normalize_axis
from ...ir.types import DType
from ..kernel_ir import Assign, Binary, Buffer, Declare, Expr, Kernel, Stmt, Unary, Var, block
from ..kernel_ir import select as select_expr
from ..registry import LowerContext, lowering
from .common import Extent, const
from .nn_common import nest, requantize
from .nn_conv import scalar


def _param(ctx: LowerContext, param: Buffer, index: list[Expr], rank: int) -> Expr:
    """The scale or zero point applying at ``index``: per tensor, per axis or per block."""
    block_size = int(ctx.attr("block_size"))
    if param.numel == 1 and block_size == 0:
        return scalar(param)
    axis = normalize_axis(int(ctx.attr("axis")), rank)
    if block_size > 0:
        if len(param.shape) != rank:
            raise ctx.fail(f"blocked quantization needs a rank-{rank} scale, got "
                           f"{list(param.shape)}")
        return param.load(*[i // block_size if a == axis else i for a, i in enumerate(index)])
    return param.load(index[axis])


@lowering(Op.QUANTIZE_LINEAR)
def lower_quantize_linear(ctx: LowerContext) -> list[Kernel]:
    x, scale, out = ctx.input(0), ctx.input(1), ctx.output()
    zero = ctx.input(2) if ctx.has_input(2) else None
    precision = ctx.attr("precision")
    work = precision if precision is not None else scale.dtype
    if not work.is_float:
        work = DType.F32
    rank = len(x.shape)

    def body(i: list[Expr]) -> Stmt:
        quotient = x.load(*i).cast(work) / _param(ctx, scale, i, rank).cast(work)
        zp = const(0, DType.I64) if zero is None else _param(ctx, zero, i, rank)
        return out.store(i, requantize(quotient, zp, out.dtype))

    return [ctx.kernel(nest(list(x.shape), body, "o", work=4 * x.numel, vectorize_inner=True))]


@lowering(Op.DEQUANTIZE_LINEAR)
def lower_dequantize_linear(ctx: LowerContext) -> list[Kernel]:
    x, scale, out = ctx.input(0), ctx.input(1), ctx.output()
    zero = ctx.input(2) if ctx.has_input(2) else None
    rank = len(x.shape)

    def body(i: list[Expr]) -> Stmt:
        shifted = x.load(*i).cast(DType.I64)
        if zero is not None:
            shifted = shifted - _param(ctx, zero, i, rank).cast(DType.I64)
        value = shifted.cast(out.dtype) * _param(ctx, scale, i, rank).cast(out.dtype)
        return out.store(i, value)

    return [ctx.kernel(nest(list(x.shape), body, "o", work=2 * x.numel, vectorize_inner=True))]


# Lanes of the range pass's partial minima and maxima: whole vectors of f32 on any x86 target.
RANGE_LANES = 64


@lowering(Op.DYNAMIC_QUANTIZE_LINEAR)
def lower_dynamic_quantize_linear(ctx: LowerContext) -> list[Kernel]:
    """A range pass (RANGE_LANES running minima and maxima updated lane-wise, a vectorizable
    loop with no reduction in it, then folded with the tail), then the quantizing pass."""
    x = ctx.input(0)
    y, scale_out, zero_out = ctx.output(0), ctx.output(1), ctx.output(2)
    f32 = DType.F32
    low, high, scale = Var("low", f32), Var("high", f32), Var("scale", f32)
    flat = Buffer(x.name, x.dtype, (x.numel,))
    # (run-time rows and tail: loops of run-time length, either possibly empty)
    rows: Extent = x.numel // RANGE_LANES
    tail: Extent = x.numel % RANGE_LANES
    lanes = ctx.scratch("range", f32, (2, RANGE_LANES))

    def track(value: Expr) -> Stmt:
        return block(Assign(low, Binary("min", low, value)),
                     Assign(high, Binary("max", high, value)))

    def lane_wise(v: list[Expr]) -> Stmt:
        value = flat.load(v[0] * RANGE_LANES + v[1])
        return block(lanes.store([0, v[1]], Binary("min", lanes.load(0, v[1]), value)),
                     lanes.store([1, v[1]], Binary("max", lanes.load(1, v[1]), value)))

    def fold(v: list[Expr]) -> Stmt:
        return block(track(lanes.load(0, v[0])), track(lanes.load(1, v[0])))

    # The range always includes 0 (so the zero point is exact): every lane starts there.
    ranges: list[Stmt] = [Declare(low, const(0, f32)), Declare(high, const(0, f32))]
    if not isinstance(rows, int) or rows:
        ranges += [nest([2, RANGE_LANES], lambda v: lanes.store(v, const(0, f32)), "z"),
                   nest([rows, RANGE_LANES], lane_wise, "r", vectorize_inner=True),
                   nest([RANGE_LANES], fold, "f")]
    if not isinstance(tail, int) or tail:
        ranges.append(nest([tail], lambda v: track(flat.load(v[0] + rows * RANGE_LANES)), "t"))
    zp = Binary("min", Binary("max", Unary("round", -low / scale), const(0, f32)),
                const(255, f32))
    ranges += [
        Declare(scale, (high - low) / 255.0),
        scale_out.store([], scale),
        zero_out.store([], select_expr(scale.eq(0.0), const(0, DType.U8), zp.cast(DType.U8))),
    ]
    stored_scale, stored_zero = scale_out.load(), zero_out.load()

    def quantize(i: list[Expr]) -> Stmt:
        value = requantize(x.load(*i) / stored_scale, stored_zero, DType.U8)
        return y.store(i, select_expr(stored_scale.eq(0.0), const(0, DType.U8), value))

    return [
        ctx.kernel(block(ranges), inputs=[x], outputs=[scale_out, zero_out]),
        ctx.kernel(nest(list(x.shape), quantize, "o", work=4 * x.numel, vectorize_inner=True),
                   inputs=[x, scale_out, zero_out], outputs=[y]),
    ]
