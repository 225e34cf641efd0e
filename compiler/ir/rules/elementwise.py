"""Type rules of the elementwise ops: unary maps, broadcasting binaries, comparisons, logic,
variadic Max/Min/Sum/Mean, Where, Clip, Pow, PRelu, SwiGLU and Cast.

The element-type constraints are those of the ONNX operators (restricted to the IR's dtypes);
the few rule shapes below are shared by every op through tables keyed by ``Op``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..op import Group, Op
from ..schema import (
    DTYPE_ATTR,
    FLOAT,
    INT,
    REQUIRED,
    STRING,
    AttrSpec,
    InferContext,
    TypeRule,
    define,
)
from ..shapes import broadcast, same_dim
from ..types import ALL, FLOATS, INTS, NUMERIC, DType, TensorType

SIGNED = FLOATS | {DType.I8, DType.I16, DType.I32, DType.I64}
BOOL = frozenset({DType.BOOL})
# PRelu, and Pow's base, admit only these integer types besides floats.
PRELU_TYPES = FLOATS | {DType.I32, DType.I64, DType.U32, DType.U64}
POW_BASE = FLOATS | {DType.I32, DType.I64}
SHRINK_TYPES = NUMERIC - {DType.BF16}


def f32(value: float) -> float:
    """ONNX float attributes are float32: defaults must be the float32-rounded values."""
    return float(np.float32(value))


def _alpha(default: float) -> dict[str, AttrSpec]:
    return {"alpha": FLOAT(f32(default))}


# Unary ops whose output has the input's type: op -> (allowed element types, attributes).
UNARY: dict[Op, tuple[frozenset[DType], dict[str, AttrSpec]]] = {
    **{op: (FLOATS, {}) for op in (
        Op.ACOS, Op.ACOSH, Op.ASIN, Op.ASINH, Op.ATAN, Op.ATANH, Op.CEIL, Op.COS, Op.COSH,
        Op.ERF, Op.EXP, Op.FLOOR, Op.LOG, Op.RECIPROCAL, Op.ROUND, Op.SIGMOID, Op.SIN, Op.SINH,
        Op.SQRT, Op.TAN, Op.TANH, Op.SOFTPLUS, Op.SOFTSIGN, Op.MISH, Op.HARD_SWISH,
    )},
    Op.ABS: (NUMERIC, {}),
    Op.SIGN: (NUMERIC, {}),
    Op.NEG: (SIGNED, {}),
    Op.RELU: (SIGNED, {}),
    Op.GELU: (FLOATS, {"approximate": STRING("none")}),
    Op.ELU: (FLOATS, _alpha(1.0)),
    Op.CELU: (FLOATS, _alpha(1.0)),
    Op.SWISH: (FLOATS, _alpha(1.0)),
    Op.THRESHOLDED_RELU: (FLOATS, _alpha(1.0)),
    Op.LEAKY_RELU: (FLOATS, _alpha(0.01)),
    Op.SELU: (FLOATS, {"alpha": FLOAT(f32(1.6732632423543772)),
                       "gamma": FLOAT(f32(1.0507009873554805))}),
    Op.HARD_SIGMOID: (FLOATS, {"alpha": FLOAT(f32(0.2)), "beta": FLOAT(0.5)}),
    Op.SHRINK: (SHRINK_TYPES, {"bias": FLOAT(0.0), "lambd": FLOAT(0.5)}),
    Op.IDENTITY: (ALL, {}),
    Op.NOT: (BOOL, {}),
    Op.BITWISE_NOT: (INTS, {}),
}

# Predicates: float in, bool out.
PREDICATES: dict[Op, dict[str, AttrSpec]] = {
    Op.IS_NAN: {},
    Op.IS_INF: {"detect_negative": INT(1), "detect_positive": INT(1)},
}

# Broadcasting binary and variadic ops: op -> (allowed types, output type or None for the
# input's, operand spec, attributes). All operands share one element type.
_PAIR = ("A", "B")
BROADCAST: dict[Op, tuple[frozenset[DType], DType | None, Sequence[str], dict[str, AttrSpec]]] = {
    **{op: (NUMERIC, None, _PAIR, {}) for op in (Op.ADD, Op.SUB, Op.MUL, Op.DIV)},
    Op.MOD: (NUMERIC, None, _PAIR, {"fmod": INT(0)}),
    Op.BIT_SHIFT: (INTS, None, _PAIR, {"direction": STRING(REQUIRED)}),
    **{op: (INTS, None, _PAIR, {}) for op in (Op.BITWISE_AND, Op.BITWISE_OR, Op.BITWISE_XOR)},
    **{op: (BOOL, DType.BOOL, _PAIR, {}) for op in (Op.AND, Op.OR, Op.XOR)},
    Op.EQUAL: (ALL, DType.BOOL, _PAIR, {}),
    **{op: (NUMERIC, DType.BOOL, _PAIR, {}) for op in (
        Op.GREATER, Op.LESS, Op.GREATER_OR_EQUAL, Op.LESS_OR_EQUAL,
    )},
    Op.MAX: (NUMERIC, None, ("data*",), {}),
    Op.MIN: (NUMERIC, None, ("data*",), {}),
    Op.SUM: (FLOATS, None, ("data*",), {}),
    Op.MEAN: (FLOATS, None, ("data*",), {}),
}

# Attributes that take one of a few values: op -> (attribute, allowed values).
CHOICES: dict[Op, tuple[str, tuple[Any, ...]]] = {
    Op.GELU: ("approximate", ("none", "tanh")),
    Op.MOD: ("fmod", (0, 1)),
    Op.BIT_SHIFT: ("direction", ("LEFT", "RIGHT")),
}


def check_choice(ctx: InferContext) -> None:
    """Fail when the op's enumerated attribute (if it has one) holds a value outside its set."""
    if ctx.op not in CHOICES:
        return
    name, allowed = CHOICES[ctx.op]
    if ctx.attr(name) not in allowed:
        raise ctx.fail(f"attribute {name!r} is {ctx.attr(name)!r}; expected one of {list(allowed)}")


def present(ctx: InferContext) -> list[int]:
    return [i for i in range(len(ctx.inputs)) if ctx.has_input(i)]


def same_dtype(ctx: InferContext, indices: Sequence[int]) -> DType:
    """The common element type of the given inputs; fails naming the first that differs."""
    first = ctx.input(indices[0]).dtype
    for i in indices[1:]:
        found = ctx.input(i).dtype
        if found != first:
            raise ctx.fail(
                f"input {i} has element type {found.value} but input {indices[0]} has "
                f"{first.value}; they must match"
            )
    return first


def unary_rule(allowed: frozenset[DType], out: DType | None = None) -> TypeRule:
    def rule(ctx: InferContext) -> list[TensorType]:
        """Elementwise map: the output has the input's shape."""
        dtype = ctx.require_dtype(0, allowed)
        check_choice(ctx)
        return [TensorType(out or dtype, ctx.input(0).shape)]

    return rule


def broadcast_rule(allowed: frozenset[DType], out: DType | None) -> TypeRule:
    def rule(ctx: InferContext) -> list[TensorType]:
        """Multidirectional (numpy) broadcast of operands sharing one element type."""
        indices = present(ctx)
        dtype = ctx.require_dtype(0, allowed)
        same_dtype(ctx, indices)
        check_choice(ctx)
        shape = broadcast(*(ctx.input(i).shape for i in indices))
        return [TensorType(out or dtype, shape)]

    return rule


def _register(
    op: Op, inputs: Sequence[str], attrs: Mapping[str, AttrSpec], rule: TypeRule
) -> None:
    define(op, inputs, ["Y"], attrs, Group.ELEMENTWISE)(rule)


for _op, (_allowed, _attrs) in UNARY.items():
    _register(_op, ["X"], _attrs, unary_rule(_allowed))
for _op, _attrs in PREDICATES.items():
    _register(_op, ["X"], _attrs, unary_rule(FLOATS, DType.BOOL))
for _op, (_allowed, _out, _inputs, _attrs) in BROADCAST.items():
    _register(_op, _inputs, _attrs, broadcast_rule(_allowed, _out))


@define(Op.CAST, ["input"], ["output"],
        {"to": DTYPE_ATTR(REQUIRED), "saturate": INT(1), "round_mode": STRING("up")},
        Group.ELEMENTWISE)
def _cast(ctx: InferContext) -> list[TensorType]:
    """Elementwise conversion to the element type ``to`` (``saturate`` and ``round_mode`` only
    concern float8 targets, which are not IR types)."""
    return [TensorType(ctx.attr("to"), ctx.input(0).shape)]


@define(Op.POW, ["X", "Y"], ["Z"], {}, Group.ELEMENTWISE)
def _pow(ctx: InferContext) -> list[TensorType]:
    """Broadcast power; the exponent may have another numeric type, the result has the base's."""
    dtype = ctx.require_dtype(0, POW_BASE)
    ctx.require_dtype(1, NUMERIC)
    return [TensorType(dtype, broadcast(ctx.input(0).shape, ctx.input(1).shape))]


@define(Op.PRELU, ["X", "slope"], ["Y"], {}, Group.ELEMENTWISE)
def _prelu(ctx: InferContext) -> list[TensorType]:
    """``slope`` broadcasts unidirectionally to ``X``; the output has X's type."""
    x = ctx.input(0)
    ctx.require_dtype(0, PRELU_TYPES)
    same_dtype(ctx, [0, 1])
    slope = ctx.input(1).shape
    fits = len(slope) <= x.rank and all(
        d == 1 or same_dim(d, xd) for d, xd in zip(slope[::-1], x.shape[::-1], strict=False)
    )
    if not fits:
        raise ctx.fail(
            f"slope shape [{','.join(map(str, slope))}] does not broadcast to X shape "
            f"[{','.join(map(str, x.shape))}]"
        )
    return [x]


@define(Op.SWIGLU, ["A", "B"], ["Y"], _alpha(1.0), Group.ELEMENTWISE)
def _swiglu(ctx: InferContext) -> list[TensorType]:
    """``Swish_alpha(A) * B`` with A and B of identical shapes (no broadcasting)."""
    ctx.require_dtype(0, FLOATS)
    dtype = same_dtype(ctx, [0, 1])
    a, b = ctx.input(0).shape, ctx.input(1).shape
    if len(a) != len(b) or not all(same_dim(p, q) for p, q in zip(a, b, strict=True)):
        raise ctx.fail(
            f"A [{','.join(map(str, a))}] and B [{','.join(map(str, b))}] must have the same shape"
        )
    # Prefer the more specific dim of the two (an int over a symbol).
    shape = tuple(q if isinstance(q, int) else p for p, q in zip(a, b, strict=True))
    return [TensorType(dtype, shape)]


@define(Op.WHERE, ["condition", "X", "Y"], ["output"], {}, Group.ELEMENTWISE)
def _where(ctx: InferContext) -> list[TensorType]:
    """Select from X where condition (bool) holds, else from Y; all three broadcast."""
    ctx.require_dtype(0, BOOL)
    dtype = same_dtype(ctx, [1, 2])
    return [TensorType(dtype, broadcast(*(ctx.input(i).shape for i in range(3))))]


@define(Op.CLIP, ["input", "min?", "max?"], ["output"], {}, Group.ELEMENTWISE)
def _clip(ctx: InferContext) -> list[TensorType]:
    """Clamp to the optional scalar bounds ``min`` and ``max``; output has the input's type."""
    x = ctx.input(0)
    ctx.require_dtype(0, NUMERIC)
    same_dtype(ctx, present(ctx))
    for i in present(ctx)[1:]:
        bound = ctx.input(i)
        if bound.numel is not None and bound.numel != 1:
            raise ctx.fail(f"bound {('min', 'max')[i - 1]} must be a scalar, got {bound}")
    return [x]
