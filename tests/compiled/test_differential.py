"""Compiled code vs the reference executor on random shapes: matmul and convolution geometry.

(Elementwise broadcasting and reductions have their own hypothesis tests in tests/lowering.)
Each example compiles a one-node graph, so the example counts stay modest; derandomized so CI
sees the same cases every run. float32 tolerance: rtol 1e-4, atol 1e-5 (summation order).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.compiler import build, reference
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType

RTOL, ATOL = 1e-4, 1e-5
SETTINGS = settings(max_examples=15, derandomize=True, deadline=None)


def _check(graph, inputs: dict[str, np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    expected = reference.run(graph, inputs)
    got = build(graph).run(inputs)
    for a, e in zip(got, expected, strict=True):
        assert a.shape == e.shape and a.dtype == e.dtype
        np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL)


@st.composite
def matmul_shapes(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...]]:
    m, k, n = (draw(st.integers(1, 24)) for _ in range(3))
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    a_batch = [draw(st.sampled_from([d, 1])) for d in batch]
    b_batch = [draw(st.sampled_from([d, 1])) for d in batch][draw(st.integers(0, len(batch))):]
    a = tuple(a_batch) + (m, k) if draw(st.booleans()) else (k,)
    b = tuple(b_batch) + (k, n) if draw(st.booleans()) else (k,)
    return a, b


@SETTINGS
@given(matmul_shapes(), st.integers(0, 2**31 - 1))
def test_matmul_broadcasting(shapes: tuple[tuple[int, ...], tuple[int, ...]], seed: int) -> None:
    a_shape, b_shape = shapes
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.add_input("a", TensorType(DType.F32, a_shape))
    y = b.add_input("b", TensorType(DType.F32, b_shape))
    graph = b.finish([b.add1(Op.MATMUL, [x, y])])
    _check(graph, {"a": rng.standard_normal(a_shape).astype(np.float32),
                   "b": rng.standard_normal(b_shape).astype(np.float32)})


@st.composite
def conv_geometry(draw: st.DrawFn) -> dict[str, object]:
    group = draw(st.sampled_from([1, 2]))
    channels = group * draw(st.integers(1, 3))
    filters = group * draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 3)) for _ in range(2)]
    strides = [draw(st.integers(1, 2)) for _ in range(2)]
    dilations = [draw(st.integers(1, 2)) for _ in range(2)]
    pads = [draw(st.integers(0, 2)) for _ in range(4)]
    size = [draw(st.integers((k - 1) * d + 1, 9)) for k, d in zip(kernel, dilations, strict=True)]
    return {"x": (draw(st.integers(1, 2)), channels, *size),
            "w": (filters, channels // group, *kernel), "group": group, "strides": strides,
            "dilations": dilations, "pads": pads, "bias": draw(st.booleans())}


@SETTINGS
@given(conv_geometry(), st.integers(0, 2**31 - 1))
def test_conv_geometry(geometry: dict, seed: int) -> None:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, geometry["x"]))
    w = b.constant(rng.standard_normal(geometry["w"]).astype(np.float32), name="w")
    operands = [x, w]
    if geometry["bias"]:
        operands.append(b.constant(rng.standard_normal(geometry["w"][0]).astype(np.float32),
                                   name="bias"))
    attrs = {k: geometry[k] for k in ("group", "strides", "dilations", "pads")}
    graph = b.finish([b.add1(Op.CONV, operands, attrs)])
    _check(graph, {"x": rng.standard_normal(geometry["x"]).astype(np.float32)})
