"""Type rules of the normalization family: batch, instance, layer, group, RMS, LRN and MVN."""

from __future__ import annotations

from ..op import Group, Op
from ..schema import DTYPE_ATTR, FLOAT, INT, INTS, REQUIRED, InferContext, define
from ..shapes import normalize_axes, normalize_axis, same_dim
from ..types import FLOATS, Dim, DType, TensorType


def float_input(ctx: InferContext, min_rank: int = 1) -> TensorType:
    ctx.require_dtype(0, FLOATS)
    x = ctx.input(0)
    if x.rank < min_rank:
        raise ctx.fail(f"input {x} must have rank >= {min_rank}")
    return x


def channel_vector(ctx: InferContext, index: int, what: str, channels: Dim) -> TensorType:
    """An optional-or-required per-channel parameter [C]."""
    found = ctx.input(index)
    if found.rank != 1 or not same_dim(found.shape[0], channels):
        raise ctx.fail(f"{what} {found} must be a vector of {channels} channels")
    return found


def stash_type(ctx: InferContext) -> DType:
    stash = ctx.attr("stash_type")
    if stash not in FLOATS:
        raise ctx.fail(f"stash_type {stash} must be a float type")
    return stash


@define(
    Op.BATCH_NORMALIZATION,
    ["X", "scale", "B", "input_mean", "input_var"],
    ["Y", "running_mean?", "running_var?"],
    {"epsilon": FLOAT(1e-5), "momentum": FLOAT(0.9), "training_mode": INT(0)},
    Group.NORM,
)
def _batch_norm(ctx: InferContext) -> list[TensorType]:
    """Per-channel (axis 1) normalization; training_mode=1 uses the batch statistics and
    outputs the momentum-updated running mean and variance."""
    x = float_input(ctx, 2)
    stats = [
        channel_vector(ctx, i, name, x.shape[1])
        for i, name in ((1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var"))
    ]
    if ctx.num_outputs > 1 and not ctx.attr("training_mode"):
        raise ctx.fail("running_mean/running_var outputs need training_mode=1")
    return [x, stats[2], stats[3]]


@define(
    Op.INSTANCE_NORMALIZATION,
    ["input", "scale", "B"],
    ["output"],
    {"epsilon": FLOAT(1e-5)},
    Group.NORM,
)
def _instance_norm(ctx: InferContext) -> list[TensorType]:
    """Normalize each (batch, channel) plane over its spatial axes, then scale and shift."""
    x = float_input(ctx, 3)
    channel_vector(ctx, 1, "scale", x.shape[1])
    channel_vector(ctx, 2, "B", x.shape[1])
    return [x]


def _check_broadcast_to(ctx: InferContext, index: int, what: str, target: tuple) -> None:
    found = ctx.input(index)
    if found.rank > len(target) or not all(
        same_dim(d, 1) or same_dim(d, t)
        for d, t in zip(reversed(found.shape), reversed(target), strict=False)
    ):
        raise ctx.fail(f"{what} {found} does not broadcast to the normalized shape {list(target)}")


@define(
    Op.LAYER_NORMALIZATION,
    ["X", "Scale", "B?"],
    ["Y", "Mean?", "InvStdDev?"],
    {"axis": INT(-1), "epsilon": FLOAT(1e-5), "stash_type": DTYPE_ATTR(DType.F32)},
    Group.NORM,
)
def _layer_norm(ctx: InferContext) -> list[TensorType]:
    """Normalize over axes [axis, rank); Mean/InvStdDev keep those axes as 1 (stash type)."""
    x = float_input(ctx)
    axis = normalize_axis(int(ctx.attr("axis")), x.rank)
    _check_broadcast_to(ctx, 1, "Scale", x.shape)
    if ctx.has_input(2):
        _check_broadcast_to(ctx, 2, "B", x.shape)
    stats = TensorType(stash_type(ctx), (*x.shape[:axis], *(1,) * (x.rank - axis)))
    return [x, stats, stats]


@define(
    Op.GROUP_NORMALIZATION,
    ["X", "scale", "bias"],
    ["Y"],
    {"epsilon": FLOAT(1e-5), "num_groups": INT(REQUIRED), "stash_type": DTYPE_ATTR(DType.F32)},
    Group.NORM,
)
def _group_norm(ctx: InferContext) -> list[TensorType]:
    """Normalize each group of channels over the group and the spatial axes; per-channel
    scale and bias."""
    x = float_input(ctx, 2)
    groups = int(ctx.attr("num_groups"))
    channels = x.shape[1]
    if groups < 1 or (isinstance(channels, int) and channels % groups):
        raise ctx.fail(f"num_groups {groups} must divide the {channels} channels")
    stash_type(ctx)
    channel_vector(ctx, 1, "scale", channels)
    channel_vector(ctx, 2, "bias", channels)
    return [x]


@define(
    Op.RMS_NORMALIZATION,
    ["X", "scale"],
    ["Y"],
    {"axis": INT(-1), "epsilon": FLOAT(1e-5), "stash_type": DTYPE_ATTR(DType.F32)},
    Group.NORM,
)
def _rms_norm(ctx: InferContext) -> list[TensorType]:
    """X / sqrt(mean(X^2 over axes [axis, rank)) + epsilon) * scale."""
    x = float_input(ctx)
    normalize_axis(int(ctx.attr("axis")), x.rank)
    stash_type(ctx)
    _check_broadcast_to(ctx, 1, "scale", x.shape)
    return [x]


@define(
    Op.LRN,
    ["X"],
    ["Y"],
    {"alpha": FLOAT(1e-4), "beta": FLOAT(0.75), "bias": FLOAT(1.0), "size": INT(REQUIRED)},
    Group.NORM,
)
def _lrn(ctx: InferContext) -> list[TensorType]:
    """Local response normalization across a window of `size` neighbouring channels."""
    x = float_input(ctx, 3)
    if int(ctx.attr("size")) < 1:
        raise ctx.fail(f"size {ctx.attr('size')} must be positive")
    return [x]


@define(Op.MEAN_VARIANCE_NORMALIZATION, ["X"], ["Y"], {"axes": INTS((0, 2, 3))}, Group.NORM)
def _mvn(ctx: InferContext) -> list[TensorType]:
    """(X - mean) / (std + 1e-9) over the given axes."""
    x = float_input(ctx)
    normalize_axes(ctx.attr("axes"), x.rank)
    return [x]
