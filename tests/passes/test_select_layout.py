"""select_layout: which convs get blocked (golden structure), transforms only at boundaries,
inverse transforms cancelled, and soundness (reference before/after; compiled at -O3)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from kiln.compiler import build, reference
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph, Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.ir.verify import verify
from kiln.compiler.passes.pipeline import optimize
from kiln.compiler.passes.select_layout import select_layout

RNG = np.random.default_rng(0)


def ops(graph: Graph) -> list[str]:
    return [n.op.value for n in graph.nodes if n.op is not Op.CONSTANT]


def transforms(graph: Graph) -> int:
    return sum(n.op is Op.LAYOUT_TRANSFORM for n in graph.nodes)


def conv(b: GraphBuilder, x: Value, out: int, k: int = 3, bias: bool = True,
         **attrs: object) -> Value:
    channels = int(x.type.shape[1])
    w = b.constant((RNG.standard_normal((out, channels, k, k)) / k).astype(np.float32))
    operands = [x, w]
    if bias:
        operands.append(b.constant(RNG.standard_normal(out).astype(np.float32)))
    if "auto_pad" not in attrs:
        attrs.setdefault("pads", [k // 2] * 4)
    return b.add1(Op.CONV, operands, attrs)


def graph(shape: tuple[int, ...], body: Callable[[GraphBuilder, Value], list[Value]]) -> Graph:
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, shape))
    return b.finish(body(b, x))


def assert_sound(before: Graph, after: Graph, seeds: int = 2) -> None:
    verify(after)
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        feeds = {v.name: rng.standard_normal([int(d) for d in v.type.shape]).astype(np.float32)
                 for v in before.inputs}
        for want, got in zip(reference.run(before, feeds), reference.run(after, feeds),
                             strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def residual_block(b: GraphBuilder, x: Value) -> list[Value]:
    y = b.add1(Op.RELU, [conv(b, x, 16)])
    y = conv(b, y, 16, bias=False)
    y = b.add1(Op.ADD, [y, b.constant(RNG.standard_normal((16, 1, 1)).astype(np.float32))])
    y = b.add1(Op.RELU, [b.add1(Op.ADD, [y, x])])
    return [b.add1(Op.MAX_POOL, [y], {"kernel_shape": [2, 2], "strides": [2, 2]})]


def test_residual_block_stays_blocked_between_convs() -> None:
    before = graph((1, 16, 6, 6), residual_block)
    after = select_layout(before)
    assert ops(after) == [
        "layout_transform", "conv_nchwc", "relu", "conv_nchwc", "add", "add", "relu",
        "layout_transform", "max_pool",
    ]
    first, last = (n for n in after.nodes if n.op is Op.LAYOUT_TRANSFORM)
    assert (first.attrs["src_layout"], first.attrs["dst_layout"]) == ("NCHW", "NCHW8c")
    assert (last.attrs["src_layout"], last.attrs["dst_layout"]) == ("NCHW8c", "NCHW")
    assert last.attrs["channels"] == 16
    # The weights are blocked at compile time; the NCHW originals are gone.
    shapes = sorted(n.outputs[0].type.shape for n in after.nodes if n.op is Op.CONSTANT)
    assert shapes == [(1, 2, 1, 1, 8), (2, 2, 3, 3, 8, 8), (2, 2, 3, 3, 8, 8), (2, 8)]
    assert_sound(before, after)


def test_padded_channels_and_window_geometry() -> None:
    def body(b: GraphBuilder, x: Value) -> list[Value]:
        y = conv(b, x, 20, k=3, strides=[2, 1], dilations=[1, 2], pads=[1, 2, 0, 1])
        y = conv(b, b.add1(Op.RELU, [y]), 12, k=3, auto_pad="SAME_UPPER")
        return [y]

    before = graph((2, 5, 9, 8), body)
    after = select_layout(before)
    assert ops(after) == ["layout_transform", "conv_nchwc", "relu", "conv_nchwc",
                          "layout_transform"]
    assert_sound(before, after)


def test_value_used_in_both_layouts_is_transformed_once() -> None:
    def body(b: GraphBuilder, x: Value) -> list[Value]:
        y = b.add1(Op.RELU, [conv(b, x, 8)])
        return [conv(b, y, 8), b.add1(Op.SIGMOID, [y]), y]

    before = graph((1, 8, 5, 5), body)
    after = select_layout(before)
    # In: x; out: the second conv and y (shared by sigmoid and the output).
    assert transforms(after) == 3
    assert [v.name for v in after.outputs] == [v.name for v in before.outputs]
    assert_sound(before, after)


@pytest.mark.parametrize("case", ["group", "dynamic_weights", "narrow_1x1", "f64", "conv1d"])
def test_ineligible_convs_are_left_alone(case: str) -> None:
    b = GraphBuilder()
    dtype = DType.F64 if case == "f64" else DType.F32
    shape = (1, 8, 7) if case == "conv1d" else (1, 8, 5, 5)
    x = b.add_input("x", TensorType(dtype, shape))
    k = 1 if case == "narrow_1x1" else 3
    w_shape = (8, 4 if case == "group" else 8, *([k] * (len(shape) - 2)))
    w = (b.add_input("w", TensorType(dtype, w_shape)) if case == "dynamic_weights"
         else b.constant(RNG.standard_normal(w_shape).astype(dtype.numpy)))
    attrs = {"group": 2} if case == "group" else {}
    before = b.finish([b.add1(Op.CONV, [x, w], attrs)])
    assert select_layout(before) is before


def test_inverse_transforms_cancel_and_pass_is_idempotent() -> None:
    once = select_layout(graph((1, 16, 6, 6), residual_block))
    assert select_layout(once) is once
    # Hand-made boundary in the middle: from_blocked then to_blocked of the same value.
    b = GraphBuilder(fold=False)
    x = b.add_input("x", TensorType(DType.F32, (1, 16, 4, 4)))
    blocked = b.add1(Op.LAYOUT_TRANSFORM, [x], {"src_layout": "NCHW", "dst_layout": "NCHW8c"})
    y = b.add1(Op.RELU, [blocked])
    plain = b.add1(Op.LAYOUT_TRANSFORM, [y], {"src_layout": "NCHW8c", "dst_layout": "NCHW",
                                              "channels": 16})
    again = b.add1(Op.LAYOUT_TRANSFORM, [plain],
                   {"src_layout": "NCHW", "dst_layout": "NCHW8c"})
    z = b.add1(Op.NEG, [again])
    out = b.add1(Op.LAYOUT_TRANSFORM, [z], {"src_layout": "NCHW8c", "dst_layout": "NCHW",
                                            "channels": 16})
    before = b.finish([out])
    after = select_layout(before)
    assert ops(after) == ["layout_transform", "relu", "neg", "layout_transform"]
    assert_sound(before, after)


def test_control_flow_body_reads_the_nchw_form_by_name() -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, (1, 8, 4, 4)))
    cond = b.add_input("cond", TensorType(DType.BOOL, ()))
    y = b.add1(Op.RELU, [conv(b, x, 8)])
    branch = b.sub("then")
    then = branch.finish([branch.add1(Op.NEG, [y])])
    other = b.sub("else")
    otherwise = other.finish([other.add1(Op.ABS, [y])])
    out = b.add1(Op.IF, [cond], {"then_branch": then, "else_branch": otherwise})
    before = b.finish([out])
    after = select_layout(before)
    verify(after)
    assert "conv_nchwc" in ops(after)
    feeds = {"x": RNG.standard_normal((1, 8, 4, 4)).astype(np.float32), "cond": np.array(True)}
    np.testing.assert_allclose(reference.run(after, feeds)[0], reference.run(before, feeds)[0],
                               rtol=1e-4, atol=1e-4)


def test_compiled_blocked_network_matches_nchw_at_o3() -> None:
    def body(b: GraphBuilder, x: Value) -> list[Value]:
        y = b.add1(Op.RELU, [conv(b, x, 64, k=7, strides=[2, 2], pads=[3, 3, 3, 3])])
        return residual_block_wide(b, y)

    def residual_block_wide(b: GraphBuilder, x: Value) -> list[Value]:
        y = b.add1(Op.RELU, [conv(b, x, 64)])
        y = conv(b, y, 64, k=1, pads=[0, 0, 0, 0])
        return [b.add1(Op.GLOBAL_AVERAGE_POOL, [b.add1(Op.RELU, [b.add1(Op.ADD, [y, x])])])]

    before = graph((1, 3, 32, 32), body)
    optimized = optimize(before, 3, verify_each=True)
    assert ops(optimized).count("conv_nchwc") + sum(
        "conv_nchwc" in ops(n.attrs["body"]) for n in optimized.nodes if n.op is Op.FUSED) == 3
    feeds = {"x": RNG.standard_normal((1, 3, 32, 32)).astype(np.float32)}
    want = reference.run(before, feeds)[0]
    for level in (0, 3):
        np.testing.assert_allclose(build(before, opt_level=level).run(feeds)[0], want,
                                   rtol=1e-4, atol=1e-4)
