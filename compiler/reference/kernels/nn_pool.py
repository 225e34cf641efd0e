"""Numpy kernels of the pooling family: windowed pools over ``nn_window`` views, global pools,
MaxUnpool and the region-of-interest pools (looping over regions, vectorized within one)."""

from __future__ import annotations

import math
from functools import reduce

import numpy as np

from ...ir.op import Op
from ...ir.rules.nn_geometry import Window
from .nn_window import compute_dtype, window_of, windows
from .registry import KernelContext, kernel


def _pool_window(ctx: KernelContext, x: np.ndarray) -> Window:
    return window_of(ctx, x, ceil_mode=bool(ctx.attr("ceil_mode")))


def _tap_axes(win: Window) -> tuple[int, ...]:
    return tuple(range(-win.rank, 0))


def _counts(win: Window, spatial: tuple[int, ...], include_pad: bool) -> np.ndarray:
    """Number of taps of each window that fall on the input (or on its explicit pads),
    a separable product over axes broadcast to [*out]."""
    n = win.rank
    per_axis = []
    for i, (size, out, k, s, d) in enumerate(
        zip(spatial, win.out, win.kernel, win.strides, win.dilations, strict=False)
    ):
        pos = np.arange(int(out))[:, None] * s - win.pads[i] + np.arange(k)[None, :] * d
        low, high = (-win.pads[i], size + win.pads[n + i]) if include_pad else (0, size)
        per_axis.append(((pos >= low) & (pos < high)).sum(axis=1))
    return reduce(np.multiply.outer, per_axis)


@kernel(Op.AVERAGE_POOL)
def average_pool(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    win = _pool_window(ctx, x)
    acc = compute_dtype(x.dtype)
    total = windows(x.astype(acc, copy=False), win).sum(axis=_tap_axes(win))
    return total / _counts(win, x.shape[2:], bool(ctx.attr("count_include_pad"))).astype(acc)


@kernel(Op.LP_POOL)
def lp_pool(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    win = _pool_window(ctx, x)
    p = float(ctx.attr("p"))
    taps = np.abs(windows(x.astype(compute_dtype(x.dtype), copy=False), win))
    return (taps**p).sum(axis=_tap_axes(win)) ** (1.0 / p)


def _lowest(dtype: np.dtype) -> float:
    return -np.inf if dtype.kind == "f" or dtype.name == "bfloat16" else np.iinfo(dtype).min


@kernel(Op.MAX_POOL)
def max_pool(ctx: KernelContext, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    win = _pool_window(ctx, x)
    taps = windows(x, win, _lowest(x.dtype))
    flat = taps.reshape(*taps.shape[: x.ndim], -1)
    if ctx.out_types[1:2] in ([], [None]):
        return flat.max(axis=-1), None
    best = flat.argmax(axis=-1)
    values = np.take_along_axis(flat, best[..., None], axis=-1)[..., 0]
    # Tap number -> input coordinate per spatial axis -> flat index into X.
    spatial = x.shape[2:]
    tap = np.unravel_index(best, win.kernel)
    coords = [
        np.arange(int(o)).reshape((-1,) + (1,) * (win.rank - 1 - i)) * s - win.pads[i] + t * d
        for i, (o, s, d, t) in enumerate(
            zip(win.out, win.strides, win.dilations, tap, strict=False)
        )
    ]
    order = "F" if ctx.attr("storage_order") == 1 else "C"
    inner = np.ravel_multi_index(coords, spatial, order=order)
    planes = np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[:2] + (1,) * win.rank)
    return values, planes * math.prod(spatial) + inner


def _global_axes(x: np.ndarray) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


@kernel(Op.GLOBAL_AVERAGE_POOL)
def global_average_pool(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return x.astype(compute_dtype(x.dtype)).mean(axis=_global_axes(x), keepdims=True)


@kernel(Op.GLOBAL_MAX_POOL)
def global_max_pool(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return x.max(axis=_global_axes(x), keepdims=True)


@kernel(Op.GLOBAL_LP_POOL)
def global_lp_pool(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    p = float(ctx.attr("p"))
    powered = np.abs(x.astype(compute_dtype(x.dtype))) ** p
    return powered.sum(axis=_global_axes(x), keepdims=True) ** (1.0 / p)


@kernel(Op.MAX_UNPOOL)
def max_unpool(
    ctx: KernelContext, x: np.ndarray, indices: np.ndarray, output_shape: np.ndarray | None = None
) -> np.ndarray:
    n = x.ndim - 2
    kernel_shape = ctx.attr("kernel_shape")
    strides = ctx.attr("strides") or (1,) * n
    pads = ctx.attr("pads") or (0,) * (2 * n)
    natural = x.shape[:2] + tuple(
        (size - 1) * s + k - pads[i] - pads[n + i]
        for i, (size, s, k) in enumerate(zip(x.shape[2:], strides, kernel_shape, strict=True))
    )
    # Indices address the unpooled tensor of the natural shape; a larger output_shape only
    # pads it with zeros at the end of each axis (as ONNX's reference does).
    unpooled = np.zeros(math.prod(natural), x.dtype)
    flat = indices.reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= unpooled.size):
        raise ctx.fail(f"indices fall outside the unpooled shape {list(natural)}")
    unpooled[flat] = x.reshape(-1)
    if output_shape is None:
        return unpooled.reshape(natural)
    shape = tuple(int(d) for d in output_shape)
    out = np.zeros(shape, x.dtype)
    common = tuple(slice(0, min(a, b)) for a, b in zip(natural, shape, strict=True))
    out[common] = unpooled.reshape(natural)[common]
    return out


@kernel(Op.MAX_ROI_POOL)
def max_roi_pool(ctx: KernelContext, x: np.ndarray, rois: np.ndarray) -> np.ndarray:
    ph, pw = (int(v) for v in ctx.attr("pooled_shape"))
    scale = float(ctx.attr("spatial_scale"))
    height, width = x.shape[2:]
    out = np.zeros((rois.shape[0], x.shape[1], ph, pw), x.dtype)
    for r, roi in enumerate(rois.astype(np.float64)):
        # Region corners round half away from zero (C++ std::round), as Caffe/ORT do.
        x1, y1, x2, y2 = (np.sign(v) * np.floor(abs(v) * scale + 0.5) for v in roi[1:])
        rows = _bins(y1, y2, ph, height)
        cols = _bins(x1, x2, pw, width)
        inside = rows[:, None, :, None] & cols[None, :, None, :]  # [ph, pw, H, W]
        image = x[int(roi[0])][:, None, None]  # [C, 1, 1, H, W]
        best = np.where(inside, image, _lowest(x.dtype)).max(axis=(-2, -1))
        out[r] = np.where(inside.any(axis=(-2, -1)), best, 0)
    return out


def _bins(start: float, end: float, count: int, size: int) -> np.ndarray:
    """[count, size] membership of each pixel in each bin of a MaxRoiPool region axis."""
    extent = max(end - start + 1, 1.0)
    step = extent / count
    index = np.arange(count)
    low = np.clip(np.floor(index * step) + start, 0, size)
    high = np.clip(np.ceil((index + 1) * step) + start, 0, size)
    pixel = np.arange(size)[None, :]
    return (pixel >= low[:, None]) & (pixel < high[:, None])


@kernel(Op.ROI_ALIGN)
def roi_align(
    ctx: KernelContext, x: np.ndarray, rois: np.ndarray, batch_indices: np.ndarray
) -> np.ndarray:
    oh, ow = int(ctx.attr("output_height")), int(ctx.attr("output_width"))
    ratio = int(ctx.attr("sampling_ratio"))
    scale = float(ctx.attr("spatial_scale"))
    half_pixel = ctx.attr("coordinate_transformation_mode") == "half_pixel"
    use_max = ctx.attr("mode") == "max"
    acc = compute_dtype(x.dtype)
    height, width = x.shape[2:]
    out = np.zeros((rois.shape[0], x.shape[1], oh, ow), acc)
    for r, roi in enumerate(rois.astype(np.float64)):
        x1, y1, x2, y2 = roi * scale - (0.5 if half_pixel else 0.0)
        roi_h, roi_w = y2 - y1, x2 - x1
        if not half_pixel:
            roi_h, roi_w = max(roi_h, 1.0), max(roi_w, 1.0)
        grid_h = ratio if ratio > 0 else int(np.ceil(roi_h / oh))
        grid_w = ratio if ratio > 0 else int(np.ceil(roi_w / ow))
        ys = _sample_points(y1, roi_h / oh, oh, grid_h)  # [oh, grid_h]
        xs = _sample_points(x1, roi_w / ow, ow, grid_w)
        y_low, y_high, y_w, y_ok = _bilinear_axis(ys, height)
        x_low, x_high, x_w, x_ok = _bilinear_axis(xs, width)
        image = x[int(batch_indices[r])].astype(acc)  # [C, H, W]
        ok = y_ok[:, :, None, None] & x_ok[None, None, :, :]  # [oh, gh, ow, gw]
        terms = [
            image[:, yi[:, :, None, None], xi[None, None, :, :]]
            * (wy[:, :, None, None] * wx[None, None, :, :] * ok)
            for yi, wy in ((y_low, y_w[0]), (y_high, y_w[1]))
            for xi, wx in ((x_low, x_w[0]), (x_high, x_w[1]))
        ]  # each [C, oh, gh, ow, gw]
        if use_max:
            out[r] = np.max(np.maximum.reduce(terms), axis=(2, 4))
        else:
            out[r] = sum(terms).sum(axis=(2, 4)) / max(grid_h * grid_w, 1)
    return out


def _sample_points(start: float, bin_size: float, bins: int, grid: int) -> np.ndarray:
    return (
        start
        + np.arange(bins)[:, None] * bin_size
        + (np.arange(grid)[None, :] + 0.5) * bin_size / grid
    )


def _bilinear_axis(
    pos: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
    """RoiAlign's bilinear neighbours along one axis: points beyond [-1, size] contribute
    nothing; others clamp at 0 and at the last pixel."""
    ok = (pos >= -1.0) & (pos <= size)
    pos = np.maximum(pos, 0.0)
    low = pos.astype(np.int64)
    edge = low >= size - 1
    low = np.where(edge, size - 1, low)
    high = np.where(edge, size - 1, low + 1)
    pos = np.where(edge, low, pos)
    frac = pos - low
    return low, high, (1.0 - frac, frac), ok
