"""The GPU form of the kernel IR: shared / thread-local arrays and BlockReduce in the
interpreter (sequential GPU semantics, race rule) and the printer, and ``check_gpu_form``'s
clear errors for every broken rule of the contract."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from kiln.compiler.errors import ExecutionError
from kiln.compiler.ir.types import DType
from kiln.compiler.lower.gpu import GpuFormError, check_gpu_form
from kiln.compiler.lower.gpu.bind import bind
from kiln.compiler.lower.interpret import run_kernel
from kiln.compiler.lower.kernel_ir import (
    Assign,
    BlockReduce,
    Buffer,
    Const,
    ContractAxis,
    Declare,
    If,
    Kernel,
    Loop,
    LoopKind,
    MatmulTile,
    Stmt,
    Var,
    block,
)
from kiln.compiler.lower.kernel_printer import print_kernel

F32, I64 = DType.F32, DType.I64
THREADS = 8
b, t = Var("b"), Var("t")
x = Buffer("x", F32, (3, THREADS))
y = Buffer("y", F32, (3,))
partial = Buffer("partial", F32, (THREADS,))
tile = Buffer("tile", F32, (THREADS,))


def c(value: int) -> Const:
    return Const(value, I64)


def gpu(body: list[Stmt], grid: int = 3, **arrays: tuple[Buffer, ...]) -> Kernel:
    return Kernel("k", (x,), (y,), Loop(b, c(grid), block(*body), LoopKind.GPU_BLOCK),
                  **arrays)


def phase(*body: Stmt, threads: int = THREADS) -> Loop:
    return Loop(t, c(threads), block(*body), LoopKind.GPU_THREAD)


def row_sum(op: str = "add") -> Kernel:
    """y[b] = fold of x[b, :] by a block reduction; thread 0 stores it."""
    total = Var("total", F32)
    return gpu([
        phase(partial.store([t], x.load(b, t))),
        Declare(total, Const(0.0, F32)),
        BlockReduce(partial, op, total),
        phase(If(t.eq(0), y.store([b], total))),
    ], thread_local=(partial,))


@pytest.mark.parametrize("op,fold", [("add", np.sum), ("max", np.max), ("min", np.min)])
def test_block_reduce(op: str, fold: object) -> None:
    data = np.random.default_rng(0).standard_normal((3, THREADS)).astype(np.float32)
    kernel = row_sum(op)
    assert check_gpu_form(kernel) == (3, THREADS)
    got = run_kernel(kernel, {"x": data})["y"]
    np.testing.assert_allclose(got, fold(data, axis=1), rtol=1e-6)  # type: ignore[operator]


def test_shared_memory_between_phases() -> None:
    """Each thread reads what its neighbour stored in shared memory in the previous phase."""
    data = np.arange(3 * THREADS, dtype=np.float32).reshape(3, THREADS)
    out = Buffer("out", F32, (3, THREADS))
    kernel = Kernel("k", (x,), (out,), Loop(b, c(3), block(
        phase(tile.store([t], x.load(b, t))),
        phase(out.store([b, t], tile.load((t + 1) % THREADS))),
    ), LoopKind.GPU_BLOCK), shared=(tile,))
    check_gpu_form(kernel)
    np.testing.assert_array_equal(run_kernel(kernel, {"x": data})["out"],
                                  np.roll(data, -1, axis=1))


def test_shared_memory_starts_undefined() -> None:
    """A block reading shared memory nobody wrote sees garbage (NaN), not zeros."""
    kernel = gpu([phase(If(t.eq(0), y.store([b], tile.load(0))))], shared=(tile,))
    assert np.isnan(run_kernel(kernel, {"x": np.zeros((3, THREADS), np.float32)})["y"]).all()


def test_race_two_writers_detected() -> None:
    kernel = gpu([phase(y.store([b], x.load(b, t)))])
    with pytest.raises(ExecutionError, match="data race on y"):
        run_kernel(kernel, {"x": np.ones((3, THREADS), np.float32)})


def test_race_between_blocks_detected() -> None:
    """Blocks never synchronize: one block reading what another wrote is a race too."""
    kernel = gpu([phase(If(t.eq(0), y.store([b], x.load(b, 0) + y.load((b + 1) % 3))))])
    with pytest.raises(ExecutionError, match="data race on y.*GPU block"):
        run_kernel(kernel, {"x": np.ones((3, THREADS), np.float32)})


def test_race_read_of_another_threads_write_detected() -> None:
    kernel = gpu([phase(tile.store([t], x.load(b, t)), If(t > 0, y.store(
        [b], tile.load(t - 1))))], shared=(tile,))
    with pytest.raises(ExecutionError, match="data race on tile"):
        run_kernel(kernel, {"x": np.ones((3, THREADS), np.float32)})


def test_thread_local_of_another_thread_detected() -> None:
    kernel = gpu([phase(partial.store([(t + 1) % THREADS], 1.0)),
                  phase(If(t.eq(0), y.store([b], partial.load(t))))], thread_local=(partial,))
    with pytest.raises(GpuFormError, match="first index"):
        check_gpu_form(kernel)
    with pytest.raises(ExecutionError, match="thread-local partial of thread"):
        run_kernel(kernel, {"x": np.ones((3, THREADS), np.float32)})


def test_printer_shows_gpu_constructs() -> None:
    text = print_kernel(row_sum())
    assert "thread_local %partial: f32[8]" in text
    assert "gpu_block for b in 0..3 {" in text
    assert "gpu_thread for t in 0..8 {" in text
    assert "total = block_reduce<add>(%partial)" in text


def test_block_reduce_validates() -> None:
    with pytest.raises(ValueError, match="unknown block reduction"):
        BlockReduce(partial, "mul", Var("v", F32))
    with pytest.raises(ValueError, match="local's type"):
        BlockReduce(partial, "add", Var("v", I64))


def _broken(kernel: Kernel, message: str) -> None:
    with pytest.raises(GpuFormError, match=message):
        check_gpu_form(kernel)


def test_check_gpu_form_errors() -> None:
    good = row_sum()
    _broken(replace(good, body=good.body.body), "one GPU_BLOCK loop")  # type: ignore[attr-defined]
    _broken(gpu([y.store([b], 1.0)]), "uniform statement")
    _broken(gpu([phase(If(t.eq(0), y.store([b], 1.0)), threads=2048)]), "2048 threads")
    _broken(gpu([phase(If(t.eq(0), y.store([b], 1.0))),
                 phase(If(t.eq(0), y.store([b], 2.0)), threads=4)]), "8 and 4")
    _broken(gpu([Declare(Var("v", F32), Const(0.0, F32))]), "no GPU_THREAD loop")
    v = Var("v", F32)
    _broken(gpu([Declare(v, Const(0.0, F32)), phase(Assign(v, x.load(b, t)))]),
            "assigns v")
    _broken(gpu([phase(Loop(Var("i"), c(2), y.store([b], 1.0), LoopKind.PARALLEL))]),
            "parallel loop")
    _broken(gpu([phase(phase(If(t.eq(0), y.store([b], 1.0))))]), "gpu_thread loop")
    _broken(gpu([phase(partial.store([t], 1.0))], thread_local=(Buffer("p", F32, (4,)),
                                                                 partial)), "4 rows")
    _broken(gpu([phase(tile.store([t], 1.0)), Declare(v, Const(0.0, F32)),
                 BlockReduce(tile, "add", v)], shared=(tile,)), "not a \\(threads,\\) thread")
    matmul = MatmulTile(y, c(0), 1, x, c(0), 1, x, c(0), 1, 1, (ContractAxis(1, 1, 1),))
    _broken(gpu([phase(matmul)]), "matmul tile")


def test_bind_makes_any_kernel_gpu_form() -> None:
    """A CPU kernel with a parallel loop, a vectorized loop and a matmul tile, bound: one GPU
    kernel per top-level statement, the same results."""
    i, j = Var("i"), Var("j")
    out = Buffer("out", F32, (3, THREADS))
    square = Buffer("sq", F32, (THREADS, THREADS))
    cpu = Kernel("cpu", (x, square), (out,), block(
        Loop(i, c(3), Loop(j, c(THREADS), out.store([i, j], x.load(i, j) * 2.0),
                           LoopKind.VECTORIZE), LoopKind.PARALLEL),
        Loop(i, c(3), MatmulTile(out, i * THREADS, THREADS, x, i * THREADS, THREADS, square,
                                 c(0), 1, THREADS, (ContractAxis(THREADS, 1, THREADS),),
                                 accumulate=True)),
    ))
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((3, THREADS)).astype(np.float32),
             "sq": rng.standard_normal((THREADS, THREADS)).astype(np.float32)}
    want = feeds["x"] * 2.0 + feeds["x"].astype(np.float64) @ feeds["sq"]
    memory = dict(feeds)
    bound = bind(cpu)
    assert len(bound) == 2
    grid, threads = check_gpu_form(bound[0])  # the elementwise nest: a thread per element
    assert grid * threads >= 3 * THREADS
    for kernel in bound:
        check_gpu_form(kernel)
        memory.update(run_kernel(kernel, {n: a for n, a in memory.items()
                                          if n in {p.name for p in kernel.params}}))
    np.testing.assert_allclose(memory["out"], want, rtol=1e-5, atol=1e-6)
