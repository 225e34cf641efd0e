"""The blocked (NCHW[b]c) ops besides the group-1 convolution: MaxPoolNCHWc, AveragePoolNCHWc
and LRNNCHWc lowered (kernel-IR interpreter on tiny shapes, hypothesis over the window
attributes; the compiled library on odd sizes) against their reference, which is itself checked
against the plain op; the depthwise and plain-input forms of ConvNCHWc in the reference against
Conv; and the type rules' checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kiln.compiler import build, reference
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph, Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph
from kiln.compiler.reference.kernels.layout import (
    block_bias,
    block_depthwise_weights,
    block_weights,
    from_blocked,
    to_blocked,
    unblock_depthwise_weights,
)

RNG = np.random.default_rng(0)
BLOCKED_OF = {Op.MAX_POOL: Op.MAX_POOL_NCHWC, Op.AVERAGE_POOL: Op.AVERAGE_POOL_NCHWC,
              Op.LRN: Op.LRN_NCHWC}


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def to_layout(b: GraphBuilder, x: Value, block: int) -> Value:
    return b.add1(Op.LAYOUT_TRANSFORM, [x], {"src_layout": "NCHW",
                                            "dst_layout": f"NCHW{block}c"})


def from_layout(b: GraphBuilder, x: Value, block: int, channels: int) -> Value:
    return b.add1(Op.LAYOUT_TRANSFORM, [x], {"src_layout": f"NCHW{block}c",
                                            "dst_layout": "NCHW", "channels": channels})


def blocked_ops(shape: tuple[int, ...], block: int,
                cases: list[tuple[Op, dict[str, Any]]]) -> tuple[Graph, Graph]:
    """One graph applying each plain op of ``cases`` to x, and one applying its blocked form
    between transforms (the transformed-back results are compared)."""
    plain, blocked = GraphBuilder(), GraphBuilder(fold=False)
    x = plain.add_input("x", TensorType(DType.F32, shape))
    xb = to_layout(blocked, blocked.add_input("x", TensorType(DType.F32, shape)), block)
    plain_outs, blocked_outs = [], []
    for op, attrs in cases:
        plain_outs.append(plain.add1(op, [x], attrs))
        y = blocked.add1(BLOCKED_OF[op], [xb], attrs)
        blocked_outs.append(from_layout(blocked, y, block, shape[1]))
    return plain.finish(plain_outs), blocked.finish(blocked_outs)


def check(shape: tuple[int, ...], block: int, cases: list[tuple[Op, dict[str, Any]]],
          engine: str) -> None:
    plain, blocked = blocked_ops(shape, block, cases)
    feeds = {"x": rand(*shape)}
    want = reference.run(plain, feeds)
    # The reference of a blocked op is the plain op's (on the unblocked tensor): near exact.
    for w, r in zip(want, reference.run(blocked, feeds), strict=True):
        np.testing.assert_allclose(r, w, rtol=1e-6, atol=1e-6)
    if engine == "interpreted":
        got = interpret_lowered(lower_graph(blocked), feeds)
    else:
        got = build(blocked, opt_level=0).run(feeds)
    for (op, attrs), w, g in zip(cases, want, got, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=f"{op.value} {attrs}")


POOLS = [
    (Op.MAX_POOL, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    (Op.MAX_POOL, {"kernel_shape": [2, 3], "strides": [2, 1], "ceil_mode": 1,
                   "dilations": [2, 1]}),
    (Op.AVERAGE_POOL, {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1],
                       "ceil_mode": 1}),
    (Op.AVERAGE_POOL, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                       "ceil_mode": 1, "count_include_pad": 1}),
    (Op.AVERAGE_POOL, {"kernel_shape": [2, 2], "auto_pad": "SAME_LOWER"}),
    (Op.LRN, {"size": 5, "alpha": 0.01, "beta": 0.75, "bias": 2.0}),
    (Op.LRN, {"size": 3, "alpha": 0.1, "beta": 0.5}),
]


@pytest.mark.parametrize(("shape", "block"), [((1, 5, 7, 6), 4), ((2, 12, 5, 4), 8),
                                              ((1, 3, 4, 5), 8)])
def test_pools_and_lrn_interpreted(shape: tuple[int, ...], block: int) -> None:
    check(shape, block, POOLS, "interpreted")


def test_pools_and_lrn_compiled() -> None:
    """Odd sizes: 20 channels in blocks of 16 (one padded block), odd spatial extents."""
    wide = [(Op.LRN, {"size": 11, "alpha": 0.01, "beta": 0.75})]  # offsets past one block
    global_pools = [(Op.MAX_POOL, {"kernel_shape": [9, 11]}),
                    (Op.AVERAGE_POOL, {"kernel_shape": [9, 11]})]
    check((2, 20, 9, 11), 16, POOLS + wide + global_pools, "compiled")
    check((1, 3, 9, 11), 4, wide, "compiled")


@settings(max_examples=25)
@given(
    op=st.sampled_from([Op.MAX_POOL, Op.AVERAGE_POOL]),
    channels=st.integers(1, 9), height=st.integers(2, 7), width=st.integers(2, 7),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    strides=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilations=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pads=st.tuples(*[st.integers(0, 1)] * 4), ceil_mode=st.integers(0, 1),
    include_pad=st.integers(0, 1), block=st.sampled_from([4, 8]),
)
def test_pool_windows_property(op: Op, channels: int, height: int, width: int,
                               kernel: tuple[int, int], strides: tuple[int, int],
                               dilations: tuple[int, int], pads: tuple[int, ...],
                               ceil_mode: int, include_pad: int, block: int) -> None:
    extents = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    # ONNX pads are smaller than the window, which fits in the padded input.
    assume(all(p < e for p, e in zip(pads, extents * 2, strict=True)))
    assume(height + pads[0] + pads[2] >= extents[0] and width + pads[1] + pads[3] >= extents[1])
    attrs: dict[str, Any] = {"kernel_shape": list(kernel), "strides": list(strides),
                             "pads": list(pads), "ceil_mode": ceil_mode,
                             "dilations": list(dilations)}
    if op is Op.AVERAGE_POOL:
        attrs["count_include_pad"] = include_pad
    check((1, channels, height, width), block, [(op, attrs)], "interpreted")


def conv_graph(x_shape: tuple[int, ...], w: np.ndarray, bias: np.ndarray, group: int,
               block: int | None, **attrs: Any) -> Graph:
    """Conv, or (``block`` given) its ConvNCHWc form: depthwise for group > 1, reading the
    plain input in place for group 1."""
    b = GraphBuilder(fold=False)
    x = b.add_input("x", TensorType(DType.F32, x_shape))
    if block is None:
        y = b.add1(Op.CONV, [x, b.constant(w), b.constant(bias)], {**attrs, "group": group})
        return b.finish([y])
    if group > 1:
        operands = [to_layout(b, x, block), b.constant(block_depthwise_weights(w, block))]
        attrs = {**attrs, "group": group}
    else:
        operands = [x, b.constant(block_weights(w, block))]
        attrs = {**attrs, "src_layout": "NCHW"}
    y = b.add1(Op.CONV_NCHWC, [*operands, b.constant(block_bias(bias, block))],
               {**attrs, "block": block})
    return b.finish([from_layout(b, y, block, w.shape[0])])


@pytest.mark.parametrize(("x_shape", "out", "group", "attrs"), [
    ((2, 12, 7, 6), 12, 12, {"pads": [1, 1, 1, 1], "strides": [2, 1]}),
    ((1, 5, 6, 6), 5, 5, {"pads": [2, 0, 1, 1], "dilations": [2, 1]}),
    ((1, 3, 9, 8), 20, 1, {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ((2, 5, 7, 7), 6, 1, {"auto_pad": "SAME_UPPER"}),
])
def test_depthwise_and_plain_input_conv_reference(x_shape: tuple[int, ...], out: int,
                                                  group: int, attrs: dict[str, Any]) -> None:
    w, bias = rand(out, x_shape[1] // group, 3, 3), rand(out)
    feeds = {"x": rand(*x_shape)}
    want = reference.run(conv_graph(x_shape, w, bias, group, None, **attrs), feeds)[0]
    got = reference.run(conv_graph(x_shape, w, bias, group, 8, **attrs), feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_depthwise_weight_blocking() -> None:
    w = rand(10, 1, 3, 2)
    blocked = block_depthwise_weights(w, 4)
    assert blocked.shape == (3, 1, 3, 2, 1, 4)
    assert blocked[2, 0, 1, 0, 0, 1] == w[9, 0, 1, 0]
    assert np.all(blocked[2, ..., 2:] == 0)
    np.testing.assert_array_equal(unblock_depthwise_weights(blocked)[:10], w)
    np.testing.assert_array_equal(from_blocked(to_blocked(rand(1, 6, 2, 2), 4), 6).shape,
                                  (1, 6, 2, 2))


def rule_error(op: Op, shapes: list[tuple[int, ...]], attrs: dict[str, Any], match: str) -> None:
    b = GraphBuilder()
    values = [b.add_input("x", TensorType(DType.F32, shapes[0]))]
    values += [b.constant(np.zeros(s, np.float32)) for s in shapes[1:]]
    with pytest.raises(KilnError, match=match):
        b.add1(op, values, attrs)


def test_type_rule_errors() -> None:
    depthwise_w = (2, 1, 3, 3, 1, 8)
    rule_error(Op.CONV_NCHWC, [(1, 2, 5, 5, 8), depthwise_w], {"block": 8, "group": 4},
               "group 4 is not supported")
    rule_error(Op.CONV_NCHWC, [(1, 2, 5, 5, 8), (2, 2, 3, 3, 1, 8)], {"block": 8, "group": 16},
               r"must be \[2, 1, KH, KW, 1, 8\]")
    rule_error(Op.CONV_NCHWC, [(1, 3, 5, 5), (1, 1, 3, 3, 8, 8)],
               {"block": 8, "src_layout": "NHWC"}, "src_layout 'NHWC'")
    rule_error(Op.CONV_NCHWC, [(1, 3, 5, 5), (1, 2, 3, 3, 8, 8)],
               {"block": 8, "src_layout": "NCHW"}, r"must be \[OC/b, 1, KH, KW, 8, 8\]")
    rule_error(Op.CONV_NCHWC, [(1, 2, 5, 5, 8), depthwise_w],
               {"block": 8, "group": 16, "src_layout": "NCHW"}, r"must be \[N, C, H, W\]")
    rule_error(Op.MAX_POOL_NCHWC, [(1, 8, 5, 5)], {"kernel_shape": [2, 2]},
               r"must be \[N, C/b, H, W, b\]")
    rule_error(Op.AVERAGE_POOL_NCHWC, [(1, 1, 5, 5, 8)], {"kernel_shape": [2]}, "kernel_shape")
    rule_error(Op.LRN_NCHWC, [(1, 1, 5, 5, 8)], {"size": 0}, "size 0 must be positive")
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, (1, 2, 5, 5, 8)))
    y = b.add1(Op.AVERAGE_POOL_NCHWC, [x], {"kernel_shape": [2, 3], "strides": [2, 2],
                                           "ceil_mode": 1})
    assert y.type.shape == (1, 2, 3, 2, 8)
