"""Type rules of the layout ops made by ``select_layout``: LayoutTransform and the blocked
ConvNCHWc, MaxPoolNCHWc, AveragePoolNCHWc and LRNNCHWc.

Layouts are spelled like the tensor's axes: ``"NCHW"`` is the plain layout, ``"NCHW8c"`` the
channel-blocked one ``[N, ceil(C/8), H, W, 8]`` whose channel ``c`` lives at
``[n, c // 8, h, w, c % 8]``; the channels past C (when C is not a multiple of the block) hold
zeros. A blocked tensor does not know its true channel count, so the transform back to NCHW
carries it as the ``channels`` attribute (0 means every blocked channel, ``C = blocks * block``).

ConvNCHWc is a 2-D convolution in blocked form, ``block`` = b, window attributes Conv's:
- ``group`` 1: ``X [N, ICB, H, W, b]``, ``W [OCB, ICB, KH, KW, b_ic, b_oc]``, ``B? [OCB, b_oc]``
  -> ``Y [N, OCB, OH, OW, b_oc]``, where ``W[o, i, kh, kw, ci, co]`` is the NCHW weight
  ``w[o * b + co, i * b + ci, kh, kw]`` (zero past the real channels) and ``B[o, co]`` the bias
  of channel ``o * b + co``;
- depthwise, ``group`` = C = the output channels (> 1): ``W [CB, 1, KH, KW, 1, b]`` with
  ``W[o, 0, kh, kw, 0, co] = w[o * b + co, 0, kh, kw]``, bias ``[CB, b]``, ``Y [N, CB, OH, OW, b]``;
- ``src_layout="NCHW"`` (group 1 only): X is the plain ``[N, C, H, W]`` (a stem convolution on
  an image of few channels reads it without a transform), W as for group 1 with
  ``ICB = ceil(C / b)``, Y blocked. The default ``""`` means X is blocked.

The pools are MaxPool / AveragePool (same attributes; no Indices output) on ``[N, CB, H, W, b]``
-> ``[N, CB, OH, OW, b]``: each lane is pooled alone, so zero padded channels stay zero (a
global pool is the pool whose kernel is the whole plane). LRNNCHWc is LRN across the blocked
channels (the zero padded channels add nothing to a window's sum of squares).
"""

from __future__ import annotations

import re

from ..op import Group, Op
from ..schema import FLOAT, INT, REQUIRED, STRING, InferContext, define
from ..shapes import same_dim
from ..types import FLOATS, UNKNOWN, Dim, TensorType
from .nn_conv import WINDOW_ATTRS
from .nn_geometry import kernel_shape_of, resolve_window
from .nn_pool import POOL_ATTRS

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
    Op.CONV_NCHWC,
    ["X", "W", "B?"],
    ["Y"],
    {**WINDOW_ATTRS, "block": INT(REQUIRED), "src_layout": STRING("")},
    Group.CONV,
)
def _conv_nchwc(ctx: InferContext) -> list[TensorType]:
    """2-D convolution (group 1 or depthwise) on channel-blocked data, weights and bias."""
    dtype = ctx.require_dtype(0, FLOATS)
    x, w = ctx.input(0), ctx.input(1)
    block = int(ctx.attr("block"))
    group = int(ctx.attr("group"))
    src = str(ctx.attr("src_layout"))
    if block < 1:
        raise ctx.fail(f"block {block} must be positive")
    if src not in ("", PLAIN):
        raise ctx.fail(f"src_layout {src!r} must be empty (blocked) or {PLAIN!r}")
    if w.dtype != dtype:
        raise ctx.fail(f"weight {w} must have the input's element type {dtype.value}")
    if src == PLAIN:
        if x.rank != 4 or group != 1:
            raise ctx.fail(f"input {x} must be [N, C, H, W] (group 1) for src_layout {PLAIN}")
        in_blocks = blocks(x.shape[1], block)
    else:
        if x.rank != 5 or not same_dim(x.shape[4], block):
            raise ctx.fail(f"input {x} must be [N, C/{block}, H, W, {block}]")
        in_blocks = x.shape[1]
    # The weight's expected extents (None: any).
    if group == 1:
        expected: tuple[Dim | None, ...] = (None, in_blocks, None, None, block, block)
    elif group > 1 and same_dim(blocks(group, block), in_blocks):
        expected = (in_blocks, 1, None, None, 1, block)
    else:
        raise ctx.fail(f"group {group} is not supported (1, or depthwise: group = channels)")
    if w.rank != 6 or not all(e is None or same_dim(d, e)
                              for d, e in zip(w.shape, expected, strict=True)):
        names = ("OC/b", "IC/b", "KH", "KW")
        spelled = ", ".join(names[i] if e is None else str(e) for i, e in enumerate(expected))
        raise ctx.fail(f"weight {w} must be [{spelled}]")
    if ctx.has_input(2):
        bias = ctx.input(2)
        if bias.dtype != dtype or bias.rank != 2 or not (
                same_dim(bias.shape[0], w.shape[0]) and same_dim(bias.shape[1], block)):
            raise ctx.fail(f"bias {bias} must be [{w.shape[0]}, {block}] of {dtype.value}")
    kernel = kernel_shape_of(ctx.attrs, w.shape[2:4], 2, ctx.fail)
    window = resolve_window(ctx.attrs, x.shape[2:4], kernel, ctx.fail)
    return [TensorType(dtype, (x.shape[0], w.shape[0], *window.out, block))]


def _blocked_input(ctx: InferContext) -> TensorType:
    ctx.require_dtype(0, FLOATS)
    x = ctx.input(0)
    if x.rank != 5:
        raise ctx.fail(f"input {x} must be [N, C/b, H, W, b]")
    return x


def _pooled(ctx: InferContext) -> list[TensorType]:
    """Each lane of a blocked tensor pooled over the window (attributes of the NCHW pool)."""
    x = _blocked_input(ctx)
    kernel = kernel_shape_of(ctx.attrs, None, 2, ctx.fail)
    window = resolve_window(ctx.attrs, x.shape[2:4], kernel, ctx.fail,
                            bool(ctx.attr("ceil_mode")))
    return [x.with_shape((*x.shape[:2], *window.out, x.shape[4]))]


define(Op.MAX_POOL_NCHWC, ["X"], ["Y"], POOL_ATTRS, Group.POOL)(_pooled)
define(Op.AVERAGE_POOL_NCHWC, ["X"], ["Y"], {**POOL_ATTRS, "count_include_pad": INT(0)},
       Group.POOL)(_pooled)


@define(
    Op.LRN_NCHWC,
    ["X"],
    ["Y"],
    {"alpha": FLOAT(1e-4), "beta": FLOAT(0.75), "bias": FLOAT(1.0), "size": INT(REQUIRED)},
    Group.NORM,
)
def _lrn_nchwc(ctx: InferContext) -> list[TensorType]:
    """LRN across the channels of a blocked tensor."""
    x = _blocked_input(ctx)
    if int(ctx.attr("size")) < 1:
        raise ctx.fail(f"size {ctx.attr('size')} must be positive")
    return [x]
