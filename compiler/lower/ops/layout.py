"""Lowerings of the layout ops: LayoutTransform (NCHW <-> NCHW[b]c copies) and ConvNCHWc.

ConvNCHWc is the reason blocked layouts exist. One parallel iteration computes one output row
``out[n, ocb, oh, :, :]`` (OW pixels x b lanes, a few KiB that stay in L1): the row starts as
the bias, then for every input-channel block, kernel row, kernel column, output pixel and input
lane it adds ``x[n, icb, ih, iw, ci] * w[ocb, icb, kh, kw, ci, :]`` to the pixel's b lanes. The
innermost loop runs over the b output-channel lanes, contiguous in both the weights and the
output: one vector multiply-add per input lane, the pixel's b accumulators staying in a
register across the input lanes. The input lanes sit inside the pixel loop on purpose: with the
pixel loop innermost but one, LLVM fully unrolls short rows (OW = 7 or 14) and then vectorizes
across pixels with gathers and scatters, 10x slower. Padding never loads: the kernel columns
are unrolled at lowering time, which turns the valid pixel range of each column into a constant
loop range, and a kernel row outside the input is skipped by one guard per row.
"""

from __future__ import annotations

from collections.abc import Callable

from ...ir.op import Op
from ...ir.rules.layout import block_of
from ...ir.rules.nn_geometry import Window, kernel_shape_of, resolve_window
from ..kernel_ir import Buffer, Expr, If, Kernel, Loop, LoopKind, Stmt, Var, block
from ..registry import LowerContext, lowering
from .common import PARALLEL_WORK, affine, const, idx
from .nn_common import acc_dtype, all_of, guarded, nest, unravel


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


def _columns(win: Window, size: int, out_size: int, tap: int) -> tuple[int, int]:
    """The output columns [lo, hi) whose input column for kernel column ``tap`` lies in
    [0, size): ``o * stride + offset`` in range, ``offset = tap * dilation - pad``."""
    stride, offset = win.strides[1], tap * win.dilations[1] - win.pads[1]
    lo = max(0, -(offset // stride))
    hi = min(out_size, (size - 1 - offset) // stride + 1)
    return lo, max(lo, hi)


@lowering(Op.CONV_NCHWC)
def lower_conv_nchwc(ctx: LowerContext) -> list[Kernel]:
    x, w, out = ctx.input(0), ctx.input(1), ctx.output()
    bias = ctx.input(2) if ctx.has_input(2) else None
    batch, in_blocks, height, width_in, lanes = x.shape
    _, out_blocks, out_h, out_w, _ = out.shape
    kernel = kernel_shape_of(ctx.attrs, w.shape[2:4], 2, ctx.fail)
    win = resolve_window(ctx.attrs, (height, width_in), kernel, ctx.fail)
    acc_type = acc_dtype(x.dtype)
    if acc_type != x.dtype:
        # Accumulating a narrow type in its own precision would round every partial sum.
        raise ctx.fail(f"blocked convolution of {x.dtype.value} is not supported (f32/f64 only)")

    def row(v: Expr) -> Stmt:
        n, ocb, oh = unravel(v, (batch, out_blocks, out_h))
        lane = Var("l")

        def over_lanes(make: Callable[[Expr], Stmt]) -> Loop:
            return Loop(lane, idx(lanes), make(lane), LoopKind.VECTORIZE, lanes)

        def init(ow: Expr) -> Stmt:
            def store(lv: Expr) -> Stmt:
                value = const(0, acc_type) if bias is None else bias.load(ocb, lv)
                return out.store([n, ocb, oh, ow, lv], value)

            return over_lanes(store)

        first = Var("ow")
        icb, kh, ci = Var("icb"), Var("kh"), Var("ci")
        ih = affine([(oh, win.strides[0]), (kh, win.dilations[0])], -win.pads[0])
        columns: list[Stmt] = []
        for kw in range(kernel[1]):
            lo, hi = _columns(win, width_in, out_w, kw)
            if lo == hi:
                continue
            o = Var(f"o{kw}")
            ow = o + lo if lo else o
            iw = affine([(o, win.strides[1])], lo * win.strides[1] + kw * win.dilations[1]
                        - win.pads[1])
            pixel = x.load(n, icb, ih, iw, ci)

            def update(lv: Expr, ow: Expr = ow, pixel: Expr = pixel, kw: int = kw) -> Stmt:
                target = [n, ocb, oh, ow, lv]
                product = pixel * w.load(ocb, icb, kh, kw, ci, lv)
                return out.store(target, out.load(*target) + product)

            columns.append(Loop(o, idx(hi - lo), Loop(ci, idx(lanes), over_lanes(update))))
        lowest = -win.pads[0]
        highest = (out_h - 1) * win.strides[0] + (kernel[0] - 1) * win.dilations[0] - win.pads[0]
        inside = None if lowest >= 0 and highest < height else all_of([ih >= 0, ih < height])
        taps = guarded(inside, block(columns))
        return block(Loop(first, idx(out_w), init(first)),
                     Loop(icb, idx(in_blocks), Loop(kh, idx(kernel[0]), taps)))

    rows = batch * out_blocks * out_h
    work = out.numel * in_blocks * lanes * kernel[0] * kernel[1]
    outer = Var("r")
    kind = LoopKind.PARALLEL if work > PARALLEL_WORK and rows > 1 else LoopKind.SERIAL
    return [ctx.kernel(Loop(outer, idx(rows), row(outer), kind))]
