"""Sliding-window loop nests shared by the conv and pooling lowerings.

``over_window`` visits the taps of one output window (forward conv, pools): the input position
of a tap is ``out * stride - pad_begin + tap * dilation``; ``over_scatter_taps`` visits the input
positions that reach one output position of a transposed window (ConvTranspose, Col2Im):
``q = (out + pad_begin - tap * dilation) / stride`` when that divides exactly. Guards appear only
on the axes (and sides) where the geometry can leave the input, so unpadded windows are
branch-free, and each axis's guard wraps just the loops below it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ...ir.rules.nn_geometry import Window
from ..kernel_ir import Expr, Loop, Stmt, Var
from .common import affine, idx
from .nn_common import all_of, guarded

TapBody = Callable[[list[Expr], list[Expr]], Stmt]


def _tap_vars(kernel: Sequence[int], prefix: str) -> list[Expr]:
    return [idx(0) if k == 1 else Var(f"{prefix}{axis}") for axis, k in enumerate(kernel)]


def _wrap(kernel: Sequence[int], taps: list[Expr], conds: list[Expr | None], body: Stmt) -> Stmt:
    for axis in reversed(range(len(kernel))):
        body = guarded(conds[axis], body)
        tap = taps[axis]
        if isinstance(tap, Var):
            body = Loop(tap, idx(kernel[axis]), body)
    return body


def window_positions(win: Window, out_vars: Sequence[Expr], taps: Sequence[Expr]) -> list[Expr]:
    return [
        affine([(o, s), (t, d)], offset=-win.pads[axis])
        for axis, (o, t, s, d) in enumerate(
            zip(out_vars, taps, win.strides, win.dilations, strict=True)
        )
    ]


def range_guard(
    win: Window, outs: Sequence[int], positions: Sequence[Expr], lows: Sequence[int],
    highs: Sequence[int], axis: int,
) -> Expr | None:
    """lows[axis] <= position < highs[axis], leaving out sides the geometry never crosses."""
    first = -win.pads[axis]
    last = (outs[axis] - 1) * win.strides[axis] - win.pads[axis] + win.extent[axis] - 1
    pos = positions[axis]
    return all_of([
        pos >= lows[axis] if first < lows[axis] else None,
        pos < highs[axis] if last >= highs[axis] else None,
    ])


def over_window(
    win: Window,
    sizes: Sequence[int],
    outs: Sequence[int],
    out_vars: Sequence[Expr],
    inner: TapBody,
    prefix: str,
    lows: Sequence[int] | None = None,
    highs: Sequence[int] | None = None,
) -> Stmt:
    """Loops over the taps of the window at ``out_vars`` whose positions lie in [lows, highs)
    (the input by default); ``inner(taps, positions)`` is the body."""
    lows = [0] * win.rank if lows is None else lows
    highs = list(sizes) if highs is None else highs
    taps = _tap_vars(win.kernel, prefix)
    positions = window_positions(win, out_vars, taps)
    conds = [range_guard(win, outs, positions, lows, highs, a) for a in range(win.rank)]
    return _wrap(win.kernel, taps, conds, inner(taps, positions))


def in_bounds(
    win: Window, sizes: Sequence[int], outs: Sequence[int], positions: Sequence[Expr]
) -> Expr | None:
    """The condition that every tap position lies inside the input (None: always)."""
    return all_of([
        range_guard(win, outs, positions, [0] * win.rank, sizes, a) for a in range(win.rank)
    ])


def over_scatter_taps(
    win: Window,
    in_sizes: Sequence[int],
    outs: Sequence[int],
    out_vars: Sequence[Expr],
    inner: TapBody,
    prefix: str,
) -> Stmt:
    """Loops over the taps ``k`` and input positions ``q`` with ``q * stride - pad_begin +
    k * dilation == out`` (the gather form of a transposed window); ``inner(taps, qs)``."""
    taps = _tap_vars(win.kernel, prefix)
    qs: list[Expr] = []
    conds: list[Expr | None] = []
    for axis, (o, tap, size) in enumerate(zip(out_vars, taps, in_sizes, strict=True)):
        s, d, pad, k = win.strides[axis], win.dilations[axis], win.pads[axis], win.kernel[axis]
        t = affine([(o, 1), (tap, -d)], offset=pad)
        qs.append(t if s == 1 else t // s)
        low, high = pad - (k - 1) * d, outs[axis] - 1 + pad
        conds.append(all_of([
            t >= 0 if low < 0 else None,
            (t % s).eq(0) if s > 1 else None,
            t <= (size - 1) * s if high > (size - 1) * s else None,
        ]))
    return _wrap(win.kernel, taps, conds, inner(taps, qs))
