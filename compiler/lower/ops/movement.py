"""Lowerings of the movement ops (data rearranged, not computed) and the shape ops.

Each output element is written once by a loop nest over the output (or over an input, for
Concat and Split), reading the element it comes from; the innermost loop walks the output's
contiguous axis. Values that only depend on shapes (Slice bounds, Shape, Size) are folded into
the loops at lowering time. Pad and CenterCropPad live in ``movement_pad``, Resize in
``movement_resize``, BitCast in ``movement_bitcast``.

Extents known only at run time (expressions over ``DIMS``) become loop bounds. Where the output
extents depend on values (Reshape's shape, Slice's starts, Tile's repeats, Range's limits...
read at run time, or constants applied to run-time extents), a ``ShapeKernel`` runs first: it
reads those values, Reports invalid ones and defines the extents (and the parameters, such as
Slice's clamped starts, that the compute kernel reads).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from ...ir.op import Op
from ...ir.rules.movement import shape_bounds, slice_bounds, slice_params, split_sizes
from ...ir.shapes import normalize_axes, normalize_axis
from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Block,
    Buffer,
    Declare,
    Expr,
    If,
    Kernel,
    Loop,
    LoopKind,
    Report,
    Stmt,
    Unary,
    Var,
    as_index,
    binary,
    block,
    extent_add,
    extent_mul,
    select,
)
from ..registry import LowerContext, lowering
from . import movement_bitcast, movement_pad, movement_resize  # noqa: F401 - registers
from .common import PARALLEL_WORK, affine, broadcast_index, const, idx
from .movement_loops import (
    ShapeKernel,
    any_of,
    broadcast_mismatches,
    broadcast_source,
    clamp,
    copy_reshaped,
    count_true,
    defining,
    fill,
    input_values,
    logical,
    loops,
    numel,
    pick,
    read_params,
    run_time_axes,
    same_extent,
    shifted,
    static_part,
    static_shape,
)

# Side of the square tiles of a transpose that moves the contiguous axis: a tile's input
# lines (32 of 128 B) stay in the L1 cache while its output rows are written.
TILE = 32


@lowering(Op.RESHAPE, Op.FLATTEN, Op.SQUEEZE, Op.UNSQUEEZE)
def lower_reshape(ctx: LowerContext) -> list[Kernel]:
    """A copy in row-major order: only the shape changes. With run-time extents a shape kernel
    first computes the output extents (from the shape / axes values, which may be run-time
    values) and Reports invalid ones, such as a Reshape that changes the element count."""
    data, out = ctx.input(0), ctx.output()
    copy = copy_reshaped(data, out)
    if data.is_static and out.is_static:
        return [ctx.kernel(copy, inputs=[data])]
    if ctx.undefined_dims or (ctx.has_input(1) and ctx.const(1) is None):
        shape = ShapeKernel(ctx)
        extents = _RESHAPED[ctx.op](ctx, shape)
        return [shape.kernels([extents])[0], ctx.kernel(copy, inputs=[data])]
    # Extents the type rule gave from constant values: only run-time extents need a check.
    for bad, message in reversed(_reshape_checks(ctx, data, out)):
        copy = If(bad, Report(f"{ctx.node.describe()}: {message}"), copy)
    return [ctx.kernel(copy, inputs=[data])]


def _reshape_checks(ctx: LowerContext, data: Buffer, out: Buffer) -> list[tuple[Expr, str]]:
    """What the type rule could not prove of run-time extents with constant shape / axes."""
    if ctx.op is Op.RESHAPE:
        return [(as_index(out.numel).ne(data.numel),
                 "the shape does not keep the input's element count")]
    if ctx.op is not Op.SQUEEZE:
        return []
    if not ctx.has_input(1):
        return [(d.eq(1), _SQUEEZED_ONE) for d in data.shape if isinstance(d, Expr)]
    axes = normalize_axes(_const_ints(ctx, 1) or [], len(data.shape))
    return [(d.ne(1), f"axis {a} is squeezed but its extent is not 1")
            for a, d in enumerate(data.shape) if a in axes and isinstance(d, Expr)]


_SQUEEZED_ONE = ("an extent known only at run time is 1; squeezing every extent of 1 would "
                 "change the output rank")


def _reshape_extents(ctx: LowerContext, shape: ShapeKernel) -> list[int | Expr]:
    """Reshape's output extents: 0 copies the input extent (unless allowzero), one -1 takes
    what is left of the element count."""
    data = ctx.input(0)
    values = input_values(ctx, 1)
    assert values is not None
    rank, allowzero = len(data.shape), ctx.attr("allowzero")
    entries: list[Expr] = []
    for i, raw in enumerate(values):
        value = shape.local(raw, "shape")
        shape.check(value < -1, f"shape entry {i} is below -1")
        if allowzero:
            entries.append(value)
        elif i < rank:
            entries.append(shape.local(select(value.eq(0), as_index(data.shape[i]), value)))
        else:
            shape.check(value.eq(0), f"shape entry {i} is 0 but the input has rank {rank}")
            entries.append(value)
    inferred = [e.eq(-1) for e in entries]
    count = shape.local(count_true(inferred), "minus")
    shape.check(count > 1, "the shape has more than one -1")
    if allowzero:
        shape.check(logical("and", [count > 0, any_of([e.eq(0) for e in entries])]),
                    "the shape has both -1 and 0 while allowzero=1")
    known: Expr = idx(1)
    for entry, minus in zip(entries, inferred, strict=True):
        known = known * select(minus, idx(1), entry)
    known = shape.local(known, "known")
    total = shape.local(as_index(data.numel), "total")
    # Division by zero gives 0 in the kernel IR; the count check below catches it.
    rest = shape.local(total / known, "rest")
    extents: list[int | Expr] = [shape.local(select(m, rest, e), "dim")
                                 for e, m in zip(entries, inferred, strict=True)]
    product: Expr = idx(1)
    for extent in extents:
        product = product * extent
    shape.check(product.ne(total), "the shape does not keep the input's element count")
    return extents


def _flatten_extents(ctx: LowerContext, shape: ShapeKernel) -> list[int | Expr]:
    dims = ctx.input(0).shape
    axis = ctx.attr("axis")
    axis = axis + len(dims) if axis < 0 else axis
    return [numel(dims[:axis]), numel(dims[axis:])]


def _squeeze_extents(ctx: LowerContext, shape: ShapeKernel) -> list[int | Expr]:
    """The input extents not squeezed; squeezed ones must be 1 (checked at run time)."""
    dims = ctx.input(0).shape
    rank = len(dims)
    values = input_values(ctx, 1)
    if values is None:
        remaining = [d for d in dims if not (isinstance(d, int) and d == 1)]
        for d in remaining:
            if isinstance(d, Expr):
                shape.check(d.eq(1), _SQUEEZED_ONE)
        return remaining
    axes = run_time_axes(shape, values, rank)
    squeezed = [shape.local(any_of([a.eq(i) for a in axes]), "sq") for i in range(rank)]
    shape.check(count_true(squeezed).ne(len(axes)), "axes name one axis twice")
    for i, d in enumerate(dims):
        if not (isinstance(d, int) and d == 1):
            shape.check(logical("and", [squeezed[i], as_index(d).ne(1)]),
                        f"axis {i} is squeezed but its extent is not 1")
    kept = [Unary("not", q) for q in squeezed]
    place = [shape.local(count_true(kept[:i]), "pos") for i in range(rank)]
    return [pick([logical("and", [kept[i], place[i].eq(j)]) for i in range(rank)],
                 [as_index(d) for d in dims], 0) for j in range(rank - len(axes))]


def _unsqueeze_extents(ctx: LowerContext, shape: ShapeKernel) -> list[int | Expr]:
    """Extents of 1 at the axes, the input extents in order elsewhere."""
    dims = ctx.input(0).shape
    values = input_values(ctx, 1)
    assert values is not None
    rank = len(dims) + len(values)
    axes = run_time_axes(shape, values, rank)
    inserted = [shape.local(any_of([a.eq(j) for a in axes]), "ins") for j in range(rank)]
    shape.check(count_true(inserted).ne(len(axes)), "axes name one axis twice")
    extents: list[int | Expr] = []
    for j in range(rank):
        place = count_true([Unary("not", q) for q in inserted[:j]])
        source = pick([place.eq(i) for i in range(len(dims))], [as_index(d) for d in dims], 1)
        extents.append(select(inserted[j], idx(1), source))
    return extents


_RESHAPED = {Op.RESHAPE: _reshape_extents, Op.FLATTEN: _flatten_extents,
             Op.SQUEEZE: _squeeze_extents, Op.UNSQUEEZE: _unsqueeze_extents}


@lowering(Op.TRANSPOSE)
def lower_transpose(ctx: LowerContext) -> list[Kernel]:
    data, out = ctx.input(0), ctx.output()
    perm = ctx.attr("perm")
    perm = list(reversed(range(len(data.shape)))) if perm is None else list(
        normalize_axes(perm, len(data.shape)))

    def body(o: list[Expr]) -> Stmt:
        source: list[Expr] = [idx(0)] * len(perm)
        for out_axis, in_axis in enumerate(perm):
            source[in_axis] = o[out_axis]
        return out.store(o, data.load(*source))

    first = defining(ctx, [data.shape[p] for p in perm])
    last = len(perm) - 1
    # Tiles pay off once the tensor outgrows the L2 cache (below, its lines stay cached from
    # one output row to the next anyway, and the tile loops only add overhead).
    # With run-time outer extents, the size when they are 1 decides.
    big = static_part(data.shape) * data.dtype.itemsize > ctx.machine.l2_bytes // 2
    plane = (out.shape[last], out.shape[perm.index(last)]) if perm else ()
    if perm and perm[last] != last and big and all(
            isinstance(e, int) and e >= TILE for e in plane):
        return [*first, ctx.kernel(_tiled(out.shape, perm.index(last), body))]
    return [*first, ctx.kernel(loops(out.shape, body, "t"))]


def _tiled(shape: Sequence[int | Expr], across: int,
           body: Callable[[list[Expr]], Stmt]) -> Stmt:
    """The loops of a transpose whose output's contiguous axis is not the input's: the plane
    of output axes ``across`` (the one walking the input's contiguous axis) and last is
    visited in TILE x TILE tiles, so the lines a tile reads from the input stay in the L1
    cache while it writes its output rows. Those two extents are static; the others may be
    run-time."""
    last = len(shape) - 1
    outer = [a for a in range(last) if a != across]
    plane = dict(zip((across, last), static_shape([shape[across], shape[last]]), strict=True))
    tiles = [Var("t_tile_a"), Var("t_tile_l")]
    inner = [Var("t_a"), Var("t_l")]

    def nest(index: list[Expr]) -> Stmt:
        full = list(index)
        for axis, tile, var in zip((across, last), tiles, inner, strict=True):
            full[axis] = tile * TILE + var
        stmt: Stmt = body(full)
        for axis, tile, var, kind in ((last, tiles[1], inner[1], LoopKind.VECTORIZE),
                                      (across, tiles[0], inner[0], LoopKind.SERIAL)):
            extent = plane[axis]
            count: Expr = idx(TILE) if extent % TILE == 0 else binary(
                "min", idx(TILE), extent - tile * TILE)
            stmt = Loop(var, count, stmt, kind)
        for axis, tile in ((last, tiles[1]), (across, tiles[0])):
            stmt = Loop(tile, idx(-(-plane[axis] // TILE)), stmt)
        return stmt

    def place(outer_index: list[Expr]) -> Stmt:
        index: list[Expr] = [idx(0)] * len(shape)
        for axis, value in zip(outer, outer_index, strict=True):
            index[axis] = value
        return nest(index)

    total = numel(shape)
    stmt = loops([shape[a] for a in outer], place, "t", work=total, vectorize=False)
    if all(shape[a] == 1 for a in outer) and total >= PARALLEL_WORK:
        assert isinstance(stmt, Loop)
        stmt = replace(stmt, kind=LoopKind.PARALLEL)
    return stmt


def _block_copy(part: Buffer, whole: Buffer, axis: int, offset: int | Expr, into_whole: bool,
                prefix: str) -> Stmt:
    """Copy between ``part`` and the block of ``whole`` starting at ``offset`` along ``axis``
    (Concat writes blocks, Split reads them)."""

    def body(i: list[Expr]) -> Stmt:
        at = list(i)
        at[axis] = shifted(i[axis], offset)
        return whole.store(at, part.load(*i)) if into_whole else part.store(i, whole.load(*at))

    return loops(part.shape, body, prefix)


@lowering(Op.CONCAT)
def lower_concat(ctx: LowerContext) -> list[Kernel]:
    """One loop nest per input, writing its block of the output; an input whose run-time
    extents off the axis differ from the output's is Reported (and not copied)."""
    out = ctx.output()
    rank = len(out.shape)
    axis = normalize_axis(ctx.attr("axis"), rank)
    parts = [ctx.input(n) for n in range(len(ctx.inputs))]
    kernels: list[Kernel] = []
    if ctx.undefined_dims:  # the output takes input 0's extents, the sum along the axis
        extents = list(parts[0].shape)
        total: int | Expr = 0
        for part in parts:
            total = extent_add(total, part.shape[axis])
        extents[axis] = total
        kernels.append(ShapeKernel(ctx).kernels([extents])[0])
    nests: list[Stmt] = []
    offset: int | Expr = 0
    for n, part in enumerate(parts):
        nest = _block_copy(part, out, axis, offset, True, f"c{n}_")
        differ = [as_index(part.shape[d]).ne(out.shape[d]) for d in range(rank)
                  if d != axis and not same_extent(part.shape[d], out.shape[d])]
        if differ:
            nest = If(any_of(differ), Report(
                f"{ctx.node.describe()}: input {n} differs from the output in an extent off "
                f"axis {axis}"), nest)
        nests.append(nest)
        offset = extent_add(offset, part.shape[axis])
    return [*kernels, ctx.kernel(block(nests), inputs=parts)]


@lowering(Op.SPLIT)
def lower_split(ctx: LowerContext) -> list[Kernel]:
    """One loop nest per present output, reading its block of the input."""
    data = ctx.input(0)
    axis = normalize_axis(ctx.attr("axis"), len(data.shape))
    static = data.is_static and all(p is None or p.is_static for p in ctx.outputs)
    if not static or (ctx.has_input(1) and ctx.const(1) is None):
        return _split_at_run_time(ctx, data, axis)
    # Absent outputs still occupy their extent, so offsets come from the sizes.
    sizes = _const_ints(ctx, 1) or split_sizes(static_shape(data.shape)[axis],
                                                len(ctx.outputs))
    nests: list[Stmt] = []
    offset = 0
    for n, (piece, size) in enumerate(zip(ctx.outputs, sizes, strict=True)):
        if piece is not None:
            nests.append(_block_copy(piece, data, axis, offset, False, f"s{n}_"))
        offset += size
    return [ctx.kernel(block(nests), inputs=[data])]


def _split_at_run_time(ctx: LowerContext, data: Buffer, axis: int) -> list[Kernel]:
    """Sizes (read at run time, or equal chunks of a run-time extent) checked and turned into
    the outputs' extents and offsets by a shape kernel; then the copies."""
    shape = ShapeKernel(ctx)
    count = len(ctx.outputs)
    extent = shape.local(as_index(data.shape[axis]), "extent")
    given = input_values(ctx, 1)
    if given is None:
        chunk = shape.local((extent + (count - 1)) / count, "chunk")
        sizes: list[Expr] = [chunk] * (count - 1) + [extent - chunk * (count - 1)]
        shape.check(sizes[-1] < 0, f"the extent of axis {axis} cannot be split into {count} "
                                   "chunks")
    else:
        if len(given) != count:
            raise ctx.fail(f"split has {len(given)} sizes for {count} outputs")
        sizes = [shape.local(v, "size") for v in given]
        shape.check(any_of([v < 0 for v in sizes]), "a split size is negative")
    offsets: list[Expr] = [idx(0)]
    for size in sizes[:-1]:
        offsets.append(shape.local(offsets[-1] + size, "offset"))
    shape.check((offsets[-1] + sizes[-1]).ne(extent),
                f"the split sizes do not add up to the extent of axis {axis}")
    extents = [None if p is None else [*data.shape[:axis], sizes[n], *data.shape[axis + 1:]]
               for n, p in enumerate(ctx.outputs)]
    first, params = shape.kernels(extents, offsets)
    assert params is not None
    read, at, ok = read_params(params, count, "split_at")
    nests = [_block_copy(p, data, axis, at[n], False, f"s{n}_")
             for n, p in enumerate(ctx.outputs) if p is not None]
    return [first, ctx.kernel(block(read, If(ok, block(nests))), inputs=[data])]


@lowering(Op.SLICE)
def lower_slice(ctx: LowerContext) -> list[Kernel]:
    data, out = ctx.input(0), ctx.output()
    if not (data.is_static and out.is_static) or any(
            ctx.has_input(i) and ctx.const(i) is None for i in range(1, 5)):
        return _slice_at_run_time(ctx, data, out)
    starts, ends, axes, steps = (_const_ints(ctx, i) for i in range(1, 5))
    assert starts is not None and ends is not None
    rank = len(data.shape)
    origin, stride = [0] * rank, [1] * rank
    for axis, start, end, step in slice_params(rank, starts, ends, axes, steps, ctx.fail):
        origin[axis] = slice_bounds(start, end, step, static_shape(data.shape)[axis])[0]
        stride[axis] = step

    def body(o: list[Expr]) -> Stmt:
        return out.store(o, data.load(*[affine([(o[a], stride[a])], origin[a])
                                        for a in range(rank)]))

    return [ctx.kernel(loops(out.shape, body, "s"), inputs=[data])]


def _const_ints(ctx: LowerContext, index: int) -> list[int] | None:
    """The values of an integer input known at compile time (None if absent or not known)."""
    value = ctx.const(index) if ctx.has_input(index) else None
    return None if value is None else [int(v) for v in value.reshape(-1)]


def _slice_at_run_time(ctx: LowerContext, data: Buffer, out: Buffer) -> list[Kernel]:
    """A shape kernel clamps each axis's start / end / step (ONNX rules) at run time into the
    output extent and the start and step the copy reads."""
    rank = len(data.shape)
    shape = ShapeKernel(ctx)
    starts, ends, axes_given, steps = (input_values(ctx, i) for i in range(1, 5))
    assert starts is not None and ends is not None
    count = len(starts)
    if any(v is not None and len(v) != count for v in (ends, axes_given, steps)):
        raise ctx.fail("starts, ends, axes and steps differ in length")
    axes = run_time_axes(shape, axes_given or [idx(k) for k in range(count)], rank)
    step_values = [shape.local(v, "step") for v in steps or [idx(1)] * count]
    shape.check(any_of([v.eq(0) for v in step_values]), "a slice step is 0")
    picked = [[a.eq(axis) for a in axes] for axis in range(rank)]
    shape.check(any_of([count_true(p) > 1 for p in picked]), "axes name one axis twice")
    extents: list[int | Expr] = []
    params: list[Expr] = []
    for axis, chosen in enumerate(picked):
        dim = shape.local(as_index(data.shape[axis]), "dim")
        step = shape.local(pick(chosen, [select(v.eq(0), idx(1), v) for v in step_values], 1),
                           "step")
        start = shape.local(pick(chosen, starts, 0), "start")
        end = shape.local(pick(chosen, ends, dim), "end")
        start = shape.local(select(start < 0, start + dim, start), "start")
        end = shape.local(select(end < 0, end + dim, end), "end")
        forward = step > 0
        start = shape.local(select(forward, clamp(start, 0, dim), clamp(start, 0, dim - 1)),
                            "start")
        end = shape.local(select(forward, clamp(end, 0, dim), clamp(end, -1, dim - 1)), "end")
        # (span - 1) / |step| + 1 for a positive span: no overflow for steps near INT64_MAX.
        span = shape.local(select(forward, end - start, start - end), "span")
        size = select(span > 0, (span - 1) / select(forward, step, -step) + 1, idx(0))
        extents.append(shape.local(size, "size"))
        params += [start, step]
    first, vector = shape.kernels([extents], params)
    assert vector is not None
    read, at, ok = read_params(vector, 2 * rank, "slice")

    def body(o: list[Expr]) -> Stmt:
        return out.store(o, data.load(*[at[2 * a] + o[a] * at[2 * a + 1] for a in range(rank)]))

    return [first, ctx.kernel(block(read, If(ok, loops(out.shape, body, "s"))), inputs=[data])]


@lowering(Op.EXPAND)
def lower_expand(ctx: LowerContext) -> list[Kernel]:
    """The input broadcast over the output. Run-time extents broadcast at run time; shape
    values read at run time are checked against the input by a shape kernel."""
    data, out = ctx.input(0), ctx.output()
    if data.is_static and out.is_static and ctx.const(1) is not None:
        return [ctx.kernel(loops(out.shape, lambda o: out.store(o, data.load(
            *broadcast_index(o, data))), "e"), inputs=[data])]
    checked = ctx.undefined_dims or ctx.const(1) is None
    kernels = [_expand_extents(ctx, data, out)] if checked else []
    mismatches = broadcast_mismatches(data, out.shape)
    nest = loops(out.shape, lambda o: out.store(o, data.load(*broadcast_source(
        o, data, out.shape))), "e")
    if mismatches:
        nest = If(any_of(mismatches), Report(
            f"{ctx.node.describe()}: the input does not broadcast to the shape"), nest)
    return [*kernels, ctx.kernel(nest, inputs=[data])]


def _expand_extents(ctx: LowerContext, data: Buffer, out: Buffer) -> Kernel:
    """The broadcast of the input's extents with the shape values (numpy rules)."""
    shape = ShapeKernel(ctx)
    values = input_values(ctx, 1)
    assert values is not None
    rank = len(out.shape)
    extents: list[int | Expr] = []
    for axis in range(rank):
        at_data, at_shape = axis - (rank - len(data.shape)), axis - (rank - len(values))
        mine = as_index(data.shape[at_data]) if at_data >= 0 else idx(1)
        given = shape.local(values[at_shape], "shape") if at_shape >= 0 else idx(1)
        shape.check(logical("and", [mine.ne(1), given.ne(1), given.ne(mine)]),
                    f"the input's extent on output axis {axis} does not broadcast to the shape")
        extents.append(shape.local(select(mine.eq(1), given, mine), "dim"))
    return shape.kernels([extents])[0]


@lowering(Op.TILE)
def lower_tile(ctx: LowerContext) -> list[Kernel]:
    """Loops over (repeat, position) pairs per axis, so no index needs a remainder. Repeats
    read at run time are checked and multiplied into the output extents by a shape kernel."""
    data, out = ctx.input(0), ctx.output()
    rank = len(data.shape)
    kernels: list[Kernel] = []
    if ctx.undefined_dims:
        shape = ShapeKernel(ctx)
        repeats = input_values(ctx, 1)
        assert repeats is not None
        shape.check(any_of([r < 0 for r in repeats]), "a repeat count is negative")
        kernels.append(shape.kernels([[extent_mul(d, r) for d, r in zip(
            data.shape, repeats, strict=True)]])[0])
    counts = [_repeat_count(o, d) for o, d in zip(out.shape, data.shape, strict=True)]
    extents = [e for r, d in zip(counts, data.shape, strict=True) for e in (r, d)]

    def body(v: list[Expr]) -> Stmt:
        pairs = [(v[2 * a], v[2 * a + 1]) for a in range(rank)]
        return out.store([affine([(r, d), (i, 1)]) if isinstance(d, int) else r * d + i
                          for (r, i), d in zip(pairs, data.shape, strict=True)],
                         data.load(*[i for _, i in pairs]))

    if 0 in out.shape:
        return [*kernels, ctx.kernel(Block(()), inputs=[data])]
    return [*kernels, ctx.kernel(loops(extents, body, "t"), inputs=[data])]


def _repeat_count(out: int | Expr, extent: int | Expr) -> int | Expr:
    """How many copies of an input extent an output extent holds (0 for an empty input: the
    kernel IR's division by zero gives 0 too)."""
    if isinstance(out, int) and isinstance(extent, int):
        return out // extent if extent else 0
    return as_index(out) / extent


def _blocked_channel(dcr: bool, ch: Expr, ky: Expr, kx: Expr, k: int, c: int | Expr) -> Expr:
    """The deep-side channel of spatial offset (ky, kx) of shallow channel ``ch``: DCR puts the
    offset outermost, CRD the channel."""
    if dcr:
        if isinstance(c, Expr):
            return (ky * k + kx) * c + ch
        return affine([(ky, k * c), (kx, c), (ch, 1)])
    return affine([(ch, k * k), (ky, k), (kx, 1)])


def _block_extents(ctx: LowerContext) -> list[Kernel]:
    """The shape kernel of DepthToSpace / SpaceToDepth when an output extent is run-time and
    the type rule could not give it (a run-time extent divided by the block size)."""
    if not ctx.undefined_dims:
        return []
    n, c, h, w = (as_index(d) for d in ctx.input(0).shape)
    k = ctx.attr("blocksize")
    shape = ShapeKernel(ctx)
    if ctx.op is Op.DEPTH_TO_SPACE:
        shape.check((c % (k * k)).ne(0), f"the channels are not divisible by blocksize^2 = "
                                         f"{k * k}")
        extents = [n, c / (k * k), h * k, w * k]
    else:
        shape.check(logical("or", [(h % k).ne(0), (w % k).ne(0)]),
                    f"a spatial extent is not divisible by blocksize {k}")
        extents = [n, c * (k * k), h / k, w / k]
    return [shape.kernels([extents])[0]]


@lowering(Op.DEPTH_TO_SPACE)
def lower_depth_to_space(ctx: LowerContext) -> list[Kernel]:
    data, out = ctx.input(0), ctx.output()
    k = ctx.attr("blocksize")
    n, c, h, w = out.shape[0], out.shape[1], data.shape[2], data.shape[3]
    dcr = ctx.attr("mode") == "DCR"

    def body(v: list[Expr]) -> Stmt:
        b, ch, y, ky, x, kx = v
        channel = _blocked_channel(dcr, ch, ky, kx, k, c)
        return out.store([b, ch, affine([(y, k), (ky, 1)]), affine([(x, k), (kx, 1)])],
                         data.load(b, channel, y, x))

    return [*_block_extents(ctx), ctx.kernel(loops([n, c, h, k, w, k], body, "d"))]


@lowering(Op.SPACE_TO_DEPTH)
def lower_space_to_depth(ctx: LowerContext) -> list[Kernel]:
    data, out = ctx.input(0), ctx.output()
    k = ctx.attr("blocksize")
    n, c, h, w = data.shape[0], data.shape[1], out.shape[2], out.shape[3]
    dcr = ctx.attr("mode") == "DCR"

    def body(v: list[Expr]) -> Stmt:
        b, ky, kx, ch, y, x = v
        channel = _blocked_channel(dcr, ch, ky, kx, k, c)
        return out.store([b, channel, y, x],
                         data.load(b, ch, affine([(y, k), (ky, 1)]), affine([(x, k), (kx, 1)])))

    return [*_block_extents(ctx), ctx.kernel(loops([n, k, k, c, h, w], body, "d"))]


def _scalar(ctx: LowerContext, index: int) -> Expr:
    """The single element of a rank-0 or one-element input."""
    found = ctx.input(index)
    return found.load(*[idx(0)] * len(found.shape))


@lowering(Op.TRILU)
def lower_trilu(ctx: LowerContext) -> list[Kernel]:
    data, out = ctx.input(0), ctx.output()
    diagonal = Var("k_diag")
    upper = ctx.attr("upper")
    zero = const(0, data.dtype)

    def body(o: list[Expr]) -> Stmt:
        offset = affine([(o[-1], 1), (o[-2], -1)])
        keep = offset >= diagonal if upper else offset <= diagonal
        return out.store(o, select(keep, data.load(*o), zero))

    init = _scalar(ctx, 1).cast(DType.I64) if ctx.has_input(1) else idx(0)
    return [*defining(ctx, data.shape),
            ctx.kernel(block(Declare(diagonal, init), loops(out.shape, body, "t")))]


@lowering(Op.REVERSE_SEQUENCE)
def lower_reverse_sequence(ctx: LowerContext) -> list[Kernel]:
    """Per batch entry: its length is checked once, then steps t < len read len - 1 - t."""
    data, lens, out = ctx.input(0), ctx.input(1), ctx.output()
    batch_axis, time_axis = ctx.attr("batch_axis"), ctx.attr("time_axis")
    steps, batch = data.shape[time_axis], data.shape[batch_axis]
    rest = data.shape[2:]
    length = Var("len")
    bound = steps if isinstance(steps, int) else "the extent of the time axis"
    message = f"{ctx.node.describe()}: a sequence length is outside [0, {bound}]"

    def inner(b: Expr) -> Stmt:
        def row(v: list[Expr]) -> Stmt:
            t, tail = v[0], v[1:]
            source = select(t < length, length - 1 - t, t)
            at_out = [t, b] if time_axis == 0 else [b, t]
            at_in = [source, b] if time_axis == 0 else [b, source]
            return out.store(at_out + tail, data.load(*at_in, *tail))

        return block(
            Declare(length, lens.load(b)),
            If(length < 0, Block((Report(message), Assign(length, idx(0))))),
            If(length > steps, Block((Report(message), Assign(length, as_index(steps))))),
            loops([steps, *rest], row, "r", parallel=False),
        )

    nest = loops([batch], lambda v: inner(v[0]), "b", work=numel([batch, steps, *rest]),
                 vectorize=False)
    return [*defining(ctx, data.shape), ctx.kernel(nest)]


# ------------------------------------------------------------------------------- shape ops

def _constants(ctx: LowerContext, values: list[int | Expr]) -> list[Kernel]:
    """A kernel storing i64 values into the output (a vector or a scalar): static extents, or
    run-time ones read from ``DIMS``."""
    out = ctx.output()
    stores: list[Stmt] = [out.store([idx(i)] * len(out.shape), as_index(v))
                          for i, v in enumerate(values)]
    return [ctx.kernel(block(stores), inputs=[])]


@lowering(Op.SHAPE)
def lower_shape(ctx: LowerContext) -> list[Kernel]:
    shape = ctx.input(0).shape
    start, end = shape_bounds(ctx.attr("start"), ctx.attr("end"), len(shape))
    return _constants(ctx, list(shape[start:end]))


@lowering(Op.SIZE)
def lower_size(ctx: LowerContext) -> list[Kernel]:
    return _constants(ctx, [ctx.input(0).numel])


@lowering(Op.CONSTANT_OF_SHAPE)
def lower_constant_of_shape(ctx: LowerContext) -> list[Kernel]:
    out = ctx.output()
    value = ctx.attr("value")
    fill_value = 0 if value is None else value.reshape(-1)[0].item()
    kernels: list[Kernel] = []
    if ctx.undefined_dims:
        shape = ShapeKernel(ctx)
        extents = input_values(ctx, 0)
        assert extents is not None
        shape.check(any_of([e < 0 for e in extents]), "the shape has a negative extent")
        kernels.append(shape.kernels([extents])[0])
    return [*kernels, ctx.kernel(fill(out, const(fill_value, out.dtype)), inputs=[])]


@lowering(Op.EYE_LIKE)
def lower_eye_like(ctx: LowerContext) -> list[Kernel]:
    out = ctx.output()
    k = ctx.attr("k")
    one, zero = const(1, out.dtype), const(0, out.dtype)
    return [*defining(ctx, ctx.input(0).shape), ctx.kernel(loops(out.shape, lambda o: out.store(
        o, select(affine([(o[1], 1), (o[0], -1)]).eq(k), one, zero)), "e"), inputs=[])]


@lowering(Op.RANGE)
def lower_range(ctx: LowerContext) -> list[Kernel]:
    """start + i * delta in i64 (integers) or f64 (floats), as the reference computes it."""
    out = ctx.output()
    wide = DType.I64 if out.dtype.is_int else DType.F64
    start, delta = Var("start", wide), Var("delta", wide)
    body = loops(out.shape, lambda o: out.store(o, (start + o[0].cast(wide) * delta).cast(
        out.dtype)), "r")
    kernels = [_range_length(ctx, wide)] if ctx.undefined_dims else []
    return [*kernels, ctx.kernel(block(Declare(start, _scalar(ctx, 0).cast(wide)),
                                       Declare(delta, _scalar(ctx, 2).cast(wide)), body),
                                 inputs=[ctx.input(0), ctx.input(2)])]


def _range_length(ctx: LowerContext, wide: DType) -> Kernel:
    """max(ceil((limit - start) / delta), 0), exactly for integers, in f64 for floats (as the
    reference computes it)."""
    shape = ShapeKernel(ctx)
    start, limit, delta = (shape.local(_scalar(ctx, i).cast(wide), "r") for i in range(3))
    shape.check(delta.eq(const(0, wide)), "delta is 0")
    if wide is DType.I64:
        span = shape.local(limit - start, "span")
        quotient, remainder = span / delta, span % delta
        # Truncation rounds toward zero: one more when the exact quotient is positive.
        up = logical("and", [remainder.ne(0), (remainder > 0).eq(delta > 0)])
        length: Expr = quotient + select(up, idx(1), idx(0))
    else:
        steps = shape.local((limit - start) / delta, "steps")
        shape.check(logical("or", [Unary("isnan", steps), Unary("isinf", steps)]),
                    "the number of elements is not finite")
        length = Unary("ceil", steps).cast(DType.I64)
    return shape.kernels([[length]])[0]

