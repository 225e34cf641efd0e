"""Lowerings of LayoutTransform and ConvNCHWc: the kernel-IR interpreter on tiny shapes and the
compiled library on a realistic one, against the reference (which unblocks, convolves with
Conv's numpy kernel, and blocks back); plus the type rules' checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from nodegraph import plain_conv

from kiln.compiler import build, reference
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph
from kiln.compiler.reference.kernels.layout import (
    block_bias,
    block_weights,
    from_blocked,
    to_blocked,
)

RNG = np.random.default_rng(0)


def rand(*shape: int, dtype: Any = np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


def blocked_conv(x_shape: tuple[int, ...], w: np.ndarray, bias: np.ndarray | None, block: int,
                 dtype: DType = DType.F32, **attrs: Any) -> Graph:
    """to_blocked -> ConvNCHWc (pre-blocked weights) -> from_blocked."""
    b = GraphBuilder(fold=False)
    x = b.add_input("x", TensorType(dtype, x_shape))
    xb = b.add1(Op.LAYOUT_TRANSFORM, [x], {"src_layout": "NCHW",
                                          "dst_layout": f"NCHW{block}c"})
    operands = [xb, b.constant(block_weights(w, block))]
    if bias is not None:
        operands.append(b.constant(block_bias(bias, block)))
    yb = b.add1(Op.CONV_NCHWC, operands, {**attrs, "block": block})
    y = b.add1(Op.LAYOUT_TRANSFORM, [yb], {"src_layout": f"NCHW{block}c", "dst_layout": "NCHW",
                                           "channels": w.shape[0]})
    return b.finish([y])



def test_blocking_helpers_round_trip() -> None:
    x = rand(2, 5, 3, 4)
    blocked = to_blocked(x, 4)
    assert blocked.shape == (2, 2, 3, 4, 4)
    assert np.all(blocked[:, 1, :, :, 1:] == 0)
    np.testing.assert_array_equal(blocked[1, 1, 2, 3, 0], x[1, 4, 2, 3])
    np.testing.assert_array_equal(from_blocked(blocked, 5), x)
    w = rand(6, 5, 3, 3)
    wb = block_weights(w, 4)
    assert wb.shape == (2, 2, 3, 3, 4, 4)
    assert wb[1, 0, 2, 1, 3, 1] == w[5, 3, 2, 1]


@pytest.mark.parametrize(("shape", "block"), [((1, 8, 3, 3), 8), ((2, 5, 2, 3), 4),
                                              ((1, 3, 2, 2), 8)])
def test_layout_transform_round_trip_interpreted(shape: tuple[int, ...], block: int) -> None:
    b = GraphBuilder(fold=False)
    x = b.add_input("x", TensorType(DType.F32, shape))
    xb = b.add1(Op.LAYOUT_TRANSFORM, [x], {"src_layout": "NCHW", "dst_layout": f"NCHW{block}c"})
    back = b.add1(Op.LAYOUT_TRANSFORM, [xb], {"src_layout": f"NCHW{block}c",
                                              "dst_layout": "NCHW", "channels": shape[1]})
    graph = b.finish([xb, back])
    feeds = {"x": rand(*shape)}
    want = reference.run(graph, feeds)
    got = interpret_lowered(lower_graph(graph), feeds)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[0], to_blocked(feeds["x"], block))
    np.testing.assert_array_equal(got[1], feeds["x"])


CASES = [
    # (x shape, out channels, kernel, attrs, block)
    ((1, 8, 4, 4), 8, 3, {"pads": [1, 1, 1, 1]}, 8),
    ((1, 3, 5, 5), 5, 3, {"pads": [1, 1, 1, 1]}, 4),
    ((2, 6, 6, 5), 3, 3, {"pads": [1, 0, 1, 2], "strides": [2, 1]}, 4),
    ((1, 5, 7, 7), 6, 3, {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, 4),
    ((1, 4, 4, 4), 8, 1, {}, 4),
    ((1, 4, 6, 6), 4, 2, {"auto_pad": "SAME_LOWER", "strides": [2, 2]}, 4),
    ((1, 4, 3, 3), 4, 3, {"pads": [0, 3, 0, 3]}, 4),  # columns fully in the padding
]


@pytest.mark.parametrize(("shape", "out", "k", "attrs", "block"), CASES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv_nchwc_interpreted(shape: tuple[int, ...], out: int, k: int,
                                attrs: dict[str, Any], block: int, with_bias: bool) -> None:
    w = rand(out, shape[1], k, k)
    bias = rand(out) if with_bias else None
    feeds = {"x": rand(*shape)}
    want = reference.run(plain_conv(shape, w, bias, **attrs), feeds)[0]
    graph = blocked_conv(shape, w, bias, block, **attrs)
    np.testing.assert_allclose(reference.run(graph, feeds)[0], want, rtol=1e-5, atol=1e-5)
    got = interpret_lowered(lower_graph(graph), feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_conv_nchwc_f64_interpreted() -> None:
    w, bias = rand(4, 4, 3, 3, dtype=np.float64), rand(4, dtype=np.float64)
    feeds = {"x": rand(1, 4, 3, 3, dtype=np.float64)}
    graph = blocked_conv((1, 4, 3, 3), w, bias, 4, DType.F64, pads=[1, 1, 1, 1])
    want = reference.run(plain_conv((1, 4, 3, 3), w, bias, DType.F64, pads=[1, 1, 1, 1]), feeds)
    np.testing.assert_allclose(interpret_lowered(lower_graph(graph), feeds)[0], want[0],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("shape", "out", "k", "attrs"), [
    ((1, 64, 28, 28), 64, 3, {"pads": [1, 1, 1, 1]}),
    ((1, 96, 14, 14), 40, 1, {}),
    ((1, 3, 32, 32), 16, 7, {"pads": [3, 3, 3, 3], "strides": [2, 2]}),
])
def test_conv_nchwc_compiled(shape: tuple[int, ...], out: int, k: int,
                             attrs: dict[str, Any]) -> None:
    w, bias = rand(out, shape[1], k, k) / k, rand(out)
    feeds = {"x": rand(*shape)}
    want = reference.run(plain_conv(shape, w, bias, **attrs), feeds)[0]
    got = build(blocked_conv(shape, w, bias, 8, **attrs)).run(feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def transform_error(shape: tuple[int, ...], attrs: dict[str, Any], match: str) -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, shape))
    with pytest.raises(KilnError, match=match):
        b.add1(Op.LAYOUT_TRANSFORM, [x], attrs)


def test_type_rule_errors() -> None:
    transform_error((1, 8, 2, 2), {"src_layout": "NCHW", "dst_layout": "NHWC"},
                    "only NCHW <-> NCHW<b>c")
    transform_error((1, 8, 2), {"src_layout": "NCHW", "dst_layout": "NCHW8c"}, "must be rank 4")
    transform_error((1, 1, 2, 2, 4), {"src_layout": "NCHW8c", "dst_layout": "NCHW"},
                    r"must be \[N, C/8, H, W, 8\]")
    transform_error((1, 1, 2, 2, 8), {"src_layout": "NCHW8c", "dst_layout": "NCHW",
                                      "channels": 9}, "do not fit 1 blocks of 8")
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, (1, 1, 4, 4, 8)))
    w = b.constant(np.zeros((1, 2, 3, 3, 8, 8), np.float32))
    with pytest.raises(KilnError, match="weight .* must be"):
        b.add1(Op.CONV_NCHWC, [x, w], {"block": 8})
