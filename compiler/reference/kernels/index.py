"""Numpy kernels of the index ops: gathers, scatters, selections and searches.

Indices follow ONNX: negative ones count from the end of their axis, and any index outside
``[-extent, extent)`` is an error naming the node (numpy would silently wrap or raise an
IndexError without context).
"""

from __future__ import annotations

import numpy as np

from ...ir.op import Op
from ...ir.shapes import normalize_axis
from .registry import KernelContext, kernel

_REDUCE_AT = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _checked_indices(ctx: KernelContext, indices: np.ndarray, extent: int,
                     what: str = "index") -> np.ndarray:
    """Indices with negatives wrapped once; raises for any outside [-extent, extent)."""
    indices = np.asarray(indices, dtype=np.int64)
    bad = (indices < -extent) | (indices >= extent)
    if np.any(bad):
        raise ctx.fail(f"{what} {int(indices[bad].reshape(-1)[0])} is out of range for "
                       f"extent {extent}")
    return np.where(indices < 0, indices + extent, indices)


def _scatter(ctx: KernelContext, out: np.ndarray, where: tuple, updates: np.ndarray) -> None:
    """out[where] = updates, or reduced into out with the node's reduction."""
    reduction = ctx.attr("reduction")
    if reduction == "none":
        out[where] = updates
    else:
        _REDUCE_AT[reduction].at(out, where, updates)


@kernel(Op.GATHER)
def _gather(ctx: KernelContext, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
    axis = normalize_axis(ctx.attr("axis"), data.ndim)
    return np.take(data, _checked_indices(ctx, indices, data.shape[axis]), axis=axis)


@kernel(Op.GATHER_ELEMENTS)
def _gather_elements(ctx: KernelContext, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
    # Indices may be smaller than data off the axis (not broadcast), so index explicitly.
    axis = normalize_axis(ctx.attr("axis"), data.ndim)
    return data[_element_index(ctx, data, indices, axis)]


def _element_index(ctx: KernelContext, data: np.ndarray, indices: np.ndarray,
                   axis: int) -> tuple:
    """The index tuple addressing data[..., indices[i], ...] for every position of indices."""
    for d, (i, s) in enumerate(zip(indices.shape, data.shape, strict=True)):
        if d != axis and i > s:
            raise ctx.fail(f"indices {list(indices.shape)} exceed data {list(data.shape)} "
                           f"along axis {d}")
    where: list[np.ndarray] = list(np.indices(indices.shape, sparse=True))
    where[axis] = _checked_indices(ctx, indices, data.shape[axis])
    return tuple(where)


def _nd_index(ctx: KernelContext, data_shape: tuple[int, ...], indices: np.ndarray,
              batch_dims: int) -> tuple[np.ndarray, ...]:
    """GatherND/ScatterND index tuple into data viewed as [prod(batch), *rest]: the leading
    array selects the batch entry, the others the k indexed axes; each shaped [B, M]."""
    k = indices.shape[-1]
    batch = int(np.prod(data_shape[:batch_dims]))
    flat = indices.reshape(batch, -1, k)
    columns = [_checked_indices(ctx, flat[..., j], data_shape[batch_dims + j])
               for j in range(k)]
    rows = np.broadcast_to(np.arange(batch)[:, None], flat.shape[:2])
    return (rows, *columns)


@kernel(Op.GATHER_ND)
def _gather_nd(ctx: KernelContext, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
    b = ctx.attr("batch_dims")
    k = indices.shape[-1]
    view = data.reshape((int(np.prod(data.shape[:b])),) + data.shape[b:])
    picked = view[_nd_index(ctx, data.shape, indices, b)]
    return picked.reshape(indices.shape[:-1] + data.shape[b + k:])


@kernel(Op.SCATTER_ND)
def _scatter_nd(ctx: KernelContext, data: np.ndarray, indices: np.ndarray,
                updates: np.ndarray) -> np.ndarray:
    k = indices.shape[-1]
    out = data.copy().reshape((1,) + data.shape)
    where = _nd_index(ctx, data.shape, indices, 0)
    _scatter(ctx, out, where, updates.reshape((1, -1) + data.shape[k:]))
    return out.reshape(data.shape)


@kernel(Op.SCATTER_ELEMENTS)
def _scatter_elements(ctx: KernelContext, data: np.ndarray, indices: np.ndarray,
                      updates: np.ndarray) -> np.ndarray:
    out = data.copy()
    _scatter(ctx, out, _element_index(ctx, data, indices, normalize_axis(ctx.attr("axis"),
                                                                          data.ndim)), updates)
    return out


@kernel(Op.TENSOR_SCATTER)
def _tensor_scatter(ctx: KernelContext, cache: np.ndarray, update: np.ndarray,
                    write_indices: np.ndarray | None = None) -> np.ndarray:
    axis = normalize_axis(ctx.attr("axis"), cache.ndim)
    capacity, length = cache.shape[axis], update.shape[axis]
    starts = (np.zeros(cache.shape[0], np.int64) if write_indices is None
              else np.asarray(write_indices, np.int64).reshape(-1))
    starts = starts.reshape((-1,) + (1,) * (cache.ndim - 1))
    steps = np.arange(length).reshape((1,) * axis + (-1,) + (1,) * (cache.ndim - axis - 1))
    positions = starts + steps
    if ctx.attr("mode") == "circular":
        positions = positions % capacity
    elif np.any((positions < 0) | (positions >= capacity)):
        raise ctx.fail(f"write_indices {starts.reshape(-1).tolist()} plus {length} updates "
                       f"overrun the cache extent {capacity}")
    out = cache.copy()
    np.put_along_axis(out, np.broadcast_to(positions, update.shape), update, axis=axis)
    return out


@kernel(Op.ONE_HOT)
def _one_hot(ctx: KernelContext, indices: np.ndarray, depth: np.ndarray,
             values: np.ndarray) -> np.ndarray:
    n = int(np.asarray(depth).reshape(-1)[0])
    flat = np.asarray(indices).astype(np.int64)
    flat = np.where(flat < 0, flat + n, flat)
    hot = flat[..., None] == np.arange(n)
    out = np.where(hot, values[1], values[0])
    return np.moveaxis(out, -1, normalize_axis(ctx.attr("axis"), indices.ndim + 1))


@kernel(Op.NONZERO)
def _nonzero(ctx: KernelContext, x: np.ndarray) -> np.ndarray:
    if x.ndim == 0:
        return np.zeros((0, int(bool(x))), dtype=np.int64)
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


@kernel(Op.UNIQUE)
def _unique(ctx: KernelContext, x: np.ndarray) -> tuple:
    axis = ctx.attr("axis")
    axis = None if axis is None else normalize_axis(axis, x.ndim)
    y, first, inverse, counts = np.unique(
        x, return_index=True, return_inverse=True, return_counts=True, axis=axis
    )
    inverse = inverse.reshape(-1)
    if not ctx.attr("sorted"):
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        y = np.take(y, order, axis=0 if axis is None else axis)
        first, inverse, counts = first[order], rank[inverse], counts[order]
    return y, first.astype(np.int64), inverse.astype(np.int64), counts.astype(np.int64)


@kernel(Op.COMPRESS)
def _compress(ctx: KernelContext, x: np.ndarray, condition: np.ndarray) -> np.ndarray:
    axis = ctx.attr("axis")
    if axis is None:
        return np.compress(condition, x.reshape(-1))
    return np.compress(condition, x, axis=normalize_axis(axis, x.ndim))


@kernel(Op.TOPK)
def _topk(ctx: KernelContext, x: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axis = normalize_axis(ctx.attr("axis"), x.ndim)
    count = int(np.asarray(k).reshape(-1)[0])
    if not 0 <= count <= x.shape[axis]:
        raise ctx.fail(f"K {count} is outside [0, {x.shape[axis]}]")
    if ctx.attr("largest"):
        # A stable ascending sort of the reversed axis, read backwards, is a descending order
        # in which equal values keep the lower index first, as ONNX requires.
        flipped = np.argsort(np.flip(x, axis), axis=axis, kind="stable")
        order = x.shape[axis] - 1 - np.flip(flipped, axis)
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    order = np.take(order, np.arange(count), axis=axis)
    return np.take_along_axis(x, order, axis=axis), order.astype(np.int64)


def _box_corners(boxes: np.ndarray, center_point_box: int) -> np.ndarray:
    """Boxes as [ymin, xmin, ymax, xmax] from either ONNX box encoding."""
    if center_point_box:
        x, y, w, h = np.moveaxis(boxes, -1, 0)
        return np.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], axis=-1)
    y1, x1, y2, x2 = np.moveaxis(boxes, -1, 0)
    return np.stack([np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2),
                     np.maximum(x1, x2)], axis=-1)


def _overlaps(box: np.ndarray, others: np.ndarray, threshold: float) -> np.ndarray:
    """Which of ``others`` overlap ``box`` with IoU above threshold (degenerate boxes never)."""
    inter_h = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    inter_w = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    inter = np.where((inter_h > 0) & (inter_w > 0), inter_h * inter_w, 0.0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    valid = (inter > 0) & (area > 0) & (areas > 0) & (union > 0)
    return valid & (inter / np.where(valid, union, 1.0) > threshold)


@kernel(Op.NON_MAX_SUPPRESSION)
def _non_max_suppression(ctx: KernelContext, boxes: np.ndarray, scores: np.ndarray,
                         max_boxes: np.ndarray | None = None, iou: np.ndarray | None = None,
                         score_threshold: np.ndarray | None = None) -> np.ndarray:
    def scalar(v: np.ndarray | None, default: float) -> float:
        return default if v is None or np.asarray(v).size == 0 else np.asarray(v).reshape(-1)[0]

    limit = max(int(scalar(max_boxes, 0)), 0)
    threshold = float(scalar(iou, 0.0))
    corners = _box_corners(boxes.astype(np.float64), ctx.attr("center_point_box"))
    selected: list[tuple[int, int, int]] = []
    # Loops run over batches, classes and selected boxes; each step is vectorized over boxes.
    for b in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            score = scores[b, c]
            # Highest score first; equal scores keep the lower box index first.
            order = np.lexsort((np.arange(len(score)), -score.astype(np.float64)))
            if score_threshold is not None and np.asarray(score_threshold).size:
                order = order[score[order] > scalar(score_threshold, 0.0)]
            kept = 0
            while order.size and kept < limit:
                best = order[0]
                selected.append((b, c, int(best)))
                kept += 1
                rest = order[1:]
                order = rest[~_overlaps(corners[b, best], corners[b, rest], threshold)]
    return np.array(selected, dtype=np.int64).reshape(-1, 3)
