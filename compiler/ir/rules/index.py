"""Type rules of the index ops: gathers, scatters, selections and searches.

Ops whose output extent is data-dependent (NonZero, Unique, Compress, TopK with a dynamic k,
NonMaxSuppression) give ``UNKNOWN`` extents unless ``ctx.const`` knows the deciding value.
"""

from __future__ import annotations

import numpy as np

from ..op import Group, Op
from ..schema import INT, STRING, InferContext, define
from ..shapes import same_dim
from ..types import UNKNOWN, Dim, DType, TensorType
from .movement import INDEX_TYPES, checked_axis, dims_input, unify

SCATTER_REDUCTIONS = ("none", "add", "mul", "max", "min")
_I64 = frozenset({DType.I64})
_FLOAT_INPUTS = frozenset({DType.F16, DType.F32, DType.F64, DType.BF16})


def _reduction(ctx: InferContext) -> None:
    if ctx.attr("reduction") not in SCATTER_REDUCTIONS:
        raise ctx.fail(f"reduction {ctx.attr('reduction')!r} is not one of "
                       f"{', '.join(SCATTER_REDUCTIONS)}")


@define(Op.GATHER, ["data", "indices"], ["output"], {"axis": INT(0)}, Group.INDEX)
def _gather(ctx: InferContext) -> list[TensorType]:
    """Slices of data along axis picked by indices (negative ones count from the end)."""
    data = ctx.input(0)
    indices = ctx.input(1)
    ctx.require_dtype(1, INDEX_TYPES)
    if data.rank == 0:
        raise ctx.fail("data must have rank >= 1")
    axis = checked_axis(ctx, ctx.attr("axis"), data.rank)
    return [data.with_shape(data.shape[:axis] + indices.shape + data.shape[axis + 1:])]


@define(Op.GATHER_ELEMENTS, ["data", "indices"], ["output"], {"axis": INT(0)}, Group.INDEX)
def _gather_elements(ctx: InferContext) -> list[TensorType]:
    """data[..., indices[i, j, ...], ...] element by element along axis."""
    data, indices = ctx.input(0), ctx.input(1)
    ctx.require_dtype(1, INDEX_TYPES)
    if data.rank != indices.rank or data.rank == 0:
        raise ctx.fail(f"data {data} and indices {indices} must have the same rank >= 1")
    checked_axis(ctx, ctx.attr("axis"), data.rank)
    return [data.with_shape(indices.shape)]


def _nd_split(ctx: InferContext, data: TensorType, indices: TensorType,
              batch_dims: int) -> int:
    """Validates a GatherND/ScatterND pairing; returns the index depth k."""
    ctx.require_dtype(1, _I64)
    if indices.rank < 1 or data.rank < 1:
        raise ctx.fail(f"data {data} and indices {indices} must have rank >= 1")
    k = indices.shape[-1]
    if not isinstance(k, int):
        raise ctx.fail(f"the last extent of indices {indices} must be static")
    if batch_dims < 0 or batch_dims >= min(data.rank, indices.rank):
        raise ctx.fail(f"batch_dims {batch_dims} must be in [0, {min(data.rank, indices.rank)})")
    if k > data.rank - batch_dims:
        raise ctx.fail(f"index depth {k} exceeds the rank {data.rank} of data "
                       f"(batch_dims {batch_dims})")
    for i in range(batch_dims):
        if not same_dim(data.shape[i], indices.shape[i]):
            raise ctx.fail(f"batch extent {i} differs between data {data} and indices {indices}")
    return k


@define(Op.GATHER_ND, ["data", "indices"], ["output"], {"batch_dims": INT(0)}, Group.INDEX)
def _gather_nd(ctx: InferContext) -> list[TensorType]:
    """Slices of data addressed by the last axis of indices (after batch_dims shared axes)."""
    data, indices = ctx.input(0), ctx.input(1)
    batch_dims = ctx.attr("batch_dims")
    k = _nd_split(ctx, data, indices, batch_dims)
    batch = tuple(unify(a, b) for a, b in zip(indices.shape[:batch_dims],
                                               data.shape[:batch_dims], strict=True))
    return [data.with_shape(batch + indices.shape[batch_dims:-1] + data.shape[batch_dims + k:])]


@define(Op.SCATTER_ELEMENTS, ["data", "indices", "updates"], ["output"],
        {"axis": INT(0), "reduction": STRING("none")}, Group.INDEX)
def _scatter_elements(ctx: InferContext) -> list[TensorType]:
    """A copy of data with updates written (or reduced) at indices along axis."""
    data, indices, updates = ctx.input(0), ctx.input(1), ctx.input(2)
    ctx.require_dtype(1, INDEX_TYPES)
    _reduction(ctx)
    if updates.dtype != data.dtype:
        raise ctx.fail(f"updates {updates} must have the element type of data {data}")
    if not data.rank == indices.rank == updates.rank or data.rank == 0:
        raise ctx.fail(f"data {data}, indices {indices} and updates {updates} must share "
                       "a rank >= 1")
    if not all(same_dim(a, b) for a, b in zip(indices.shape, updates.shape, strict=True)):
        raise ctx.fail(f"indices {indices} and updates {updates} must have the same shape")
    checked_axis(ctx, ctx.attr("axis"), data.rank)
    return [data]


@define(Op.SCATTER_ND, ["data", "indices", "updates"], ["output"],
        {"reduction": STRING("none")}, Group.INDEX)
def _scatter_nd(ctx: InferContext) -> list[TensorType]:
    """A copy of data with updates written (or reduced) at the index tuples of indices."""
    data, indices, updates = ctx.input(0), ctx.input(1), ctx.input(2)
    _reduction(ctx)
    k = _nd_split(ctx, data, indices, 0)
    expected = indices.shape[:-1] + data.shape[k:]
    if updates.dtype != data.dtype or updates.rank != len(expected) or not all(
        same_dim(a, b) for a, b in zip(updates.shape, expected, strict=True)
    ):
        raise ctx.fail(f"updates {updates} must be {data.dtype.value}"
                       f"[{','.join(map(str, expected))}]")
    return [data]


@define(Op.TENSOR_SCATTER, ["past_cache", "update", "write_indices?"], ["present_cache"],
        {"mode": STRING("linear"), "axis": INT(-2)}, Group.INDEX)
def _tensor_scatter(ctx: InferContext) -> list[TensorType]:
    """The cache with update written along axis at each batch entry's write index."""
    cache, update = ctx.input(0), ctx.input(1)
    if ctx.attr("mode") not in ("linear", "circular"):
        raise ctx.fail(f"mode {ctx.attr('mode')!r} is not linear or circular")
    if update.dtype != cache.dtype or update.rank != cache.rank:
        raise ctx.fail(f"update {update} must match past_cache {cache} in type and rank")
    axis = checked_axis(ctx, ctx.attr("axis"), cache.rank)
    if axis == 0:
        raise ctx.fail("axis must not be the batch axis 0")
    for i, (c, u) in enumerate(zip(cache.shape, update.shape, strict=True)):
        if i != axis and not same_dim(c, u):
            raise ctx.fail(f"update {update} and past_cache {cache} differ in extent {i}")
        if i == axis and isinstance(c, int) and isinstance(u, int) and u > c:
            raise ctx.fail(f"update {update} is longer than past_cache {cache} along axis {i}")
    if ctx.has_input(2):
        ctx.require_dtype(2, _I64)
    return [cache]


@define(Op.ONE_HOT, ["indices", "depth", "values"], ["output"], {"axis": INT(-1)}, Group.INDEX)
def _one_hot(ctx: InferContext) -> list[TensorType]:
    """values[1] where the new axis position equals the index, values[0] elsewhere."""
    indices, depth_t, values = ctx.input(0), ctx.input(1), ctx.input(2)
    if depth_t.numel not in (None, 1) or values.rank != 1 or not same_dim(values.shape[0], 2):
        raise ctx.fail(f"depth must hold one element and values two; got {depth_t}, {values}")
    rank = indices.rank + 1
    axis = checked_axis(ctx, ctx.attr("axis"), rank)
    depth, known = ctx.const(1), dims_input(ctx, 1)
    extent = (int(np.asarray(depth).reshape(-1)[0]) if depth is not None
              else UNKNOWN if known is None else known[0])
    if isinstance(extent, int) and extent < 1:
        raise ctx.fail(f"depth must be positive, got {extent}")
    return [values.with_shape(indices.shape[:axis] + (extent,) + indices.shape[axis:])]


@define(Op.NONZERO, ["X"], ["Y"], {}, Group.INDEX)
def _nonzero(ctx: InferContext) -> list[TensorType]:
    """Indices of the non-zero elements, one column per element: i64[rank, count]."""
    x = ctx.input(0)
    value = ctx.const(0)
    count = UNKNOWN if value is None else int(np.count_nonzero(value))
    return [TensorType(DType.I64, (x.rank, count))]


@define(Op.UNIQUE, ["X"], ["Y", "indices?", "inverse_indices?", "counts?"],
        {"axis": INT(), "sorted": INT(1)}, Group.INDEX)
def _unique(ctx: InferContext) -> list[TensorType]:
    """Unique elements (or slices along axis), first indices, inverse indices and counts."""
    x = ctx.input(0)
    axis = ctx.attr("axis")
    value = ctx.const(0)
    if axis is None:
        count = UNKNOWN if value is None else len(np.unique(value))
        y_shape: tuple = (count,)
        inverse = x.numel if x.numel is not None else UNKNOWN
    else:
        axis = checked_axis(ctx, axis, x.rank)
        count = UNKNOWN if value is None else np.unique(value, axis=axis).shape[axis]
        y_shape = x.shape[:axis] + (count,) + x.shape[axis + 1:]
        inverse = x.shape[axis]
    return [x.with_shape(y_shape), TensorType(DType.I64, (count,)),
            TensorType(DType.I64, (inverse,)), TensorType(DType.I64, (count,))]


@define(Op.COMPRESS, ["input", "condition"], ["output"], {"axis": INT()}, Group.INDEX)
def _compress(ctx: InferContext) -> list[TensorType]:
    """The slices along axis (or elements of the flattened input) where condition holds."""
    x, condition = ctx.input(0), ctx.input(1)
    ctx.require_dtype(1, frozenset({DType.BOOL}))
    if condition.rank != 1:
        raise ctx.fail(f"condition must be 1-D, got {condition}")
    axis = ctx.attr("axis")
    extent = x.numel if axis is None else x.shape[checked_axis(ctx, axis, x.rank)]
    value = ctx.const(1)
    count: Dim = UNKNOWN
    if value is not None:
        limit = len(value) if not isinstance(extent, int) else extent
        if isinstance(extent, int) and np.any(value[extent:]):
            raise ctx.fail(f"condition selects beyond the extent {extent}")
        count = int(np.count_nonzero(value[:limit]))
    if axis is None:
        return [x.with_shape((count,))]
    axis = checked_axis(ctx, axis, x.rank)
    return [x.with_shape(x.shape[:axis] + (count,) + x.shape[axis + 1:])]


@define(Op.TOPK, ["X", "K"], ["Values", "Indices"],
        {"axis": INT(-1), "largest": INT(1), "sorted": INT(1)}, Group.INDEX)
def _topk(ctx: InferContext) -> list[TensorType]:
    """The k largest (or smallest) entries along axis and their indices."""
    x = ctx.input(0)
    ctx.require_dtype(1, _I64)
    if ctx.input(1).numel not in (None, 1):
        raise ctx.fail(f"K must hold a single element, got {ctx.input(1)}")
    if x.rank == 0:
        raise ctx.fail("X must have rank >= 1")
    axis = checked_axis(ctx, ctx.attr("axis"), x.rank)
    k = dims_input(ctx, 1)
    extent = UNKNOWN if k is None else k[0]
    if k is not None and isinstance(k[0], int):
        if k[0] < 0:
            raise ctx.fail(f"K must be non-negative, got {k[0]}")
        dim = x.shape[axis]
        if isinstance(dim, int) and k[0] > dim:
            raise ctx.fail(f"K {k[0]} exceeds the extent {dim} of axis {axis}")
    shape = x.shape[:axis] + (extent,) + x.shape[axis + 1:]
    return [x.with_shape(shape), TensorType(DType.I64, shape)]


@define(Op.NON_MAX_SUPPRESSION, ["boxes", "scores", "max_output_boxes_per_class?",
                                 "iou_threshold?", "score_threshold?"], ["selected_indices"],
        {"center_point_box": INT(0)}, Group.INDEX)
def _non_max_suppression(ctx: InferContext) -> list[TensorType]:
    """Greedily selected boxes per batch and class: i64[count, 3] rows (batch, class, box)."""
    boxes, scores = ctx.input(0), ctx.input(1)
    ctx.require_dtype(0, _FLOAT_INPUTS)
    if boxes.rank != 3 or not same_dim(boxes.shape[2], 4):
        raise ctx.fail(f"boxes must be [batch, boxes, 4], got {boxes}")
    if scores.rank != 3 or not (same_dim(scores.shape[0], boxes.shape[0])
                                and same_dim(scores.shape[2], boxes.shape[1])):
        raise ctx.fail(f"scores must be [batch, classes, boxes] for boxes {boxes}, got {scores}")
    if ctx.attr("center_point_box") not in (0, 1):
        raise ctx.fail(f"center_point_box must be 0 or 1, got {ctx.attr('center_point_box')}")
    if ctx.has_input(2):
        ctx.require_dtype(2, _I64)
    return [TensorType(DType.I64, (UNKNOWN, 3))]
