"""Numpy kernels of the convolution family (Conv, ConvTranspose, ConvInteger, QLinearConv,
DeformConv, Col2Im, CausalConvWithState), built on the window helpers of ``nn_window``."""

from __future__ import annotations

import math

import numpy as np

from ...ir.op import Op
from ...ir.rules.nn_geometry import (
    Window,
    kernel_shape_of,
    resolve_transpose_window,
    resolve_window,
)
from .nn_quant import requantize, zero_point
from .nn_sample import sample
from .nn_window import (
    add_channel_bias,
    col2im,
    compute_dtype,
    grouped_conv,
    transposed_conv,
    window_of,
)
from .registry import KernelContext, kernel


def _conv(ctx: KernelContext, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    acc = compute_dtype(x.dtype)
    win = window_of(ctx, x, w.shape[2:])
    return grouped_conv(
        x.astype(acc, copy=False), w.astype(acc, copy=False), win, int(ctx.attr("group"))
    )


@kernel(Op.CONV)
def conv(
    ctx: KernelContext, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None
) -> np.ndarray:
    return add_channel_bias(_conv(ctx, x, w), b)


@kernel(Op.CONV_TRANSPOSE)
def conv_transpose(
    ctx: KernelContext, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None
) -> np.ndarray:
    acc = compute_dtype(x.dtype)
    kernel_shape = kernel_shape_of(ctx.attrs, w.shape[2:], x.ndim - 2, ctx.fail)
    win = resolve_transpose_window(ctx.attrs, x.shape[2:], kernel_shape, ctx.fail)
    y = transposed_conv(
        x.astype(acc, copy=False), w.astype(acc, copy=False), win, int(ctx.attr("group"))
    )
    return add_channel_bias(y, b)


def _shift(values: np.ndarray, zp: np.ndarray | None) -> np.ndarray:
    """values - zero point in f64 (exact for 8-bit data); a vector zero point is per channel."""
    shifted = values.astype(np.float64)
    if zp is None:
        return shifted
    zp = np.asarray(zp, np.float64)
    if zp.ndim == 1 and zp.size > 1:
        return shifted - zp.reshape((-1,) + (1,) * (values.ndim - 1))
    return shifted - zp.reshape(())


@kernel(Op.CONV_INTEGER)
def conv_integer(
    ctx: KernelContext,
    x: np.ndarray,
    w: np.ndarray,
    x_zp: np.ndarray | None = None,
    w_zp: np.ndarray | None = None,
) -> np.ndarray:
    y = _conv(
        ctx, _shift(x, None if x_zp is None else np.asarray(x_zp).reshape(())), _shift(w, w_zp)
    )
    return np.rint(y).astype(np.int32)


@kernel(Op.QLINEAR_CONV)
def qlinear_conv(
    ctx: KernelContext,
    x: np.ndarray,
    x_scale: np.ndarray,
    x_zp: np.ndarray,
    w: np.ndarray,
    w_scale: np.ndarray,
    w_zp: np.ndarray,
    y_scale: np.ndarray,
    y_zp: np.ndarray,
    b: np.ndarray | None = None,
) -> np.ndarray:
    acc = _conv(ctx, _shift(x, np.asarray(x_zp).reshape(())), _shift(w, w_zp))
    acc = add_channel_bias(acc, b)
    channel = (1, -1) + (1,) * (x.ndim - 2)
    multiplier = (
        np.asarray(x_scale, np.float32).reshape(())
        * np.asarray(w_scale, np.float32).reshape(-1)
        / np.float32(y_scale)
    )
    scaled = acc.astype(np.float32) * multiplier.astype(np.float32).reshape(channel)
    return requantize(scaled, zero_point(y_zp), y_zp.dtype)


@kernel(Op.DEFORM_CONV)
def deform_conv(
    ctx: KernelContext,
    x: np.ndarray,
    w: np.ndarray,
    offset: np.ndarray,
    b: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    acc = compute_dtype(x.dtype)
    x = x.astype(acc, copy=False)
    kh, kw = kernel_shape_of(ctx.attrs, w.shape[2:], 2, ctx.fail)
    win = resolve_window(ctx.attrs, x.shape[2:], (kh, kw), ctx.fail)
    batch, channels = x.shape[:2]
    oh, ow = (int(o) for o in win.out)
    groups = int(ctx.attr("offset_group"))
    if channels % groups:
        raise ctx.fail(f"{channels} input channels are not divisible by offset_group {groups}")
    offset = offset.astype(acc).reshape(batch, groups, kh, kw, 2, oh, ow)
    mask = (
        np.ones((batch, groups, kh, kw, oh, ow), acc)
        if mask is None
        else mask.astype(acc).reshape(batch, groups, kh, kw, oh, ow)
    )
    # Undisplaced tap positions [kh, kw, oh, ow] per axis, then each tap is sampled bilinearly.
    base_y = (
        np.arange(kh)[:, None, None, None] * win.dilations[0]
        + np.arange(oh)[None, None, :, None] * win.strides[0]
        - win.pads[0]
    )
    base_x = (
        np.arange(kw)[None, :, None, None] * win.dilations[1]
        + np.arange(ow)[None, None, None, :] * win.strides[1]
        - win.pads[1]
    )
    per_group = channels // groups
    cols = np.empty((batch, channels, kh, kw, oh, ow), acc)
    for g in range(groups):
        coords = np.stack([base_y + offset[:, g, :, :, 0], base_x + offset[:, g, :, :, 1]], -1)
        part = x[:, g * per_group : (g + 1) * per_group]
        taken = sample(part, coords.reshape(batch, kh * kw * oh, ow, 2), "linear", "zeros")
        cols[:, g * per_group : (g + 1) * per_group] = (
            taken.reshape(batch, per_group, kh, kw, oh, ow) * mask[:, g, None]
        )
    group = int(ctx.attr("group"))
    out_channels = w.shape[0]
    cg, mg = channels // group, out_channels // group
    mat = cols.reshape(batch, group, cg * kh * kw, oh * ow).transpose(1, 0, 3, 2)
    weights = w.astype(acc).reshape(group, mg, cg * kh * kw).transpose(0, 2, 1)
    y = np.matmul(mat, weights[:, None]).transpose(1, 0, 3, 2).reshape(batch, out_channels, oh, ow)
    return add_channel_bias(y, b)


@kernel(Op.COL2IM)
def col2im_kernel(
    ctx: KernelContext, x: np.ndarray, image_shape: np.ndarray, block_shape: np.ndarray
) -> np.ndarray:
    image = [int(v) for v in image_shape]
    block = [int(v) for v in block_shape]
    n = len(image)
    if len(block) != n:
        raise ctx.fail(f"block_shape {block} and image_shape {image} differ in length")
    win = resolve_window(ctx.attrs, image, block, ctx.fail)
    blocks = [int(o) for o in win.out]
    if math.prod(blocks) != x.shape[2]:
        raise ctx.fail(f"input has {x.shape[2]} blocks; the geometry gives {math.prod(blocks)}")
    cols = x.reshape(x.shape[0], -1, *block, *blocks)
    return col2im(
        cols, image, Window(win.kernel, win.strides, win.dilations, win.pads, tuple(image))
    )


@kernel(Op.CAUSAL_CONV_WITH_STATE)
def causal_conv(
    ctx: KernelContext,
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    past: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    batch, channels, _ = x.shape
    k = w.shape[2]
    if past is None:
        past = np.zeros((batch, channels, k - 1), x.dtype)
    padded = np.concatenate([past.astype(x.dtype), x], axis=2)
    acc = compute_dtype(x.dtype)
    win = resolve_window({}, padded.shape[2:], (k,), ctx.fail)
    y = add_channel_bias(grouped_conv(padded.astype(acc), w.astype(acc), win, channels), b)
    if ctx.attr("activation") in ("silu", "swish"):
        y = y.astype(x.dtype).astype(np.float32)
        y = y / (1.0 + np.exp(-y))
    return y.astype(x.dtype), padded[:, :, padded.shape[2] - (k - 1) :]
