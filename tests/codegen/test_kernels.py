"""Statements, loops and schedules compiled for the host and compared with the interpreter:
every loop kind, multi-dimensional and strided buffers, locals, If, Select, Report, parallel
loops (really split across threads by the test runtime) with captured values, and the errors
for what a CPU target cannot compile. Ends with a random expression differential test."""

from __future__ import annotations

import random
from dataclasses import replace
from functools import cache

import numpy as np
import pytest
from codegen_harness import CompiledKernels, compile_kernels, host
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.compiler.codegen import CodegenError, create_module, emit_kernel, parse
from kiln.compiler.errors import ExecutionError
from kiln.compiler.ir.types import DType
from kiln.compiler.lower.interpret import run_kernel
from kiln.compiler.lower.kernel_ir import (
    Assign,
    Binary,
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
    Unary,
    Var,
    block,
    loop_nest,
)

F32, I64 = DType.F32, DType.I64


def _c(value: int) -> Const:
    return Const(value, I64)


def _kernels() -> dict[str, Kernel]:
    kernels: dict[str, Kernel] = {}
    i, j, k = Var("i"), Var("j"), Var("k")
    x = Buffer("x", F32, (5, 7))
    w = Buffer("w", F32, (7, 3))
    # matmul-like reduction: parallel rows, unrolled columns, serial reduction into a local
    out = Buffer("out", F32, (5, 3))
    acc = Var("acc", F32)
    kernels["matmul"] = Kernel("matmul", (x, w), (out,), Loop(i, _c(5), Loop(j, _c(3), block(
        Declare(acc, Const(0.0, F32)),
        Loop(k, _c(7), Assign(acc, acc + x.load(i, k) * w.load(k, j))),
        out.store([i, j], acc),
    ), LoopKind.UNROLL), LoopKind.PARALLEL))
    # strided (transposed) view of a buffer, vectorized inner loop
    xt = Buffer("x", F32, (7, 5), strides=(1, 7))
    yt = Buffer("out", F32, (7, 5))
    kernels["transpose"] = Kernel("transpose", (xt,), (yt,), loop_nest(
        ["i", "j"], [7, 5], lambda v: yt.store(v, xt.load(*v) * 2.0), LoopKind.VECTORIZE))
    # If / else, Select, comparisons, casts
    y = Buffer("out", DType.I32, (5, 7))
    body = loop_nest(["i", "j"], [5, 7], lambda v: If(
        x.load(*v) > 0.0,
        y.store(v, Cast(x.load(*v) * 10.0, DType.I32)),
        y.store(v, Select(Compare("lt", v[0], v[1]), Const(-1, DType.I32),
                          Cast(v[0] * 100 + v[1], DType.I32))),
    ))
    kernels["branches"] = Kernel("branches", (x,), (y,), body)
    # triangular loop: the inner extent depends on the outer index
    tri = Buffer("out", F32, (6, 6))
    kernels["triangle"] = Kernel("triangle", (), (tri,), Loop(i, _c(6), Loop(
        j, i + 1, tri.store([i, j], Cast(i * 6 + j, F32)))))
    # parallel loop nested in a serial loop, reading the outer index and an outer local;
    # a parallel loop nested in a parallel loop
    big = Buffer("out", DType.I64, (3, 50))
    base = Var("base", I64)
    kernels["captures"] = Kernel("captures", (), (big,), Loop(i, _c(3), block(
        Declare(base, i * 1000),
        Loop(j, _c(50), big.store([i, j], base + j * 3 + i), LoopKind.PARALLEL),
    )))
    nested = Buffer("out", DType.I32, (4, 9))
    kernels["nested_parallel"] = Kernel("nested_parallel", (), (nested,), Loop(i, _c(4), Loop(
        j, _c(9), nested.store([i, j], Cast(i * 9 + j, DType.I32)), LoopKind.PARALLEL),
        LoopKind.PARALLEL))
    # parallel reduction per row with locals declared inside the body; zero-extent loop
    rows = Buffer("out", F32, (5,))
    total = Var("total", F32)
    kernels["row_sum"] = Kernel("row_sum", (x,), (rows,), block(
        Loop(i, _c(5), block(
            Declare(total, Const(0.0, F32)),
            Loop(j, _c(7), Assign(total, total + x.load(i, j))),
            rows.store([i], total),
        ), LoopKind.PARALLEL),
        Loop(k, _c(0), rows.store([k], Const(1.0, F32)), LoopKind.PARALLEL),
    ))
    # Report of a bad index (guarded access), inside a parallel loop
    idx = Buffer("idx", I64, (6,))
    table = Buffer("table", F32, (4,))
    gathered = Buffer("out", F32, (6,))
    position = idx.load(i)
    inside = Binary("and", Compare("ge", position, _c(0)), Compare("lt", position, _c(4)))
    kernels["gather"] = Kernel("gather", (idx, table), (gathered,), Loop(i, _c(6), If(
        inside, gathered.store([i], table.load(position)),
        Report("gather: index out of range"),
    ), LoopKind.PARALLEL))
    # rank-0 buffers and an in-place kernel (the same buffer as input and output)
    scalar_in, scalar_out = Buffer("s", F32, ()), Buffer("out", F32, ())
    kernels["scalar"] = Kernel("scalar", (scalar_in,), (scalar_out,),
                               scalar_out.store([], Unary("sqrt", scalar_in.load()) + 1.0))
    inplace = Buffer("out", F32, (8,))
    kernels["inplace"] = Kernel("inplace", (inplace,), (inplace,), Loop(
        i, _c(8), inplace.store([i], inplace.load(i) * inplace.load(i)), LoopKind.VECTORIZE))
    return kernels


KERNELS = _kernels()


@cache
def _library(opt_level: int) -> CompiledKernels:
    return compile_kernels(list(KERNELS.values()), opt_level=opt_level)


def _data(kernel: Kernel, rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = {}
    for buffer in kernel.inputs:
        if buffer.dtype is I64:
            arrays[buffer.name] = rng.integers(0, 4, buffer.shape)
        else:
            arrays[buffer.name] = rng.standard_normal(buffer.shape).astype(buffer.dtype.numpy)
    return arrays


@pytest.mark.parametrize("opt_level", [0, 1, 2, 3])
@pytest.mark.parametrize("name", list(KERNELS))
def test_kernel_matches_interpreter(name: str, opt_level: int) -> None:
    kernel = KERNELS[name]
    arrays = _data(kernel, np.random.default_rng(len(name)))
    want = run_kernel(kernel, arrays)
    for chunks in (1, 3, 8):
        got = _library(opt_level).run(kernel, arrays, chunks=chunks)
        for key, value in want.items():
            np.testing.assert_allclose(got[key], value, rtol=1e-6, err_msg=f"{name}/{key}")


def test_report_fails_the_run_and_guards_the_access() -> None:
    kernel = KERNELS["gather"]
    arrays = {"idx": np.array([0, 3, 9, 1, -2, 2]), "table": np.arange(4, dtype=np.float32)}
    with pytest.raises(ExecutionError, match="gather: index out of range"):
        run_kernel(kernel, arrays)
    with pytest.raises(ExecutionError, match="gather: index out of range"):
        _library(2).run(kernel, arrays)


def test_parallel_loops_call_the_runtime() -> None:
    library = _library(2)
    assert library.parallel_calls(KERNELS["captures"], {}) == 3
    # the inner parallel loop runs serially inside the outer one's chunks
    assert library.parallel_calls(KERNELS["nested_parallel"], {}) == 1


def test_loop_metadata_and_vectorization() -> None:
    module = create_module("meta", host())
    for name in ("transpose", "matmul"):
        emit_kernel(module, KERNELS[name], host())
    text = str(module)
    # VECTORIZE loops without a width are left to LLVM's cost model: no forcing metadata.
    assert "llvm.loop.vectorize.enable" not in text and "llvm.loop.unroll.full" in text
    assert "distinct !{" in text
    assert "kiln__parallel_for" in text
    parse(module, host())
    library_ir = _library(2).ir_text
    # the inline math vectorizes: no calls to exp, vector float types in the loop
    math_kernel = Kernel("vexp", (Buffer("x", F32, (256,)),), (Buffer("out", F32, (256,)),),
                         Loop(Var("i"), _c(256), Buffer("out", F32, (256,)).store(
                             [Var("i")], Unary("exp", Buffer("x", F32, (256,)).load(Var("i")))),
                             LoopKind.VECTORIZE, 8))
    forced = create_module("forced", host())
    emit_kernel(forced, math_kernel, host())
    assert "llvm.loop.vectorize.enable" in str(forced)
    assert "llvm.loop.vectorize.width" in str(forced)
    vectorized = compile_kernels([math_kernel]).ir_text
    assert "<8 x float>" in vectorized and "@exp" not in vectorized
    assert "define" in library_ir


def test_cpu_target_errors() -> None:
    i = Var("i")
    out = Buffer("out", F32, (4,))
    gpu = Kernel("gpu", (), (out,), Loop(i, _c(4), out.store([i], Const(1.0, F32)),
                                         LoopKind.GPU_THREAD))
    with pytest.raises(CodegenError, match="gpu_thread"):
        emit_kernel(create_module("m", host()), gpu, host())
    acc = Var("acc", F32)
    racy = Kernel("racy", (), (out,), block(
        Declare(acc, Const(0.0, F32)),
        Loop(i, _c(4), Assign(acc, acc + 1.0), LoopKind.PARALLEL),
        out.store([0], acc),
    ))
    with pytest.raises(CodegenError, match="data race"):
        emit_kernel(create_module("m", host()), racy, host())
    stray = Kernel("stray", (), (out,), out.store([0], Buffer("y", F32, (1,)).load(0)))
    with pytest.raises(CodegenError, match="not one of its parameters"):
        emit_kernel(create_module("m", host()), stray, host())


# -- random expressions ---------------------------------------------------------------------

_EXACT_UNARY = {"float": ["neg", "abs", "floor", "ceil", "round", "trunc", "sqrt", "sign"],
                "int": ["neg", "abs", "not", "sign"]}
# float min / max are left out: on (+0, -0) the interpreter (Python min) returns the first
# operand and numpy / the compiled code the second, and a later division exposes the sign
_EXACT_BINARY = {"float": ["add", "sub", "mul", "div", "rem"],
                 "int": ["add", "sub", "mul", "div", "rem", "min", "max", "and", "or", "xor",
                         "shl", "shr"]}
_RANDOM_TYPES = [DType.F16, DType.BF16, DType.F32, DType.F64, DType.I8, DType.I32, DType.I64,
                 DType.U8, DType.U32]
M = 16


def _random_expr(rng: random.Random, dtype: DType, inputs: dict[DType, Buffer], i: Var,
                 depth: int) -> Expr:
    """A random exactly-rounded expression of type ``dtype`` over the input buffers."""
    kind = "float" if dtype.is_float else "int"
    if depth == 0 or rng.random() < 0.2:
        if rng.random() < 0.25:
            value = rng.choice([0, 1, 2, -3, 7]) if kind == "int" else rng.choice(
                [0.5, -1.25, 3.0, 1e-3])
            if not dtype.is_signed:
                value = abs(value)
            return Const(value, dtype)
        return inputs[dtype].load(i)
    choice = rng.random()
    sub = lambda t=dtype: _random_expr(rng, t, inputs, i, depth - 1)  # noqa: E731
    if choice < 0.3:
        return Unary(rng.choice(_EXACT_UNARY[kind]), sub())
    if choice < 0.7:
        return Binary(rng.choice(_EXACT_BINARY[kind]), sub(), sub())
    if choice < 0.85:
        other = rng.choice(_RANDOM_TYPES)
        return Select(Compare(rng.choice(["lt", "le", "eq", "ne", "gt", "ge"]), sub(other),
                              sub(other)), sub(), sub())
    return Cast(sub(rng.choice(_RANDOM_TYPES)), dtype)


@settings(max_examples=3, deadline=None)
@given(st.integers(0, 2**31))
def test_random_expressions_match_interpreter(seed: int) -> None:
    rng = random.Random(seed)
    data_rng = np.random.default_rng(seed)
    i = Var("i")
    inputs = {t: Buffer(f"in_{t.value}", t, (M,)) for t in _RANDOM_TYPES}
    kernels = []
    for n in range(24):
        dtype = rng.choice(_RANDOM_TYPES)
        out = Buffer("out", dtype, (M,))
        kind = rng.choice([LoopKind.SERIAL, LoopKind.VECTORIZE, LoopKind.PARALLEL])
        value = _random_expr(rng, dtype, inputs, i, depth=4)
        kernels.append(Kernel(f"random{n}", tuple(inputs.values()), (out,),
                              Loop(i, _c(M), out.store([i], value), kind)))
    arrays = {}
    for dtype, buffer in inputs.items():
        if dtype.is_float:
            sample = data_rng.standard_normal(M) * 4
            sample[data_rng.integers(0, M, 2)] = [np.nan, -0.0]
        else:
            info = np.iinfo(dtype.numpy)
            sample = data_rng.integers(max(info.min, -40), min(info.max, 40), M)
        arrays[buffer.name] = sample.astype(dtype.numpy)
    library = compile_kernels(kernels, opt_level=2)
    compared = 0
    for kernel in kernels:
        try:
            with np.errstate(all="ignore"):
                want = run_kernel(kernel, arrays)["out"]
        except (ExecutionError, OverflowError, ValueError):
            continue  # integer division by zero etc.: undefined for the interpreter
        got = library.run(kernel, arrays)["out"]
        np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64),
                                      err_msg=kernel.name)
        compared += 1
    assert compared >= 8


def test_replace_keeps_kernels_independent() -> None:
    """Two kernels in one module with the same parallel structure get distinct outlines."""
    first = KERNELS["nested_parallel"]
    second = replace(first, name="nested_parallel_again")
    module = create_module("two", host())
    emit_kernel(module, first, host())
    emit_kernel(module, second, host())
    parse(module, host())
    names = [g for g in module.globals if ".parallel" in g]
    assert len(names) == len(set(names)) == 4
