"""Quantized (QDQ) patterns to integer ops (a pass, Graph -> Graph).

A QDQ model (onnxruntime's ``quantize_static`` default format) writes each quantized layer as
float ops between DequantizeLinear and QuantizeLinear. Run as written it is a float model whose
results can differ from an integer engine's by one quantization step wherever the float sum
lands near a rounding midpoint. This pass rewrites the patterns onnxruntime itself fuses into
integer ops (its QDQ transformers), so Kiln computes what onnxruntime computes: an exact int32
accumulation (bias added in int32), one f32 multiply by ``x_scale * w_scale / y_scale`` and a
round-half-to-even requantization.

Pre: a valid graph. Post (scales and zero points constant, 8-bit quantized types, per-tensor
activations):

    Q(Relu?(Conv(DQ(x), DQ(w), DQ(b)?)))  ->  QLinearConv(x, .., w, .., y, .., b)
    Q(Relu?(MatMul(DQ(a), DQ(b))))        ->  QLinearMatMul(a, .., b, .., y, ..)
    Q(Relu?(Gemm(DQ(a), DQ(B), DQ(c)?)))  ->  QuantizeLinear(Cast<f32>(MatMulInteger(a, B')
                                               + c) * (a_scale * b_scale / y_scale), 1, y_zero)
    Q(op(DQ(x))), Q(Concat(DQ(x_i)...))   ->  op(x), Concat(x_i...)   (same scale and zero point
                                               everywhere; op exact on integers, see _EXACT)

The weights may be per-channel (Conv: axis 0; MatMul: the columns; Gemm: the output columns);
B' is Gemm's constant B as [K, N]. A bias must be int32 with scale ``x_scale * w_scale`` and
zero point 0 (what onnxruntime's quantizer writes); it is added in int32, as onnxruntime adds
the quantized bias it finds. A Relu before Q is exact in integers: ``round(max(v, 0) / s) + z =
max(round(v / s) + z, z)``; with z the type's minimum (the quantizer's choice after a Relu)
saturation already does it and it is dropped, else it becomes Max(y, z). (onnxruntime fuses
only the first case, its ReluQuantFusion; it runs the other in float, whose result can differ
from the integer one by one step where the float sum lies within rounding of a midpoint.)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..ir.graph import Graph, Node, Value
from ..ir.op import Op
from ..ir.types import DType
from .rewrite import Replacement, Rewriter, apply_rules, rule

EIGHT_BIT = (DType.I8, DType.U8)

# Ops whose result on the dequantized values, quantized with the same parameters, is the op
# applied to the quantized values (they only move, select or drop elements).
_EXACT = (Op.MAX_POOL, Op.RESHAPE, Op.FLATTEN, Op.TRANSPOSE, Op.SQUEEZE, Op.UNSQUEEZE,
          Op.IDENTITY, Op.SLICE, Op.GATHER, Op.DEPTH_TO_SPACE, Op.SPACE_TO_DEPTH)


def quant_fusion(graph: Graph, fired: Counter[str] | None = None) -> Graph:
    """``graph`` with its QDQ layers as integer ops; the same object when there are none."""
    return apply_rules(graph, RULES, fired)


@dataclass(frozen=True)
class _Quant:
    """A Quantize/DequantizeLinear with constant parameters: the quantized value (DQ's input
    or Q's output), the scale and zero point values (the zero point None when absent) and
    their data (the zero point's as zeros of the quantized type when absent)."""

    q: Value
    scale: Value
    zero: Value | None
    scales: np.ndarray
    zeros: np.ndarray
    axis: int

    @property
    def per_tensor(self) -> bool:
        return self.scales.size == 1

    def same(self, other: _Quant) -> bool:
        """Both per tensor with equal parameters and type."""
        return (self.per_tensor and other.per_tensor and self.q.type.dtype == other.q.type.dtype
                and float(self.scales.reshape(-1)[0]) == float(other.scales.reshape(-1)[0])
                and int(self.zeros.reshape(-1)[0]) == int(other.zeros.reshape(-1)[0]))


def _params(rw: Rewriter, node: Node, q: Value) -> _Quant | None:
    """The constant f32 parameters of Q/DQ ``node`` (8-bit, or int32 for a bias), unless
    blocked or computed at another precision."""
    if node.attrs["block_size"] or node.attrs.get("precision") is not None:
        return None
    scale, zero = node.inputs[1], node.inputs[2] if len(node.inputs) > 2 else None
    scales = rw.const(scale)
    zeros = rw.const(zero) if zero is not None else np.zeros(1, q.type.dtype.numpy)
    if scale is None or scales is None or zeros is None or scales.dtype != np.float32:
        return None
    if q.type.dtype not in EIGHT_BIT and q.type.dtype is not DType.I32:
        return None
    axis = int(node.attrs["axis"])
    return _Quant(q, scale, zero, scales, zeros, axis + q.type.rank if axis < 0 else axis)


def _dequantized(rw: Rewriter, value: Value | None) -> _Quant | None:
    """The parameters of the DequantizeLinear (to f32) defining ``value``."""
    node = rw.producer(value)
    if node is None or node.op is not Op.DEQUANTIZE_LINEAR or node.inputs[0] is None:
        return None
    if node.outputs[0] is None or node.outputs[0].type.dtype is not DType.F32:
        return None
    return _params(rw, node, node.inputs[0])


def _quantizer(rw: Rewriter, node: Node) -> _Quant | None:
    """The per-tensor 8-bit parameters of QuantizeLinear ``node`` reading f32."""
    out, x = node.outputs[0], node.inputs[0]
    if out is None or x is None or x.type.dtype is not DType.F32 or out.type.dtype not in EIGHT_BIT:
        return None
    found = _params(rw, node, out)
    return found if found is not None and found.per_tensor else None


def _layer(rw: Rewriter, value: Value | None, op: Op) -> tuple[Node, bool] | None:
    """The ``op`` node whose f32 result alone reads into ``value``, through a Relu or not
    (True when there is one)."""
    node = rw.producer(value)
    relu = node is not None and node.op is Op.RELU and rw.single_use(value)  # type: ignore[arg-type]
    if relu:
        value = node.inputs[0]  # type: ignore[union-attr]
        node = rw.producer(value)
    if node is None or node.op is not op or not rw.single_use(value):  # type: ignore[arg-type]
        return None
    return node, relu


def _zero(rw: Rewriter, quant: _Quant) -> Value:
    """The zero point as a value (a constant zero when the op had none)."""
    return quant.zero if quant.zero is not None else rw.constant(quant.zeros.reshape(()))


@dataclass(frozen=True)
class _Layer:
    """A quantized layer: Q(Relu?(layer(DQ(x), DQ(w), ...)))."""

    out: _Quant
    node: Node
    relu: bool
    x: _Quant
    w: _Quant


def _quantized_layer(rw: Rewriter, node: Node, op: Op) -> _Layer | None:
    """The ``op`` layer under QuantizeLinear ``node`` when its input is a per-tensor 8-bit
    dequantized activation and its weight an 8-bit dequantized tensor."""
    out = _quantizer(rw, node)
    found = _layer(rw, node.inputs[0], op)
    if out is None or found is None:
        return None
    layer, relu = found
    x, w = _dequantized(rw, layer.inputs[0]), _dequantized(rw, layer.inputs[1])
    if x is None or not x.per_tensor or x.q.type.dtype not in EIGHT_BIT:
        return None
    if w is None or w.q.type.dtype not in EIGHT_BIT:
        return None
    return _Layer(out, layer, relu, x, w)


def _qlinear_inputs(rw: Rewriter, layer: _Layer) -> list[Value | None]:
    """QLinearConv's and QLinearMatMul's first eight inputs: x, its scale and zero point, w,
    its scale and zero point, y's scale and zero point."""
    x, w, out = layer.x, layer.w, layer.out
    return [x.q, x.scale, _zero(rw, x), w.q, w.scale, _zero(rw, w), out.scale, _zero(rw, out)]


def _bias(rw: Rewriter, layer: Node, x: _Quant, w: _Quant) -> Value | None | bool:
    """The int32 bias behind ``layer``'s third input, a DQ (None: no bias; False: a bias not
    quantized with scale x_scale * w_scale and zero point 0, which the integer op cannot add
    exactly)."""
    value = layer.inputs[2] if len(layer.inputs) > 2 else None
    if value is None:
        return None
    bias = _dequantized(rw, value)
    if bias is None or bias.q.type.dtype is not DType.I32 or np.any(bias.zeros != 0):
        return False
    expected = (x.scales.reshape(-1)[:1] * w.scales.reshape(-1)).astype(np.float32)
    if not np.allclose(bias.scales.reshape(-1), expected, rtol=1e-6, atol=0):
        return False
    return bias.q


def _relu(rw: Rewriter, y: Value, out: _Quant, relu: bool) -> Value:
    """``y`` clamped below at the zero point when a Relu preceded the quantizer."""
    zero = int(out.zeros.reshape(-1)[0])
    if not relu or zero == np.iinfo(out.q.type.dtype.numpy).min:
        return y
    return rw.emit(Op.MAX, [y, rw.constant(np.array(zero, out.q.type.dtype.numpy))])[0]


@rule("qdq_conv", Op.QUANTIZE_LINEAR)
def _conv(rw: Rewriter, node: Node) -> Replacement:
    found = _quantized_layer(rw, node, Op.CONV)
    if found is None:
        return None
    conv, x, w, out = found.node, found.x, found.w, found.out
    if not (w.per_tensor or (w.axis == 0 and w.scales.ndim == 1)):
        return None
    bias = _bias(rw, conv, x, w)
    if bias is False:
        return None
    inputs = [*_qlinear_inputs(rw, found), *([bias] if bias is not None else [])]
    (y,) = rw.emit(Op.QLINEAR_CONV, inputs, conv.attrs, name=conv.name)
    return [_relu(rw, y, out, found.relu)]


@rule("qdq_matmul", Op.QUANTIZE_LINEAR)
def _matmul(rw: Rewriter, node: Node) -> Replacement:
    found = _quantized_layer(rw, node, Op.MATMUL)
    if found is None:
        return None
    b = found.w
    # per-column weights: QLinearMatMul's b_scale is a vector over N for a 2-D B
    if not (b.per_tensor or (b.q.type.rank == 2 and b.axis == 1 and b.scales.ndim == 1)):
        return None
    (y,) = rw.emit(Op.QLINEAR_MATMUL, _qlinear_inputs(rw, found), name=found.node.name)
    return [_relu(rw, y, found.out, found.relu)]


@rule("qdq_gemm", Op.QUANTIZE_LINEAR)
def _gemm(rw: Rewriter, node: Node) -> Replacement:
    found = _quantized_layer(rw, node, Op.GEMM)
    if found is None:
        return None
    gemm, a, b, out = found.node, found.x, found.w, found.out
    attrs = gemm.attrs
    if attrs["transA"] or attrs["alpha"] != 1.0 or attrs["beta"] != 1.0:
        return None
    weights = rw.const(b.q)
    if weights is None:
        return None
    trans = bool(attrs["transB"])
    if not (b.per_tensor or (b.scales.ndim == 1 and b.axis == (0 if trans else 1))):
        return None
    bias = _bias(rw, gemm, a, b)
    if bias is False:
        return None
    matrix = weights.T if trans else weights
    zeros = b.zeros if b.per_tensor else b.zeros.reshape(-1)
    (acc,) = rw.emit(Op.MATMUL_INTEGER, [a.q, rw.constant(np.ascontiguousarray(matrix)),
                                         _zero(rw, a), rw.constant(zeros)], name=gemm.name)
    if bias is not None:
        (acc,) = rw.emit(Op.ADD, [acc, bias], name=gemm.name)
    (value,) = rw.emit(Op.CAST, [acc], {"to": DType.F32}, name=gemm.name)
    # onnxruntime's requantization scale, rounded as it rounds it: f32 (a * b) / y
    multiplier = (a.scales.reshape(-1)[:1] * b.scales.reshape(-1)) / out.scales.reshape(-1)[:1]
    (value,) = rw.emit(Op.MUL, [value, rw.constant(multiplier.astype(np.float32))],
                       name=gemm.name)
    one = rw.constant(np.array(1.0, np.float32))
    (y,) = rw.emit(Op.QUANTIZE_LINEAR, [value, one, _zero(rw, out)], name=node.name)
    return [_relu(rw, y, out, found.relu)]


@rule("qdq_exact", Op.QUANTIZE_LINEAR)
def _exact(rw: Rewriter, node: Node) -> Replacement:
    out = _quantizer(rw, node)
    op = rw.producer(node.inputs[0])
    if out is None or op is None or not rw.single_use(node.inputs[0]):  # type: ignore[arg-type]
        return None
    if op.op is Op.CONCAT:
        sources = [_dequantized(rw, v) for v in op.inputs]
        if not all(s is not None and s.same(out) for s in sources):
            return None
        return rw.emit(Op.CONCAT, [s.q for s in sources if s is not None], op.attrs,
                       name=op.name)
    if op.op not in _EXACT or any(v is not None for v in op.outputs[1:]):
        return None
    source = _dequantized(rw, op.inputs[0])
    if source is None or not source.same(out):
        return None
    return rw.emit(op.op, [source.q, *op.inputs[1:]], op.attrs, name=op.name)


@rule("qdq_relu", Op.QUANTIZE_LINEAR)
def _relu_only(rw: Rewriter, node: Node) -> Replacement:
    """Q(Relu(DQ(x))) with equal parameters: max(x, zero point)."""
    out = _quantizer(rw, node)
    op = rw.producer(node.inputs[0])
    if out is None or op is None or op.op is not Op.RELU or not rw.single_use(node.inputs[0]):  # type: ignore[arg-type]
        return None
    source = _dequantized(rw, op.inputs[0])
    if source is None or not source.same(out):
        return None
    return [_relu(rw, source.q, out, True)]


RULES = (_conv, _matmul, _gemm, _exact, _relu_only)
