"""Lowerings of the convolution family: Conv, ConvInteger, QLinearConv, CausalConvWithState
(forward windows), ConvTranspose and Col2Im (gathered transposed windows).

Every output element is one accumulator (a local) summed over input channels then taps, the
reduction innermost; the outermost loop runs over batch x output channels (fused, so batch 1
still parallelizes). Padding never loads: taps outside the input are skipped by guards, which is
the zero padding of the reference (for the integer convs: zero after the zero-point shift).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ...ir.op import Op
from ...ir.rules.nn_geometry import (
    Window,
    kernel_shape_of,
    resolve_transpose_window,
    resolve_window,
)
from ...ir.types import DType
from ..kernel_ir import Assign, Buffer, Declare, Expr, If, Kernel, Loop, Stmt, Unary, Var, block
from ..registry import LowerContext, lowering
from .common import const, idx
from .nn_common import acc_dtype, add_to, nest, ravel, requantize, unravel
from .nn_window import over_scatter_taps, over_window

# (n, c) -> per-tap loader (positions -> value); (m, c_local, taps) -> weight value.
LoadX = Callable[[Expr, Expr, list[Expr]], Expr]
LoadW = Callable[[Expr, Expr, list[Expr]], Expr]
Finish = Callable[[Expr, Expr, Expr, list[Expr]], Stmt]


def scalar(buffer: Buffer) -> Expr:
    """The single element of a scalar or one-element buffer."""
    return buffer.load(*([0] * len(buffer.shape)))


def per_channel(buffer: Buffer, channel: Expr) -> Expr:
    """A per-tensor (one element) or per-channel (vector) parameter at ``channel``."""
    return buffer.load(channel) if buffer.numel > 1 else scalar(buffer)


def forward_window(ctx: LowerContext, x: Buffer, weight: Buffer) -> Window:
    kernel = kernel_shape_of(ctx.attrs, weight.shape[2:], len(x.shape) - 2, ctx.fail)
    return resolve_window(ctx.attrs, x.shape[2:], kernel, ctx.fail)


def conv_nest(
    x: Buffer,
    out: Buffer,
    win: Window,
    group: int,
    acc_type: DType,
    load_x: LoadX,
    load_w: LoadW,
    finish: Finish,
) -> Stmt:
    """out[n, m, o] = finish(sum over c in m's group and taps of load_x * load_w)."""
    batch, channels_out = out.shape[:2]
    per_group_in = x.shape[1] // group
    per_group_out = channels_out // group
    outs = list(out.shape[2:])
    taps = math.prod(win.kernel)

    def body(v: list[Expr]) -> Stmt:
        n, m = unravel(v[0], (batch, channels_out))
        base = (m // per_group_out) * per_group_in if group > 1 else idx(0)
        acc = Var("acc", acc_type)

        def reduction(cv: list[Expr]) -> Stmt:
            c = cv[0] if group == 1 else base + cv[0]

            def tap(taps: list[Expr], positions: list[Expr]) -> Stmt:
                return add_to(acc, load_x(n, c, positions) * load_w(m, cv[0], taps))

            return over_window(win, x.shape[2:], outs, v[1:], tap, "k")

        return block(Declare(acc, const(0, acc_type)),
                     nest([per_group_in], reduction, "c"), finish(acc, n, m, v[1:]))

    return nest([batch * channels_out, *outs], body, "o", work=out.numel * per_group_in * taps)


def _float_conv(ctx: LowerContext, x: Buffer, w: Buffer, win: Window,
                bias: Buffer | None) -> Stmt:
    out = ctx.output()
    acc_type = acc_dtype(x.dtype)

    def finish(acc: Expr, n: Expr, m: Expr, o: list[Expr]) -> Stmt:
        value = acc if bias is None else acc + bias.load(m).cast(acc_type)
        return out.store([n, m, *o], value.cast(out.dtype))

    return conv_nest(
        x, out, win, int(ctx.attr("group")), acc_type,
        lambda n, c, pos: x.load(n, c, *pos).cast(acc_type),
        lambda m, c, taps: w.load(m, c, *taps).cast(acc_type),
        finish,
    )


@lowering(Op.CONV)
def lower_conv(ctx: LowerContext) -> list[Kernel]:
    x, w = ctx.input(0), ctx.input(1)
    bias = ctx.input(2) if ctx.has_input(2) else None
    return [ctx.kernel(_float_conv(ctx, x, w, forward_window(ctx, x, w), bias))]


def _shifted(buffer: Buffer, zero: Buffer | None, channel: Expr | None = None) -> Callable[
        [Expr], Expr]:
    """value -> value - zero point, in i32 (exact for 8-bit data)."""
    if zero is None:
        return lambda value: value.cast(DType.I32)
    zp = per_channel(zero, channel) if channel is not None else scalar(zero)
    return lambda value: value.cast(DType.I32) - zp.cast(DType.I32)


def _integer_conv(
    x: Buffer, w: Buffer, out: Buffer, win: Window, group: int, x_zero: Buffer | None,
    w_zero: Buffer | None, finish: Finish,
) -> Stmt:
    return conv_nest(
        x, out, win, group, DType.I32,
        lambda n, c, pos: _shifted(x, x_zero)(x.load(n, c, *pos)),
        lambda m, c, taps: _shifted(w, w_zero, m)(w.load(m, c, *taps)),
        finish,
    )


@lowering(Op.CONV_INTEGER)
def lower_conv_integer(ctx: LowerContext) -> list[Kernel]:
    x, w, out = ctx.input(0), ctx.input(1), ctx.output()
    x_zero = ctx.input(2) if ctx.has_input(2) else None
    w_zero = ctx.input(3) if ctx.has_input(3) else None

    def finish(acc: Expr, n: Expr, m: Expr, o: list[Expr]) -> Stmt:
        return out.store([n, m, *o], acc)

    win = forward_window(ctx, x, w)
    return [ctx.kernel(_integer_conv(x, w, out, win, int(ctx.attr("group")), x_zero, w_zero,
                                     finish))]


@lowering(Op.QLINEAR_CONV)
def lower_qlinear_conv(ctx: LowerContext) -> list[Kernel]:
    x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero = (ctx.input(i) for i in range(8))
    bias = ctx.input(8) if ctx.has_input(8) else None
    out = ctx.output()
    f32 = DType.F32

    def finish(acc: Expr, n: Expr, m: Expr, o: list[Expr]) -> Stmt:
        total = acc if bias is None else acc + bias.load(m)
        multiplier = (scalar(x_scale).cast(f32) * per_channel(w_scale, m).cast(f32)
                      / scalar(y_scale).cast(f32))
        return out.store([n, m, *o], requantize(total.cast(f32) * multiplier, scalar(y_zero),
                                                out.dtype))

    win = forward_window(ctx, x, w)
    return [ctx.kernel(_integer_conv(x, w, out, win, int(ctx.attr("group")), x_zero, w_zero,
                                     finish))]


@lowering(Op.CAUSAL_CONV_WITH_STATE)
def lower_causal_conv(ctx: LowerContext) -> list[Kernel]:
    """Depthwise conv over concat(past_state, x) along time (zeros without a past state)."""
    x, w = ctx.input(0), ctx.input(1)
    bias = ctx.input(2) if ctx.has_input(2) else None
    past = ctx.input(3) if ctx.has_input(3) else None
    out, state = ctx.output(0), ctx.outputs[1] if len(ctx.outputs) > 1 else None
    batch, channels, steps = x.shape
    k = w.shape[2]
    acc_type = acc_dtype(x.dtype)
    silu = ctx.attr("activation") in ("silu", "swish")

    def padded(n: Expr, c: Expr, p: Expr, then: Callable[[Expr], Stmt],
               zeros: bool = False) -> Stmt:
        """then(padded[n, c, p]): the past state below k - 1, x from there on. Without a past
        state those positions are zeros: skipped (a sum needs no zero terms) unless ``zeros``."""
        current = then(x.load(n, c, p - (k - 1)).cast(acc_type))
        if past is not None:
            return If(p >= k - 1, current, then(past.load(n, c, p).cast(acc_type)))
        return If(p >= k - 1, current, then(const(0, acc_type)) if zeros else None)

    def body(v: list[Expr]) -> Stmt:
        n, c, t = v
        acc = Var("acc", acc_type)
        j = Var("k0")
        total: Expr = acc if bias is None else acc + bias.load(c).cast(acc_type)
        result = Var("y", acc_type)
        stmts: list[Stmt] = [
            Declare(acc, const(0, acc_type)),
            Loop(j, idx(k), padded(n, c, t + j,
                                   lambda value: add_to(acc, value * w.load(c, 0, j)
                                                        .cast(acc_type)))),
            Declare(result, total),
        ]
        if silu:
            rounded = result.cast(x.dtype).cast(acc_type)
            stmts.append(Assign(result, rounded / (Unary("exp", -rounded) + 1.0)))
        stmts.append(out.store([n, c, t], result.cast(out.dtype)))
        return block(stmts)

    kernels = [ctx.kernel(nest([batch, channels, steps], body, "o", work=x.numel * k),
                          outputs=[out])]
    if state is not None and k > 1:
        def copy(v: list[Expr]) -> Stmt:
            n, c, j = v
            # A short input leaves part of the zero padding in the new state.
            return padded(n, c, j + steps,
                          lambda value: state.store([n, c, j], value.cast(state.dtype)),
                          zeros=True)

        kernels.append(ctx.kernel(nest(list(state.shape), copy, "s"), outputs=[state]))
    return kernels


def _gathered(
    out: Buffer, win: Window, in_sizes: Sequence[int], reduce_extent: int, acc_type: DType,
    term: Callable[[Expr, Expr, Expr, list[Expr], list[Expr]], Expr],
    finish: Finish,
) -> Stmt:
    """out[n, m, p] = finish(sum over r < reduce_extent and the taps reaching p of
    term(n, m, r, taps, input positions))."""
    batch, channels = out.shape[:2]
    outs = list(out.shape[2:])

    def body(v: list[Expr]) -> Stmt:
        n, m = unravel(v[0], (batch, channels))
        acc = Var("acc", acc_type)

        def reduction(rv: list[Expr]) -> Stmt:
            return over_scatter_taps(
                win, in_sizes, outs, v[1:],
                lambda taps, qs: add_to(acc, term(n, m, rv[0], taps, qs)), "k")

        return block(Declare(acc, const(0, acc_type)), nest([reduce_extent], reduction, "c"),
                     finish(acc, n, m, v[1:]))

    work = out.numel * reduce_extent * math.prod(win.kernel)
    return nest([batch * channels, *outs], body, "o", work=work)


@lowering(Op.CONV_TRANSPOSE)
def lower_conv_transpose(ctx: LowerContext) -> list[Kernel]:
    x, w, out = ctx.input(0), ctx.input(1), ctx.output()
    bias = ctx.input(2) if ctx.has_input(2) else None
    group = int(ctx.attr("group"))
    kernel = kernel_shape_of(ctx.attrs, w.shape[2:], len(x.shape) - 2, ctx.fail)
    win = resolve_transpose_window(ctx.attrs, x.shape[2:], kernel, ctx.fail)
    per_group_in, per_group_out = x.shape[1] // group, w.shape[1]
    acc_type = acc_dtype(x.dtype)

    def term(n: Expr, m: Expr, r: Expr, taps: list[Expr], qs: list[Expr]) -> Expr:
        c = r if group == 1 else (m // per_group_out) * per_group_in + r
        m_local = m if group == 1 else m % per_group_out
        return x.load(n, c, *qs).cast(acc_type) * w.load(c, m_local, *taps).cast(acc_type)

    def finish(acc: Expr, n: Expr, m: Expr, o: list[Expr]) -> Stmt:
        value = acc if bias is None else acc + bias.load(m).cast(acc_type)
        return out.store([n, m, *o], value.cast(out.dtype))

    return [ctx.kernel(_gathered(out, win, x.shape[2:], per_group_in, acc_type, term, finish))]


@lowering(Op.COL2IM)
def lower_col2im(ctx: LowerContext) -> list[Kernel]:
    x, out = ctx.input(0), ctx.output()
    image, block_shape = ctx.const(1), ctx.const(2)
    if image is None or block_shape is None:
        raise ctx.fail("image_shape and block_shape must be constants; dynamic shapes are not "
                       "supported yet")
    blocks = [int(v) for v in block_shape]
    sizes = [int(v) for v in image]
    if len(blocks) != len(sizes):
        raise ctx.fail(f"block_shape {blocks} and image_shape {sizes} differ in length")
    win = resolve_window(ctx.attrs, sizes, blocks, ctx.fail)
    counts = [int(o) for o in win.out]
    if math.prod(counts) != x.shape[2]:
        raise ctx.fail(f"input has {x.shape[2]} blocks; the geometry gives {math.prod(counts)}")
    per_channel_taps = math.prod(blocks)
    # Gather view: the image is the transposed window's output; the block grid is its input.
    gather = Window(win.kernel, win.strides, win.dilations, win.pads, tuple(sizes))

    def term(n: Expr, c: Expr, _r: Expr, taps: list[Expr], qs: list[Expr]) -> Expr:
        row = ravel(taps, blocks) if per_channel_taps > 1 else idx(0)
        channel_row = c * per_channel_taps + row if per_channel_taps > 1 else c
        return x.load(n, channel_row, ravel(qs, counts))

    def finish(acc: Expr, n: Expr, c: Expr, o: list[Expr]) -> Stmt:
        return out.store([n, c, *o], acc)

    return [ctx.kernel(_gathered(out, gather, counts, 1, x.dtype, term, finish))]
