"""Lowerings of the convolution family: Conv, ConvInteger, QLinearConv, CausalConvWithState
(forward windows), ConvTranspose and Col2Im (gathered transposed windows).

Every output element is one accumulator (a local) summed over input channels then taps, the
reduction innermost; the outermost loop runs over batch x output channels (fused, so batch 1
still parallelizes). Padding never loads: taps outside the input are skipped by guards, which is
the zero padding of the reference (for the integer convs: zero after the zero-point shift).
2-D f32 convs are tiled instead (below), and so are ConvInteger and QLinearConv with constant
8-bit weights: by integer tiles (u8 x s8 quads into int32, vpdpbusd with AVX-512 VNNI) when the
weights minus their zero point fit int8 and the conv is not depthwise-thin (``_quad_integer``),
else the tiled f32 conv of the operands minus their zero points, exact when the sums provably
fit f32's integers (compiler/lower/ops/quant_tiled.py), then the integer epilogue.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ...ir.op import Op
from ...ir.rules.nn_geometry import (
    Window,
    kernel_shape_of,
    resolve_transpose_window,
    resolve_window,
)
from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Binary,
    Buffer,
    ContractAxis,
    Declare,
    Expr,
    If,
    Kernel,
    Loop,
    LoopKind,
    MatmulTile,
    Report,
    Select,
    Stmt,
    Unary,
    Var,
    as_index,
    block,
    define_dim,
    flat_view,
)
from ..registry import LowerContext, lowering
from ..schedules import conv as schedules
from . import quant_tiled
from .common import const, idx
from .conv_tiled import conv_shape, merged, pad_input, parallel_loop, vector_width
from .nn_common import acc_dtype, add_to, all_of, nest, ravel, requantize, unravel
from .nn_window import (
    by_image,
    over_scatter_taps,
    over_window,
    runtime_transpose_window,
    runtime_window,
)

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
@functools.partial(by_image, generic=True)
def lower_conv(ctx: LowerContext) -> list[Kernel]:
    x, w = ctx.input(0), ctx.input(1)
    bias = ctx.input(2) if ctx.has_input(2) else None
    if not Buffer("", x.dtype, x.shape[1:]).is_static:
        # run-time spatial extents (static channels): the scalar loop nest, every tap guarded
        ctx.require_static(w, Buffer(x.name, x.dtype, x.shape[1:2]))
        kernel = kernel_shape_of(ctx.attrs, w.shape[2:], len(x.shape) - 2, ctx.fail)
        win, shape = runtime_window(ctx, x, kernel)
        return [*shape, ctx.kernel(_float_conv(ctx, x, w, win, bias))]
    if len(x.shape) == 4 and x.dtype in (DType.F32, DType.F64):
        win = forward_window(ctx, x, w)
        group = int(ctx.attr("group"))
        if w.shape[1] == 1 and group > 1:
            return [ctx.kernel(_depthwise(ctx, win, group))]
        return [ctx.kernel(_tiled(ctx, win, group))]
    return [ctx.kernel(_float_conv(ctx, x, w, forward_window(ctx, x, w), bias))]


@dataclass(frozen=True)
class Phased:
    """An NCHW input as the stride-1 view of a window: ``buffer`` [N, C, SH * SW, HQ, WQ]
    holds, in phase plane (ph, pw), the padded input's pixels (i * SH + ph, j * SW + pw) (zero
    in the padding). Output pixel (oh, ow) reads tap (kh, kw) at plane ``phase(kh, kw)``,
    position (oh, ow) + ``shift(kh, kw)``: contiguous along ow whatever the stride."""

    buffer: Buffer
    win: Window

    @property
    def width(self) -> int:
        return self.buffer.shape[4]

    @property
    def plane(self) -> int:
        return self.buffer.shape[3] * self.buffer.shape[4]

    def phase(self, r: int, q: int) -> int:
        (sh, sw), (dh, dw) = self.win.strides, self.win.dilations
        return (r * dh % sh) * sw + q * dw % sw

    def shift(self, r: int, q: int) -> int:
        """The tap's offset from the output pixel's position, in elements of one plane."""
        (sh, sw), (dh, dw) = self.win.strides, self.win.dilations
        return r * dh // sh * self.width + q * dw // sw


def phase_extent(win: Window) -> tuple[int, int]:
    """Rows and columns of each phase plane of a window's padded input."""
    (sh, sw), (dh, dw) = win.strides, win.dilations
    return (int(win.out[0]) + (win.kernel[0] - 1) * dh // sh,
            int(win.out[1]) + (win.kernel[1] - 1) * dw // sw)


def phase_rows(x: Buffer, win: Window, dst: Buffer, dst_base: Expr, plane: Expr,
               i: Expr) -> Stmt:
    """Fill row ``i`` of every phase plane of input plane ``plane`` (n * C + c) of ``x`` into
    the flat ``dst`` from element ``dst_base`` on (the SH * SW phases of HQ x WQ each, in
    order); zeros where the row or column lies in the padding."""
    height, width = x.shape[2:]
    (sh, sw), (top, left) = win.strides, win.pads[:2]
    rows, cols = phase_extent(win)
    src = flat_view(x)
    j = Var("pj")
    zero = const(0, x.dtype)
    fills: list[Stmt] = []
    for ph in range(sh):
        ih = i * sh + (ph - top)
        copies: list[Stmt] = []
        zeros: list[Stmt] = []
        for pw in range(sw):
            base = dst_base + ((ph * sw + pw) * rows + i) * cols
            # columns j whose input column j * sw + pw - left lies in [0, width)
            lo = min(cols, max(0, -(-(left - pw) // sw)))
            hi = max(lo, min(cols, -(-(width + left - pw) // sw)))
            zeros.append(Loop(j, idx(cols), dst.store([base + j], zero)))
            row: list[Stmt] = [Loop(j, idx(lo), dst.store([base + j], zero))] if lo else []
            if hi > lo:
                row.append(Loop(j, idx(hi - lo), dst.store(
                    [base + lo + j], src.load((plane * height + ih) * width
                                              + (j + lo) * sw + (pw - left)))))
            if cols > hi:
                row.append(Loop(j, idx(cols - hi), dst.store([base + hi + j], zero)))
            copies.append(block(row))
        fills.append(If(Binary("and", ih >= 0, ih < height), block(copies), block(zeros)))
    return block(fills)


def phased_input(ctx: LowerContext, x: Buffer, win: Window) -> tuple[Phased, Stmt | None]:
    """``x`` split into the window's phase planes (see ``Phased``), zero padded, and the fill
    (None when a stride-1 window reads no padding: then the view is ``x`` itself)."""
    batch, channels = x.shape[:2]
    if win.strides == (1, 1):
        padded, fill = pad_input(ctx, x, win)
        _, _, rows, cols = padded.shape
        return Phased(Buffer(padded.name, padded.dtype, (batch, channels, 1, rows, cols)),
                      win), fill
    rows, cols = phase_extent(win)
    phased = ctx.scratch("phased", x.dtype, (batch, channels, math.prod(win.strides), rows,
                                             cols))
    r = Var("pr")
    plane, i = unravel(r, (batch * channels, rows))
    fill = phase_rows(x, win, flat_view(phased), plane * (phased.numel // (batch * channels)),
                      plane, i)
    return Phased(phased, win), parallel_loop(r, batch * channels * rows, fill, phased.numel)


# Parallel slots of the depthwise NCHW conv: each has its own scratch plane and works through
# every SLOTS-th channel, so a plane is padded, convolved and finished while in cache.
SLOTS = 16


def _depthwise(ctx: LowerContext, win: Window, group: int) -> Stmt:
    """One input channel per group. Each output channel's plane: its input plane copied into
    the slot's phase planes (zero padded), then computed over the planes' width (one long
    vectorized loop rounded up to whole vectors, the taps unrolled, the weights
    loop-invariant scalars) into the slot's wide plane, then copied out with the bias (the
    columns past the output width dropped)."""
    x, w, out = ctx.input(0), ctx.input(1), ctx.output()
    bias = ctx.input(2) if ctx.has_input(2) else None
    batch, channels_out, out_h, out_w = out.shape
    multiplier = channels_out // group
    lanes = schedules.lanes_of(ctx.machine, x.dtype)
    rows, cols = phase_extent(win)
    phases = math.prod(win.strides)
    pixels = -(-((out_h - 1) * cols + out_w) // lanes) * lanes
    plane_size = phases * rows * cols + pixels  # room for the rounded-up loop's reads
    wide_size = max(pixels, out_h * cols)
    tasks = batch * channels_out
    slots = min(SLOTS, tasks)
    planes = ctx.scratch("phased", x.dtype, (slots, plane_size))
    wide = ctx.scratch("wide", x.dtype, (slots, wide_size))
    slot, task, i, p = Var("slot"), Var("task"), Var("i"), Var("p")
    index = slot + task * slots
    n, m = unravel(index, (batch, channels_out))
    c = m if multiplier == 1 else m // multiplier
    view = Phased(Buffer(planes.name, x.dtype, (slots, 1, phases, rows, cols)), win)
    fill = Loop(i, idx(rows), phase_rows(x, win, flat_view(planes), slot * plane_size,
                                         n * x.shape[1] + c, i))
    source = flat_view(planes)
    value: Expr | None = None
    for r in range(win.kernel[0]):
        for q in range(win.kernel[1]):
            at = slot * plane_size + view.phase(r, q) * view.plane + view.shift(r, q) + p
            term = source.load(at) * w.load(m, 0, r, q)
            value = term if value is None else value + term
    assert value is not None
    compute = Loop(p, idx(pixels), wide.store([slot, p], value), LoopKind.VECTORIZE,
                   vector_width(ctx, x.dtype, pixels))
    oh, ow = Var("oh"), Var("ow")
    result: Expr = wide.load(slot, oh * cols + ow)
    if bias is not None:
        result = result + bias.load(m)
    finish = Loop(oh, idx(out_h), Loop(ow, idx(out_w), out.store([n, m, oh, ow], result),
                                       LoopKind.VECTORIZE, vector_width(ctx, x.dtype, out_w)))
    count = (tasks - slot + (slots - 1)) // slots
    body = Loop(task, count, block(fill, compute, finish))
    return parallel_loop(slot, slots, body, out.numel * math.prod(win.kernel))


@dataclass(frozen=True)
class _Taps:
    """Kernel taps a run of tiles contracts over: offsets of the first tap in A (the weights
    of one output channel) and B (one input channel's rows), and the tap axes after the
    channel axis (extent, A stride, B stride)."""

    a_offset: int
    b_offset: int
    axes: tuple[tuple[int, int, int], ...]


def _tap_classes(view: Phased) -> list[_Taps]:
    """The taps grouped so each group's B offsets are affine: all of them for stride 1; per
    phase plane for strided windows (dilation 1): taps (ph + t * SH, pw + u * SW)."""
    win = view.win
    (kh, kw), (sh, sw), (dh, dw) = win.kernel, win.strides, win.dilations
    if (sh, sw) == (1, 1):
        return [_Taps(0, 0, ((kh, kw, dh * view.width), (kw, 1, dw)))]
    return [_Taps(ph * kw + pw, view.phase(ph, pw) * view.plane,
                  ((-(-(kh - ph) // sh), sh * kw, view.width), (-(-(kw - pw) // sw), sw, 1)))
            for ph in range(min(sh, kh)) for pw in range(min(sw, kw))]


def _tiled(ctx: LowerContext, win: Window, group: int) -> Stmt:
    """Conv on NCHW tensors as matmul tiles: rows = output channels of a group (A: the weights
    as they are, rows K = C/group * KH * KW apart), columns = output pixels, contraction =
    (input channel, kernel row, kernel column). The pixels are read as B rows: in place for a
    1x1 stride-1 unpadded conv; else from the phase planes of the padded input (``Phased``),
    where output pixel (oh, ow) is at oh * WQ + ow, so each tap is one offset and a row of B
    is contiguous (the WQ - OW columns past each output row are computed and dropped: the
    tiles write a scratch of rows WQ wide that the finish copies out). A strided window's
    taps split by phase plane, each group a run of tiles accumulating into the same outputs.
    Windows both strided and dilated gather their columns into an im2col scratch instead. A
    task computes some output rows for some blocks of output channels of one image and group,
    over every contraction chunk, then finishes them (bias, fused epilogue)."""
    x, w, out = ctx.input(0), ctx.input(1), ctx.output()
    bias = ctx.input(2) if ctx.has_input(2) else None
    batch, channels = x.shape[:2]
    _, channels_out, out_h, out_w = out.shape
    taps = math.prod(win.kernel)
    per_in, per_out = channels // group, channels_out // group
    shape = conv_shape("plain", x, out, win, per_in, per_out, group, 0)
    s = schedules.choose(ctx.machine, shape)
    lanes = schedules.lanes_of(ctx.machine, x.dtype)
    rows, cols = s.rows, s.cols * lanes
    k = per_in * taps
    stmts: list[Stmt] = []
    strided, dilated = win.strides != (1, 1), win.dilations != (1, 1)
    if taps == 1 and not strided and not any(win.pads) and x.shape[2:] == out.shape[2:]:
        source, width, channel_stride = x, out_w, out_h * out_w
        classes = [_Taps(0, 0, ())]
    elif strided and dilated:
        source, width = _im2col(ctx, win, stmts), out_w
        channel_stride = taps * out_h * out_w
        classes = [_Taps(0, 0, ((taps, 1, out_h * out_w),))]
    else:
        view, fill = phased_input(ctx, x, win)
        if fill is not None:
            stmts.append(fill)
        source, width = view.buffer, view.width
        channel_stride = view.buffer.numel // (batch * channels)
        classes = _tap_classes(view)
    target = out if width == out_w else ctx.scratch("wide", x.dtype,
                                                    (batch, channels_out, out_h * width))
    # Pixels a task covers: ``task_rows`` output rows; the last row stops at OW.
    task_rows = min(s.task_rows, out_h)
    chunks = -(-out_h // task_rows)
    last_pixels = (out_h - (chunks - 1) * task_rows - 1) * width + out_w
    chunk = s.k_chunk or per_in
    k_chunks = per_in // chunk
    full_blocks, rest_rows = divmod(per_out, rows)
    row_blocks = full_blocks + (rest_rows > 0)
    per_task = min(s.task_blocks or row_blocks, row_blocks)
    block_tasks = -(-row_blocks // per_task)
    t = Var("t")
    n, grp, mc, c = unravel(t, (batch, group, block_tasks, chunks))
    p0 = c * (task_rows * width)
    in_image = source.numel // batch
    out_plane = out_h * width
    first_block = mc * per_task

    def sweep(length: int, kc: Expr, taps_of: _Taps, acc: bool) -> list[Stmt]:
        """Every tile of the task's ``length`` pixels for contraction chunk ``kc``."""
        axes = merged([ContractAxis(chunk, taps, channel_stride),
                       *(ContractAxis(*a) for a in taps_of.axes)])
        a_base = (grp * per_out) * k + kc * (chunk * taps) + taps_of.a_offset
        b_base = (n * in_image + (grp * per_in + kc * chunk) * channel_stride
                  + taps_of.b_offset + p0)
        c_base = (n * channels_out + grp * per_out) * out_plane + p0

        def tile(mb: Expr, start: Expr, tile_rows: int, tile_cols: int) -> MatmulTile:
            return MatmulTile(
                target, c_base + mb * (rows * out_plane) + start, out_plane,
                w, a_base + mb * (rows * k), k, source, b_base + start, tile_rows,
                tile_cols, axes, acc)

        def over_pixels(mb: Expr, tile_rows: int) -> list[Stmt]:
            full, rest = divmod(length, cols)
            p = Var("p")
            found: list[Stmt] = []
            if full:
                found.append(Loop(p, idx(full), tile(mb, p * cols, tile_rows, cols)))
            if rest:
                found.append(tile(mb, idx(full * cols), tile_rows, rest))
            return found

        mb = Var("mb")
        found: list[Stmt] = []
        if full_blocks:
            count: Expr = idx(min(per_task, full_blocks))
            if block_tasks > 1:
                count = Select(first_block + per_task <= full_blocks, idx(per_task),
                               full_blocks - first_block)
            found.append(Loop(mb, count, block(over_pixels(first_block + mb, rows))))
        if rest_rows:
            rest = block(over_pixels(idx(full_blocks), rest_rows))
            found.append(rest if block_tasks == 1 else If(mc.eq(block_tasks - 1), rest))
        return found

    def passes(length: int) -> Stmt:
        """The contraction: chunks of input channels, each over every tap class; the first
        run of tiles starts from zero, the others accumulate."""
        first = [s for i, taps_of in enumerate(classes)
                 for s in sweep(length, idx(0), taps_of, i > 0)]
        if k_chunks == 1:
            return block(first)
        kc = Var("kc")
        rest = [s for taps_of in classes for s in sweep(length, kc + 1, taps_of, True)]
        return block(block(first), Loop(kc, idx(k_chunks - 1), block(rest)))

    middle = task_rows * width
    compute = passes(last_pixels) if chunks == 1 else If(
        c.eq(chunks - 1), passes(last_pixels), passes(middle))
    m, i, ow = Var("fm"), Var("fi"), Var("fw")
    oh = c * task_rows + i
    channel = grp * per_out + first_block * rows + m
    index = [n, channel, oh, ow]
    value: Expr = out.load(*index) if target is out else target.load(
        n, channel, oh * width + ow)
    if bias is not None:
        value = value + bias.load(channel)
    here: Expr = idx(task_rows)
    if out_h % task_rows:
        here = Select(c.eq(chunks - 1), idx(out_h - (chunks - 1) * task_rows), idx(task_rows))
    finished: Expr = idx(min(per_out, per_task * rows))
    if block_tasks > 1:
        finished = Select(mc.eq(block_tasks - 1), idx(per_out - (block_tasks - 1) * per_task
                                                      * rows), idx(per_task * rows))
    finish = Loop(m, finished, Loop(i, here, Loop(
        ow, idx(out_w), out.store(index, value), LoopKind.VECTORIZE,
        vector_width(ctx, x.dtype, out_w))))
    work = out.numel * k
    tasks = batch * group * block_tasks * chunks
    stmts.append(parallel_loop(t, tasks, block(compute, finish), work))
    return stmts[0] if len(stmts) == 1 else block(stmts)


def _im2col(ctx: LowerContext, win: Window, stmts: list[Stmt]) -> Buffer:
    """The columns of a window both strided and dilated: [N, C * KH * KW, OH * OW], gathered
    from the zero-padded input (so without bounds tests); the fills appended to ``stmts``."""
    x, out = ctx.input(0), ctx.output()
    batch, channels = x.shape[:2]
    out_h, out_w = out.shape[2:]
    kh, kw = win.kernel
    source, fill = pad_input(ctx, x, win)
    if fill is not None:
        stmts.append(fill)
    columns = ctx.scratch("im2col", x.dtype, (batch, channels * kh * kw, out_h * out_w))
    r, ow = Var("r"), Var("cw")
    n, c, tap_h, tap_w, oh = unravel(r, (batch, channels, kh, kw, out_h))
    pixel = source.load(n, c, oh * win.strides[0] + tap_h * win.dilations[0],
                        ow * win.strides[1] + tap_w * win.dilations[1])
    row = (c * kh + tap_h) * kw + tap_w
    store = columns.store([n, row, oh * out_w + ow], pixel)
    stmts.append(parallel_loop(r, batch * channels * kh * kw * out_h, Loop(ow, idx(out_w), store),
                               columns.numel))
    return columns


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


def _tiled_integer(ctx: LowerContext, w_at: int, x_zero_at: int, w_zero_at: int
                   ) -> tuple[Stmt, list[Buffer]] | None:
    """An integer conv as tiled (or depthwise) f32 convs of the shifted operands, exact
    (compiler/lower/ops/quant_tiled.py): one per chunk of input channels, each into its own
    f32 scratch of partial sums; the loops and the scratches. x is operand 0; the weights and
    zero points are at the given positions. None when the weights or their zero point are not
    constants, the input is not 2-D 8-bit, or a grouped conv would need chunks."""
    x, w = ctx.input(0), ctx.input(w_at)
    x_zero, w_zero = (ctx.input(i) if ctx.has_input(i) else None for i in (x_zero_at, w_zero_at))
    weights, x_zeros, w_zeros = (ctx.const(i) for i in (w_at, x_zero_at, w_zero_at))
    if (len(x.shape) != 4 or x.dtype.itemsize != 1 or weights is None
            or (w_zero is not None and w_zeros is None)):
        return None
    magnitude = quant_tiled.input_magnitude(x.dtype, x_zeros, x_zero is None
                                            or x_zeros is not None)
    shifted = quant_tiled.shifted_weights(weights, w_zeros, 0)
    ranges = quant_tiled.chunks(shifted.reshape(*shifted.shape[:2], -1), magnitude)
    group = int(ctx.attr("group"))
    if ranges is None or (len(ranges) > 1 and group > 1):
        return None
    batch, channels, height, width = x.shape
    if len(ranges) == 1:  # every channel (of every group)
        ranges = [(0, channels)]
    win = forward_window(ctx, x, w)
    zero = None if x_zero is None else scalar(x_zero)
    loops: list[Stmt] = []
    sums: list[Buffer] = []
    for c0, c1 in ranges:
        source, fill = quant_tiled.shifted_input(ctx, x, zero, batch, c0 * height * width,
                                                 (c1 - c0) * height * width)
        part = shifted[:, c0:c1] if group == 1 else shifted
        digest = hashlib.sha1(part.tobytes()).hexdigest()[:12]
        # the f32 conv lowerings read their operands from the context: a view of this one
        floats = copy.copy(ctx)
        floats.inputs = [Buffer(source.name, DType.F32, (batch, c1 - c0, height, width)),
                         ctx.derived_constant(f"{w.name}.shifted{digest}",
                                              part.astype(np.float32))]
        floats.outputs = [ctx.scratch("sums", DType.F32, ctx.output().shape)]
        floats.consts = [None, part.astype(np.float32)]
        loops += [fill, _depthwise(floats, win, group) if w.shape[1] == 1 and group > 1
                  else _tiled(floats, win, group)]
        sums.append(floats.outputs[0])  # type: ignore[arg-type]
    return block(loops), sums


def _quad_integer(ctx: LowerContext, w_at: int, x_zero_at: int, w_zero_at: int,
                  bias: Buffer | None, value: Callable[[Expr, Expr], Expr]) -> list[Kernel] | None:
    """An integer conv by integer tiles (``MatmulTile``'s u8 x s8 form), then out = value(int32
    sum + bias, channel): per image and group, A = the shifted weights (int8 [M, K], K = C/group
    * KH * KW padded to quads, packed at compile time), B = the input made unsigned (x, or x +
    128 for int8) gathered at run time into quads [K / 4, OH * OW, 4] (padding: the zero point,
    which contributes 0). The sum over k of (w - w_zero) * (x - x_zero) is then the tiles' sum
    minus (x_zero + offset) times the weights' row sums, folded at compile time. None when the
    weights or their zero point are not constants, the shifted weights do not fit int8, the
    input is not 2-D 8-bit with one zero point, or the product is too thin (depthwise)."""
    x, w, out = ctx.input(0), ctx.input(w_at), ctx.output()
    x_zero = ctx.input(x_zero_at) if ctx.has_input(x_zero_at) else None
    weights, w_zeros = ctx.const(w_at), ctx.const(w_zero_at)
    if (len(x.shape) != 4 or x.dtype.itemsize != 1 or weights is None or not x.numel
            or (ctx.has_input(w_zero_at) and w_zeros is None)
            or (x_zero is not None and x_zero.numel != 1)):
        return None
    signed = quant_tiled.signed_weights(quant_tiled.shifted_weights(weights, w_zeros, 0))
    group = int(ctx.attr("group"))
    batch, channels = x.shape[:2]
    channels_out = out.shape[1]
    per_in, per_out = channels // group, channels_out // group
    k = int(weights[0].size)
    if signed is None or per_out < 4 or k < 8:
        return None
    win = forward_window(ctx, x, w)
    out_h, out_w = out.shape[2:]
    pixels, quads, items = out_h * out_w, -(-k // 4), batch * group
    matrix = signed.reshape(channels_out, k)
    digest = hashlib.sha1(matrix.tobytes()).hexdigest()[:12]
    a = ctx.derived_constant(f"quads.{channels_out}x{k}.{digest}",
                             quant_tiled.padded_quads(matrix))
    row_sums = ctx.derived_constant(f"quads.sums.{channels_out}x{k}.{digest}",
                                    matrix.astype(np.int64).sum(axis=1).astype(np.int32))
    packed = ctx.scratch("quads", DType.U8, (items * quads, pixels, 4))
    zero: Expr = const(quant_tiled.input_offset(x.dtype), DType.I32)
    if x_zero is not None:
        zero = zero + scalar(x_zero).cast(DType.I32)

    source, fill = _unsigned_padded(ctx, x, win, zero)
    t, oh, ow = Var("gt"), Var("gh"), Var("gw")
    item, kq = t // quads, t % quads
    image, grp = item // group, item % group
    stores: list[Stmt] = []
    for q in range(4):  # the 4 taps of a quad, each read along a row of the input
        c, tap_h, tap_w = unravel(Binary("min", kq * 4 + q, idx(k - 1)), (per_in, *win.kernel))
        loaded = source.load(image, grp * per_in + c, oh * win.strides[0] + tap_h
                             * win.dilations[0], ow * win.strides[1] + tap_w * win.dilations[1])
        if source is x:
            loaded = quant_tiled.as_unsigned(loaded, x.dtype)
        stores.append(packed.store([t, oh * out_w + ow, idx(q)], loaded))
    gather = parallel_loop(t, items * quads, Loop(oh, idx(out_h), Loop(
        ow, idx(out_w), block(stores), LoopKind.VECTORIZE)), packed.numel * 4)

    def total(acc: Expr, row: Expr, _: Expr) -> Expr:
        m = row % channels_out
        found = acc - zero * row_sums.load(m)
        return value(found if bias is None else found + bias.load(m), m)

    cols = quant_tiled.quad_columns(ctx)
    ops = quant_tiled.QuadOperands(
        a, quads * 4, packed, 4 * cols, 4 * pixels,
        lambda i: ((i % group) * (per_out * quads * 4), i * (quads * pixels * 4)))
    product = quant_tiled.quad_product(ctx, ops, items, per_out, pixels, quads, cols, total,
                                       out)
    return [ctx.kernel(block(*([] if fill is None else [fill]), gather, product))]


def _unsigned_padded(ctx: LowerContext, x: Buffer, win: Window, zero: Expr
                     ) -> tuple[Buffer, Stmt | None]:
    """``x`` as the integer tiles read it: unpadded, x itself (made unsigned as it is read);
    padded, a uint8 scratch of x made unsigned with the (shifted) zero point ``zero`` in the
    padding, filled by the returned loops, so the quad gather reads rows without bounds tests."""
    if not any(win.pads):
        return x, None
    batch, channels, height, width = x.shape
    top, left = win.pads[0], win.pads[1]
    shape = (batch, channels, top + height + win.pads[2], left + width + win.pads[3])
    padded = ctx.scratch("padded", DType.U8, shape)

    def body(v: list[Expr]) -> Stmt:
        h, w = v[2] - top, v[3] - left
        inside = Binary("and", Binary("and", h >= 0, h < height),
                        Binary("and", w >= 0, w < width))
        value = x.load(v[0], v[1], Binary("min", Binary("max", h, idx(0)), idx(height - 1)),
                       Binary("min", Binary("max", w, idx(0)), idx(width - 1)))
        return padded.store(v, Select(inside, quant_tiled.as_unsigned(value, x.dtype),
                                      zero.cast(DType.U8)))

    return padded, nest(list(shape), body, "pz", work=math.prod(shape), vectorize_inner=True)


def _integer_epilogue(ctx: LowerContext, found: tuple[Stmt, list[Buffer]], bias: Buffer | None,
                      value: Callable[[Expr, Expr], Expr]) -> list[Kernel]:
    """The kernel of a tiled integer conv: its loops, then out = value(int32 sum + bias,
    channel)."""
    out = ctx.output()
    batch, channels = out.shape[:2]
    loops, sums = found

    def store(total: Expr, row: Expr, _: Expr) -> Expr:
        m = row % channels
        return value(total if bias is None else total + bias.load(m), m)

    return [ctx.kernel(block(loops, quant_tiled.epilogue(sums, out, batch * channels, store)))]


@lowering(Op.CONV_INTEGER)
@by_image
def lower_conv_integer(ctx: LowerContext) -> list[Kernel]:
    x, w, out = ctx.input(0), ctx.input(1), ctx.output()
    x_zero = ctx.input(2) if ctx.has_input(2) else None
    w_zero = ctx.input(3) if ctx.has_input(3) else None
    quads = _quad_integer(ctx, 1, 2, 3, None, lambda total, _: total)
    if quads is not None:
        return quads
    found = _tiled_integer(ctx, 1, 2, 3)
    if found is not None:
        return _integer_epilogue(ctx, found, None, lambda total, _: total)

    def finish(acc: Expr, n: Expr, m: Expr, o: list[Expr]) -> Stmt:
        return out.store([n, m, *o], acc)

    win = forward_window(ctx, x, w)
    return [ctx.kernel(_integer_conv(x, w, out, win, int(ctx.attr("group")), x_zero, w_zero,
                                     finish))]


@lowering(Op.QLINEAR_CONV)
@by_image
def lower_qlinear_conv(ctx: LowerContext) -> list[Kernel]:
    x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero = (ctx.input(i) for i in range(8))
    bias = ctx.input(8) if ctx.has_input(8) else None
    out = ctx.output()
    f32 = DType.F32

    def requantized(total: Expr, m: Expr) -> Expr:
        """onnxruntime's requantization of the int32 sum (bias included): f32(sum) *
        f32(x_scale * w_scale / y_scale), rounded half to even."""
        multiplier = (scalar(x_scale).cast(f32) * per_channel(w_scale, m).cast(f32)
                      / scalar(y_scale).cast(f32))
        return requantize(total.cast(f32) * multiplier, scalar(y_zero), out.dtype)

    quads = _quad_integer(ctx, 3, 2, 5, bias, requantized)
    if quads is not None:
        return quads
    found = _tiled_integer(ctx, 3, 2, 5)
    if found is not None:
        return _integer_epilogue(ctx, found, bias, requantized)

    def finish(acc: Expr, n: Expr, m: Expr, o: list[Expr]) -> Stmt:
        return out.store([n, m, *o], requantized(acc if bias is None else acc + bias.load(m), m))

    win = forward_window(ctx, x, w)
    return [ctx.kernel(_integer_conv(x, w, out, win, int(ctx.attr("group")), x_zero, w_zero,
                                     finish))]


@lowering(Op.CAUSAL_CONV_WITH_STATE)
@by_image
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
    out: Buffer, win: Window, in_sizes: Sequence[int | Expr], reduce_extent: int, acc_type: DType,
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
@functools.partial(by_image, generic=True)
def lower_conv_transpose(ctx: LowerContext) -> list[Kernel]:
    x, w, out = ctx.input(0), ctx.input(1), ctx.output()
    bias = ctx.input(2) if ctx.has_input(2) else None
    group = int(ctx.attr("group"))
    kernel = kernel_shape_of(ctx.attrs, w.shape[2:], len(x.shape) - 2, ctx.fail)
    shape: list[Kernel] = []
    if Buffer("", x.dtype, x.shape[1:]).is_static:
        win = resolve_transpose_window(ctx.attrs, x.shape[2:], kernel, ctx.fail)
    else:  # run-time spatial extents (static channels): every tap guarded
        ctx.require_static(w, Buffer(x.name, x.dtype, x.shape[1:2]))
        win, shape = runtime_transpose_window(ctx, x, kernel)
    per_group_in, per_group_out = x.shape[1] // group, w.shape[1]
    acc_type = acc_dtype(x.dtype)

    def term(n: Expr, m: Expr, r: Expr, taps: list[Expr], qs: list[Expr]) -> Expr:
        c = r if group == 1 else (m // per_group_out) * per_group_in + r
        m_local = m if group == 1 else m % per_group_out
        return x.load(n, c, *qs).cast(acc_type) * w.load(c, m_local, *taps).cast(acc_type)

    def finish(acc: Expr, n: Expr, m: Expr, o: list[Expr]) -> Stmt:
        value = acc if bias is None else acc + bias.load(m).cast(acc_type)
        return out.store([n, m, *o], value.cast(out.dtype))

    return [*shape, ctx.kernel(_gathered(out, win, x.shape[2:], per_group_in, acc_type, term,
                                         finish))]


@lowering(Op.COL2IM)
def lower_col2im(ctx: LowerContext) -> list[Kernel]:
    if ctx.const(1) is None or ctx.const(2) is None:
        return _col2im_at_run_time(ctx)
    return _col2im(ctx)


def _col2im_at_run_time(ctx: LowerContext) -> list[Kernel]:
    """Col2Im whose image_shape and block_shape are run-time values: a shape kernel defines
    the output extents (reporting bad values), then a serial scatter-add of every column
    element to its image position (the block grid, taps and image all run-time loops)."""
    x, image, block_shape, out = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    ctx.require_static(image, block_shape)
    rank = len(out.shape) - 2
    if image.shape != (rank,) or block_shape.shape != (rank,):
        raise ctx.fail(f"image_shape and block_shape must hold {rank} values each")
    strides = [int(v) for v in ctx.attr("strides") or [1] * rank]
    dilations = [int(v) for v in ctx.attr("dilations") or [1] * rank]
    pads = [int(v) for v in ctx.attr("pads") or [0] * (2 * rank)]
    what = ctx.node.describe()

    def values(buffer: Buffer, name: str) -> tuple[list[Stmt], list[Var]]:
        found = [Var(f"{name}{d}") for d in range(rank)]
        return [Declare(v, buffer.load(idx(d)).cast(DType.I64)) for d, v in enumerate(found)], found

    block_stmts, kernel = values(block_shape, "block")
    taps: Expr = kernel[0]
    for extent in kernel[1:]:
        taps = taps * extent
    shape: list[Stmt] = list(block_stmts)
    image_stmts, sizes = values(image, "image")
    shape += image_stmts
    per_tap = Binary("max", taps, idx(1))  # no division by zero where taps are reported
    bad = Binary("or", taps <= 0, (as_index(x.shape[1]) % per_tap).ne(0))
    for size in sizes:
        bad = Binary("or", bad, size < 0)
    shape.append(If(bad, Report(f"{what}: block_shape must be positive and divide the input's "
                                "channels, image_shape non-negative")))
    sources = [as_index(x.shape[0]), as_index(x.shape[1]) // per_tap,
               *(Binary("max", size, idx(0)) for size in sizes)]
    for out_extent, value in zip(out.shape, sources, strict=True):
        if isinstance(out_extent, Expr) and any(out_extent is u for u in ctx.undefined_dims):
            shape.append(define_dim(out_extent, value))
    kernels = [ctx.kernel(block(shape), outputs=[], scratch=[])]

    body: list[Stmt] = list(block_stmts)
    counts = []
    for d in range(rank):
        span = (kernel[d] - 1) * dilations[d] + 1
        room = as_index(out.shape[2 + d]) + (pads[d] + pads[rank + d]) - span
        count = Var(f"blocks{d}")
        body.append(Declare(count, Select(room < 0, idx(0), room // strides[d] + 1)))
        counts.append(count)
    total: Expr = counts[0]
    for count in counts[1:]:
        total = total * count
    fits = Binary("and", as_index(x.shape[2]).eq(total),
                  as_index(x.shape[1]).eq(as_index(out.shape[1]) * taps))
    n, c, t, q = Var("col_n"), Var("col_c"), Var("col_t"), Var("col_l")
    tap, at = unravel(t, kernel), unravel(q, counts)
    position = [at[d] * strides[d] - pads[d] + tap[d] * dilations[d] for d in range(rank)]
    inside = all_of([Binary("and", p >= 0, p < out.shape[2 + d])
                     for d, p in enumerate(position)])
    assert inside is not None
    target = [n, c, *position]
    add = out.store(target, out.load(*target) + x.load(n, c * taps + t, q))
    scatter = Loop(n, as_index(x.shape[0]), Loop(c, as_index(out.shape[1]), Loop(
        t, taps, Loop(q, as_index(x.shape[2]), If(inside, add)))))
    zero = nest(list(out.shape), lambda v: out.store(v, const(0, out.dtype)), "z")
    body.append(If(fits, block(zero, scatter), Report(
        f"{what}: the input's blocks do not match the image, block and window geometry")))
    return [*kernels, ctx.kernel(block(body))]


@by_image
def _col2im(ctx: LowerContext) -> list[Kernel]:
    x, out = ctx.input(0), ctx.output()
    image, block_shape = ctx.const(1), ctx.const(2)
    assert image is not None and block_shape is not None
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
