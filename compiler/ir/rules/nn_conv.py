"""Type rules of the convolution family: Conv, ConvTranspose, ConvInteger, QLinearConv,
DeformConv, Col2Im and CausalConvWithState."""

from __future__ import annotations

from .. import symbolic
from ..op import Group, Op
from ..schema import INT, INTS, STRING, InferContext, define
from ..shapes import product, same_dim
from ..types import FLOATS, UNKNOWN, Dim, DType, TensorType
from .nn_geometry import kernel_shape_of, resolve_transpose_window, resolve_window

QUANTIZED = frozenset({DType.I8, DType.U8})
WINDOW_ATTRS = {
    "auto_pad": STRING("NOTSET"),
    "dilations": INTS(),
    "group": INT(1),
    "kernel_shape": INTS(),
    "pads": INTS(),
    "strides": INTS(),
}


def check_conv_operands(
    ctx: InferContext, x: TensorType, w: TensorType, transposed: bool = False
) -> tuple[int, Dim]:
    """Validate an NC... input against its weight; returns (group, output channels)."""
    if x.rank < 3:
        raise ctx.fail(f"input must have rank >= 3 (N, C, spatial...), got {x}")
    if w.rank != x.rank:
        raise ctx.fail(f"weight {w} must have the input's rank {x.rank}")
    group = int(ctx.attr("group") or 1)
    if group < 1:
        raise ctx.fail(f"group {group} must be positive")
    channels = x.shape[1]
    if transposed:
        if not same_dim(w.shape[0], channels):
            raise ctx.fail(
                f"weight {w} has {w.shape[0]} input channels; the input {x} has {channels}"
            )
        per_group = w.shape[1]
        out = symbolic.mul(per_group, group)
    else:
        per_group = w.shape[1]
        if isinstance(per_group, int) and not same_dim(channels, per_group * group):
            raise ctx.fail(
                f"weight {w} expects {per_group} x group {group} = {per_group * group} "
                f"input channels; the input {x} has {channels}"
            )
        out = w.shape[0]
        if isinstance(out, int) and out % group:
            raise ctx.fail(f"weight {w} has {out} output channels, not divisible by group {group}")
    return group, out


def check_bias(ctx: InferContext, index: int, channels: Dim) -> None:
    if ctx.has_input(index):
        bias = ctx.input(index)
        if bias.rank != 1 or not same_dim(bias.shape[0], channels):
            raise ctx.fail(f"bias {bias} must be a vector of {channels} output channels")


def conv_shape(ctx: InferContext, x: TensorType, w: TensorType) -> tuple[Dim, ...]:
    _, out_channels = check_conv_operands(ctx, x, w)
    kernel = kernel_shape_of(ctx.attrs, w.shape[2:], x.rank - 2, ctx.fail)
    window = resolve_window(ctx.attrs, x.shape[2:], kernel, ctx.fail)
    return (x.shape[0], out_channels, *window.out)


@define(Op.CONV, ["X", "W", "B?"], ["Y"], WINDOW_ATTRS, Group.CONV)
def _conv(ctx: InferContext) -> list[TensorType]:
    """N-D grouped convolution (cross-correlation) with optional bias."""
    dtype = ctx.require_dtype(0, FLOATS)
    x, w = ctx.input(0), ctx.input(1)
    if w.dtype != dtype:
        raise ctx.fail(f"weight {w} must have the input's element type {dtype.value}")
    shape = conv_shape(ctx, x, w)
    check_bias(ctx, 2, shape[1])
    return [TensorType(dtype, shape)]


@define(
    Op.CONV_TRANSPOSE,
    ["X", "W", "B?"],
    ["Y"],
    {**WINDOW_ATTRS, "output_padding": INTS(), "output_shape": INTS()},
    Group.CONV,
)
def _conv_transpose(ctx: InferContext) -> list[TensorType]:
    """Transposed convolution; ``output_shape`` fixes the output and implies the pads."""
    dtype = ctx.require_dtype(0, FLOATS)
    x, w = ctx.input(0), ctx.input(1)
    _, out_channels = check_conv_operands(ctx, x, w, transposed=True)
    check_bias(ctx, 2, out_channels)
    kernel = kernel_shape_of(ctx.attrs, w.shape[2:], x.rank - 2, ctx.fail)
    window = resolve_transpose_window(ctx.attrs, x.shape[2:], kernel, ctx.fail)
    return [TensorType(dtype, (x.shape[0], out_channels, *window.out))]


def check_zero_point(ctx: InferContext, index: int, like: int, what: str) -> None:
    if ctx.has_input(index) and ctx.input(index).dtype != ctx.input(like).dtype:
        raise ctx.fail(f"{what} {ctx.input(index)} must have the element type of {ctx.input(like)}")


@define(
    Op.CONV_INTEGER, ["x", "w", "x_zero_point?", "w_zero_point?"], ["y"], WINDOW_ATTRS, Group.CONV
)
def _conv_integer(ctx: InferContext) -> list[TensorType]:
    """Integer convolution of zero-point-shifted 8-bit operands, accumulated in int32."""
    ctx.require_dtype(0, QUANTIZED)
    ctx.require_dtype(1, QUANTIZED)
    check_zero_point(ctx, 2, 0, "x_zero_point")
    check_zero_point(ctx, 3, 1, "w_zero_point")
    return [TensorType(DType.I32, conv_shape(ctx, ctx.input(0), ctx.input(1)))]


@define(
    Op.QLINEAR_CONV,
    [
        "x",
        "x_scale",
        "x_zero_point",
        "w",
        "w_scale",
        "w_zero_point",
        "y_scale",
        "y_zero_point",
        "B?",
    ],
    ["y"],
    WINDOW_ATTRS,
    Group.CONV,
)
def _qlinear_conv(ctx: InferContext) -> list[TensorType]:
    """Quantized convolution: dequantize, convolve, requantize to y_zero_point's type."""
    ctx.require_dtype(0, QUANTIZED)
    ctx.require_dtype(3, QUANTIZED)
    out = ctx.require_dtype(7, QUANTIZED)
    for index in (1, 4, 6):
        ctx.require_dtype(index, FLOATS)
    check_zero_point(ctx, 2, 0, "x_zero_point")
    check_zero_point(ctx, 5, 3, "w_zero_point")
    shape = conv_shape(ctx, ctx.input(0), ctx.input(3))
    if ctx.has_input(8):
        ctx.require_dtype(8, {DType.I32})
        check_bias(ctx, 8, shape[1])
    return [TensorType(out, shape)]


@define(
    Op.DEFORM_CONV,
    ["X", "W", "offset", "B?", "mask?"],
    ["Y"],
    {
        "dilations": INTS(),
        "group": INT(1),
        "kernel_shape": INTS(),
        "offset_group": INT(1),
        "pads": INTS(),
        "strides": INTS(),
    },
    Group.CONV,
)
def _deform_conv(ctx: InferContext) -> list[TensorType]:
    """2-D deformable convolution: kernel taps shifted by learned offsets, optionally masked."""
    dtype = ctx.require_dtype(0, FLOATS)
    x, w, offset = ctx.input(0), ctx.input(1), ctx.input(2)
    if x.rank != 4:
        raise ctx.fail(f"only 2-D deformable convolution is supported; input is {x}")
    shape = conv_shape(ctx, x, w)
    kernel = kernel_shape_of(ctx.attrs, w.shape[2:], 2, ctx.fail)
    groups = int(ctx.attr("offset_group"))
    taps = groups * kernel[0] * kernel[1]
    if offset.rank != 4 or not same_dim(offset.shape[1], 2 * taps):
        raise ctx.fail(f"offset {offset} must be [N, {2 * taps}, out_h, out_w]")
    check_bias(ctx, 3, shape[1])
    if ctx.has_input(4) and not same_dim(ctx.input(4).shape[1], taps):
        raise ctx.fail(f"mask {ctx.input(4)} must be [N, {taps}, out_h, out_w]")
    return [TensorType(dtype, shape)]


@define(
    Op.COL2IM,
    ["input", "image_shape", "block_shape"],
    ["output"],
    {"dilations": INTS(), "pads": INTS(), "strides": INTS()},
    Group.CONV,
)
def _col2im(ctx: InferContext) -> list[TensorType]:
    """Rearrange [N, C*prod(block), L] column blocks into an [N, C, *image_shape] image."""
    x = ctx.input(0)
    if x.rank != 3:
        raise ctx.fail(f"input {x} must be [N, C * prod(block_shape), L]")
    for index, name in ((1, "image_shape"), (2, "block_shape")):
        found = ctx.input(index)
        if found.rank != 1 or not isinstance(found.shape[0], int):
            raise ctx.fail(f"{name} {found} must be a 1-D tensor of static length")
        ctx.require_dtype(index, {DType.I64})
    n = ctx.input(1).shape[0]
    image, block = ctx.const(1), ctx.const(2)
    dims: tuple[Dim, ...] = (
        tuple(int(v) for v in image) if image is not None else (UNKNOWN,) * int(n)
    )
    channels: Dim = UNKNOWN
    if block is not None:
        size = product(int(v) for v in block)
        if isinstance(x.shape[1], int):
            if x.shape[1] % size:
                raise ctx.fail(
                    f"input channels {x.shape[1]} are not a multiple of the block size {size}"
                )
            channels = x.shape[1] // size
    return [TensorType(x.dtype, (x.shape[0], channels, *dims))]


@define(
    Op.CAUSAL_CONV_WITH_STATE,
    ["input", "weight", "bias?", "past_state?"],
    ["output", "present_state"],
    {"activation": STRING("none")},
    Group.CONV,
)
def _causal_conv(ctx: InferContext) -> list[TensorType]:
    """Stateful causal depthwise 1-D conv; present_state keeps the last k-1 positions."""
    dtype = ctx.require_dtype(0, FLOATS)
    x, w = ctx.input(0), ctx.input(1)
    if x.rank != 3 or w.rank != 3:
        raise ctx.fail(f"input {x} and weight {w} must be rank 3")
    if not same_dim(w.shape[0], x.shape[1]) or not same_dim(w.shape[1], 1):
        raise ctx.fail(f"weight {w} must be [channels={x.shape[1]}, 1, k]")
    if ctx.attr("activation") not in ("none", "silu", "swish"):
        raise ctx.fail(f"activation {ctx.attr('activation')!r} is not none, silu or swish")
    check_bias(ctx, 2, x.shape[1])
    k = w.shape[2]
    state = symbolic.sub(k, 1)
    if ctx.has_input(3):
        past = ctx.input(3)
        if past.rank != 3 or not same_dim(past.shape[2], state):
            raise ctx.fail(f"past_state {past} must be [batch, channels, k - 1]")
    return [TensorType(dtype, x.shape), TensorType(dtype, (x.shape[0], x.shape[1], state))]
