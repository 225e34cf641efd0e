"""Matrix products for the GPU: MatMul, Gemm, and (through ``Product``) Conv.

A ``Product`` is C[batch, i, j] = sum_k A(batch, i, k) * B(batch, k, j) with operands given
as functions (so transposes, broadcast batch axes and the implicit im2col of a convolution are
just different addressing) and a ``finish`` storing each result (Gemm's alpha/beta/C, a bias).

Schedule (``product_kernel``): a block computes a BM x BN tile of one batch entry with
``threads`` = (BM / TM) x (BN / TN) threads, each owning a TM x TN register tile
(thread-local ``acc``). The contraction runs in steps of BK: a phase where the block loads the
A tile (BK x BM, k-major) and the B tile (BK x BN) into shared memory cooperatively
(consecutive threads read consecutive addresses: along k or i for A, j or k for B, as the
operand is laid out), zero outside the matrices, then a phase where each thread accumulates its
tile from them (operand fragments in thread-local registers). Thread (ty, tx) owns rows
ty + r * (BM / TM) and columns tx + c * (BN / TN) of the block tile: a warp reads consecutive
shared words and stores consecutive columns. A last phase stores the in-bounds elements.
Tiles: TM, TN = 4 for dimensions of 64 or more (2 from 16, else 1); BM, BN up to 64 (the
other one grows to keep at least 64 threads when one dimension is small), at most 256 threads;
BK = 16 (K if smaller).

A product of at most 4 rows and a contraction of 128 or more (a batch-1 fully connected
layer) would leave most of the GPU idle with row tiles: ``split_k_kernel`` spreads the
contraction over the threads of a block instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

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
    LoopKind,
    Stmt,
    Var,
    binary,
    unravel,
)
from ..ops.common import broadcast_index, idx
from ..ops.nn_common import all_of
from ..registry import LowerContext
from .form import BLOCK_VAR, THREAD_VAR, grid_loop, phase

# (value, condition under which it may be loaded (else the element is 0), or None: always)
Element = tuple[Expr, Expr | None]
Operand = Callable[[list[Expr], Expr, Expr], Element]
Finish = Callable[[list[Expr], Expr, Expr, Expr], Stmt]

MAX_TILE = 64
K_TILE = 16
MIN_THREADS, MAX_THREADS = 64, 256
# products of at most SPLIT_ROWS rows and a contraction of SPLIT_K or more: split-K schedule
SPLIT_ROWS, SPLIT_K, SPLIT_THREADS = 4, 128, 256


@dataclass(frozen=True)
class Product:
    """C[batch, i, j] = sum_k a(batch, i, k) * b(batch, k, j) for i < m, j < n, k < k; each
    result goes to ``finish(batch, i, j, value)``; ``dtype`` is the accumulator's type.
    ``a_k_contiguous``: A's consecutive k are adjacent in memory (else its consecutive i are);
    ``b_n_contiguous``: B's consecutive j are (else its consecutive k are)."""

    batch: tuple[int, ...]
    m: int
    n: int
    k: int
    a: Operand
    b: Operand
    finish: Finish
    dtype: DType
    a_k_contiguous: bool = True
    b_n_contiguous: bool = True


@dataclass(frozen=True)
class Tiles:
    tm: int
    tn: int
    ty: int
    tx: int
    bk: int

    @property
    def bm(self) -> int:
        return self.tm * self.ty

    @property
    def bn(self) -> int:
        return self.tn * self.tx

    @property
    def threads(self) -> int:
        return self.tx * self.ty


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def _register_tile(extent: int) -> int:
    return 4 if extent >= 64 else 2 if extent >= 16 else 1


def choose_tiles(m: int, n: int, k: int) -> Tiles:
    """The tile sizes for an m x n x k product (see the module docstring)."""
    tm, tn = _register_tile(m), _register_tile(n)
    ty = min(MAX_TILE // tm, _pow2_at_least(-(-m // tm)))
    tx = min(MAX_TILE // tn, _pow2_at_least(-(-n // tn)))
    # a small dimension lets the other take more threads (up to MAX_THREADS in all)
    while tx * ty < MIN_THREADS and tx * tn < _pow2_at_least(n) and tx * ty < MAX_THREADS:
        tx *= 2
    while tx * ty < MIN_THREADS and ty * tm < _pow2_at_least(m) and tx * ty < MAX_THREADS:
        ty *= 2
    while tx * ty > MAX_THREADS:
        if tx >= ty:
            tx //= 2
        else:
            ty //= 2
    return Tiles(tm, tn, ty, tx, min(K_TILE, k))


def _fill(target: Buffer, at: list[Expr], element: Element, guard: Expr | None) -> Stmt:
    value, cond = element
    cond = all_of([guard, cond])
    store = target.store(at, value.cast(target.dtype))
    if cond is None:
        return store
    return If(cond, store, target.store(at, Const(0.0, target.dtype)))


def _cooperative(threads: int, count: int, make: Callable[[Expr], Stmt], name: str) -> Stmt:
    """Statements of one thread storing its share of ``count`` elements (element e by
    thread e % threads)."""
    rounds = -(-count // threads)
    e = Var(f"{name}_e")
    r = Var(f"{name}_r")
    body: Stmt = make(e)
    if count % threads:
        body = If(e < count, body)
    return Loop(r, idx(rounds), Block((Declare(e, r * threads + THREAD_VAR), body)),
                LoopKind.UNROLL)


def product_kernel(base: Kernel, p: Product) -> Kernel:
    """``base`` (parameters, name) computing the product ``p``: the split-K schedule for a
    few rows and a long contraction, else the tiled one."""
    if p.m <= SPLIT_ROWS and p.k >= SPLIT_K:
        return split_k_kernel(base, p)
    return tiled_kernel(base, p, choose_tiles(p.m, p.n, p.k))


def _element(var: Var, element: Element) -> list[Stmt]:
    """Declare ``var`` as the element's value, zero where its condition fails (the load is
    then not executed)."""
    value, cond = element
    if cond is None:
        return [Declare(var, value.cast(var.dtype))]
    return [Declare(var, Const(0.0, var.dtype)), If(cond, Assign(var, value.cast(var.dtype)))]


def split_k_kernel(base: Kernel, p: Product) -> Kernel:
    """The product of at most ``SPLIT_ROWS`` rows (batch-1 fully connected layers): a block
    computes ``cols`` columns (all rows), its threads split the contraction into ``slices``
    interleaved parts (consecutive threads read consecutive addresses of B: consecutive columns
    when B's columns are contiguous (32 columns x 8 slices), else consecutive k (8 x 32)),
    each accumulating in registers; the partial sums meet in shared memory and one thread per
    column adds them up and stores."""
    th = THREAD_VAR
    if p.b_n_contiguous:
        cols, slices, slice_of, col_of = 32, SPLIT_THREADS // 32, th // 32, th % 32
    else:
        cols, slices, slice_of, col_of = SPLIT_THREADS // 32, 32, th % 32, th // 32
    tiles_n = -(-p.n // cols)
    batches = 1
    for extent in p.batch:
        batches *= extent
    name = base.name
    partial = Buffer(f"{name}_partial", p.dtype, (slices, cols, p.m))
    acc = Buffer(f"{name}_acc", p.dtype, (SPLIT_THREADS, p.m))
    entry, col0, col = Var("gemv_batch"), Var("gemv_col0"), Var("gemv_col")
    step, kq, bv, av = Var("gemv_s"), Var("gemv_k"), Var("gemv_b", p.dtype), Var(
        "gemv_a", p.dtype)
    r, part = Var("gemv_r"), Var("gemv_part")
    batch = unravel(entry, p.batch) if p.batch else []
    rows = idx(p.m)

    def guarded(cond: Expr | None, body: Stmt) -> Stmt:
        return body if cond is None else If(cond, body)

    accumulate = Block((*_element(bv, p.b(batch, kq, col)), Loop(r, rows, Block((
        *_element(av, p.a(batch, r, kq)),
        acc.store([th, r], acc.load(th, r) + av * bv))), LoopKind.UNROLL)))
    in_columns = None if p.n % cols == 0 else col < p.n
    work = phase(SPLIT_THREADS, [
        Declare(col, col0 + col_of),
        Loop(r, rows, acc.store([th, r], Const(0.0, p.dtype)), LoopKind.UNROLL),
        guarded(in_columns, Loop(step, idx(-(-p.k // slices)), Block((
            Declare(kq, step * slices + slice_of),
            guarded(None if p.k % slices == 0 else kq < p.k, accumulate))))),
        Loop(r, rows, partial.store([slice_of, col_of, r], acc.load(th, r)), LoopKind.UNROLL),
    ])
    total = Var("gemv_total", p.dtype)
    first = slice_of.eq(0) if in_columns is None else binary("and", slice_of.eq(0), in_columns)
    finish = phase(SPLIT_THREADS, [
        Declare(col, col0 + col_of),
        If(first, Loop(r, rows, Block((
            Declare(total, Const(0.0, p.dtype)),
            Loop(part, idx(slices), Assign(total, total + partial.load(part, col_of, r))),
            p.finish(batch, r, col, total))))),
    ])
    body = grid_loop(batches * tiles_n, [
        Declare(entry, BLOCK_VAR // tiles_n), Declare(col0, BLOCK_VAR % tiles_n * cols),
        work, finish])
    return replace(base, body=body, shared=(partial,), thread_local=(acc,))


def tiled_kernel(base: Kernel, p: Product, t: Tiles) -> Kernel:
    """``base`` (parameters, name) computing the product ``p`` with the tiled schedule."""
    tiles_m, tiles_n = -(-p.m // t.bm), -(-p.n // t.bn)
    batches = 1
    for extent in p.batch:
        batches *= extent
    name = base.name
    # a padding column where consecutive threads store down a column (fewer bank conflicts)
    a_tile = Buffer(f"{name}_a_tile", p.dtype, (t.bk, t.bm + int(p.a_k_contiguous)))
    b_tile = Buffer(f"{name}_b_tile", p.dtype, (t.bk, t.bn + int(not p.b_n_contiguous)))
    acc = Buffer(f"{name}_acc", p.dtype, (t.threads, t.tm, t.tn))
    a_frag = Buffer(f"{name}_a_frag", p.dtype, (t.threads, t.tm))
    b_frag = Buffer(f"{name}_b_frag", p.dtype, (t.threads, t.tn))
    th = THREAD_VAR

    entry, tile_m, tile_n = Var("gemm_batch"), Var("gemm_tm"), Var("gemm_tn")
    row0, col0, k0 = Var("gemm_row0"), Var("gemm_col0"), Var("gemm_k0")
    batch = unravel(entry, p.batch) if p.batch else []
    uniform: list[Stmt] = [
        Declare(entry, BLOCK_VAR // (tiles_m * tiles_n)),
        Declare(tile_m, BLOCK_VAR % (tiles_m * tiles_n) // tiles_n),
        Declare(tile_n, BLOCK_VAR % tiles_n),
        Declare(row0, tile_m * t.bm),
        Declare(col0, tile_n * t.bn),
    ]
    ty_of, tx_of = th // t.tx, th % t.tx
    r, c, kk = Var("gemm_r"), Var("gemm_c"), Var("gemm_kk")

    def over_tile(make: Callable[[Var, Var], Stmt]) -> Stmt:
        return Loop(r, idx(t.tm), Loop(c, idx(t.tn), make(r, c), LoopKind.UNROLL),
                    LoopKind.UNROLL)

    zero = phase(t.threads, over_tile(
        lambda i, j: acc.store([th, i, j], Const(0.0, p.dtype))))

    def load_tile(tile: Buffer, width: int, extent: int, origin: Expr, k_fast: bool,
                  read: Callable[[Expr, Expr], Element]) -> Callable[[Expr], Stmt]:
        """The copy of element ``e`` of an operand's tile [bk, width] into shared memory: the
        operand's rows ``origin`` on (of ``extent``), ``read(row, k)`` its element."""

        def fill(e: Expr) -> Stmt:
            # consecutive threads read consecutive addresses (along k when ``k_fast``)
            q, x = (e % t.bk, e // t.bk) if k_fast else (e // width, e % width)
            at, kq = origin + x, k0 + q
            guard = all_of([None if extent % width == 0 else at < extent,
                            None if p.k % t.bk == 0 else kq < p.k])
            return _fill(tile, [q, x], read(at, kq), guard)
        return fill

    load_a = load_tile(a_tile, t.bm, p.m, row0, p.a_k_contiguous,
                       lambda row, kq: p.a(batch, row, kq))
    load_b = load_tile(b_tile, t.bn, p.n, col0, not p.b_n_contiguous,
                       lambda col, kq: p.b(batch, kq, col))
    load = phase(t.threads, [_cooperative(t.threads, t.bk * t.bm, load_a, "ga"),
                             _cooperative(t.threads, t.bk * t.bn, load_b, "gb")])
    compute = phase(t.threads, Loop(kk, idx(t.bk), Block((
        Loop(r, idx(t.tm), a_frag.store([th, r], a_tile.load(kk, ty_of + r * t.ty)),
             LoopKind.UNROLL),
        Loop(c, idx(t.tn), b_frag.store([th, c], b_tile.load(kk, tx_of + c * t.tx)),
             LoopKind.UNROLL),
        over_tile(lambda i, j: acc.store(
            [th, i, j], acc.load(th, i, j) + a_frag.load(th, i) * b_frag.load(th, j))),
    ))))
    steps = Loop(Var("gemm_kt"), idx(-(-p.k // t.bk)), Block((
        Declare(k0, Var("gemm_kt") * t.bk), load, compute)))

    def store(i: Var, j: Var) -> Stmt:
        row, col = row0 + ty_of + i * t.ty, col0 + tx_of + j * t.tx
        out = p.finish(batch, row, col, acc.load(th, i, j))
        cond = all_of([None if p.m % t.bm == 0 else row < p.m,
                       None if p.n % t.bn == 0 else col < p.n])
        return out if cond is None else If(cond, out)

    finish = phase(t.threads, over_tile(store))
    body = grid_loop(batches * tiles_m * tiles_n, [*uniform, zero, steps, finish])
    return replace(base, body=body, shared=(a_tile, b_tile),
                   thread_local=(acc, a_frag, b_frag))


def _float32(*buffers: Buffer) -> bool:
    return all(b.dtype is DType.F32 for b in buffers)


def _matrix_index(buffer: Buffer, batch: Sequence[Expr], row: Expr, col: Expr) -> list[Expr]:
    """Index of a matrix operand (rank >= 2) under numpy batch broadcasting."""
    lead = broadcast_index(list(batch), Buffer(buffer.name, buffer.dtype, buffer.shape[:-2]))
    return [*lead, row, col]


def matmul_gpu(ctx: LowerContext) -> list[Kernel] | None:
    """MatMul (numpy semantics: broadcast batch axes, 1-D operands) on f32; other types and
    empty products are bound generically (None)."""
    a, b, out = ctx.input(0), ctx.input(1), ctx.output()
    if not _float32(a, b, out) or out.numel == 0 or a.shape[-1] == 0:
        return None
    has_rows, has_cols = len(a.shape) > 1, len(b.shape) > 1
    m = a.shape[-2] if has_rows else 1
    n = b.shape[-1] if has_cols else 1
    k = a.shape[-1]
    batch = out.shape[:len(out.shape) - has_rows - has_cols]
    if has_rows and batch and len(b.shape) <= 2:
        return [_folded_matmul(ctx, a, b, out)]

    def a_at(bt: list[Expr], i: Expr, q: Expr) -> Element:
        return (a.load(*_matrix_index(a, bt, i, q)) if has_rows else a.load(q)), None

    def b_at(bt: list[Expr], q: Expr, j: Expr) -> Element:
        return (b.load(*_matrix_index(b, bt, q, j)) if has_cols else b.load(q)), None

    def finish(bt: list[Expr], i: Expr, j: Expr, value: Expr) -> Stmt:
        return out.store([*bt, *([i] if has_rows else []), *([j] if has_cols else [])], value)

    product = Product(tuple(batch), m, n, k, a_at, b_at, finish, DType.F32)
    return [product_kernel(ctx.kernel(Block(()), inputs=[a, b]), product)]


def _folded_matmul(ctx: LowerContext, a: Buffer, b: Buffer, out: Buffer) -> Kernel:
    """A batched A times one B: one tall product over A's rows of every batch entry (bigger
    tiles than one product per entry)."""
    rows = a.shape[:-1]
    has_cols = len(b.shape) > 1

    def a_at(_: list[Expr], i: Expr, q: Expr) -> Element:
        return a.load(*unravel(i, rows), q), None

    def b_at(_: list[Expr], q: Expr, j: Expr) -> Element:
        return (b.load(q, j) if has_cols else b.load(q)), None

    def finish(_: list[Expr], i: Expr, j: Expr, value: Expr) -> Stmt:
        return out.store([*unravel(i, rows), *([j] if has_cols else [])], value)

    m = 1
    for extent in rows:
        m *= extent
    product = Product((), m, b.shape[-1] if has_cols else 1, a.shape[-1], a_at, b_at, finish,
                      DType.F32)
    return product_kernel(ctx.kernel(Block(()), inputs=[a, b]), product)


def gemm_gpu(ctx: LowerContext) -> list[Kernel] | None:
    """Gemm: alpha * A' @ B' + beta * C (transposes, C broadcast) on f32."""
    a, b, out = ctx.input(0), ctx.input(1), ctx.output()
    c = ctx.input(2) if ctx.has_input(2) else None
    if not _float32(a, b, out, *([] if c is None else [c])) or 0 in (*a.shape, *out.shape):
        return None
    alpha, beta = float(ctx.attr("alpha")), float(ctx.attr("beta"))
    trans_a, trans_b = bool(ctx.attr("transA")), bool(ctx.attr("transB"))
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]

    def a_at(_: list[Expr], i: Expr, q: Expr) -> Element:
        return (a.load(q, i) if trans_a else a.load(i, q)), None

    def b_at(_: list[Expr], q: Expr, j: Expr) -> Element:
        return (b.load(j, q) if trans_b else b.load(q, j)), None

    def finish(_: list[Expr], i: Expr, j: Expr, value: Expr) -> Stmt:
        if alpha != 1.0:
            value = value * alpha
        if c is not None:
            bias = c.load(*broadcast_index([i, j], c))
            value = value + (bias if beta == 1.0 else bias * beta)
        return out.store([i, j], value)

    product = Product((), m, n, k, a_at, b_at, finish, DType.F32, not trans_a, not trans_b)
    inputs = [a, b, *([] if c is None else [c])]
    return [product_kernel(ctx.kernel(Block(()), inputs=inputs), product)]

