"""Scalar building blocks shared by the elementwise and reduce lowerings.

- Compute types: float16/bfloat16 arithmetic is done in float32 and rounded once at the store
  (``wide``), as the reference kernels do.
- Compositions of kernel-IR operations for the functions the IR lacks (expm1, log1p, softplus,
  integer division and remainder that are defined for every operand).
- ``loop_over``: the loop nest over an output shape with the schedule every lowering of these
  families uses (innermost loop vectorized, outermost non-trivial loop parallel when the work is
  large; a lone long axis is split into parallel chunks of vectorized loops).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ...ir.types import DType
from ..kernel_ir import (
    Binary,
    Const,
    Expr,
    ExprLike,
    Loop,
    LoopKind,
    Stmt,
    Unary,
    Var,
    binary,
    select,
)
from .common import PARALLEL_WORK, const

NARROW_FLOATS = frozenset({DType.F16, DType.BF16})
# Below this many elements of work a kernel runs on one thread (thread hand-off costs more).
# Chunk of a lone parallel axis handed to one task; a multiple of every vector width.
CHUNK = 4096


def wide(dtype: DType) -> DType:
    """The type arithmetic on ``dtype`` is computed in: float32 for float16/bfloat16."""
    return DType.F32 if dtype in NARROW_FLOATS else dtype


def to_float(dtype: DType) -> DType:
    """The compute type of a float-valued map: ``wide`` for floats, float64 for integers."""
    return wide(dtype) if dtype.is_float else DType.F64




def lowest(dtype: DType) -> Const:
    """The identity of max: -inf, the smallest integer, or false."""
    if dtype.is_float:
        return const(-math.inf, dtype)
    if dtype is DType.BOOL:
        return const(False, dtype)
    return const(-(1 << (dtype.itemsize * 8 - 1)) if dtype.is_signed else 0, dtype)


def highest(dtype: DType) -> Const:
    """The identity of min: +inf, the largest integer, or true."""
    if dtype.is_float:
        return const(math.inf, dtype)
    if dtype is DType.BOOL:
        return const(True, dtype)
    bits = dtype.itemsize * 8 - (1 if dtype.is_signed else 0)
    return const((1 << bits) - 1, dtype)


def fmax(a: ExprLike, b: ExprLike) -> Binary:
    """NaN-propagating maximum (booleans: or)."""
    return binary("or" if _dtype_of(a, b) is DType.BOOL else "max", a, b)


def fmin(a: ExprLike, b: ExprLike) -> Binary:
    """NaN-propagating minimum (booleans: and)."""
    return binary("and" if _dtype_of(a, b) is DType.BOOL else "min", a, b)


def _dtype_of(a: ExprLike, b: ExprLike) -> DType:
    return (a if isinstance(a, Expr) else b).dtype  # type: ignore[union-attr]


def both(a: Expr, b: Expr) -> Binary:
    return Binary("and", a, b)


def either(a: Expr, b: Expr) -> Binary:
    return Binary("or", a, b)


def negate(cond: Expr) -> Unary:
    return Unary("not", cond)


def fabs(x: Expr) -> Unary:
    return Unary("abs", x)


def exp(x: Expr) -> Unary:
    return Unary("exp", x)


def log(x: Expr) -> Unary:
    return Unary("log", x)


def sigmoid(x: Expr) -> Unary:
    return Unary("sigmoid", x)


def divide(a: ExprLike, b: ExprLike) -> Binary:
    return binary("div", a, b)


def is_finite(x: Expr) -> Unary:
    return negate(either(Unary("isinf", x), Unary("isnan", x)))


def expm1(x: Expr) -> Expr:
    """exp(x) - 1 without the cancellation near 0: Kahan's (u - 1) * x / log(u), u = exp(x),
    for |x| < 0.5 (u then lies in (0.6, 1.7), so log(u) is 0 only where u == 1, which gives x);
    plain u - 1 elsewhere, where it has no cancellation."""
    u = exp(x)
    near_zero = select(u.eq(1), x, divide((u - 1) * x, log(u)))
    return select(fabs(x) < 0.5, near_zero, u - 1)


def log1p(y: Expr) -> Expr:
    """log(1 + y) for y >= 0, accurate for small y (Kahan: log(u) * y / (u - 1), u = 1 + y)."""
    u = 1 + y
    return select(u.eq(1), y, divide(log(u) * y, u - 1))


def softplus(x: Expr) -> Expr:
    """log(1 + exp(x)) as numpy's logaddexp(0, x): max(x, 0) + log1p(exp(-|x|)), which neither
    overflows nor loses the small values of either tail; NaN propagates through the max."""
    return fmax(x, 0) + log1p(exp(-fabs(x)))


def int_divisor(b: Expr) -> Expr:
    """``b`` where integer division by it is defined in C, else 1: b == 0 would trap, and
    INT_MIN / -1 overflows for signed types."""
    bad: Expr = b.eq(0)
    if b.dtype.is_signed:
        bad = either(bad, b.eq(-1))
    return select(bad, 1, b)


def int_div(a: Expr, b: Expr) -> Expr:
    """Integer division truncating toward zero; x / 0 is 0 (numpy's result) and x / -1 wraps."""
    quotient: Expr = Binary("div", a, int_divisor(b))
    if b.dtype.is_signed:
        quotient = select(b.eq(-1), 0 - a, quotient)
    return select(b.eq(0), 0, quotient)


def int_rem(a: Expr, b: Expr) -> Expr:
    """C remainder (sign of the dividend); x % 0 is 0 (numpy's result), as is x % -1."""
    return Binary("rem", a, int_divisor(b))


def floor_mod(a: Expr, b: Expr) -> Expr:
    """numpy's ``mod``: the remainder of the floored quotient, with the divisor's sign. For
    floats a zero result takes b's sign and x mod 0 is NaN, as numpy's divmod gives."""
    if a.dtype.is_float:
        remainder: Expr = Binary("rem", a, b)
        signed_zero: Expr = select(b < 0, const(-0.0, a.dtype), 0.0)
    else:
        remainder = int_rem(a, b)
        signed_zero = const(0, a.dtype)
    wrong_sign = both(remainder.ne(0), Binary("xor", remainder < 0, b < 0))
    return select(wrong_sign, remainder + b, select(remainder.eq(0), signed_zero, remainder))


def loop_over(
    shape: Sequence[int],
    make_body: Callable[[list[Expr]], Stmt],
    prefix: str,
    work: int,
    vectorize: bool,
) -> Stmt:
    """Loops over every position of ``shape``, calling ``make_body`` with the index expressions.

    The innermost loop is VECTORIZE when ``vectorize`` (the body must then carry no dependence
    across positions). When ``work`` (the elements the whole nest touches) reaches
    PARALLEL_WORK, the outermost loop of extent > 1 is PARALLEL; if that is the innermost loop
    of a vectorized nest, it is split into parallel chunks of CHUNK vectorized positions."""
    rank = len(shape)
    variables = [Var(f"{prefix}{axis}") for axis in range(rank)]
    parallel = None
    if work >= PARALLEL_WORK:
        parallel = next((axis for axis, n in enumerate(shape) if n > 1), None)
    split = vectorize and parallel == rank - 1 and shape[-1] > CHUNK
    chunk = Var(f"{prefix}_chunk")
    indices: list[Expr] = list(variables)
    if split:
        indices[-1] = chunk * CHUNK + variables[-1]
    body = make_body(indices)
    for axis in reversed(range(rank)):
        kind = LoopKind.SERIAL
        extent: Expr = Const(int(shape[axis]), DType.I64)
        if axis == rank - 1 and vectorize:
            kind = LoopKind.VECTORIZE
        elif axis == parallel:
            kind = LoopKind.PARALLEL
        if split and axis == rank - 1:
            extent = binary("min", Const(CHUNK, DType.I64), extent - chunk * CHUNK)
        body = Loop(variables[axis], extent, body, kind)
        if split and axis == rank - 1:
            body = Loop(chunk, Const(-(-shape[axis] // CHUNK), DType.I64), body,
                        LoopKind.PARALLEL)
    return body
