"""Error bounds of the inline exp / log / tanh / erf / sigmoid against numpy, plus their special
values (NaN, +-inf, +-0, overflow, underflow, subnormals).

The reference is computed in extended precision (numpy longdouble, scipy for erf) and the error
is measured in ulps of the result's type; the bounds asserted are the ones documented in
compiler/codegen/llvm/math.py. The sweep covers the whole finite range log-uniformly (both
signs), the subnormals, and a dense uniform sweep of the interesting interval of each function.
"""

from __future__ import annotations

from functools import cache

import mpmath
import numpy as np
import pytest
import scipy.special
from codegen_harness import CompiledKernels, compile_kernels, ulp_error

from kiln.compiler.ir.types import DType
from kiln.compiler.lower.kernel_ir import Buffer, Const, Kernel, Loop, LoopKind, Unary, Var

N = 1 << 18
OPS = ("exp", "log", "tanh", "erf", "sigmoid")
# documented max error in ulps (compiler/codegen/llvm/math.py)
BOUNDS = {
    (op, dtype): bound
    for op, f32, f64 in [("exp", 1.0, 1.0), ("log", 1.0, 1.0), ("tanh", 1.5, 1.5),
                         ("sigmoid", 2.5, 2.5), ("erf", 1.0, 1.5)]
    for dtype, bound in ((DType.F32, f32), (DType.F64, f64))
}
# the interval where each function is neither constant nor trivially rounded
DENSE = {"exp": (-110.0, 90.0), "log": (0.0, 4.0), "tanh": (-10.0, 10.0), "erf": (-6.5, 6.5),
         "sigmoid": (-110.0, 40.0)}


def _kernel(op: str, dtype: DType) -> Kernel:
    x, y, i = Buffer("x", dtype, (N,)), Buffer("y", dtype, (N,)), Var("i")
    body = Loop(i, Const(N, DType.I64), y.store([i], Unary(op, x.load(i))), LoopKind.VECTORIZE)
    return Kernel(f"math_{op}_{dtype.value}", (x,), (y,), body)


@cache
def _library() -> CompiledKernels:
    return compile_kernels([_kernel(op, dt) for op in OPS for dt in (DType.F32, DType.F64)])


def _inputs(op: str, dtype: DType, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    info = np.finfo(dtype.numpy)
    quarter = N // 4
    magnitude = np.exp(rng.uniform(np.log(float(info.smallest_subnormal)), np.log(float(info.max)),
                                   quarter))
    sweep = magnitude * rng.choice([-1.0, 1.0], quarter)
    low, high = DENSE[op]
    dense = rng.uniform(low, high, 2 * quarter)
    tiny = rng.uniform(-1.0, 1.0, N - 3 * quarter) * float(info.tiny)
    values = np.concatenate([sweep, dense, tiny]).astype(dtype.numpy)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, float(info.max), -float(info.max),
                         float(info.tiny), float(info.smallest_subnormal), 1.0, -1.0],
                        dtype.numpy)
    values[: len(specials)] = specials
    return values


def _mp_erf(x: np.ndarray) -> np.ndarray:
    """erf in 80-bit precision via mpmath (slow: use on a few thousand points)."""
    mpmath.mp.prec = 80
    exact = [mpmath.erf(mpmath.mpf(float(v))) for v in x]
    high = np.array([float(v) for v in exact])
    low = np.array([float(v - h) for v, h in zip(exact, high, strict=True)])
    return high.astype(np.longdouble) + low.astype(np.longdouble)


def _reference(op: str, x: np.ndarray) -> np.ndarray:
    """The exact function values, to well beyond the precision of ``x``'s type."""
    if op == "erf":
        if x.dtype == np.float64:  # scipy's f64 erf is itself ~2 ulp off: use mpmath
            return _mp_erf(x)
        return scipy.special.erf(x.astype(np.float64)).astype(np.longdouble)
    wide = x.astype(np.longdouble)
    with np.errstate(all="ignore"):
        if op == "sigmoid":
            e = np.exp(-np.abs(wide))
            return np.where(wide >= 0, 1.0, e) / (1.0 + e)
        return {"exp": np.exp, "log": np.log, "tanh": np.tanh}[op](wide)


@pytest.mark.parametrize("dtype", [DType.F32, DType.F64], ids=lambda d: d.value)
@pytest.mark.parametrize("op", OPS)
def test_error_bound(op: str, dtype: DType) -> None:
    x = _inputs(op, dtype, seed=OPS.index(op))
    got = _library().run(_kernel(op, dtype), {"x": x})["y"]
    if op == "erf" and dtype is DType.F64:  # the mpmath reference is slow: a subsample
        pick = np.random.default_rng(0).choice(N, 4000, replace=False)
        x, got = x[pick], got[pick]
    error = ulp_error(got, _reference(op, x), dtype)
    worst = int(np.argmax(error))
    assert error[worst] <= BOUNDS[op, dtype], (
        f"{op} {dtype.value}: {error[worst]:.2f} ulp at x={x[worst]!r} (got {got[worst]!r})"
    )


SPECIALS = [
    ("exp", [np.nan, np.inf, -np.inf, 0.0, -0.0, 1000.0, -1000.0], [np.nan, np.inf, 0, 1, 1,
                                                                     np.inf, 0]),
    ("log", [np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, 1.0], [np.nan, np.inf, np.nan, -np.inf,
                                                              -np.inf, np.nan, 0.0]),
    ("tanh", [np.nan, np.inf, -np.inf, 0.0, -0.0, 30.0, -30.0], [np.nan, 1, -1, 0, -0.0, 1,
                                                                  -1]),
    ("erf", [np.nan, np.inf, -np.inf, 0.0, -0.0, 7.0, -7.0], [np.nan, 1, -1, 0, -0.0, 1, -1]),
    ("sigmoid", [np.nan, np.inf, -np.inf, 0.0, -0.0, 1000.0, -1000.0], [np.nan, 1, 0, 0.5,
                                                                         0.5, 1, 0]),
]


@pytest.mark.parametrize("dtype", [DType.F32, DType.F64], ids=lambda d: d.value)
@pytest.mark.parametrize(("op", "inputs", "expected"), SPECIALS, ids=[s[0] for s in SPECIALS])
def test_special_values(op: str, inputs: list[float], expected: list[float],
                        dtype: DType) -> None:
    x = np.zeros(N, dtype.numpy)
    x[: len(inputs)] = inputs
    got = _library().run(_kernel(op, dtype), {"x": x})["y"][: len(inputs)]
    want = np.array(expected, dtype.numpy)
    np.testing.assert_array_equal(got, want)
    signed = ~np.isnan(want)  # a NaN's sign is unspecified
    np.testing.assert_array_equal(np.signbit(got[signed]), np.signbit(want[signed]))
