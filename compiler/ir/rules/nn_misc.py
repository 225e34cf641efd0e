"""Type rules of the remaining nn ops: Dropout, GridSample, AffineGrid and the two losses."""

from __future__ import annotations

from ..op import Group, Op
from ..schema import INT, STRING, InferContext, define
from ..shapes import same_dim
from ..types import FLOATS, UNKNOWN, Dim, DType, TensorType

REDUCTIONS = ("none", "sum", "mean")
SAMPLE_MODES = ("linear", "nearest", "cubic", "bilinear", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection")


@define(
    Op.DROPOUT,
    ["data", "ratio?", "training_mode?"],
    ["output", "mask?"],
    {"seed": INT()},
    Group.MISC,
)
def _dropout(ctx: InferContext) -> list[TensorType]:
    """Identity unless training_mode; mask marks the kept elements."""
    x = ctx.input(0)
    ctx.require_dtype(0, FLOATS)
    if ctx.has_input(1) and ctx.input(1).rank != 0:
        raise ctx.fail(f"ratio {ctx.input(1)} must be a scalar")
    if ctx.has_input(2):
        ctx.require_dtype(2, {DType.BOOL})
    return [x, TensorType(DType.BOOL, x.shape)]


@define(
    Op.GRID_SAMPLE,
    ["X", "grid"],
    ["Y"],
    {"align_corners": INT(0), "mode": STRING("linear"), "padding_mode": STRING("zeros")},
    Group.MISC,
)
def _grid_sample(ctx: InferContext) -> list[TensorType]:
    """Sample X [N, C, *S] at the normalized grid [N, *out, len(S)] positions."""
    x = ctx.input(0)
    ctx.require_dtype(0, FLOATS)
    grid = ctx.input(1)
    ctx.require_dtype(1, FLOATS)
    n = x.rank - 2
    if n < 1 or grid.rank != x.rank or not same_dim(grid.shape[-1], n):
        raise ctx.fail(f"grid {grid} must be [N, *out, {n}] for input {x}")
    if not same_dim(grid.shape[0], x.shape[0]):
        raise ctx.fail(f"grid {grid} and input {x} differ in batch size")
    if ctx.attr("mode") not in SAMPLE_MODES:
        raise ctx.fail(f"mode {ctx.attr('mode')!r} must be one of {', '.join(SAMPLE_MODES)}")
    if ctx.attr("padding_mode") not in PADDING_MODES:
        raise ctx.fail(
            f"padding_mode {ctx.attr('padding_mode')!r} must be one of {', '.join(PADDING_MODES)}"
        )
    return [x.with_shape((x.shape[0], x.shape[1], *grid.shape[1:-1]))]


@define(Op.AFFINE_GRID, ["theta", "size"], ["grid"], {"align_corners": INT(0)}, Group.MISC)
def _affine_grid(ctx: InferContext) -> list[TensorType]:
    """Normalized sampling grid [N, *spatial, n] of the affine maps theta [N, n, n + 1]."""
    theta = ctx.input(0)
    ctx.require_dtype(0, FLOATS)
    ctx.require_dtype(1, {DType.I64})
    if (
        theta.rank != 3
        or theta.shape[1] not in (2, 3)
        or not same_dim(
            theta.shape[2], theta.shape[1] + 1 if isinstance(theta.shape[1], int) else UNKNOWN
        )
    ):
        raise ctx.fail(f"theta {theta} must be [N, 2, 3] or [N, 3, 4]")
    n = int(theta.shape[1])
    size = ctx.dims_value(1)
    if size is not None:
        if len(size) != n + 2:
            raise ctx.fail(f"size {list(size)} must be [N, C, *{n} spatial extents]")
        spatial: tuple[Dim, ...] = tuple(size[2:])
    else:
        spatial = (UNKNOWN,) * n
    return [theta.with_shape((theta.shape[0], *spatial, n))]


def _check_loss(ctx: InferContext, scores: TensorType, labels: TensorType) -> None:
    if scores.rank < 2 or labels.rank != scores.rank - 1:
        raise ctx.fail(f"input {scores} must be [N, C, ...] and target {labels} [N, ...]")
    if not all(
        same_dim(a, b)
        for a, b in zip(labels.shape, scores.shape[:1] + scores.shape[2:], strict=False)
    ):
        raise ctx.fail(f"target {labels} does not match input {scores}")
    ctx.require_dtype(1, {DType.I32, DType.I64})
    if ctx.has_input(2):
        weight = ctx.input(2)
        if weight.rank != 1 or not same_dim(weight.shape[0], scores.shape[1]):
            raise ctx.fail(f"weight {weight} must be a vector of {scores.shape[1]} classes")
    if ctx.attr("reduction") not in REDUCTIONS:
        raise ctx.fail(f"reduction {ctx.attr('reduction')!r} must be none, sum or mean")


def _loss_shape(ctx: InferContext, labels: TensorType) -> tuple[Dim, ...]:
    return labels.shape if ctx.attr("reduction") == "none" else ()


@define(
    Op.NEGATIVE_LOG_LIKELIHOOD_LOSS,
    ["input", "target", "weight?"],
    ["loss"],
    {"ignore_index": INT(), "reduction": STRING("mean")},
    Group.MISC,
)
def _nll_loss(ctx: InferContext) -> list[TensorType]:
    """-input[n, target[n], ...] (weighted), reduced by none/sum/weighted mean."""
    ctx.require_dtype(0, FLOATS)
    scores, labels = ctx.input(0), ctx.input(1)
    _check_loss(ctx, scores, labels)
    return [scores.with_shape(_loss_shape(ctx, labels))]


@define(
    Op.SOFTMAX_CROSS_ENTROPY_LOSS,
    ["scores", "labels", "weights?"],
    ["output", "log_prob?"],
    {"ignore_index": INT(), "reduction": STRING("mean")},
    Group.MISC,
)
def _softmax_cross_entropy(ctx: InferContext) -> list[TensorType]:
    """NegativeLogLikelihoodLoss of LogSoftmax(scores) over axis 1; log_prob is returned too."""
    ctx.require_dtype(0, FLOATS)
    scores, labels = ctx.input(0), ctx.input(1)
    _check_loss(ctx, scores, labels)
    return [scores.with_shape(_loss_shape(ctx, labels)), scores]
