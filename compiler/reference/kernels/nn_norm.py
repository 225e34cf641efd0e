"""Numpy kernels of the normalization family."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ...ir.op import Op
from .nn_window import compute_dtype
from .registry import KernelContext, kernel


def _per_channel(v: np.ndarray, rank: int, dtype: np.dtype) -> np.ndarray:
    return v.astype(dtype).reshape((1, -1) + (1,) * (rank - 2))


@kernel(Op.BATCH_NORMALIZATION)
def batch_norm(
    ctx: KernelContext,
    x: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    acc = compute_dtype(x.dtype)
    eps = float(ctx.attr("epsilon"))
    xs = x.astype(acc)
    running_mean = running_var = None
    if ctx.attr("training_mode"):
        axes = (0, *range(2, x.ndim))
        batch_mean, batch_var = xs.mean(axis=axes), xs.var(axis=axes)
        momentum = float(ctx.attr("momentum"))
        running_mean = mean * momentum + batch_mean * (1 - momentum)
        running_var = var * momentum + batch_var * (1 - momentum)
        mean, var = batch_mean, batch_var
    y = _per_channel(scale, x.ndim, acc) * (xs - _per_channel(mean, x.ndim, acc)) / np.sqrt(
        _per_channel(var, x.ndim, acc) + eps
    ) + _per_channel(bias, x.ndim, acc)
    return y, running_mean, running_var


def _standardize(
    x: np.ndarray, axes: tuple[int, ...], eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x - mean) * inv_std over ``axes``, with the mean and inverse std (kept dims)."""
    mean = x.mean(axis=axes, keepdims=True)
    centered = x - mean
    inv_std = 1.0 / np.sqrt((centered * centered).mean(axis=axes, keepdims=True) + eps)
    return centered * inv_std, mean, inv_std


@kernel(Op.INSTANCE_NORMALIZATION)
def instance_norm(
    ctx: KernelContext, x: np.ndarray, scale: np.ndarray, bias: np.ndarray
) -> np.ndarray:
    acc = compute_dtype(x.dtype)
    y, _, _ = _standardize(x.astype(acc), tuple(range(2, x.ndim)), float(ctx.attr("epsilon")))
    return y * _per_channel(scale, x.ndim, acc) + _per_channel(bias, x.ndim, acc)


@kernel(Op.LAYER_NORMALIZATION)
def layer_norm(
    ctx: KernelContext, x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    axis = int(ctx.attr("axis")) % x.ndim
    stash = ctx.attr("stash_type").numpy
    normalized, mean, inv_std = _standardize(
        x.astype(stash), tuple(range(axis, x.ndim)), float(ctx.attr("epsilon"))
    )
    y = normalized.astype(x.dtype) * scale
    if bias is not None:
        y = y + bias
    return y, mean, inv_std


@kernel(Op.GROUP_NORMALIZATION)
def group_norm(
    ctx: KernelContext, x: np.ndarray, scale: np.ndarray, bias: np.ndarray
) -> np.ndarray:
    stash = ctx.attr("stash_type").numpy
    groups = int(ctx.attr("num_groups"))
    grouped = x.astype(stash).reshape(x.shape[0], groups, -1)
    normalized, _, _ = _standardize(grouped, (2,), float(ctx.attr("epsilon")))
    y = normalized.reshape(x.shape).astype(x.dtype)
    return y * _per_channel(scale, x.ndim, x.dtype) + _per_channel(bias, x.ndim, x.dtype)


@kernel(Op.RMS_NORMALIZATION)
def rms_norm(ctx: KernelContext, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    axis = int(ctx.attr("axis")) % x.ndim
    xs = x.astype(ctx.attr("stash_type").numpy)
    mean_square = (xs * xs).mean(axis=tuple(range(axis, x.ndim)), keepdims=True)
    normalized = xs / np.sqrt(mean_square + float(ctx.attr("epsilon")))
    return normalized.astype(x.dtype) * scale


@kernel(Op.LRN)
def lrn(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    size = int(ctx.attr("size"))
    acc = compute_dtype(x.dtype)
    squares = x.astype(acc) ** 2
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    width = [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2)
    window_sum = sliding_window_view(np.pad(squares, width), size, axis=1).sum(axis=-1)
    alpha, beta, bias = (float(ctx.attr(k)) for k in ("alpha", "beta", "bias"))
    return x.astype(acc) / (bias + alpha / size * window_sum) ** beta


@kernel(Op.MEAN_VARIANCE_NORMALIZATION)
def mean_variance_norm(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    axes = tuple(int(a) % x.ndim for a in ctx.attr("axes"))
    xs = x.astype(compute_dtype(x.dtype))
    mean = xs.mean(axis=axes, keepdims=True)
    variance = (xs * xs).mean(axis=axes, keepdims=True) - mean * mean
    return (xs - mean) / (np.sqrt(variance) + 1e-9)
