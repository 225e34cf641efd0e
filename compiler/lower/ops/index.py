"""Lowerings of the index ops: gathers, OneHot, and the selections (Compress, NonZero, Unique,
NonMaxSuppression).

Indices read from data wrap once when negative (ONNX); one outside ``[-extent, extent)`` makes
the kernel ``Report`` (the run fails with that message) and is clamped so no access leaves the
buffer. Each index is read and checked once, outside the loop copying the slice it selects.
Scatters live in ``index_scatter``, TopK in ``index_topk``. Extents may be known only at run
time (``index_common``). A selection whose output extent depends on values (a condition, the
input of NonZero or Unique, OneHot's depth) gets a first kernel that counts and defines that
extent, then a second that fills the now-sized output; the scans keep a running output
position.
"""

from __future__ import annotations

from ...ir.op import Op
from ...ir.shapes import normalize_axis
from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Block,
    Buffer,
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
    unravel,
)
from ..registry import LowerContext, lowering
from . import index_scatter, index_topk  # noqa: F401 - registers
from .common import affine, const, idx
from .index_common import (
    Extent,
    all_static,
    check_extents,
    define_outputs,
    empty_axis_kernel,
    equal,
    greater,
    guard_empty,
    nd_empty,
    nd_guard,
    nd_positions,
    out_of_range,
    read_scalar,
    shape_kernel,
    smaller,
    within_extents,
)
from .movement_loops import checked_index, logical, loops, numel


@lowering(Op.GATHER)
def lower_gather(ctx: LowerContext) -> list[Kernel]:
    data, indices, out = ctx.input(0), ctx.input(1), ctx.output()
    axis = normalize_axis(ctx.attr("axis"), len(data.shape))
    extent = data.shape[axis]
    pre, post = data.shape[:axis], data.shape[axis + 1:]
    static = all_static([*data.shape, *indices.shape])
    if static and extent == 0 and indices.numel > 0:
        return empty_axis_kernel(ctx, extent)
    message = out_of_range(ctx, extent)

    def select_slice(v: list[Expr]) -> Stmt:
        head, at = v[:len(pre)], v[len(pre):]
        check, pos = checked_index(indices.load(*at), extent, "pos", message)
        copy = loops(post, lambda p: out.store([*head, *at, *p],
                                                      data.load(*head, pos, *p)),
                           "gp", parallel=False)
        return block(check, copy)

    nest = loops(pre + indices.shape, select_slice, "g",
                       work=out.numel if static else None, vectorize=not post)
    if not static:
        nest = guard_empty(ctx, [extent], numel(indices.shape), nest)
    return [ctx.kernel(nest)]


@lowering(Op.GATHER_ELEMENTS)
def lower_gather_elements(ctx: LowerContext) -> list[Kernel]:
    data, indices, out = ctx.input(0), ctx.input(1), ctx.output()
    axis = normalize_axis(ctx.attr("axis"), len(data.shape))
    violations = check_extents(ctx, data, indices, axis)
    extent = data.shape[axis]
    static = all_static([*data.shape, *indices.shape])
    if static and extent == 0 and indices.numel > 0:
        return empty_axis_kernel(ctx, extent)
    message = out_of_range(ctx, extent)

    def body(o: list[Expr]) -> Stmt:
        check, pos = checked_index(indices.load(*o), extent, "pos", message)
        source = list(o)
        source[axis] = pos
        return block(check, out.store(o, data.load(*source)))

    nest = loops(out.shape, body, "g")
    if not static:
        nest = within_extents(ctx, violations, guard_empty(
            ctx, [extent], numel(indices.shape), nest))
    return [ctx.kernel(nest)]


@lowering(Op.GATHER_ND)
def lower_gather_nd(ctx: LowerContext) -> list[Kernel]:
    data, indices, out = ctx.input(0), ctx.input(1), ctx.output()
    b = ctx.attr("batch_dims")
    static = all_static([*data.shape, *indices.shape])
    if static and nd_empty(data, indices, b):
        return empty_axis_kernel(ctx, 0)
    k = indices.shape[-1]
    assert isinstance(k, int)
    rest = data.shape[b + k:]

    def select_slice(v: list[Expr]) -> Stmt:
        check, positions = nd_positions(ctx, data, indices, v, b)
        copy = loops(rest, lambda r: out.store([*v, *r],
                                                      data.load(*v[:b], *positions, *r)),
                           "gp", parallel=False)
        return block(check, copy)

    nest = loops(indices.shape[:-1], select_slice, "g",
                       work=out.numel if static else None, vectorize=not rest)
    if not static:
        nest = nd_guard(ctx, data, indices, b, nest)
    return [ctx.kernel(nest)]


@lowering(Op.ONE_HOT)
def lower_one_hot(ctx: LowerContext) -> list[Kernel]:
    """values[1] where the position on the new axis equals the (wrapped) index; out-of-range
    indices give an all-off row, as ONNX specifies. A depth known only at run time is read
    (and checked positive) by a first kernel that sizes the output."""
    indices, values, out = ctx.input(0), ctx.input(2), ctx.output()
    axis = normalize_axis(ctx.attr("axis"), len(out.shape))
    depth = out.shape[axis]
    on, off = Var("on", out.dtype), Var("off", out.dtype)
    kernels: list[Kernel] = []
    if ctx.undefined_dims:
        given, read = read_scalar(ctx, 1, "depth")
        bad = If(given < 1, Report(f"{ctx.node.describe()}: depth must be positive"))
        kernels.append(shape_kernel(ctx, [read, bad, *define_outputs(
            ctx, lambda i, a: binary("max", given, 1))], [ctx.input(1)]))

    def body(o: list[Expr]) -> Stmt:
        raw = indices.load(*o[:axis], *o[axis + 1:]).cast(DType.I64)
        wrapped = select(raw < 0, raw + depth, raw)
        return out.store(o, select(wrapped.eq(o[axis]), on, off))

    return [*kernels, ctx.kernel(block(Declare(on, values.load(idx(1))),
                                       Declare(off, values.load(idx(0))),
                                       loops(out.shape, body, "h")),
                                 inputs=[indices, values])]


def _compress_count(ctx: LowerContext, limit: Extent) -> list[Kernel]:
    """The shape kernel of a Compress whose condition is known only at run time: counts the
    selected positions below ``limit`` and reports a selection beyond it."""
    condition = ctx.input(1)
    total, i = Var("total"), Var("i")
    selected = condition.load(i)
    scan = Loop(i, as_index(condition.shape[0]), If(selected, If(
        i < limit, Assign(total, total + 1),
        Report(f"{ctx.node.describe()}: the condition selects beyond the input's extent"))))
    return [shape_kernel(ctx, [Declare(total, idx(0)), scan,
                               *define_outputs(ctx, lambda o, a: total)], [condition])]


@lowering(Op.COMPRESS)
def lower_compress(ctx: LowerContext) -> list[Kernel]:
    """A scan over the condition with a running output position; when the condition is known
    only at run time, a first kernel counts the selected positions to size the output."""
    data, condition, out = ctx.input(0), ctx.input(1), ctx.output()
    count = Var("count")
    axis = ctx.attr("axis")
    if axis is None:
        limit = smaller(condition.shape[0], numel(data.shape))
        first = _compress_count(ctx, limit) if ctx.undefined_dims else []
        strides = Buffer("", data.dtype, data.shape).element_strides

        def element(v: list[Expr]) -> Stmt:
            flat = affine([(var, stride) for var, stride in zip(v, strides, strict=True)
                           if isinstance(stride, int)])
            for var, stride in zip(v, strides, strict=True):
                if not isinstance(stride, int):
                    flat = flat + var * stride
            take = logical("and", [flat < limit, condition.load(
                select(flat < limit, flat, idx(0)))])
            return If(take, block(out.store([count], data.load(*v)), Assign(count, count + 1)))

        scan = loops(data.shape, element, "c", parallel=False, vectorize=False)
        return [*first, ctx.kernel(block(Declare(count, idx(0)), scan))]
    axis = normalize_axis(axis, len(data.shape))
    pre, post = data.shape[:axis], data.shape[axis + 1:]
    limit = smaller(condition.shape[0], data.shape[axis])
    first = _compress_count(ctx, limit) if ctx.undefined_dims else []

    def chosen(v: list[Expr]) -> Stmt:
        i = v[0]
        copy = loops([*pre, *post], lambda p: out.store(
            [*p[:axis], count, *p[axis:]], data.load(*p[:axis], i, *p[axis:])), "cp",
            parallel=False)
        return If(condition.load(i), block(copy, Assign(count, count + 1)))

    scan = loops([limit], chosen, "c", parallel=False, vectorize=False)
    return [*first, ctx.kernel(block(Declare(count, idx(0)), scan))]


@lowering(Op.NONZERO)
def lower_nonzero(ctx: LowerContext) -> list[Kernel]:
    """A scan writing each non-zero element's coordinates at a running position; when the
    input is known only at run time, a first kernel counts them to size the output."""
    data, out = ctx.input(0), ctx.output()
    count = Var("count")
    capacity = out.shape[1]

    def nonzero(v: list[Expr]) -> Expr:
        return data.load(*v).ne(const(0, data.dtype))

    kernels: list[Kernel] = []
    if ctx.undefined_dims:
        counting = loops(data.shape, lambda v: If(nonzero(v), Assign(count, count + 1)),
                               "z", parallel=False, vectorize=False)
        kernels.append(shape_kernel(ctx, [Declare(count, idx(0)), counting, *define_outputs(
            ctx, lambda o, a: count)], [data]))
    if isinstance(out.numel, int) and out.numel == 0:
        return [*kernels, ctx.kernel(Block(()))]

    def element(v: list[Expr]) -> Stmt:
        found = logical("and", [nonzero(v), count < capacity])
        stores = [out.store([idx(d), count], v[d]) for d in range(len(v))]
        return If(found, block(stores, Assign(count, count + 1)))

    scan = loops(data.shape, element, "n", parallel=False, vectorize=False)
    return [*kernels, ctx.kernel(block(Declare(count, idx(0)), scan))]


class _Items:
    """The items Unique compares: the elements of the flattened input (no axis) or its slices
    along ``axis``, each ``size`` elements read in row-major order."""

    def __init__(self, data: Buffer, axis: int | None) -> None:
        self.data, self.axis = data, axis
        if axis is None:
            self.count, self.rest = numel(data.shape), []
        else:
            self.count = data.shape[axis]
            self.rest = [e for a, e in enumerate(data.shape) if a != axis]
        self.size = numel(self.rest)

    def at(self, item: Expr, element: Expr) -> list[Expr]:
        """Coordinates of element ``element`` of item ``item`` in an array shaped like data
        with the item axis (or the flat axis) at ``item``."""
        if self.axis is None:
            return [item]
        coords = unravel(element, self.rest) if self.rest else []
        return [*coords[:self.axis], item, *coords[self.axis:]]

    def load(self, item: Expr, element: Expr) -> Expr:
        source = flat_view(self.data) if self.axis is None else self.data
        value = source.load(*self.at(item, element))
        # Bools order as integers (false < true).
        return value.cast(DType.I8) if value.dtype is DType.BOOL else value

    def compare(self, name: str, i: Expr, j: Expr) -> tuple[list[Stmt], Var, Var]:
        """Statements setting locals (equal, less): item i equals / orders before item j
        (lexicographically; NaN equal to NaN and above every number, as np.unique)."""
        same, less, e = Var(f"{name}_eq", DType.BOOL), Var(f"{name}_lt", DType.BOOL), Var(
            f"{name}_e")
        dtype = DType.I8 if self.data.dtype is DType.BOOL else self.data.dtype
        a, b = Var(f"{name}_a", dtype), Var(f"{name}_b", dtype)
        differ = block(Assign(same, Const(False, DType.BOOL)), Assign(less, greater(b, a)))
        step = If(same, block(Declare(a, self.load(i, e)), Declare(b, self.load(j, e)),
                              If(Unary("not", equal(a, b)), differ)))
        return [Declare(same, Const(True, DType.BOOL)), Declare(less, Const(False, DType.BOOL)),
                Loop(e, as_index(self.size), step)], same, less


@lowering(Op.UNIQUE)
def lower_unique(ctx: LowerContext) -> list[Kernel]:
    """O(n^2) in the items: a first kernel finds each item's first equal item and each
    distinct item's output position (sorted: the number of distinct items ordered before it;
    unsorted: before it in the input), in scratch, and sizes the outputs by the distinct
    count; a second writes the unique items, first indices, inverse indices and counts."""
    data = ctx.input(0)
    axis = ctx.attr("axis")
    items = _Items(data, None if axis is None else normalize_axis(axis, len(data.shape)))
    n = items.count
    first = ctx.scratch("first", DType.I64, (n,))
    position = ctx.scratch("position", DType.I64, (n,))
    i, j, f, total, rank = Var("i"), Var("j"), Var("f"), Var("total"), Var("rank")
    find, same, _ = items.compare("find", j, i)
    search = Loop(j, i, If(f.eq(i), block(find, If(same, Assign(f, j)))))
    order, _, less = items.compare("order", j, i)
    before = block(order, If(less, Assign(rank, rank + 1))) if ctx.attr("sorted") else If(
        j < i, Assign(rank, rank + 1))
    ranking = Loop(i, as_index(n), If(first.load(i).eq(i), block(
        Declare(rank, idx(0)),
        Loop(j, as_index(n), If(first.load(j).eq(j), before)),
        position.store([i], rank))))
    sizes = define_outputs(ctx, lambda o, a: total if o != 2 else as_index(n))
    counting = shape_kernel(ctx, [
        Declare(total, idx(0)),
        Loop(i, as_index(n), block(Declare(f, i), search, first.store([i], f),
                                   If(f.eq(i), Assign(total, total + 1)))),
        ranking, *sizes], [data], [first, position])

    y, firsts, inverse, counts = (ctx.outputs[k] if k < len(ctx.outputs) else None
                                  for k in range(4))
    p, e = Var("p"), Var("e")
    per_item: list[Stmt] = [Declare(f, first.load(i)), Declare(p, position.load(f))]
    if inverse is not None:
        per_item.append(inverse.store([i], p))
    if counts is not None:
        per_item.append(counts.store([p], counts.load(p) + 1))
    output: list[Stmt] = []
    if firsts is not None:
        output.append(firsts.store([p], i))
    if y is not None:
        output.append(Loop(e, as_index(items.size),
                           y.store(items.at(p, e), data.load(*items.at(i, e)))
                           if items.axis is not None else
                           y.store([p], flat_view(data).load(i))))
    per_item.append(If(f.eq(i), block(output)))
    zero = [] if counts is None else [Loop(j, as_index(counts.shape[0]),
                                           counts.store([j], idx(0)))]
    fill = ctx.kernel(block(zero, Loop(i, as_index(n), block(per_item))),
                      inputs=[data], scratch=[first, position])
    return [counting, fill]


def _corners(boxes: Buffer, b: Expr, box: Expr, center: bool) -> list[Expr]:
    """[ymin, xmin, ymax, xmax] of one box, in f64 (as the reference)."""
    c = [boxes.load(b, box, idx(k)).cast(DType.F64) for k in range(4)]
    if center:
        x, y, w, h = c
        return [y - h / 2.0, x - w / 2.0, y + h / 2.0, x + w / 2.0]
    return [binary("min", c[0], c[2]), binary("min", c[1], c[3]),
            binary("max", c[0], c[2]), binary("max", c[1], c[3])]


def _overlaps(a: list[Expr], o: list[Expr], threshold: Expr) -> tuple[list[Stmt], Expr]:
    """IoU of boxes ``a`` and ``o`` above threshold (degenerate boxes never overlap)."""
    f64 = DType.F64
    h, w, inter, union = (Var(f"iou_{name}", f64) for name in ("h", "w", "inter", "union"))
    area, other = Var("iou_area", f64), Var("iou_other", f64)
    zero = Const(0.0, f64)
    stmts: list[Stmt] = [
        Declare(h, binary("min", a[2], o[2]) - binary("max", a[0], o[0])),
        Declare(w, binary("min", a[3], o[3]) - binary("max", a[1], o[1])),
        Declare(inter, select(logical("and", [h > 0.0, w > 0.0]), h * w, zero)),
        Declare(area, (a[2] - a[0]) * (a[3] - a[1])),
        Declare(other, (o[2] - o[0]) * (o[3] - o[1])),
        Declare(union, area + other - inter),
    ]
    valid = logical("and", [inter > 0.0, area > 0.0, other > 0.0, union > 0.0])
    ratio = inter / select(valid, union, Const(1.0, f64))
    return stmts, logical("and", [valid, ratio > threshold])


@lowering(Op.NON_MAX_SUPPRESSION)
def lower_non_max_suppression(ctx: LowerContext) -> list[Kernel]:
    """Greedy selection per (batch, class), as the reference: repeatedly take the best
    remaining candidate (highest score, lower box index on ties) and drop the remaining boxes
    overlapping it. A first kernel selects into scratch and sizes the output by the total; a
    second writes the rows (batch, class, box) in (batch, class, selection) order."""
    boxes, scores, out = ctx.input(0), ctx.input(1), ctx.output()
    batches, classes, n = scores.shape
    center = bool(ctx.attr("center_point_box"))
    f64 = DType.F64

    def optional(index: int) -> Buffer | None:
        found = ctx.inputs[index] if index < len(ctx.inputs) else None
        return None if found is None or found.numel == 0 else found

    def scalar(buffer: Buffer) -> Expr:
        return buffer.load(*([idx(0)] * len(buffer.shape)))

    limit_in, iou_in, score_in = optional(2), optional(3), optional(4)
    chosen = ctx.scratch("chosen", DType.I64, (batches, classes, n))
    kept_per = ctx.scratch("kept", DType.I64, (batches, classes))
    state = ctx.scratch("state", DType.BOOL, (n,))  # true: still a candidate
    b, c, k, step = Var("b"), Var("c"), Var("k"), Var("step")
    limit, limit_all = Var("limit"), Var("limit_all")
    threshold, total = Var("threshold", f64), Var("total")
    kept, best, best_score = Var("kept"), Var("best"), Var("best_score", f64)
    score = Var("score", f64)
    candidate = (Const(True, DType.BOOL) if score_in is None
                 else scores.load(b, c, k).cast(f64) > scalar(score_in).cast(f64))
    better = logical("or", [best < 0, score > best_score, logical("and", [
        Unary("isnan", best_score), Unary("not", Unary("isnan", score))])])
    pick = Loop(k, as_index(n), If(state.load(k), block(
        Declare(score, scores.load(b, c, k).cast(f64)),
        If(better, block(Assign(best, k), Assign(best_score, score))))))
    overlap_stmts, overlap = _overlaps(_corners(boxes, b, best, center),
                                       _corners(boxes, b, k, center), threshold)
    suppress = Loop(k, as_index(n), If(state.load(k), block(
        overlap_stmts, If(overlap, state.store([k], Const(False, DType.BOOL))))))
    take = block(state.store([best], Const(False, DType.BOOL)), chosen.store([b, c, kept], best),
                 Assign(kept, kept + 1), suppress)
    select_one = If(kept < limit, block(
        Declare(best, idx(-1)), Declare(best_score, Const(0.0, f64)), pick,
        If(best >= 0, take, Assign(limit, kept))))
    per_class_stmts: list[Stmt] = [
        Loop(k, as_index(n), state.store([k], candidate)), Declare(kept, idx(0)),
        Declare(limit, limit_all), Loop(step, as_index(n), select_one),
        kept_per.store([b, c], kept), Assign(total, total + kept),
    ]
    head: list[Stmt] = [
        Declare(limit_all, idx(0) if limit_in is None else binary(
            "max", scalar(limit_in).cast(DType.I64), 0)),
        Declare(threshold, Const(0.0, f64) if iou_in is None else scalar(iou_in).cast(f64)),
        Declare(total, idx(0)),
        Loop(b, as_index(batches), Loop(c, as_index(classes), block(per_class_stmts))),
        *define_outputs(ctx, lambda o, a: total),
    ]
    selecting = shape_kernel(ctx, head, [x for x in ctx.inputs if x is not None],
                             [chosen, kept_per, state])
    row = Var("row")
    write = If(k < kept_per.load(b, c), block(
        out.store([row, idx(0)], b), out.store([row, idx(1)], c),
        out.store([row, idx(2)], chosen.load(b, c, k)), Assign(row, row + 1)))
    rows = block(Declare(row, idx(0)), Loop(b, as_index(batches), Loop(
        c, as_index(classes), Loop(k, as_index(n), write))))
    return [selecting, ctx.kernel(rows, inputs=[], scratch=[chosen, kept_per])]
