"""Numpy kernels of Dropout, GridSample, AffineGrid and the NLL / softmax cross-entropy losses."""

from __future__ import annotations

import numpy as np

from ...ir.op import Op
from .nn_sample import sample
from .nn_window import compute_dtype
from .registry import KernelContext, kernel

_MODE_ALIASES = {"bilinear": "linear", "bicubic": "cubic"}


@kernel(Op.DROPOUT)
def dropout(
    ctx: KernelContext,
    x: np.ndarray,
    ratio: np.ndarray | None = None,
    training: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    rate = 0.5 if ratio is None else float(ratio)
    if training is None or not bool(training) or rate == 0.0:
        return x, np.ones(x.shape, np.bool_)
    # A seeded legacy generator draws the same uniforms as ONNX's reference for a given seed.
    seed = ctx.attr("seed")
    keep = np.random.RandomState(seed).uniform(0.0, 1.0, x.shape) >= rate
    return x * keep / x.dtype.type(1.0 - rate), keep


def _unnormalize(coord: np.ndarray, size: int, align_corners: bool) -> np.ndarray:
    if align_corners:
        return (coord + 1) / 2 * (size - 1)
    return ((coord + 1) * size - 1) / 2


@kernel(Op.GRID_SAMPLE)
def grid_sample(ctx: KernelContext, x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    align = bool(ctx.attr("align_corners"))
    mode = _MODE_ALIASES.get(ctx.attr("mode"), ctx.attr("mode"))
    acc = compute_dtype(x.dtype)
    sizes = x.shape[2:]
    # The grid's last axis lists (x, y[, z]): the innermost spatial axis first.
    pixels = np.stack(
        [
            _unnormalize(grid[..., -1 - axis].astype(acc), size, align)
            for axis, size in enumerate(sizes)
        ],
        axis=-1,
    )
    return sample(x.astype(acc), pixels, mode, ctx.attr("padding_mode"), align)


def _base_coords(size: int, align_corners: bool) -> np.ndarray:
    if align_corners:
        return np.linspace(-1.0, 1.0, size) if size > 1 else np.zeros(1)
    return (2.0 * np.arange(size) + 1.0) / size - 1.0


@kernel(Op.AFFINE_GRID)
def affine_grid(ctx: KernelContext, theta: np.ndarray, size: np.ndarray) -> np.ndarray:
    spatial = [int(v) for v in size[2:]]
    align = bool(ctx.attr("align_corners"))
    # Homogeneous points (x, y[, z], 1) with x running along the last spatial axis.
    axes = [_base_coords(s, align) for s in spatial]
    mesh = np.meshgrid(*axes, indexing="ij")
    points = np.stack([*reversed(mesh), np.ones(spatial)], axis=-1)  # [*spatial, n + 1]
    acc = compute_dtype(theta.dtype)
    return np.einsum("...k,njk->n...j", points.astype(acc), theta.astype(acc))


def _nll(
    ctx: KernelContext, log_prob: np.ndarray, target: np.ndarray, weight: np.ndarray | None
) -> np.ndarray:
    classes = log_prob.shape[1]
    ignore = ctx.attr("ignore_index")
    valid = np.ones(target.shape, bool) if ignore is None else target != ignore
    safe = np.where(valid, target, 0).astype(np.int64)
    if np.any((safe < 0) | (safe >= classes)):
        raise ctx.fail(f"target holds a class outside [0, {classes})")
    picked = np.take_along_axis(log_prob, safe[:, None], axis=1)[:, 0]
    w = np.ones(classes, log_prob.dtype) if weight is None else weight.astype(log_prob.dtype)
    w = w[safe] * valid
    loss = -picked * w
    reduction = ctx.attr("reduction")
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    total = w.sum()
    return loss.sum() / total if total != 0 else loss.sum() * 0


@kernel(Op.NEGATIVE_LOG_LIKELIHOOD_LOSS)
def nll_loss(
    ctx: KernelContext, x: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None
) -> np.ndarray:
    return _nll(ctx, x, target, weight)


@kernel(Op.SOFTMAX_CROSS_ENTROPY_LOSS)
def softmax_cross_entropy(
    ctx: KernelContext, scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    acc = compute_dtype(scores.dtype)
    s = scores.astype(acc)
    shifted = s - s.max(axis=1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return _nll(ctx, log_prob, labels, weights), log_prob
