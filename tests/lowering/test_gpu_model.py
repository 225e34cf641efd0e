"""Whole small models through the CUDA target's front half: ``optimize`` for ``gpu_machine()``
(fusion included), ``lower_graph_gpu``, ``make_plan``; every planned kernel in GPU form, and the
lowered graph, interpreted with sequential GPU semantics, computes what the reference executor
computes on the unoptimized graph."""

from __future__ import annotations

import numpy as np
from gpucheck import gpu_matches_reference, kernels

from kiln.compiler import reference
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import interpret_lowered
from kiln.compiler.lower.gpu import check_gpu_form, gpu_machine, lower_graph_gpu
from kiln.compiler.passes.pipeline import optimize
from kiln.compiler.plan.plan import make_plan

RNG = np.random.default_rng(3)


def weights(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) * 0.5).astype(np.float32)


def small_cnn() -> Graph:
    """Conv + bias + ReLU, max pool, depthwise conv, global average pool, flatten, Gemm,
    softmax."""
    b = GraphBuilder()
    x = b.add_input("image", TensorType(DType.F32, (1, 2, 8, 8)))
    y = b.add1(Op.CONV, [x, b.constant(weights(4, 2, 3, 3)), b.constant(weights(4))],
               {"pads": [1, 1, 1, 1]})
    y = b.add1(Op.RELU, [y])
    y = b.add1(Op.MAX_POOL, [y], {"kernel_shape": [2, 2], "strides": [2, 2]})
    y = b.add1(Op.CONV, [y, b.constant(weights(4, 1, 3, 3))], {"group": 4, "pads": [1] * 4})
    y = b.add1(Op.CLIP, [y, b.constant(np.float32(0.0)), b.constant(np.float32(6.0))])
    y = b.add1(Op.GLOBAL_AVERAGE_POOL, [y])
    y = b.add1(Op.FLATTEN, [y])
    y = b.add1(Op.GEMM, [y, b.constant(weights(10, 4)), b.constant(weights(10))],
               {"transB": 1})
    return b.finish([b.add1(Op.SOFTMAX, [y], {"axis": -1})])


def attention_block() -> Graph:
    """Single-head self-attention with a residual and LayerNorm, then an MLP with GELU."""
    b = GraphBuilder()
    x = b.add_input("tokens", TensorType(DType.F32, (1, 6, 8)))
    q, k, v = (b.add1(Op.MATMUL, [x, b.constant(weights(8, 8))]) for _ in range(3))
    kt = b.add1(Op.TRANSPOSE, [k], {"perm": [0, 2, 1]})
    scores = b.add1(Op.MUL, [b.add1(Op.MATMUL, [q, kt]), b.constant(np.float32(8 ** -0.5))])
    attn = b.add1(Op.MATMUL, [b.add1(Op.SOFTMAX, [scores], {"axis": -1}), v])
    h = b.add1(Op.LAYER_NORMALIZATION, [b.add1(Op.ADD, [x, attn]),
                                        b.constant(weights(8)), b.constant(weights(8))],
               {"axis": -1})
    up = b.add1(Op.ADD, [b.add1(Op.MATMUL, [h, b.constant(weights(8, 16))]),
                         b.constant(weights(16))])
    down = b.add1(Op.MATMUL, [b.add1(Op.GELU, [up]), b.constant(weights(16, 8))])
    out = b.add1(Op.ADD, [h, down])
    pooled = b.add1(Op.REDUCE_MEAN, [out, b.constant(np.array([1]))], {"keepdims": 0})
    return b.finish([out, b.add1(Op.ARGMAX, [pooled], {"axis": -1})])


def _check_model(graph: Graph, feeds: dict[str, np.ndarray]) -> None:
    expected = reference.run(graph, feeds)
    optimized = optimize(graph, 2, machine=gpu_machine())
    assert any(n.op is Op.FUSED for n in optimized.nodes)
    lowered = lower_graph_gpu(optimized)
    plan = make_plan(lowered)
    for call in plan.calls:
        check_gpu_form(call.kernel)
    assert len(plan.calls) == len(kernels(lowered))
    for want, got in zip(expected, interpret_lowered(lowered, feeds), strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_small_cnn() -> None:
    _check_model(small_cnn(), {"image": weights(1, 2, 8, 8)})


def test_attention_block() -> None:
    _check_model(attention_block(), {"tokens": weights(1, 6, 8)})


def test_unoptimized_graph() -> None:
    """-O0 (nothing fused): every op lowered by its own schedule or bound."""
    gpu_matches_reference(small_cnn(), {"image": weights(1, 2, 8, 8)})
