"""The vectorized interior of windowed pools (average and max).

Along the last spatial axis, the output positions ``[low, high)`` (``interior_span``) have
windows that never leave the input there, so their taps need no guard along it: one
VECTORIZE loop over them computes every tap as a load (all taps unrolled: the vectorizer
handles only innermost loops; a stride-2 window becomes interleaved vector loads). The taps'
positions along the other spatial axes are fixed for the whole loop: a tap row outside the
input is read at a clamped (valid) position and its value replaced by the fold's identity, a
select on a loop-invariant condition. The border positions keep the guarded scalar loops.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from ...ir.rules.nn_geometry import Window
from ...ir.types import DType
from ..kernel_ir import Buffer, Expr, Loop, LoopKind, Stmt, Var, select
from .common import affine, const, idx
from .nn_common import all_of, unravel
from .nn_window import range_guard

# Windows of more taps than this keep the scalar loops (the unrolled body would be huge).
MAX_TAPS = 64

# (plane, output indices of the spatial axes but the last, low, high) -> the interior loop
Interior = Callable[[Expr, list[Expr], int, int], Stmt]
# (taps as (validity or None, value), number of counted taps) -> the output value
Combine = Callable[[list[tuple[Expr | None, Expr]], Expr], Expr]
# (lows, highs, type) of the positions counted by an average pool
Counting = tuple[Sequence[int], Sequence[int], DType]


def interior_span(win: Window, sizes: Sequence[int], outs: Sequence[int]
                  ) -> tuple[int, int] | None:
    """The output positions along the last axis whose windows stay inside the input along it
    (None when there are too few to be worth a vector loop)."""
    last = win.rank - 1
    stride, pad = win.strides[last], win.pads[last]
    low = max(0, -(-pad // stride))
    high = min(outs[last], (sizes[last] - 1 + pad - (win.extent[last] - 1)) // stride + 1)
    return (low, high) if high - low >= 4 else None


def pool_interior(x: Buffer, out: Buffer, win: Window, plane: Expr, rows: list[Expr],
                  low: int, high: int, combine: Combine, counting: Counting | None) -> Stmt:
    """The loop over output positions [low, high) of the last axis at ``plane`` (n * C + c)
    and ``rows`` (the other spatial output indices): ``combine(taps, count)``, where ``count``
    (with ``counting``) is how many taps lie in [lows, highs) on every axis."""
    v = Var("ov")
    column = v + low
    n, c = unravel(plane, x.shape[:2])
    sizes, outs = x.shape[2:], out.shape[2:]
    last = win.rank - 1
    taps: list[tuple[Expr | None, Expr]] = []
    counted: Expr = const(0, counting[2] if counting else DType.F32)
    for combo in itertools.product(*(range(k) for k in win.kernel[:-1])):
        positions = [affine([(rows[a], win.strides[a])], t * win.dilations[a] - win.pads[a])
                     for a, t in enumerate(combo)]
        full = [*positions, idx(0)]
        valid = all_of([range_guard(win, outs, full, [0] * win.rank, sizes, a)
                        for a in range(last)])
        clamped = [p if valid is None else select(p < 0, 0, select(p >= sizes[a], sizes[a] - 1,
                                                                   p))
                   for a, p in enumerate(positions)]
        for tap in range(win.kernel[last]):
            position = affine([(column, win.strides[last])],
                              tap * win.dilations[last] - win.pads[last])
            taps.append((valid, x.load(n, c, *clamped, position)))
        if counting is not None:
            lows, highs, dtype = counting
            inside = all_of([range_guard(win, outs, full, lows, highs, a) for a in range(last)])
            row_taps = const(win.kernel[last], dtype)
            counted = counted + (row_taps if inside is None else select(inside, row_taps, 0))
    value = combine(taps, counted).cast(out.dtype)
    return Loop(v, idx(high - low), out.store([n, c, *rows, column], value), LoopKind.VECTORIZE)
