"""Fast exact integer products: helpers of ConvInteger, QLinearConv, MatMulInteger and
QLinearMatMul (compiler/lower/ops/nn_conv.py, nn_matmul.py).

Integer tiles (first choice): when the constant weights minus their zero points fit int8, the
product is ``MatmulTile``'s integer form, a u8 operand by an s8 one in 4-byte quads summed into
int32 (vpdpbusd with AVX-512 VNNI, a widening multiply-add elsewhere). The activations are made
unsigned (int8 x + 128) and padded to whole quads at run time; the weights are laid out at
compile time (quad panels for a MatMul's B, rows padded to quads for a conv's A). Then
sum (x - x_zero) * w = tiles' sum - (x_zero + offset) * sum w, the weight sums folded at compile
time: exact in int32. ``quad_product`` runs the tiles per task (item, column block, row tile)
into an int32 scratch and stores the task's outputs through the op's epilogue right after.

Otherwise the products run on the tiled f32 kernels, exactly:

An 8-bit operand minus its zero point is an integer of at most 9 bits, a product of two such at
most 17 bits; an f32 holds every integer below 2**24 exactly, so a sum of products whose
absolute values add up to less than 2**24 is computed exactly by f32 multiply-adds (FMA or not,
in any order: every partial sum is an integer of that size). With constant weights the bound is
known at compile time: for each output channel, sum |w - w_zero| times the largest |x - x_zero|
the input's type allows (plus |bias|). When it holds, the integer op is the register-blocked f32
GEMM / convolution of compiler/lower/schedules/ on the shifted operands (the input shifted and
converted into scratch once, the weights at compile time). When it does not, the contraction is
split into the fewest equal chunks (of input channels, for a conv) for which it holds, each a
product of its own, their exact sums added in int32. The epilogue then works on the int32 total
as the integer kernel would: a bias added in int32, then a cast (ConvInteger, MatMulInteger) or
onnxruntime's requantization ``f32(total) * f32(scale)``. Results are bit-identical to int32
accumulation; only grouped (not depthwise) convs that would need chunks keep the scalar int32
loop nests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...ir.types import DType
from ..kernel_ir import (
    Binary,
    Block,
    Buffer,
    ContractAxis,
    Expr,
    If,
    Loop,
    LoopKind,
    MatmulTile,
    Stmt,
    Var,
    as_index,
    block,
    extent_mul,
)
from ..registry import LowerContext
from .common import PARALLEL_WORK, idx, work_estimate
from .nn_common import nest, unravel

# Integers of magnitude below this are exact in f32.
F32_EXACT = 1 << 24
# Beyond this many contraction chunks (weights of huge magnitude sums) the scalar int32 loop
# nests are used instead.
MAX_CHUNKS = 16


def input_magnitude(dtype: DType, zero: np.ndarray | None, known: bool) -> int:
    """The largest |x - zero point| of an input of ``dtype`` (the zero point's data when
    ``known``; else any zero point of the type)."""
    info = np.iinfo(dtype.numpy)
    if not known:
        return int(info.max) - int(info.min)
    z = 0 if zero is None else int(np.asarray(zero).reshape(-1)[0])
    return max(z - int(info.min), int(info.max) - z)


def shifted_weights(weights: np.ndarray, zero: np.ndarray | None, axis: int) -> np.ndarray:
    """``weights`` minus their zero point (one, or one per index of ``axis``), as f64."""
    data = weights.astype(np.float64)
    if zero is None:
        return data
    zeros = np.asarray(zero, np.float64).reshape(-1)
    if zeros.size == 1:
        return data - zeros[0]
    shape = [1] * data.ndim
    shape[axis] = zeros.size
    return data - zeros.reshape(shape)


def chunks(rows: np.ndarray, magnitude: int) -> list[tuple[int, int]] | None:
    """The fewest equal ranges [c0, c1) of axis 1 of ``rows`` (shifted weights [M, C, taps]:
    one row per output channel, the contraction as C units of ``taps`` elements) over which
    every output's sum of |weight| * ``magnitude`` stays below 2**24 (so each range's sum is
    exact in f32); None when that takes more than MAX_CHUNKS."""
    units = rows.shape[1]
    if units == 0:
        return [(0, 0)]
    cumulative = np.concatenate(
        [np.zeros((rows.shape[0], 1)), np.cumsum(np.abs(rows).sum(axis=2) * magnitude, axis=1)],
        axis=1)
    for count in range(1, min(units, MAX_CHUNKS) + 1):
        size = -(-units // count)
        ranges = [(c0, min(units, c0 + size)) for c0 in range(0, units, size)]
        if all((cumulative[:, c1] - cumulative[:, c0]).max() < F32_EXACT for c0, c1 in ranges):
            return ranges
    return None


def shifted_input(ctx: LowerContext, x: Buffer, zero: Expr | None, rows: int | Expr,
                  start: int, length: int) -> tuple[Buffer, Stmt]:
    """An f32 scratch [rows, length] holding x - zero point for elements [start, start +
    length) of each of ``x``'s ``rows`` (row-major, equal rows; a run-time row count means
    rows of x's last axis), and the loop filling it."""
    shifted = ctx.scratch("shifted", DType.F32, (rows, length))
    source = Buffer(x.name, x.dtype, (rows, _row_length(x, rows)))

    def body(v: list[Expr]) -> Stmt:
        value = source.load(v[0], v[1] + start).cast(DType.I32)
        if zero is not None:
            value = value - zero.cast(DType.I32)
        return shifted.store(v, value.cast(DType.F32))

    return shifted, nest([rows, length], body, "s", work=extent_mul(rows, length),
                         vectorize_inner=True)


def _row_length(x: Buffer, rows: int | Expr) -> int | Expr:
    """Elements per row of ``x`` seen as ``rows`` equal rows (x's last axis when ``rows`` is
    known only at run time)."""
    return x.numel // rows if isinstance(rows, int) else x.shape[-1]


def epilogue(sums: list[Buffer], out: Buffer, rows: int | Expr,
             store: Callable[[Expr, Expr, Expr], Expr]) -> Stmt:
    """out (flat, ``rows`` x n) = store(total, row, column), total the int32 sum of the
    exact f32 partial sums ``sums`` (each of out's extent); the column loop vectorized."""
    n = _row_length(out, rows)
    flat_out = Buffer(out.name, out.dtype, (rows, n))

    def body(v: list[Expr]) -> Stmt:
        total: Expr | None = None
        for part in sums:
            value = Buffer(part.name, DType.F32, (rows, n)).load(*v).cast(DType.I32)
            total = value if total is None else total + value
        assert total is not None
        return flat_out.store(v, store(total, v[0], v[1]))

    return nest([rows, n], body, "q", work=extent_mul(4, out.numel), vectorize_inner=True)


# ---- u8 x s8 quad tiles (``MatmulTile``'s integer form: vpdpbusd where the target has it) ----

# Rows of an integer tile; its columns are two vectors of int32 lanes.
QUAD_ROWS = 8
# Bytes of B (all its quads, for a block of columns) a task's tiles sweep: kept in cache.
QUAD_BLOCK_BYTES = 96 * 1024


def signed_weights(shifted: np.ndarray) -> np.ndarray | None:
    """The shifted weights (integers) as int8, or None when some do not fit."""
    if shifted.size and (shifted.min() < -128 or shifted.max() > 127):
        return None
    return shifted.astype(np.int8)


def input_offset(dtype: DType) -> int:
    """What makes an 8-bit input unsigned: x + 128 for int8 (the u8 operand of vpdpbusd)."""
    return 128 if dtype is DType.I8 else 0


def as_unsigned(value: Expr, dtype: DType) -> Expr:
    """An 8-bit input value shifted to uint8 (``input_offset``)."""
    if dtype is DType.U8:
        return value
    return (value.cast(DType.I32) + input_offset(dtype)).cast(DType.U8)


def padded_quads(data: np.ndarray) -> np.ndarray:
    """int8 [rows, K] -> [rows, K4]: K zero-padded to a multiple of 4."""
    rows, k = data.shape
    padded = np.zeros((rows, -(-k // 4) * 4), np.int8)
    padded[:, :k] = data
    return padded


def quad_panels(data: np.ndarray, cols: int) -> np.ndarray:
    """int8 [K, N] -> [ceil(N / cols), K4 / 4, cols, 4]: the panels of a constant B of integer
    tiles (zero-padded), each column's 4 consecutive k adjacent."""
    quads = padded_quads(data.T).T  # [K4, N]
    k4, n = quads.shape
    panels = -(-n // cols)
    padded = np.zeros((k4, panels * cols), np.int8)
    padded[:, :n] = quads
    return np.ascontiguousarray(padded.reshape(k4 // 4, 4, panels, cols).transpose(2, 0, 3, 1))


@dataclass(frozen=True)
class QuadOperands:
    """Integer tiles for ``items`` products [m, quads * 4] x [quads * 4, n]: ``a`` rows of
    ``a_row`` bytes; ``b`` panels of ``cols`` columns, panel p of an item at ``p * b_panel``,
    successive quads ``b_quad`` apart; ``bases(item)`` gives each item's (a, b) offsets."""

    a: Buffer
    a_row: int
    b: Buffer
    b_panel: int
    b_quad: int
    bases: Callable[[Expr], tuple[Expr, Expr]]


def quad_product(ctx: LowerContext, ops: QuadOperands, items: int, m: int | Expr, n: int,
                 quads: int, cols: int, store: Callable[[Expr, Expr, Expr], Expr],
                 out: Buffer) -> Stmt:
    """out (flat, items * m rows x n) = store(int32 sum, row, column): a parallel loop over
    tasks (item, column block, row tile), each running its tiles into an int32 scratch, then
    storing its outputs (the column loop vectorized) while they are in cache. A run-time
    ``m`` (one item) runs full row tiles, then the last m % QUAD_ROWS rows as one-row tiles."""
    acc = ctx.scratch("acc", DType.I32, (extent_mul(items, m), n))
    flat_out = Buffer(out.name, out.dtype, (extent_mul(items, m), n))
    row_tiles: int | Expr
    if isinstance(m, int):
        full_rows, row_tail = divmod(m, QUAD_ROWS)
        row_tiles = full_rows + (row_tail > 0)
    else:
        assert items == 1, "a run-time row count has one item"
        row_tiles = (m + (QUAD_ROWS - 1)) // QUAD_ROWS
    panels = -(-n // cols)
    per_block = max(1, min(panels, QUAD_BLOCK_BYTES // max(1, quads * 4 * cols)))
    col_blocks = -(-panels // per_block)
    full_panels, col_tail = divmod(n, cols)
    task = Var("qt")
    item, cb, rt = unravel(task, (items, col_blocks, row_tiles))
    a_base, b_base = ops.bases(item)
    row0 = rt * QUAD_ROWS
    first_row = item * m + row0

    def tiles(rows: int, offset: Expr | None = None) -> Stmt:
        """The tiles of ``rows`` rows from row0 (+ ``offset``)."""
        start, a_row0 = (first_row, row0) if offset is None else (first_row + offset,
                                                                  row0 + offset)

        def tile(panel: Expr, width: int) -> MatmulTile:
            return MatmulTile(acc, start * n + panel * cols, n, ops.a,
                              a_base + a_row0 * ops.a_row, ops.a_row, ops.b,
                              b_base + panel * ops.b_panel, rows, width,
                              (ContractAxis(quads, 4, ops.b_quad),))

        jp = Var("qp")
        stmts: list[Stmt] = []
        if full_panels:
            count: Expr = idx(min(per_block, full_panels))
            if col_blocks > 1:
                count = Binary("min", idx(full_panels) - cb * per_block, idx(per_block))
            stmts.append(Loop(jp, count, tile(cb * per_block + jp, cols)))
        if col_tail:
            last = tile(idx(full_panels), col_tail)
            stmts.append(last if col_blocks == 1 else If(cb.eq(idx(col_blocks - 1)), last))
        return block(stmts)

    if not isinstance(m, int):
        tail = Var("qtail")
        compute: Stmt = If(rt < m // QUAD_ROWS, tiles(QUAD_ROWS),
                           Loop(tail, m - row0, tiles(1, tail)))
        rows_extent: Expr = Binary("min", m - row0, idx(QUAD_ROWS))
    elif full_rows and row_tail:
        compute = If(rt < full_rows, tiles(QUAD_ROWS), tiles(row_tail))
        rows_extent = Binary("min", idx(m) - row0, idx(QUAD_ROWS))
    else:
        rows = QUAD_ROWS if full_rows else row_tail
        compute, rows_extent = tiles(rows), idx(rows)
    col0 = cb * (per_block * cols)
    cols_extent: Expr = idx(min(n, per_block * cols))
    if col_blocks > 1:
        cols_extent = Binary("min", idx(n) - col0, idx(per_block * cols))
    r, j = Var("qr"), Var("qj")
    row, col = first_row + r, col0 + j
    finish = Loop(r, rows_extent, Loop(j, cols_extent, flat_out.store(
        [row, col], store(acc.load(row, col), row, col)), LoopKind.VECTORIZE))
    work = items * work_estimate(m) * n * quads * 4
    kind = LoopKind.PARALLEL if work > PARALLEL_WORK else LoopKind.SERIAL
    count = extent_mul(items * col_blocks, row_tiles)
    return Loop(task, as_index(count), Block((compute, finish)), kind)


def quad_columns(ctx: LowerContext) -> int:
    """Columns of an integer tile: two vectors of int32 lanes (at least 4 lanes)."""
    return 2 * max(4, ctx.machine.vector_bits // 32)
