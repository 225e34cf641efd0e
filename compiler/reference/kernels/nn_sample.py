"""Sampling an [N, C, *spatial] image at fractional pixel coordinates (GridSample's nearest,
linear and cubic modes with zeros/border/reflection padding); DeformConv reuses it."""

from __future__ import annotations

import itertools

import numpy as np

CUBIC_ALPHA = -0.75


def reflect(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fold coordinates outside [low, high] back by repeated reflection at the borders."""
    span = high - low
    if span <= 0:
        return np.full_like(x, low)
    below, above = x < low, x > high
    dist = np.where(below, low - x, x - high)
    folds = np.floor(dist / span)
    rest = dist - folds * span
    even = folds % 2 == 0
    from_below = np.where(even, low + rest, high - rest)
    from_above = np.where(even, high - rest, low + rest)
    return np.where(below, from_below, np.where(above, from_above, x))


def _cubic_weights(t: np.ndarray) -> list[np.ndarray]:
    a = CUBIC_ALPHA
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    w3 = ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a
    return [w0, w1, w2, w3]


def _taps(x: np.ndarray, mode: str) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(integer tap position, weight) pairs along one axis; nearest has weight None."""
    if mode == "nearest":
        return [(x.astype(np.int64), None)]
    base = np.floor(x)
    t = x - base
    base = base.astype(np.int64)
    if mode == "linear":
        return [(base, 1 - t), (base + 1, t)]
    return [(base + i - 1, w) for i, w in enumerate(_cubic_weights(t))]


def sample(
    image: np.ndarray, coords: np.ndarray, mode: str, padding: str, align_corners: bool = False
) -> np.ndarray:
    """Values of ``image`` [N, C, *S] at pixel ``coords`` [N, *out, len(S)] (axis order of S)
    -> [N, C, *out]. Taps outside the image read 0 (zeros), the clamped edge (border) or the
    mirrored pixel (reflection, about the pixel edges unless ``align_corners``)."""
    n = image.ndim - 2
    sizes = image.shape[2:]
    lows = [0.0 if align_corners else -0.5] * n
    highs = [s - 1.0 if align_corners else s - 0.5 for s in sizes]
    axes = []
    for axis in range(n):
        x = coords[..., axis]
        if mode == "nearest":
            x = np.rint(x)
        outside = (x < lows[axis]) | (x > highs[axis])
        if padding == "border":
            x = np.where(outside, np.clip(x, 0, sizes[axis] - 1), x)
        elif padding == "reflection":
            x = np.where(outside, reflect(x, lows[axis], highs[axis]), x)
        axes.append(_taps(x, mode))
    channels_last = np.moveaxis(image, 1, -1)
    batch = np.arange(image.shape[0]).reshape((-1,) + (1,) * (coords.ndim - 2))
    result = np.zeros(coords.shape[:-1] + (image.shape[1],), image.dtype)
    for combo in itertools.product(*axes):
        index, valid, weight = [], None, None
        for axis, (pos, w) in enumerate(combo):
            if padding == "zeros":
                inside = (pos >= 0) & (pos < sizes[axis])
                valid = inside if valid is None else valid & inside
            elif padding == "border":
                pos = np.clip(pos, 0, sizes[axis] - 1)
            else:
                pos = reflect(pos.astype(np.float64), lows[axis], highs[axis]).astype(np.int64)
            index.append(np.clip(pos, 0, sizes[axis] - 1))
            if w is not None:
                weight = w if weight is None else weight * w
        taken = channels_last[(batch, *index)]
        if valid is not None:
            taken = np.where(valid[..., None], taken, 0)
        result += taken if weight is None else taken * weight[..., None].astype(image.dtype)
    return np.moveaxis(result, -1, 1)
