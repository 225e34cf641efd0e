"""Compiled tiled convolutions vs the reference executor and onnxruntime.

Random Conv geometries (kernel 1..7, stride 1..3, asymmetric pads, dilation 2, channel counts
that are not multiples of the block, outputs narrower than a tile, batch 2; dense, grouped and
depthwise) compiled at -O2 (the NCHW lowering) and -O3 (blocked layouts: ConvNCHWc); ConvNCHWc
built directly for blocks that are not the vector width; fused epilogues; and every candidate
schedule of a few shapes. Tolerance: float32 sums in another order (rtol 1e-4, atol 1e-4 on
unit-variance data).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from kiln.compiler import build, reference
from kiln.compiler.codegen import Target
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import lower_graph
from kiln.compiler.lower.schedules import collect
from kiln.compiler.passes.pipeline import optimize
from kiln.compiler.reference.kernels.layout import (
    block_bias,
    block_depthwise_weights,
    block_weights,
    from_blocked,
    to_blocked,
)

RTOL = ATOL = 1e-4


def conv_graph(x_shape: tuple[int, ...], w: np.ndarray, bias: np.ndarray | None,
               attrs: dict[str, Any], epilogue: str = "") -> Graph:
    """Conv (+ bias), then optionally ``"add_relu"`` (a residual input ``r``, then ReLU) or
    ``"clip"`` (ReLU6)."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, x_shape))
    operands = [x, b.constant(w, name="w")]
    if bias is not None:
        operands.append(b.constant(bias, name="bias"))
    y = b.add1(Op.CONV, operands, attrs)
    if epilogue == "add_relu":
        r = b.add_input("r", TensorType(DType.F32, tuple(int(d) for d in y.type.shape)))
        y = b.add1(Op.RELU, [b.add1(Op.ADD, [y, r])])
    elif epilogue == "clip":
        y = b.add1(Op.CLIP, [y, b.constant(np.float32(0)), b.constant(np.float32(6))])
    return b.finish([y])


def ort_conv(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None,
             attrs: dict[str, Any]) -> np.ndarray:
    inits = [numpy_helper.from_array(w, "w")]
    names = ["x", "w"]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias, "b"))
        names.append("b")
    graph = helper.make_graph(
        [helper.make_node("Conv", names, ["y"], **attrs)], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@st.composite
def geometries(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["dense", "dense", "depthwise", "grouped"]))
    kernel = [draw(st.integers(1, 7)) for _ in range(2)]
    dilations = [draw(st.sampled_from([1, 1, 2])) for _ in range(2)]
    strides = [draw(st.integers(1, 3)) for _ in range(2)]
    pads = [draw(st.integers(0, min(3, k - 1))) for k in kernel * 2]
    size = [draw(st.integers(max(1, (k - 1) * d + 1 - p - q), 12)) for k, d, p, q in
            zip(kernel, dilations, pads[:2], pads[2:], strict=True)]
    channels = draw(st.integers(1, 20))
    group = 1
    if kind == "depthwise":
        group, out = channels, channels
    elif kind == "grouped":
        group = draw(st.sampled_from([2, 3]))
        channels = group * draw(st.integers(1, 4))
        out = group * draw(st.integers(1, 4))
    else:
        out = draw(st.integers(1, 40))
    return {"x": (draw(st.integers(1, 2)), channels, *size), "out": out,
            "attrs": {"kernel_shape": kernel, "strides": strides, "dilations": dilations,
                      "pads": pads, "group": group},
            "bias": draw(st.booleans())}


@settings(max_examples=10, derandomize=True, deadline=None)
@given(geometries(), st.integers(0, 2**31 - 1))
def test_conv_geometries_against_reference_and_onnxruntime(geometry: dict[str, Any],
                                                           seed: int) -> None:
    rng = np.random.default_rng(seed)
    attrs, group = geometry["attrs"], geometry["attrs"]["group"]
    x_shape = geometry["x"]
    w = rng.standard_normal((geometry["out"], x_shape[1] // group,
                             *attrs["kernel_shape"])).astype(np.float32)
    bias = rng.standard_normal(geometry["out"]).astype(np.float32) if geometry["bias"] else None
    x = rng.standard_normal(x_shape).astype(np.float32)
    graph = conv_graph(x_shape, w, bias, attrs)
    want = reference.run(graph, {"x": x})[0]
    np.testing.assert_allclose(ort_conv(x, w, bias, attrs), want, rtol=RTOL, atol=ATOL)
    for level in (2, 3):
        got = build(graph, opt_level=level).run({"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"-O{level}")


def _weights(rng: np.random.Generator, shape: tuple[int, ...], out: int,
             attrs: dict[str, Any]) -> np.ndarray:
    """Random Conv weights for input ``shape``, ``out`` channels and ``attrs``' group/kernel."""
    group = int(attrs.get("group", 1))
    return rng.standard_normal((out, shape[1] // group, *attrs["kernel_shape"])).astype(
        np.float32)


def _operands(rng: np.random.Generator, shape: tuple[int, ...], out: int,
              attrs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random weights, bias and input of a Conv, drawn in that order."""
    w = _weights(rng, shape, out, attrs)
    return w, rng.standard_normal(out).astype(np.float32), rng.standard_normal(shape).astype(
        np.float32)


@pytest.mark.parametrize(("shape", "out", "attrs"), [
    # strided and dilated: im2col
    ((2, 5, 13, 12), 7, {"kernel_shape": [3, 3], "strides": [2, 2], "dilations": [2, 2],
                         "pads": [2, 1, 0, 2]}),
    # stride 3, 7x7: nine phase planes of taps; OW (3) below the tile rows
    ((1, 4, 9, 9), 9, {"kernel_shape": [7, 7], "strides": [3, 3], "pads": [3, 3, 3, 3]}),
    # 7x1 and 1x7 (inception): tiles across rows for the first when blocked
    ((1, 20, 9, 9), 24, {"kernel_shape": [7, 1], "pads": [3, 0, 3, 0]}),
    ((1, 20, 9, 9), 24, {"kernel_shape": [1, 7], "pads": [0, 3, 0, 3]}),
    # depthwise, strided and dilated; grouped pointwise with stride
    ((2, 12, 11, 10), 12, {"kernel_shape": [3, 3], "strides": [3, 2], "dilations": [2, 1],
                           "pads": [2, 1, 1, 0], "group": 12}),
    ((1, 12, 8, 8), 18, {"kernel_shape": [1, 1], "strides": [2, 2], "group": 3}),
])
@pytest.mark.parametrize("level", [2, 3])
def test_conv_paths(shape: tuple[int, ...], out: int, attrs: dict[str, Any],
                    level: int) -> None:
    """One geometry per lowering path, compiled."""
    w, bias, x = _operands(np.random.default_rng(2), shape, out, attrs)
    graph = conv_graph(shape, w, bias, attrs)
    want = reference.run(graph, {"x": x})[0]
    got = build(graph, opt_level=level).run({"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def blocked_graph(x_shape: tuple[int, ...], w: np.ndarray, bias: np.ndarray, block: int,
                  attrs: dict[str, Any], plain_input: bool = False) -> Graph:
    depthwise = int(attrs.get("group", 1)) > 1
    b = GraphBuilder(fold=False)
    n, c, h, width = x_shape
    shape = x_shape if plain_input else (n, -(-c // block), h, width, block)
    x = b.add_input("x", TensorType(DType.F32, shape))
    packed = block_depthwise_weights(w, block) if depthwise else block_weights(w, block)
    extra = {"src_layout": "NCHW"} if plain_input else {}
    y = b.add1(Op.CONV_NCHWC, [x, b.constant(packed), b.constant(block_bias(bias, block))],
               {**attrs, **extra, "block": block})
    return b.finish([y])


@pytest.mark.parametrize("block", [16, 8, 5])
@pytest.mark.parametrize(("shape", "out", "attrs", "plain_input"), [
    ((2, 21, 9, 13), 35, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, False),
    ((1, 40, 7, 7), 24, {"kernel_shape": [1, 1]}, False),
    ((1, 18, 11, 10), 18, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2],
                           "group": 18}, False),
    ((1, 3, 23, 21), 20, {"kernel_shape": [7, 7], "pads": [3, 3, 3, 3], "strides": [2, 2]},
     True),
])
def test_blocked_conv_any_block(shape: tuple[int, ...], out: int, attrs: dict[str, Any],
                                plain_input: bool, block: int) -> None:
    """ConvNCHWc compiled with the vector width's block, half of it, and an odd block (the
    tiles then use partial vectors)."""
    w, bias, x = _operands(np.random.default_rng(block), shape, out, attrs)
    want = reference.run(conv_graph(shape, w, bias, attrs), {"x": x})[0]
    graph = blocked_graph(shape, w, bias, block, attrs, plain_input)
    got = build(graph).run({"x": x if plain_input else to_blocked(x, block)})[0]
    np.testing.assert_allclose(from_blocked(got, out), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("epilogue", ["add_relu", "clip"])
@pytest.mark.parametrize(("shape", "out", "attrs"), [
    ((1, 32, 14, 14), 48, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ((2, 64, 7, 7), 64, {"kernel_shape": [1, 1]}),
    ((1, 24, 10, 10), 24, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "group": 24}),
    ((1, 16, 9, 9), 20, {"kernel_shape": [3, 3], "strides": [2, 2]}),
])
@pytest.mark.parametrize("level", [2, 3])
def test_fused_epilogues(shape: tuple[int, ...], out: int, attrs: dict[str, Any],
                         epilogue: str, level: int) -> None:
    rng = np.random.default_rng(3)
    w = _weights(rng, shape, out, attrs)
    graph = conv_graph(shape, w / 4, rng.standard_normal(out).astype(np.float32), attrs,
                       epilogue)
    feeds = {v.name: rng.standard_normal(tuple(int(d) for d in v.type.shape)).astype(
        np.float32) for v in graph.inputs}
    want = reference.run(graph, feeds)[0]
    got = build(graph, opt_level=level).run(feeds)[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


CANDIDATE_CASES = [
    ((1, 48, 12, 12), 64, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, True),
    ((1, 64, 8, 8), 96, {"kernel_shape": [1, 1]}, True),
    ((1, 32, 10, 10), 32, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "group": 32}, True),
    ((1, 16, 12, 12), 40, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, False),
    ((1, 24, 12, 12), 24, {"kernel_shape": [3, 3], "strides": [2, 2]}, False),
]


# One case in the fast tier; each compiles every candidate (10 or so builds).
@pytest.mark.parametrize(("shape", "out", "attrs", "blocked"), [
    pytest.param(*case, marks=[pytest.mark.slow] if index else [])
    for index, case in enumerate(CANDIDATE_CASES)])
def test_every_candidate_compiled(shape: tuple[int, ...], out: int, attrs: dict[str, Any],
                                  blocked: bool) -> None:
    """Each schedule the lowering offers ``kiln tune``, compiled, matches the reference."""
    w, bias, x = _operands(np.random.default_rng(5), shape, out, attrs)
    want = reference.run(conv_graph(shape, w, bias, attrs), {"x": x})[0]
    machine = Target.parse("host").machine()
    block = max(4, machine.f32_lanes)
    graph = blocked_graph(shape, w, bias, block, attrs) if blocked else conv_graph(
        shape, w, bias, attrs)
    feeds = {"x": to_blocked(x, block) if blocked else x}
    with collect() as decisions:
        lower_graph(graph, machine)
    (decision,) = decisions
    for candidate in decision.candidates:
        got = build(graph, tuned={decision.signature: candidate}).run(feeds)[0]
        got = from_blocked(got, out) if blocked else got
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=str(candidate))


@pytest.mark.parametrize(("shape", "out", "attrs", "epilogue"), [
    ((1, 32, 14, 14), 48, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, "add_relu"),
    ((1, 48, 7, 7), 64, {"kernel_shape": [1, 1]}, "clip"),
    ((1, 32, 10, 10), 32, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "group": 32},
     "add_relu"),
])
def test_blocked_conv_with_fused_epilogue(shape: tuple[int, ...], out: int,
                                          attrs: dict[str, Any], epilogue: str) -> None:
    """ConvNCHWc as a fusion anchor at -O3: the epilogue runs in the finish loop. A first 3x3
    conv makes the tested conv's input blocked (as inside a network)."""
    rng = np.random.default_rng(11)
    w = _weights(rng, shape, out, attrs)
    first = rng.standard_normal((shape[1], shape[1], 3, 3)).astype(np.float32) / 8
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, shape))
    y = b.add1(Op.CONV, [x, b.constant(first)], {"kernel_shape": [3, 3], "pads": [1] * 4})
    y = b.add1(Op.CONV, [y, b.constant(w / 4), b.constant(
        rng.standard_normal(out).astype(np.float32))], attrs)
    if epilogue == "add_relu":
        r = b.add_input("r", TensorType(DType.F32, tuple(int(d) for d in y.type.shape)))
        y = b.add1(Op.RELU, [b.add1(Op.ADD, [y, r])])
    else:
        y = b.add1(Op.CLIP, [y, b.constant(np.float32(0)), b.constant(np.float32(6))])
    graph = b.finish([y])
    feeds = {v.name: rng.standard_normal(tuple(int(d) for d in v.type.shape)).astype(
        np.float32) for v in graph.inputs}
    want = reference.run(graph, feeds)[0]
    machine = Target.parse("host").machine()
    optimized = optimize(graph, 3, machine=machine)
    assert any(n.op is Op.FUSED and any(m.op is Op.CONV_NCHWC for m in n.attrs["body"].nodes)
               for n in optimized.nodes)
    with collect() as decisions:
        lower_graph(optimized, machine)
    # The default tiles, and one output block per tile (the weights read as they are)
    for tuned in ({}, {d.signature: {**d.chosen, "cols": 1} for d in decisions}):
        exe = build(graph, opt_level=3, tuned=tuned)
        np.testing.assert_allclose(exe.run(feeds)[0], want, rtol=RTOL, atol=ATOL)
