"""Lowering of Resize: per-axis tap tables computed at lowering time, then one gather-and-sum.

Resize is separable and linear: along each resized axis, output row ``o`` is a weighted sum of
a few input rows. Those rows and weights depend only on shapes and attributes, so they are
computed here with the reference's own per-axis resampler (applied to an identity matrix, which
yields the exact interpolation matrix, extrapolation and clamping included) and stored into
small scratch tables by a first kernel. The second kernel, per output element, sums
``w_0[o_0, t_0] * w_1[o_1, t_1] * ... * x[tap_0[o_0, t_0], tap_1[o_1, t_1], ...]`` over the
taps (nearest mode: a plain gather, exact for every dtype). Accumulation is f64 for f64 and
integer data (then rounded half-to-even and saturated, like the reference), f32 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...ir.op import Op
from ...ir.rules.movement import resize_extents
from ...ir.shapes import normalize_axes
from ...ir.types import DType
from ...reference.kernels.movement import resize_axis, source_coords
from ..kernel_ir import (
    Assign,
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
from .common import const, idx
from .movement_loops import copy_reshaped, logical, loops


class _Attrs:
    """What the reference's per-axis resampler reads of its kernel context."""

    def __init__(self, attrs: dict[str, Any]) -> None:
        self.attrs = attrs

    def attr(self, name: str) -> Any:
        return self.attrs.get(name)


@dataclass(frozen=True)
class _AxisTable:
    """Taps (input rows, clamped) and weights per output row; ``outside`` rows extrapolate."""

    taps: np.ndarray  # i64[out, n]
    weights: np.ndarray  # f64[out, n]
    outside: np.ndarray  # bool[out]


def _axis_table(attrs: _Attrs, in_n: int, out_n: int, scale: float,
                roi: tuple[float, float]) -> _AxisTable:
    matrix = resize_axis(attrs, np.eye(in_n), 0, out_n, scale, roi)  # type: ignore[arg-type]
    outside = np.zeros(out_n, dtype=bool)
    if attrs.attr("coordinate_transformation_mode") == "tf_crop_and_resize":
        x = source_coords("tf_crop_and_resize", out_n, in_n, scale, roi)
        outside = (x < 0) | (x > in_n - 1)
        matrix[outside] = 0.0
    n = max(1, int((matrix != 0).sum(axis=1).max(initial=0)))
    taps = np.zeros((out_n, n), dtype=np.int64)
    weights = np.zeros((out_n, n))
    for row in range(out_n):
        cols = np.flatnonzero(matrix[row])
        taps[row, :len(cols)] = cols
        weights[row, :len(cols)] = matrix[row, cols]
    return _AxisTable(taps, weights, outside)


def _store_table(buffer: Buffer, values: np.ndarray) -> list[Stmt]:
    return [buffer.store([idx(i) for i in pos], const(v.item(), buffer.dtype))
            for pos, v in np.ndenumerate(values)]


def _as_output(value: float, dtype: DType) -> Expr:
    """A float value converted as the reference converts its f64 result."""
    if dtype.is_int:
        info = np.iinfo(dtype.numpy)
        value = float(np.clip(np.round(value), info.min, info.max))
    return const(np.array(value).astype(dtype.numpy).item(), dtype)


@lowering(Op.RESIZE)
def lower_resize(ctx: LowerContext) -> list[Kernel]:
    x, out = ctx.input(0), ctx.output()
    rank = len(x.shape)
    axes = normalize_axes(ctx.attr("axes") or range(rank), rank)
    inputs = {i: ctx.const(i) if ctx.has_input(i) else None for i in (1, 2, 3)}
    for i, what in ((1, "roi"), (2, "scales"), (3, "sizes")):
        if ctx.has_input(i) and inputs[i] is None:
            raise ctx.fail(f"{what} must be a constant when compiling (dynamic shapes are not "
                           "supported yet)")
    roi, scales, sizes = (None if v is None or v.size == 0 else v for v in inputs.values())
    extents, factors = resize_extents(
        x.shape, axes, None if scales is None else [float(s) for s in scales.reshape(-1)],
        None if sizes is None else [int(s) for s in sizes.reshape(-1)],
        ctx.attr("keep_aspect_ratio_policy"))
    if list(extents) != list(out.shape):
        raise ctx.fail(f"resize extents {extents} differ from the output {list(out.shape)}")
    bounds = {a: (0.0, 1.0) for a in axes}
    if roi is not None and ctx.attr("coordinate_transformation_mode") == "tf_crop_and_resize":
        flat = roi.astype(np.float64).reshape(-1)
        bounds = {a: (float(flat[i]), float(flat[len(axes) + i])) for i, a in enumerate(axes)}
    attrs = _Attrs(ctx.attrs)
    tables = {a: _axis_table(attrs, x.shape[a], out.shape[a], factors[a], bounds[a])
              for a in axes
              if not (out.shape[a] == x.shape[a] and factors[a] == 1.0
                      and bounds[a] == (0.0, 1.0))}
    if 0 in out.shape:
        return [ctx.kernel(block(), inputs=[x])]
    if 0 in x.shape:
        raise ctx.fail(f"cannot resize the empty input {list(x.shape)}")
    if not tables:
        return [ctx.kernel(copy_reshaped(x, out), inputs=[x])]
    return _kernels(ctx, x, out, tables)


def _kernels(ctx: LowerContext, x: Buffer, out: Buffer,
             tables: dict[int, _AxisTable]) -> list[Kernel]:
    nearest = ctx.attr("mode") == "nearest"
    acc = DType.F64 if x.dtype is DType.F64 or not x.dtype.is_float else DType.F32
    taps: dict[int, Buffer] = {}
    weights: dict[int, Buffer] = {}
    flags: dict[int, Buffer] = {}
    fills: list[Stmt] = []
    for axis, table in tables.items():
        taps[axis] = ctx.scratch(f"taps{axis}", DType.I64, table.taps.shape)
        fills += _store_table(taps[axis], table.taps)
        if not nearest:
            weights[axis] = ctx.scratch(f"weights{axis}", acc, table.weights.shape)
            fills += _store_table(weights[axis], table.weights)
        if table.outside.any():
            flags[axis] = ctx.scratch(f"outside{axis}", DType.BOOL, table.outside.shape)
            fills += _store_table(flags[axis], table.outside)
    scratch = list(ctx.scratch_buffers)
    fill_kernel = ctx.kernel(block(fills), inputs=[], outputs=[], scratch=scratch)
    extrapolated = _as_output(ctx.attr("extrapolation_value"), out.dtype)

    def body(o: list[Expr]) -> Stmt:
        if nearest:
            value: Expr = x.load(*[taps[a].load(o[a], idx(0)) if a in taps else o[a]
                                   for a in range(len(o))])
            prologue: list[Stmt] = []
        else:
            prologue, value = _weighted_sum(x, out.dtype, acc, o, taps, weights, tables)
        if flags:
            value = select(logical("or", [flags[a].load(o[a]) for a in flags]), extrapolated,
                           value)
        return block(prologue, out.store(o, value))

    main = ctx.kernel(loops(out.shape, body, "o"), inputs=[x],
                      outputs=[out], scratch=scratch)
    return [fill_kernel, main]


def _weighted_sum(x: Buffer, dtype: DType, acc: DType, o: list[Expr],
                  taps: dict[int, Buffer], weights: dict[int, Buffer],
                  tables: dict[int, _AxisTable]) -> tuple[list[Stmt], Expr]:
    """Statements accumulating the separable tap sum for output position ``o``; its value."""
    total = Var("acc", acc)
    tap_vars = {a: Var(f"tap{a}") for a in taps}
    weight: Expr | None = None
    for a in taps:
        w = weights[a].load(o[a], tap_vars[a])
        weight = w if weight is None else weight * w
    assert weight is not None
    source = [taps[a].load(o[a], tap_vars[a]) if a in taps else o[a] for a in range(len(o))]
    inner: Stmt = Assign(total, total + weight * x.load(*source).cast(acc))
    for a in reversed(list(taps)):
        inner = Loop(tap_vars[a], idx(tables[a].taps.shape[1]), inner, LoopKind.UNROLL)
    result: Expr = total
    if dtype.is_int:
        result = Unary("round", total)
    return [Declare(total, const(0, acc)), inner], result.cast(dtype)
