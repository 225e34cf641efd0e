"""Lowerings of Pad (constant / reflect / edge / wrap, negative pads crop) and CenterCropPad.

Both are a window copy: per axis, output position ``o`` maps to ``p = o - grow_lo`` in the
(cropped) input block; ``0 <= p < kept`` copies ``data[crop_lo + p]``, anything else is the pad
value (constant) or a mirrored / clamped / wrapped source position. The innermost axis is split
into three loops (left pad, contiguous middle copy, right pad) so the bulk of the copy has no
per-element test; outer axes compute their source index once per iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...ir.op import Op
from ...ir.rules.movement import pad_widths
from ...ir.shapes import normalize_axes
from ..kernel_ir import Block, Buffer, Declare, Expr, If, Kernel, Stmt, Var, block, select
from ..registry import LowerContext, lowering
from .common import affine, const, idx
from .movement_loops import copy_reshaped, logical, loops, numel


@dataclass(frozen=True)
class _Axis:
    """One axis of a pad: input rows [crop_lo, crop_lo + kept) land at [grow_lo, ...)."""

    crop_lo: int
    kept: int
    grow_lo: int
    out: int

    @property
    def grows(self) -> bool:
        return self.grow_lo > 0 or self.grow_lo + self.kept < self.out


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
    return affine([(inside, 1)], axis.crop_lo)


def pad_window(data: Buffer, out: Buffer, widths: list[tuple[int, int]], mode: str,
               value: Expr) -> Stmt:
    """The loop nest writing ``out`` = ``data`` padded by ``widths`` per axis."""
    if numel(out.shape) == 0:
        return Block(())
    if not data.shape:
        return out.store([], data.load())
    axes = _axes(data.shape, widths)
    last = axes[-1]
    if mode == "constant" and (last.kept == 0 or any(a.kept == 0 for a in axes)):
        return loops(out.shape, lambda o: out.store(o, value), "p")
    if not any(a.grows for a in axes):
        window = [slice(a.crop_lo, a.crop_lo + a.kept) for a in axes]
        return _window_copy(data, out, window)

    def outer_source(o: Expr, axis: _Axis) -> tuple[Expr, Expr | None]:
        """(source index, validity for constant mode) of output position ``o``."""
        if not axis.grows:
            return affine([(o, 1)], axis.crop_lo), None
        p = affine([(o, 1)], -axis.grow_lo)
        inside = logical("and", [p >= 0, p < axis.kept])
        direct = affine([(o, 1)], axis.crop_lo - axis.grow_lo)
        if mode == "constant":
            return select(inside, direct, idx(axis.crop_lo)), inside
        return select(inside, direct, _mirror(p, axis, mode)), None

    def row(o: list[Expr]) -> Stmt:
        sources = [outer_source(v, a) for v, a in zip(o, axes[:-1], strict=True)]
        index = [s for s, _ in sources]
        conds = [c for _, c in sources if c is not None]

        def edge_value(p: Expr) -> Expr:
            if mode == "constant":
                return value
            return data.load(*index, _mirror(p, last, mode))

        right = last.out - last.grow_lo - last.kept
        parts = [
            loops([last.grow_lo], lambda j: out.store(
                [*o, j[0]], edge_value(affine([(j[0], 1)], -last.grow_lo))), "pl"),
            loops([last.kept], lambda j: out.store(
                [*o, affine([(j[0], 1)], last.grow_lo)],
                data.load(*index, affine([(j[0], 1)], last.crop_lo))), "pm"),
            loops([right], lambda j: out.store(
                [*o, affine([(j[0], 1)], last.grow_lo + last.kept)],
                edge_value(affine([(j[0], 1)], last.kept))), "pr"),
        ]
        body = block([p for p, extent in zip(parts, (last.grow_lo, last.kept, right),
                                             strict=True) if extent > 0])
        if not conds:
            return body
        blank = loops([last.out], lambda j: out.store([*o, j[0]], value), "pb")
        return If(logical("and", conds), body, blank)

    return loops(out.shape[:-1], row, "po", work=numel(out.shape), vectorize=False)


def _window_copy(data: Buffer, out: Buffer, window: list[slice]) -> Stmt:
    return loops(out.shape, lambda o: out.store(o, data.load(*[
        affine([(v, 1)], w.start) for v, w in zip(o, window, strict=True)])), "w")


@lowering(Op.PAD)
def lower_pad(ctx: LowerContext) -> list[Kernel]:
    data, out = ctx.input(0), ctx.output()
    pads, axes = ctx.const(1), ctx.const(3)
    if pads is None or (ctx.has_input(3) and axes is None):
        raise ctx.fail("pads and axes must be constants when compiling (dynamic shapes are "
                       "not supported yet)")
    widths = pad_widths(len(data.shape), [int(v) for v in pads.reshape(-1)],
                        None if axes is None else [int(v) for v in axes.reshape(-1)], ctx.fail)
    mode = ctx.attr("mode")
    kept = [a.kept for a in _axes(data.shape, widths)]
    if mode != "constant" and 0 in kept and numel(out.shape) > 0:
        raise ctx.fail(f"cannot pad an empty tensor in {mode} mode")
    value = Var("pad_value", data.dtype)
    if ctx.has_input(2):
        source = ctx.input(2)
        init: Expr = source.load(*[idx(0)] * len(source.shape))
    else:
        init = const(0, data.dtype)
    return [ctx.kernel(block(Declare(value, init), pad_window(data, out, widths, mode, value)))]


@lowering(Op.CENTER_CROP_PAD)
def lower_center_crop_pad(ctx: LowerContext) -> list[Kernel]:
    """A constant-zero pad whose widths center the input (the odd element goes last)."""
    data, out = ctx.input(0), ctx.output()
    given = ctx.attr("axes")
    rank = len(data.shape)
    axes = normalize_axes(range(rank) if given is None else given, rank)
    widths = [(0, 0)] * rank
    for axis in axes:
        dim, size = data.shape[axis], out.shape[axis]
        offset = abs(size - dim) // 2
        widths[axis] = (offset, size - dim - offset) if size >= dim else (
            -offset, size - dim + offset)
    if data.shape == out.shape:
        return [ctx.kernel(copy_reshaped(data, out), inputs=[data])]
    return [ctx.kernel(pad_window(data, out, widths, "constant", const(0, data.dtype)),
                       inputs=[data])]

