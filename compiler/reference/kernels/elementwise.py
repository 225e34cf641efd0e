"""Numpy kernels of the elementwise ops, driven by tables from ``Op`` to a numpy function.

float16 and bfloat16 data are computed in float32 and rounded once at the end, as onnxruntime
does; every other type is computed in its own type (integer ops wrap as in C).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...ir.op import Op
from .registry import KernelContext, kernel

Attrs = Mapping[str, Any]
_NARROW_FLOATS = frozenset({np.dtype(np.float16), np.dtype("bfloat16")})


def widen(x: np.ndarray) -> np.ndarray:
    """float16/bfloat16 as float32 (the compute type); other arrays unchanged."""
    x = np.asarray(x)
    return x.astype(np.float32) if x.dtype in _NARROW_FLOATS else x


def erf(x: np.ndarray) -> np.ndarray:
    """erf from the series 2/sqrt(pi) exp(-z^2) sum_n 2^n z^(2n+1) / (2n+1)!!: its terms are
    all positive (no cancellation) and it converges everywhere. erf(x) rounds to +-1 past
    |x| = 6 in float64 and past |x| = 4 in float32, so z is clamped there to bound the terms."""
    limit, tolerance = (6.0, 1e-17) if x.dtype == np.float64 else (4.0, 1e-9)
    z = np.minimum(np.abs(x.astype(np.float64)), limit)
    z2 = z * z
    term = z.copy()
    total = z.copy()
    for n in range(1, 256):
        term *= 2.0 * z2 / (2 * n + 1)
        total += term
        if not np.any(term > total * tolerance):
            break
    value = np.minimum(2.0 / math.sqrt(math.pi) * np.exp(-z2) * total, 1.0)
    return np.copysign(value, x).astype(x.dtype)


def sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-|x|) never overflows, so both tails keep full precision.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(x.dtype.type(0), x)


def _gelu(x: np.ndarray, a: Attrs) -> np.ndarray:
    if a["approximate"] == "tanh":
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
        # 0.5 * (1 + tanh(u)) = sigmoid(2u), without the cancellation of 1 + tanh(u) near -1.
        return x * sigmoid(2 * inner)
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _shrink(x: np.ndarray, a: Attrs) -> np.ndarray:
    lambd, bias = a["lambd"], a["bias"]
    return np.where(x < -lambd, x + bias, np.where(x > lambd, x - bias, 0))


def _is_inf(x: np.ndarray, a: Attrs) -> np.ndarray:
    return (np.isposinf(x) & bool(a["detect_positive"])) | (
        np.isneginf(x) & bool(a["detect_negative"])
    )


# Float-valued maps of one operand, computed on ``widen``-ed data (integers, which only
# Shrink admits among these, are computed in float64).
FLOAT_UNARY: dict[Op, Callable[[np.ndarray, Attrs], np.ndarray]] = {
    Op.ACOS: lambda x, a: np.arccos(x),
    Op.ACOSH: lambda x, a: np.arccosh(x),
    Op.ASIN: lambda x, a: np.arcsin(x),
    Op.ASINH: lambda x, a: np.arcsinh(x),
    Op.ATAN: lambda x, a: np.arctan(x),
    Op.ATANH: lambda x, a: np.arctanh(x),
    Op.COS: lambda x, a: np.cos(x),
    Op.COSH: lambda x, a: np.cosh(x),
    Op.ERF: lambda x, a: erf(x),
    Op.EXP: lambda x, a: np.exp(x),
    Op.LOG: lambda x, a: np.log(x),
    Op.RECIPROCAL: lambda x, a: np.reciprocal(x),
    Op.SIGMOID: lambda x, a: sigmoid(x),
    Op.SIN: lambda x, a: np.sin(x),
    Op.SINH: lambda x, a: np.sinh(x),
    Op.SQRT: lambda x, a: np.sqrt(x),
    Op.TAN: lambda x, a: np.tan(x),
    Op.TANH: lambda x, a: np.tanh(x),
    Op.SOFTPLUS: lambda x, a: softplus(x),
    Op.SOFTSIGN: lambda x, a: x / (1 + np.abs(x)),
    Op.MISH: lambda x, a: x * np.tanh(softplus(x)),
    Op.GELU: _gelu,
    Op.ELU: lambda x, a: np.where(x < 0, a["alpha"] * np.expm1(x), x),
    Op.SELU: lambda x, a: a["gamma"] * np.where(x > 0, x, a["alpha"] * np.expm1(x)),
    Op.CELU: lambda x, a: np.maximum(x, 0) + np.minimum(0, a["alpha"] * np.expm1(x / a["alpha"])),
    Op.LEAKY_RELU: lambda x, a: np.where(x < 0, a["alpha"] * x, x),
    Op.HARD_SIGMOID: lambda x, a: np.clip(a["alpha"] * x + a["beta"], 0, 1),
    Op.HARD_SWISH: lambda x, a: x * np.clip(x / 6 + 0.5, 0, 1),
    Op.THRESHOLDED_RELU: lambda x, a: np.where(x > a["alpha"], x, 0),
    Op.SWISH: lambda x, a: x * sigmoid(a["alpha"] * x),
    Op.SHRINK: _shrink,
}

# Maps that are exact in the input's own type.
EXACT_UNARY: dict[Op, Callable[[np.ndarray, Attrs], np.ndarray]] = {
    Op.ABS: lambda x, a: np.abs(x),
    Op.NEG: lambda x, a: np.negative(x),
    Op.SIGN: lambda x, a: np.sign(x),
    Op.RELU: lambda x, a: np.maximum(x, x.dtype.type(0)),
    Op.CEIL: lambda x, a: np.ceil(x),
    Op.FLOOR: lambda x, a: np.floor(x),
    Op.ROUND: lambda x, a: np.round(x),  # halves to even, as ONNX requires
    Op.IDENTITY: lambda x, a: x,
    Op.NOT: lambda x, a: np.logical_not(x),
    Op.BITWISE_NOT: lambda x, a: np.invert(x),
    Op.IS_NAN: lambda x, a: np.isnan(x),
    Op.IS_INF: _is_inf,
    Op.CAST: lambda x, a: x.astype(a["to"].numpy),
}


@kernel(*FLOAT_UNARY)
def _float_unary(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    data = x.astype(np.float64) if x.dtype.kind in "iu" else widen(x)
    return np.asarray(FLOAT_UNARY[ctx.op](data, ctx.attrs)).astype(ctx.out_dtype())


@kernel(*EXACT_UNARY)
def _exact_unary(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return np.asarray(EXACT_UNARY[ctx.op](x, ctx.attrs))


def divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """True division for floats; integer division truncating toward zero (as in C)."""
    if a.dtype.kind == "f":
        return np.divide(a, b)
    quotient = np.floor_divide(a, b)
    if a.dtype.kind == "u":
        return quotient
    # floor and trunc differ where the division is inexact and the signs differ.
    inexact = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return quotient + inexact.astype(quotient.dtype)


def power(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pow with the result in the base's type; the exponent may have any numeric type."""
    if a.dtype.kind == "f":
        return np.power(a, b.astype(a.dtype))
    if b.dtype.kind == "f":
        return np.power(a.astype(np.float64), b)
    # Integer ** negative integer is 1/a**|b| truncated (numpy refuses it), as in C's pow.
    negative = b < 0
    exact = np.power(a, np.where(negative, 0, b).astype(a.dtype))
    return np.where(negative, np.power(a.astype(np.float64), b.astype(np.float64)), exact)


def _shift(a: np.ndarray, b: np.ndarray, attrs: Attrs) -> np.ndarray:
    shift = np.left_shift if attrs["direction"] == "LEFT" else np.right_shift
    return shift(a, b)


BINARY: dict[Op, Callable[[np.ndarray, np.ndarray, Attrs], np.ndarray]] = {
    Op.ADD: lambda a, b, _: np.add(a, b),
    Op.SUB: lambda a, b, _: np.subtract(a, b),
    Op.MUL: lambda a, b, _: np.multiply(a, b),
    Op.DIV: lambda a, b, _: divide(a, b),
    Op.POW: lambda a, b, _: power(a, b),
    # fmod=1 truncates the quotient (C fmod); fmod=0 floors it (result has the divisor's sign).
    Op.MOD: lambda a, b, attrs: (np.fmod if attrs["fmod"] else np.mod)(a, b),
    Op.BIT_SHIFT: _shift,
    Op.BITWISE_AND: lambda a, b, _: np.bitwise_and(a, b),
    Op.BITWISE_OR: lambda a, b, _: np.bitwise_or(a, b),
    Op.BITWISE_XOR: lambda a, b, _: np.bitwise_xor(a, b),
    Op.AND: lambda a, b, _: np.logical_and(a, b),
    Op.OR: lambda a, b, _: np.logical_or(a, b),
    Op.XOR: lambda a, b, _: np.logical_xor(a, b),
    Op.EQUAL: lambda a, b, _: np.equal(a, b),
    Op.GREATER: lambda a, b, _: np.greater(a, b),
    Op.LESS: lambda a, b, _: np.less(a, b),
    Op.GREATER_OR_EQUAL: lambda a, b, _: np.greater_equal(a, b),
    Op.LESS_OR_EQUAL: lambda a, b, _: np.less_equal(a, b),
    Op.PRELU: lambda x, slope, _: np.where(x < 0, slope * x, x),
    Op.SWIGLU: lambda a, b, attrs: a * sigmoid(attrs["alpha"] * a) * b,
}


@kernel(*BINARY)
def _binary(ctx: KernelContext, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    result = BINARY[ctx.op](widen(a), widen(b), ctx.attrs)
    return np.asarray(result).astype(ctx.out_dtype())


# Max and Min propagate NaN (np.maximum/np.minimum do), as onnxruntime does.
VARIADIC: dict[Op, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    Op.MAX: np.maximum,
    Op.MIN: np.minimum,
    Op.SUM: np.add,
    Op.MEAN: np.add,
}


@kernel(*VARIADIC)
def _variadic(ctx: KernelContext, *inputs: np.ndarray) -> np.ndarray:
    result = functools.reduce(VARIADIC[ctx.op], [widen(x) for x in inputs])
    if ctx.op is Op.MEAN:
        result = result / len(inputs)
    return np.asarray(result).astype(ctx.out_dtype())


@kernel(Op.WHERE)
def _where(ctx: KernelContext, condition: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.where(condition, x, y)


@kernel(Op.CLIP)
def _clip(
    ctx: KernelContext, x: np.ndarray, low: np.ndarray | None = None,
    high: np.ndarray | None = None,
) -> np.ndarray:
    # max(x, low) then min(., high): when low > high every element becomes high, as ONNX says;
    # NaN inputs stay NaN, and an absent bound clips nothing (onnxruntime clamps infinities to
    # the type's finite range there; the ONNX reference does not).
    result = x if low is None else np.maximum(x, low.reshape(()))
    return result if high is None else np.minimum(result, high.reshape(()))
