"""Compiled tiled f32 MatMul / Gemm (compiler/lower/ops/nn_matmul.py) against the reference
executor and onnxruntime: random odd shapes (tails in M, N and K), batches with broadcasting,
1-D operands, Gemm's transposes / alpha / beta / bias shapes, constant and non-constant B,
opt levels 2 and 3, every candidate schedule of a few shapes, two threads, fused epilogues.

float32 tolerance: rtol 1e-4, atol 1e-5 scaled by sqrt(K) (summation order differs)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from kiln.compiler import build, reference
from kiln.compiler.codegen.target import Target
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower import schedules
from kiln.compiler.lower.from_graph import lower_graph
from kiln.frontends.onnx import load_onnx

SETTINGS = settings(max_examples=12, derandomize=True, deadline=None)
EXTENT = st.integers(1, 67)


def assert_close(got: np.ndarray, want: np.ndarray, k: int) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = math.sqrt(max(k, 1))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)


def graph_of(op: Op, arrays: Sequence[np.ndarray | None], const_b: bool,
             attrs: Mapping[str, Any] | None = None) -> tuple[Graph, dict[str, np.ndarray]]:
    b = GraphBuilder(fold=False)
    values, feeds = [], {}
    for i, array in enumerate(arrays):
        if array is None:
            values.append(None)
        elif i == 1 and const_b:
            values.append(b.constant(array))
        else:
            values.append(b.add_input(f"in{i}", TensorType.of(array)))
            feeds[f"in{i}"] = array
    return b.finish([b.add1(op, values, attrs or {})]), feeds


def check_compiled(graph: Graph, feeds: Mapping[str, np.ndarray], k: int, opt_level: int = 2,
                   **options: Any) -> None:
    want = reference.run(graph, feeds)[0]
    assert_close(build(graph, opt_level=opt_level, **options).run(feeds)[0], want, k)


@st.composite
def matmul_case(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    m, k, n = draw(EXTENT), draw(EXTENT), draw(EXTENT)
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    a_batch = [draw(st.sampled_from([d, 1])) for d in batch]
    b_batch = [draw(st.sampled_from([d, 1])) for d in batch][draw(st.integers(0, len(batch))):]
    a = (*a_batch, m, k) if draw(st.integers(0, 5)) else (k,)
    b = (*b_batch, k, n) if draw(st.integers(0, 5)) else (k,)
    return a, b, k


@SETTINGS
@given(matmul_case(), st.booleans(), st.sampled_from([2, 3]), st.integers(0, 2**31 - 1))
def test_matmul_matches_reference(case: tuple, const_b: bool, opt_level: int,
                                  seed: int) -> None:
    a_shape, b_shape, k = case
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(a_shape).astype(np.float32)
    b = rng.standard_normal(b_shape).astype(np.float32)
    graph, feeds = graph_of(Op.MATMUL, [a, b], const_b)
    check_compiled(graph, feeds, k, opt_level)


@st.composite
def gemm_case(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...],
                                        tuple[int, ...] | None, dict[str, Any], int]:
    m, k, n = draw(EXTENT), draw(EXTENT), draw(EXTENT)
    attrs = {"transA": draw(st.sampled_from([0, 1])), "transB": draw(st.sampled_from([0, 1])),
             "alpha": draw(st.sampled_from([1.0, 0.5, -2.0])),
             "beta": draw(st.sampled_from([1.0, 0.0, 1.5]))}
    c = draw(st.sampled_from([None, (), (1,), (n,), (m, 1), (1, n), (m, n)]))
    a = (k, m) if attrs["transA"] else (m, k)
    b = (n, k) if attrs["transB"] else (k, n)
    return a, b, c, attrs, k


@SETTINGS
@given(gemm_case(), st.booleans(), st.sampled_from([2, 3]), st.integers(0, 2**31 - 1))
def test_gemm_matches_reference(case: tuple, const_b: bool, opt_level: int, seed: int) -> None:
    a_shape, b_shape, c_shape, attrs, k = case
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in (a_shape, b_shape)]
    arrays.append(None if c_shape is None else rng.standard_normal(c_shape).astype(np.float32))
    graph, feeds = graph_of(Op.GEMM, arrays, const_b, attrs)
    check_compiled(graph, feeds, k, opt_level)


ORT_CASES = [
    ("MatMul", [(37, 45), (45, 70)], {}),
    ("MatMul", [(3, 17, 64), (64, 130)], {}),
    ("MatMul", [(4, 29, 16), (4, 16, 29)], {}),  # attention scores, both inputs
    ("MatMul", [(1, 200), (200, 90)], {}),
    ("Gemm", [(33, 20), (50, 20), (50,)], {"transB": 1}),
    ("Gemm", [(20, 33), (20, 50), (33, 50)], {"transA": 1, "alpha": 0.25, "beta": -1.0}),
]


@pytest.mark.parametrize("const_b", [False, True], ids=["var", "const"])
@pytest.mark.parametrize("case", ORT_CASES, ids=str)
def test_matches_onnxruntime(case: tuple, const_b: bool) -> None:
    op_type, shapes, attrs = case
    rng = np.random.default_rng(len(shapes[0]) * 100 + shapes[0][-1])
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    names = ["a", "b", "c"][:len(arrays)]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(x.shape))
              for n, x in zip(names, arrays, strict=True) if not (const_b and n != "a")]
    inits = [numpy_helper.from_array(x, n) for n, x in zip(names, arrays, strict=True)
             if const_b and n != "a"]
    node = helper.make_node(op_type, names, ["y"], **attrs)
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    feeds = {n: x for n, x in zip(names, arrays, strict=True) if not (const_b and n != "a")}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, feeds)
    k = shapes[0][0] if attrs.get("transA") else shapes[0][-1]
    for opt_level in (2, 3):
        got = build(load_onnx(model), opt_level=opt_level).run(feeds)[0]
        assert_close(got, want, k)


CANDIDATE_CASES = [
    (Op.MATMUL, [(29, 70), (70, 83)], {}),
    (Op.MATMUL, [(3, 13, 40), (3, 40, 21)], {}),
    (Op.GEMM, [(45, 19), (100, 45), (100,)], {"transA": 1, "transB": 1, "beta": 0.5}),
]


@pytest.mark.slow
@pytest.mark.parametrize("const_b", [False, True], ids=["var", "const"])
@pytest.mark.parametrize("case", CANDIDATE_CASES, ids=str)
def test_every_candidate_schedule_compiles_correctly(case: tuple, const_b: bool) -> None:
    op, shapes, attrs = case
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    graph, feeds = graph_of(op, arrays, const_b, attrs)
    with schedules.collect() as decisions:
        lower_graph(graph, Target.parse("host").machine())
    (decision,) = decisions
    k = shapes[0][0] if attrs.get("transA") else shapes[0][-1]
    want = reference.run(graph, feeds)[0]
    for params in decision.candidates:
        got = build(graph, tuned={decision.signature: params}).run(feeds)[0]
        assert_close(got, want, k)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("const_b", [False, True], ids=["var", "const"])
@pytest.mark.parametrize("shapes", [[(1, 100), (100, 150)], [(23, 40), (40, 130)],
                                    [(3, 12, 40), (3, 40, 67)]], ids=str)
def test_blocked_schedules_with_threads(shapes: list[tuple[int, ...]], const_b: bool,
                                        threads: int) -> None:
    """The candidate with K in several blocks (the first one shorter) and several column
    blocks (the last one with the partial panel): row tails, batched tasks, one or two
    threads."""
    rng = np.random.default_rng(11)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    graph, feeds = graph_of(Op.MATMUL, arrays, const_b)
    with schedules.collect() as decisions:
        lower_graph(graph, Target.parse("host").machine())
    (decision,) = decisions
    k, n = shapes[1][-2:]
    blocked = next(c for c in decision.candidates if c["k_block"] < k and c["n_block"] < n)
    check_compiled(graph, feeds, k, threads=threads, tuned={decision.signature: blocked})


def test_fused_epilogue_compiled() -> None:
    """gelu(x @ w + bias) + residual as one fused kernel, compiled at -O2 and -O3."""
    rng = np.random.default_rng(2)
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, (2, 21, 30)))
    w = b.add_input("w", TensorType(DType.F32, (30, 75)))
    res = b.add_input("res", TensorType(DType.F32, (2, 21, 75)))
    y = b.add1(Op.ADD, [b.add1(Op.MATMUL, [x, w]), b.constant(
        rng.standard_normal(75).astype(np.float32))])
    y = b.add1(Op.GELU, [y])
    graph = b.finish([b.add1(Op.ADD, [y, res])])
    feeds = {"x": rng.standard_normal((2, 21, 30)).astype(np.float32),
             "w": rng.standard_normal((30, 75)).astype(np.float32),
             "res": rng.standard_normal((2, 21, 75)).astype(np.float32)}
    for opt_level in (2, 3):
        exe = build(graph, opt_level=opt_level)
        assert exe.stats.kernels == 1
        assert_close(exe.run(feeds)[0], reference.run(graph, feeds)[0], 30)
