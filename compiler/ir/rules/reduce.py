"""Type rules of the reduce ops: Reduce* (axes as an optional input), ArgMax/ArgMin,
Softmax/LogSoftmax/Hardmax, CumSum/CumProd and LpNormalization.

A Reduce* whose axes input is not a compile-time constant keeps its rank with ``keepdims=1``
(each dim becomes 1 or unknown); with ``keepdims=0`` its rank is the input's less the static
length of the axes input (all dims unknown), and the rule fails when that length is symbolic.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..op import Group, Op
from ..schema import INT, InferContext, TypeRule, define
from ..shapes import normalize_axes, normalize_axis
from ..types import FLOATS, INTS, UNKNOWN, Dim, DType, TensorType

I64 = frozenset({DType.I64})
AXIS_TYPES = frozenset({DType.I32, DType.I64})
# The ONNX type constraints of each family, restricted to the IR's element types.
SUM_LIKE = FLOATS | {DType.I32, DType.I64, DType.U32, DType.U64}
MIN_MAX = SUM_LIKE | {DType.I8, DType.U8, DType.BOOL}
ARG_TYPES = FLOATS | INTS

REDUCE: dict[Op, frozenset[DType]] = {
    Op.REDUCE_L1: SUM_LIKE,
    Op.REDUCE_L2: SUM_LIKE,
    Op.REDUCE_LOG_SUM: FLOATS,
    Op.REDUCE_LOG_SUM_EXP: FLOATS,
    Op.REDUCE_MAX: MIN_MAX,
    Op.REDUCE_MEAN: SUM_LIKE,
    Op.REDUCE_MIN: MIN_MAX,
    Op.REDUCE_PROD: SUM_LIKE,
    Op.REDUCE_SUM: SUM_LIKE,
    Op.REDUCE_SUM_SQUARE: SUM_LIKE,
}


def reduced_shape(shape: Sequence[Dim], axes: Sequence[int], keepdims: bool) -> tuple[Dim, ...]:
    """``shape`` with ``axes`` (normalized) set to 1, or dropped without ``keepdims``."""
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _axes_input(ctx: InferContext) -> None:
    axes = ctx.input(1)
    ctx.require_dtype(1, I64)
    if axes.rank > 1:
        raise ctx.fail(f"axes must be a 1-D tensor, got {axes}")


def reduce_rule(allowed: frozenset[DType]) -> TypeRule:
    def rule(ctx: InferContext) -> list[TensorType]:
        """Reduce over the axes input (all axes when absent or empty, unless
        ``noop_with_empty_axes``); reduced dims become 1, or vanish without ``keepdims``."""
        data = ctx.input(0)
        dtype = ctx.require_dtype(0, allowed)
        keepdims = bool(ctx.attr("keepdims"))
        if ctx.has_input(1):
            _axes_input(ctx)
        axes = ctx.const(1)
        # An axes input of static length 0 is empty whatever its (unknown) producer.
        if ctx.has_input(1) and axes is None and ctx.input(1).shape != (0,):
            if keepdims:
                return [TensorType(dtype, tuple(1 if d == 1 else UNKNOWN for d in data.shape))]
            count = ctx.input(1).shape[0] if ctx.input(1).rank else 1
            if not isinstance(count, int):
                raise ctx.fail(
                    "with keepdims=0 the axes input must be a compile-time constant or have a "
                    "static length, as the output rank depends on it"
                )
            if count > data.rank:
                raise ctx.fail(f"{count} axes given for rank {data.rank}")
            # Which dims go is only known at run time: the rank is known, the extents are not.
            return [TensorType(dtype, (UNKNOWN,) * (data.rank - count))]
        if axes is None or axes.size == 0:
            chosen: tuple[int, ...] = (
                () if ctx.attr("noop_with_empty_axes") else tuple(range(data.rank))
            )
        else:
            chosen = normalize_axes(axes.reshape(-1).tolist(), data.rank, "axes entry")
        return [TensorType(dtype, reduced_shape(data.shape, chosen, keepdims))]

    return rule


for _op, _allowed in REDUCE.items():
    define(_op, ["data", "axes?"], ["reduced"],
           {"keepdims": INT(1), "noop_with_empty_axes": INT(0)}, Group.REDUCE)(
        reduce_rule(_allowed))


def _arg_reduce(ctx: InferContext) -> list[TensorType]:
    """Index (i64) of the extreme element along ``axis``; that dim becomes 1 or vanishes."""
    data = ctx.input(0)
    ctx.require_dtype(0, ARG_TYPES)
    axis = normalize_axis(ctx.attr("axis"), data.rank)
    return [TensorType(DType.I64, reduced_shape(data.shape, (axis,), bool(ctx.attr("keepdims"))))]


for _op in (Op.ARGMAX, Op.ARGMIN):
    define(_op, ["data"], ["reduced"],
           {"axis": INT(0), "keepdims": INT(1), "select_last_index": INT(0)}, Group.REDUCE)(
        _arg_reduce)


def _along_axis(ctx: InferContext) -> list[TensorType]:
    """Normalizes along ``axis``: the output has the input's type."""
    data = ctx.input(0)
    ctx.require_dtype(0, FLOATS)
    normalize_axis(ctx.attr("axis"), data.rank)
    if ctx.op is Op.LP_NORMALIZATION and ctx.attr("p") not in (1, 2):
        raise ctx.fail(f"attribute 'p' is {ctx.attr('p')}; only 1 and 2 are supported")
    return [data]


for _op in (Op.SOFTMAX, Op.LOG_SOFTMAX, Op.HARDMAX):
    define(_op, ["input"], ["output"], {"axis": INT(-1)}, Group.REDUCE)(_along_axis)
define(Op.LP_NORMALIZATION, ["input"], ["output"], {"axis": INT(-1), "p": INT(2)},
       Group.REDUCE)(_along_axis)


def _scan(ctx: InferContext) -> list[TensorType]:
    """Running sum/product along the axis input (a scalar); the output has x's type."""
    data = ctx.input(0)
    ctx.require_dtype(0, SUM_LIKE)
    ctx.require_dtype(1, AXIS_TYPES)
    axis_type = ctx.input(1)
    if axis_type.numel is not None and axis_type.numel != 1:
        raise ctx.fail(f"axis must be a scalar, got {axis_type}")
    axis = ctx.const(1)
    if axis is not None:
        normalize_axis(int(axis.reshape(-1)[0]), data.rank)
    return [data]


for _op in (Op.CUMSUM, Op.CUMPROD):
    define(_op, ["x", "axis"], ["y"], {"exclusive": INT(0), "reverse": INT(0)}, Group.REDUCE)(
        _scan)
