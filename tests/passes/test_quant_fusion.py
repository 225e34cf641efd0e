"""Tests of ``quant_fusion``: QDQ layers rewritten into integer ops.

Each case is a small ONNX model in onnxruntime's QDQ form (QuantizeLinear / DequantizeLinear
around float ops, the weights int8 constants, the bias int32 with scale x_scale * w_scale).
The rewritten graph must hold no float Conv / MatMul / Gemm, and its results (compiled by
Kiln, and run by the reference executor) must equal onnxruntime's exactly: onnxruntime runs
these patterns through the same integer ops (its QDQ fusions), except a Relu before a
quantizer whose zero point is not the type's minimum, which it leaves in float (see _check).
The original graph's float path (the reference executor on the unrewritten graph) may differ
from both by one quantization step, only where the float sum lies within rounding error
(about 1e-7 relative) of a rounding midpoint, which random data rarely hits: the test checks
that bound.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from kiln.compiler import build, reference  # noqa: E402
from kiln.compiler.ir.builder import GraphBuilder  # noqa: E402
from kiln.compiler.ir.graph import Graph  # noqa: E402
from kiln.compiler.ir.op import Op  # noqa: E402
from kiln.compiler.ir.types import DType, TensorType  # noqa: E402
from kiln.compiler.passes.quant_fusion import quant_fusion  # noqa: E402
from kiln.frontends.onnx import load_onnx  # noqa: E402

RNG = np.random.default_rng(11)
FLOAT_LAYERS = {Op.CONV, Op.MATMUL, Op.GEMM}


class Model:
    """An ONNX graph under construction: initializers and nodes, QDQ helpers."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const(self, name: str, data: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(data), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def qdq(self, x: str, scale: float, zero: int, dtype: type = np.int8) -> str:
        """x quantized then dequantized (an activation's QDQ pair)."""
        s = self.const(f"{x}_s", np.float32(scale))
        z = self.const(f"{x}_z", np.array(zero, dtype))
        return self.node("DequantizeLinear", [self.node("QuantizeLinear", [x, s, z], f"{x}_q"),
                                              s, z], f"{x}_dq")

    def weights(self, name: str, shape: tuple[int, ...],
                axis: int | None) -> tuple[str, np.ndarray]:
        """Dequantized int8 weights, per tensor (axis None) or per channel along ``axis``;
        returns the value and the scales."""
        data = RNG.integers(-127, 128, shape).astype(np.int8)
        scales = (RNG.uniform(0.002, 0.01, shape[axis]) if axis is not None
                  else np.array(RNG.uniform(0.002, 0.01))).astype(np.float32)
        zeros = np.zeros(scales.shape, np.int8)
        inputs = [self.const(name, data), self.const(f"{name}_s", scales),
                  self.const(f"{name}_z", zeros)]
        attrs = {"axis": axis} if axis is not None else {}
        return self.node("DequantizeLinear", inputs, f"{name}_dq", **attrs), scales

    def bias(self, name: str, scales: np.ndarray, count: int) -> str:
        """An int32 bias dequantized with ``scales`` (x_scale * w_scale)."""
        data = RNG.integers(-3000, 3000, count).astype(np.int32)
        scales = np.broadcast_to(scales, (count,)).astype(np.float32)
        inputs = [self.const(name, data), self.const(f"{name}_s", scales),
                  self.const(f"{name}_z", np.zeros(count, np.int32))]
        return self.node("DequantizeLinear", inputs, f"{name}_dq", axis=0)

    def proto(self, input_shape: tuple[int, ...], output: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                              input_shape)],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], self.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                 ir_version=8)


def _conv_model(axis: int | None, relu: bool, out_zero: int, bias_scale: float = 1.0,
                channels: int = 16) -> tuple[onnx.ModelProto, float]:
    m = Model()
    x = m.qdq("x", 0.03, 3)
    w, scales = m.weights("w", (channels, 8, 3, 3), 0 if axis is not None else None)
    b = m.bias("b", np.float32(0.03) * scales * np.float32(bias_scale), channels)
    y = m.node("Conv", [x, w, b], "conv", pads=[1, 1, 1, 1])
    if relu:
        y = m.node("Relu", [y], "relu")
    return m.proto((1, 8, 10, 10), m.qdq(y, 0.05, out_zero)), 0.05


def _matmul_model(relu: bool, out_zero: int) -> tuple[onnx.ModelProto, float]:
    m = Model()
    x = m.qdq("x", 0.03, -5)
    w, _ = m.weights("w", (64, 24), 1)
    y = m.node("MatMul", [x, w], "matmul")
    if relu:
        y = m.node("Relu", [y], "relu")
    return m.proto((2, 9, 64), m.qdq(y, 0.04, out_zero)), 0.04


def _gemm_model(axis: int | None) -> tuple[onnx.ModelProto, float]:
    m = Model()
    x = m.qdq("x", 0.03, 0)
    w, scales = m.weights("w", (24, 64), 0 if axis is not None else None)
    b = m.bias("b", np.float32(0.03) * scales, 24)
    y = m.node("Gemm", [x, w, b], "gemm", transB=1)
    return m.proto((5, 64), m.qdq(y, 0.05, 2)), 0.05


def _exact_model(same: bool) -> tuple[onnx.ModelProto, float]:
    """QDQ around MaxPool, Reshape, Transpose and Concat; ``same``: equal parameters."""
    m = Model()
    x = m.qdq("x", 0.03, 1)
    pooled = m.qdq(m.node("MaxPool", [x], "pool", kernel_shape=[2, 2], strides=[2, 2]), 0.03, 1)
    shape = m.const("shape", np.array([1, 4, 16], np.int64))
    flat = m.qdq(m.node("Reshape", [pooled, shape], "reshape"), 0.03, 1)
    turned = m.qdq(m.node("Transpose", [flat], "transpose", perm=[0, 2, 1]), 0.03, 1)
    other = m.qdq(m.node("Transpose", [flat], "other", perm=[0, 2, 1]), 0.03 if same else 0.02,
                  1)
    joined = m.qdq(m.node("Concat", [turned, other], "concat", axis=1), 0.03, 1)
    return m.proto((1, 4, 8, 8), joined), 0.03


def _run(model: onnx.ModelProto, x: np.ndarray) -> tuple[Graph, Graph, np.ndarray, np.ndarray,
                                                        np.ndarray, np.ndarray]:
    """The original and rewritten graphs, and on ``x``: onnxruntime's result, the compiled
    rewritten graph's, the reference executor's on the rewritten and on the original graph."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    # fold=False: import-time folding would dequantize the weights before the pass sees them
    original = load_onnx(model, fold=False)
    rewritten = quant_fusion(original)
    compiled = build(rewritten).run({"x": x})[0]
    return (original, rewritten, expected, compiled, reference.run(rewritten, {"x": x})[0],
            reference.run(original, {"x": x})[0])


def _check(model: onnx.ModelProto, step: float, shape: tuple[int, ...],
           onnxruntime_float: bool = False) -> Graph:
    """The rewritten graph's compiled results equal the reference executor's on it, and
    onnxruntime's; the original graph's float path is within one step. ``onnxruntime_float``:
    onnxruntime keeps this pattern in float (a Relu before a quantizer whose zero point is
    not the type's minimum: its ReluQuantFusion does not apply, so neither do its QDQ
    fusions), so it too may be one step off, where its float sum is within rounding of a
    midpoint. Returns the rewritten graph."""
    for seed in range(3):
        x = (np.random.default_rng(seed).standard_normal(shape) * 2).astype(np.float32)
        original, rewritten, expected, compiled, integer, floats = _run(model, x)
        np.testing.assert_array_equal(compiled, integer)
        for other in (floats, *((expected,) if onnxruntime_float else ())):
            steps = np.abs(other.astype(np.float64) - compiled) / step
            assert steps.max() <= 1 + 1e-6
        if not onnxruntime_float:
            np.testing.assert_array_equal(compiled, expected)
    assert not FLOAT_LAYERS & {n.op for n in rewritten.nodes}
    return rewritten


def _ops(graph: Graph) -> Counter[Op]:
    return Counter(n.op for n in graph.nodes if n.op is not Op.CONSTANT)


@pytest.mark.parametrize("axis", [None, 0], ids=["per_tensor", "per_channel"])
def test_conv_relu_into_qlinear_conv(axis: int | None) -> None:
    # zero point -128 after a Relu: saturation is the Relu, which disappears
    model, step = _conv_model(axis, relu=True, out_zero=-128)
    rewritten = _check(model, step, (1, 8, 10, 10))
    ops = _ops(rewritten)
    assert ops[Op.QLINEAR_CONV] == 1 and Op.RELU not in ops and Op.MAX not in ops


def test_conv_relu_with_zero_point_clamps() -> None:
    model, step = _conv_model(0, relu=True, out_zero=10)
    rewritten = _check(model, step, (1, 8, 10, 10), onnxruntime_float=True)
    assert _ops(rewritten)[Op.MAX] == 1


@pytest.mark.parametrize(("relu", "zero"), [(False, 4), (True, -128), (True, 4)])
def test_matmul_into_qlinear_matmul(relu: bool, zero: int) -> None:
    model, step = _matmul_model(relu, out_zero=zero)
    rewritten = _check(model, step, (2, 9, 64), onnxruntime_float=relu and zero != -128)
    assert _ops(rewritten)[Op.QLINEAR_MATMUL] == 1
    assert _ops(rewritten)[Op.MAX] == int(relu and zero != -128)


@pytest.mark.parametrize("axis", [None, 0], ids=["per_tensor", "per_channel"])
def test_gemm_into_matmul_integer(axis: int | None) -> None:
    model, step = _gemm_model(axis)
    rewritten = _check(model, step, (5, 64))
    assert _ops(rewritten)[Op.MATMUL_INTEGER] == 1


def test_exact_ops_stay_int8() -> None:
    model, step = _exact_model(same=True)
    rewritten = _check(model, step, (1, 4, 8, 8))
    ops = _ops(rewritten)
    # one QuantizeLinear of the input, one DequantizeLinear of the output: the rest is int8
    assert ops[Op.QUANTIZE_LINEAR] == 1 and ops[Op.DEQUANTIZE_LINEAR] == 1


def test_unequal_parameters_stay_float() -> None:
    model, _ = _exact_model(same=False)
    rewritten = quant_fusion(load_onnx(model, fold=False))
    # the Concat of differently quantized inputs keeps its QDQ pairs
    assert _ops(rewritten)[Op.CONCAT] == 1
    assert _ops(rewritten)[Op.DEQUANTIZE_LINEAR] >= 3


def test_bias_with_another_scale_is_left_alone() -> None:
    model, _ = _conv_model(None, relu=False, out_zero=0, bias_scale=2.0)
    graph = load_onnx(model, fold=False)
    rewritten = quant_fusion(graph)
    assert rewritten is graph


def _extreme(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """int8 weights of the largest magnitude, a tenth of them negative: sums far past f32's
    exact integers, so the integer kernels split their contraction (or fall back to int32
    loops)."""
    signs = np.where(np.random.default_rng(seed).random(shape) < 0.1, -1, 1)
    return (signs * 127).astype(np.int8)


@pytest.mark.parametrize("group", [1, 2], ids=["chunked", "grouped_fallback"])
def test_integer_conv_past_f32_integers(group: int) -> None:
    """512 input channels x 3x3 of weights +-127 on uint8 inputs (zero point 0): outputs near
    512 * 9 * 127 * 230 * 0.8, past 2**24."""
    builder = GraphBuilder("big")
    x = builder.add_input("x", TensorType(DType.U8, (1, 512, 6, 6)))
    weights = builder.constant(_extreme((8, 512 // group, 3, 3), 1))
    zero_u8 = builder.constant(np.array(0, np.uint8))
    zero_i8 = builder.constant(np.array(0, np.int8))
    scale = builder.constant(np.array(1e-5, np.float32))
    bias = builder.constant(np.arange(-4000, 4000, 1000, dtype=np.int32))
    attrs = {"group": group, "pads": [1, 1, 1, 1]}
    conv = builder.add1(Op.QLINEAR_CONV, [x, scale, zero_u8, weights, scale,
                                          zero_i8, builder.constant(np.array(0.5, np.float32)),
                                          zero_u8, bias], attrs)
    plain = builder.add1(Op.CONV_INTEGER, [x, weights, zero_u8, zero_i8], attrs)
    graph = builder.finish([conv, plain])
    inputs = {"x": np.random.default_rng(2).integers(200, 256, (1, 512, 6, 6), dtype=np.uint8)}
    expected = reference.run(graph, inputs)
    assert np.abs(expected[1]).max() >= 1 << 24
    for got, want in zip(build(graph).run(inputs), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_integer_matmul_past_f32_integers() -> None:
    builder = GraphBuilder("big")
    a = builder.add_input("a", TensorType(DType.U8, (3, 5, 2048)))
    weights = builder.constant(_extreme((2048, 24), 3))
    zero = builder.constant(np.array(7, np.uint8))
    scale = builder.constant(np.array(1e-5, np.float32))
    plain = builder.add1(Op.MATMUL_INTEGER, [a, weights, zero])
    quantized = builder.add1(Op.QLINEAR_MATMUL, [
        a, scale, zero, weights, builder.constant(np.full(24, 2e-5, np.float32)),
        builder.constant(np.zeros(24, np.int8)), builder.constant(np.array(0.3, np.float32)),
        builder.constant(np.array(-3, np.int8))])
    graph = builder.finish([plain, quantized])
    inputs = {"a": np.random.default_rng(4).integers(200, 256, (3, 5, 2048), dtype=np.uint8)}
    expected = reference.run(graph, inputs)
    assert np.abs(expected[0]).max() >= 1 << 24
    for got, want in zip(build(graph).run(inputs), expected, strict=True):
        np.testing.assert_array_equal(got, want)
