"""Lowerings of GridSample and DeformConv around one kernel-IR image sampler.

``sample_taps`` turns per-axis pixel coordinates into the taps the reference's ``sample``
reads: nearest (one tap), linear (two) or cubic (four, A = -0.75) per axis, with zeros, border
or reflection padding and either align_corners convention. Tap indices are always clamped into
the image, so loads stay in bounds; zeros padding masks out-of-image taps with a select on the
loaded (in-bounds) value. Coordinates, taps and weights are computed once per sampled point,
outside the loop over channels that shares them.

GridSample runs one kernel over (batch, *out) points. DeformConv samples its displaced taps
into an im2col scratch [N, C, kh, kw, oh, ow] (kernel 1, each point sampled once for every
output channel), then reduces it against the weights (kernel 2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...ir.op import Op
from ...ir.rules.nn_geometry import kernel_shape_of, resolve_window
from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Binary,
    Declare,
    Expr,
    Kernel,
    Stmt,
    Unary,
    Var,
    block,
    select,
)
from ..registry import LowerContext, lowering
from .common import const, idx
from .nn_common import acc_dtype, all_of, nest, unravel
from .nn_window import by_image

CUBIC_ALPHA = -0.75
# Tap bases are clamped this far outside the image before the float -> int conversion: every
# tap of a base beyond it is outside (zeros) or clamps to the same edge (border), so results
# are unchanged while huge or infinite coordinates cannot overflow the index arithmetic.
BASE_MARGIN = 8
_MODE_ALIASES = {"bilinear": "linear", "bicubic": "cubic"}


@dataclass(frozen=True)
class Tap:
    """One combination of per-axis taps: in-bounds indices, whether the tap lies inside the
    image (zeros padding only) and its weight (None for nearest)."""

    index: tuple[Expr, ...]
    valid: Expr | None
    weight: Expr | None


def _clamp(x: Expr, low: float | int, high: float | int) -> Expr:
    return Binary("min", Binary("max", x, const(low, x.dtype)), const(high, x.dtype))


def _reflect(x: Expr, low: float, high: float, name: str) -> tuple[list[Stmt], Expr]:
    """The reference's ``reflect``: fold ``x`` back into [low, high] by repeated mirroring
    (computed in ``x``'s type; the constants are exact there)."""
    dtype = x.dtype
    span = high - low
    if span <= 0:
        return [], const(low, dtype)
    dist, folds, rest = (Var(f"{name}_{part}", dtype) for part in ("dist", "folds", "rest"))
    stmts: list[Stmt] = [
        Declare(dist, select(x < low, low - x, x - high)),
        Declare(folds, Unary("floor", dist / span)),
        Declare(rest, dist - folds * span),
    ]
    even = Binary("rem", folds, const(2.0, dtype)).eq(0.0)
    from_below = select(even, low + rest, high - rest)
    from_above = select(even, high - rest, low + rest)
    return stmts, select(x < low, from_below, select(x > high, from_above, x))


def _cubic_weights(t: Expr) -> list[Expr]:
    """The reference's cubic convolution weights, operation for operation."""
    a = CUBIC_ALPHA

    def outer(s: Expr) -> Expr:
        return ((s * a - 5 * a) * s + 8 * a) * s - 4 * a

    def inner(s: Expr) -> Expr:
        return ((s * (a + 2) - (a + 3)) * s) * s + 1.0

    return [outer(t + 1.0), inner(t), inner(1.0 - t), outer(2.0 - t)]


def _axis_taps(
    pos: Expr, size: int, mode: str, padding: str, align: bool, name: str
) -> tuple[list[Stmt], list[tuple[Expr, Expr | None, Expr | None]]]:
    """Declarations and (index, valid, weight) taps along one axis for pixel coordinate
    ``pos``; weights are in ``pos``'s type."""
    dtype = pos.dtype
    low, high = (0.0, size - 1.0) if align else (-0.5, size - 0.5)
    x = Var(f"{name}_x", dtype)
    stmts: list[Stmt] = [Declare(x, Unary("round", pos) if mode == "nearest" else pos)]
    outside = Binary("or", x < low, x > high)
    if padding == "border":
        stmts.append(Assign(x, select(outside, _clamp(x, 0.0, size - 1.0), x)))
    elif padding == "reflection":
        folded_stmts, folded = _reflect(x, low, high, f"{name}_r")
        stmts += [*folded_stmts, Assign(x, select(outside, folded, x))]
    base = Var(f"{name}_base")
    if mode == "nearest":
        stmts.append(Declare(base, _clamp(x, -BASE_MARGIN, size + BASE_MARGIN).cast(DType.I64)))
        positions: list[tuple[Expr, Expr | None]] = [(base, None)]
    else:
        floor, t = Var(f"{name}_floor", dtype), Var(f"{name}_t", dtype)
        stmts += [
            Declare(floor, Unary("floor", x)),
            Declare(t, x - floor),
            Declare(base, _clamp(floor, -BASE_MARGIN, size + BASE_MARGIN).cast(DType.I64)),
        ]
        raw = [1.0 - t, t] if mode == "linear" else _cubic_weights(t)
        first = 0 if mode == "linear" else -1
        positions = []
        for k, weight in enumerate(raw):
            w = Var(f"{name}_w{k}", dtype)
            stmts.append(Declare(w, weight))
            positions.append((base + (first + k) if first + k else base, w))
    taps: list[tuple[Expr, Expr | None, Expr | None]] = []
    for k, (p, weight) in enumerate(positions):
        index, valid = Var(f"{name}_i{k}"), None
        if padding == "zeros":
            valid = Var(f"{name}_in{k}", DType.BOOL)
            stmts += [Declare(valid, Binary("and", p >= 0, p < size)),
                      Declare(index, _clamp(p, 0, size - 1))]
        elif padding == "border":
            stmts.append(Declare(index, _clamp(p, 0, size - 1)))
        else:
            # Tap positions are mirrored in f64 like the reference (exact for integers).
            folded_stmts, folded = _reflect(p.cast(DType.F64), low, high, f"{name}_f{k}")
            stmts += [*folded_stmts, Declare(index, _clamp(folded.cast(DType.I64), 0, size - 1))]
        taps.append((index, valid, weight))
    return stmts, taps


def sample_taps(
    coords: Sequence[Expr], sizes: Sequence[int], mode: str, padding: str, align: bool,
    value_type: DType, prefix: str = "s",
) -> tuple[list[Stmt], list[Tap]]:
    """Declarations and the taps of sampling an image of spatial ``sizes`` at pixel
    ``coords`` (one per spatial axis, outermost first). A tap's weight is the product of its
    axis weights in the coordinates' type, converted to ``value_type``; the sample is the sum
    over taps, in order, of ``(value if valid else 0) * weight``."""
    stmts: list[Stmt] = []
    per_axis = []
    for axis, (pos, size) in enumerate(zip(coords, sizes, strict=True)):
        axis_stmts, taps = _axis_taps(pos, size, mode, padding, align, f"{prefix}{axis}")
        stmts += axis_stmts
        per_axis.append(taps)
    combos: list[list[tuple[Expr, Expr | None, Expr | None]]] = [[]]
    for taps in per_axis:
        combos = [combo + [tap] for combo in combos for tap in taps]
    result: list[Tap] = []
    for number, combo in enumerate(combos):
        weight: Expr | None = None
        for _, _, w in combo:
            if w is not None:
                weight = w if weight is None else weight * w
        if weight is not None:
            local = Var(f"{prefix}_w{number}", value_type)
            stmts.append(Declare(local, weight.cast(value_type)))
            weight = local
        valid = all_of([v for _, v, _ in combo])
        result.append(Tap(tuple(i for i, _, _ in combo), valid, weight))
    return stmts, result


def sampled(taps: Sequence[Tap], load: Callable[[list[Expr]], Expr], value_type: DType) -> Expr:
    """The weighted sum of ``load(index)`` (cast to ``value_type``) over ``taps``."""
    total: Expr | None = None
    for tap in taps:
        value: Expr = load(list(tap.index)).cast(value_type)
        if tap.valid is not None:
            value = select(tap.valid, value, const(0, value_type))
        if tap.weight is not None:
            value = value * tap.weight
        total = value if total is None else total + value
    assert total is not None
    return total


def _unnormalize(coord: Expr, size: int, align: bool) -> Expr:
    if align:
        return (coord + 1.0) / 2.0 * float(size - 1)
    return ((coord + 1.0) * float(size) - 1.0) / 2.0


@lowering(Op.GRID_SAMPLE)
@by_image
def lower_grid_sample(ctx: LowerContext) -> list[Kernel]:
    x, grid, out = ctx.input(0), ctx.input(1), ctx.output()
    mode = _MODE_ALIASES.get(ctx.attr("mode"), ctx.attr("mode"))
    padding = ctx.attr("padding_mode")
    align = bool(ctx.attr("align_corners"))
    ct = acc_dtype(x.dtype)
    batch, channels = x.shape[:2]
    sizes = x.shape[2:]
    rank = len(sizes)

    def body(v: list[Expr]) -> Stmt:
        b, o = v[0], v[1:]
        # The grid's last axis lists (x, y[, z]): the innermost spatial axis first.
        coords = [_unnormalize(grid.load(b, *o, rank - 1 - axis).cast(ct), size, align)
                  for axis, size in enumerate(sizes)]
        stmts, taps = sample_taps(coords, sizes, mode, padding, align, ct)

        def channel(cv: list[Expr]) -> Stmt:
            value = sampled(taps, lambda index: x.load(b, cv[0], *index), ct)
            return out.store([b, cv[0], *o], value.cast(out.dtype))

        return block(stmts, nest([channels], channel, "c"))

    taps_per_point = {"nearest": 1, "linear": 2, "cubic": 4}[mode] ** rank
    work = out.numel * taps_per_point
    return [ctx.kernel(nest([batch, *out.shape[2:]], body, "o", work=work))]


@lowering(Op.DEFORM_CONV)
@by_image
def lower_deform_conv(ctx: LowerContext) -> list[Kernel]:
    x, w, offset, out = ctx.input(0), ctx.input(1), ctx.input(2), ctx.output()
    bias = ctx.input(3) if ctx.has_input(3) else None
    mask = ctx.input(4) if ctx.has_input(4) else None
    kh, kw = kernel_shape_of(ctx.attrs, w.shape[2:], 2, ctx.fail)
    win = resolve_window(ctx.attrs, x.shape[2:], (kh, kw), ctx.fail)
    batch, channels, height, width = x.shape
    out_channels, oh, ow = out.shape[1:]
    groups, group = int(ctx.attr("offset_group")), int(ctx.attr("group"))
    if channels % groups:
        raise ctx.fail(f"{channels} input channels are not divisible by offset_group {groups}")
    per_offset_group = channels // groups
    acc = acc_dtype(x.dtype)
    cols = ctx.scratch("cols", acc, (batch, channels, kh, kw, oh, ow))

    def sample_body(v: list[Expr]) -> Stmt:
        n, g, i, j, y, xo = v
        tap = (g * kh + i) * kw + j

        def coord(axis: int, tap_var: Expr, out_var: Expr) -> Expr:
            # An integer base plus the offset promotes to f64 in the reference.
            base = tap_var * win.dilations[axis] + out_var * win.strides[axis] - win.pads[axis]
            shift = offset.load(n, tap * 2 + axis, y, xo).cast(acc).cast(DType.F64)
            return base.cast(DType.F64) + shift

        stmts, taps = sample_taps([coord(0, i, y), coord(1, j, xo)], (height, width),
                                  "linear", "zeros", False, acc)
        scale = Var("mask", acc)
        if mask is not None:
            stmts.append(Declare(scale, mask.load(n, tap, y, xo).cast(acc)))

        def channel(cv: list[Expr]) -> Stmt:
            c = g * per_offset_group + cv[0]
            value = sampled(taps, lambda index: x.load(n, c, *index), acc)
            return cols.store([n, c, i, j, y, xo], value if mask is None else value * scale)

        return block(stmts, nest([per_offset_group], channel, "c"))

    per_group_in, per_group_out = channels // group, out_channels // group
    # Kernel 2 accumulates one output row at a time in f32/f64, the row contiguous and
    # innermost (vectorized) with the reduction around it: each element still sums its
    # (channel, tap) terms in order.
    rows = ctx.scratch("row", acc, (batch * out_channels, ow))

    def conv_body(v: list[Expr]) -> Stmt:
        row, y = v
        n, m = unravel(row, (batch, out_channels))
        base = (m // per_group_out) * per_group_in if group > 1 else idx(0)
        weight = Var("weight", acc)

        def along(make: Callable[[Expr], Stmt]) -> Stmt:
            return nest([ow], lambda xv: make(xv[0]), "x", vectorize_inner=True)

        def reduction(r: list[Expr]) -> Stmt:
            c, i, j = r
            return block(Declare(weight, w.load(m, c, i, j).cast(acc)), along(
                lambda xo: rows.store([row, xo], rows.load(row, xo)
                                      + cols.load(n, base + c, i, j, y, xo) * weight)))

        def finish(xo: Expr) -> Stmt:
            total = rows.load(row, xo)
            result = total if bias is None else total + bias.load(m).cast(acc)
            return out.store([n, m, y, xo], result.cast(out.dtype))

        return block(along(lambda xo: rows.store([row, xo], const(0, acc))),
                     nest([per_group_in, kh, kw], reduction, "r"), along(finish))

    sample_work = cols.numel * 4
    conv_work = out.numel * per_group_in * kh * kw
    return [
        ctx.kernel(nest([batch, groups, kh, kw, oh, ow], sample_body, "p", work=sample_work),
                   inputs=[b for b in (x, offset, mask) if b is not None], outputs=[],
                   scratch=[cols]),
        ctx.kernel(nest([batch * out_channels, oh], conv_body, "o", work=conv_work),
                   inputs=[b for b in (w, bias) if b is not None], scratch=[cols, rows]),
    ]
