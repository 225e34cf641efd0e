"""Type rules of the layout ops made by ``select_layout``: LayoutTransform and ConvNCHWc.

Layouts are spelled like the tensor's axes: ``"NCHW"`` is the plain layout, ``"NCHW8c"`` the
channel-blocked one ``[N, ceil(C/8), H, W, 8]`` whose channel ``c`` lives at
``[n, c // 8, h, w, c % 8]``; the channels past C (when C is not a multiple of the block) hold
zeros. A blocked tensor does not know its true channel count, so the transform back to NCHW
carries it as the ``channels`` attribute (0 means every blocked channel, ``C = blocks * block``).

ConvNCHWc is a 2-D convolution (group 1) entirely in blocked form:
``X [N, ICB, H, W, b]``, ``W [OCB, ICB, KH, KW, b_ic, b_oc]``, ``B? [OCB, b_oc]`` ->
``Y [N, OCB, OH, OW, b_oc]``, where ``W[o, i, kh, kw, ci, co]`` is the NCHW weight
``w[o * b + co, i * b + ci, kh, kw]`` (zero past the real channels) and ``B[o, co]`` the bias of
channel ``o * b + co``. Window attributes are Conv's; ``block`` is b.
"""

from __future__ import annotations

import re

from ..op import Group, Op
from ..schema import INT, REQUIRED, STRING, InferContext, define
from ..shapes import same_dim
from ..types import FLOATS, UNKNOWN, Dim, TensorType
from .nn_conv import WINDOW_ATTRS
from .nn_geometry import kernel_shape_of, resolve_window

PLAIN = "NCHW"
_BLOCKED = re.compile(r"NCHW([1-9][0-9]*)c")


def blocked_layout(block: int) -> str:
    """The name of the NCHW[block]c layout."""
    return f"NCHW{block}c"


def block_of(layout: str) -> int | None:
    """The block of a blocked layout name, 0 for ``"NCHW"``, None for anything else."""
    if layout == PLAIN:
        return 0
    found = _BLOCKED.fullmatch(layout)
    return int(found.group(1)) if found else None


def blocks(channels: Dim, block: int) -> Dim:
    """ceil(channels / block) (UNKNOWN for a symbolic channel count)."""
    return -(-channels // block) if isinstance(channels, int) else UNKNOWN


@define(
    Op.LAYOUT_TRANSFORM,
    ["input"],
    ["output"],
    {"src_layout": STRING(REQUIRED), "dst_layout": STRING(REQUIRED), "channels": INT(0)},
    Group.LAYOUT,
)
def _layout_transform(ctx: InferContext) -> list[TensorType]:
    """NCHW <-> NCHW[b]c (zero-padded channels); ``channels`` is C when unblocking."""
    x = ctx.input(0)
    src, dst = str(ctx.attr("src_layout")), str(ctx.attr("dst_layout"))
    src_block, dst_block = block_of(src), block_of(dst)
    if src_block is None or dst_block is None or (src_block == 0) == (dst_block == 0):
        raise ctx.fail(f"cannot transform {src!r} to {dst!r}: only NCHW <-> NCHW<b>c is supported")
    channels = int(ctx.attr("channels"))
    if channels < 0:
        raise ctx.fail(f"channels {channels} must be >= 0")
    if dst_block:
        if x.rank != 4:
            raise ctx.fail(f"input {x} must be rank 4 (N, C, H, W) for layout {src}")
        n, c, h, w = x.shape
        return [TensorType(x.dtype, (n, blocks(c, dst_block), h, w, dst_block))]
    if x.rank != 5 or not same_dim(x.shape[4], src_block):
        raise ctx.fail(f"input {x} must be [N, C/{src_block}, H, W, {src_block}] for layout {src}")
    n, cb, h, w, _ = x.shape
    if channels and not same_dim(cb, blocks(channels, src_block)):
        raise ctx.fail(f"channels {channels} do not fit {cb} blocks of {src_block}")
    if channels:
        c: Dim = channels
    else:
        c = cb * src_block if isinstance(cb, int) else UNKNOWN
    return [TensorType(x.dtype, (n, c, h, w))]


@define(
    Op.CONV_NCHWC, ["X", "W", "B?"], ["Y"], {**WINDOW_ATTRS, "block": INT(REQUIRED)}, Group.CONV
)
def _conv_nchwc(ctx: InferContext) -> list[TensorType]:
    """2-D convolution (group 1) on channel-blocked data, weights and bias."""
    dtype = ctx.require_dtype(0, FLOATS)
    x, w = ctx.input(0), ctx.input(1)
    block = int(ctx.attr("block"))
    if block < 1:
        raise ctx.fail(f"block {block} must be positive")
    if int(ctx.attr("group")) != 1:
        raise ctx.fail(f"group {ctx.attr('group')} is not supported (only 1)")
    if x.rank != 5 or not same_dim(x.shape[4], block):
        raise ctx.fail(f"input {x} must be [N, C/{block}, H, W, {block}]")
    if w.dtype != dtype:
        raise ctx.fail(f"weight {w} must have the input's element type {dtype.value}")
    if (w.rank != 6 or not same_dim(w.shape[1], x.shape[1])
            or not all(same_dim(d, block) for d in w.shape[4:])):
        raise ctx.fail(f"weight {w} must be [OC/{block}, {x.shape[1]}, KH, KW, {block}, {block}]")
    if ctx.has_input(2):
        bias = ctx.input(2)
        if bias.dtype != dtype or bias.rank != 2 or not (
                same_dim(bias.shape[0], w.shape[0]) and same_dim(bias.shape[1], block)):
            raise ctx.fail(f"bias {bias} must be [{w.shape[0]}, {block}] of {dtype.value}")
    kernel = kernel_shape_of(ctx.attrs, w.shape[2:4], 2, ctx.fail)
    window = resolve_window(ctx.attrs, x.shape[2:4], kernel, ctx.fail)
    return [TensorType(dtype, (x.shape[0], w.shape[0], *window.out, block))]
