"""Every unary / binary / compare op and every cast, on every dtype, compiled for the host and
compared with the kernel IR interpreter (``interpret.run_kernel``) on random data with special
values. Exactly rounded ops must match bit for bit (NaN == NaN); transcendental ops within a
few ulps (the interpreter computes them in float64 and rounds once)."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from codegen_harness import CompiledKernels, compile_kernels, ulp_error

from kiln.compiler.ir.types import DType
from kiln.compiler.lower.interpret import run_kernel
from kiln.compiler.lower.kernel_ir import (
    Binary,
    Buffer,
    Cast,
    Compare,
    Const,
    Expr,
    Kernel,
    Loop,
    LoopKind,
    Unary,
    Var,
    block,
)

N = 96
FLOATS = [DType.F16, DType.BF16, DType.F32, DType.F64]
INTS = [DType.I8, DType.I16, DType.I32, DType.I64, DType.U8, DType.U16, DType.U32, DType.U64]
ALL = FLOATS + INTS + [DType.BOOL]
TRANSCENDENTAL = {"exp", "log", "tanh", "erf", "sigmoid", "sin", "cos", "tan", "asin", "acos",
                  "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "rsqrt", "pow", "atan2"}
FLOAT_UNARY = ["neg", "abs", "exp", "log", "sqrt", "rsqrt", "tanh", "erf", "sigmoid", "sin",
               "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh",
               "floor", "ceil", "round", "trunc", "isnan", "isinf", "sign"]
INT_UNARY = ["neg", "abs", "floor", "ceil", "round", "trunc", "not", "isnan", "isinf", "sign"]
BOOL_UNARY = ["not", "abs", "isnan", "isinf", "floor"]
FLOAT_BINARY = ["add", "sub", "mul", "div", "rem", "min", "max", "pow", "atan2"]
INT_BINARY = ["add", "sub", "mul", "div", "rem", "min", "max", "pow", "and", "or", "xor", "shl",
              "shr"]
BOOL_BINARY = ["and", "or", "xor", "add", "mul", "min", "max"]
COMPARE = ["eq", "ne", "lt", "le", "gt", "ge"]


def values(dtype: DType, rng: np.random.Generator, op: str = "") -> np.ndarray:
    """Random ``dtype`` data with the values that exercise edge cases."""
    if dtype is DType.BOOL:
        return rng.integers(0, 2, N).astype(bool)
    if dtype.is_float:
        base = rng.standard_normal(N) * np.exp(rng.uniform(-3, 3, N))
        specials = [np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, 1.5, 2.5, -2.5, 1.0, -1.0, 3.0]
        base[: len(specials)] = specials
        rng.shuffle(base)
        return base.astype(dtype.numpy)
    info = np.iinfo(dtype.numpy)
    if op == "pow":  # small bases and exponents (the interpreter cannot wrap huge powers)
        return rng.integers(max(info.min, -4), 5, N).astype(dtype.numpy)
    if op in ("shl", "shr"):
        return rng.integers(max(info.min, -2), dtype.itemsize * 8 + 3, N).astype(dtype.numpy)
    wide = rng.integers(info.min, info.max, N, dtype=dtype.numpy, endpoint=True)
    small = rng.integers(max(info.min, -5), 6, N).astype(dtype.numpy)
    data = np.where(rng.random(N) < 0.5, wide, small)
    data[:3] = [info.min, info.max, 0]
    return data


def _elementwise(name: str, inputs: tuple[Buffer, ...], make: object) -> Kernel:
    i = Var("i")
    value: Expr = make(*(b.load(i) for b in inputs))  # type: ignore[operator]
    out = Buffer("out", value.dtype, (N,))
    kind = LoopKind.VECTORIZE if len(name) % 2 else LoopKind.SERIAL
    return Kernel(name, inputs, (out,), Loop(i, Const(N, DType.I64), out.store([i], value),
                                             kind))


def _cases() -> list[tuple[Kernel, str]]:
    cases = []
    for dtype in ALL:
        x, y = Buffer("x", dtype, (N,)), Buffer("y", dtype, (N,))
        unary = FLOAT_UNARY if dtype.is_float else INT_UNARY if dtype.is_int else BOOL_UNARY
        binary = FLOAT_BINARY if dtype.is_float else INT_BINARY if dtype.is_int else BOOL_BINARY
        for op in unary:
            cases.append((_elementwise(f"u_{op}_{dtype.value}", (x,),
                                       lambda a, op=op: Unary(op, a)), op))
        for op in binary:
            cases.append((_elementwise(f"b_{op}_{dtype.value}", (x, y),
                                       lambda a, b, op=op: Binary(op, a, b)), op))
        for op in COMPARE:
            cases.append((_elementwise(f"c_{op}_{dtype.value}", (x, y),
                                       lambda a, b, op=op: Compare(op, a, b)), op))
        for target in ALL:
            if target != dtype:
                cases.append((_elementwise(f"cast_{dtype.value}_{target.value}", (x,),
                                           lambda a, t=target: Cast(a, t)), "cast"))
    return cases


CASES = _cases()


@cache
def _library(opt_level: int) -> CompiledKernels:
    return compile_kernels([kernel for kernel, _ in CASES], opt_level=opt_level)


def _inputs(kernel: Kernel, op: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {b.name: values(b.dtype, rng, op) for b in kernel.inputs}
    if op in ("div", "rem", "pow") and kernel.inputs[0].dtype.is_int:
        # the interpreter raises on a zero divisor (and on 0 ** negative): tested separately
        name = "x" if op == "pow" else "y"
        arrays[name] = np.where(arrays[name] == 0, 1, arrays[name]).astype(arrays[name].dtype)
    if op == "cast" and kernel.inputs[0].dtype.is_float and not kernel.outputs[0].dtype.is_float:
        # the interpreter cannot truncate infinities (saturation is tested separately)
        x = arrays["x"]
        arrays["x"] = np.where(np.isinf(x.astype(np.float64)), 7, x).astype(x.dtype)
    return arrays


def _check(kernel: Kernel, op: str, got: np.ndarray, want: np.ndarray) -> None:
    dtype = kernel.outputs[0].dtype
    if op in TRANSCENDENTAL and dtype.is_float:
        bound = 1.0 if dtype in (DType.F16, DType.BF16) else 4.0
        error = ulp_error(got, want.astype(np.float64), dtype)
        worst = int(np.argmax(error))
        assert error[worst] <= bound, (
            f"{kernel.name}: {error[worst]} ulp at element {worst}: got {got[worst]}, "
            f"want {want[worst]}"
        )
    elif dtype.is_float:  # via f64, where numpy treats NaN == NaN (not so for bf16 arrays)
        np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64),
                                      err_msg=kernel.name)
    else:
        np.testing.assert_array_equal(got, want, err_msg=kernel.name)


@pytest.mark.parametrize("opt_level", [0, 2])
def test_ops_match_interpreter(opt_level: int) -> None:
    library = _library(opt_level)
    failures = []
    for seed, (kernel, op) in enumerate(CASES):
        arrays = _inputs(kernel, op, seed)
        with np.errstate(all="ignore"):
            want = run_kernel(kernel, arrays)["out"]
        got = library.run(kernel, arrays)["out"]
        try:
            _check(kernel, op, got, want)
        except AssertionError as error:
            lines = [line for line in str(error).splitlines() if line.strip()]
            failures.append(f"{kernel.name}: " + " | ".join(lines[1:8]))
    assert not failures, f"{len(failures)} kernels differ:\n" + "\n".join(failures)


def _run_single(kernel: Kernel, arrays: dict[str, np.ndarray]) -> np.ndarray:
    return compile_kernels([kernel]).run(kernel, arrays)["out"]


@pytest.mark.parametrize("dtype", [DType.I8, DType.I32, DType.I64, DType.U16, DType.U64],
                         ids=lambda d: d.value)
def test_integer_division_by_zero_and_overflow(dtype: DType) -> None:
    info = np.iinfo(dtype.numpy)
    x, y = Buffer("x", dtype, (4,)), Buffer("y", dtype, (4,))
    i = Var("i")
    out = Buffer("out", dtype, (2, 4))
    body = Loop(i, Const(4, DType.I64), block(
        out.store([0, i], Binary("div", x.load(i), y.load(i))),
        out.store([1, i], Binary("rem", x.load(i), y.load(i))),
    ))
    kernel = Kernel(f"divzero_{dtype.value}", (x, y), (out,), body)
    minus_one = -1 if dtype.is_signed else 1
    a = np.array([7, info.min, 5, -7 if dtype.is_signed else 9], dtype.numpy)
    b = np.array([0, minus_one, 0, 2], dtype.numpy)
    got = _run_single(kernel, {"x": a, "y": b})
    # division by zero gives 0; INT_MIN / -1 wraps to INT_MIN
    expected_q = [0, info.min if dtype.is_signed else 0, 0, -3 if dtype.is_signed else 4]
    expected_r = [0, 0, 0, -1 if dtype.is_signed else 1]
    np.testing.assert_array_equal(got, np.array([expected_q, expected_r], dtype.numpy))


@pytest.mark.parametrize("target", [DType.I8, DType.I32, DType.I64, DType.U8, DType.U64],
                         ids=lambda d: d.value)
@pytest.mark.parametrize("source", [DType.F16, DType.BF16, DType.F32, DType.F64],
                         ids=lambda d: d.value)
def test_float_to_int_saturates(source: DType, target: DType) -> None:
    x = Buffer("x", source, (6,))
    kernel = _elementwise_n(f"sat_{source.value}_{target.value}", x, lambda a: Cast(a, target))
    data = np.array([np.inf, -np.inf, np.nan, 1e30 if source is not DType.F16 else 6e4,
                     -1e30 if source is not DType.F16 else -6e4, -2.7], source.numpy)
    info = np.iinfo(target.numpy)
    wide = data.astype(np.float64)
    expected = [0 if np.isnan(v) else info.max if v >= info.max else info.min if v <= info.min
                else int(v) for v in wide]
    got = _run_single(kernel, {"x": data})
    np.testing.assert_array_equal(got, np.array(expected, target.numpy))


def _elementwise_n(name: str, x: Buffer, make: object) -> Kernel:
    i = Var("i")
    value: Expr = make(x.load(i))  # type: ignore[operator]
    out = Buffer("out", value.dtype, x.shape)
    return Kernel(name, (x,), (out,), Loop(i, Const(x.shape[0], DType.I64),
                                           out.store([i], value)))


@pytest.mark.parametrize("dtype", [DType.F16, DType.BF16], ids=lambda d: d.value)
@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
def test_half_conversions_exhaustive(dtype: DType) -> None:
    """Every f16 / bf16 bit pattern widens exactly; f32 / f64 values round to nearest even."""
    bits = np.arange(1 << 16, dtype=np.uint16)
    x = Buffer("x", dtype, (1 << 16,))
    widen = _elementwise_n(f"widen_{dtype.value}", x, lambda a: Cast(a, DType.F32))
    rng = np.random.default_rng(3)
    wide = Buffer("x", DType.F64, (1 << 16,))
    narrow64 = _elementwise_n(f"narrow64_{dtype.value}", wide, lambda a: Cast(a, dtype))
    wide32 = Buffer("x", DType.F32, (1 << 16,))
    narrow32 = _elementwise_n(f"narrow32_{dtype.value}", wide32, lambda a: Cast(a, dtype))
    library = compile_kernels([widen, narrow64, narrow32])
    halves = bits.view(dtype.numpy)
    np.testing.assert_array_equal(library.run(widen, {"x": halves})["out"],
                                  halves.astype(np.float32))
    # values between neighbouring halves: exact ties, near ties, subnormals, overflow
    neighbours = halves.astype(np.float64)
    finite = np.isfinite(neighbours)
    middle = neighbours[finite][:-1] + np.diff(neighbours[finite]) * rng.choice(
        [0.5, 0.4999999, 0.5000001, 0.25, 0.75], int(finite.sum()) - 1)
    samples = np.resize(np.concatenate([middle, [np.nan, np.inf, -np.inf, 1e300, -1e-300,
                                                 7e4, 65519.0, 65520.0]]), 1 << 16)
    singles = samples.astype(np.float32)
    for kernel, data in ((narrow64, samples), (narrow32, singles)):
        got, want = library.run(kernel, {"x": data})["out"], data.astype(dtype.numpy)
        nan = np.isnan(want.astype(np.float64))
        np.testing.assert_array_equal(np.isnan(got.astype(np.float64)), nan)
        np.testing.assert_array_equal(got.view(np.uint16)[~nan], want.view(np.uint16)[~nan])
