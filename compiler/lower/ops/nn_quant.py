"""Lowerings of linear quantization: QuantizeLinear, DequantizeLinear (per-tensor, per-axis
and blocked scales) and DynamicQuantizeLinear (a range pass, then the quantizing pass)."""

from __future__ import annotations

from ...ir.op import Op
from ...ir.shapes import normalize_axis
from ...ir.types import DType
from ..kernel_ir import Assign, Binary, Buffer, Declare, Expr, Kernel, Stmt, Unary, Var, block
from ..kernel_ir import select as select_expr
from ..registry import LowerContext, lowering
from .common import const
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

    return [ctx.kernel(nest(list(x.shape), body, "o", work=4 * x.numel))]


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


@lowering(Op.DYNAMIC_QUANTIZE_LINEAR)
def lower_dynamic_quantize_linear(ctx: LowerContext) -> list[Kernel]:
    x = ctx.input(0)
    y, scale_out, zero_out = ctx.output(0), ctx.output(1), ctx.output(2)
    f32 = DType.F32
    low, high, scale = Var("low", f32), Var("high", f32), Var("scale", f32)

    def track(i: list[Expr]) -> Stmt:
        value = x.load(*i)
        return block(Assign(low, Binary("min", low, value)),
                     Assign(high, Binary("max", high, value)))

    # The range always includes 0, so the zero point is exact.
    zp = Binary("min", Binary("max", Unary("round", -low / scale), const(0, f32)),
                const(255, f32))
    ranges = block(
        Declare(low, const(0, f32)), Declare(high, const(0, f32)),
        nest(list(x.shape), track, "r"),
        Declare(scale, (high - low) / 255.0),
        scale_out.store([], scale),
        zero_out.store([], select_expr(scale.eq(0.0), const(0, DType.U8), zp.cast(DType.U8))),
    )
    stored_scale, stored_zero = scale_out.load(), zero_out.load()

    def quantize(i: list[Expr]) -> Stmt:
        value = requantize(x.load(*i) / stored_scale, stored_zero, DType.U8)
        return y.store(i, select_expr(stored_scale.eq(0.0), const(0, DType.U8), value))

    return [
        ctx.kernel(ranges, inputs=[x], outputs=[scale_out, zero_out]),
        ctx.kernel(nest(list(x.shape), quantize, "o", work=4 * x.numel),
                   inputs=[x, scale_out, zero_out], outputs=[y]),
    ]
