"""Type rules of linear quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear.

Only the integer quantized types the IR has (int8/uint8/int16/uint16, int32 for dequantizing)
are supported; float8 and int4 are not IR element types.
"""

from __future__ import annotations

from ..op import Group, Op
from ..schema import DTYPE_ATTR, INT, InferContext, define
from ..shapes import normalize_axis, same_dim
from ..types import FLOATS, DType, TensorType

QUANT_TYPES = frozenset({DType.I8, DType.U8, DType.I16, DType.U16})
DEQUANT_TYPES = QUANT_TYPES | {DType.I32}
QUANT_ATTRS = {"axis": INT(1), "block_size": INT(0), "output_dtype": DTYPE_ATTR()}


def check_granularity(ctx: InferContext, scale_index: int) -> None:
    """Scale and zero point must be a scalar, a vector along ``axis``, or blocked along it."""
    x, scale = ctx.input(0), ctx.input(scale_index)
    zp_index = scale_index + 1
    zero = ctx.input(zp_index) if ctx.has_input(zp_index) else None
    # onnxruntime's quantizer writes a [1] scale with a scalar zero point (both one value)
    if zero is not None and zero.shape != scale.shape and not (
            zero.numel == 1 and scale.numel == 1 and zero.rank <= 1 and scale.rank <= 1):
        raise ctx.fail(
            f"zero point {ctx.input(zp_index)} must have the scale's shape {list(scale.shape)}"
        )
    block = int(ctx.attr("block_size"))
    if block < 0:
        raise ctx.fail(f"block_size {block} must not be negative")
    if scale.rank == 0 or (scale.rank == 1 and scale.shape[0] == 1 and block == 0):
        return
    axis = normalize_axis(int(ctx.attr("axis")), x.rank)
    if block == 0:
        if scale.rank != 1 or not same_dim(scale.shape[0], x.shape[axis]):
            raise ctx.fail(
                f"per-axis scale {scale} must be a vector of length {x.shape[axis]} "
                f"(axis {axis} of {x})"
            )
        return
    if scale.rank != x.rank:
        raise ctx.fail(f"blocked scale {scale} must have the rank of {x}")
    for i, (s, d) in enumerate(zip(scale.shape, x.shape, strict=False)):
        want = -(-d // block) if isinstance(d, int) and i == axis else d
        if not same_dim(s, want):
            raise ctx.fail(
                f"blocked scale {scale} does not fit {x} with block_size {block} on axis {axis}"
            )


@define(
    Op.QUANTIZE_LINEAR,
    ["x", "y_scale", "y_zero_point?"],
    ["y"],
    {**QUANT_ATTRS, "precision": DTYPE_ATTR(), "saturate": INT(1)},
    Group.QUANT,
)
def _quantize(ctx: InferContext) -> list[TensorType]:
    """saturate(round_half_even(x / y_scale) + y_zero_point); the zero point's type (else
    output_dtype, else uint8) is the output type."""
    ctx.require_dtype(0, FLOATS | {DType.I32})
    ctx.require_dtype(1, FLOATS | {DType.I32})
    out = ctx.attr("output_dtype")
    if ctx.has_input(2):
        zp = ctx.require_dtype(2, QUANT_TYPES)
        if out is not None and out != zp:
            raise ctx.fail(f"output_dtype {out.value} differs from the zero point's {zp.value}")
        out = zp
    out = out or DType.U8
    if out not in QUANT_TYPES:
        raise ctx.fail(f"output_dtype {out.value} is not a supported quantized type")
    precision = ctx.attr("precision")
    if precision is not None and precision not in FLOATS:
        raise ctx.fail(f"precision {precision.value} must be a float type")
    check_granularity(ctx, 1)
    return [TensorType(out, ctx.input(0).shape)]


@define(Op.DEQUANTIZE_LINEAR, ["x", "x_scale", "x_zero_point?"], ["y"], QUANT_ATTRS, Group.QUANT)
def _dequantize(ctx: InferContext) -> list[TensorType]:
    """(x - x_zero_point) * x_scale in output_dtype (default: the scale's type)."""
    ctx.require_dtype(0, DEQUANT_TYPES)
    scale = ctx.require_dtype(1, FLOATS)
    if ctx.has_input(2) and ctx.input(2).dtype != ctx.input(0).dtype:
        raise ctx.fail(f"zero point {ctx.input(2)} must have x's element type")
    out = ctx.attr("output_dtype") or scale
    if out not in FLOATS:
        raise ctx.fail(f"output_dtype {out.value} must be a float type")
    check_granularity(ctx, 1)
    return [TensorType(out, ctx.input(0).shape)]


@define(Op.DYNAMIC_QUANTIZE_LINEAR, ["x"], ["y", "y_scale", "y_zero_point"], {}, Group.QUANT)
def _dynamic_quantize(ctx: InferContext) -> list[TensorType]:
    """uint8 quantization with scale and zero point derived from the data's range."""
    ctx.require_dtype(0, {DType.F32})
    return [
        TensorType(DType.U8, ctx.input(0).shape),
        TensorType(DType.F32, ()),
        TensorType(DType.U8, ()),
    ]
