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
    Select,
    Stmt,
    Var,
    block,
)
from ..registry import LowerContext, lowering
from ..schedules import gemm
from ..schedules.gemm import ceil_div
from . import quant_tiled
from .common import PARALLEL_WORK, affine, broadcast_index, const, idx
from .nn_common import acc_dtype, add_to, nest, requantize, unravel
from .nn_conv import scalar

# (a value, b value, i, j, k) -> the product term; i/j are None for 1-D operands.
Term = Callable[[Expr, Expr, Expr | None, Expr | None, Expr], Expr]
# (the accumulated value, the output index) -> the stored value of a tiled product
Finish = Callable[[Expr, list[Expr]], Expr]


def work_dtype(dtype: DType) -> DType:
    return acc_dtype(dtype) if dtype.is_float else dtype


def _operand_index(buffer: Buffer, batch: list[Expr], row: Expr, col: Expr) -> list[Expr]:
    """Index of a matrix operand (rank >= 2): broadcast batch dims, then (row, col)."""
    lead = broadcast_index(batch, Buffer(buffer.name, buffer.dtype, buffer.shape[:-2]))
    return [*lead, row, col]


def matmul_nest(
    a: Buffer, b: Buffer, out: Buffer, acc_type: DType, term: Term,
    finish: Callable[[Expr, list[Expr], Expr | None, Expr | None], Expr],
) -> Stmt:
    """out[batch, i, j] = finish(sum_k term(a[batch, i, k], b[batch, k, j], i, j, k))."""
    k_extent = a.shape[-1]
    has_rows, has_cols = len(a.shape) > 1, len(b.shape) > 1
    batch_rank = len(out.shape) - int(has_rows) - int(has_cols)

    def body(v: list[Expr]) -> Stmt:
        batch = v[:batch_rank]
        i = v[batch_rank] if has_rows else None
        j = v[-1] if has_cols else None
        acc = Var("acc", acc_type)

        def step(kv: list[Expr]) -> Stmt:
            k = kv[0]
            a_index = [k] if i is None else _operand_index(a, batch, i, k)
            b_index = [k] if j is None else _operand_index(b, batch, k, j)
            return add_to(acc, term(a.load(*a_index), b.load(*b_index), i, j, k))

        return block(Declare(acc, const(0, acc_type)), nest([k_extent], step, "k"),
                     out.store(v, finish(acc, v, i, j).cast(out.dtype)))

    return nest(list(out.shape), body, "o", work=out.numel * k_extent)


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
    m: int
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
    full_rows, row_tail = divmod(p.m, mr)
    row_tiles = full_rows + (row_tail > 0)
    k_blocks = ceil_div(p.k, kc)
    first = p.k - (k_blocks - 1) * kc
    items = math.prod(p.batch)
    task = Var("task")
    tile_index = task % row_tiles if items * col_blocks > 1 else task
    jc = (task // row_tiles) % col_blocks if col_blocks > 1 else idx(0)
    item = task // (row_tiles * col_blocks) if items > 1 else idx(0)
    coords = unravel(item, p.batch)
    row0 = tile_index * mr
    c_at = affine([(item, p.m * p.n), (row0, p.n)])
    a_at, b_at = affine([(row0, a.line)]) + a.at(coords), b.at(coords)

    def tiles(rows: int) -> Stmt:
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

    if full_rows and row_tail:
        compute: Stmt = If(tile_index < full_rows, tiles(mr), tiles(row_tail))
        rows_extent: Expr = _min(idx(p.m) - row0, mr)
    else:
        rows = mr if full_rows else row_tail
        compute, rows_extent = tiles(rows), idx(rows)
    col0 = jc * sched.n_block
    cols_extent = idx(min(p.n, sched.n_block)) if col_blocks == 1 else _min(
        idx(p.n) - col0, sched.n_block)
    r, j = Var("fin_r"), Var("fin_j")
    index = p.out_index(coords, row0 + r, col0 + j)
    store = out.store(index, finish(out.load(*index), index))
    finishing = Loop(r, rows_extent, Loop(j, cols_extent, store, LoopKind.VECTORIZE))
    kind = LoopKind.PARALLEL if items * p.m * p.n * p.k > PARALLEL_WORK else LoopKind.SERIAL
    return Loop(task, idx(items * col_blocks * row_tiles), Block((compute, finishing)), kind)


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
    sched = gemm.schedule(ctx.machine, DType.F32, math.prod(p.batch), p.m, p.n, p.k,
                          ctx.const(1) is not None)
    operand, pack = _b_operand(ctx, p, b, transposed, sched)
    body = _tiled(p, operand, ctx.output(), sched, finish)
    return ctx.kernel(body if pack is None else Block((pack, body)))


def packed_product(ctx: LowerContext, a: Buffer, m: int, b: np.ndarray, name: str,
                   out: Buffer, finish: Finish) -> Stmt:
    """``out[i, j] = finish(sum_k a[i, k] * b[k, j])``, tiled like MatMul, for f32 buffers
    ``a`` (m x K) and ``out`` (m x N) addressed flat (row-major, contiguous) and a
    compile-time matrix ``b`` (K x N), packed into panels named after ``name``, which must
    identify its content."""
    k, n = b.shape
    sched = gemm.schedule(ctx.machine, DType.F32, 1, m, n, k, True)
    panels = ctx.derived_constant(f"{name}.panels{sched.cols}", _panels(b, sched.cols))
    product = _Product((), m, n, k, _Operand(a, k, 1, ()), (), lambda _, i, j: [i, j])
    return _tiled(product, _Operand(panels, k * sched.cols, sched.cols, ()), out, sched, finish)


def _is_tiled(*buffers: Buffer) -> bool:
    return all(x.dtype is DType.F32 and x.numel for x in buffers)


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

    if len(a.shape) > 1 and math.prod(b_batch) == 1 and math.prod(a_batch) == math.prod(
            out_batch):
        # one B matrix: the batched A is one tall matrix (a plain GEMM with more row tiles)
        return _Product((), math.prod(out_batch) * m, n, k, _Operand(a, k, 1, ()), b_batch,
                        indexer(out_batch))
    return _Product(out_batch, m, n, k, _Operand(a, k, 1, _strides(a_batch, out_batch, m * k)),
                    b_batch, indexer(()))


@lowering(Op.MATMUL)
def lower_matmul(ctx: LowerContext) -> list[Kernel]:
    a, b, out = ctx.input(0), ctx.input(1), ctx.output()
    if _is_tiled(a, b, out):
        return [_tiled_kernel(ctx, _matmul_product(a, b, out), False, lambda value, _: value)]
    work = work_dtype(a.dtype)

    def term(x: Expr, y: Expr, *_: Expr | None) -> Expr:
        return x.cast(work) * y.cast(work)

    return [ctx.kernel(matmul_nest(a, b, out, work, term, lambda acc, *_: acc))]


@lowering(Op.GEMM)
def lower_gemm(ctx: LowerContext) -> list[Kernel]:
    a, b, out = ctx.input(0), ctx.input(1), ctx.output()
    c = ctx.input(2) if ctx.has_input(2) else None
    alpha, beta = float(ctx.attr("alpha")), float(ctx.attr("beta"))
    trans_a, trans_b = bool(ctx.attr("transA")), bool(ctx.attr("transB"))
    work = work_dtype(a.dtype)
    # Integer Gemm with fractional alpha/beta scales in f64 (numpy promotes the same way).
    scaled = DType.F64 if not work.is_float and (alpha != 1.0 or beta != 1.0) else work
    m, n = out.shape
    k_extent = a.shape[0] if trans_a else a.shape[1]

    def scale(value: Expr, index: list[Expr]) -> Expr:
        """alpha * value + beta * C (as the reference computes it, C read with broadcasting)."""
        if alpha != 1.0:
            value = value * alpha
        if c is None:
            return value
        bias = c.load(*broadcast_index(index, c)).cast(value.dtype)
        return value + (bias if beta == 1.0 else bias * beta)

    if _is_tiled(a, b, out, *([] if c is None else [c])):
        a_op = _Operand(a, 1, m, ()) if trans_a else _Operand(a, k_extent, 1, ())
        product = _Product((), m, n, k_extent, a_op, (), lambda _, i, j: [i, j])
        return [_tiled_kernel(ctx, product, trans_b, scale)]

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

    return [ctx.kernel(nest([m, n], body, "o", work=m * n * k_extent))]


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
    rows = a.numel // k
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
    rows, quads = a.numel // k, -(-k // 4)
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
    tiled = _tiled_integer(ctx, 1, 2, 3, lambda total, *_: total)
    if tiled is not None:
        return [tiled]
    zeros = [ctx.input(i) if ctx.has_input(i) else None for i in (2, 3)]
    term = _integer_term(*zeros)
    return [ctx.kernel(matmul_nest(a, b, out, DType.I32, term, lambda acc, *_: acc))]


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

    if a_scale.numel == 1:
        tiled = _tiled_integer(ctx, 3, 2, 5, lambda total, _, j: requantized(total, None, j))
        if tiled is not None:
            return [tiled]

    def finish(acc: Expr, _v: list[Expr], i: Expr | None, j: Expr | None) -> Expr:
        return requantized(acc, i, j)

    term = _integer_term(a_zero, b_zero)
    return [ctx.kernel(matmul_nest(a, b, out, DType.I32, term, finish))]


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


@lowering(Op.EINSUM)
def lower_einsum(ctx: LowerContext) -> list[Kernel]:
    """A loop nest over every label: the output's outside, the contracted ones inside."""
    operands = [ctx.input(i) for i in range(len(ctx.inputs))]
    out = ctx.output()
    labels, output = _einsum_terms(ctx.attr("equation"), [len(o.shape) for o in operands])
    sizes: dict[str, int] = {}
    for operand, term in zip(operands, labels, strict=True):
        for label, extent in zip(term, operand.shape, strict=True):
            sizes[label] = max(sizes.get(label, 1), extent)
    contracted = [label for label in sizes if label not in output]
    work = work_dtype(operands[0].dtype)

    def body(v: list[Expr]) -> Stmt:
        acc = Var("acc", work)

        def step(rv: list[Expr]) -> Stmt:
            where = dict(zip(output + contracted, v + rv, strict=True))
            product: Expr | None = None
            for operand, term in zip(operands, labels, strict=True):
                index = [where[label] if extent > 1 else idx(0)
                         for label, extent in zip(term, operand.shape, strict=True)]
                value = operand.load(*index).cast(work)
                product = value if product is None else product * value
            assert product is not None
            return add_to(acc, product)

        return block(Declare(acc, const(0, work)),
                     nest([sizes[label] for label in contracted], step, "r"),
                     out.store(v, acc.cast(out.dtype)))

    reduction = math.prod(sizes[label] for label in contracted)
    return [ctx.kernel(nest([sizes[label] for label in output], body, "o",
                            work=out.numel * reduction))]
