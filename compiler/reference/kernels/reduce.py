"""Numpy kernels of the reduce ops: Reduce*, ArgMax/ArgMin, Softmax/LogSoftmax/Hardmax,
CumSum/CumProd and LpNormalization.

float16 and bfloat16 data accumulate in float32 and are rounded once at the end (Softmax and
LogSoftmax excepted: they round each step, as the ONNX reference does). Reductions
over an empty set give the ONNX identities: 0 for sums, 1 for products, -inf (or the type's
lowest value) for Max, +inf (or its highest) for Min, -inf for LogSum(Exp), NaN for Mean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ...ir.op import Op
from .elementwise import widen
from .registry import KernelContext, kernel

Axes = tuple[int, ...]


def _normalize(ctx: KernelContext, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ctx.fail(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def _lowest(dtype: np.dtype) -> Any:
    if dtype.kind == "f":
        return -np.inf
    return False if dtype.kind == "b" else np.iinfo(dtype).min


def _highest(dtype: np.dtype) -> Any:
    if dtype.kind == "f":
        return np.inf
    return True if dtype.kind == "b" else np.iinfo(dtype).max


def _sum(x: np.ndarray, axes: Axes) -> np.ndarray:
    # dtype= keeps int32 sums in int32 (numpy would widen them to int64).
    return np.sum(x, axis=axes, keepdims=True, dtype=x.dtype)


def _log_sum_exp(x: np.ndarray, axes: Axes) -> np.ndarray:
    peak = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
    # Shifting by an infinite peak would give inf - inf; such slices need no shift.
    shift = np.where(np.isfinite(peak), peak, 0)
    return np.log(_sum(np.exp(x - shift), axes)) + shift


def _mean(x: np.ndarray, axes: Axes) -> np.ndarray:
    count = int(np.prod([x.shape[a] for a in axes]))
    # The empty mean is 0/0 = NaN; integer means truncate toward zero, as in C.
    total = np.sum(x, axis=axes, keepdims=True,
                   dtype=np.float64 if x.dtype.kind in "iu" else x.dtype)
    return np.asarray(total / count)


# Each reduction keeps the reduced dims (dropped afterwards when keepdims=0).
REDUCE: dict[Op, Callable[[np.ndarray, Axes], np.ndarray]] = {
    Op.REDUCE_SUM: _sum,
    Op.REDUCE_SUM_SQUARE: lambda x, axes: _sum(x * x, axes),
    Op.REDUCE_L1: lambda x, axes: _sum(np.abs(x), axes),
    Op.REDUCE_L2: lambda x, axes: np.sqrt(_sum(x * x, axes)),
    Op.REDUCE_LOG_SUM: lambda x, axes: np.log(_sum(x, axes)),
    Op.REDUCE_LOG_SUM_EXP: _log_sum_exp,
    Op.REDUCE_MEAN: _mean,
    Op.REDUCE_PROD: lambda x, axes: np.prod(x, axis=axes, keepdims=True, dtype=x.dtype),
    Op.REDUCE_MAX: lambda x, axes: np.max(x, axis=axes, keepdims=True,
                                          initial=_lowest(x.dtype)),
    Op.REDUCE_MIN: lambda x, axes: np.min(x, axis=axes, keepdims=True,
                                          initial=_highest(x.dtype)),
}


@kernel(*REDUCE)
def _reduce(ctx: KernelContext, data: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
    if axes is None or axes.size == 0:
        chosen: Axes = () if ctx.attr("noop_with_empty_axes") else tuple(range(data.ndim))
    else:
        chosen = tuple(sorted({_normalize(ctx, int(a), data.ndim) for a in axes.reshape(-1)}))
        if len(chosen) != axes.size:
            raise ctx.fail(f"repeated entries in axes {axes.tolist()}")
    result = REDUCE[ctx.op](widen(data), chosen)
    if not ctx.attr("keepdims"):
        result = np.squeeze(result, axis=chosen)
    return np.asarray(result).astype(ctx.out_dtype())


@kernel(Op.ARGMAX, Op.ARGMIN)
def _arg_reduce(ctx: KernelContext, data: np.ndarray) -> np.ndarray:
    axis = _normalize(ctx, ctx.attr("axis"), data.ndim)
    if data.shape[axis] == 0:
        raise ctx.fail(f"cannot take the {ctx.op.value} of an empty axis {axis}")
    find = np.argmax if ctx.op is Op.ARGMAX else np.argmin
    keepdims = bool(ctx.attr("keepdims"))
    if not ctx.attr("select_last_index"):
        return find(data, axis=axis, keepdims=keepdims).astype(np.int64)
    # The last extreme is the first one in the reversed axis.
    flipped = find(np.flip(data, axis), axis=axis, keepdims=keepdims)
    return (data.shape[axis] - 1 - flipped).astype(np.int64)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _hardmax(x: np.ndarray, axis: int) -> np.ndarray:
    """1 at the first maximum along ``axis``, 0 elsewhere."""
    if x.shape[axis] == 0:
        return np.zeros_like(x)
    first = np.argmax(x, axis=axis, keepdims=True)
    positions = np.arange(x.shape[axis]).reshape([-1 if i == axis else 1 for i in range(x.ndim)])
    return (positions == first).astype(x.dtype)


def _lp_normalize(x: np.ndarray, axis: int, p: int) -> np.ndarray:
    norm = np.sum(np.abs(x) ** p, axis=axis, keepdims=True) ** (1.0 / p)
    # A zero norm gives a zero output instead of 0/0.
    return np.where(norm == 0, 0, x / np.where(norm == 0, 1, norm))


ALONG_AXIS: dict[Op, Callable[[np.ndarray, int, KernelContext], np.ndarray]] = {
    Op.SOFTMAX: lambda x, axis, ctx: _softmax(x, axis),
    Op.LOG_SOFTMAX: lambda x, axis, ctx: _log_softmax(x, axis),
    Op.HARDMAX: lambda x, axis, ctx: _hardmax(x, axis),
    Op.LP_NORMALIZATION: lambda x, axis, ctx: _lp_normalize(x, axis, ctx.attr("p")),
}


@kernel(*ALONG_AXIS)
def _along_axis(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    axis = _normalize(ctx, ctx.attr("axis"), x.ndim)
    # Softmax and LogSoftmax round every step to the input's type, as the ONNX reference does:
    # the conformance expectations of bf16/f16 attention graphs are bit-exact to that.
    data = x if ctx.op in (Op.SOFTMAX, Op.LOG_SOFTMAX) else widen(x)
    return np.asarray(ALONG_AXIS[ctx.op](data, axis, ctx)).astype(ctx.out_dtype())


@kernel(Op.CUMSUM, Op.CUMPROD)
def _scan(ctx: KernelContext, x: np.ndarray, axis_input: np.ndarray) -> np.ndarray:
    axis = _normalize(ctx, int(axis_input.reshape(-1)[0]), x.ndim)
    data = widen(x)
    if ctx.attr("reverse"):
        data = np.flip(data, axis)
    accumulate = np.cumsum if ctx.op is Op.CUMSUM else np.cumprod
    result = accumulate(data, axis=axis, dtype=data.dtype)
    if ctx.attr("exclusive") and result.shape[axis] > 0:
        # Shift by one along the axis, filling the first position with the identity.
        identity = np.full_like(np.take(result, [0], axis=axis), 0 if ctx.op is Op.CUMSUM else 1)
        body = np.take(result, np.arange(result.shape[axis] - 1), axis=axis)
        result = np.concatenate([identity, body], axis=axis)
    if ctx.attr("reverse"):
        result = np.flip(result, axis)
    return result.astype(ctx.out_dtype())
