"""Lowerings of the layout transforms (NCHW <-> NCHW[b]c copies); ConvNCHWc, the reason
blocked layouts exist, is lowered in conv_tiled.py."""

from __future__ import annotations

from ...ir.op import Op
from ...ir.rules.layout import block_of
from ..kernel_ir import Buffer, Expr, If, Kernel, Stmt
from ..registry import LowerContext, lowering
from .common import const
from .nn_common import nest


@lowering(Op.LAYOUT_TRANSFORM)
def lower_layout_transform(ctx: LowerContext) -> list[Kernel]:
    x, out = ctx.input(0), ctx.output()
    width = block_of(str(ctx.attr("dst_layout")))
    if width:
        return [ctx.kernel(_to_blocked(x, out, width))]
    return [ctx.kernel(_from_blocked(x, out))]


def _to_blocked(x: Buffer, out: Buffer, width: int) -> Stmt:
    """out[n, cb, h, w, l] = x[n, cb * b + l, h, w], zero past the real channels."""
    channels = x.shape[1]

    def body(v: list[Expr]) -> Stmt:
        n, cb, h, w, lane = v
        c = cb * width + lane
        copy = out.store(v, x.load(n, c, h, w))
        if channels % width == 0:
            return copy
        return If(c < channels, copy, out.store(v, const(0, out.dtype)))

    return nest(list(out.shape), body, "b", work=out.numel)


def _from_blocked(x: Buffer, out: Buffer) -> Stmt:
    """out[n, c, h, w] = x[n, c / b, h, w, c % b] (the padded channels dropped)."""
    width = x.shape[4]

    def body(v: list[Expr]) -> Stmt:
        n, c, h, w = v
        return out.store(v, x.load(n, c // width, h, w, c % width))

    return nest(list(out.shape), body, "u", work=out.numel, vectorize_inner=True)
