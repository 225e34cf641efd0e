"""Lowerings of Pad (constant / reflect / edge / wrap, negative pads crop) and CenterCropPad.

Both are a window copy: per axis, output position ``o`` maps to ``p = o - grow_lo`` in the
(cropped) input block; ``0 <= p < kept`` copies ``data[crop_lo + p]``, anything else is the pad
value (constant) or a mirrored / clamped / wrapped source position. The innermost axis is split
into three loops (left pad, contiguous middle copy, right pad) so the bulk of the copy has no
per-element test; outer axes compute their source index once per iteration.

With run-time extents or pads / axes / shape values read at run time, a shape kernel computes
each axis's window (crop, kept length, growth) and the output extents, Reporting pads that crop
more than an extent; the same window loops then run on those run-time numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...ir.op import Op
from ...ir.rules.movement import pad_widths
from ...ir.shapes import normalize_axes
from ..kernel_ir import (
    Block,
    Buffer,
    Declare,
    Expr,
    If,
    Kernel,
    Stmt,
    Var,
    as_index,
    binary,
    block,
    extent_add,
    select,
)
from ..registry import LowerContext, lowering
from .common import const, idx
from .movement_loops import (
    ShapeKernel,
    any_of,
    copy_reshaped,
    count_true,
    input_values,
    logical,
    loops,
    numel,
    pick,
    read_params,
    run_time_axes,
    shifted,
    static_shape,
)


@dataclass(frozen=True)
class _Axis:
    """One axis of a pad: input rows [crop_lo, crop_lo + kept) land at [grow_lo, ...); the
    numbers are static or run-time (locals of the kernel)."""

    crop_lo: int | Expr
    kept: int | Expr
    grow_lo: int | Expr
    out: int | Expr

    @property
    def grows(self) -> bool:
        """Whether the axis may grow (taken so when any number is known only at run time)."""
        if not all(isinstance(v, int) for v in (self.crop_lo, self.kept, self.grow_lo, self.out)):
            return True
        grow_lo, kept, out = static_shape([self.grow_lo, self.kept, self.out])
        return grow_lo > 0 or grow_lo + kept < out


def _axes(shape: tuple[int, ...], widths: list[tuple[int, int]]) -> list[_Axis]:
    axes = []
    for d, (lo, hi) in zip(shape, widths, strict=True):
        crop_lo, crop_hi = max(-lo, 0), max(-hi, 0)
        kept = d - crop_lo - crop_hi
        axes.append(_Axis(crop_lo, kept, max(lo, 0), kept + max(lo, 0) + max(hi, 0)))
    return axes


def _mirror(p: Expr, axis: _Axis, mode: str) -> Expr:
    """Source index of block position ``p`` (any integer) for reflect / edge / wrap."""
    n = axis.kept
    inside: Expr
    if mode == "edge" or n == 1:
        inside = select(p < 0, 0, select(p >= n, n - 1, p))
    elif mode == "wrap":
        inside = (p % n + n) % n
    else:  # reflect: the block mirrored without repeating its ends has period 2 (n - 1)
        period = 2 * (n - 1)
        q = (p % period + period) % period
        inside = select(q < n, q, period - q)
    return shifted(inside, axis.crop_lo)


def pad_window(data: Buffer, out: Buffer, axes: list[_Axis], mode: str, value: Expr) -> Stmt:
    """The loop nest writing ``out`` = ``data`` padded per axis as ``axes`` say."""
    if isinstance(numel(out.shape), int) and numel(out.shape) == 0:
        return Block(())
    if not data.shape:
        return out.store([], data.load())
    last = axes[-1]
    if mode == "constant" and any(isinstance(a.kept, int) and a.kept == 0 for a in axes):
        return loops(out.shape, lambda o: out.store(o, value), "p")
    if not any(a.grows for a in axes):
        return loops(out.shape, lambda o: out.store(o, data.load(*[
            shifted(v, a.crop_lo) for v, a in zip(o, axes, strict=True)])), "w")

    def outer_source(o: Expr, axis: _Axis) -> tuple[Expr, Expr | None]:
        """(source index, validity for constant mode) of output position ``o``."""
        if not axis.grows:
            return shifted(o, axis.crop_lo), None
        p = shifted(o, _negated(axis.grow_lo))
        inside = logical("and", [p >= 0, p < axis.kept])
        direct = shifted(o, _difference(axis.crop_lo, axis.grow_lo))
        if mode == "constant":
            return select(inside, direct, as_index(axis.crop_lo)), inside
        return select(inside, direct, _mirror(p, axis, mode)), None

    def row(o: list[Expr]) -> Stmt:
        sources = [outer_source(v, a) for v, a in zip(o, axes[:-1], strict=True)]
        index = [s for s, _ in sources]
        conds = [c for _, c in sources if c is not None]

        def edge_value(p: Expr) -> Expr:
            if mode == "constant":
                return value
            return data.load(*index, _mirror(p, last, mode))

        right = _difference(_difference(last.out, last.grow_lo), last.kept)
        parts = [
            loops([last.grow_lo], lambda j: out.store(
                [*o, j[0]], edge_value(shifted(j[0], _negated(last.grow_lo)))), "pl"),
            loops([last.kept], lambda j: out.store(
                [*o, shifted(j[0], last.grow_lo)],
                data.load(*index, shifted(j[0], last.crop_lo))), "pm"),
            loops([right], lambda j: out.store(
                [*o, shifted(j[0], extent_add(last.grow_lo, last.kept))],
                edge_value(shifted(j[0], last.kept))), "pr"),
        ]
        body = block([p for p, extent in zip(parts, (last.grow_lo, last.kept, right),
                                             strict=True)
                      if not isinstance(extent, int) or extent > 0])
        if not conds:
            return body
        blank = loops([last.out], lambda j: out.store([*o, j[0]], value), "pb")
        return If(logical("and", conds), body, blank)

    return loops(out.shape[:-1], row, "po", work=numel(out.shape), vectorize=False)


def _negated(value: int | Expr) -> int | Expr:
    return -value


def _difference(a: int | Expr, b: int | Expr) -> int | Expr:
    if isinstance(a, int) and isinstance(b, int):
        return a - b
    return as_index(a) - b


@lowering(Op.PAD)
def lower_pad(ctx: LowerContext) -> list[Kernel]:
    data, out = ctx.input(0), ctx.output()
    mode = ctx.attr("mode")
    value = Var("pad_value", data.dtype)
    if ctx.has_input(2):
        source = ctx.input(2)
        init: Expr = source.load(*[idx(0)] * len(source.shape))
    else:
        init = const(0, data.dtype)
    pads, axes = ctx.const(1), ctx.const(3)
    if pads is None or (ctx.has_input(3) and axes is None) or not (
            data.is_static and out.is_static):
        return _pad_at_run_time(ctx, data, out, mode, Declare(value, init))
    widths = pad_widths(len(data.shape), [int(v) for v in pads.reshape(-1)],
                        None if axes is None else [int(v) for v in axes.reshape(-1)], ctx.fail)
    windows = _axes(static_shape(data.shape), widths)  # type: ignore[arg-type]
    if mode != "constant" and 0 in [a.kept for a in windows] and numel(out.shape) > 0:
        raise ctx.fail(f"cannot pad an empty tensor in {mode} mode")
    window = pad_window(data, out, windows, mode, value)
    return [ctx.kernel(block(Declare(value, init), window))]


def _pad_at_run_time(ctx: LowerContext, data: Buffer, out: Buffer, mode: str,
                     value: Declare) -> list[Kernel]:
    """Pad with pads / axes read at run time (or run-time extents): the window per axis from a
    shape kernel."""
    rank = len(data.shape)
    shape = ShapeKernel(ctx)
    pads, given = input_values(ctx, 1), input_values(ctx, 3)
    assert pads is not None
    count = rank if given is None else len(given)
    if len(pads) != 2 * count:
        raise ctx.fail(f"pads has {len(pads)} entries; expected 2 * {count} axes")
    axes = run_time_axes(shape, given or [idx(a) for a in range(rank)], rank)
    widths: list[tuple[Expr, Expr]] = []
    for axis in range(rank):
        chosen = [a.eq(axis) for a in axes]
        shape.check(count_true(chosen) > 1, f"axes name axis {axis} twice")
        widths.append((shape.local(pick(chosen, pads[:count], 0), "lo"),
                       shape.local(pick(chosen, pads[count:], 0), "hi")))
    windows = _run_time_windows(shape, data, widths)
    if mode != "constant":
        empty = any_of([w.kept.eq(0) for w in windows])  # type: ignore[union-attr]
        grows = any_of([logical("or", [lo > 0, hi > 0]) for lo, hi in widths])
        shape.check(logical("and", [empty, grows]), f"cannot pad an empty tensor in {mode} mode")
    return _window_kernels(ctx, shape, data, out, windows, mode, value)


def _run_time_windows(shape: ShapeKernel, data: Buffer,
                      widths: list[tuple[Expr, Expr]]) -> list[_Axis]:
    """Each axis's window for run-time (begin, end) pads, checked not to crop more than the
    extent (shape-kernel locals)."""
    windows = []
    for axis, (lo, hi) in enumerate(widths):
        dim = as_index(data.shape[axis])
        crop_lo = shape.local(binary("max", -lo, idx(0)), "crop")
        kept = shape.local(dim - crop_lo - binary("max", -hi, idx(0)), "kept")
        shape.check(kept < 0, f"the pads crop more than the extent of axis {axis}")
        grow_lo = shape.local(binary("max", lo, idx(0)), "grow")
        windows.append(_Axis(crop_lo, kept, grow_lo, kept + grow_lo + binary("max", hi, idx(0))))
    return windows


def _window_kernels(ctx: LowerContext, shape: ShapeKernel, data: Buffer, out: Buffer,
                    windows: list[_Axis], mode: str, value: Declare) -> list[Kernel]:
    """The shape kernel (output extents, window parameters), then the window copy on the
    parameters it stored."""
    params = [v for w in windows for v in (w.crop_lo, w.kept, w.grow_lo)]
    first, vector = shape.kernels([[w.out for w in windows]],
                                  [as_index(v) for v in params])
    assert vector is not None
    read, at, ok = read_params(vector, len(params), "pad")
    axes = [_Axis(at[3 * a], at[3 * a + 1], at[3 * a + 2], out.shape[a])
            for a in range(len(windows))]
    window = pad_window(data, out, axes, mode, value.var)
    return [first, ctx.kernel(block(read, value, If(ok, window)))]


@lowering(Op.CENTER_CROP_PAD)
def lower_center_crop_pad(ctx: LowerContext) -> list[Kernel]:
    """A constant-zero pad whose widths center the input (the odd element goes last)."""
    data, out = ctx.input(0), ctx.output()
    given = ctx.attr("axes")
    rank = len(data.shape)
    axes = normalize_axes(range(rank) if given is None else given, rank)
    if not (data.is_static and out.is_static):
        return _center_crop_pad_at_run_time(ctx, data, out, axes)
    widths = [(0, 0)] * rank
    dims, sizes = static_shape(data.shape), static_shape(out.shape)
    for axis in axes:
        dim, size = dims[axis], sizes[axis]
        offset = abs(size - dim) // 2
        widths[axis] = (offset, size - dim - offset) if size >= dim else (
            -offset, size - dim + offset)
    if data.shape == out.shape:
        return [ctx.kernel(copy_reshaped(data, out), inputs=[data])]
    return [ctx.kernel(pad_window(data, out, _axes(dims, widths), "constant",
                                  const(0, data.dtype)), inputs=[data])]


def _center_crop_pad_at_run_time(ctx: LowerContext, data: Buffer, out: Buffer,
                                 axes: tuple[int, ...]) -> list[Kernel]:
    """The target extents read at run time (or applied to run-time extents) become centered
    pad widths in a shape kernel."""
    shape = ShapeKernel(ctx)
    sizes = input_values(ctx, 1)
    assert sizes is not None
    if len(sizes) != len(axes):
        raise ctx.fail(f"shape has {len(sizes)} entries for {len(axes)} axes")
    widths: list[tuple[Expr, Expr]] = [(idx(0), idx(0))] * len(data.shape)
    for axis, raw in zip(axes, sizes, strict=True):
        size = shape.local(raw, "size")
        shape.check(size < 0, f"the target extent of axis {axis} is negative")
        diff = shape.local(size - data.shape[axis], "diff")
        offset = shape.local(binary("max", diff, -diff) / 2, "offset")
        grow = diff >= 0
        widths[axis] = (shape.local(select(grow, offset, -offset), "lo"),
                        shape.local(select(grow, diff - offset, diff + offset), "hi"))
    windows = _run_time_windows(shape, data, widths)
    return _window_kernels(ctx, shape, data, out, windows, "constant",
                           Declare(Var("pad_value", data.dtype), const(0, data.dtype)))

