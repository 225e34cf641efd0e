"""Lowerings of the signal ops: Hann/Hamming/Blackman windows, DFT, STFT, MelWeightMatrix.

All compute in f64 and cast to the output type at the store (the reference computes the windows
and mel weights in f64, the transforms in the input's precision, at least single: f64 here is
at least as accurate). The transforms are naive O(n^2) sums over a twiddle table
``tw[j] = (cos, sin)(2 pi j / n)`` that a first kernel fills, indexed by ``k t mod n``.
Extents (window size, DFT length, frame length and step) must be compile-time constants; the
type rules make the output shape unknown otherwise, which the graph lowering reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ...ir.op import Op
from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Buffer,
    Const,
    Declare,
    Expr,
    If,
    Kernel,
    Loop,
    Stmt,
    Unary,
    Var,
    binary,
    block,
    select,
)
from ..registry import LowerContext, lowering
from .rnn import flat_loop

F64 = DType.F64
Sample = Callable[[Expr], tuple[Expr, Expr]]


def _const_int(ctx: LowerContext, index: int, what: str) -> int:
    data = ctx.const(index)
    if data is None:
        raise ctx.fail(f"{what} must be a compile-time constant")
    return int(data.reshape(-1)[0])


def _window(ctx: LowerContext, value: Callable[[Expr], Expr]) -> list[Kernel]:
    out = ctx.output()
    size = out.shape[0]
    denominator = size if ctx.attr("periodic") else size - 1

    def body(idx: list[Expr]) -> Stmt:
        # 2 pi n / N; a symmetric window of size 1 divides 0 by 0, NaN like the reference.
        phase = idx[0].cast(F64) * (2 * math.pi) / Const(float(denominator), F64)
        return out.store(idx, value(phase).cast(out.dtype))

    return [ctx.kernel(flat_loop("win_n", (size,), body, 8), inputs=[])]


def _cos(x: Expr) -> Expr:
    return Unary("cos", x)


@lowering(Op.HANN_WINDOW)
def lower_hann_window(ctx: LowerContext) -> list[Kernel]:
    return _window(ctx, lambda phase: 0.5 - 0.5 * _cos(phase))


@lowering(Op.HAMMING_WINDOW)
def lower_hamming_window(ctx: LowerContext) -> list[Kernel]:
    return _window(ctx, lambda phase: 25 / 46 - 21 / 46 * _cos(phase))


@lowering(Op.BLACKMAN_WINDOW)
def lower_blackman_window(ctx: LowerContext) -> list[Kernel]:
    return _window(ctx, lambda phase: 0.42 - 0.5 * _cos(phase) + 0.08 * _cos(phase * 2.0))


def _twiddles(ctx: LowerContext, n: int) -> tuple[Buffer, Kernel]:
    """Scratch ``tw[j] = (cos, sin)(2 pi j / n)`` and the kernel filling it."""
    table = ctx.scratch("twiddles", F64, (max(n, 1), 2))
    j = Var("tw_j")
    angle = Var("tw_angle", F64)
    fill = Loop(j, Const(n, DType.I64), block(
        Declare(angle, j.cast(F64) * (2 * math.pi / n)),
        table.store([j, 0], Unary("cos", angle)),
        table.store([j, 1], Unary("sin", angle)),
    ))
    return table, ctx.kernel(fill, inputs=[], outputs=[], scratch=[table])


def _dft_sum(name: str, count: int, sample: Sample, k: Expr, n: int, table: Buffer,
             inverse: bool, finish: Callable[[Expr, Expr], list[Stmt]],
             weight: Callable[[Expr], Expr] | None = None) -> Stmt:
    """``(re, im) = sum_{t < count} w(t) x(t) e^{-+2 pi i k t / n}``, then ``finish(re, im)``."""
    re, im, t = Var(f"{name}_re", F64), Var(f"{name}_im", F64), Var(f"{name}_t")
    xr, xi, j = Var(f"{name}_xr", F64), Var(f"{name}_xi", F64), Var(f"{name}_j")
    c, s = Var(f"{name}_c", F64), Var(f"{name}_s", F64)
    real, imag = sample(t)
    if weight is not None:
        real, imag = real * weight(t), imag * weight(t)
    sign = -1.0 if inverse else 1.0
    step = block(
        Declare(xr, real), Declare(xi, imag), Declare(j, (k * t) % n),
        Declare(c, table.load(j, 0)), Declare(s, table.load(j, 1)),
        Assign(re, re + xr * c + sign * (xi * s)),
        Assign(im, im + xi * c - sign * (xr * s)),
    )
    return block(Declare(re, Const(0.0, F64)), Declare(im, Const(0.0, F64)),
                 Loop(t, Const(count, DType.I64), step), finish(re, im))


@lowering(Op.DFT)
def lower_dft(ctx: LowerContext) -> list[Kernel]:
    x, out = ctx.input(0), ctx.output()
    rank = len(x.shape)
    axis = _const_int(ctx, 2, "axis") if ctx.has_input(2) else -2
    axis = axis + rank if axis < 0 else axis
    inverse, onesided = bool(ctx.attr("inverse")), bool(ctx.attr("onesided"))
    length = x.shape[axis]
    if ctx.has_input(1):
        n = _const_int(ctx, 1, "dft_length")
    elif inverse and onesided:
        n = 2 * (length - 1)
    else:
        n = length
    table, fill = _twiddles(ctx, n)
    complex_input = x.shape[-1] == 2

    def body(idx: list[Expr]) -> Stmt:
        k = idx[axis]

        def sample(t: Expr) -> tuple[Expr, Expr]:
            at = list(idx)
            at[axis] = t
            imag = x.load(*at, 1).cast(F64) if complex_input else Const(0.0, F64)
            return x.load(*at, 0).cast(F64), imag

        if inverse and onesided:
            # Hermitian input: bins 1..ceil(n/2)-1 count twice, DC (and Nyquist) once.
            def weight(q: Expr) -> Expr:
                once = select(q.eq(0), Const(True, DType.BOOL), (q * 2).eq(n))
                return select(once, Const(1.0, F64), Const(2.0, F64))

            return _dft_sum("dft", min(length, n // 2 + 1), sample, k, n, table, True,
                            lambda re, im: [out.store([*idx, 0], (re / n).cast(out.dtype))],
                            weight)
        scale = 1.0 / n if inverse else 1.0
        return _dft_sum("dft", min(length, n), sample, k, n, table, inverse, lambda re, im: [
            out.store([*idx, 0], (re * scale).cast(out.dtype)),
            out.store([*idx, 1], (im * scale).cast(out.dtype)),
        ])

    positions = out.shape[:-1]
    main = ctx.kernel(flat_loop("dft_pos", positions, body, 4 * min(length, n)),
                      inputs=[x], scratch=[table])
    return [fill, main]


@lowering(Op.STFT)
def lower_stft(ctx: LowerContext) -> list[Kernel]:
    signal, out = ctx.input(0), ctx.output()
    window = ctx.input(2) if ctx.has_input(2) else None
    step = _const_int(ctx, 1, "frame_step")
    if ctx.has_input(3):
        frame = _const_int(ctx, 3, "frame_length")
    else:
        frame = signal.shape[1] if window is None else window.shape[0]
    table, fill = _twiddles(ctx, frame)
    complex_input = signal.shape[-1] == 2

    def body(idx: list[Expr]) -> Stmt:
        b, f, k = idx

        def sample(t: Expr) -> tuple[Expr, Expr]:
            at = f * step + t
            imag = signal.load(b, at, 1).cast(F64) if complex_input else Const(0.0, F64)
            return signal.load(b, at, 0).cast(F64), imag

        weight = None if window is None else (lambda t: window.load(t).cast(F64))
        return _dft_sum("stft", frame, sample, k, frame, table, False, lambda re, im: [
            out.store([b, f, k, 0], re.cast(out.dtype)),
            out.store([b, f, k, 1], im.cast(out.dtype)),
        ], weight)

    inputs = [signal] + ([window] if window is not None else [])
    main = ctx.kernel(flat_loop("stft_pos", out.shape[:-1], body, 4 * frame),
                      inputs=inputs, scratch=[table])
    return [fill, main]


def _mel_edges_numpy(mels: int, length: int, rate: float, low_hz: float, high_hz: float
                     ) -> np.ndarray:
    """Band edges as spectrogram bins, computed exactly like the reference kernel."""
    low, high = (2595 * np.log10(1 + e / 700) for e in (low_hz, high_hz))
    edges_mel = low + np.arange(mels + 2) * (high - low) / (mels + 2)
    edges_hz = 700 * (10 ** (edges_mel / 2595) - 1)
    return np.floor((length + 1) * edges_hz / rate).astype(np.int64)


@lowering(Op.MEL_WEIGHT_MATRIX)
def lower_mel_weight_matrix(ctx: LowerContext) -> list[Kernel]:
    """Band edges (snapped to bins) into a scratch table, then the triangular filters."""
    out = ctx.output()
    bins, mels = out.shape
    length = _const_int(ctx, 1, "dft_length")
    edges = ctx.scratch("edges", DType.I64, (mels + 2,))
    e = Var("mel_e")
    known = [ctx.const(i) for i in (2, 3, 4)]
    if all(v is not None for v in known):
        rate, low, high = (float(v.reshape(-1)[0]) for v in known)  # type: ignore[union-attr]
        values = _mel_edges_numpy(mels, length, rate, low, high)
        fill: Stmt = block([edges.store([i], int(v)) for i, v in enumerate(values)])
    else:
        ln10 = math.log(10.0)

        def scalar(index: int) -> Expr:
            buffer = ctx.input(index)
            return buffer.load(*([0] * len(buffer.shape))).cast(F64)

        def to_mel(hz: Expr) -> Expr:
            return Unary("log", hz / 700.0 + 1.0) * (2595 / ln10)

        low, high = Var("mel_low", F64), Var("mel_high", F64)
        mel = low + e.cast(F64) * ((high - low) / float(mels + 2))
        hz = (Unary("exp", mel * (ln10 / 2595)) - 1.0) * 700.0
        fill = block(
            Declare(low, to_mel(scalar(3))), Declare(high, to_mel(scalar(4))),
            Loop(e, Const(mels + 2, DType.I64), edges.store(
                [e], Unary("floor", hz * float(length + 1) / scalar(2)).cast(DType.I64))),
        )

    def weight(idx: list[Expr]) -> Stmt:
        j, m = idx
        left, center, right = Var("mel_l"), Var("mel_c"), Var("mel_r")
        value = Var("mel_w", F64)

        def ratio(a: Expr, b: Expr) -> Expr:
            return a.cast(F64) / binary("max", b, 1).cast(F64)

        rising = ratio(j - left, center - left)
        falling = ratio(right - j, right - center)
        return block(
            Declare(left, edges.load(m)), Declare(center, edges.load(m + 1)),
            Declare(right, edges.load(m + 2)), Declare(value, Const(0.0, F64)),
            If(select(left <= j, j <= center, Const(False, DType.BOOL)), Assign(value, rising)),
            If(select(center <= j, j < right, Const(False, DType.BOOL)), Assign(value, falling)),
            If(j.eq(center), Assign(value, Const(1.0, F64))),
            out.store([j, m], value.cast(out.dtype)),
        )

    read = [] if all(v is not None for v in known) else [ctx.input(i) for i in (2, 3, 4)]
    table = ctx.kernel(fill, inputs=read, outputs=[], scratch=[edges])
    main = ctx.kernel(flat_loop("mel_jm", (bins, mels), weight, 8), inputs=[],
                      scratch=[edges])
    return [table, main]
