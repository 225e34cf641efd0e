"""Schedules of the tiled matrix product (MatMul, Gemm): register tile, K and N blocks.

The lowering (compiler/lower/ops/nn_matmul.py) runs, outermost first: parallel tasks over
(batch, block of ``n_block`` columns, tile of ``rows`` rows) -> K blocks of ``k_block`` steps
-> B panels of ``cols`` columns in the column block -> one ``MatmulTile`` (rows x cols). One
A micro-panel (rows x k_block) is reused from L1 across the column block while B's panels
stream from L2 (where the column block stays for the next row tile) or L3.

The cost model:
- register tile: ``rows`` x ``vectors`` accumulators plus the B row's ``vectors`` and one
  broadcast A element fit in the vector registers but one; among those, the most FMAs per loaded
  vector (rows * vectors / (rows + vectors)), weighted by the lanes the product's N and M
  tails leave busy (at most 4 vectors: wider tiles waste lanes on common N and gain little).
- ``k_block``: the A micro-panel takes at most a quarter of L1, so the streaming B panels do
  not evict it; K is cut into equal blocks (the first one takes the remainder).
- ``n_block``: B's k_block x n_block block takes at most half of L2; fewer columns when that
  gives too few parallel tasks (a GEMV has one row tile: its parallelism is across columns).
- ``pack_b`` (B not constant: a constant B is always packed at compile time): copy B into
  panels at run time when it spans several panels and does not fit in half of L2 (its rows,
  a row stride apart, would conflict in the caches) and enough row tiles reuse the copy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ...ir.types import DType
from ...machine import Machine
from . import choose

# Fewest parallel tasks a large product is split into (2+ threads, with some balance).
MIN_TASKS = 8
# Products with fewer multiply-adds than this are not worth splitting into tasks.
SPLIT_WORK = 1 << 21
# Widest register tile, in vectors (see the module docstring).
MAX_VECTORS = 4
# Tallest register tile: each row is one more A stream (rows lie a row stride apart).
MAX_ROWS = 12
# Registers the tile leaves free (LLVM spills a tile that takes them all: 4x24 on AVX2).
SPARE_REGISTERS = 1
F32_BYTES = 4


def ceil_div(x: int, y: int) -> int:
    return (x + y - 1) // y


@dataclass(frozen=True)
class GemmSchedule:
    rows: int  # register tile rows (MR)
    cols: int  # register tile columns (NR): B panel width, a multiple of the vector lanes
    k_block: int  # contraction steps per tile (KC)
    n_block: int  # columns per parallel task (NC), a multiple of cols
    pack_b: bool = False  # a non-constant B is copied into panels at run time

    def fitted(self, m: int, n: int, k: int) -> GemmSchedule:
        """The schedule clamped to the product's extents, K cut into equal blocks."""
        rows = max(1, min(self.rows, m))
        cols = max(1, self.cols)
        blocks = ceil_div(k, max(1, min(self.k_block, k)))
        panels = max(1, self.n_block // cols)
        return GemmSchedule(rows, cols, ceil_div(k, blocks),
                            min(panels, ceil_div(n, cols)) * cols, bool(self.pack_b))


def signature(dtype: DType, batch: int, m: int, n: int, k: int, b_constant: bool) -> str:
    return (f"gemm {dtype.value} batch={batch} m={m} n={n} k={k} "
            f"b={'const' if b_constant else 'var'}")


def _tiles(machine: Machine, m: int, n: int) -> list[tuple[float, int, int]]:
    """(score, rows, vectors) of every register tile that fits, best first."""
    lanes = machine.f32_lanes
    found = []
    for vectors in range(1, min(MAX_VECTORS, ceil_div(n, lanes)) + 1):
        for rows in range(1, min(MAX_ROWS, m) + 1):
            if rows * vectors + vectors + 1 > machine.vector_registers - SPARE_REGISTERS:
                break
            width = vectors * lanes
            col_use = n / (ceil_div(n, width) * width)
            row_use = m / (ceil_div(m, rows) * rows)
            intensity = rows * vectors / (rows + vectors)
            found.append((intensity * col_use * row_use, rows, vectors))
    found.sort(key=lambda t: (-t[0], -t[1] * t[2]))
    return found


def _blocks(machine: Machine, batch: int, m: int, n: int, k: int, rows: int,
            cols: int) -> tuple[int, int]:
    """(k_block, n_block) for a register tile, per the module docstring."""
    k_block = max(1, min(k, machine.l1_bytes // 4 // (F32_BYTES * rows)))
    k_block = ceil_div(k, ceil_div(k, k_block))
    panels = max(1, machine.l2_bytes // 2 // (F32_BYTES * k_block * cols))
    all_panels = ceil_div(n, cols)
    panels = min(panels, all_panels)
    row_tasks = batch * ceil_div(m, rows)
    tasks = row_tasks * ceil_div(all_panels, panels)
    if batch * m * n * k > SPLIT_WORK and tasks < MIN_TASKS:
        wanted = ceil_div(MIN_TASKS, row_tasks)
        panels = max(1, min(panels, all_panels // wanted))
    return k_block, panels * cols


def _pack_b(machine: Machine, m: int, n: int, k: int, b_constant: bool, rows: int,
            cols: int) -> bool:
    return (not b_constant and n > cols and F32_BYTES * k * n > machine.l2_bytes // 2
            and m >= MIN_TASKS * rows)


def _schedule(machine: Machine, batch: int, m: int, n: int, k: int, b_constant: bool,
              rows: int, vectors: int) -> GemmSchedule:
    cols = vectors * machine.f32_lanes
    return GemmSchedule(rows, cols, *_blocks(machine, batch, m, n, k, rows, cols),
                        _pack_b(machine, m, n, k, b_constant, rows, cols)).fitted(m, n, k)


def default(machine: Machine, batch: int, m: int, n: int, k: int,
            b_constant: bool) -> GemmSchedule:
    _, rows, vectors = _tiles(machine, m, n)[0]
    return _schedule(machine, batch, m, n, k, b_constant, rows, vectors)


def candidates(machine: Machine, batch: int, m: int, n: int, k: int,
               b_constant: bool) -> list[GemmSchedule]:
    """The default; (B not constant) it with the other choice of packing B; the next register
    tiles; the default tile with half / twice the K block, half / all the columns per block."""
    base = default(machine, batch, m, n, k, b_constant)
    found = [base]
    if not b_constant:
        found.append(replace(base, pack_b=not base.pack_b))
    for _, rows, vectors in _tiles(machine, m, n)[1:4]:
        found.append(_schedule(machine, batch, m, n, k, b_constant, rows, vectors))
    half_block = max(base.cols, base.n_block // 2)
    found += [replace(base, k_block=base.k_block // 2), replace(base, k_block=base.k_block * 2),
              replace(base, n_block=half_block), replace(base, n_block=n),
              replace(base, k_block=base.k_block // 2, n_block=half_block)]
    unique = []
    for schedule in (s.fitted(m, n, k) for s in found):
        if schedule not in unique:
            unique.append(schedule)
    return unique


def schedule(machine: Machine, dtype: DType, batch: int, m: int, n: int, k: int,
             b_constant: bool) -> GemmSchedule:
    """The tuned schedule of this product if it is one of the candidates, else the cost
    model's."""
    return choose(machine, signature(dtype, batch, m, n, k, b_constant),
                  default(machine, batch, m, n, k, b_constant),
                  candidates(machine, batch, m, n, k, b_constant))
