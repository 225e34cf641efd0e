"""Schedules of the tiled convolutions: tile shape, contraction chunk and parallel task size.

Three families share ``ConvSchedule``; what its fields count depends on the family (``kind`` of
the ``ConvShape``):

- ``"blocked"``: ConvNCHWc with group 1 (channel-blocked or plain NCHW input). A tile is
  ``rows`` output pixels x ``cols`` output-channel blocks (``cols * block`` lanes); each pass
  over the contraction covers ``k_chunk`` input-channel blocks (input channels for a plain
  input; 0: all of them); a parallel task computes ``task_rows`` output rows of one image and
  one group of ``cols`` channel blocks.
- ``"depthwise"``: ConvNCHWc with one input channel per group: no tile; a task computes
  ``task_rows`` output rows of one channel block (``rows``, ``cols``, ``k_chunk`` unused).
- ``"plain"``: Conv on NCHW tensors as a GEMM with the output channels as rows: a tile is
  ``rows`` output channels x ``cols`` vectors of output pixels; ``k_chunk`` input channels per
  contraction pass; a task computes ``task_rows`` output rows (pixels) of one image and group,
  for ``task_blocks`` blocks of ``rows`` output channels (0: all of them).

The cost model (``default``) counts vector multiply-add cycles of every tile the lowering will
emit, partial tiles at row and channel ends included, with the register budget of the machine
(accumulators plus one B row plus a broadcast must fit), and sizes contraction chunks so that
the weights a chunk reads stay in L2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ...ir.types import DType
from ...machine import Machine
from . import choose as choose_tuned

# FMA latency in cycles over the issue rate: fewer independent accumulators stall.
_MIN_ACCUMULATORS = 4
_MAX_TILE_ROWS = 16
_MAX_TILE_VECTORS = 4
# Fewest parallel tasks worth having (two or more threads, some balance).
MIN_TASKS = 8
# Several output blocks per tile need weights packed at compile time (a second copy of them
# while anything else reads the original) and measured no faster on znver4 (ResNet-50 layers:
# 16 x 1 vector and 14 x 2 or 8 x 3 tiles all within noise of 95-105 GFLOP/s): they are chosen
# only when the cost model expects them to be this much faster.
_PACKED = 1.03


@dataclass(frozen=True)
class ConvSchedule:
    rows: int
    cols: int
    k_chunk: int
    task_rows: int
    task_blocks: int = 0


@dataclass(frozen=True)
class ConvShape:
    """What a convolution's schedule depends on. ``in_channels`` / ``out_channels`` count
    channels of one group (blocked: padded to whole blocks); ``block`` is 0 for "plain"."""

    kind: str
    dtype: DType
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    block: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, ...]
    plain_input: bool = False
    # constant weights, which the lowering may re-pack for tiles of several output blocks
    packable: bool = True

    @property
    def flat(self) -> bool:
        """Tiles may run across output rows: consecutive output pixels read consecutive input
        pixels (stride 1, one kernel column, no column padding)."""
        return (self.strides == (1, 1) and self.kernel[1] == 1 and self.pads[1] == 0
                and self.pads[3] == 0 and self.in_size[1] == self.out_size[1])

    @property
    def taps(self) -> int:
        return self.kernel[0] * self.kernel[1]


def signature(shape: ConvShape) -> str:
    s = shape
    text = (f"conv {s.kind} {s.dtype.value} n={s.batch} c={s.in_channels} m={s.out_channels} "
            f"g={s.groups} in={s.in_size[0]}x{s.in_size[1]} out={s.out_size[0]}x"
            f"{s.out_size[1]} k={s.kernel[0]}x{s.kernel[1]} s={s.strides[0]}x{s.strides[1]} "
            f"d={s.dilations[0]}x{s.dilations[1]} p={','.join(map(str, s.pads))}")
    if s.block:
        text += f" b={s.block}"
    return text + (" nchw-in" if s.plain_input else "") + ("" if s.packable else " w=var")


def lanes_of(machine: Machine, dtype: DType) -> int:
    """Elements of ``dtype`` per vector register."""
    return max(1, machine.f32_lanes * 4 // dtype.itemsize)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _step_cycles(rows: int, vectors: int) -> float:
    """Cycles of one contraction step of a rows x vectors tile: its FMAs, at least the FMA
    latency, at least the loads (two per cycle), plus the loop's own work."""
    return max(rows * vectors, _MIN_ACCUMULATORS, (rows + vectors) / 2) + 0.5


def _line_cycles(length: int, rows: int, vectors: int, steps: int) -> float:
    """Cycles of the tiles covering ``length`` tile rows: full tiles and one partial."""
    full, rest = divmod(length, rows)
    cycles = full * (_step_cycles(rows, vectors) * steps + 3 * rows * vectors)
    if rest:
        cycles += _step_cycles(rest, vectors) * steps + 3 * rest * vectors
    return cycles


def _max_rows(machine: Machine, vectors: int) -> int:
    return max(1, min(_MAX_TILE_ROWS, (machine.vector_registers - vectors - 1) // vectors))


def _blocked_tiles(machine: Machine, shape: ConvShape) -> list[tuple[float, int, int]]:
    """(estimated cycles, rows, col blocks) for every tile shape that fits the registers."""
    lanes = lanes_of(machine, shape.dtype)
    b = shape.block
    per_block = -(-b // lanes)
    out_blocks = shape.out_channels // b
    # Several blocks per tile only when a block is whole vectors (else the tile goes scalar).
    max_cols = max(1, _MAX_TILE_VECTORS // per_block) if b % lanes == 0 else 1
    if not shape.packable:
        max_cols = 1
    line = shape.out_size[1] * (shape.out_size[0] if shape.flat else 1)
    lines = 1 if shape.flat else shape.out_size[0]
    steps = shape.in_channels * shape.taps
    found = []
    for cols in range(1, min(max_cols, out_blocks) + 1):
        groups, rest = divmod(out_blocks, cols)
        for rows in range(1, _max_rows(machine, cols * per_block) + 1):
            cycles = groups * _line_cycles(line, rows, cols * per_block, steps)
            if rest:
                cycles += _line_cycles(line, rows, rest * per_block, steps)
            penalty = _PACKED if cols > 1 and not shape.plain_input else 1.0
            found.append((cycles * lines * penalty, rows, cols))
    found.sort(key=lambda t: (t[0], -t[1] * t[2]))
    return found


def _k_chunk(machine: Machine, shape: ConvShape, col_bytes: int, units: int,
             unit_channels: int) -> int:
    """The most contraction units (channel blocks or channels) whose weights for one tile
    column group fit in half of L2, a divisor of ``units``; 0 when all of them fit."""
    per_unit = unit_channels * shape.taps * col_bytes
    fitting = [d for d in divisors(units) if d * per_unit <= machine.l2_bytes // 2]
    best = max(fitting, default=1)
    return 0 if best == units else best


def _task_rows(shape: ConvShape, tasks_per_row: int, chunked: bool) -> int:
    """Output rows per parallel task: one (many small tasks balance the threads), all of them
    when the contraction is chunked (each chunk of weights then serves the whole image), whole
    divisors of the height for flat convs (a tile row spans the task's rows)."""
    height = shape.out_size[0]
    if shape.flat:
        # Long tile rows (fewer partial tiles), keeping enough tasks to share out.
        target = max(1, min(height, 256 // max(1, shape.out_size[1])))
        while tasks_per_row * (height // target) < MIN_TASKS and target > 1:
            target -= 1
        return max(d for d in divisors(height) if d <= target)
    return height if chunked else 1


def _blocked_default(machine: Machine, shape: ConvShape, rows: int, cols: int) -> ConvSchedule:
    item = shape.dtype.itemsize
    col_bytes = cols * shape.block * item
    if shape.plain_input:
        chunk = _k_chunk(machine, shape, col_bytes, shape.in_channels, 1)
    else:
        chunk = _k_chunk(machine, shape, col_bytes, shape.in_channels // shape.block,
                         shape.block)
    groups = -(-(shape.out_channels // shape.block) // cols)
    return ConvSchedule(rows, cols, chunk, _task_rows(shape, groups * shape.batch, chunk > 0))


def plain_row_pixels(shape: ConvShape) -> int:
    """Pixels of one output row as the plain lowering computes them: over the width of the
    padded input's phase planes (the columns past the output width are computed and
    dropped), except for windows both strided and dilated (im2col)."""
    if shape.strides != (1, 1) and shape.dilations != (1, 1):
        return shape.out_size[1]
    return shape.out_size[1] + (shape.kernel[1] - 1) * shape.dilations[1] // shape.strides[1]


def plain_chunks(shape: ConvShape, task_rows: int) -> list[tuple[int, int]]:
    """(pixels, how many) of the plain lowering's task pixel ranges of ``task_rows`` output
    rows: the middle ones, and the last (which ends at the last output pixel)."""
    row, height = plain_row_pixels(shape), shape.out_size[0]
    chunks = -(-height // task_rows)
    last = (height - (chunks - 1) * task_rows - 1) * row + shape.out_size[1]
    return [(task_rows * row, chunks - 1), (last, 1)]


def _plain_task_rows(shape: ConvShape, lanes: int, vectors: int) -> int:
    """Output rows per task: enough pixels for four tiles (fewer partial tiles), at most all."""
    row, height = plain_row_pixels(shape), shape.out_size[0]
    wanted = max(1, min(height, -(-(vectors * lanes * 4) // row)))
    tasks = -(-height // wanted)
    return -(-height // tasks)


def _plain_tiles(machine: Machine, shape: ConvShape) -> list[tuple[float, int, int]]:
    lanes = lanes_of(machine, shape.dtype)
    steps = shape.in_channels * shape.taps
    found = []
    for vectors in range(1, _MAX_TILE_VECTORS + 1):
        chunks = plain_chunks(shape, _plain_task_rows(shape, lanes, vectors))
        for rows in range(1, _max_rows(machine, vectors) + 1):
            cycles = 0.0
            for pixels, count in chunks:
                tiles, rest = divmod(pixels, vectors * lanes)
                cycles += count * tiles * _line_cycles(shape.out_channels, rows, vectors, steps)
                if rest:
                    cycles += count * _line_cycles(shape.out_channels, rows,
                                                   -(-rest // lanes), steps)
            found.append((cycles, rows, vectors))
    found.sort(key=lambda t: (t[0], -t[1] * t[2]))
    return found


def _plain_default(machine: Machine, shape: ConvShape, rows: int, vectors: int) -> ConvSchedule:
    lanes = lanes_of(machine, shape.dtype)
    task_rows = _plain_task_rows(shape, lanes, vectors)
    # The B panel of a task's pixels over one contraction chunk stays in L2.
    pixel_bytes = plain_chunks(shape, task_rows)[0][0] * shape.dtype.itemsize
    chunk = _k_chunk(machine, shape, max(pixel_bytes, 1), shape.in_channels, 1)
    # Few pixel tasks (small images): split the output channels too.
    tasks = shape.batch * shape.groups * -(-shape.out_size[0] // task_rows)
    blocks = -(-shape.out_channels // rows)
    task_blocks = 0
    if tasks < MIN_TASKS and blocks > 1:
        task_blocks = -(-blocks // min(blocks, -(-MIN_TASKS // tasks)))
    return ConvSchedule(rows, vectors, chunk, task_rows, task_blocks)


def default(machine: Machine, shape: ConvShape) -> ConvSchedule:
    if shape.kind == "depthwise":
        return ConvSchedule(1, 1, 0, 1)
    if shape.kind == "plain":
        _, rows, vectors = _plain_tiles(machine, shape)[0]
        return _plain_default(machine, shape, rows, vectors)
    _, rows, cols = _blocked_tiles(machine, shape)[0]
    return _blocked_default(machine, shape, rows, cols)


def candidates(machine: Machine, shape: ConvShape) -> list[ConvSchedule]:
    """The default, the next best tile shapes by the cost model, and contraction / task
    variants of the default."""
    best = default(machine, shape)
    if shape.kind == "depthwise":
        rows = sorted({1, 2, 4, shape.out_size[0]})
        return [best, *(ConvSchedule(1, 1, 0, r) for r in rows if r != best.task_rows)]
    if shape.kind == "plain":
        tiles = _plain_tiles(machine, shape)[1:6]
        found = [best, *(_plain_default(machine, shape, r, v) for _, r, v in tiles)]
    else:
        tiles = _blocked_tiles(machine, shape)[1:6]
        found = [best, *(_blocked_default(machine, shape, r, c) for _, r, c in tiles)]
    units = (shape.in_channels if shape.kind == "plain" or shape.plain_input
             else shape.in_channels // shape.block)
    chunks = [d for d in divisors(units) if d < units]
    for chunk in ([0] if best.k_chunk else []) + chunks[-2:]:
        found.append(replace(best, k_chunk=chunk))
    height = shape.out_size[0]
    for task_rows in (1, 2, height):
        if shape.flat and shape.kind == "blocked" and height % task_rows:
            continue
        found.append(replace(best, task_rows=task_rows))
    unique = list(dict.fromkeys(found))
    return unique[:12]


def choose(machine: Machine, shape: ConvShape) -> ConvSchedule:
    """The tuned schedule of ``shape`` if ``machine`` has one, else the cost model's; both
    checked by ``valid`` (a stale tuning entry falls back to the default)."""
    best, key = default(machine, shape), signature(shape)
    tuned = machine.tuned.get(key)
    if tuned is not None:
        try:
            usable = valid(shape, replace(best, **dict(tuned)))
        except TypeError:
            usable = False
        if not usable:
            machine = machine.with_tuned({k: v for k, v in machine.tuned.items() if k != key})
    return choose_tuned(machine, key, best, candidates(machine, shape))


def valid(shape: ConvShape, schedule: ConvSchedule) -> bool:
    """Whether the lowering can use ``schedule`` for ``shape`` as it stands."""
    s = schedule
    if min(s.rows, s.cols, s.task_rows) < 1 or min(s.k_chunk, s.task_blocks) < 0:
        return False
    if shape.kind == "depthwise":
        return True
    if shape.kind == "plain" or shape.plain_input:
        units = shape.in_channels
    else:
        units = shape.in_channels // shape.block
    if s.k_chunk and units % s.k_chunk:
        return False
    if shape.kind == "blocked" and shape.flat and shape.out_size[0] % s.task_rows:
        return False
    if shape.kind == "blocked" and not shape.packable and s.cols > 1:
        return False
    return math.prod((s.rows, s.cols)) <= 64
