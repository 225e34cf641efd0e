"""Lowering of Resize: per-axis tap tables computed at lowering time, then one gather-and-sum.

Resize is separable and linear: along each resized axis, output row ``o`` is a weighted sum of
a few input rows. Those rows and weights depend only on shapes and attributes, so they are
computed here with the reference's own per-axis resampler (applied to an identity matrix, which
yields the exact interpolation matrix, extrapolation and clamping included) and stored into
small scratch tables by a first kernel. The second kernel, per output element, sums
``w_0[o_0, t_0] * w_1[o_1, t_1] * ... * x[tap_0[o_0, t_0], tap_1[o_1, t_1], ...]`` over the
taps (nearest mode: a plain gather, exact for every dtype). Accumulation is f64 for f64 and
integer data (then rounded half-to-even and saturated, like the reference), f32 otherwise.

When scales / sizes / roi are read at run time, or an input extent is, the tables cannot be
built here: a shape kernel computes the output extents and per-axis factors (the reference's
``resize_extents`` in kernel IR), and the compute kernel evaluates the coordinate mapping, the
nearest rounding or the filter taps and weights (antialiased and exclude_outside ones normalized
by a per-row sum) in f64 as the loops reach each output row, hoisted per axis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    Const,
    Declare,
    Expr,
    If,
    Kernel,
    Loop,
    LoopKind,
    Stmt,
    Unary,
    Var,
    as_index,
    binary,
    block,
    select,
)
from ..registry import LowerContext, lowering
from .common import PARALLEL_WORK, const, idx
from .movement_loops import (
    ShapeKernel,
    any_of,
    clamp,
    copy_reshaped,
    input_values,
    logical,
    loops,
    read_params,
    static_part,
    static_shape,
)


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
    cropping = ctx.attr("coordinate_transformation_mode") == "tf_crop_and_resize"
    used = (1, 2, 3) if cropping else (2, 3)  # roi only matters to tf_crop_and_resize
    if not (x.is_static and out.is_static) or any(
            _given(ctx, i) and ctx.const(i) is None for i in used):
        return _resize_at_run_time(ctx, x, out, axes)
    inputs = {i: ctx.const(i) if i in used and ctx.has_input(i) else None for i in (1, 2, 3)}
    roi, scales, sizes = (None if v is None or v.size == 0 else v for v in inputs.values())
    in_dims, out_dims = static_shape(x.shape), static_shape(out.shape)
    extents, factors = resize_extents(
        in_dims, axes, None if scales is None else [float(s) for s in scales.reshape(-1)],
        None if sizes is None else [int(s) for s in sizes.reshape(-1)],
        ctx.attr("keep_aspect_ratio_policy"))
    if list(extents) != list(out.shape):
        raise ctx.fail(f"resize extents {extents} differ from the output {list(out.shape)}")
    bounds = {a: (0.0, 1.0) for a in axes}
    if roi is not None and cropping:
        flat = roi.astype(np.float64).reshape(-1)
        bounds = {a: (float(flat[i]), float(flat[len(axes) + i])) for i, a in enumerate(axes)}
    attrs = _Attrs(ctx.attrs)
    tables = {a: _axis_table(attrs, in_dims[a], out_dims[a], factors[a], bounds[a])
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


# ------------------------------------------------------------------ values known at run time

_F64 = DType.F64


def _given(ctx: LowerContext, index: int) -> bool:
    """An optional input that is present and not empty (empty ones stand for absent)."""
    if not ctx.has_input(index):
        return False
    count = ctx.input(index).numel
    return not isinstance(count, int) or count > 0


def _f64(value: float) -> Expr:
    return const(value, _F64)


def _resize_at_run_time(ctx: LowerContext, x: Buffer, out: Buffer,
                        axes: tuple[int, ...]) -> list[Kernel]:
    shape = ShapeKernel(ctx)
    dims = [shape.local(as_index(d), "in") for d in x.shape]
    policy = ctx.attr("keep_aspect_ratio_policy")
    extents: list[int | Expr] = list(x.shape)
    factors: list[Expr] = []
    if _given(ctx, 3):
        sizes = input_values(ctx, 3)
        assert sizes is not None
        _check_count(ctx, sizes, axes, "sizes")
        shape.check(any_of([v < 0 for v in sizes]), "a size is negative")
        ratios: list[Expr] = [shape.local(select(dims[a].eq(0), _f64(1.0),
                                     v.cast(_F64) / dims[a].cast(_F64)), "ratio")
                  for v, a in zip(sizes, axes, strict=True)]
        if policy != "stretch":
            scale = shape.local(_fold("min" if policy == "not_larger" else "max", ratios),
                                "scale")
            ratios = [scale] * len(axes)
            sizes = [(scale * dims[a].cast(_F64) + 0.5).cast(DType.I64) for a in axes]
        for a, size, ratio in zip(axes, sizes, ratios, strict=True):
            extents[a] = size
            factors.append(ratio)
    else:
        scales = input_values(ctx, 2, _F64)
        if scales is None or not _given(ctx, 2):
            raise ctx.fail("exactly one of scales and sizes must be given")
        _check_count(ctx, scales, axes, "scales")
        shape.check(any_of([v < 0.0 for v in scales]), "a scale is negative")
        for a, given in zip(axes, scales, strict=True):
            factor = shape.local(given, "scale")
            extents[a] = Unary("floor", dims[a].cast(_F64) * factor).cast(DType.I64)
            factors.append(factor)
    bounds = [(_f64(0.0), _f64(1.0))] * len(axes)
    cropping = ctx.attr("coordinate_transformation_mode") == "tf_crop_and_resize"
    if cropping and _given(ctx, 1):
        roi = input_values(ctx, 1, _F64)
        assert roi is not None
        if len(roi) != 2 * len(axes):
            raise ctx.fail(f"roi has {len(roi)} entries for {len(axes)} axes")
        bounds = list(zip(roi[:len(axes)], roi[len(axes):], strict=True))
    sized = [shape.local(as_index(e), "out") for e in extents]
    shape.check(any_of([logical("and", [dims[a].eq(0), sized[a] > 0]) for a in axes]),
                "cannot resize an empty input")
    # A constant scale of 1 keeps its axis as it is (the reference skips it too).
    known = ctx.const(2) if not _given(ctx, 3) else None
    kept = set() if known is None or cropping else {
        a for a, v in zip(axes, known.reshape(-1), strict=True) if float(v) == 1.0}
    resized = [i for i, a in enumerate(axes) if a not in kept]
    params = [v for i in resized for v in (factors[i], *bounds[i])]
    first, vector = shape.kernels([sized], params, _F64)
    if vector is None:
        return [first, ctx.kernel(copy_reshaped(x, out), inputs=[x])]
    read, at, ok = read_params(vector, len(params), "resize")
    per_axis = {axes[i]: _AxisParams(at[3 * k], at[3 * k + 1], at[3 * k + 2])
                for k, i in enumerate(resized)}
    sampler = _Sampler(ctx, x, out, per_axis)
    body = block(read, If(ok, sampler.nest(0, [])))
    return [first, ctx.kernel(body, inputs=[x])]


def _check_count(ctx: LowerContext, values: list[Expr], axes: tuple[int, ...], what: str) -> None:
    if len(values) != len(axes):
        raise ctx.fail(f"{what} has {len(values)} entries for {len(axes)} axes")


def _fold(op: str, values: Sequence[Expr]) -> Expr:
    result = values[0]
    for value in values[1:]:
        result = binary(op, result, value)
    return result


@dataclass(frozen=True)
class _AxisParams:
    """A resized axis's run-time factor and roi bounds (f64 locals)."""

    scale: Expr
    start: Expr
    end: Expr


class _Sampler:
    """The compute kernel of a run-time Resize: loops over the output, per resized axis the
    source coordinate (and its taps' normalizers) computed once per output row."""

    def __init__(self, ctx: LowerContext, x: Buffer, out: Buffer,
                 per_axis: dict[int, _AxisParams]) -> None:
        self.ctx, self.x, self.out, self.per_axis = ctx, x, out, per_axis
        self.mode = ctx.attr("mode")
        self.coords = ctx.attr("coordinate_transformation_mode")
        self.antialias = bool(ctx.attr("antialias")) and self.mode != "nearest"
        self.exclude = bool(ctx.attr("exclude_outside")) and self.mode != "nearest"
        self.reach = 1 if self.mode == "linear" else 2
        # Per resized axis, filled as the loops reach it: source coordinate, first tap, tap
        # count, stretch and normalizing sums (or the nearest index), and the outside flag.
        self.coord: dict[int, Var] = {}
        self.base: dict[int, Expr] = {}
        self.taps: dict[int, Expr] = {}
        self.stretch: dict[int, Expr] = {}
        self.sums: dict[int, tuple[Var | None, Var | None]] = {}
        self.outside: dict[int, Expr] = {}

    def nest(self, axis: int, o: list[Expr]) -> Stmt:
        out = self.out
        if axis == len(out.shape):
            return self.element(o)
        var = Var(f"o{axis}")
        inner = block(self.axis_locals(axis, var), self.nest(axis + 1, [*o, var]))
        kind = LoopKind.PARALLEL if axis == 0 and static_part(
            out.shape) >= PARALLEL_WORK else LoopKind.SERIAL
        return Loop(var, as_index(out.shape[axis]), inner, kind)

    def axis_locals(self, axis: int, o: Var) -> list[Stmt]:
        if axis not in self.per_axis:
            return []
        params = self.per_axis[axis]
        in_n, out_n = as_index(self.x.shape[axis]), as_index(self.out.shape[axis])
        coord = Var(f"x{axis}", _F64)
        stmts: list[Stmt] = [Declare(coord, self.coordinate(o, in_n, out_n, params))]
        self.coord[axis] = coord
        if self.coords == "tf_crop_and_resize":
            self.outside[axis] = logical("or", [coord < 0.0, coord > (in_n - 1).cast(_F64)])
        if self.mode == "nearest":
            index = Var(f"near{axis}")
            rounded = _nearest(coord, self.ctx.attr("nearest_mode")).cast(DType.I64)
            stmts.append(Declare(index, clamp(rounded, 0, in_n - 1)))
            self.base[axis] = index
            return stmts
        stretch: Expr = _f64(1.0)
        count: Expr = idx(2 * self.reach)
        if self.antialias:  # the filter widened by 1 / scale on a downscale: more taps
            stretch, count = Var(f"stretch{axis}", _F64), Var(f"taps{axis}")
            stmts += [Declare(stretch, binary("min", params.scale, _f64(1.0))),
                      Declare(count, Unary("floor", _f64(-self.reach) / stretch).cast(
                          DType.I64) * -2)]
        self.stretch[axis], self.taps[axis] = stretch, count
        floor = Unary("floor", coord)
        half = count / 2
        base = Var(f"base{axis}")
        stmts.append(Declare(base, floor.cast(DType.I64) - half + select(
            coord.eq(floor), idx(0), idx(1))))
        self.base[axis] = base
        first = second = None
        if self.antialias:
            first = Var(f"norm{axis}", _F64)
            stmts += self.tap_sum(axis, first, lambda t: self.raw_weight(axis, t))
        self.sums[axis] = (first, None)
        if self.exclude:
            second = Var(f"kept{axis}", _F64)
            stmts += self.tap_sum(axis, second, lambda t: select(
                self.inside(axis, t), self.scaled_weight(axis, t), _f64(0.0)))
            self.sums[axis] = (first, second)
        return stmts

    def coordinate(self, o: Var, in_n: Expr, out_n: Expr, p: _AxisParams) -> Expr:
        """``source_coords`` of the reference, operation for operation."""
        y, n = o.cast(_F64), in_n.cast(_F64)
        width = p.scale * n
        mode = self.coords
        if mode == "half_pixel":
            return (y + 0.5) / p.scale - 0.5
        if mode == "half_pixel_symmetric":
            offset = n / 2.0 * (_f64(1.0) - out_n.cast(_F64) / width)
            return offset + (y + 0.5) / p.scale - 0.5
        if mode == "pytorch_half_pixel":
            return select(out_n > 1, (y + 0.5) / p.scale - 0.5, _f64(0.0))
        if mode == "align_corners":
            return select(width.eq(1.0), _f64(0.0), y * (n - 1.0) / (width - 1.0))
        if mode == "asymmetric":
            return y / p.scale
        span = p.end - p.start
        return select(width.eq(1.0), span * (n - 1.0) / 2.0 + p.start * (n - 1.0),
                      y * span * (n - 1.0) / (width - 1.0) + p.start * (n - 1.0))

    def raw_weight(self, axis: int, tap: Expr) -> Expr:
        t = (tap.cast(_F64) - self.coord[axis]) * self.stretch[axis]
        if self.mode == "linear":
            return clamp(_f64(1.0) - Unary("abs", t), _f64(0.0), _f64(1.0))
        a = float(self.ctx.attr("cubic_coeff_a"))
        d = Unary("abs", t)
        near = ((d * (a + 2) - (a + 3)) * d) * d + 1.0
        far = ((d * a - 5 * a) * d + 8 * a) * d - 4 * a
        return select(d <= 1.0, near, select(d < 2.0, far, _f64(0.0)))

    def scaled_weight(self, axis: int, tap: Expr) -> Expr:
        """The weight after the antialiasing normalization (a downscale's stretched filter)."""
        weight = self.raw_weight(axis, tap)
        first = self.sums[axis][0]
        if first is None:
            return weight
        return select(self.stretch[axis] < 1.0, weight / first, weight)

    def weight(self, axis: int, tap: Expr) -> Expr:
        weight = self.scaled_weight(axis, tap)
        second = self.sums[axis][1]
        if second is None:
            return weight
        kept = select(self.inside(axis, tap), weight, _f64(0.0))
        return kept / select(second.eq(0.0), _f64(1.0), second)

    def inside(self, axis: int, tap: Expr) -> Expr:
        return logical("and", [tap >= 0, tap < self.x.shape[axis]])

    def tap_sum(self, axis: int, total: Var, term: Callable[[Expr], Expr]) -> list[Stmt]:
        k = Var(f"sum{axis}_{total.name}")
        tap = self.base[axis] + k
        return [Declare(total, _f64(0.0)),
                Loop(k, self.taps[axis], Assign(total, total + term(tap)))]

    def element(self, o: list[Expr]) -> Stmt:
        x, out = self.x, self.out
        extrapolated = _as_output(self.ctx.attr("extrapolation_value"), out.dtype)
        value: Expr
        if self.mode == "nearest":
            value = x.load(*[self.base[a] if a in self.per_axis else o[a]
                             for a in range(len(o))])
            prologue: list[Stmt] = []
        else:
            prologue, value = self.weighted_sum(o)
        if self.outside:
            value = select(logical("or", list(self.outside.values())), extrapolated, value)
        return block(prologue, out.store(o, value))

    def weighted_sum(self, o: list[Expr]) -> tuple[list[Stmt], Expr]:
        total = Var("acc", _F64)
        resized = [a for a in range(len(o)) if a in self.per_axis]
        taps = {a: Var(f"t{a}") for a in resized}
        weights = {a: Var(f"w{a}", _F64) for a in resized}
        source = [clamp(taps[a], 0, as_index(self.x.shape[a]) - 1) if a in taps else o[a]
                  for a in range(len(o))]
        product: Expr = self.x.load(*source).cast(_F64)
        for a in resized:
            product = weights[a] * product
        inner: Stmt = Assign(total, total + product)
        for a in reversed(resized):
            k = Var(f"k{a}")
            static = isinstance(self.taps[a], Const)
            inner = Loop(k, self.taps[a], block(
                Declare(taps[a], self.base[a] + k), Declare(weights[a], self.weight(a, taps[a])),
                inner), LoopKind.UNROLL if static else LoopKind.SERIAL)
        result: Expr = total
        if self.out.dtype.is_int:
            result = Unary("round", total)
        return [Declare(total, _f64(0.0)), inner], result.cast(self.out.dtype)


def _nearest(coord: Expr, mode: str) -> Expr:
    if mode == "round_prefer_floor":
        return Unary("ceil", coord - 0.5)
    if mode == "round_prefer_ceil":
        return Unary("floor", coord + 0.5)
    return Unary("floor" if mode == "floor" else "ceil", coord)
