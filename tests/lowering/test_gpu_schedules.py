"""GPU schedules (compiler/lower/gpu/): each op family lowered by ``lower_graph_gpu`` is in GPU
form and, run by the kernel-IR interpreter with sequential GPU semantics (the race rule
checked), matches the reference executor. Shapes are tiny (the interpreter is slow) but cover
partial tiles, every reduction axis kind and the generic binding of ops without a schedule."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpucheck import check_node, gpu_matches_reference, kernels, rand, scheduled

from kiln.compiler.ir.op import Op
from kiln.compiler.lower.gpu import check_gpu_form
from kiln.compiler.passes.fuse import fuse_operators

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "passes"))
from test_fuse import PATTERNS  # noqa: E402


def ints(*shape: int) -> np.ndarray:
    return np.random.default_rng(7).integers(-9, 9, shape).astype(np.int64)


# ---- elementwise ----

@pytest.mark.parametrize("op,inputs", [
    (Op.ADD, [rand(2, 3, 5), rand(3, 1)]),
    (Op.MUL, [rand(4, 1, 3), rand(1, 5, 1)]),
    (Op.SIGMOID, [rand(70)]),
    (Op.WHERE, [rand(2, 3) > 0, rand(2, 3), rand(3)]),
    (Op.DIV, [ints(3, 4), ints(4) | 1]),
])
def test_elementwise(op: Op, inputs: list[np.ndarray]) -> None:
    lowered = check_node(op, inputs)
    (kernel,) = kernels(lowered)
    grid, threads = check_gpu_form(kernel)
    assert grid * threads >= lowered.outputs[0].numel  # one thread per element


@pytest.mark.parametrize("name", list(PATTERNS))
def test_fused_groups(name: str) -> None:
    pattern = PATTERNS[name]()
    lowered = gpu_matches_reference(fuse_operators(pattern.graph), pattern.inputs)
    if name == "conv_bias_add_relu":
        # one kernel: the implicit-GEMM conv storing the epilogue from its registers
        (kernel,) = kernels(lowered)
        assert kernel.shared and kernel.thread_local


# ---- reductions ----

REDUCE_OPS = [Op.REDUCE_SUM, Op.REDUCE_MEAN, Op.REDUCE_MAX, Op.REDUCE_MIN, Op.REDUCE_L1,
              Op.REDUCE_L2, Op.REDUCE_LOG_SUM_EXP, Op.REDUCE_SUM_SQUARE, Op.REDUCE_PROD]


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("shape,axes,keepdims,block", [
    ((3, 40), [1], 1, True),        # long last axis: a block per row
    ((2, 33, 3), [1], 0, True),     # long middle axis (strided rows)
    ((2, 3, 4), [0], 1, False),     # short first axis: a thread per row
    ((2, 3, 4), [0, 2], 0, False),  # two axes
    ((2, 3, 8), [0, 1, 2], 0, True),  # one row of 48: a block
])
def test_reduce(op: Op, shape: tuple[int, ...], axes: list[int], keepdims: int,
                block: bool) -> None:
    data = np.abs(rand(*shape)) + 0.5 if op is Op.REDUCE_PROD else rand(*shape)
    lowered = check_node(op, [data, np.array(axes)], {"keepdims": keepdims}, consts=[1])
    has_block = op is not Op.REDUCE_PROD and block
    assert scheduled(lowered) == has_block


def test_reduce_integer_and_all_axes_block() -> None:
    check_node(Op.REDUCE_SUM, [ints(3, 40), np.array([1])], {"keepdims": 0}, consts=[1])
    assert scheduled(check_node(Op.REDUCE_MAX, [rand(4, 70), np.array([0, 1])],
                                {"keepdims": 0}, consts=[1]))


@pytest.mark.parametrize("op", [Op.ARGMAX, Op.ARGMIN])
@pytest.mark.parametrize("last", [0, 1])
def test_arg_reduce(op: Op, last: int) -> None:
    data = np.round(rand(2, 40, 3) * 2)  # ties
    data[0, 5, 1] = data[0, 20, 1] = np.nan
    data[1, 7, 2] = data[1, 30, 2] = 50.0 if op is Op.ARGMAX else -50.0
    assert scheduled(check_node(op, [data], {"axis": 1, "select_last_index": last,
                                              "keepdims": 1}))
    assert scheduled(check_node(op, [ints(3, 33)], {"axis": -1, "select_last_index": last,
                                                    "keepdims": 0}))
    check_node(op, [rand(3, 4, 2)], {"axis": 0})  # short rows: bound generically


# ---- matrix products ----

@pytest.mark.parametrize("a,b", [
    ((5, 7), (7, 3)),
    ((70, 17), (17, 3)),        # two row tiles, two K steps, partial tiles everywhere
    ((2, 3, 5, 7), (7, 6)),     # batched A, one B: one tall product
    ((2, 5, 4), (4,)),
    ((3, 1, 5, 4), (2, 4, 3)),  # broadcast batch axes
    ((4,), (4, 6)),             # 1-D operands
    ((5, 4), (4,)),
])
def test_matmul(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    assert scheduled(check_node(Op.MATMUL, [rand(*a), rand(*b)]))


@pytest.mark.parametrize("attrs,c_shape", [
    ({}, (6,)),
    ({"transA": 1, "alpha": 0.5, "beta": 2.0}, (5, 1)),
    ({"transB": 1}, (1, 1)),
    ({"transA": 1, "transB": 1}, None),
    ({"beta": 0.25}, (5, 6)),
])
def test_gemm(attrs: dict[str, Any], c_shape: tuple[int, ...] | None) -> None:
    a = rand(19, 5) if attrs.get("transA") else rand(5, 19)
    b = rand(6, 19) if attrs.get("transB") else rand(19, 6)
    operands = [a, b] + ([] if c_shape is None else [rand(*c_shape)])
    assert scheduled(check_node(Op.GEMM, operands, attrs, consts=[1, 2]))


def split_k(lowered: Any) -> bool:
    """Whether the product ran with the split-K schedule (partial sums in shared memory)."""
    return all(k.shared and k.shared[0].name.endswith("_partial") for k in kernels(lowered))


@pytest.mark.parametrize("a,b", [
    ((1, 300), (300, 40)),        # batch-1 fully connected: B's columns contiguous
    ((3, 1, 150), (150, 4)),      # three rows of a folded batch
    ((2, 1, 129), (2, 129, 3)),   # a batch of single rows
    ((130,), (130, 33)),
])
def test_matmul_split_k(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    assert split_k(check_node(Op.MATMUL, [rand(*a), rand(*b)]))


def test_gemm_and_conv_split_k() -> None:
    # B transposed (a PyTorch Linear): consecutive threads read consecutive k
    assert split_k(check_node(Op.GEMM, [rand(2, 130), rand(37, 130), rand(37)],
                              {"transB": 1, "alpha": 0.5}, consts=[1, 2]))
    # two output channels, 144 products per output: padding read through the split-K loads
    assert split_k(check_node(Op.CONV, [rand(1, 16, 5, 5), rand(2, 16, 3, 3), rand(2)],
                              {"pads": [1, 1, 1, 1]}, consts=[1, 2]))


def test_integer_and_empty_matmul_are_bound_generically() -> None:
    assert not scheduled(check_node(Op.MATMUL, [ints(3, 4), ints(4, 5)]))
    assert not scheduled(check_node(Op.MATMUL, [rand(3, 0), rand(0, 4)]))


# ---- convolution ----

@pytest.mark.parametrize("x,w,attrs", [
    ((1, 3, 6, 6), (4, 3, 3, 3), {}),
    ((2, 4, 7, 5), (6, 2, 3, 2), {"group": 2, "strides": [2, 1], "pads": [1, 0, 1, 1],
                                  "dilations": [1, 2]}),
    ((1, 4, 5, 5), (4, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),  # depthwise
    ((1, 2, 9), (3, 2, 3), {"strides": [2], "pads": [2, 1]}),           # 1-D
    ((1, 3, 6, 6), (4, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 2, 3, 4, 4), (2, 2, 2, 2, 2), {"pads": [0, 1, 1, 1, 0, 0]}),   # 3-D
])
def test_conv(x: tuple[int, ...], w: tuple[int, ...], attrs: dict[str, Any]) -> None:
    assert scheduled(check_node(Op.CONV, [rand(*x), rand(*w), rand(w[0])], attrs,
                                consts=[1, 2]))


def test_conv_without_bias() -> None:
    assert scheduled(check_node(Op.CONV, [rand(1, 2, 5, 5), rand(3, 2, 1, 1)], consts=[1]))


# ---- normalizations ----

@pytest.mark.parametrize("op", [Op.SOFTMAX, Op.LOG_SOFTMAX])
@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_softmax(op: Op, axis: int) -> None:
    data = rand(3, 5, 7)
    data[1, 2, 3] = 30.0  # a large value: the max shift matters
    assert scheduled(check_node(op, [data], {"axis": axis}))


@pytest.mark.parametrize("axis,scale,bias", [(-1, (8,), (8,)), (1, (3, 8), None),
                                             (-1, (1,), (8,))])
def test_layer_norm(axis: int, scale: tuple[int, ...], bias: tuple[int, ...] | None) -> None:
    operands = [rand(2, 3, 8) * 3 + 1, rand(*scale), None if bias is None else rand(*bias)]
    assert scheduled(check_node(Op.LAYER_NORMALIZATION, operands, {"axis": axis}, outputs=3))


@pytest.mark.parametrize("op,inputs,attrs", [
    (Op.INSTANCE_NORMALIZATION, [rand(2, 3, 4, 5) * 2 + 1, rand(3), rand(3)],
     {"epsilon": 1e-3}),
    (Op.GROUP_NORMALIZATION, [rand(2, 6, 3, 3) * 2 + 1, rand(6), rand(6)], {"num_groups": 3}),
    (Op.GROUP_NORMALIZATION, [rand(2, 4, 5) * 2 + 1, rand(4), rand(4)], {"num_groups": 1}),
    (Op.RMS_NORMALIZATION, [rand(2, 3, 8), rand(8)], {"axis": -1}),
    (Op.RMS_NORMALIZATION, [rand(2, 3, 8), rand(3, 8)], {"axis": 1}),
])
def test_other_normalizations(op: Op, inputs: list[np.ndarray], attrs: dict[str, Any]) -> None:
    assert scheduled(check_node(op, inputs, attrs))


# ---- ops without a GPU schedule: their CPU lowering, bound ----

@pytest.mark.parametrize("op,inputs,attrs,consts", [
    (Op.TRANSPOSE, [rand(2, 3, 4)], {"perm": [2, 0, 1]}, []),
    (Op.MAX_POOL, [rand(1, 2, 6, 6)], {"kernel_shape": [2, 2], "strides": [2, 2]}, []),
    (Op.AVERAGE_POOL, [rand(1, 2, 5, 5)], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, []),
    (Op.GLOBAL_AVERAGE_POOL, [rand(2, 3, 4, 4)], {}, []),
    (Op.FLATTEN, [rand(2, 3, 4)], {}, []),  # stores at a flat index of all loop variables
    (Op.CONCAT, [rand(2, 3), rand(2, 2)], {"axis": 1}, []),
    (Op.GATHER, [rand(5, 3), np.array([4, 0, 2])], {"axis": 0}, [1]),
    (Op.GATHER, [rand(3, 4, 2), np.array(-1)], {"axis": 0}, [1]),  # a scalar index prelude
    (Op.CUMSUM, [rand(3, 4), np.array(1)], {}, [1]),
    (Op.BATCH_NORMALIZATION, [rand(2, 3, 4), rand(3), rand(3), rand(3), np.abs(rand(3))],
     {}, [1, 2, 3, 4]),
])
def test_generic_binding(op: Op, inputs: list[np.ndarray], attrs: dict[str, Any],
                         consts: list[int]) -> None:
    """Correct, and spread over more than one thread (independent iterations found)."""
    for kernel in kernels(check_node(op, inputs, attrs, consts)):
        grid, threads = check_gpu_form(kernel)
        assert grid * threads > 1, kernel.name


def test_dependent_iterations_stay_on_one_thread() -> None:
    """A scan along its only axis: each step reads the previous one's result."""
    for kernel in kernels(check_node(Op.CUMSUM, [rand(6), np.array(0)], {}, [1])):
        assert check_gpu_form(kernel) == (1, 1)
