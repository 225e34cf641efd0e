"""Type rules of the pooling family: windowed, global, unpooling and region-of-interest pools."""

from __future__ import annotations

from .. import symbolic
from ..op import Group, Op
from ..schema import FLOAT, INT, INTS, REQUIRED, STRING, AttrKind, AttrSpec, InferContext, define
from ..types import FLOATS, UNKNOWN, Dim, DType, TensorType
from .nn_geometry import kernel_shape_of, resolve_window

# INTS(REQUIRED) cannot be spelled through the schema helper (it iterates its default).
REQUIRED_INTS = AttrSpec(AttrKind.INTS, REQUIRED)
POOL_ATTRS = {
    "auto_pad": STRING("NOTSET"),
    "ceil_mode": INT(0),
    "dilations": INTS(),
    "kernel_shape": REQUIRED_INTS,
    "pads": INTS(),
    "strides": INTS(),
}
MAX_POOL_TYPES = FLOATS | {DType.I8, DType.U8}


def spatial_input(ctx: InferContext, allowed: frozenset[DType] = FLOATS) -> TensorType:
    ctx.require_dtype(0, allowed)
    x = ctx.input(0)
    if x.rank < 3:
        raise ctx.fail(f"input must have rank >= 3 (N, C, spatial...), got {x}")
    return x


def pooled_shape(ctx: InferContext, x: TensorType) -> tuple[Dim, ...]:
    kernel = kernel_shape_of(ctx.attrs, None, x.rank - 2, ctx.fail)
    window = resolve_window(ctx.attrs, x.shape[2:], kernel, ctx.fail, bool(ctx.attr("ceil_mode")))
    return (*x.shape[:2], *window.out)


@define(Op.AVERAGE_POOL, ["X"], ["Y"], {**POOL_ATTRS, "count_include_pad": INT(0)}, Group.POOL)
def _average_pool(ctx: InferContext) -> list[TensorType]:
    """Mean over each window; pads count toward the divisor only with count_include_pad."""
    x = spatial_input(ctx)
    return [x.with_shape(pooled_shape(ctx, x))]


@define(Op.MAX_POOL, ["X"], ["Y", "Indices?"], {**POOL_ATTRS, "storage_order": INT(0)}, Group.POOL)
def _max_pool(ctx: InferContext) -> list[TensorType]:
    """Max over each window; Indices are flat positions in X (column-major with
    storage_order=1)."""
    x = spatial_input(ctx, MAX_POOL_TYPES)
    if ctx.attr("storage_order") not in (0, 1):
        raise ctx.fail(f"storage_order {ctx.attr('storage_order')} must be 0 or 1")
    shape = pooled_shape(ctx, x)
    return [x.with_shape(shape), TensorType(DType.I64, shape)]


@define(Op.LP_POOL, ["X"], ["Y"], {**POOL_ATTRS, "p": INT(2)}, Group.POOL)
def _lp_pool(ctx: InferContext) -> list[TensorType]:
    """p-norm of each window."""
    x = spatial_input(ctx)
    return [x.with_shape(pooled_shape(ctx, x))]


def _global(ctx: InferContext) -> list[TensorType]:
    x = spatial_input(ctx)
    return [x.with_shape((*x.shape[:2], *(1,) * (x.rank - 2)))]


define(Op.GLOBAL_AVERAGE_POOL, ["X"], ["Y"], {}, Group.POOL)(_global)
define(Op.GLOBAL_MAX_POOL, ["X"], ["Y"], {}, Group.POOL)(_global)
define(Op.GLOBAL_LP_POOL, ["X"], ["Y"], {"p": INT(2)}, Group.POOL)(_global)


@define(
    Op.MAX_UNPOOL,
    ["X", "I", "output_shape?"],
    ["output"],
    {"kernel_shape": REQUIRED_INTS, "pads": INTS(), "strides": INTS()},
    Group.POOL,
)
def _max_unpool(ctx: InferContext) -> list[TensorType]:
    """Scatter pooled values back to the flat positions in I; zeros elsewhere."""
    x = spatial_input(ctx)
    ctx.require_dtype(1, {DType.I64})
    if ctx.input(1).shape != x.shape and ctx.input(1).rank != x.rank:
        raise ctx.fail(f"indices {ctx.input(1)} must have the shape of X {x}")
    if ctx.has_input(2):
        ctx.require_dtype(2, {DType.I64})
        given = ctx.const(2)
        if given is not None:
            if len(given) != x.rank:
                raise ctx.fail(f"output_shape {list(given)} must have rank {x.rank}")
            return [x.with_shape(tuple(int(v) for v in given))]
        return [x.with_shape((UNKNOWN,) * x.rank)]
    n = x.rank - 2
    kernel = kernel_shape_of(ctx.attrs, None, n, ctx.fail)
    strides = ctx.attr("strides") or (1,) * n
    pads = ctx.attr("pads") or (0,) * (2 * n)
    if len(strides) != n or len(pads) != 2 * n:
        raise ctx.fail(f"strides {list(strides)} / pads {list(pads)} do not fit {n} spatial axes")
    spatial = tuple(
        symbolic.add(symbolic.mul(symbolic.sub(size, 1), s), k - pads[i] - pads[n + i])
        for i, (size, s, k) in enumerate(zip(x.shape[2:], strides, kernel, strict=False))
    )
    return [x.with_shape((*x.shape[:2], *spatial))]


def _rois(ctx: InferContext, index: int, columns: int) -> Dim:
    rois = ctx.input(index)
    if rois.rank != 2 or rois.shape[1] not in (columns, UNKNOWN) and isinstance(rois.shape[1], int):
        raise ctx.fail(f"rois {rois} must be [num_rois, {columns}]")
    if rois.dtype != ctx.input(0).dtype:
        raise ctx.fail(f"rois {rois} must have the element type of X")
    return rois.shape[0]


@define(
    Op.MAX_ROI_POOL,
    ["X", "rois"],
    ["Y"],
    {"pooled_shape": REQUIRED_INTS, "spatial_scale": FLOAT(1.0)},
    Group.POOL,
)
def _max_roi_pool(ctx: InferContext) -> list[TensorType]:
    """Max over a pooled_shape grid of bins in each [batch, x1, y1, x2, y2] region."""
    x = spatial_input(ctx)
    if x.rank != 4:
        raise ctx.fail(f"input {x} must be [N, C, H, W]")
    pooled = ctx.attr("pooled_shape")
    if len(pooled) != 2 or min(pooled) < 1:
        raise ctx.fail(f"pooled_shape {list(pooled)} must be two positive extents")
    return [x.with_shape((_rois(ctx, 1, 5), x.shape[1], *pooled))]


@define(
    Op.ROI_ALIGN,
    ["X", "rois", "batch_indices"],
    ["Y"],
    {
        "coordinate_transformation_mode": STRING("half_pixel"),
        "mode": STRING("avg"),
        "output_height": INT(1),
        "output_width": INT(1),
        "sampling_ratio": INT(0),
        "spatial_scale": FLOAT(1.0),
    },
    Group.POOL,
)
def _roi_align(ctx: InferContext) -> list[TensorType]:
    """Bilinearly sampled average (or max) over bins of each [x1, y1, x2, y2] region."""
    x = spatial_input(ctx)
    if x.rank != 4:
        raise ctx.fail(f"input {x} must be [N, C, H, W]")
    if ctx.attr("mode") not in ("avg", "max"):
        raise ctx.fail(f"mode {ctx.attr('mode')!r} must be avg or max")
    if ctx.attr("coordinate_transformation_mode") not in ("half_pixel", "output_half_pixel"):
        raise ctx.fail("coordinate_transformation_mode must be half_pixel or output_half_pixel")
    ctx.require_dtype(2, {DType.I64})
    count = _rois(ctx, 1, 4)
    height, width = int(ctx.attr("output_height")), int(ctx.attr("output_width"))
    return [x.with_shape((count, x.shape[1], height, width))]
