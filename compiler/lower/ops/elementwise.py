"""Lowerings of the elementwise ops: one loop nest over the output whose body stores the op's
scalar expression of broadcast loads of its inputs.

``SCALAR`` maps each op to its expression builder and to the type its operands are computed in,
mirroring the reference kernels (compiler/reference/kernels/elementwise.py, which define the
semantics): float16/bfloat16 arithmetic in float32 rounded once at the store, integers in their
own type, the float maps that admit integers (Shrink) in float64, and exact ops (comparisons,
logic, min/max, selects, casts, custom functions) on the loaded values as they are.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...ir.op import Op
from ...ir.types import DType
from ..kernel_ir import (
    Binary,
    Buffer,
    Call,
    Compare,
    Const,
    Expr,
    ExternalFunction,
    Kernel,
    Stmt,
    Unary,
    as_expr,
    block,
    define_dim,
    select,
)
from ..registry import LowerContext, lowering
from .common import broadcast_checks, broadcast_extent, broadcast_index, const
from .elementwise_scalar import (
    divide,
    expm1,
    fabs,
    floor_mod,
    fmax,
    fmin,
    int_div,
    int_rem,
    loop_over,
    sigmoid,
    softplus,
    to_float,
    wide,
)

Attrs = Mapping[str, Any]
Operands = Sequence[Expr | None]


@dataclass(frozen=True)
class Scalar:
    """How one op computes an output element: ``build(operands, attrs)`` from its operands
    (absent optional inputs are None), each first cast to ``compute(its dtype)``."""

    build: Callable[[Operands, Attrs], Expr]
    compute: Callable[[DType], DType]


def own(dtype: DType) -> DType:
    """Exact ops compute in the operand's own type."""
    return dtype


def _unary(fn: Callable[[Expr, Attrs], Expr], compute: Callable[[DType], DType]) -> Scalar:
    return Scalar(lambda xs, attrs: fn(xs[0], attrs), compute)  # type: ignore[arg-type]


def _binary(fn: Callable[[Expr, Expr, Attrs], Expr], compute: Callable[[DType], DType]) -> Scalar:
    return Scalar(lambda xs, attrs: fn(xs[0], xs[1], attrs), compute)  # type: ignore[arg-type]


def _call(op: str) -> Callable[[Expr, Attrs], Expr]:
    return lambda x, attrs: Unary(op, x)


def _gelu(x: Expr, attrs: Attrs) -> Expr:
    if attrs["approximate"] == "tanh":
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * (x * x * x))
        # 0.5 * (1 + tanh(u)) = sigmoid(2u), without the cancellation of 1 + tanh(u) near -1.
        return x * sigmoid(2 * inner)
    return 0.5 * x * (1 + Unary("erf", divide(x, math.sqrt(2))))


def _shrink(x: Expr, attrs: Attrs) -> Expr:
    lambd, bias = attrs["lambd"], attrs["bias"]
    return select(x < -lambd, x + bias, select(x > lambd, x - bias, 0))


def _clamp01(x: Expr) -> Expr:
    return fmin(fmax(x, 0), 1)


FLOAT_MAPS: dict[Op, Callable[[Expr, Attrs], Expr]] = {
    **{op: _call(name) for op, name in (
        (Op.ACOS, "acos"), (Op.ACOSH, "acosh"), (Op.ASIN, "asin"), (Op.ASINH, "asinh"),
        (Op.ATAN, "atan"), (Op.ATANH, "atanh"), (Op.COS, "cos"), (Op.COSH, "cosh"),
        (Op.ERF, "erf"), (Op.EXP, "exp"), (Op.LOG, "log"), (Op.SIGMOID, "sigmoid"),
        (Op.SIN, "sin"), (Op.SINH, "sinh"), (Op.SQRT, "sqrt"), (Op.TAN, "tan"),
        (Op.TANH, "tanh"),
    )},
    Op.RECIPROCAL: lambda x, a: divide(1, x),
    Op.SOFTPLUS: lambda x, a: softplus(x),
    Op.SOFTSIGN: lambda x, a: divide(x, 1 + fabs(x)),
    Op.MISH: lambda x, a: x * Unary("tanh", softplus(x)),
    Op.GELU: _gelu,
    Op.ELU: lambda x, a: select(x < 0, a["alpha"] * expm1(x), x),
    Op.SELU: lambda x, a: a["gamma"] * select(x > 0, x, a["alpha"] * expm1(x)),
    Op.CELU: lambda x, a: fmax(x, 0) + fmin(0, a["alpha"] * expm1(divide(x, a["alpha"]))),
    Op.LEAKY_RELU: lambda x, a: select(x < 0, a["alpha"] * x, x),
    Op.HARD_SIGMOID: lambda x, a: _clamp01(a["alpha"] * x + a["beta"]),
    Op.HARD_SWISH: lambda x, a: x * _clamp01(divide(x, 6) + 0.5),
    Op.THRESHOLDED_RELU: lambda x, a: select(x > a["alpha"], x, 0),
    Op.SWISH: lambda x, a: x * sigmoid(a["alpha"] * x),
    Op.SHRINK: _shrink,
}


def _is_inf(x: Expr, attrs: Attrs) -> Expr:
    positive, negative = bool(attrs["detect_positive"]), bool(attrs["detect_negative"])
    if positive and negative:
        return Unary("isinf", x)
    if positive or negative:
        return x.eq(math.inf if positive else -math.inf)
    return const(False, DType.BOOL)


# Exact in the operand's own type.
EXACT_MAPS: dict[Op, Callable[[Expr, Attrs], Expr]] = {
    **{op: _call(name) for op, name in (
        (Op.ABS, "abs"), (Op.NEG, "neg"), (Op.SIGN, "sign"), (Op.CEIL, "ceil"),
        (Op.FLOOR, "floor"), (Op.ROUND, "round"), (Op.NOT, "not"), (Op.BITWISE_NOT, "not"),
        (Op.IS_NAN, "isnan"),
    )},
    Op.RELU: lambda x, a: fmax(x, 0),
    Op.IDENTITY: lambda x, a: x,
    Op.IS_INF: _is_inf,
    Op.CAST: lambda x, a: x.cast(a["to"]),
}


def _divide(a: Expr, b: Expr, attrs: Attrs) -> Expr:
    return Binary("div", a, b) if a.dtype.is_float else int_div(a, b)


def _mod(a: Expr, b: Expr, attrs: Attrs) -> Expr:
    if not attrs["fmod"]:
        return floor_mod(a, b)
    return Binary("rem", a, b) if a.dtype.is_float else int_rem(a, b)


def _pow(base: Expr, exponent: Expr, attrs: Attrs) -> Expr:
    """The result has the base's type: float bases take the exponent in their compute type;
    integer bases go through float64 for float exponents and stay exact for integer ones."""
    if base.dtype.is_float:
        if isinstance(exponent, Const):
            special = _float_power(base, float(exponent.value))
            if special is not None:
                return special
        return Binary("pow", base, exponent.cast(base.dtype))
    if exponent.dtype.is_float:
        return Binary("pow", base.cast(DType.F64), exponent.cast(DType.F64))
    return Binary("pow", base, exponent.cast(base.dtype))


def _float_power(x: Expr, exponent: float) -> Expr | None:
    """x ** exponent without the libm call for the exponents models use (x^2 and x^3 in
    GELU, x^0.5, reciprocals); None for the others. x * x and 1 / x round as pow does; x^3 as
    (x * x) * x is within an ulp of it (what onnxruntime computes too); x^0.5 is sqrt(x), as
    numpy computes a power by one 0.5 (sqrt(-0) = -0, sqrt(-inf) = NaN)."""
    if exponent == 0:
        return const(1, x.dtype)  # even for NaN
    if exponent == 1:
        return x
    if exponent == 2:
        return x * x
    if exponent == 3:
        return x * x * x
    if exponent == -1:
        return divide(1, x)
    if exponent == 0.5:
        return Unary("sqrt", x)
    return None


def _compare(op: str) -> Callable[[Expr, Expr, Attrs], Expr]:
    return lambda a, b, attrs: Compare(op, a, b)


def _bits(op: str) -> Callable[[Expr, Expr, Attrs], Expr]:
    return lambda a, b, attrs: Binary(op, a, b)


ARITHMETIC: dict[Op, Callable[[Expr, Expr, Attrs], Expr]] = {
    Op.ADD: lambda a, b, _: a + b,
    Op.SUB: lambda a, b, _: a - b,
    Op.MUL: lambda a, b, _: a * b,
    Op.DIV: _divide,
    Op.MOD: _mod,
    Op.PRELU: lambda x, slope, _: select(x < 0, slope * x, x),
    Op.SWIGLU: lambda a, b, attrs: a * sigmoid(attrs["alpha"] * a) * b,
}

EXACT_BINARY: dict[Op, Callable[[Expr, Expr, Attrs], Expr]] = {
    Op.EQUAL: _compare("eq"),
    Op.GREATER: _compare("gt"),
    Op.LESS: _compare("lt"),
    Op.GREATER_OR_EQUAL: _compare("ge"),
    Op.LESS_OR_EQUAL: _compare("le"),
    Op.AND: _bits("and"),
    Op.OR: _bits("or"),
    Op.XOR: _bits("xor"),
    Op.BITWISE_AND: _bits("and"),
    Op.BITWISE_OR: _bits("or"),
    Op.BITWISE_XOR: _bits("xor"),
    Op.BIT_SHIFT: lambda a, b, attrs: _shift(a, b, attrs["direction"] == "LEFT"),
}


def _shift(a: Expr, b: Expr, left: bool) -> Expr:
    """numpy's shifts: a count outside [0, bits) gives 0, except a signed right shift, which
    fills with the sign (the arithmetic shift by bits - 1, where the kernel IR's gives 0)."""
    if left or not a.dtype.is_signed:
        return Binary("shl" if left else "shr", a, b)
    top = a.dtype.itemsize * 8 - 1
    return Binary("shr", a, select(Binary("or", b < 0, b > top), top, b))


def _fold(combine: Callable[[Expr, Expr], Expr]) -> Callable[[Operands, Attrs], Expr]:
    return lambda xs, attrs: functools.reduce(combine, [x for x in xs if x is not None])


def _mean(xs: Operands, attrs: Attrs) -> Expr:
    present = [x for x in xs if x is not None]
    return divide(functools.reduce(Expr.__add__, present), len(present))


def _clip(xs: Operands, attrs: Attrs) -> Expr:
    # max(x, low) then min(., high): with low > high every element becomes high (ONNX).
    x, low, high = (list(xs) + [None, None])[:3]
    assert x is not None
    result = x if low is None else fmax(x, low)
    return result if high is None else fmin(result, high)


def _custom(xs: Operands, attrs: Attrs) -> Expr:
    args = [x for x in xs if x is not None]
    return Call(ExternalFunction.of_op(attrs, [x.dtype for x in args]), tuple(args))


SCALAR: dict[Op, Scalar] = {
    **{op: _unary(fn, to_float) for op, fn in FLOAT_MAPS.items()},
    **{op: _unary(fn, own) for op, fn in EXACT_MAPS.items()},
    **{op: _binary(fn, wide) for op, fn in ARITHMETIC.items()},
    **{op: _binary(fn, own) for op, fn in EXACT_BINARY.items()},
    Op.POW: _binary(_pow, wide),
    Op.MAX: Scalar(_fold(fmax), own),
    Op.MIN: Scalar(_fold(fmin), own),
    Op.SUM: Scalar(_fold(Expr.__add__), wide),
    Op.MEAN: Scalar(_mean, wide),
    Op.WHERE: Scalar(lambda xs, attrs: select(*xs), own),  # type: ignore[arg-type]
    Op.CLIP: Scalar(_clip, own),
    # the carried function takes its operands as they are and returns the op's type
    Op.CUSTOM_ELEMENTWISE: Scalar(_custom, own),
}


def elementwise_expr(op: Op, attrs: Attrs, operands: Operands, out_dtype: DType) -> Expr:
    """One output element of elementwise ``op`` from its operands' elements (None for absent
    optional inputs), each cast to the op's compute type, rounded to ``out_dtype``."""
    spec = SCALAR[op]
    values = [None if x is None else x.cast(spec.compute(x.dtype)) for x in operands]
    return spec.build(values, attrs).cast(out_dtype)


@lowering(*SCALAR)
def lower_elementwise(ctx: LowerContext) -> list[Kernel]:
    """One kernel: for each output position, the op's expression of its operands' elements
    (numpy broadcasting), rounded to the output type. Output extents the type rule could not
    settle (two unrelated run-time extents) are defined first by a shape kernel."""
    out = _output_view(ctx)
    nest = loop_over(out.shape, elementwise_store(ctx, out), "i", out.numel, vectorize=True)
    return [*broadcast_shape_kernels(ctx, [b for b in ctx.inputs if b is not None]),
            ctx.kernel(broadcast_checks(out.shape, ctx.inputs, nest, ctx.node.describe()))]


def _output_view(ctx: LowerContext) -> Buffer:
    """The output, seen (same memory) with each undefined extent that only one operand can set
    (the others have extent 1 there or lack the axis) replaced by that operand's extent: the
    shape kernel makes them equal, and the kernel then indexes that operand directly (no
    run-time select, axes it can merge)."""
    out = ctx.output()
    undefined = {id(d) for d in ctx.undefined_dims}
    shape = list(out.shape)
    for axis, extent in enumerate(out.shape):
        if id(extent) not in undefined:
            continue
        offset = len(out.shape) - axis
        candidates = [b.shape[len(b.shape) - offset] for b in ctx.inputs
                      if b is not None and len(b.shape) >= offset]
        looped = [e for e in candidates if not (isinstance(e, int) and e == 1)]
        if len(looped) == 1:
            shape[axis] = looped[0]
    return Buffer(out.name, out.dtype, tuple(shape))


def broadcast_shape_kernels(ctx: LowerContext, operands: Sequence[Buffer]) -> list[Kernel]:
    """The shape kernel defining the node's undefined output extents (``ctx.undefined_dims``)
    as the numpy broadcast of ``operands``' extents on each axis (none when all are defined)."""
    if not ctx.undefined_dims:
        return []
    undefined = {id(d) for d in ctx.undefined_dims}
    stmts: list[Stmt] = []
    for out in (b for b in ctx.outputs if b is not None):
        for axis, extent in enumerate(out.shape):
            if id(extent) not in undefined:
                continue
            offset = len(out.shape) - axis
            extents = [b.shape[len(b.shape) - offset] for b in operands
                       if len(b.shape) >= offset]
            found, value = broadcast_extent(extents, ctx.node.describe(), f"extent{axis}")
            stmts.append(block(found, define_dim(extent, value)))
            undefined.discard(id(extent))
    return [ctx.kernel(block(stmts), inputs=[], outputs=[])]


def elementwise_store(ctx: LowerContext, view: Buffer | None = None
                      ) -> Callable[[Sequence[Expr]], Stmt]:
    """The store of the elementwise op ``ctx`` lowers at an output index (of ``view``, the
    output seen in another shape, when given). One-element constant operands are immediates
    (the expression can then specialize on them, e.g. Pow by 2)."""
    out = ctx.output() if view is None else view
    operands = [ctx.input(i) if ctx.has_input(i) else None for i in range(len(ctx.inputs))]
    immediates = [_immediate(ctx.const(i)) for i in range(len(ctx.inputs))]

    def store(index: Sequence[Expr]) -> Stmt:
        values = [fixed if b is None or fixed is not None else
                  b.load(*broadcast_index(index, b, out.shape))
                  for b, fixed in zip(operands, immediates, strict=True)]
        return out.store(index, elementwise_expr(ctx.op, ctx.attrs, values, out.dtype))

    return store


def _immediate(data: np.ndarray | None) -> Expr | None:
    if data is None or data.size != 1:
        return None
    return as_expr(data.reshape(-1)[0].item(), DType.from_numpy(data.dtype))
