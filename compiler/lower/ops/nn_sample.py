"""Bilinear sampling loop bodies: RoiAlign's region averages (and maxima)."""

from __future__ import annotations

from collections.abc import Callable

from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Binary,
    Buffer,
    Declare,
    Expr,
    If,
    Loop,
    Report,
    Stmt,
    Unary,
    Var,
    block,
    select,
)
from ..registry import LowerContext
from .common import const, idx
from .nn_common import add_to

F64 = DType.F64


def bilinear_axis(pos: Expr, size: int, name: str) -> tuple[list[Stmt], Expr, Expr, Expr, Expr]:
    """RoiAlign's neighbours along one axis: (declarations, low, high, low weight, high
    weight); points beyond [-1, size] get zero weights, others clamp at the edges."""
    low, clamped = Var(f"{name}_low"), Var(f"{name}_pos", F64)
    ok = Binary("and", pos >= -1.0, pos <= float(size))
    edge = low >= size - 1
    frac = Var(f"{name}_frac", F64)
    stmts: list[Stmt] = [
        Declare(clamped, Binary("max", pos, const(0.0, F64))),
        Declare(low, clamped.cast(DType.I64)),
        If(edge, block(Assign(low, idx(size - 1)), Assign(clamped, low.cast(F64)))),
        Declare(frac, clamped - low.cast(F64)),
    ]
    high = select(edge, idx(size - 1), low + 1)
    keep = select(ok, const(1.0, F64), const(0.0, F64))
    return stmts, low, high, (1.0 - frac) * keep, frac * keep


def roi_align_body(
    ctx: LowerContext, x: Buffer, rois: Buffer, batch_indices: Buffer, out: Buffer
) -> Callable[[list[Expr]], Stmt]:
    """The body computing out[r, c, i, j] (weights in f64, as the reference computes them)."""
    oh, ow = out.shape[2:]
    height, width = x.shape[2:]
    ratio = int(ctx.attr("sampling_ratio"))
    scale = float(ctx.attr("spatial_scale"))
    half_pixel = ctx.attr("coordinate_transformation_mode") == "half_pixel"
    use_max = ctx.attr("mode") == "max"

    def body(v: list[Expr]) -> Stmt:
        r, c, i, j = v
        batch = Var("batch")
        corner = [rois.load(r, k).cast(F64) * scale - (0.5 if half_pixel else 0.0)
                  for k in range(4)]
        extent_h, extent_w = corner[3] - corner[1], corner[2] - corner[0]
        if not half_pixel:
            extent_h = Binary("max", extent_h, const(1.0, F64))
            extent_w = Binary("max", extent_w, const(1.0, F64))
        bin_h, bin_w, grid_h, grid_w = (Var(n, t) for n, t in (
            ("bin_h", F64), ("bin_w", F64), ("grid_h", DType.I64), ("grid_w", DType.I64)))
        gy, gx, acc = Var("gy"), Var("gx"), Var("acc", F64)

        def grid(count: int, span: Expr) -> Expr:
            return idx(ratio) if ratio > 0 else Unary("ceil", span / float(count)).cast(
                DType.I64)

        y = Var("y", F64)
        x_pos = Var("xp", F64)
        y_stmts, y_low, y_high, wy0, wy1 = bilinear_axis(y, height, "y")
        x_stmts, x_low, x_high, wx0, wx1 = bilinear_axis(x_pos, width, "x")
        terms = [x.load(batch, c, yi, xi).cast(F64) * (wy * wx)
                 for yi, wy in ((y_low, wy0), (y_high, wy1))
                 for xi, wx in ((x_low, wx0), (x_high, wx1))]
        if use_max:
            best = terms[0]
            for term in terms[1:]:
                best = Binary("max", best, term)
            update: Stmt = Assign(acc, Binary("max", acc, best))
        else:
            update = add_to(acc, ((terms[0] + terms[1]) + terms[2]) + terms[3])
        sample = Loop(gy, grid_h, block(
            Declare(y, corner[1] + i.cast(F64) * bin_h
                    + (gy.cast(F64) + 0.5) * bin_h / grid_h.cast(F64)),
            y_stmts,
            Loop(gx, grid_w, block(
                Declare(x_pos, corner[0] + j.cast(F64) * bin_w
                        + (gx.cast(F64) + 0.5) * bin_w / grid_w.cast(F64)),
                x_stmts, update)),
        ))
        if use_max:
            result: Expr = acc
        else:
            result = acc / Binary("max", grid_h * grid_w, idx(1)).cast(F64)
        return block(
            Declare(batch, batch_indices.load(r)),
            If(Binary("and", batch >= 0, batch < x.shape[0]),
               block(Declare(bin_h, extent_h / float(oh)), Declare(bin_w, extent_w / float(ow)),
                     Declare(grid_h, grid(oh, extent_h)), Declare(grid_w, grid(ow, extent_w)),
                     Declare(acc, const(-float("inf") if use_max else 0.0, F64)), sample,
                     out.store([r, c, i, j], result.cast(out.dtype))),
               Report("RoiAlign: a batch index is outside the input batch")),
        )

    return body
