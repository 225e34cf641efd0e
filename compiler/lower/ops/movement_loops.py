"""Loop-building blocks shared by the movement, shape and index lowerings.

- ``loops``: a nest over a shape whose outermost non-trivial loop runs in parallel when the
  work is large and whose innermost loop is marked for vectorization; unit axes get no loop.
- ``copy_reshaped``: the copy behind Reshape / Flatten / Squeeze / Unsqueeze: both sides are
  row-major with the same element order, so the loops walk the finest common refinement of
  the two shapes and neither side needs a division (except where no refinement exists, e.g.
  [2,3] -> [3,2], where that segment decomposes a flat index). With run-time extents it is one
  flat loop over the (run-time) element count, on flat views of both buffers.
- ``checked_index``: an index read from data, wrapped once when negative (ONNX) and clamped
  into range after a ``Report`` when outside ``[-extent, extent)``, so a bad index never
  touches memory out of bounds.
- Run-time extents: ``ShapeKernel`` builds the first kernel of a node whose output extents
  depend on values (reads them via ``input_values``, Reports bad ones, defines the extents,
  stores parameters for the compute kernel, which reads them back with ``read_params``);
  ``broadcast_source`` broadcasts run-time extents at run time; small helpers (``pick``,
  ``clamp``, ``count_true``...) build the scalar logic of those kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Binary,
    Block,
    Buffer,
    Const,
    Declare,
    Expr,
    ExprLike,
    If,
    Kernel,
    Loop,
    LoopKind,
    Report,
    Stmt,
    Var,
    as_expr,
    as_index,
    binary,
    block,
    define_dim,
    extent_mul,
    flat_view,
    select,
)
from ..registry import LowerContext
from .common import PARALLEL_WORK, affine, const, idx


def numel(shape: Sequence[int | Expr]) -> int | Expr:
    """The element count of ``shape``: an int when static, else a run-time expression."""
    total: int | Expr = 1
    for extent in shape:
        total = extent_mul(total, extent)
    return total


def static_shape(shape: Sequence[int | Expr]) -> tuple[int, ...]:
    """``shape`` of a static buffer, as ints (for the paths that need them)."""
    if not all(isinstance(d, int) for d in shape):
        raise ValueError(f"shape {shape} has extents known only at run time")
    return tuple(int(d) for d in shape)  # type: ignore[arg-type]


def static_part(extents: Sequence[int | Expr]) -> int:
    """The product of the static factors of ``extents`` (constants, and constant factors of
    run-time products such as ``numel``): the work when the run-time factors are 1."""
    total = 1
    for extent in extents:
        if isinstance(extent, int):
            total *= extent
        elif isinstance(extent, Const):
            total *= int(extent.value)
        elif isinstance(extent, Binary) and extent.op == "mul":
            total *= static_part([extent.a, extent.b])
    return total


def logical(op: str, conds: Sequence[Expr]) -> Expr:
    """``and`` / ``or`` of boolean expressions (at least one)."""
    result = conds[0]
    for cond in conds[1:]:
        result = Binary(op, result, cond)
    return result


def loops(
    extents: Sequence[int | Expr],
    make_body: Callable[[list[Expr]], Stmt],
    prefix: str,
    *,
    work: int | Expr | None = None,
    vectorize: bool = True,
    parallel: bool = True,
) -> Stmt:
    """A loop nest over ``extents``; ``make_body`` gets one index per axis (the constant 0 for
    unit axes, which get no loop). The outermost real loop is PARALLEL when ``work`` (default:
    the element count) is large, the innermost VECTORIZE when asked. Extents may be run-time
    expressions (taken not to be 1); the work is then judged by its static factors."""
    indices: list[Expr] = [idx(0) if _is_one(e) else Var(f"{prefix}{a}")
                           for a, e in enumerate(extents)]
    body = make_body(indices)
    real = [a for a, e in enumerate(extents) if not _is_one(e)]
    total = numel(extents) if work is None else work
    large = static_part([total]) >= PARALLEL_WORK
    outer = real[0] if real and parallel and large else None
    for axis in reversed(real):
        kind = LoopKind.SERIAL
        if axis == outer:
            kind = LoopKind.PARALLEL
        elif axis == real[-1] and vectorize:
            kind = LoopKind.VECTORIZE
        var = indices[axis]
        assert isinstance(var, Var)
        body = Loop(var, as_index(extents[axis]), body, kind)
    return body


def _is_one(extent: int | Expr) -> bool:
    return isinstance(extent, int) and extent == 1


def fill(out: Buffer, value: Expr, prefix: str = "f") -> Stmt:
    """Every element of ``out`` set to ``value``."""
    return loops(out.shape, lambda i: out.store(i, value), prefix)


def copy_reshaped(src: Buffer, dst: Buffer, prefix: str = "c") -> Stmt:
    """Copy ``src`` into ``dst`` element by element in row-major order (same element count)."""
    if not (src.is_static and dst.is_static):
        # The counts are equal unless a run-time check Reported: the smaller one keeps the copy
        # in bounds then.
        flat_src, flat_dst = flat_view(src), flat_view(dst)
        count = binary("min", as_index(src.numel), as_index(dst.numel))
        return loops([count], lambda i: flat_dst.store(i, flat_src.load(*i)), prefix,
                     work=src.numel)
    a, b = list(static_shape(src.shape)), list(static_shape(dst.shape))
    if numel(a) != numel(b):
        raise ValueError(f"cannot copy {a} into {b}: element counts differ")
    if numel(a) == 0:
        return Block(())
    pa, pb = _prefix_products(a), _prefix_products(b)
    bounds = sorted(set(pa) & set(pb))
    extents: list[int] = []
    # Per loop axis, its contribution to each src / dst dim: (dim, coefficient).
    src_terms: list[list[tuple[int, int]]] = []
    dst_terms: list[list[tuple[int, int]]] = []
    decomposed: list[tuple[int, int, list[int]]] = []  # (lo, hi, loop axes) of flat segments
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        cuts = sorted({p for p in pa + pb if lo <= p <= hi})
        if all(q % p == 0 for p, q in zip(cuts, cuts[1:], strict=False)):
            for p, q in zip(cuts, cuts[1:], strict=False):
                extents.append(q // p)
                src_terms.append(_digit_terms(pa, p, q))
                dst_terms.append(_digit_terms(pb, p, q))
        else:
            axes = []
            for j in range(len(b)):
                if b[j] > 1 and lo <= pb[j] and pb[j + 1] <= hi:
                    axes.append(len(extents))
                    extents.append(b[j])
                    src_terms.append([])
                    dst_terms.append([(j, 1)])
            decomposed.append((lo, hi, axes))

    def body(loop_vars: list[Expr]) -> Stmt:
        src_index = _gather_terms(len(a), src_terms, loop_vars)
        for lo, hi, axes in decomposed:
            # Position within the segment, outermost digit first, then each src dim's digit.
            flat = affine([(loop_vars[ax], hi // pb[dst_terms[ax][0][0] + 1]) for ax in axes])
            for j in range(len(a)):
                if a[j] > 1 and lo <= pa[j] and pa[j + 1] <= hi:
                    digit = flat if pa[j + 1] == hi else flat // (hi // pa[j + 1])
                    src_index[j] = digit if pa[j] == lo else digit % a[j]
        return dst.store(_gather_terms(len(b), dst_terms, loop_vars),
                         src.load(*src_index))

    return loops(extents, body, prefix)


def _prefix_products(shape: list[int]) -> list[int]:
    out = [1]
    for extent in shape:
        out.append(out[-1] * extent)
    return out


def _digit_terms(prefix: list[int], lo: int, hi: int) -> list[tuple[int, int]]:
    """The dim whose prefix range covers the refined digit [lo, hi), with its weight."""
    for j in range(len(prefix) - 1):
        if prefix[j] <= lo and hi <= prefix[j + 1] and prefix[j] < prefix[j + 1]:
            return [(j, prefix[j + 1] // hi)]
    raise AssertionError("refinement digit outside every dim")


def _gather_terms(rank: int, terms: list[list[tuple[int, int]]],
                  loop_vars: list[Expr]) -> list[Expr]:
    per_dim: list[list[tuple[Expr, int]]] = [[] for _ in range(rank)]
    for var, contributions in zip(loop_vars, terms, strict=True):
        for dim, coef in contributions:
            per_dim[dim].append((var, coef))
    return [affine(t) for t in per_dim]


def checked_index(raw: Expr, extent: int | Expr, name: str,
                  message: str) -> tuple[list[Stmt], Var]:
    """Statements declaring local ``name``: ``raw`` as i64, plus ``extent`` when negative, and
    clamped into [0, extent) after reporting ``message`` when outside [-extent, extent).
    ``extent`` (static or run-time) must be positive (callers handle empty axes)."""
    var = Var(name)
    outside = logical("or", [var < 0, var >= extent])
    last = idx(extent - 1) if isinstance(extent, int) else extent - 1
    return [
        Declare(var, raw.cast(DType.I64)),
        Assign(var, select(var < 0, var + extent, var)),
        If(outside, Block((Report(message), Assign(var, select(var < 0, idx(0), last))))),
    ], var


# ---------------------------------------------------------------- extents known at run time

def shifted(index: Expr, offset: int | Expr) -> Expr:
    """``index + offset`` for a static or run-time offset."""
    return affine([(index, 1)], offset) if isinstance(offset, int) else index + offset


def same_extent(a: int | Expr, b: int | Expr) -> bool:
    """True when two extents are known to be equal at compile time (equal ints, or one
    run-time expression)."""
    return a is b or (isinstance(a, int) and isinstance(b, int) and a == b)


def input_values(ctx: LowerContext, index: int, dtype: DType = DType.I64) -> list[Expr] | None:
    """The elements of the small input ``index`` as ``dtype`` expressions: constants when the
    input is known at compile time, else loads (run time). None when the input is absent."""
    if not ctx.has_input(index):
        return None
    value = ctx.const(index)
    if value is not None:
        return [const(v.item(), dtype) for v in np.asarray(value).reshape(-1)]
    found = ctx.input(index)
    if not isinstance(found.numel, int):
        raise ctx.fail(f"input {index} (%{found.name}) has a length known only at run time; "
                       "it decides the output rank, which must be known when compiling")
    flat = flat_view(found)
    return [flat.load(idx(k)).cast(dtype) for k in range(found.numel)]


def any_of(conds: Sequence[Expr]) -> Expr:
    return logical("or", conds) if conds else Const(False, DType.BOOL)


def pick(conds: Sequence[Expr], values: Sequence[Expr], default: ExprLike) -> Expr:
    """The value of the last true condition (``default`` when none is)."""
    result: Expr = as_expr(default, values[0].dtype) if values else as_index(default)
    for cond, value in zip(conds, values, strict=True):
        result = select(cond, value, result)
    return result


def clamp(value: Expr, low: ExprLike, high: ExprLike) -> Expr:
    return binary("min", binary("max", value, low), high)


def normalized_axis(axis: Expr, rank: int) -> Expr:
    """A run-time axis counted from the end when negative (range checked separately)."""
    return select(axis < 0, axis + rank, axis)


class ShapeKernel:
    """The first kernel of a node whose output extents (or the positions its compute kernels
    read) depend on run-time values: it reads the small inputs, Reports invalid values, stores
    the parameters the compute kernels need into a scratch vector and defines the output extents
    in ``ctx.undefined_dims``. After a Report every extent it defines is 0 and the ``ok``
    parameter is 0, so the compute kernels (which check it where a bad value could send them
    out of bounds) touch no memory."""

    def __init__(self, ctx: LowerContext) -> None:
        self.ctx = ctx
        self.bad = Var("shape_bad", DType.BOOL)
        self.stmts: list[Stmt] = [Declare(self.bad, Const(False, DType.BOOL))]
        self._locals = 0

    def local(self, value: Expr, hint: str = "v") -> Var:
        """A local holding ``value`` (evaluated once)."""
        var = Var(f"sk_{hint}{self._locals}", value.dtype)
        self._locals += 1
        self.stmts.append(Declare(var, value))
        return var

    def check(self, bad: Expr, message: str) -> None:
        """Report ``message`` (prefixed by the node) when ``bad`` holds at run time."""
        self.stmts.append(If(bad, Block((Report(f"{self.ctx.node.describe()}: {message}"),
                                         Assign(self.bad, Const(True, DType.BOOL))))))

    def kernels(self, extents: Sequence[Sequence[int | Expr] | None],
                params: Sequence[Expr] = (), dtype: DType = DType.I64,
                ) -> tuple[Kernel, Buffer | None]:
        """The kernel defining each undefined output extent from ``extents`` (one shape per
        output, None for absent ones) and storing ``params`` followed by the ok flag (as
        ``dtype``) into a scratch vector, returned for the compute kernels. Output extents the
        type rule gave (static or symbolic) are checked against ``extents``."""
        ctx = self.ctx
        stores: list[Stmt] = []
        for out, shape in zip(ctx.outputs, extents, strict=True):
            if out is None or shape is None:
                continue
            for axis, (extent, value) in enumerate(zip(out.shape, shape, strict=True)):
                if isinstance(extent, Expr) and any(extent is d for d in ctx.undefined_dims):
                    safe = binary("max", as_index(value), idx(0))
                    stores.append(define_dim(extent, select(self.bad, idx(0), safe)))
                elif not same_extent(extent, value):
                    self.check(as_index(value).ne(extent),
                               f"the values make axis {axis} of %{out.name} differ from the "
                               "extent inferred when compiling")
        vector = None
        if params:
            vector = ctx.scratch("params", dtype, (len(params) + 1,))
            stores += [vector.store([idx(k)], value.cast(dtype))
                       for k, value in enumerate(params)]
            stores.append(vector.store([idx(len(params))],
                                       select(self.bad, const(0, dtype), const(1, dtype))))
        kernel = ctx.kernel(block(self.stmts, stores), outputs=[],
                            scratch=[] if vector is None else [vector])
        return kernel, vector


def read_params(vector: Buffer, count: int, prefix: str) -> tuple[list[Stmt], list[Var], Expr]:
    """Locals holding the first ``count`` parameters of a shape kernel's vector, and the
    condition that its values were valid."""
    names = [Var(f"{prefix}{k}", vector.dtype) for k in range(count)]
    stmts: list[Stmt] = [Declare(v, vector.load(idx(k))) for k, v in enumerate(names)]
    ok = vector.load(idx(count)).eq(const(1, vector.dtype))
    return stmts, names, ok


def broadcast_source(o: Sequence[Expr], source: Buffer,
                     out_shape: Sequence[int | Expr]) -> list[Expr]:
    """Indices into ``source`` for output position ``o`` under numpy broadcasting; a run-time
    extent is broadcast at run time (read at 0 when it is 1)."""
    offset = len(o) - len(source.shape)
    index: list[Expr] = []
    for axis, extent in enumerate(source.shape):
        if isinstance(extent, int) and extent == 1:
            index.append(idx(0))
        elif isinstance(extent, int) or same_extent(extent, out_shape[offset + axis]):
            index.append(o[offset + axis])
        else:
            index.append(select(extent.eq(1), idx(0), o[offset + axis]))
    return index


def broadcast_mismatches(source: Buffer, out_shape: Sequence[int | Expr]) -> list[Expr]:
    """The run-time conditions under which ``source`` does not broadcast to ``out_shape``
    (none where the type rule proved it does)."""
    offset = len(out_shape) - len(source.shape)
    mismatches: list[Expr] = []
    for axis, extent in enumerate(source.shape):
        target = out_shape[offset + axis]
        if (isinstance(extent, int) and extent == 1) or same_extent(extent, target):
            continue
        if isinstance(extent, int):
            mismatches.append(as_index(target).ne(extent))
        else:
            mismatches.append(logical("and", [extent.ne(1), extent.ne(as_index(target))]))
    return mismatches


def count_true(conds: Sequence[Expr]) -> Expr:
    """How many of ``conds`` hold (i64)."""
    total: Expr = idx(0)
    for cond in conds:
        total = total + select(cond, idx(1), idx(0))
    return total


def run_time_axes(shape: ShapeKernel, values: list[Expr], rank: int) -> list[Expr]:
    """Axes values (possibly read at run time) counted from 0, each checked to be in range
    (a shape kernel's locals)."""
    axes: list[Expr] = []
    for k, raw in enumerate(values):
        value = shape.local(raw, "axis")
        shape.check(logical("or", [value < -rank, value >= rank]),
                    f"axes entry {k} is outside [-{rank}, {rank})")
        axes.append(shape.local(normalized_axis(value, rank), "axis"))
    return axes


def defining(ctx: LowerContext, extents: Sequence[int | Expr]) -> list[Kernel]:
    """The kernel defining the output extents that the type rule left unknown (an unknown
    input extent carried over: ``extents`` are the output's in terms of the inputs'), or
    none when every extent is already known."""
    if not ctx.undefined_dims:
        return []
    return [ShapeKernel(ctx).kernels([extents])[0]]
