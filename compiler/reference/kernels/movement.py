"""Numpy kernels of the movement ops and the shape ops.

The bound and extent arithmetic is shared with the type rules (``ir.rules.movement``), so a
kernel and its rule cannot disagree on, say, how Slice clamps or how Resize rounds extents.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...ir.op import Op
from ...ir.rules.movement import (
    pad_widths,
    range_length,
    reshape_dims,
    resize_extents,
    shape_bounds,
    slice_bounds,
    slice_params,
    split_sizes,
)
from ...ir.shapes import broadcast, normalize_axes, normalize_axis
from .registry import KernelContext, kernel


def _ints(array: np.ndarray) -> list[int]:
    return [int(v) for v in np.asarray(array).reshape(-1)]


def _opt_ints(array: np.ndarray | None) -> list[int] | None:
    return None if array is None else _ints(array)


def _present(array: np.ndarray | None) -> np.ndarray | None:
    """Optional inputs given as empty tensors (an old ONNX idiom) count as absent."""
    return None if array is None or np.asarray(array).size == 0 else array


@kernel(Op.RESHAPE)
def _reshape(ctx: KernelContext, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    dims = reshape_dims(x.shape, _ints(shape), ctx.attr("allowzero"), ctx.fail)
    return x.reshape([int(d) for d in dims])


@kernel(Op.TRANSPOSE)
def _transpose(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return np.transpose(x, ctx.attr("perm"))


@kernel(Op.SQUEEZE)
def _squeeze(ctx: KernelContext, x: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=normalize_axes(_ints(axes), x.ndim))


@kernel(Op.UNSQUEEZE)
def _unsqueeze(ctx: KernelContext, x: np.ndarray, axes: np.ndarray) -> np.ndarray:
    given = _ints(axes)
    return np.expand_dims(x, normalize_axes(given, x.ndim + len(given)))


@kernel(Op.FLATTEN)
def _flatten(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    axis = ctx.attr("axis")
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:])))


@kernel(Op.CONCAT)
def _concat(ctx: KernelContext, *xs: np.ndarray) -> np.ndarray:
    return np.concatenate(xs, axis=normalize_axis(ctx.attr("axis"), xs[0].ndim))


@kernel(Op.SPLIT)
def _split(ctx: KernelContext, x: np.ndarray, split: np.ndarray | None = None) -> tuple:
    axis = normalize_axis(ctx.attr("axis"), x.ndim)
    sizes = _opt_ints(split)
    if sizes is None:
        sizes = split_sizes(x.shape[axis], len(ctx.out_types))
    if sum(sizes) != x.shape[axis] or min(sizes) < 0:
        raise ctx.fail(f"cannot split an extent of {x.shape[axis]} into sizes {sizes}")
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


@kernel(Op.SLICE)
def _slice(ctx: KernelContext, x: np.ndarray, starts: np.ndarray, ends: np.ndarray,
           axes: np.ndarray | None = None, steps: np.ndarray | None = None) -> np.ndarray:
    index = [slice(None)] * x.ndim
    for axis, start, end, step in slice_params(
        x.ndim, _ints(starts), _ints(ends), _opt_ints(axes), _opt_ints(steps), ctx.fail
    ):
        lo, hi, _ = slice_bounds(start, end, step, x.shape[axis])
        index[axis] = slice(lo, None if hi < 0 else hi, step)
    return x[tuple(index)]


@kernel(Op.EXPAND)
def _expand(ctx: KernelContext, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    target = broadcast(x.shape, tuple(_ints(shape)))
    return np.broadcast_to(x, target).copy()  # type: ignore[arg-type]


@kernel(Op.TILE)
def _tile(ctx: KernelContext, x: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    return np.tile(x, _ints(repeats))


@kernel(Op.PAD)
def _pad(ctx: KernelContext, x: np.ndarray, pads: np.ndarray,
         constant_value: np.ndarray | None = None, axes: np.ndarray | None = None) -> np.ndarray:
    widths = pad_widths(x.ndim, _ints(pads), _opt_ints(axes), ctx.fail)
    if any(d + lo + hi < 0 for d, (lo, hi) in zip(x.shape, widths, strict=True)):
        raise ctx.fail(f"pads {_ints(pads)} crop more than the extents {list(x.shape)}")
    # Negative pads crop; numpy's pad only grows, so crop first.
    x = x[tuple(slice(max(-lo, 0), x.shape[i] - max(-hi, 0)) for i, (lo, hi) in
                enumerate(widths))]
    grow = [(max(lo, 0), max(hi, 0)) for lo, hi in widths]
    mode = ctx.attr("mode")
    if mode == "constant":
        value = 0 if constant_value is None else np.asarray(constant_value).reshape(-1)[0]
        return np.pad(x, grow, mode="constant", constant_values=value)
    if x.size == 0 and any(g != (0, 0) for g in grow):
        raise ctx.fail(f"cannot pad an empty tensor in {mode} mode")
    return np.pad(x, grow, mode=mode)


@kernel(Op.CENTER_CROP_PAD)
def _center_crop_pad(ctx: KernelContext, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
    given = ctx.attr("axes")
    axes = normalize_axes(range(x.ndim) if given is None else given, x.ndim)
    target = list(x.shape)
    crop = [slice(None)] * x.ndim
    place = [slice(None)] * x.ndim
    for axis, size in zip(axes, _ints(shape), strict=True):
        dim = x.shape[axis]
        target[axis] = size
        # The extra element of an odd difference goes to the end, in both directions.
        offset = abs(size - dim) // 2
        window = slice(offset, offset + min(size, dim))
        if size < dim:
            crop[axis] = window
        else:
            place[axis] = window
    out = np.zeros(target, dtype=x.dtype)
    out[tuple(place)] = x[tuple(crop)]
    return out


@kernel(Op.DEPTH_TO_SPACE)
def _depth_to_space(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    b, c, h, w = x.shape
    k = ctx.attr("blocksize")
    if ctx.attr("mode") == "DCR":
        tmp = x.reshape(b, k, k, c // (k * k), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        tmp = x.reshape(b, c // (k * k), k, k, h, w).transpose(0, 1, 4, 2, 5, 3)
    return tmp.reshape(b, c // (k * k), h * k, w * k)


@kernel(Op.SPACE_TO_DEPTH)
def _space_to_depth(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    b, c, h, w = x.shape
    k = ctx.attr("blocksize")
    tmp = x.reshape(b, c, h // k, k, w // k, k)
    perm = (0, 3, 5, 1, 2, 4) if ctx.attr("mode") == "DCR" else (0, 1, 3, 5, 2, 4)
    return tmp.transpose(perm).reshape(b, c * k * k, h // k, w // k)


@kernel(Op.TRILU)
def _trilu(ctx: KernelContext, x: np.ndarray, k: np.ndarray | None = None) -> np.ndarray:
    diagonal = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    return np.triu(x, diagonal) if ctx.attr("upper") else np.tril(x, diagonal)


@kernel(Op.REVERSE_SEQUENCE)
def _reverse_sequence(ctx: KernelContext, x: np.ndarray, lens: np.ndarray) -> np.ndarray:
    batch_axis, time_axis = ctx.attr("batch_axis"), ctx.attr("time_axis")
    steps = x.shape[time_axis]
    lens = np.asarray(lens, dtype=np.int64)
    if np.any((lens < 0) | (lens > steps)):
        raise ctx.fail(f"sequence_lens {lens.tolist()} must lie in [0, {steps}]")
    t = np.arange(steps)[:, None]
    source = np.where(t < lens[None, :], lens[None, :] - 1 - t, t)  # [time, batch]
    if batch_axis < time_axis:
        source = source.T
    source = source.reshape(source.shape + (1,) * (x.ndim - 2))
    return np.take_along_axis(x, np.broadcast_to(source, x.shape), axis=time_axis)


@kernel(Op.BIT_CAST)
def _bit_cast(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return np.array(x, order="C").view(ctx.out_dtype(0))


@kernel(Op.SHAPE)
def _shape(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    start, end = shape_bounds(ctx.attr("start"), ctx.attr("end"), x.ndim)
    return np.array(x.shape[start:end], dtype=np.int64)


@kernel(Op.SIZE)
def _size(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return np.array(x.size, dtype=np.int64)


@kernel(Op.CONSTANT_OF_SHAPE)
def _constant_of_shape(ctx: KernelContext, shape: np.ndarray) -> np.ndarray:
    value = ctx.attr("value")
    fill = 0 if value is None else np.asarray(value).reshape(-1)[0]
    return np.full(_ints(shape), fill, dtype=ctx.out_dtype(0))


@kernel(Op.EYE_LIKE)
def _eye_like(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    return np.eye(x.shape[0], x.shape[1], ctx.attr("k"), dtype=ctx.out_dtype(0))


@kernel(Op.RANGE)
def _range(ctx: KernelContext, start: np.ndarray, limit: np.ndarray,
           delta: np.ndarray) -> np.ndarray:
    n = range_length(start, limit, delta, ctx.fail)
    wide = np.int64 if start.dtype.kind in "iu" else np.float64
    first, step = (np.asarray(v).reshape(-1)[0].astype(wide) for v in (start, delta))
    return (first + np.arange(n).astype(wide) * step).astype(start.dtype)


# ---------------------------------------------------------------------------------- Resize

def _cubic(a: float) -> Callable[[np.ndarray], np.ndarray]:
    def weight(t: np.ndarray) -> np.ndarray:
        t = np.abs(t)
        near = ((a + 2) * t - (a + 3)) * t * t + 1
        far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
        return np.where(t <= 1, near, np.where(t < 2, far, 0.0))
    return weight


def _triangle(t: np.ndarray) -> np.ndarray:
    return np.clip(1 - np.abs(t), 0, 1)


def source_coords(mode: str, out_n: int, in_n: int, scale: float,
                   roi: tuple[float, float]) -> np.ndarray:
    """Output positions mapped into input coordinates (ONNX coordinate_transformation_mode)."""
    y = np.arange(out_n, dtype=np.float64)
    width = scale * in_n  # the possibly fractional output extent the spec calls output_width
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = in_n / 2 * (1 - out_n / width)
        return offset + (y + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        # The spec (and onnxruntime) map a single output to 0; the ONNX reference uses -0.5,
        # which only differs for cubic and antialiased filters.
        return (y + 0.5) / scale - 0.5 if out_n > 1 else np.zeros(out_n)
    if mode == "align_corners":
        return np.zeros(out_n) if width == 1 else y * (in_n - 1) / (width - 1)
    if mode == "asymmetric":
        return y / scale
    start, end = roi
    if width == 1:
        return np.full(out_n, (end - start) * (in_n - 1) / 2 + start * (in_n - 1))
    return y * (end - start) * (in_n - 1) / (width - 1) + start * (in_n - 1)


def _nearest_index(x: np.ndarray, mode: str) -> np.ndarray:
    if mode == "round_prefer_floor":
        return np.ceil(x - 0.5)
    if mode == "round_prefer_ceil":
        return np.floor(x + 0.5)
    return np.floor(x) if mode == "floor" else np.ceil(x)


def resize_axis(ctx: KernelContext, data: np.ndarray, axis: int, out_n: int, scale: float,
                 roi: tuple[float, float]) -> np.ndarray:
    in_n = data.shape[axis]
    mode = ctx.attr("mode")
    coord_mode = ctx.attr("coordinate_transformation_mode")
    x = source_coords(coord_mode, out_n, in_n, scale, roi)
    if mode == "nearest":
        taps = _nearest_index(x, ctx.attr("nearest_mode"))[:, None].astype(np.int64)
        weights = np.ones(taps.shape)
    else:
        # The filter is stretched by 1/scale when antialiasing a downscale; n taps nearest x.
        stretch = min(scale, 1.0) if ctx.attr("antialias") else 1.0
        reach = 1 if mode == "linear" else 2
        n = -2 * int(np.floor(-reach / stretch))
        floor = np.floor(x)
        base = np.where(x == floor, floor - n // 2, floor - n // 2 + 1).astype(np.int64)
        taps = base[:, None] + np.arange(n)[None, :]
        kernel_fn = _triangle if mode == "linear" else _cubic(ctx.attr("cubic_coeff_a"))
        weights = kernel_fn((taps - x[:, None]) * stretch)
        if stretch < 1:
            weights = weights / weights.sum(axis=1, keepdims=True)
        if ctx.attr("exclude_outside"):
            weights = np.where((taps < 0) | (taps >= in_n), 0.0, weights)
            total = weights.sum(axis=1, keepdims=True)
            weights = weights / np.where(total == 0, 1.0, total)
    gathered = np.take(data, np.clip(taps, 0, in_n - 1), axis=axis)
    shape = (1,) * axis + weights.shape + (1,) * (data.ndim - axis - 1)
    result = (gathered * weights.reshape(shape)).sum(axis=axis + 1)
    if coord_mode == "tf_crop_and_resize":
        outside = ((x < 0) | (x > in_n - 1)).reshape((1,) * axis + (out_n,)
                                                     + (1,) * (data.ndim - axis - 1))
        result = np.where(outside, ctx.attr("extrapolation_value"), result)
    return result


@kernel(Op.RESIZE)
def _resize(ctx: KernelContext, x: np.ndarray, roi: np.ndarray | None = None,
            scales: np.ndarray | None = None, sizes: np.ndarray | None = None) -> np.ndarray:
    axes = normalize_axes(ctx.attr("axes") or range(x.ndim), x.ndim)
    scales, sizes, roi = _present(scales), _present(sizes), _present(roi)
    out, factors = resize_extents(
        x.shape, axes, None if scales is None else [float(s) for s in np.asarray(scales)],
        _opt_ints(sizes), ctx.attr("keep_aspect_ratio_policy"),
    )
    bounds = {a: (0.0, 1.0) for a in axes}
    if roi is not None and ctx.attr("coordinate_transformation_mode") == "tf_crop_and_resize":
        flat = np.asarray(roi, dtype=np.float64).reshape(-1)
        bounds = {a: (flat[i], flat[len(axes) + i]) for i, a in enumerate(axes)}
    result = x.astype(np.float64)
    for axis in axes:
        if out[axis] == x.shape[axis] and factors[axis] == 1.0 and bounds[axis] == (0.0, 1.0):
            continue
        result = resize_axis(ctx, result, axis, out[axis], factors[axis], bounds[axis])
    dtype = ctx.out_dtype(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        result = np.clip(np.round(result), info.min, info.max)
    return result.astype(dtype)
