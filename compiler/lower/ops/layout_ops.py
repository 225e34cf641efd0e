"""Lowerings of the blocked (NCHW[b]c) ops that ``select_layout`` makes besides the convolution:
MaxPoolNCHWc, AveragePoolNCHWc (also the global pools: a window over the whole plane) and
LRNNCHWc.

Each kernel works lane by lane: the innermost loop runs over the b lanes of one pixel, which are
contiguous in the input and the output, so it is one vector operation (b = the target's f32
lanes) with no cross-lane work. The outer loop (parallel when the work is large) runs over
output rows.

Pools: the taps of a window of up to ``MAX_UNROLLED_TAPS`` are unrolled at lowering time into
one expression per output vector (a balanced tree of max or add of the taps' input vectors),
which LLVM keeps in registers and stores once. A tap that may fall off the input (pads,
ceil-mode overhang) loads at a position clamped into the input and is replaced by the identity
(-inf, or 0) where it is off; the per-tap conditions do not depend on the lane, so they are
scalar work. Larger windows (global pools) loop over the kernel rows, accumulating in the
output row (which stays in L1). An average divides by the taps counted, a product of per-axis
counts as the reference computes them: taps on the input, or also on the explicit pads with
count_include_pad (never the ceil-mode overhang).

LRN: for each pixel, the squares of its channels are written in channel order into a scratch
row between zero borders; the window of lane l of block cb is then ``size`` contiguous values
starting at channel ``cb * b + l`` (one unaligned vector load each), and the power is
``exp(beta * log(s))``, which has a vector form (pow does not).
"""

from __future__ import annotations

from collections.abc import Callable

from ...ir.op import Op
from ...ir.rules.nn_geometry import Window, kernel_shape_of, resolve_window
from ..kernel_ir import (
    Binary,
    Buffer,
    Declare,
    Expr,
    Kernel,
    Loop,
    LoopKind,
    Stmt,
    Unary,
    Var,
    block,
    select,
)
from ..registry import LowerContext, lowering
from .common import PARALLEL_WORK, affine, const, idx
from .nn_common import acc_dtype, all_of, guarded, lowest, nest, unravel
from .nn_window import by_image

Row = Callable[[Expr, Expr, Expr], Stmt]
# Windows of up to this many taps are unrolled into one expression per output vector, which
# stays in registers; larger ones (global pools) accumulate in the output row, row by row.
MAX_UNROLLED_TAPS = 32


def _checked_input(ctx: LowerContext) -> Buffer:
    x = ctx.input(0)
    if acc_dtype(x.dtype) != x.dtype:
        # Sums run in the input's type: a narrow one would round every partial result.
        raise ctx.fail(f"blocked {ctx.op.value} of {x.dtype.value} is not supported (f32/f64)")
    return x


def _over_rows(ctx: LowerContext, out: Buffer, work: int, row: Row) -> list[Kernel]:
    """One loop over the output rows (n, cb, h), parallel when ``work`` is large."""
    batch, blocks, height = out.shape[:3]
    return [ctx.kernel(nest([batch * blocks * height],
                            lambda v: row(*unravel(v[0], (batch, blocks, height))), "r",
                            work=work))]


def _lanes(count: int, make: Callable[[Expr], Stmt], first: int = 0, width: int = 0) -> Loop:
    """A vector loop over lanes [first, first + count); ``make(lane)`` is its body."""
    lane = Var("l")
    return Loop(lane, idx(count), make(lane + first if first else lane), LoopKind.VECTORIZE,
                width)


def _position(win: Window, axis: int, o: Expr, tap: int | Var) -> Expr:
    """The input position of kernel tap ``tap`` of the window at output position ``o``."""
    s, d, p = win.strides[axis], win.dilations[axis], win.pads[axis]
    if isinstance(tap, int):
        return affine([(o, s)], tap * d - p)
    return affine([(o, s), (tap, d)], -p)


def _span(win: Window, axis: int, outs: int, tap: int | None) -> tuple[int, int]:
    """The first and last input position of tap ``tap`` (None: of any tap) over the outputs."""
    s, d, p = win.strides[axis], win.dilations[axis], win.pads[axis]
    low, high = (0, win.kernel[axis] - 1) if tap is None else (tap, tap)
    return low * d - p, (outs - 1) * s + high * d - p


def _within(pos: Expr, span: tuple[int, int], low: int, high: int) -> Expr | None:
    """low <= pos < high, leaving out the sides that positions in ``span`` never cross."""
    return all_of([pos >= low if span[0] < low else None, pos < high if span[1] >= high else None])


def _clamped(pos: Expr, span: tuple[int, int], size: int) -> Expr:
    """``pos`` moved into [0, size) (a load there is in bounds; its value is selected away)."""
    if span[0] < 0:
        pos = Binary("max", pos, idx(0))
    return Binary("min", pos, idx(size - 1)) if span[1] >= size else pos


def _taps_counted(win: Window, axis: int, size: int, outs: int, o: Expr,
                  include_pad: bool) -> Expr:
    """How many taps of the window at ``o`` lie on the input (or on the explicit pads too)."""
    low, high = (-win.pads[axis], size + win.pads[win.rank + axis]) if include_pad else (0, size)
    count: Expr = idx(0)
    for tap in range(win.kernel[axis]):
        inside = _within(_position(win, axis, o, tap), _span(win, axis, outs, tap), low, high)
        count = count + (idx(1) if inside is None else select(inside, idx(1), idx(0)))
    return count


def _combined(values: list[Expr], combine: Callable[[Expr, Expr], Expr]) -> Expr:
    """``combine`` over ``values`` as a balanced tree (independent operations in flight)."""
    while len(values) > 1:
        pairs = [combine(a, b) for a, b in zip(values[::2], values[1::2], strict=False)]
        values = pairs + values[len(pairs) * 2:]
    return values[0]


def _pool(ctx: LowerContext, start: float, combine: Callable[[Expr, Expr], Expr],
          average: bool) -> list[Kernel]:
    """out = combine over the window's taps on the input (``start`` stands for the others);
    an average then divides by the taps counted (on the input, or also on the explicit pads
    with count_include_pad)."""
    x, out = _checked_input(ctx), ctx.output()
    _, _, height, width, lanes = x.shape
    sizes, outs = (height, width), tuple(out.shape[2:4])
    kernel = kernel_shape_of(ctx.attrs, None, 2, ctx.fail)
    win = resolve_window(ctx.attrs, sizes, kernel, ctx.fail, bool(ctx.attr("ceil_mode")))
    include_pad = average and bool(ctx.attr("count_include_pad"))
    dtype = out.dtype
    unrolled = kernel[0] * kernel[1] <= MAX_UNROLLED_TAPS

    def row(n: Expr, cb: Expr, oh: Expr) -> Stmt:
        ow = Var("ow")

        def at(lane: Expr) -> list[Expr]:
            return [n, cb, oh, ow, lane]

        def across(ih: Expr, row_inside: Expr | None, lane: Expr) -> list[Expr]:
            """The values of the taps of the kernel row at input row ``ih`` (``start`` where
            off the input; ``row_inside``: whether that row is on it)."""
            values = []
            for kw in range(kernel[1]):
                iw, span = _position(win, 1, ow, kw), _span(win, 1, outs[1], kw)
                inside = all_of([row_inside, _within(iw, span, 0, width)])
                load = x.load(n, cb, ih, _clamped(iw, span, width), lane)
                values.append(load if inside is None else
                              select(inside, load, const(start, dtype)))
            return values

        steps: list[Stmt] = []
        if unrolled:
            def total(lane: Expr) -> Expr:
                values = []
                for kh in range(kernel[0]):
                    ih, span = _position(win, 0, oh, kh), _span(win, 0, outs[0], kh)
                    values += across(_clamped(ih, span, height), _within(ih, span, 0, height),
                                     lane)
                return _combined(values, combine)
        else:
            # A large window (a global pool): the output row accumulates row by kernel row.
            kh = Var("kh")
            ih = _position(win, 0, oh, kh)
            inside = _within(ih, _span(win, 0, outs[0], None), 0, height)
            add = _lanes(lanes, lambda lane: out.store(at(lane), _combined(
                [out.load(*at(lane)), *across(ih, None, lane)], combine)), 0, lanes)
            steps += [_lanes(lanes, lambda lane: out.store(at(lane), const(start, dtype)), 0,
                             lanes),
                      Loop(kh, idx(kernel[0]), guarded(inside, add))]

            def total(lane: Expr) -> Expr:
                return out.load(*at(lane))

        if average:
            count = Var("count", dtype)
            steps.append(Declare(count, (
                _taps_counted(win, 0, height, outs[0], oh, include_pad)
                * _taps_counted(win, 1, width, outs[1], ow, include_pad)).cast(dtype)))
            steps.append(_lanes(lanes, lambda lane: out.store(at(lane), total(lane) / count),
                                0, lanes))
        elif unrolled:
            steps.append(_lanes(lanes, lambda lane: out.store(at(lane), total(lane)), 0, lanes))
        return Loop(ow, idx(outs[1]), block(*steps))

    work = out.numel * win.kernel[0] * win.kernel[1]
    return _over_rows(ctx, out, work, row)


@lowering(Op.MAX_POOL_NCHWC)
@by_image
def lower_max_pool_nchwc(ctx: LowerContext) -> list[Kernel]:
    x = ctx.input(0)
    return _pool(ctx, lowest(x.dtype), lambda a, v: Binary("max", a, v), average=False)


@lowering(Op.AVERAGE_POOL_NCHWC)
@by_image
def lower_average_pool_nchwc(ctx: LowerContext) -> list[Kernel]:
    return _pool(ctx, 0.0, lambda a, v: a + v, average=True)


@lowering(Op.LRN_NCHWC)
@by_image
def lower_lrn_nchwc(ctx: LowerContext) -> list[Kernel]:
    """out = x / (bias + alpha / size * (sum of the window's squares)) ** beta. Per pixel, the
    squares of its channels go to a scratch row in channel order between zero borders, where
    the window of lane l of block cb is ``size`` contiguous values from ``cb * b + l``: one
    unaligned vector load each."""
    x, out = _checked_input(ctx), ctx.output()
    batch, blocks, height, width, lanes = x.shape
    size = int(ctx.attr("size"))
    before = (size - 1) // 2
    alpha, beta, bias = (float(ctx.attr(k)) for k in ("alpha", "beta", "bias"))
    dtype = out.dtype
    channels = blocks * lanes
    # One scratch row per parallel iteration.
    squares = ctx.scratch("squares", dtype, (batch * height, channels + size - 1))
    r, w, fill_cb, cb = Var("r"), Var("w"), Var("fcb"), Var("cb")
    n, h = unravel(r, (batch, height))

    def square(lane: Expr) -> Stmt:
        value = x.load(n, fill_cb, h, w, lane)
        return squares.store([r, affine([(fill_cb, lanes), (lane, 1)], before)], value * value)

    def normalize(lane: Expr) -> Stmt:
        start = affine([(cb, lanes), (lane, 1)])
        total = _combined([squares.load(r, start + j if j else start) for j in range(size)],
                          lambda a, b: a + b)
        # s ** beta as exp(beta * log(s)): both have vector forms, pow does not.
        power = Unary("exp", Unary("log", total * (alpha / size) + bias) * beta)
        return out.store([n, cb, h, w, lane], x.load(n, cb, h, w, lane) / power)

    borders = [_lanes(count, lambda lane: squares.store([r, lane], const(0, dtype)), first)
               for first, count in ((0, before), (before + channels, size - 1 - before))
               if count]
    pixel = block(Loop(fill_cb, idx(blocks), _lanes(lanes, square, 0, lanes)),
                  Loop(cb, idx(blocks), _lanes(lanes, normalize, 0, lanes)))
    kind = LoopKind.PARALLEL if out.numel * size > PARALLEL_WORK else LoopKind.SERIAL
    return [ctx.kernel(Loop(r, idx(batch * height), block(*borders, Loop(w, idx(width), pixel)),
                            kind))]
