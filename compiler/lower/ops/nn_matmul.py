"""Lowerings of the matrix products: MatMul (plain, integer, quantized), Gemm and Einsum.

f32 MatMul and Gemm are tiled (schedule: compiler/lower/schedules/gemm.py): register-blocked
``MatmulTile``s accumulate each output block in the output buffer, over K blocks, reading B as
panels of ``cols`` contiguous columns: a constant B is packed into panels [ceil(N/cols), K, cols]
at compile time (transposed first for Gemm's transB), a non-constant one is read in place or,
when transposed or big (the schedule's ``pack_b``), packed into scratch at run time. A batched
A times an unbatched B is one product with the batch folded into M. Each task (batch, column
block, row tile) ends with a vectorizable finish loop storing every element once, after its
last tile, reading the output only at the stored position: Gemm's alpha and beta*C live there,
and fused epilogues replace it (compiler/lower/ops/fused.py).

MatMulInteger and QLinearMatMul with a constant 8-bit B whose values minus their zero point
fit int8 run integer tiles (u8 x s8 quads into int32: vpdpbusd with AVX-512 VNNI; B packed
into quad panels at compile time, A made unsigned, zero points folded into the weights' column
sums; compiler/lower/ops/quant_tiled.py); other constant 8-bit B run the tiled f32 product on
the operands minus their zero points, exactly, when the sums provably fit f32's integers. The
other products (those integer ones, other float types, Einsum) are scalar loop nests: each
output element is a local accumulator summed over the contraction index, innermost; the output
loops carry broadcast batch indices and the outermost is parallel for large products.

Run-time extents: a product whose only run-time extent is M (batch rows, A's batch folded into
them) keeps the tiled schedule, scheduled for a large M: full row tiles, then the rows a tile
cannot take (M % rows) as one-row tiles. Any other run-time extent (batch axes, N, K: attention
scores) takes the loop nests, an f32/f64 MatMul (matrix operands) as rows of output updated
by a vectorized loop over N per contraction step (same summation order: no reduction across
lanes). Batch axes broadcast at run time (an extent of 1 is read at index 0, a mismatch is
reported); an output extent the type rules could not tie to the inputs (different symbols, an
unnamed input axis) is computed by a first kernel.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ...ir.op import Op
from ...ir.types import DType
from ..kernel_ir import (
    Binary,
    Block,
    Buffer,
    ContractAxis,
    Declare,
    Expr,
    If,
    Kernel,
    Loop,
    LoopKind,
    MatmulTile,
    Report,
    Select,
    Stmt,
    Var,
    as_index,
    block,
    extent_mul,
    select,
)
from ..registry import LowerContext, lowering
from ..schedules import gemm
from ..schedules.gemm import ceil_div
from . import quant_tiled
from .common import (
    PARALLEL_WORK,
    Extent,
    affine,
    broadcast_checks,
    broadcast_index,
    const,
    idx,
    product,
    same_extent,
    work_estimate,
)
from .nn_common import acc_dtype, add_to, nest, requantize, unravel
from .nn_conv import scalar
from .nn_window import define_extents

# (a value, b value, i, j, k) -> the product term; i/j are None for 1-D operands.
Term = Callable[[Expr, Expr, Expr | None, Expr | None, Expr], Expr]
# (the accumulated value, the output index) -> the stored value of a tiled product
Finish = Callable[[Expr, list[Expr]], Expr]


def work_dtype(dtype: DType) -> DType:
    return acc_dtype(dtype) if dtype.is_float else dtype


def _operand_index(buffer: Buffer, batch: list[Expr], row: Expr, col: Expr,
                   out_batch: Sequence[Extent]) -> list[Expr]:
    """Index of a matrix operand (rank >= 2): broadcast batch dims, then (row, col)."""
    lead = broadcast_index(batch, Buffer(buffer.name, buffer.dtype, buffer.shape[:-2]),
                           out_batch)
    return [*lead, row, col]


def _batch_views(*operands: Buffer) -> list[Buffer]:
    """The batch axes of the matrix operands (rank >= 2), for broadcast checks."""
    return [Buffer(x.name, x.dtype, x.shape[:-2]) for x in operands if len(x.shape) > 2]


def matmul_nest(
    a: Buffer, b: Buffer, out: Buffer, acc_type: DType, term: Term,
    finish: Callable[[Expr, list[Expr], Expr | None, Expr | None], Expr], what: str,
) -> Stmt:
    """out[batch, i, j] = finish(sum_k term(a[batch, i, k], b[batch, k, j], i, j, k)); with
    run-time extents, only when the batch axes broadcast (else a Report naming ``what``)."""
    k_extent = a.shape[-1]
    has_rows, has_cols = len(a.shape) > 1, len(b.shape) > 1
    batch_rank = len(out.shape) - int(has_rows) - int(has_cols)
    out_batch = out.shape[:batch_rank]

    def body(v: list[Expr]) -> Stmt:
        batch = v[:batch_rank]
        i = v[batch_rank] if has_rows else None
        j = v[-1] if has_cols else None
        acc = Var("acc", acc_type)

        def step(kv: list[Expr]) -> Stmt:
            k = kv[0]
            a_index = [k] if i is None else _operand_index(a, batch, i, k, out_batch)
            b_index = [k] if j is None else _operand_index(b, batch, k, j, out_batch)
            return add_to(acc, term(a.load(*a_index), b.load(*b_index), i, j, k))

        return block(Declare(acc, const(0, acc_type)), nest([k_extent], step, "k"),
                     out.store(v, finish(acc, v, i, j).cast(out.dtype)))

    loops = nest(list(out.shape), body, "o", work=extent_mul(out.numel, k_extent))
    return broadcast_checks(out_batch, _batch_views(a, b), loops, what)


def _row_nest(a: Buffer, b: Buffer, out: Buffer, what: str) -> Stmt:
    """A float MatMul (rank >= 2 operands, output of the work type) as rows:
    ``out[batch, i, :] = 0``, then for each k ``out[batch, i, :] += a[batch, i, k] *
    b[batch, k, :]``, the loops over N vectorized (the sum adds the products in k order, like
    ``matmul_nest``)."""
    m, k_extent, n = a.shape[-2], a.shape[-1], b.shape[-1]
    out_batch = out.shape[:-2]

    def row(v: list[Expr]) -> Stmt:
        batch, i = v[:-1], v[-1]
        k, j, j0 = Var("row_k"), Var("row_j"), Var("row_j0")
        a_value = a.load(*_operand_index(a, batch, i, k, out_batch))
        update = out.store([*batch, i, j], out.load(*batch, i, j)
                           + a_value * b.load(*_operand_index(b, batch, k, j, out_batch)))
        zero = out.store([*batch, i, j0], const(0, out.dtype))
        return block(Loop(j0, as_index(n), zero, LoopKind.VECTORIZE),
                     Loop(k, as_index(k_extent), Loop(j, as_index(n), update,
                                                      LoopKind.VECTORIZE)))

    work = extent_mul(product([*out_batch, m, n]), k_extent)
    loops = nest([*out_batch, m], row, "o", work=work)
    return broadcast_checks(out_batch, _batch_views(a, b), loops, what)


@dataclass(frozen=True)
class _Operand:
    """A tiled product's operand, addressed flat: ``line`` is the stride between A rows or
    between B panels, ``step`` the stride along the contraction, ``batch`` one stride per
    looped batch axis (0 where the operand is broadcast)."""

    buffer: Buffer
    line: int
    step: int
    batch: tuple[int, ...]

    def at(self, coords: Sequence[Expr]) -> Expr:
        return affine(list(zip(coords, self.batch, strict=True)))


@dataclass(frozen=True)
class _Product:
    """out[batch..., i, j] = sum_k A[batch..., i, k] * B[batch..., k, j] with A given: ``m``
    rows (a folded batch included); ``out_index`` maps (batch coordinates, row, column) to the
    output element's index (the output is contiguous: flat offset (batch * m + row) * n + col);
    ``b_batch`` is B's own batch shape."""

    batch: tuple[int, ...]
    m: int | Expr
    n: int
    k: int
    a: _Operand
    b_batch: tuple[int, ...]
    out_index: Callable[[list[Expr], Expr, Expr], list[Expr]]


def _min(x: Expr, limit: int) -> Expr:
    return Binary("min", x, idx(limit))


def _tiled(p: _Product, b: _Operand, out: Buffer, sched: gemm.GemmSchedule,
           finish: Finish) -> Stmt:
    """The loop over tasks (batch, column block, row tile), parallel when large; see the
    docstring of compiler/lower/schedules/gemm.py for the loop order."""
    a = p.a
    mr, nr, kc = sched.rows, sched.cols, sched.k_block
    per_block = sched.n_block // nr
    full_panels, col_tail = divmod(p.n, nr)
    col_blocks = ceil_div(ceil_div(p.n, nr), per_block)
    row_tiles: int | Expr
    if isinstance(p.m, int):
        full_rows, row_tail = divmod(p.m, mr)
        row_tiles = full_rows + (row_tail > 0)
    else:  # a run-time M (the batch is then folded into it: p.batch is empty)
        row_tiles = (p.m + (mr - 1)) // mr if mr > 1 else p.m
    k_blocks = ceil_div(p.k, kc)
    first = p.k - (k_blocks - 1) * kc
    items = math.prod(p.batch)
    task = Var("task")
    tile_index = task % row_tiles if items * col_blocks > 1 else task
    jc = (task // row_tiles) % col_blocks if col_blocks > 1 else idx(0)
    item = task // (row_tiles * col_blocks) if items > 1 else idx(0)
    coords = unravel(item, p.batch)
    row0 = tile_index * mr
    # a run-time M has no batch items (p.batch is empty)
    c_items = [(item, p.m * p.n)] if isinstance(p.m, int) else []
    b_at = b.at(coords)

    def tiles(rows: int, first_row: Expr) -> Stmt:
        c_at = affine([*c_items, (first_row, p.n)])
        a_at = affine([(first_row, a.line)]) + a.at(coords)

        def sweep(k0: Expr, extent: int, accumulate: bool) -> Stmt:
            def tile(panel: Expr, cols: int) -> MatmulTile:
                return MatmulTile(out, c_at + panel * nr, p.n, a.buffer, a_at + k0 * a.step,
                                  a.line, b.buffer, b_at + panel * b.line + k0 * b.step, rows,
                                  cols, (ContractAxis(extent, a.step, b.step),), accumulate)

            jp = Var("jp")
            stmts: list[Stmt] = []
            if full_panels:
                count = idx(min(per_block, full_panels)) if col_blocks == 1 else _min(
                    idx(full_panels) - jc * per_block, per_block)
                stmts.append(Loop(jp, count, tile(jc * per_block + jp, nr)))
            if col_tail:
                last = tile(idx(full_panels), col_tail)
                stmts.append(last if col_blocks == 1 else If(jc.eq(idx(col_blocks - 1)), last))
            return block(stmts)

        kb = Var("kb")
        steps = [sweep(idx(0), first, False)]
        if k_blocks > 1:
            steps.append(Loop(kb, idx(k_blocks - 1), sweep(kb * kc + first, kc, True)))
        return block(steps)

    if not isinstance(p.m, int):
        # full tiles, then the last M % mr rows one at a time
        tail = Var("tail_r")
        compute: Stmt = tiles(1, row0)
        rows_extent: Expr = idx(1)
        if mr > 1:
            compute = If(tile_index < p.m // mr, tiles(mr, row0),
                         Loop(tail, p.m - row0, tiles(1, row0 + tail)))
            rows_extent = _min(p.m - row0, mr)
    elif full_rows and row_tail:
        compute = If(tile_index < full_rows, tiles(mr, row0), tiles(row_tail, row0))
        rows_extent = _min(idx(p.m) - row0, mr)
    else:
        rows = mr if full_rows else row_tail
        compute, rows_extent = tiles(rows, row0), idx(rows)
    col0 = jc * sched.n_block
    cols_extent = idx(min(p.n, sched.n_block)) if col_blocks == 1 else _min(
        idx(p.n) - col0, sched.n_block)
    r, j = Var("fin_r"), Var("fin_j")
    index = p.out_index(coords, row0 + r, col0 + j)
    store = out.store(index, finish(out.load(*index), index))
    finishing = Loop(r, rows_extent, Loop(j, cols_extent, store, LoopKind.VECTORIZE))
    work = items * work_estimate(p.m) * p.n * p.k
    kind = LoopKind.PARALLEL if work > PARALLEL_WORK else LoopKind.SERIAL
    count = extent_mul(items * col_blocks, row_tiles)
    return Loop(task, as_index(count), Block((compute, finishing)), kind)


def _panels(data: np.ndarray, cols: int) -> np.ndarray:
    """[..., K, N] -> [prod(...), ceil(N / cols), K, cols], zero-padded: B's panels."""
    k, n = data.shape[-2:]
    flat = data.reshape(-1, k, n)
    panels = ceil_div(n, cols)
    padded = np.zeros((flat.shape[0], k, panels * cols), np.float32)
    padded[:, :, :n] = flat
    return padded.reshape(flat.shape[0], k, panels, cols).transpose(0, 2, 1, 3)


def _strides(shape: Sequence[int], batch: Sequence[int], inner: int) -> tuple[int, ...]:
    """Per looped ``batch`` axis, the element stride of the operand's batch axes ``shape``
    (aligned right; 0 where broadcast or absent), ``inner`` elements per batch item."""
    strides, step = [0] * len(batch), inner
    for axis in range(1, len(shape) + 1):
        if shape[-axis] != 1:
            strides[-axis] = step
        step *= shape[-axis]
    return tuple(strides)


def _b_operand(ctx: LowerContext, p: _Product, b: Buffer, transposed: bool,
               sched: gemm.GemmSchedule) -> tuple[_Operand, Stmt | None]:
    """B as panels of ``sched.cols`` columns: packed now when constant (unless it is one
    panel already), else read in place (row stride N), or packed into scratch by the returned
    loop nest when the schedule says so or B is transposed (its columns not contiguous)."""
    nr, n, k = sched.cols, p.n, p.k
    data = ctx.const(1)
    if data is not None and (transposed or n > nr):
        matrix = np.asarray(data, np.float32).reshape(*p.b_batch, *((n, k) if transposed
                                                                   else (k, n)))
        packed = _panels(np.swapaxes(matrix, -1, -2) if transposed else matrix, nr)
        buffer = ctx.derived_constant(f"{b.name}.panels{nr}{'t' if transposed else ''}",
                                      packed)
        return _Operand(buffer, k * nr, nr, _strides(p.b_batch, p.batch, packed[0].size)), None
    if not transposed and not sched.pack_b:
        return _Operand(b, nr, n, _strides(p.b_batch, p.batch, k * n)), None
    items, panels = math.prod(p.b_batch), ceil_div(n, nr)
    scratch = ctx.scratch("panels", DType.F32, (items, panels, k, nr))
    source = Buffer(b.name, b.dtype, (items, *((n, k) if transposed else (k, n))))

    def pack(v: list[Expr]) -> Stmt:
        item, panel, step = v
        j = Var("pack_j")
        col = panel * nr + j
        value = source.load(item, col, step) if transposed else source.load(item, step, col)
        return Loop(j, _min(idx(n) - panel * nr, nr), scratch.store([item, panel, step, j], value),
                    LoopKind.SERIAL if transposed else LoopKind.VECTORIZE)

    operand = _Operand(scratch, k * nr, nr, _strides(p.b_batch, p.batch, panels * k * nr))
    return operand, nest([items, panels, k], pack, "pack", work=items * n * k)


def _tiled_kernel(ctx: LowerContext, p: _Product, transposed: bool, finish: Finish) -> Kernel:
    """The kernel of a tiled product whose B is input 1."""
    b = ctx.input(1)
    sched = gemm.schedule(ctx.machine, DType.F32, math.prod(p.batch), work_estimate(p.m), p.n,
                          p.k, ctx.const(1) is not None)
    operand, pack = _b_operand(ctx, p, b, transposed, sched)
    body = _tiled(p, operand, ctx.output(), sched, finish)
    return ctx.kernel(body if pack is None else Block((pack, body)))


def packed_product(ctx: LowerContext, a: Buffer, m: int | Expr, b: np.ndarray, name: str,
                   out: Buffer, finish: Finish) -> Stmt:
    """``out[i, j] = finish(sum_k a[i, k] * b[k, j])``, tiled like MatMul, for f32 buffers
    ``a`` (m x K) and ``out`` (m x N) addressed flat (row-major, contiguous) and a
    compile-time matrix ``b`` (K x N), packed into panels named after ``name``, which must
    identify its content; ``m`` may be known only at run time."""
    k, n = b.shape
    sched = gemm.schedule(ctx.machine, DType.F32, 1, work_estimate(m), n, k, True)
    panels = ctx.derived_constant(f"{name}.panels{sched.cols}", _panels(b, sched.cols))
    product = _Product((), m, n, k, _Operand(a, k, 1, ()), (), lambda _, i, j: [i, j])
    return _tiled(product, _Operand(panels, k * sched.cols, sched.cols, ()), out, sched, finish)


def _is_tiled(*buffers: Buffer) -> bool:
    """f32 operands, none statically empty (a run-time extent may still be 0)."""
    return all(x.dtype is DType.F32 and (not isinstance(x.numel, int) or x.numel)
               for x in buffers)


def _tileable(p: _Product) -> bool:
    """Whether the tiled schedule takes ``p``: everything static but, with no batch, M."""
    static = (*p.batch, p.n, p.k, p.a.line, p.a.step, *p.b_batch)
    return all(isinstance(e, int) for e in static) and (isinstance(p.m, int) or not p.batch)


def _matmul_product(a: Buffer, b: Buffer, out: Buffer) -> _Product:
    """MatMul as a tiled product (numpy broadcasting of the batch axes, 1-D operands)."""
    a_shape = a.shape if len(a.shape) > 1 else (1, *a.shape)
    b_shape = b.shape if len(b.shape) > 1 else (*b.shape, 1)
    (m, k), n = a_shape[-2:], b_shape[-1]
    a_batch, b_batch = a_shape[:-2], b_shape[:-2]
    out_batch = out.shape[:len(out.shape) - (len(a.shape) > 1) - (len(b.shape) > 1)]

    def indexer(fold: tuple[int, ...]) -> Callable[[list[Expr], Expr, Expr], list[Expr]]:
        def index(coords: list[Expr], row: Expr, col: Expr) -> list[Expr]:
            rows = unravel(row, (*fold, m) if len(a.shape) > 1 else fold)
            return [*coords, *rows, *([col] if len(b.shape) > 1 else [])]

        return index

    if len(a.shape) > 1 and product(b_batch) == 1 and _same_items(a_batch, out_batch):
        # one B matrix: the batched A is one tall matrix (a plain GEMM with more row tiles)
        return _Product((), extent_mul(product(out_batch), m), n, k,  # type: ignore[arg-type]
                        _Operand(a, k, 1, ()), b_batch, indexer(out_batch))  # type: ignore[arg-type]
    if not all(isinstance(e, int) for e in (*out_batch, m, k)):
        return _Product(out_batch, m, n, k, _Operand(a, k, 1, ()), b_batch,  # type: ignore[arg-type]
                        indexer(()))  # the loop nests' (not _tileable)
    return _Product(out_batch, m, n, k, _Operand(a, k, 1, _strides(a_batch, out_batch, m * k)),
                    b_batch, indexer(()))


def _same_items(a_batch: Sequence[Extent], out_batch: Sequence[Extent]) -> bool:
    """Whether A's batch axes hold every output batch item once (B has one matrix)."""
    a_items, out_items = product(a_batch), product(out_batch)
    if isinstance(a_items, int) and isinstance(out_items, int):
        return a_items == out_items
    extra = len(out_batch) - len(a_batch)
    return (extra >= 0 and all(isinstance(e, int) and e == 1 for e in out_batch[:extra])
            and all(same_extent(x, y) for x, y in zip(a_batch, out_batch[extra:], strict=True)))


def _extent_pairs(a: Buffer, b: Buffer, out: Buffer) -> list[tuple[Extent, list[Extent]]]:
    """Each output extent of a MatMul with the operand extents it comes from."""
    has_rows, has_cols = len(a.shape) > 1, len(b.shape) > 1
    batch_rank = len(out.shape) - has_rows - has_cols
    pairs: list[tuple[Extent, list[Extent]]] = []
    for axis in range(batch_rank):
        offset = batch_rank - axis
        pairs.append((out.shape[axis], [x.shape[-2 - offset] for x in (a, b)
                                        if len(x.shape) - 2 >= offset]))
    if has_rows:
        pairs.append((out.shape[batch_rank], [a.shape[-2]]))
    if has_cols:
        pairs.append((out.shape[-1], [b.shape[-1]]))
    return pairs


@lowering(Op.MATMUL)
def lower_matmul(ctx: LowerContext) -> list[Kernel]:
    a, b, out = ctx.input(0), ctx.input(1), ctx.output()
    shape = define_extents(ctx, _extent_pairs(a, b, out))
    if _is_tiled(a, b, out):
        p = _matmul_product(a, b, out)
        if _tileable(p):
            return [*shape, _tiled_kernel(ctx, p, False, lambda value, _: value)]
    work = work_dtype(a.dtype)
    if (not out.is_static and work is out.dtype and a.dtype == b.dtype == out.dtype
            and len(a.shape) > 1 and len(b.shape) > 1):
        return [*shape, ctx.kernel(_row_nest(a, b, out, ctx.node.describe()))]

    def term(x: Expr, y: Expr, *_: Expr | None) -> Expr:
        return x.cast(work) * y.cast(work)

    return [*shape, ctx.kernel(matmul_nest(a, b, out, work, term, lambda acc, *_: acc,
                                   ctx.node.describe()))]


@lowering(Op.GEMM)
def lower_gemm(ctx: LowerContext) -> list[Kernel]:
    a, b, out = ctx.input(0), ctx.input(1), ctx.output()
    c = ctx.input(2) if ctx.has_input(2) else None
    alpha, beta = float(ctx.attr("alpha")), float(ctx.attr("beta"))
    trans_a, trans_b = bool(ctx.attr("transA")), bool(ctx.attr("transB"))
    work = work_dtype(a.dtype)
    # Integer Gemm with fractional alpha/beta scales in f64 (numpy promotes the same way).
    scaled = DType.F64 if not work.is_float and (alpha != 1.0 or beta != 1.0) else work
    # the extents of the operands (the output's may be fresh ones, defined from them)
    m, k_extent = (a.shape[1], a.shape[0]) if trans_a else a.shape
    n = b.shape[0] if trans_b else b.shape[1]
    shape = define_extents(ctx, [(out.shape[0], [m]), (out.shape[1], [n])])

    def scale(value: Expr, index: list[Expr]) -> Expr:
        """alpha * value + beta * C (as the reference computes it, C read with broadcasting)."""
        if alpha != 1.0:
            value = value * alpha
        if c is None:
            return value
        bias = c.load(*broadcast_index(index, c, out.shape)).cast(value.dtype)
        return value + (bias if beta == 1.0 else bias * beta)

    if _is_tiled(a, b, out, *([] if c is None else [c])):
        a_op = _Operand(a, 1, m, ()) if trans_a else _Operand(a, k_extent, 1, ())
        p = _Product((), m, n, k_extent, a_op, (), lambda _, i, j: [i, j])  # type: ignore[arg-type]
        if _tileable(p):
            return [*shape, _tiled_kernel(ctx, p, trans_b, scale)]

    def body(v: list[Expr]) -> Stmt:
        i, j = v
        acc = Var("acc", work)

        def step(kv: list[Expr]) -> Stmt:
            k = kv[0]
            x = a.load(k, i) if trans_a else a.load(i, k)
            y = b.load(j, k) if trans_b else b.load(k, j)
            return add_to(acc, x.cast(work) * y.cast(work))

        return block(Declare(acc, const(0, work)), nest([k_extent], step, "k"),
                     out.store([i, j], scale(acc.cast(scaled), [i, j]).cast(out.dtype)))

    loops = nest([m, n], body, "o", work=extent_mul(extent_mul(m, n), k_extent))
    return [*shape, ctx.kernel(broadcast_checks(out.shape, [c], loops, ctx.node.describe()))]


def _by_axis(buffer: Buffer | None, primary: Expr | None, fallback: Expr) -> Expr | None:
    """A quantization parameter: one value, or a vector indexed along ``primary`` (rows of A,
    columns of B) or, for 1-D operands, the contraction index."""
    if buffer is None:
        return None
    if buffer.numel == 1:
        return scalar(buffer)
    return buffer.load(primary if primary is not None else fallback)


def _integer_term(a_zero: Buffer | None, b_zero: Buffer | None) -> Term:
    def term(x: Expr, y: Expr, i: Expr | None, j: Expr | None, k: Expr) -> Expr:
        left, right = x.cast(DType.I32), y.cast(DType.I32)
        za, zb = _by_axis(a_zero, i, k), _by_axis(b_zero, j, k)
        if za is not None:
            left = left - za.cast(DType.I32)
        if zb is not None:
            right = right - zb.cast(DType.I32)
        return left * right

    return term


def _tiled_integer(ctx: LowerContext, b_at: int, a_zero_at: int, b_zero_at: int,
                   store: Callable[[Expr, Expr, Expr], Expr]) -> Kernel | None:
    """An integer MatMul, A's batch folded into its rows, then out[row, j] = store(int32 sum,
    row, j): integer tiles when the shifted weights fit int8 (``_quad_integer``), else packed
    f32 products of the shifted operands, exact (compiler/lower/ops/quant_tiled.py; one per
    chunk of the contraction). None unless B is a constant 8-bit matrix with a constant zero
    point and A (rank >= 2) is 8-bit with one zero point."""
    a, b, out = ctx.input(0), ctx.input(b_at), ctx.output()
    a_zero, b_zero = (ctx.input(i) if ctx.has_input(i) else None for i in (a_zero_at, b_zero_at))
    weights, a_zeros, b_zeros = (ctx.const(i) for i in (b_at, a_zero_at, b_zero_at))
    if (len(a.shape) < 2 or len(b.shape) != 2 or a.dtype.itemsize != 1 or weights is None
            or not isinstance(a.shape[-1], int)
            or (b_zero is not None and b_zeros is None)
            or (a_zero is not None and a_zero.numel != 1)):
        return None
    shifted = quant_tiled.shifted_weights(weights, b_zeros, 1)
    signed = quant_tiled.signed_weights(shifted)
    if signed is not None and weights.size:
        return _quad_integer(ctx, signed, a_zero_at, store)
    magnitude = quant_tiled.input_magnitude(a.dtype, a_zeros, a_zero is None
                                            or a_zeros is not None)
    ranges = quant_tiled.chunks(shifted.T[:, :, None], magnitude)
    if ranges is None:
        return None
    k, n = weights.shape
    rows = product(a.shape[:-1])
    zero = None if a_zero is None else scalar(a_zero)
    loops: list[Stmt] = []
    sums: list[Buffer] = []
    for k0, k1 in ranges:
        source, fill = quant_tiled.shifted_input(ctx, a, zero, rows, k0, k1 - k0)
        part = shifted[k0:k1]
        digest = hashlib.sha1(part.tobytes()).hexdigest()[:12]
        sums.append(ctx.scratch("sums", DType.F32, (rows, n)))
        loops += [fill, packed_product(ctx, source, rows, part.astype(np.float32),
                                       f"{b.name}.shifted{digest}", sums[-1],
                                       lambda value, _: value)]
    return ctx.kernel(block(*loops, quant_tiled.epilogue(sums, out, rows, store)))


def _quad_integer(ctx: LowerContext, weights: np.ndarray, a_zero_at: int,
                  store: Callable[[Expr, Expr, Expr], Expr]) -> Kernel:
    """``_tiled_integer`` by integer tiles: A (u8, or s8 + 128) by the shifted weights
    ``weights`` (int8 [K, N], packed into quad panels), then sum (a - a_zero) * w = the tiles'
    sum - (a_zero + offset) * the weights' column sums, folded at compile time."""
    a, out = ctx.input(0), ctx.output()
    k, n = weights.shape
    rows, quads = product(a.shape[:-1]), -(-k // 4)
    cols = quant_tiled.quad_columns(ctx)
    digest = hashlib.sha1(weights.tobytes()).hexdigest()[:12]
    panels = ctx.derived_constant(f"quads{cols}.{k}x{n}.{digest}",
                                  quant_tiled.quad_panels(weights, cols))
    stmts: list[Stmt] = []
    source = Buffer(a.name, a.dtype, (rows, k))
    if a.dtype is DType.U8 and k % 4 == 0:
        unsigned = source
    else:  # made unsigned, rows padded to whole quads
        unsigned = ctx.scratch("quads", DType.U8, (rows, quads * 4))

        def fill(v: list[Expr]) -> Stmt:
            if k % 4 == 0:
                return unsigned.store(v, quant_tiled.as_unsigned(source.load(*v), a.dtype))
            value = quant_tiled.as_unsigned(source.load(v[0], _min(v[1], k - 1)), a.dtype)
            return unsigned.store(v, Select(v[1] < k, value, const(0, DType.U8)))

        stmts.append(nest([rows, quads * 4], fill, "u", work=rows * k, vectorize_inner=True))
    sums = weights.astype(np.int64).sum(axis=0).astype(np.int32)
    column_sums = ctx.derived_constant(f"quads.sums.{k}x{n}.{digest}", sums)
    zero: Expr = const(quant_tiled.input_offset(a.dtype), DType.I32)
    if ctx.has_input(a_zero_at):
        zero = zero + scalar(ctx.input(a_zero_at)).cast(DType.I32)

    def value(total: Expr, row: Expr, col: Expr) -> Expr:
        return store(total - zero * column_sums.load(col), row, col)

    ops = quant_tiled.QuadOperands(unsigned, unsigned.shape[1], panels, quads * 4 * cols,
                                   4 * cols, lambda _: (idx(0), idx(0)))
    stmts.append(quant_tiled.quad_product(ctx, ops, 1, rows, n, quads, cols, value, out))
    return ctx.kernel(block(stmts))


@lowering(Op.MATMUL_INTEGER)
def lower_matmul_integer(ctx: LowerContext) -> list[Kernel]:
    a, b, out = ctx.input(0), ctx.input(1), ctx.output()
    shape = define_extents(ctx, _extent_pairs(a, b, out))
    tiled = _tiled_integer(ctx, 1, 2, 3, lambda total, *_: total)
    if tiled is not None:
        return [*shape, tiled]
    zeros = [ctx.input(i) if ctx.has_input(i) else None for i in (2, 3)]
    term = _integer_term(*zeros)
    return [*shape, ctx.kernel(matmul_nest(a, b, out, DType.I32, term, lambda acc, *_: acc,
                                           ctx.node.describe()))]


@lowering(Op.QLINEAR_MATMUL)
def lower_qlinear_matmul(ctx: LowerContext) -> list[Kernel]:
    a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = (ctx.input(i) for i in range(8))
    out = ctx.output()
    f32 = DType.F32

    def requantized(total: Expr, i: Expr | None, j: Expr | None) -> Expr:
        """onnxruntime's requantization of the int32 sum: f32(sum) * f32(a_scale * b_scale /
        y_scale), rounded half to even."""
        sa = _by_axis(a_scale, i, idx(0))
        sb = _by_axis(b_scale, j, idx(0))
        assert sa is not None and sb is not None
        multiplier = sa.cast(f32) * sb.cast(f32) / scalar(y_scale).cast(f32)
        return requantize(total.cast(f32) * multiplier, scalar(y_zero), out.dtype)

    shape = define_extents(ctx, _extent_pairs(a, b, out))
    if a_scale.numel == 1:
        tiled = _tiled_integer(ctx, 3, 2, 5, lambda total, _, j: requantized(total, None, j))
        if tiled is not None:
            return [*shape, tiled]

    def finish(acc: Expr, _v: list[Expr], i: Expr | None, j: Expr | None) -> Expr:
        return requantized(acc, i, j)

    term = _integer_term(a_zero, b_zero)
    return [*shape, ctx.kernel(matmul_nest(a, b, out, DType.I32, term, finish,
                                           ctx.node.describe()))]


def _einsum_terms(equation: str, ranks: list[int]) -> tuple[list[list[str]], list[str]]:
    """Operand and output label lists, each ellipsis expanded to numbered batch labels that
    align right (numpy broadcasting)."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    batch_rank = max(rank - len(t.replace("...", "")) for t, rank in zip(terms, ranks,
                                                                         strict=True))
    batch = [f"...{d}" for d in range(batch_rank)]

    def expand(term: str, extra: int) -> list[str]:
        before, dots, after = term.partition("...")
        return [*before, *(batch[batch_rank - extra:] if dots else []), *after]

    labels = [expand(t, rank - len(t.replace("...", ""))) for t, rank in zip(terms, ranks,
                                                                            strict=True)]
    if arrow:
        output = expand(rhs, batch_rank)
    else:
        counts: dict[str, int] = {}
        for term_labels in labels:
            for label in term_labels:
                counts[label] = counts.get(label, 0) + 1
        output = batch + sorted(k for k, c in counts.items() if c == 1 and k not in batch)
    return labels, output


def _label_extent(extents: Sequence[Extent]) -> Extent:
    """The extent of an Einsum label from its operands' extents: the largest static one (as
    numpy broadcasts), else a run-time one (the others are checked against it)."""
    if all(isinstance(e, int) for e in extents):
        return max([1, *extents])  # type: ignore[list-item]
    static = [e for e in extents if isinstance(e, int) and e != 1]
    return static[0] if static else next(e for e in extents if not isinstance(e, int))


@lowering(Op.EINSUM)
def lower_einsum(ctx: LowerContext) -> list[Kernel]:
    """A loop nest over every label: the output's outside, the contracted ones inside. A
    run-time operand extent that is not its label's reads index 0 when it is 1 and must
    otherwise equal the label's (else a Report)."""
    operands = [ctx.input(i) for i in range(len(ctx.inputs))]
    out = ctx.output()
    labels, output = _einsum_terms(ctx.attr("equation"), [len(o.shape) for o in operands])
    found: dict[str, list[Extent]] = {}
    for operand, term in zip(operands, labels, strict=True):
        for label, extent in zip(term, operand.shape, strict=True):
            found.setdefault(label, []).append(extent)
    sizes = {label: _label_extent(extents) for label, extents in found.items()}
    for label, extent in zip(output, out.shape, strict=True):
        if not isinstance(extent, int):  # the output's extent (the type rule's, or defined)
            sizes[label] = extent
    contracted = [label for label in sizes if label not in output]
    work = work_dtype(operands[0].dtype)
    checks: list[Expr] = []

    def index_of(label: str, extent: Extent, where: dict[str, Expr]) -> Expr:
        size = sizes[label]
        if isinstance(extent, int):
            if not isinstance(size, int) and extent > 1:
                checks.append(size.eq(extent))
            return where[label] if extent > 1 else idx(0)
        if same_extent(extent, size):
            return where[label]
        checks.append(Binary("or", extent.eq(1), extent.eq(as_index(size))))
        return select(extent.eq(1), 0, where[label])

    def body(v: list[Expr]) -> Stmt:
        acc = Var("acc", work)

        def step(rv: list[Expr]) -> Stmt:
            where = dict(zip(output + contracted, v + rv, strict=True))
            total: Expr | None = None
            for operand, term in zip(operands, labels, strict=True):
                index = [index_of(label, extent, where)
                         for label, extent in zip(term, operand.shape, strict=True)]
                value = operand.load(*index).cast(work)
                total = value if total is None else total * value
            assert total is not None
            return add_to(acc, total)

        return block(Declare(acc, const(0, work)),
                     nest([sizes[label] for label in contracted], step, "r"),
                     out.store(v, acc.cast(out.dtype)))

    reduction = product([sizes[label] for label in contracted])
    loops = nest([sizes[label] for label in output], body, "o",
                 work=extent_mul(out.numel, reduction))
    shape = define_extents(ctx, [(extent, found[label])
                                 for extent, label in zip(out.shape, output, strict=True)])
    if checks:
        every = checks[0]
        for check in checks[1:]:
            every = Binary("and", every, check)
        loops = If(every, loops, Report(f"{ctx.node.describe()}: the operands' run-time "
                                        "extents of one label differ (and are not 1)"))
    return [*shape, ctx.kernel(loops)]
