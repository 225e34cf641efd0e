"""Lowerings of the movement ops (data rearranged, not computed) and the shape ops.

Each output element is written once by a loop nest over the output (or over an input, for
Concat and Split), reading the element it comes from; the innermost loop walks the output's
contiguous axis. Values that only depend on shapes (Slice bounds, Shape, Size) are folded into
the loops at lowering time. Pad and CenterCropPad live in ``movement_pad``, Resize in
``movement_resize``, BitCast in ``movement_bitcast``.
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
    Var,
    binary,
    block,
    select,
)
from ..registry import LowerContext, lowering
from . import movement_bitcast, movement_pad, movement_resize  # noqa: F401 - registers
from .common import PARALLEL_WORK, affine, broadcast_index, const, idx
from .movement_loops import copy_reshaped, fill, loops, numel

# Side of the square tiles of a transpose that moves the contiguous axis: a tile's input
# lines (32 of 128 B) stay in the L1 cache while its output rows are written.
TILE = 32


@lowering(Op.RESHAPE, Op.FLATTEN, Op.SQUEEZE, Op.UNSQUEEZE)
def lower_reshape(ctx: LowerContext) -> list[Kernel]:
    """A copy in row-major order: only the shape changes."""
    data, out = ctx.input(0), ctx.output()
    return [ctx.kernel(copy_reshaped(data, out), inputs=[data])]


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

    last = len(perm) - 1
    # Tiles pay off once the tensor outgrows the L2 cache (below, its lines stay cached from
    # one output row to the next anyway, and the tile loops only add overhead).
    if perm and perm[last] != last and data.nbytes > ctx.machine.l2_bytes // 2 and min(
            out.shape[last], out.shape[perm.index(last)]) >= TILE:
        return [ctx.kernel(_tiled(out.shape, perm.index(last), body))]
    return [ctx.kernel(loops(out.shape, body, "t"))]


def _tiled(shape: Sequence[int], across: int, body: Callable[[list[Expr]], Stmt]) -> Stmt:
    """The loops of a transpose whose output's contiguous axis is not the input's: the plane
    of output axes ``across`` (the one walking the input's contiguous axis) and last is
    visited in TILE x TILE tiles, so the lines a tile reads from the input stay in the L1
    cache while it writes its output rows."""
    last = len(shape) - 1
    outer = [a for a in range(last) if a != across]
    tiles = [Var("t_tile_a"), Var("t_tile_l")]
    inner = [Var("t_a"), Var("t_l")]

    def nest(index: list[Expr]) -> Stmt:
        full = list(index)
        for axis, tile, var in zip((across, last), tiles, inner, strict=True):
            full[axis] = tile * TILE + var
        stmt: Stmt = body(full)
        for axis, tile, var, kind in ((last, tiles[1], inner[1], LoopKind.VECTORIZE),
                                      (across, tiles[0], inner[0], LoopKind.SERIAL)):
            extent = shape[axis]
            count: Expr = idx(TILE) if extent % TILE == 0 else binary(
                "min", idx(TILE), extent - tile * TILE)
            stmt = Loop(var, count, stmt, kind)
        for axis, tile in ((last, tiles[1]), (across, tiles[0])):
            stmt = Loop(tile, idx(-(-shape[axis] // TILE)), stmt)
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


def _block_copy(part: Buffer, whole: Buffer, axis: int, offset: int, into_whole: bool,
                prefix: str) -> Stmt:
    """Copy between ``part`` and the block of ``whole`` starting at ``offset`` along ``axis``
    (Concat writes blocks, Split reads them)."""

    def body(i: list[Expr]) -> Stmt:
        at = list(i)
        at[axis] = affine([(i[axis], 1)], offset)
        return whole.store(at, part.load(*i)) if into_whole else part.store(i, whole.load(*at))

    return loops(part.shape, body, prefix)


@lowering(Op.CONCAT)
def lower_concat(ctx: LowerContext) -> list[Kernel]:
    """One loop nest per input, writing its block of the output."""
    out = ctx.output()
    axis = normalize_axis(ctx.attr("axis"), len(out.shape))
    nests: list[Stmt] = []
    offset = 0
    for n in range(len(ctx.inputs)):
        part = ctx.input(n)
        nests.append(_block_copy(part, out, axis, offset, True, f"c{n}_"))
        offset += part.shape[axis]
    return [ctx.kernel(block(nests))]


@lowering(Op.SPLIT)
def lower_split(ctx: LowerContext) -> list[Kernel]:
    """One loop nest per present output, reading its block of the input."""
    data = ctx.input(0)
    axis = normalize_axis(ctx.attr("axis"), len(data.shape))
    given = _const_ints(ctx, 1, "split")
    # Absent outputs still occupy their extent, so offsets come from the sizes.
    sizes = given or split_sizes(data.shape[axis], len(ctx.outputs))
    nests: list[Stmt] = []
    offset = 0
    for n, (piece, size) in enumerate(zip(ctx.outputs, sizes, strict=True)):
        if piece is not None:
            nests.append(_block_copy(piece, data, axis, offset, False, f"s{n}_"))
        offset += size
    return [ctx.kernel(block(nests), inputs=[data])]


def _const_ints(ctx: LowerContext, index: int, what: str) -> list[int] | None:
    """The values of an optional integer input that must be a build-time constant."""
    if not ctx.has_input(index):
        return None
    value = ctx.const(index)
    if value is None:
        raise ctx.fail(f"{what} is computed at run time; it must be a constant when compiling "
                       "(dynamic shapes are not supported yet)")
    return [int(v) for v in value.reshape(-1)]


@lowering(Op.SLICE)
def lower_slice(ctx: LowerContext) -> list[Kernel]:
    data, out = ctx.input(0), ctx.output()
    starts, ends = _const_ints(ctx, 1, "starts"), _const_ints(ctx, 2, "ends")
    assert starts is not None and ends is not None
    rank = len(data.shape)
    origin, stride = [0] * rank, [1] * rank
    for axis, start, end, step in slice_params(rank, starts, ends, _const_ints(ctx, 3, "axes"),
                                               _const_ints(ctx, 4, "steps"), ctx.fail):
        origin[axis] = slice_bounds(start, end, step, data.shape[axis])[0]
        stride[axis] = step

    def body(o: list[Expr]) -> Stmt:
        return out.store(o, data.load(*[affine([(o[a], stride[a])], origin[a])
                                        for a in range(rank)]))

    return [ctx.kernel(loops(out.shape, body, "s"), inputs=[data])]


@lowering(Op.EXPAND)
def lower_expand(ctx: LowerContext) -> list[Kernel]:
    data, out = ctx.input(0), ctx.output()
    return [ctx.kernel(loops(out.shape, lambda o: out.store(o, data.load(
        *broadcast_index(o, data))), "e"), inputs=[data])]


@lowering(Op.TILE)
def lower_tile(ctx: LowerContext) -> list[Kernel]:
    """Loops over (repeat, position) pairs per axis, so no index needs a remainder."""
    data, out = ctx.input(0), ctx.output()
    rank = len(data.shape)
    repeats = [o // d if d else 0 for o, d in zip(out.shape, data.shape, strict=True)]
    extents = [e for r, d in zip(repeats, data.shape, strict=True) for e in (r, d)]

    def body(v: list[Expr]) -> Stmt:
        pairs = [(v[2 * a], v[2 * a + 1]) for a in range(rank)]
        return out.store([affine([(r, data.shape[a]), (i, 1)]) for a, (r, i) in
                          enumerate(pairs)], data.load(*[i for _, i in pairs]))

    if 0 in out.shape:
        return [ctx.kernel(Block(()), inputs=[data])]
    return [ctx.kernel(loops(extents, body, "t"), inputs=[data])]


def _blocked_channel(dcr: bool, ch: Expr, ky: Expr, kx: Expr, k: int, c: int) -> Expr:
    """The deep-side channel of spatial offset (ky, kx) of shallow channel ``ch``: DCR puts the
    offset outermost, CRD the channel."""
    if dcr:
        return affine([(ky, k * c), (kx, c), (ch, 1)])
    return affine([(ch, k * k), (ky, k), (kx, 1)])


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

    return [ctx.kernel(loops([n, c, h, k, w, k], body, "d"))]


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

    return [ctx.kernel(loops([n, k, k, c, h, w], body, "d"))]


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
    return [ctx.kernel(block(Declare(diagonal, init), loops(out.shape, body, "t")))]


@lowering(Op.REVERSE_SEQUENCE)
def lower_reverse_sequence(ctx: LowerContext) -> list[Kernel]:
    """Per batch entry: its length is checked once, then steps t < len read len - 1 - t."""
    data, lens, out = ctx.input(0), ctx.input(1), ctx.output()
    batch_axis, time_axis = ctx.attr("batch_axis"), ctx.attr("time_axis")
    steps, batch = data.shape[time_axis], data.shape[batch_axis]
    rest = data.shape[2:]
    length = Var("len")
    message = (f"{ctx.node.describe()}: a sequence length is outside [0, {steps}]")

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
            If(length > steps, Block((Report(message), Assign(length, idx(steps))))),
            loops([steps, *rest], row, "r", parallel=False),
        )

    return [ctx.kernel(loops([batch], lambda v: inner(v[0]), "b",
                             work=batch * steps * numel(rest), vectorize=False))]


# ------------------------------------------------------------------------------- shape ops

def _constants(ctx: LowerContext, values: list[int]) -> list[Kernel]:
    """A kernel storing known i64 values into the output (a vector or a scalar)."""
    out = ctx.output()
    stores = [out.store([idx(i)] * len(out.shape), idx(v)) for i, v in enumerate(values)]
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
    return [ctx.kernel(fill(out, const(fill_value, out.dtype)), inputs=[])]


@lowering(Op.EYE_LIKE)
def lower_eye_like(ctx: LowerContext) -> list[Kernel]:
    out = ctx.output()
    k = ctx.attr("k")
    one, zero = const(1, out.dtype), const(0, out.dtype)
    return [ctx.kernel(loops(out.shape, lambda o: out.store(o, select(
        affine([(o[1], 1), (o[0], -1)]).eq(k), one, zero)), "e"), inputs=[])]


@lowering(Op.RANGE)
def lower_range(ctx: LowerContext) -> list[Kernel]:
    """start + i * delta in i64 (integers) or f64 (floats), as the reference computes it."""
    out = ctx.output()
    wide = DType.I64 if out.dtype.is_int else DType.F64
    start, delta = Var("start", wide), Var("delta", wide)
    body = loops(out.shape, lambda o: out.store(o, (start + o[0].cast(wide) * delta).cast(
        out.dtype)), "r")
    return [ctx.kernel(block(Declare(start, _scalar(ctx, 0).cast(wide)),
                             Declare(delta, _scalar(ctx, 2).cast(wide)), body),
                       inputs=[ctx.input(0), ctx.input(2)])]

