"""Folding per-channel affine ops into the preceding layer's weights (a pass, Graph -> Graph).

Pre: a valid graph. Post: an inference BatchNormalization, a Mul by a constant, or an
Add/Sub of a constant, applied per output channel to the result of a Conv, ConvTranspose,
Gemm or MatMul whose weights (and bias, if any) are constants, and whose result nothing else
reads, is gone: the layer computes ``y * scale + shift`` itself with rescaled weights and a
new bias (a MatMul, having no bias, gets an Add of the shift). Weights are recomputed in
float64 and rounded once to their type, so results match to rounding, not bit for bit.

    before: %y = conv(%x, %w) : f32[1,8,6,6]
            %z = batch_normalization(%y, %s, %b, %m, %v) : f32[1,8,6,6]
    after:  %z = conv(%x, %w2, %b2) : f32[1,8,6,6]
    with    w2 = w * s/sqrt(v+eps) (per output channel), b2 = b - m * s/sqrt(v+eps)
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..ir.graph import Graph, Node, Value
from ..ir.op import Op
from .rewrite import Replacement, Rewriter, apply_rules, rule

_LAYERS = (Op.CONV, Op.CONV_TRANSPOSE, Op.GEMM, Op.MATMUL)


def fold_batchnorm(graph: Graph, fired: Counter[str] | None = None) -> Graph:
    """``graph`` with per-channel affine ops folded into layers; the same object when none."""
    return apply_rules(graph, RULES, fired)


def _layer_of(rw: Rewriter, value: Value | None) -> Node | None:
    """The Conv/ConvTranspose/Gemm/MatMul with constant weights that alone reads into
    ``value`` (a float tensor read by one node only)."""
    layer = rw.producer(value)
    if layer is None or layer.op not in _LAYERS or not rw.single_use(value):  # type: ignore[arg-type]
        return None
    if rw.const(layer.inputs[1]) is None or not layer.outputs[0].type.dtype.is_float:  # type: ignore[union-attr]
        return None
    if len(layer.inputs) > 2 and layer.inputs[2] is not None and rw.const(layer.inputs[2]) is None:
        return None
    if layer.op is Op.MATMUL and rw.const(layer.inputs[1]).ndim != 2:  # type: ignore[union-attr]
        return None
    return layer


def _channel_axis(layer: Node) -> int:
    return 1 if layer.op in (Op.CONV, Op.CONV_TRANSPOSE) else layer.outputs[0].type.rank - 1  # type: ignore[union-attr]


def _per_channel(data: np.ndarray, rank: int, axis: int, channels: int) -> np.ndarray | None:
    """``data`` as a vector over the channels when it broadcasts along ``axis`` only."""
    if data.ndim > rank:
        return None
    shape = (1,) * (rank - data.ndim) + data.shape
    if any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, channels):
        return None
    return np.broadcast_to(data.reshape(-1).astype(np.float64), (channels,))


def _refold(rw: Rewriter, layer: Node, scale: np.ndarray, shift: np.ndarray, name: str) -> Value:
    """A copy of ``layer`` computing ``layer(...) * scale + shift`` (per output channel)."""
    weights = rw.const(layer.inputs[1]).astype(np.float64)  # type: ignore[union-attr]
    bias_value = layer.inputs[2] if len(layer.inputs) > 2 else None
    bias = None if bias_value is None else rw.const(bias_value).astype(np.float64)  # type: ignore[union-attr]
    attrs = dict(layer.attrs)
    if layer.op is Op.CONV:
        weights = weights * scale.reshape((-1,) + (1,) * (weights.ndim - 1))
    elif layer.op is Op.CONV_TRANSPOSE:
        groups = attrs["group"]
        blocked = weights.reshape((groups, -1, weights.shape[1]) + weights.shape[2:])
        weights = (blocked * scale.reshape((groups, 1, -1) + (1,) * (weights.ndim - 2))
                   ).reshape(weights.shape)
    elif layer.op is Op.GEMM and attrs["transB"]:
        weights = weights * scale[:, None]
    else:
        weights = weights * scale[None, :]
    if layer.op is Op.GEMM and bias is not None:
        bias = bias * attrs["beta"]
        attrs["beta"] = 1.0
    new_bias = shift if bias is None else bias * scale + shift
    dtype = layer.outputs[0].type.dtype.numpy  # type: ignore[union-attr]
    inputs = [layer.inputs[0], rw.constant(weights.astype(dtype))]
    needs_bias = bias is not None or bool(np.any(shift != 0))
    if layer.op is Op.MATMUL:
        (out,) = rw.emit(Op.MATMUL, inputs, attrs, name=layer.name)
        if not needs_bias:
            return out
        return rw.emit(Op.ADD, [out, rw.constant(new_bias.astype(dtype))], name=name)[0]
    if needs_bias:
        inputs.append(rw.constant(new_bias.astype(dtype)))
    return rw.emit(layer.op, inputs, attrs, name=layer.name)[0]


@rule("batchnorm_into_layer", Op.BATCH_NORMALIZATION)
def _batchnorm(rw: Rewriter, node: Node) -> Replacement:
    """BatchNorm (inference) of a layer's result: scale = s/sqrt(var+eps), shift = B -
    mean*scale, folded into the layer (its channel axis must be BatchNorm's axis 1)."""
    layer = _layer_of(rw, node.inputs[0])
    if layer is None or node.attrs["training_mode"] or len(node.outputs) > 1:
        return None
    if _channel_axis(layer) != 1:
        return None
    params = [rw.const(v) for v in node.inputs[1:5]]
    if any(p is None for p in params):
        return None
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)  # type: ignore[union-attr]
    scale = gamma / np.sqrt(var + node.attrs["epsilon"])
    return [_refold(rw, layer, scale, beta - mean * scale, node.name)]


_AFFINE = {Op.MUL: (True, 1.0), Op.ADD: (False, 1.0), Op.SUB: (False, -1.0)}


@rule("affine_into_layer", Op.MUL, Op.ADD, Op.SUB)
def _affine(rw: Rewriter, node: Node) -> Replacement:
    """layer(...) * c, c * layer(...), layer(...) + c, c + layer(...) and layer(...) - c for a
    per-channel constant c: scale the weights and bias, or shift the bias. (Not c - layer,
    and no Add into a MatMul, which has no bias to absorb it.)"""
    multiply, sign = _AFFINE[node.op]
    out = node.outputs[0]
    assert out is not None
    for position in (0, 1) if node.op is not Op.SUB else (0,):
        layer = _layer_of(rw, node.inputs[position])
        data = rw.const(node.inputs[1 - position])
        if layer is None or data is None or node.inputs[position].type != out.type:  # type: ignore[union-attr]
            continue
        if layer.op is Op.MATMUL and not multiply:
            continue
        channels = out.type.shape[_channel_axis(layer)]
        vector = (_per_channel(data, out.type.rank, _channel_axis(layer), channels)
                  if isinstance(channels, int) else None)
        if vector is None:
            continue
        zeros = np.zeros(channels)
        scale, shift = (vector, zeros) if multiply else (np.ones(channels), sign * vector)
        return [_refold(rw, layer, scale, shift, node.name)]
    return None


RULES = (_batchnorm, _affine)
