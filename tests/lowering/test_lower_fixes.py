"""Regression tests of compiled-path fixes: Scan bodies reading enclosing constants as shape
operands, f16 Attention's softmax sum, CausalConvWithState's state from a short input without
a past state, and Dropout in training mode. Run through the kernel-IR interpreter."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kiln.compiler import reference
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph

F16, F32 = DType.F16, DType.F32


def single_node(op: Op, operands: list[Any], attrs: dict[str, Any],
                outputs: int = 1) -> tuple[Graph, dict[str, np.ndarray]]:
    """A graph of one ``op`` node: arrays become graph inputs, ``("const", array)`` constants."""
    b = GraphBuilder()
    values, feeds = [], {}
    for i, operand in enumerate(operands):
        if operand is None:
            values.append(None)
        elif isinstance(operand, tuple):
            values.append(b.constant(np.asarray(operand[1])))
        else:
            array = np.asarray(operand)
            values.append(b.add_input(f"in{i}", TensorType.of(array)))
            feeds[f"in{i}"] = array
    results = b.add(op, values, attrs, outputs=outputs)
    return b.finish([r for r in results if r is not None]), feeds


# ---------------------------------------------------------------- Scan and outer constants

def test_scan_body_reads_outer_constant_axes() -> None:
    """An Unsqueeze/Squeeze in a Scan body whose axes are a constant of the enclosing graph
    (as in ONNX function expansions) keeps a static shape when the body is re-typed."""
    b = GraphBuilder()
    state0 = b.add_input("s0", TensorType(F32, (2, 2)))
    xs = b.add_input("xs", TensorType(F32, (3, 2)))
    axes = b.constant(np.array([-1], np.int64), "axes")
    first = b.constant(np.array([0], np.int64), "first")
    body = b.sub("body")
    state = body.add_input("state", TensorType(F32, (2, 2)))
    x_t = body.add_input("x_t", TensorType(F32, (2,)))
    column = body.add1(Op.UNSQUEEZE, [x_t, axes])
    row = body.add1(Op.UNSQUEEZE, [x_t, first])
    new_state = body.add1(Op.ADD, [state, body.add1(Op.MATMUL, [column, row])])
    back = body.add1(Op.SQUEEZE, [column, axes])
    results = b.add(Op.SCAN, [state0, xs], {"body": body.finish([new_state, back]),
                                            "num_scan_inputs": 1}, outputs=2)
    graph = b.finish(list(results))
    rng = np.random.default_rng(1)
    feeds = {"s0": rng.standard_normal((2, 2)).astype(np.float32),
             "xs": rng.standard_normal((3, 2)).astype(np.float32)}
    expected = reference.run(graph, feeds)
    got = interpret_lowered(lower_graph(graph), feeds)
    for have, want in zip(got, expected, strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-6)


# ---------------------------------------------------------------- Attention f16

def test_attention_f16_matches_reference_exactly() -> None:
    """numpy sums f16 softmax terms in f32 and rounds once: summing in f16 step by step is
    off by an ulp on long rows."""
    rng = np.random.default_rng(3)
    q = rng.uniform(-1, 1, (1, 2, 3, 8)).astype(np.float16)
    k = rng.uniform(-1, 1, (1, 2, 48, 8)).astype(np.float16)
    v = rng.uniform(0, 1, (1, 2, 48, 4)).astype(np.float16)
    graph, feeds = single_node(Op.ATTENTION, [q, k, v], {})
    expected = reference.run(graph, feeds)[0]
    got = interpret_lowered(lower_graph(graph), feeds)[0]
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------- CausalConvWithState

def test_causal_conv_short_input_state_is_zero_padded() -> None:
    """Without a past state, the new state of an input shorter than k - 1 starts with the
    zero padding (written, not left as whatever the output buffer held)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 2)).astype(np.float32)
    w = rng.standard_normal((2, 1, 5)).astype(np.float32)
    graph, feeds = single_node(Op.CAUSAL_CONV_WITH_STATE, [x, w], {}, outputs=2)
    expected = reference.run(graph, feeds)
    lowered = lower_graph(graph)
    # The output buffers start from garbage, as arena memory reused by earlier nodes does.
    garbage = {b.name: np.full(b.shape, np.nan, b.dtype.numpy) for b in lowered.outputs}
    got = interpret_lowered(lowered, {**feeds, **garbage})
    np.testing.assert_array_equal(got[1], expected[1])
    assert not got[1][:, :, :2].any()
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5)


# ---------------------------------------------------------------- Dropout (training)

def dropout(x: np.ndarray, ratio: Any, training: Any, seed: int | None = 0) -> list[np.ndarray]:
    attrs = {} if seed is None else {"seed": seed}
    graph, feeds = single_node(Op.DROPOUT, [x, ratio, training], attrs, outputs=2)
    got = interpret_lowered(lower_graph(graph), feeds)
    expected = reference.run(graph, feeds)
    for have, want in zip(got, expected, strict=True):
        assert have.dtype == want.dtype and have.shape == want.shape
    return got


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_dropout_training_constant_ratio(dtype: Any) -> None:
    x = np.random.default_rng(4).standard_normal((20, 20)).astype(dtype)
    out, mask = dropout(x, ("const", np.float32(0.3)), ("const", np.array(True)), seed=7)
    assert 0.6 < mask.mean() < 0.8
    scale = dtype(1.0 - np.float64(np.float32(0.3)))
    np.testing.assert_array_equal(out, x * mask / scale)
    again, mask_again = dropout(x, ("const", np.float32(0.3)), ("const", np.array(True)), seed=7)
    np.testing.assert_array_equal(mask_again, mask)
    np.testing.assert_array_equal(again, out)
    _, other = dropout(x, ("const", np.float32(0.3)), ("const", np.array(True)), seed=8)
    assert (other != mask).any()


def test_dropout_training_default_ratio_and_run_time_flags() -> None:
    x = np.random.default_rng(5).standard_normal((16, 16)).astype(np.float32)
    out, mask = dropout(x, None, ("const", np.array(True)), seed=None)
    assert 0.4 < mask.mean() < 0.6
    np.testing.assert_array_equal(out, x * mask / np.float32(0.5))
    # Training mode and ratio known only at run time.
    out, mask = dropout(x, np.float32(0.25), np.array(True))
    assert 0.65 < mask.mean() < 0.85
    np.testing.assert_array_equal(out, x * mask / np.float32(0.75))
    for ratio, training in ((np.float32(0.25), np.array(False)), (np.float32(0.0),
                                                                   np.array(True))):
        out, mask = dropout(x, ratio, training)
        np.testing.assert_array_equal(out, x)
        assert mask.all()
