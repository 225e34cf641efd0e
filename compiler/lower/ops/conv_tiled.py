"""Lowering of ConvNCHWc (channel-blocked convolution) to register-blocked matmul tiles.

Group 1. Output pixel (n, oh, ow) of output channel o is a dot product over the contraction
axes (input-channel block, kernel row, kernel column, input lane) of input pixels and weights.
A ``MatmulTile`` computes ``rows`` consecutive output pixels of one output row (A rows: input
pixels ``stride * b`` elements apart) x ``cols`` output-channel blocks (each block's b lanes
contiguous in the output; the blocks ``OH * OW * b`` apart, the tile's column groups). One
contraction step reads one contiguous row of B: with one block per tile that is the blocked
weights as they are (``W[ocb, icb, kh, kw, ci, :]``), with several the weights are packed at
compile time as ``[group, ICB, KH, KW, b_ic, cols * b]``. Convolutions whose consecutive
output pixels read consecutive input pixels (1x1 stride 1 unpadded, and any KHx1 with stride
1) run tiles across output rows: the pixels of a task are one long row. A plain NCHW input
(the stem conv, ``src_layout="NCHW"``) is the same with the contraction axes (channel, kernel
row, kernel column) and weights packed for them (only the image's channels).

Padding: the input is first copied into a zero-bordered scratch of exactly the extent the
window reads, so tiles never test bounds (one pass over the input, small next to the conv).

Each parallel task computes ``task_rows`` output rows of one image and one group of output
blocks: for each chunk of input-channel blocks (the contraction is chunked when the weights of
one group do not fit in L2; the first chunk starts the tiles from zero, the others accumulate),
every row's tiles; then one vectorized finish loop over the task's outputs adds the bias. That
finish store is the fusion point (compiler/lower/ops/fused.py): a fused epilogue (residual add,
ReLU, Clip) runs there while the outputs are still in cache. A thread's consecutive tasks share
their input rows when all weights fit in L2 (tasks ordered image, rows, channel group), else
their weights (channel group outermost).

Depthwise (``group`` = channels, weights ``[CB, 1, KH, KW, 1, b]``): no contraction to tile;
each output vector of b lanes is the sum of its taps' input vectors times weight vectors (the
kernel taps unrolled, the lanes vectorized), stored once.

Tile shapes, chunk and task sizes come from compiler/lower/schedules/conv.py.

Measured with benchmarks/bench_layout.py (the kernel alone on blocked data, one thread, best
of 10, a shared 2-core znver4 host whose measured FMA peak is about 115 GFLOP/s; onnxruntime's
own NCHWc kernels on the same layer in brackets): ResNet-50 3x3 layers 95-110 GFLOP/s
(103-118), 1x1 layers 88-111 (79-109), the 7x7/2 stem on the plain image 81-91 (86-92),
depthwise 3x3 at 112/56/14/7 pixels 54/56/38/22 (44/40/28/25). The finish loops need their
lane loop kept whole for the vectorizer (LLVM otherwise unrolls it and vectorizes across
pixels with gathers, the 1x1 layers then drop to about half).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ...ir.op import Op
from ...ir.rules.layout import block_of
from ...ir.rules.nn_geometry import Window, kernel_shape_of, resolve_window
from ...ir.types import DType
from ..kernel_ir import (
    Binary,
    Block,
    Buffer,
    ContractAxis,
    Expr,
    If,
    Kernel,
    Loop,
    LoopKind,
    MatmulTile,
    Select,
    Stmt,
    Var,
    block,
    flat_view,
)
from ..registry import LowerContext, lowering
from ..schedules import conv as schedules
from ..schedules.conv import ConvShape
from .common import PARALLEL_WORK, const, idx
from .nn_common import unravel
from .nn_window import by_image


def parallel_loop(var: Var, extent: int, body: Stmt, work: int) -> Loop:
    """A loop over tasks, parallel when there is enough work for threads."""
    kind = LoopKind.PARALLEL if extent > 1 and work > PARALLEL_WORK else LoopKind.SERIAL
    return Loop(var, idx(extent), body, kind)


def read_extent(win: Window, axis: int) -> int:
    """Input positions (padding included) the window reads along spatial ``axis``."""
    return (int(win.out[axis]) - 1) * win.strides[axis] + win.extent[axis]


def pad_input(ctx: LowerContext, x: Buffer, win: Window) -> tuple[Buffer, Stmt | None]:
    """``x`` ([N, C, H, W] or [N, C, H, W, lanes]) as a buffer whose position (h, w) is the
    window's padded position: ``x`` itself when the window reads no padding, else a scratch of
    exactly the read extent with a zero border and the fill statement."""
    batch, channels, height, width = x.shape[:4]
    lanes = x.shape[4] if len(x.shape) == 5 else 1
    top, left = win.pads[0], win.pads[1]
    rows, cols = read_extent(win, 0), read_extent(win, 1)
    if top == 0 and left == 0 and rows <= height and cols <= width:
        return x, None
    padded = ctx.scratch("padded", x.dtype, (batch, channels, rows, cols, lanes)[:len(x.shape)])
    src, dst = flat_view(x), flat_view(padded)
    copied = max(0, min(width, cols - left))
    r, j = Var("pr"), Var("pj")
    plane, row = unravel(r, (batch * channels, rows))
    ih = row - top
    base = r * (cols * lanes)
    zero = const(0, x.dtype)

    def zeros(begin: int, end: int) -> Stmt | None:
        if end <= begin:
            return None
        return Loop(j, idx(end - begin), dst.store([base + begin + j], zero))

    copy = Loop(j, idx(copied * lanes), dst.store(
        [base + left * lanes + j], src.load((plane * height + ih) * (width * lanes) + j)))
    inside = block([s for s in (zeros(0, left * lanes), copy,
                                zeros((left + copied) * lanes, cols * lanes)) if s is not None])
    fill = If(Binary("and", ih >= 0, ih < height), inside, zeros(0, cols * lanes))
    total = batch * channels * rows
    return padded, parallel_loop(r, total, fill, padded.numel)


def window_of(ctx: LowerContext, x: Buffer, kernel_dims: Sequence[int]) -> Window:
    kernel = kernel_shape_of(ctx.attrs, kernel_dims, 2, ctx.fail)
    return resolve_window(ctx.attrs, x.shape[2:4], kernel, ctx.fail)


def conv_shape(kind: str, x: Buffer, out: Buffer, win: Window, in_channels: int,
               out_channels: int, groups: int, block_size: int,
               plain_input: bool = False, packable: bool = True) -> ConvShape:
    return ConvShape(
        kind, x.dtype, x.shape[0], in_channels, out_channels, groups, block_size,
        (x.shape[2], x.shape[3]), (out.shape[2], out.shape[3]),
        (win.kernel[0], win.kernel[1]), (win.strides[0], win.strides[1]),
        (win.dilations[0], win.dilations[1]), tuple(win.pads), plain_input, packable)


def merged(axes: Sequence[ContractAxis]) -> tuple[ContractAxis, ...]:
    """The same contraction with unit axes dropped and an axis merged into the one outside it
    when both strides line up (fewer, longer loops in the tile)."""
    found: list[ContractAxis] = []
    for axis in axes:
        if axis.extent == 1:
            continue
        if found:
            outer = found[-1]
            if (outer.a_stride == axis.a_stride * axis.extent
                    and outer.b_stride == axis.b_stride * axis.extent):
                found[-1] = ContractAxis(outer.extent * axis.extent, axis.a_stride,
                                         axis.b_stride)
                continue
        found.append(axis)
    return tuple(found) or (ContractAxis(1, 0, 0),)


@lowering(Op.CONV_NCHWC)
@by_image
def lower_conv_nchwc(ctx: LowerContext) -> list[Kernel]:
    x, w = ctx.input(0), ctx.input(1)
    if x.dtype not in (DType.F32, DType.F64):
        # Accumulating a narrow type in its own precision would round every partial sum.
        raise ctx.fail(f"blocked convolution of {x.dtype.value} is not supported (f32/f64 only)")
    win = window_of(ctx, x, w.shape[2:4])
    if int(ctx.attr("group") or 1) > 1:
        return [ctx.kernel(_depthwise(ctx, win))]
    return [ctx.kernel(_dense(ctx, win))]


def _plain_input(ctx: LowerContext) -> bool:
    return block_of(str(ctx.attr("src_layout") or "")) == 0


def packed_weights(ctx: LowerContext, weights: np.ndarray, name: str, order: Sequence[int],
                   cols: int) -> Buffer:
    """Constant ``weights`` [OC, *contraction] (contraction axes as the tile walks them, after
    transposing by ``order``) as ``[groups, *contraction, cols]``: the B panels of the tiles,
    output channels past OC zero."""
    arranged = weights.transpose(order)
    oc = arranged.shape[0]
    groups = -(-oc // cols)
    padded = np.zeros((groups * cols, *arranged.shape[1:]), arranged.dtype)
    padded[:oc] = arranged
    inner = arranged.shape[1:]
    panels = padded.reshape(groups, cols, math.prod(inner)).transpose(0, 2, 1)
    return ctx.derived_constant(f"{name}.panels{cols}",
                                panels.reshape(groups, *inner, cols))


def _dense(ctx: LowerContext, win: Window) -> Stmt:
    x, w, out = ctx.input(0), ctx.input(1), ctx.output()
    bias = ctx.input(2) if ctx.has_input(2) else None
    plain = _plain_input(ctx)
    batch = x.shape[0]
    _, out_blocks, out_h, out_w, b = out.shape
    kh, kw = win.kernel
    lanes_in = 1 if plain else b
    # Contraction units: input channels (plain input) or input-channel blocks of b lanes.
    units = x.shape[1]
    unit = 1 if plain else b
    weights = ctx.const(1)
    if weights is None and plain:
        raise ctx.fail("a convolution of a plain input needs constant weights")
    shape = conv_shape("blocked", x, out, win, units * unit, out_blocks * b, 1, b, plain,
                       weights is not None)
    s = schedules.choose(ctx.machine, shape)
    nb = s.cols
    if weights is None or (nb == 1 and not plain):
        # The blocked weights are already the panels of one-block tiles.
        panels = w
    else:
        # [OCB, ICB, KH, KW, b_ic, b] -> [OC, IC, KH, KW], the input's channels only
        full = weights.transpose(0, 5, 1, 4, 2, 3).reshape(
            out_blocks * b, w.shape[1] * w.shape[4], kh, kw)[:, :units * unit]
        if plain:
            panels = packed_weights(ctx, full, w.name, (0, 1, 2, 3), nb * b)
        else:
            split = full.reshape(out_blocks * b, units, b, kh, kw)
            panels = packed_weights(ctx, split, w.name, (0, 1, 3, 4, 2), nb * b)
    source, fill = pad_input(ctx, x, win)
    rows_in, cols_in = source.shape[2], source.shape[3]
    ncols = nb * b
    groups = -(-out_blocks // nb)
    chunk = s.k_chunk or units
    chunks = units // chunk
    a_axes = [(rows_in * cols_in * lanes_in), win.dilations[0] * cols_in * lanes_in,
              win.dilations[1] * lanes_in] + ([] if plain else [1])
    extents = [chunk, kh, kw] + ([] if plain else [b])
    b_strides = [kh * kw * unit * ncols, kw * unit * ncols, unit * ncols] + (
        [] if plain else [ncols])
    axes = merged([ContractAxis(e, a, bs) for e, a, bs in zip(extents, a_axes, b_strides,
                                                              strict=True)])
    in_image = units * rows_in * cols_in * lanes_in
    out_plane = out_h * out_w * b
    flat = shape.flat
    task_rows = s.task_rows if not flat or out_h % s.task_rows == 0 else 1
    row_blocks = -(-out_h // task_rows)
    tasks = groups * batch * row_blocks
    t = Var("t")
    if panels.nbytes <= ctx.machine.l2_bytes // 2:
        # All weights stay in L2: a thread's consecutive tasks share input rows instead.
        n, rb, g = unravel(t, (batch, row_blocks, groups))
    else:
        g, n, rb = unravel(t, (groups, batch, row_blocks))
    oh0 = rb * task_rows

    def line(acc: bool, k: Expr, blocks: int, oh: Expr, length: int) -> list[Stmt]:
        """The tiles of ``length`` output pixels from (oh, 0) on (flat: across rows)."""
        a_row = (win.strides[1] if not flat else 1) * lanes_in
        a_base = (n * in_image + k * (chunk * a_axes[0])
                  + oh * (win.strides[0] * cols_in * lanes_in))
        c_base = n * (out_blocks * out_plane) + g * (nb * out_plane) + oh * (out_w * b)
        b_base = g * (units * kh * kw * unit * ncols) + k * (chunk * b_strides[0])
        stmts: list[Stmt] = []
        full, rest = divmod(length, s.rows)

        def tile(start: Expr, rows: int) -> MatmulTile:
            return MatmulTile(
                out, c_base + start * b, b, source, a_base + start * a_row, a_row,
                panels, b_base, rows, blocks * b, axes, acc,
                b if blocks > 1 else 0, out_plane if blocks > 1 else 0)

        if full:
            p = Var("p")
            stmts.append(Loop(p, idx(full), tile(p * s.rows, s.rows)))
        if rest:
            stmts.append(tile(idx(full * s.rows), rest))
        return stmts

    here = Select(oh0 + task_rows <= out_h, idx(task_rows), out_h - oh0) if (
        out_h % task_rows) else idx(task_rows)

    def pass_(acc: bool, k: Expr, blocks: int) -> Stmt:
        if flat:
            return block(line(acc, k, blocks, oh0, task_rows * out_w))
        i = Var("i")
        return Loop(i, here, block(line(acc, k, blocks, oh0 + i, out_w)))

    def tiles(blocks: int) -> Stmt:
        first = pass_(False, idx(0), blocks)
        if chunks == 1:
            return first
        k = Var("k")
        return block(first, Loop(k, idx(chunks - 1), pass_(True, k + 1, blocks)))

    last = out_blocks - (groups - 1) * nb
    compute = tiles(nb) if last == nb else If(g.eq(groups - 1), tiles(last), tiles(nb))
    blocks_here: Expr = idx(nb) if last == nb else Select(g.eq(groups - 1), idx(last), idx(nb))
    j, i, ow, lane = Var("fj"), Var("fi"), Var("fw"), Var("fl")
    ocb = g * nb + j
    index = [n, ocb, oh0 + i, ow, lane]
    value: Expr = out.load(*index)
    if bias is not None:
        value = value + bias.load(ocb, lane)
    finish = Loop(j, blocks_here, Loop(i, here, Loop(ow, idx(out_w), Loop(
        lane, idx(b), out.store(index, value), LoopKind.VECTORIZE,
        vector_width(ctx, x.dtype, b)))))
    work = out.numel * units * unit * kh * kw
    main = parallel_loop(t, tasks, block(compute, finish), work)
    return main if fill is None else Block((fill, main))


def vector_width(ctx: LowerContext, dtype: DType, extent: int) -> int:
    """The vector width for a loop over ``extent`` contiguous elements: the register's lanes,
    or for a shorter loop the widest power of two it holds (all of a channel block's lanes)."""
    lanes = schedules.lanes_of(ctx.machine, dtype)
    width = lanes
    while width > extent:
        width //= 2
    return width if width > 1 else 0


def _depthwise(ctx: LowerContext, win: Window) -> Stmt:
    x, w, out = ctx.input(0), ctx.input(1), ctx.output()
    bias = ctx.input(2) if ctx.has_input(2) else None
    batch, blocks, _, _, b = x.shape
    group = int(ctx.attr("group"))
    if w.shape[0] != blocks or w.shape[1] != 1 or w.shape[4] != 1 or group > blocks * b:
        raise ctx.fail(f"group {group} with weights {list(w.shape)}: only depthwise grouping "
                       f"(one input channel per group, weights [CB, 1, KH, KW, 1, b]) is "
                       "supported")
    out_h, out_w = out.shape[2:4]
    shape = conv_shape("depthwise", x, out, win, b, b, blocks * b, b)
    s = schedules.choose(ctx.machine, shape)
    source, fill = pad_input(ctx, x, win)
    task_rows = min(s.task_rows, out_h)
    row_blocks = -(-out_h // task_rows)
    t, i, ow, lane = Var("t"), Var("i"), Var("ow"), Var("l")
    n, cb, rb = unravel(t, (batch, blocks, row_blocks))
    oh = rb * task_rows + i
    (sh, sw), (dh, dw) = win.strides, win.dilations
    value: Expr = const(0, x.dtype) if bias is None else bias.load(cb, lane)
    for r in range(win.kernel[0]):
        for c in range(win.kernel[1]):
            pixel = source.load(n, cb, oh * sh + r * dh, ow * sw + c * dw, lane)
            value = value + pixel * w.load(cb, 0, r, c, 0, lane)
    store = out.store([n, cb, oh, ow, lane], value)
    here: Expr = idx(task_rows)
    if out_h % task_rows:
        here = Select(rb.eq(row_blocks - 1), idx(out_h - (row_blocks - 1) * task_rows),
                      idx(task_rows))
    body = Loop(i, here, Loop(ow, idx(out_w), Loop(
        lane, idx(b), store, LoopKind.VECTORIZE, vector_width(ctx, x.dtype, b))))
    main = parallel_loop(t, batch * blocks * row_blocks, body, out.numel * math.prod(win.kernel))
    return main if fill is None else Block((fill, main))
