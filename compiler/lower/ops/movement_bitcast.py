"""Lowering of BitCast: the same bits read as another element type of the same width.

The kernel IR converts values, not bits, so the bit patterns are spelled out with exact
arithmetic: integer to integer (and bool) is a wrapping conversion; a float's bits are built
from its sign, an exponent found by exact power-of-two scaling and its mantissa; an integer's
bits become a float as ``(mantissa + 2^M) * 2^(exponent - bias - M)``. Every step is exact in
f64. NaNs become the canonical quiet NaN (payloads are not kept).
"""

from __future__ import annotations

from ...ir.op import Op
from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Binary,
    Declare,
    Expr,
    If,
    Kernel,
    Stmt,
    Unary,
    Var,
    block,
    select,
)
from ..registry import LowerContext, lowering
from .common import const, idx
from .movement_loops import defining, logical, loops

# (exponent bits, mantissa bits) of each float format.
_FORMATS = {DType.F16: (5, 10), DType.BF16: (8, 7), DType.F32: (8, 23), DType.F64: (11, 52)}
_F64 = DType.F64
# Power-of-two scaling steps: enough to bring any f64 (subnormals included) into [1, 2).
_UP_STEPS = (512, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1)
_DOWN_STEPS = (512, 256, 128, 64, 32, 16, 8, 4, 2, 1)


def _f64(value: float) -> Expr:
    return const(value, _F64)


def _bits_of(value: Expr, dtype: DType, prefix: str) -> tuple[list[Stmt], Var]:
    """Statements computing the bit pattern (as i64) of float ``value`` of format ``dtype``."""
    exp_bits, man_bits = _FORMATS[dtype]
    bias, width = (1 << (exp_bits - 1)) - 1, exp_bits + man_bits + 1
    v, s, e, bits = (Var(f"{prefix}v", _F64), Var(f"{prefix}s", _F64), Var(f"{prefix}e"),
                     Var(f"{prefix}bits"))
    stmts: list[Stmt] = [Declare(v, value.cast(_F64)), Declare(s, Unary("abs", v)),
                         Declare(e, idx(0))]
    for k in _DOWN_STEPS:
        stmts.append(If(s >= 2.0**k, block(Assign(s, s * 2.0**-k), Assign(e, e + k))))
    for k in _UP_STEPS:
        stmts.append(If(logical("and", [s < 2.0 ** (1 - k), s > 0.0]),
                        block(Assign(s, s * 2.0**k), Assign(e, e - k))))
    top = (1 << exp_bits) - 1
    # Infinities and NaN take their own branch, normal numbers theirs; stand-ins keep every
    # conversion finite (both sides of a select are evaluated).
    special = logical("or", [Unary("isinf", v), Unary("isnan", v)])
    mantissa = select(special, _f64(1.0), s)
    tiny = select(logical("or", [special, e + bias >= 1]), _f64(0.0), Unary("abs", v))
    normal = Binary("or", (e + bias) * (1 << man_bits),
                    ((mantissa - 1.0) * float(1 << man_bits)).cast(DType.I64))
    # Two factors: 2^(bias - 1 + M) itself overflows f64 for f64 data.
    half = (bias - 1 + man_bits) // 2
    subnormal = (tiny * 2.0**half * 2.0 ** (bias - 1 + man_bits - half)).cast(DType.I64)
    finite = select(v.eq(0.0), idx(0), select(e + bias >= 1, normal, subnormal))
    magnitude = select(Unary("isnan", v), idx((top << man_bits) | (1 << (man_bits - 1))),
                       select(Unary("isinf", v), idx(top << man_bits), finite))
    negative = logical("or", [v < 0.0, logical("and", [v.eq(0.0), _f64(1.0) / v < 0.0])])
    sign = select(negative, idx(1), idx(0))
    stmts.append(Declare(bits, Binary("or", Binary("shl", sign, idx(width - 1)), magnitude)))
    return stmts, bits


def _float_of(bits: Expr, dtype: DType) -> Expr:
    """The float of format ``dtype`` whose bit pattern is ``bits`` (i64, low bits used)."""
    exp_bits, man_bits = _FORMATS[dtype]
    bias, width = (1 << (exp_bits - 1)) - 1, exp_bits + man_bits + 1
    top = (1 << exp_bits) - 1
    e = Binary("and", Binary("shr", bits, idx(man_bits)), idx(top))
    m = Binary("and", bits, idx((1 << man_bits) - 1))
    negative = Binary("and", Binary("shr", bits, idx(width - 1)), idx(1)).eq(1)

    def power(exponent: Expr) -> Expr:
        return Binary("pow", _f64(2.0), exponent.cast(_F64))

    normal = (m + (1 << man_bits)).cast(_F64) * power(e - (bias + man_bits))
    subnormal = m.cast(_F64) * 2.0 ** (1 - bias - man_bits)
    special = select(m.eq(0), _f64(float("inf")), _f64(float("nan")))
    magnitude = select(e.eq(0), subnormal, select(e.eq(top), special, normal))
    return select(negative, -magnitude, magnitude).cast(dtype)


@lowering(Op.BIT_CAST)
def lower_bit_cast(ctx: LowerContext) -> list[Kernel]:
    data, out = ctx.input(0), ctx.output()
    source, target = data.dtype, out.dtype

    def body(o: list[Expr]) -> Stmt:
        value = data.load(*o)
        if not source.is_float and not target.is_float:
            return out.store(o, value.cast(target))
        if source.is_float:
            stmts, bits = _bits_of(value, source, "b")
            result = _float_of(bits, target) if target.is_float else bits.cast(target)
            return block(stmts, out.store(o, result))
        return out.store(o, _float_of(_widened(value, source), target))

    nest = loops(out.shape, body, "b", vectorize=False)
    return [*defining(ctx, data.shape), ctx.kernel(nest)]


def _widened(value: Expr, dtype: DType) -> Expr:
    """Integer bits as a non-negative i64 (64-bit patterns keep their sign bit in place)."""
    if dtype.itemsize == 8:
        return value.cast(DType.I64)
    return Binary("and", value.cast(DType.I64), idx((1 << (dtype.itemsize * 8)) - 1))
