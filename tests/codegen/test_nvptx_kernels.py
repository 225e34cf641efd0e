"""NVPTX code generation of hand-built kernels in GPU form: every PTX module passes ptxas for
sm_80 and sm_90, has the shape the contract asks for (bar.sync between phases, shfl.sync in
block reductions, static .shared arrays, the error word for Report), and kernels that break the
GPU form get a clear error naming them. (Kernels built by the GPU schedules are covered by
test_nvptx_models.py; running PTX needs a GPU: @pytest.mark.gpu there.)"""

from __future__ import annotations

import re

import pytest

from kiln.compiler.codegen.llvm import create_module
from kiln.compiler.codegen.nvptx.kernel import (
    LaunchConfig,
    bind_to_gpu,
    emit_gpu_kernel,
    launch_config,
)
from kiln.compiler.codegen.nvptx.libdevice import libdevice_path
from kiln.compiler.codegen.nvptx.ptx import (
    compile_kernel,
    parse_ptxas_report,
    ptxas_path,
    run_ptxas,
)
from kiln.compiler.codegen.target import CodegenError, Target
from kiln.compiler.ir.types import DType
from kiln.compiler.lower.gpu import GpuFormError
from kiln.compiler.lower.kernel_ir import (
    BINARY_OPS,
    COMPARE_OPS,
    UNARY_OPS,
    Assign,
    Binary,
    Block,
    BlockReduce,
    Buffer,
    Cast,
    Compare,
    Const,
    Declare,
    Expr,
    If,
    Kernel,
    Loop,
    LoopKind,
    Report,
    Select,
    Stmt,
    Unary,
    Var,
)

F32, F64, I64 = DType.F32, DType.F64, DType.I64
needs_ptxas = pytest.mark.skipif(ptxas_path() is None, reason="ptxas (CUDA toolkit) not installed")
ARCHES = ("sm_80", "sm_90")


def _gpu(grid: int, b: Var, *body: Stmt) -> Loop:
    """A kernel body in GPU form: ``grid`` blocks running ``body`` (phases and uniform
    statements)."""
    return Loop(b, Const(grid, I64), Block(body), LoopKind.GPU_BLOCK)


def _phase(t: Var, threads: int, body: Stmt) -> Loop:
    return Loop(t, Const(threads, I64), body, LoopKind.GPU_THREAD)


def _elementwise(n: int = 1000, threads: int = 128) -> Kernel:
    x, y = Buffer("x", F32, (n,)), Buffer("y", F32, (n,))
    b, t = Var("b"), Var("t")
    i = b * threads + t
    grid = -(-n // threads)
    body = _gpu(grid, b, _phase(t, threads, If(i < n, y.store(
        [i], Unary("tanh", x.load(i)) + Unary("exp", x.load(i))))))
    return Kernel("ew", (x,), (y,), body)


def _row_reduce(op: str, dtype: DType, threads: int, rows: int = 4, cols: int = 300,
                unary: str | None = None) -> Kernel:
    """One block per row: each thread folds a strided slice, BlockReduce, thread 0 stores."""
    x, y = Buffer("x", dtype, (rows, cols)), Buffer("y", dtype, (rows,))
    part = Buffer("part", dtype, (threads,))
    b, t, k = Var("b"), Var("t"), Var("k")
    acc, total = Var("acc", dtype), Var("total", dtype)
    start = {"add": 0, "max": float("-inf"), "min": float("inf")}[op]
    init = Const(start if dtype.is_float else int(0 if op == "add" else -(2**31)
                                                   if op == "max" else 2**31 - 1), dtype)
    steps = -(-cols // threads)
    col = k * threads + t
    value = x.load(b, col)
    if unary is not None:
        value = Unary(unary, value)
    fold = {"add": lambda a, v: a + v, "max": lambda a, v: _bin("max", a, v),
            "min": lambda a, v: _bin("min", a, v)}[op]
    phase1 = Block((Declare(acc, init),
                    Loop(k, Const(steps, I64), If(col < cols, Assign(acc, fold(acc, value)))),
                    part.store([t], acc)))
    body = _gpu(rows, b,
                _phase(t, threads, phase1),
                Declare(total, init),
                BlockReduce(part, op, total),
                _phase(t, threads, If(t.eq(0), y.store([b], total))))
    return Kernel(f"reduce_{op}_{dtype.value}_{threads}", (x,), (y,), body,
                  thread_local=(part,))


def _bin(op: str, a: Expr, b: Expr) -> Expr:
    return Binary(op, a, b)


def _transpose_tile(n: int = 32) -> Kernel:
    """Stage a tile in shared memory, barrier, write it transposed (reads other threads'
    writes: needs the barrier between the two phases)."""
    x, y = Buffer("x", F32, (n, n)), Buffer("y", F32, (n, n))
    tile = Buffer("tile", F32, (n, n + 1))
    b, t, r = Var("b"), Var("t"), Var("r")
    load = Loop(r, Const(n, I64), tile.store([r, t], x.load(r, t)))
    store = Loop(r, Const(n, I64), y.store([r, t], tile.load(t, r)))
    body = _gpu(1, b, _phase(t, n, load), _phase(t, n, store))
    return Kernel("transpose", (x,), (y,), body, shared=(tile,))


def _gather_report() -> Kernel:
    table, ids, out = Buffer("table", F32, (10,)), Buffer("ids", I64, (64,)), Buffer(
        "out", F32, (64,))
    b, t = Var("b"), Var("t")
    i = ids.load(t)
    bad = Report("Gather node g: index out of range")
    guarded = If(i < 10, If(i >= 0, out.store([t], table.load(i)), bad), bad)
    body = _gpu(1, b, _phase(t, 64, guarded))
    return Kernel("gather", (table, ids), (out,), body)


def _check_ptx(kernel: Kernel, target: str = "cuda") -> str:
    compiled = compile_kernel(kernel, Target.parse(target))
    for arch in ARCHES:
        [info] = run_ptxas(compiled.ptx, arch)
        assert info.kernel == kernel.name and info.spill_stores == 0
    return compiled.ptx


@needs_ptxas
def test_elementwise_kernel_is_a_ptx_entry() -> None:
    kernel = _elementwise()
    ptx = _check_ptx(kernel)
    assert ".version 7.8" in ptx and ".target sm_80" in ptx
    assert re.search(r"\.entry ew\(", ptx) and ".maxntid 128" in ptx
    assert "%tid.x" in ptx and "%ctaid.x" in ptx
    assert "call" not in ptx  # Kiln's exp/tanh inline: no libm calls on the GPU
    assert launch_config(kernel).grid == 8 and launch_config(kernel).threads == 128


@needs_ptxas
@pytest.mark.parametrize("op", ["add", "max", "min"])
@pytest.mark.parametrize("dtype", [DType.F32, DType.F64, DType.I32, DType.F16, DType.I64])
@pytest.mark.parametrize("threads", [32, 100, 256])
def test_block_reduce_uses_warp_shuffles_and_shared_memory(op: str, dtype: DType,
                                                           threads: int) -> None:
    ptx = _check_ptx(_row_reduce(op, dtype, threads))
    assert "shfl.sync.down.b32" in ptx
    assert "bar.sync" in ptx and ".shared" in ptx
    if threads % 32:  # the partial last warp's shuffles name only its lanes
        assert re.search(r"shfl\.sync\.down\.b32\s+%r\d+, %r\d+, \d+, 31, %r\d+;", ptx)


@needs_ptxas
def test_reduction_shared_partials_are_sized_by_warps() -> None:
    [info] = run_ptxas(compile_kernel(_row_reduce("add", F32, 1024),
                                      Target.parse("cuda")).ptx, "sm_90")
    assert info.shared_bytes == 32 * 4  # one f32 partial per warp


@needs_ptxas
def test_shared_tile_and_barrier_between_phases() -> None:
    ptx = _check_ptx(_transpose_tile())
    assert ptx.count("bar.sync") >= 1
    [info] = run_ptxas(ptx, "sm_90")
    assert info.shared_bytes == 32 * 33 * 4


@needs_ptxas
def test_report_sets_the_error_word_once() -> None:
    messages: list[str] = []
    compiled = compile_kernel(_gather_report(), Target.parse("cuda"), messages=messages)
    assert messages == ["Gather node g: index out of range"]
    assert "atom" in compiled.ptx and "cas.b32" in compiled.ptx
    for arch in ARCHES:
        run_ptxas(compiled.ptx, arch)


@needs_ptxas
@pytest.mark.skipif(libdevice_path() is None, reason="CUDA libdevice not installed")
def test_libm_ops_call_libdevice() -> None:
    x, y = Buffer("x", F32, (64,)), Buffer("y", F32, (64,))
    b, t = Var("b"), Var("t")
    value = Unary("sin", x.load(t)) + _bin("pow", x.load(t), Unary("cos", x.load(t))) + _bin(
        "rem", x.load(t), Const(0.5, F32))
    kernel = Kernel("libm", (x,), (y,), _gpu(1, b, _phase(t, 64, y.store([t], value))))
    ptx = _check_ptx(kernel)
    assert ".extern" not in ptx  # libdevice is linked in: nothing left to resolve


@needs_ptxas
def test_cpu_form_kernel_is_bound_generically() -> None:
    """The plan's output copies (and any kernel not in GPU form) go through the GPU
    lowering's binder: independent iterations onto blocks x threads, the rest one thread."""
    x, y = Buffer("x", F32, (1000,)), Buffer("y", F32, (1000,))
    i = Var("i")
    copy = Kernel("copy", (x,), (y,), Loop(i, Const(1000, I64), y.store([i], x.load(i)),
                                         LoopKind.VECTORIZE))
    assert launch_config(bind_to_gpu(copy)) == LaunchConfig(4, 256)
    # a vectorize hint over a loop-carried sum is no licence to run its iterations at once
    carried = Kernel("carried", (x,), (y,), Loop(i, Const(1000, I64), y.store(
        [Const(0, I64)], y.load(Const(0, I64)) + x.load(i)), LoopKind.VECTORIZE))
    assert launch_config(bind_to_gpu(carried)) == LaunchConfig(1, 1)
    for kernel in (copy, carried):
        _check_ptx(kernel)


@needs_ptxas
def test_sm90_target() -> None:
    ptx = compile_kernel(_elementwise(), Target.parse("cuda:sm_90")).ptx
    assert ".target sm_90" in ptx
    run_ptxas(ptx, "sm_90")


def test_cuda_target_spellings() -> None:
    assert Target.parse("cuda").cpu == "sm_80"
    assert Target.parse("cuda:sm_90").cpu == "sm_90"
    assert Target.parse("cuda", cpu="sm_86").cpu == "sm_86"
    target = Target.parse("cuda")
    assert target.is_gpu and not target.is_host and target.triple == "nvptx64-nvidia-cuda"
    with pytest.raises(CodegenError, match="unknown CUDA architecture"):
        Target.parse("cuda:volta")
    with pytest.raises(CodegenError, match="names sm_90 but"):
        Target.parse("cuda:sm_90", cpu="sm_80")


def test_bad_gpu_kernels_get_clear_errors() -> None:
    x = Buffer("x", F32, (8,))
    b, t, u = Var("b"), Var("t"), Var("u")
    mixed = Kernel("mixed", (), (x,), _gpu(1, b, _phase(t, 8, x.store([t], 0.0)),
                                            _phase(u, 4, x.store([u], 1.0))))
    big = Kernel("big", (), (x,), _gpu(1, b, _phase(t, 2048, Block(()))))
    nested = Kernel("nested", (), (x,), _gpu(1, b, _phase(t, 8, _phase(u, 8, Block(())))))
    for kernel in (mixed, big, nested):
        with pytest.raises(GpuFormError, match=kernel.name):
            compile_kernel(kernel, Target.parse("cuda"))
    with pytest.raises(CodegenError, match="not a GPU target"):
        host = Target.parse("x86_64")
        emit_gpu_kernel(create_module("m", host), _elementwise(), host, [])


def test_ptxas_report_parsing() -> None:
    text = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k1' for 'sm_90'
ptxas info    : Function properties for k1
    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 512 bytes smem
ptxas info    : Compiling entry function 'k2' for 'sm_90'
ptxas info    : Function properties for k2
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 8 registers
"""
    first, second = parse_ptxas_report(text)
    assert (first.kernel, first.registers, first.shared_bytes, first.stack_bytes,
            first.spill_stores, first.spill_loads) == ("k1", 40, 512, 16, 8, 12)
    assert (second.kernel, second.registers, second.shared_bytes) == ("k2", 8, 0)


@needs_ptxas
@pytest.mark.parametrize("dtype", [DType.F32, DType.I32] + [
    pytest.param(d, marks=pytest.mark.slow)
    for d in (DType.F64, DType.F16, DType.BF16, DType.I64, DType.U8, DType.BOOL)])
def test_every_operator_compiles_for_the_gpu(dtype: DType) -> None:
    """The CPU backend's expression semantics (expr.py, math.py, half.py) on NVPTX: every
    unary and binary operator, comparisons, selects and casts to every type."""
    x, y = Buffer("x", dtype, (64,)), Buffer("y", dtype, (64,))
    t, b = Var("t"), Var("b")
    a, c = x.load(t), y.load(t)
    stores: list[Stmt] = []
    outputs: list[Buffer] = []

    def out(value: Expr) -> None:
        buffer = Buffer(f"o{len(outputs)}", value.dtype, (64,))
        outputs.append(buffer)
        stores.append(buffer.store([t], value))

    undefined = {"not"} if dtype.is_float else {"neg", "abs"} if dtype is DType.BOOL else set()
    for op in sorted(UNARY_OPS - undefined):
        out(Unary(op, a))
    for op in sorted(BINARY_OPS):
        if dtype is DType.BOOL and op not in ("and", "or", "xor", "add", "mul", "min", "max"):
            continue
        if dtype.is_float and op in ("and", "or", "xor", "shl", "shr"):
            continue
        out(Binary(op, a, c))
    for op in sorted(COMPARE_OPS):
        out(Compare(op, a, c))
    out(Select(Compare("lt", a, c), a, c))
    for target in (DType.F32, DType.F64, DType.F16, DType.BF16, DType.I8, DType.I32,
                   DType.U64, DType.BOOL):
        out(Cast(a, target))
    body = _gpu(1, b, _phase(t, 64, Block(tuple(stores))))
    _check_ptx(Kernel(f"ops_{dtype.value}", (x, y), tuple(outputs), body))
