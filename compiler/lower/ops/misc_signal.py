"""Lowerings of the signal ops: Hann/Hamming/Blackman windows, DFT, STFT, MelWeightMatrix.

All compute in f64 and cast to the output type at the store (the reference computes the windows
and mel weights in f64, the transforms in the input's precision, at least single: f64 here is
at least as accurate). The transforms are naive O(n^2) sums over a twiddle table
``tw[j] = (cos, sin)(2 pi j / n)`` that a first kernel fills, indexed by ``k t mod n``.
Sizes (window size, DFT length and axis, frame length and step, mel bin count) may be run-time
values: a first kernel then reads and checks them and defines the output extents, the compute
kernel reads them again (and does nothing when they were invalid); a transform length known
only at run time evaluates cos and sin term by term instead of using the table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ...ir.op import Op
from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Block,
    Buffer,
    Compare,
    Const,
    Declare,
    Expr,
    If,
    Kernel,
    Loop,
    Report,
    Stmt,
    Unary,
    Var,
    as_index,
    binary,
    block,
    flat_view,
    select,
)
from ..registry import LowerContext, lowering
from .common import Extent, idx
from .index_common import define_outputs, read_scalar, smaller
from .movement_loops import logical, numel
from .rnn import flat_loop

F64 = DType.F64
Sample = Callable[[Expr], tuple[Expr, Expr]]


def _const_int(ctx: LowerContext, index: int) -> int | None:
    """The value of scalar input ``index`` when it is a compile-time constant."""
    data = ctx.const(index)
    return None if data is None else int(data.reshape(-1)[0])


def _scalar(ctx: LowerContext, index: int, name: str) -> tuple[list[Stmt], Expr]:
    """Statements and an i64 expression for scalar input ``index``: a constant when known at
    compile time, else a local read at run time (floats truncate)."""
    value = _const_int(ctx, index)
    if value is not None:
        return [], idx(value)
    var, read = read_scalar(ctx, index, name)
    return [read], var


def _sizing_kernel(ctx: LowerContext, stmts: list[Stmt], ok: Expr, message: str,
                   extent: Callable[[int, int], Expr]) -> list[Kernel]:
    """The shape kernel of a signal op whose output extents depend on input values: reports
    ``message`` unless ``ok`` and defines axis ``a`` of output ``o`` as ``extent(o, a)`` (0
    after a report, so the compute kernel, which checks ``ok`` too, touches nothing)."""
    if not ctx.undefined_dims:
        return []
    check = If(ok, Block(()), Report(f"{ctx.node.describe()}: {message}"))
    sizes = define_outputs(ctx, lambda o, a: select(ok, extent(o, a), idx(0)))
    return [ctx.kernel(block(stmts, check, sizes), outputs=[], scratch=[])]


def _window(ctx: LowerContext, value: Callable[[Expr], Expr]) -> list[Kernel]:
    out = ctx.output()
    size = out.shape[0]
    first: list[Kernel] = []
    if not isinstance(size, int):
        stmts, given = _scalar(ctx, 0, "size")
        first = _sizing_kernel(ctx, stmts, given >= 0, "size must be >= 0",
                               lambda o, a: given)
    periodic = bool(ctx.attr("periodic"))
    if isinstance(size, int):
        denominator: Expr = Const(float(size if periodic else size - 1), F64)
    else:
        denominator = (size if periodic else size - 1).cast(F64)

    def body(idx: list[Expr]) -> Stmt:
        # 2 pi n / N; a symmetric window of size 1 divides 0 by 0, NaN like the reference.
        phase = idx[0].cast(F64) * (2 * math.pi) / denominator
        return out.store(idx, value(phase).cast(out.dtype))

    return [*first, ctx.kernel(flat_loop("win_n", (size,), body, 8), inputs=[])]


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


def _twiddles(ctx: LowerContext, n: Extent) -> tuple[Buffer | None, list[Kernel]]:
    """Scratch ``tw[j] = (cos, sin)(2 pi j / n)`` and the kernel filling it, for a static
    ``n``; none for a run-time ``n`` (the sums then evaluate cos and sin term by term)."""
    if not isinstance(n, int):
        return None, []
    table = ctx.scratch("twiddles", F64, (max(n, 1), 2))
    j = Var("tw_j")
    angle = Var("tw_angle", F64)
    fill = Loop(j, Const(n, DType.I64), block(
        Declare(angle, j.cast(F64) * (2 * math.pi / n)),
        table.store([j, 0], Unary("cos", angle)),
        table.store([j, 1], Unary("sin", angle)),
    ))
    return table, [ctx.kernel(fill, inputs=[], outputs=[], scratch=[table])]


def _dft_sum(name: str, count: Extent, sample: Sample, k: Expr, n: Extent,
             table: Buffer | None, inverse: bool, finish: Callable[[Expr, Expr], list[Stmt]],
             weight: Callable[[Expr], Expr] | None = None) -> Stmt:
    """``(re, im) = sum_{t < count} w(t) x(t) e^{-+2 pi i k t / n}``, then ``finish(re, im)``."""
    re, im, t = Var(f"{name}_re", F64), Var(f"{name}_im", F64), Var(f"{name}_t")
    xr, xi, j = Var(f"{name}_xr", F64), Var(f"{name}_xi", F64), Var(f"{name}_j")
    c, s = Var(f"{name}_c", F64), Var(f"{name}_s", F64)
    real, imag = sample(t)
    if weight is not None:
        real, imag = real * weight(t), imag * weight(t)
    sign = -1.0 if inverse else 1.0
    if table is not None:
        cos, sin = table.load(j, 0), table.load(j, 1)
    else:
        angle = j.cast(F64) * (2 * math.pi) / as_index(n).cast(F64)
        cos, sin = Unary("cos", angle), Unary("sin", angle)
    step = block(
        Declare(xr, real), Declare(xi, imag), Declare(j, (k * t) % n),
        Declare(c, cos), Declare(s, sin),
        Assign(re, re + xr * c + sign * (xi * s)),
        Assign(im, im + xi * c - sign * (xr * s)),
    )
    return block(Declare(re, Const(0.0, F64)), Declare(im, Const(0.0, F64)),
                 Loop(t, as_index(count), step), finish(re, im))


def _dft_axis(ctx: LowerContext, rank: int) -> tuple[list[Stmt], int | Expr]:
    """The transformed axis, normalized: an int when known at compile time, else a local
    (read at run time; validity is checked by the caller)."""
    if not ctx.has_input(2):
        return [], rank - 2
    value = _const_int(ctx, 2)
    if value is not None:
        return [], value + rank if value < 0 else value
    given, read = read_scalar(ctx, 2, "dft_axis_in")
    axis = Var("dft_axis")
    return [read, Declare(axis, select(given < 0, given + rank, given))], axis


def _product(axis: int | Expr, extents: Sequence[Extent], side: str) -> Extent:
    """The product of the extents before (``side`` "lt": d < axis) or after ("gt") the axis;
    for a run-time axis each factor is selected by comparing its position with the axis."""
    if isinstance(axis, int):
        return numel([e for d, e in enumerate(extents) if (d < axis if side == "lt" else
                                                            d > axis)])
    total: Expr = idx(1)
    for d, extent in enumerate(extents):
        if not (isinstance(extent, int) and extent == 1):
            total = total * select(Compare(side, idx(d), axis), as_index(extent), idx(1))
    return total


def _at_axis(axis: Expr, extents: Sequence[Extent]) -> Expr:
    """The extent at a run-time axis (0 when the axis is out of range)."""
    found: Expr = idx(0)
    for d, extent in enumerate(extents):
        found = select(axis.eq(d), as_index(extent), found)
    return found


@lowering(Op.DFT)
def lower_dft(ctx: LowerContext) -> list[Kernel]:
    """A naive DFT along the axis; a run-time axis or length reads them in both kernels (the
    first sizes the output) and addresses the data as [outer, length, inner, parts]."""
    x, out = ctx.input(0), ctx.output()
    rank = len(x.shape)
    signal = x.shape[:-1]
    inverse, onesided = bool(ctx.attr("inverse")), bool(ctx.attr("onesided"))
    axis_stmts, axis = _dft_axis(ctx, rank)
    stmts = list(axis_stmts)
    if isinstance(axis, int):
        length: Extent = x.shape[axis]
    else:
        length = Var("dft_length_in")
        stmts.append(Declare(length, _at_axis(axis, signal)))
    if ctx.has_input(1):
        n_stmts, given = _scalar(ctx, 1, "dft_n")
        stmts += n_stmts
        n: Extent = int(given.value) if isinstance(given, Const) else given
    elif inverse and onesided:
        n = 2 * (length - 1) if isinstance(length, int) else (length - 1) * 2
    else:
        n = length
    m: Extent = n
    if onesided and not inverse:
        m = n // 2 + 1
    conds: list[Expr] = []
    if not isinstance(axis, int):
        conds += [axis >= 0, axis <= rank - 2]
    if not isinstance(n, int):
        conds.append(as_index(n) >= 1)
    ok = logical("and", conds) if conds else Const(True, DType.BOOL)
    first = _sizing_kernel(
        ctx, stmts, ok, "the axis or dft_length is out of range",
        lambda o, a: select(as_index(axis).eq(a), as_index(m), as_index(signal[a])))
    table, fill = _twiddles(ctx, n)
    complex_input = x.shape[-1] == 2
    length_f64 = Const(float(n), F64) if isinstance(n, int) else as_index(n).cast(F64)
    if isinstance(axis, int):
        positions: Sequence[Extent] = out.shape[:-1]
        static_axis = axis

        def locate(p: list[Expr]) -> tuple[Expr, Callable[[Expr, int], Expr],
                                           Callable[[int], list[Expr]]]:
            def source(t: Expr, part: int) -> Expr:
                at = list(p)
                at[static_axis] = t
                return x.load(*at, part)

            return p[static_axis], source, lambda part: [*p, idx(part)]
    else:
        # A run-time axis: the data as [outer, length, inner, parts], flat.
        positions = (_product(axis, signal, "lt"), m, _product(axis, signal, "gt"))
        flat_x = flat_view(x)

        def locate(p: list[Expr]) -> tuple[Expr, Callable[[Expr, int], Expr],
                                           Callable[[int], list[Expr]]]:
            o, k, i = p
            inner = positions[2]
            return k, lambda t, part: flat_x.load(
                ((o * length + t) * inner + i) * x.shape[-1] + part), lambda part: [
                ((o * m + k) * inner + i) * out.shape[-1] + part]

    def body(position: list[Expr]) -> Stmt:
        k, source, target = locate(position)
        destination = out if isinstance(axis, int) else flat_view(out)

        def sample(t: Expr) -> tuple[Expr, Expr]:
            imag = source(t, 1).cast(F64) if complex_input else Const(0.0, F64)
            return source(t, 0).cast(F64), imag

        def store(part: int, value: Expr) -> Stmt:
            return destination.store(target(part), value.cast(out.dtype))

        if inverse and onesided:
            # Hermitian input: bins 1..ceil(n/2)-1 count twice, DC (and Nyquist) once.
            def weight(q: Expr) -> Expr:
                once = select(q.eq(0), Const(True, DType.BOOL), (q * 2).eq(n))
                return select(once, Const(1.0, F64), Const(2.0, F64))

            return _dft_sum("dft", smaller(length, n // 2 + 1), sample, k, n, table, True,
                            lambda re, im: [store(0, re / length_f64)], weight)
        scale: Expr = Const(1.0, F64)
        if inverse:
            scale = Const(1.0 / n, F64) if isinstance(n, int) else scale / length_f64
        return _dft_sum("dft", smaller(length, n), sample, k, n, table, inverse,
                        lambda re, im: [store(0, re * scale), store(1, im * scale)])

    work = 4 * (min(length, n) if isinstance(length, int) and isinstance(n, int) else 64)
    nest: Stmt = flat_loop("dft_pos", positions, body, work)
    if conds:
        nest = block(stmts, If(ok, nest))
    main = ctx.kernel(nest, scratch=[] if table is None else [table])
    return [*first, *fill, main]


@lowering(Op.STFT)
def lower_stft(ctx: LowerContext) -> list[Kernel]:
    """Frames of the signal, windowed, each transformed by a naive DFT; a run-time frame step
    or length is read in both kernels (the first sizes the output)."""
    signal, out = ctx.input(0), ctx.output()
    window = ctx.input(2) if ctx.has_input(2) else None
    stmts, step = _scalar(ctx, 1, "frame_step")
    conds: list[Expr] = []
    frame: Extent = signal.shape[1] if window is None else window.shape[0]
    if ctx.has_input(3):
        given_stmts, given = _scalar(ctx, 3, "frame_length")
        stmts += given_stmts
        if window is not None:
            conds.append(given.eq(as_index(frame)))
        frame = int(given.value) if isinstance(given, Const) else given
    length = signal.shape[1]
    if not isinstance(step, Const):
        conds.append(step >= 1)
    if not (isinstance(frame, int) and isinstance(length, int)):
        conds += [as_index(frame) >= 1, as_index(frame) <= length]
    ok = logical("and", conds) if conds else Const(True, DType.BOOL)
    frames = (as_index(length) - frame) // step + 1
    bins = as_index(frame) // 2 + 1 if ctx.attr("onesided") else as_index(frame)
    first = _sizing_kernel(ctx, stmts, ok, "frame_step or frame_length is out of range "
                           "(step >= 1, 1 <= frame length <= signal length, and the window's "
                           "length when a window is given)",
                           lambda o, a: frames if a == 1 else bins)
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

    nest: Stmt = flat_loop("stft_pos", out.shape[:-1], body,
                           4 * (frame if isinstance(frame, int) else 64))
    nest = block(stmts, If(ok, nest)) if conds or stmts else nest
    main = ctx.kernel(nest, scratch=[] if table is None else [table])
    return [*first, *fill, main]


def _mel_edges_numpy(mels: int, length: int, rate: float, low_hz: float, high_hz: float
                     ) -> np.ndarray:
    """Band edges as spectrogram bins, computed exactly like the reference kernel."""
    low, high = (2595 * np.log10(1 + e / 700) for e in (low_hz, high_hz))
    edges_mel = low + np.arange(mels + 2) * (high - low) / (mels + 2)
    edges_hz = 700 * (10 ** (edges_mel / 2595) - 1)
    return np.floor((length + 1) * edges_hz / rate).astype(np.int64)


@lowering(Op.MEL_WEIGHT_MATRIX)
def lower_mel_weight_matrix(ctx: LowerContext) -> list[Kernel]:
    """Band edges (snapped to bins) into a scratch table, then the triangular filters. A
    run-time bin count or length is read (and checked) by a first kernel sizing the output;
    with a run-time bin count the edges are computed where the filters use them."""
    out = ctx.output()
    bins, mels = out.shape
    mel_stmts, mel_count = _scalar(ctx, 0, "num_mel_bins")
    length_stmts, length = _scalar(ctx, 1, "dft_length")
    stmts = [*mel_stmts, *length_stmts]
    ok = logical("and", [mel_count >= 1, length >= 1])
    first = _sizing_kernel(ctx, stmts, ok, "num_mel_bins and dft_length must be >= 1",
                           lambda o, a: length // 2 + 1 if a == 0 else mel_count)
    known = [ctx.const(i) for i in (2, 3, 4)]
    ln10 = math.log(10.0)

    def scalar(index: int) -> Expr:
        buffer = ctx.input(index)
        return buffer.load(*([0] * len(buffer.shape))).cast(F64)

    def to_mel(hz: Expr) -> Expr:
        return Unary("log", hz / 700.0 + 1.0) * (2595 / ln10)

    low, high = Var("mel_low", F64), Var("mel_high", F64)
    bounds: list[Stmt] = [Declare(low, to_mel(scalar(3))), Declare(high, to_mel(scalar(4)))]

    def plus_one_f64(value: Expr, add: int) -> Expr:
        if isinstance(value, Const):
            return Const(float(int(value.value) + add), F64)
        return (value + add).cast(F64)

    def edge(e: Expr) -> Expr:
        """Band edge ``e`` as a spectrogram bin, as the reference computes it."""
        mel = low + e.cast(F64) * ((high - low) / plus_one_f64(mel_count, 2))
        hz = (Unary("exp", mel * (ln10 / 2595)) - 1.0) * 700.0
        return Unary("floor", hz * plus_one_f64(length, 1) / scalar(2)).cast(DType.I64)

    e = Var("mel_e")
    tables: list[Kernel] = []
    edges: Buffer | None = None
    if isinstance(mels, int):
        edges = ctx.scratch("edges", DType.I64, (mels + 2,))
        if all(v is not None for v in known) and isinstance(length, Const):
            rate, low_hz, high_hz = (float(v.reshape(-1)[0]) for v in known)  # type: ignore[union-attr]
            values = _mel_edges_numpy(mels, int(length.value), rate, low_hz, high_hz)
            fill: Stmt = block([edges.store([i], int(v)) for i, v in enumerate(values)])
        else:
            fill = block(stmts, bounds, Loop(e, Const(mels + 2, DType.I64),
                                              edges.store([e], edge(e))))
        tables.append(ctx.kernel(fill, outputs=[], scratch=[edges]))

    def weight(idx: list[Expr]) -> Stmt:
        j, m = idx
        left, center, right = Var("mel_l"), Var("mel_c"), Var("mel_r")
        value = Var("mel_w", F64)

        def ratio(a: Expr, b: Expr) -> Expr:
            return a.cast(F64) / binary("max", b, 1).cast(F64)

        def band(offset: int) -> Expr:
            at = m + offset if offset else m
            return edge(at) if edges is None else edges.load(at)

        rising = ratio(j - left, center - left)
        falling = ratio(right - j, right - center)
        return block(
            Declare(left, band(0)), Declare(center, band(1)),
            Declare(right, band(2)), Declare(value, Const(0.0, F64)),
            If(select(left <= j, j <= center, Const(False, DType.BOOL)), Assign(value, rising)),
            If(select(center <= j, j < right, Const(False, DType.BOOL)), Assign(value, falling)),
            If(j.eq(center), Assign(value, Const(1.0, F64))),
            out.store([j, m], value.cast(out.dtype)),
        )

    nest: Stmt = flat_loop("mel_jm", (bins, mels), weight, 8)
    if edges is None:
        nest = block(stmts, bounds, If(ok, nest))
    main = ctx.kernel(nest, scratch=[] if edges is None else [edges])
    return [*first, *tables, main]
