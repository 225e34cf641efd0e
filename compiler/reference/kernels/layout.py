"""Numpy kernels of the layout ops (LayoutTransform and the blocked ConvNCHWc, pools and LRN)
and the blocking helpers that define the NCHW[b]c layout; ``select_layout`` uses the same
helpers to pre-block weights.

Each blocked op is defined by unblocking its operands (padded channels included), running the
plain op's own numpy kernel and blocking the result, so a blocked op means exactly what the
plain one means.
"""

from __future__ import annotations

import numpy as np

from ...ir.op import Op
from ...ir.rules.layout import PLAIN, block_of
from .nn_norm import lrn
from .nn_pool import average_pool, max_pool
from .nn_window import add_channel_bias, compute_dtype, grouped_conv, window_of
from .registry import KernelContext, kernel


def _pad_axis(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``x`` zero-padded at the end of ``axis`` to ``size``."""
    missing = size - x.shape[axis]
    if missing == 0:
        return x
    width = [(0, 0)] * x.ndim
    width[axis] = (0, missing)
    return np.pad(x, width)


def to_blocked(x: np.ndarray, block: int) -> np.ndarray:
    """[N, C, H, W] -> [N, ceil(C/b), H, W, b], the channels past C zero."""
    n, c, h, w = x.shape
    cb = -(-c // block)
    padded = _pad_axis(x, 1, cb * block)
    return np.ascontiguousarray(padded.reshape(n, cb, block, h, w).transpose(0, 1, 3, 4, 2))


def from_blocked(x: np.ndarray, channels: int = 0) -> np.ndarray:
    """[N, CB, H, W, b] -> [N, C, H, W] (C = ``channels``, or CB * b when 0)."""
    n, cb, h, w, block = x.shape
    plain = x.transpose(0, 1, 4, 2, 3).reshape(n, cb * block, h, w)
    return np.ascontiguousarray(plain[:, : channels or cb * block])


def block_weights(w: np.ndarray, block: int) -> np.ndarray:
    """Conv weights [OC, IC, KH, KW] -> [OC/b, IC/b, KH, KW, b_ic, b_oc] (zero padded)."""
    oc, ic, kh, kw = w.shape
    ocb, icb = -(-oc // block), -(-ic // block)
    padded = _pad_axis(_pad_axis(w, 0, ocb * block), 1, icb * block)
    split = padded.reshape(ocb, block, icb, block, kh, kw)
    return np.ascontiguousarray(split.transpose(0, 2, 4, 5, 3, 1))


def unblock_weights(w: np.ndarray) -> np.ndarray:
    """The inverse of ``block_weights`` (padded channels kept): [OCB*b, ICB*b, KH, KW]."""
    ocb, icb, kh, kw, block, _ = w.shape
    return w.transpose(0, 5, 1, 4, 2, 3).reshape(ocb * block, icb * block, kh, kw)


def block_depthwise_weights(w: np.ndarray, block: int) -> np.ndarray:
    """Depthwise conv weights [C, 1, KH, KW] -> [C/b, 1, KH, KW, 1, b] (zero padded)."""
    c, _, kh, kw = w.shape
    cb = -(-c // block)
    split = _pad_axis(w, 0, cb * block).reshape(cb, block, 1, kh, kw, 1)
    return np.ascontiguousarray(split.transpose(0, 2, 3, 4, 5, 1))


def unblock_depthwise_weights(w: np.ndarray) -> np.ndarray:
    """The inverse of ``block_depthwise_weights`` (padded channels kept): [CB*b, 1, KH, KW]."""
    cb, _, kh, kw, _, block = w.shape
    return w[:, 0, :, :, 0, :].transpose(0, 3, 1, 2).reshape(cb * block, 1, kh, kw)


def block_bias(b: np.ndarray, block: int) -> np.ndarray:
    """A bias [OC] -> [OC/b, b] (zero padded)."""
    cb = -(-b.shape[0] // block)
    return _pad_axis(b, 0, cb * block).reshape(cb, block)


@kernel(Op.LAYOUT_TRANSFORM)
def layout_transform(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    block = block_of(str(ctx.attr("dst_layout")))
    if block:
        return to_blocked(x, block)
    return from_blocked(x, int(ctx.attr("channels")))


@kernel(Op.CONV_NCHWC)
def conv_nchwc(
    ctx: KernelContext, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None
) -> np.ndarray:
    acc = compute_dtype(x.dtype)
    plain_x = (x if ctx.attr("src_layout") == PLAIN else from_blocked(x)).astype(acc, copy=False)
    depthwise = int(ctx.attr("group")) > 1
    plain_w = unblock_depthwise_weights(w) if depthwise else unblock_weights(w)
    plain_w = plain_w[:, : plain_x.shape[1]].astype(acc, copy=False)
    group = plain_w.shape[0] if depthwise else 1
    y = grouped_conv(plain_x, plain_w, window_of(ctx, plain_x, plain_w.shape[2:]), group)
    y = add_channel_bias(y, None if b is None else b.reshape(-1))
    return to_blocked(y, int(ctx.attr("block")))


@kernel(Op.MAX_POOL_NCHWC)
def max_pool_nchwc(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return to_blocked(max_pool(ctx, from_blocked(x))[0], x.shape[4])


@kernel(Op.AVERAGE_POOL_NCHWC)
def average_pool_nchwc(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return to_blocked(average_pool(ctx, from_blocked(x)), x.shape[4])


@kernel(Op.LRN_NCHWC)
def lrn_nchwc(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return to_blocked(lrn(ctx, from_blocked(x)), x.shape[4])
