"""Numpy kernels of linear quantization (QuantizeLinear, DequantizeLinear,
DynamicQuantizeLinear) and the requantization helpers the quantized conv/matmul kernels share."""

from __future__ import annotations

import numpy as np

from ...ir.op import Op
from .registry import KernelContext, kernel


def zero_point(zp: np.ndarray | None) -> np.ndarray:
    return np.zeros((), np.int64) if zp is None else np.asarray(zp).astype(np.int64)


def requantize(values: np.ndarray, zp: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """round-half-even(values) + zp, saturated to ``dtype``."""
    info = np.iinfo(dtype)
    shifted = np.rint(values).astype(np.float64) + zp.astype(np.float64)
    return np.clip(shifted, info.min, info.max).astype(dtype)


def expand_param(
    ctx: KernelContext, param: np.ndarray, shape: tuple[int, ...], axis: int, block: int
) -> np.ndarray:
    """Broadcast a per-tensor, per-axis or blocked scale/zero point against ``shape``."""
    param = np.asarray(param)
    rank = len(shape)
    axis = axis + rank if axis < 0 else axis
    if block > 0:
        if param.ndim != rank:
            raise ctx.fail(
                f"blocked quantization needs a rank-{rank} scale, got {list(param.shape)}"
            )
        return np.repeat(param, block, axis=axis).take(np.arange(shape[axis]), axis=axis)
    if param.ndim == 0 or param.size == 1:
        return param.reshape(())
    if param.ndim != 1 or not 0 <= axis < rank or param.shape[0] != shape[axis]:
        raise ctx.fail(
            f"per-axis scale of shape {list(param.shape)} does not fit axis {axis} "
            f"of shape {list(shape)}"
        )
    return param.reshape((-1,) + (1,) * (rank - 1 - axis))


@kernel(Op.QUANTIZE_LINEAR)
def quantize_linear(
    ctx: KernelContext, x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None = None
) -> np.ndarray:
    axis, block = int(ctx.attr("axis")), int(ctx.attr("block_size"))
    precision = ctx.attr("precision")
    work = precision.numpy if precision is not None else scale.dtype
    if work.kind not in "f" and work.name != "bfloat16":
        work = np.dtype(np.float32)
    scale = expand_param(ctx, scale, x.shape, axis, block).astype(work)
    zero = np.zeros((), np.int64) if zp is None else expand_param(ctx, zp, x.shape, axis, block)
    quotient = (x.astype(work) / scale).astype(np.float64)
    return requantize(quotient, zero.astype(np.int64), ctx.out_dtype(0))


@kernel(Op.DEQUANTIZE_LINEAR)
def dequantize_linear(
    ctx: KernelContext, x: np.ndarray, scale: np.ndarray, zp: np.ndarray | None = None
) -> np.ndarray:
    axis, block = int(ctx.attr("axis")), int(ctx.attr("block_size"))
    out = ctx.out_dtype(0)
    scale = expand_param(ctx, scale, x.shape, axis, block).astype(out)
    shifted = x.astype(np.int64)
    if zp is not None:
        shifted = shifted - expand_param(ctx, zp, x.shape, axis, block).astype(np.int64)
    return shifted.astype(out) * scale


@kernel(Op.DYNAMIC_QUANTIZE_LINEAR)
def dynamic_quantize_linear(
    ctx: KernelContext, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = x.astype(np.float32)
    low = np.float32(min(0.0, float(x.min()) if x.size else 0.0))
    high = np.float32(max(0.0, float(x.max()) if x.size else 0.0))
    scale = np.float32((high - low) / np.float32(255))
    if scale == 0:
        return np.zeros(x.shape, np.uint8), np.array(scale), np.array(0, np.uint8)
    zp = np.uint8(np.clip(np.rint(-low / scale), 0, 255))
    y = requantize(x / scale, np.asarray(zp, np.int64), np.dtype(np.uint8))
    return y, np.array(scale, np.float32), np.array(zp, np.uint8)
