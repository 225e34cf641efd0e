"""Numpy building blocks over sliding windows: padding, window views (im2col), the grouped
convolution matmul and its adjoint (col2im). Conv, pooling and conv-transpose kernels share them;
the geometry itself comes from ``kiln.compiler.ir.rules.nn_geometry``."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ...ir.rules.nn_geometry import Window, kernel_shape_of, resolve_window
from .registry import KernelContext


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """Accumulation type: f64 stays f64, every other float (and ints) computes in f32/f64."""
    if dtype == np.float64:
        return np.dtype(np.float64)
    if np.issubdtype(dtype, np.integer):
        # Integer products summed in f64 are exact far beyond any int8/uint8 conv.
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def window_of(
    ctx: KernelContext,
    x: np.ndarray,
    kernel: Sequence[int] | None = None,
    attrs: Mapping[str, Any] | None = None,
    ceil_mode: bool = False,
) -> Window:
    """The node's window over ``x`` (kernel from ``kernel_shape`` or the given weight extents)."""
    attrs = ctx.attrs if attrs is None else attrs
    shape = kernel_shape_of(attrs, kernel, x.ndim - 2, ctx.fail)
    return resolve_window(attrs, x.shape[2:], shape, ctx.fail, ceil_mode)


def windows(x: np.ndarray, win: Window, value: float = 0.0) -> np.ndarray:
    """A view [N, C, *out, *kernel] of the taps of every window of ``x`` (pads hold ``value``).

    End padding grows when ceil mode lets the last window overhang the padded input.
    """
    n = win.rank
    begins = win.pads[:n]
    ends = [
        max(win.pads[n + i], (int(o) - 1) * s + e - size - b)
        for i, (o, s, e, size, b) in enumerate(
            zip(win.out, win.strides, win.extent, x.shape[2:], begins, strict=False)
        )
    ]
    if any(begins) or any(ends):
        width = [(0, 0)] * (x.ndim - n) + list(zip(begins, ends, strict=False))
        x = np.pad(x, width, constant_values=value)
    view = sliding_window_view(x, win.extent, axis=tuple(range(x.ndim - n, x.ndim)))
    lead = (slice(None),) * (x.ndim - n)
    starts = tuple(
        slice(0, (int(o) - 1) * s + 1, s) for o, s in zip(win.out, win.strides, strict=False)
    )
    taps = tuple(slice(None, None, d) for d in win.dilations)
    return view[lead + starts + taps]


def grouped_conv(x: np.ndarray, w: np.ndarray, win: Window, group: int) -> np.ndarray:
    """Cross-correlation [N, C, ...] x [M, C/group, *k] -> [N, M, *out] in x's dtype: one
    im2col copy ([N, group, C/group * taps, pixels]; free for 1x1 stride-1 kernels) and one
    batched matmul over the groups whose result is already in NC... layout."""
    n = win.rank
    batch, channels = x.shape[:2]
    out_channels = w.shape[0]
    cg, mg = channels // group, out_channels // group
    outs = tuple(int(o) for o in win.out)
    cols = windows(x, win).reshape(batch, group, cg, *outs, *win.kernel)
    perm = (0, 1, 2, *range(3 + n, 3 + 2 * n), *range(3, 3 + n))
    mat = cols.transpose(perm).reshape(batch, group, cg * math.prod(win.kernel), -1)
    y = np.matmul(w.reshape(group, mg, -1), mat)  # [N, group, mg, pixels]
    return y.reshape(batch, out_channels, *outs)


def col2im(cols: np.ndarray, image: Sequence[int], win: Window) -> np.ndarray:
    """Adjoint of ``windows``: sum columns [N, C, *kernel, *blocks] into an [N, C, *image]
    image whose pads (``win.pads``, possibly negative) are then cropped away."""
    n = win.rank
    lead = cols.shape[:2]
    blocks = cols.shape[2 + n :]
    begins = win.pads[:n]
    needed = [(blk - 1) * s + e for blk, s, e in zip(blocks, win.strides, win.extent, strict=False)]
    canvas = np.zeros((*lead, *needed), cols.dtype)
    for tap in itertools.product(*(range(k) for k in win.kernel)):
        where = tuple(
            slice(t * d, t * d + (blk - 1) * s + 1, s)
            for t, d, blk, s in zip(tap, win.dilations, blocks, win.strides, strict=False)
        )
        canvas[(Ellipsis, *where)] += cols[(slice(None), slice(None), *tap)]
    # The image may reach past the canvas (output_padding, negative pads): extend with zeros.
    left = [max(0, -b) for b in begins]
    right = [max(0, b + size - c) for b, size, c in zip(begins, image, needed, strict=False)]
    if any(left) or any(right):
        canvas = np.pad(canvas, [(0, 0), (0, 0), *zip(left, right, strict=False)])
    crop = tuple(
        slice(b + lo, b + lo + size) for b, lo, size in zip(begins, left, image, strict=False)
    )
    return canvas[(slice(None), slice(None), *crop)]


def transposed_conv(x: np.ndarray, w: np.ndarray, win: Window, group: int) -> np.ndarray:
    """ConvTranspose [N, C, *in] with weight [C, M/group, *k]: one batched matmul gives the
    columns, ``col2im`` scatters them onto the output."""
    n = win.rank
    batch, channels, *spatial = x.shape
    cg, mg = channels // group, w.shape[1]
    taps = math.prod(win.kernel)
    pixels = math.prod(spatial)
    xm = x.reshape(batch, group, cg, pixels).transpose(1, 0, 3, 2).reshape(group, -1, cg)
    wm = w.reshape(group, cg, mg * taps)
    cols = np.matmul(xm, wm).reshape(group, batch, *spatial, mg, *win.kernel)
    perm = (1, 0, n + 2, *range(n + 3, 2 * n + 3), *range(2, n + 2))
    cols = cols.transpose(perm).reshape(batch, group * mg, *win.kernel, *spatial)
    return col2im(cols, [int(o) for o in win.out], win)


def add_channel_bias(y: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    if bias is None:
        return y
    return y + bias.reshape((1, -1) + (1,) * (y.ndim - 2)).astype(y.dtype)
