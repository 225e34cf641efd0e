"""The model summary (kiln.compiler.analysis.summary): counts and FLOP estimates, each checked
against the formula worked out by hand for a small graph."""

from __future__ import annotations

import numpy as np

from kiln.compiler.analysis import format_summary, summarize
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType


def _f32(*shape: int | str) -> TensorType:
    return TensorType(DType.F32, tuple(shape))


def _weights(*shape: int) -> np.ndarray:
    return np.ones(shape, np.float32)


def test_conv_gemm_pool_and_parameters() -> None:
    b = GraphBuilder()
    x = b.add_input("x", _f32("batch", 3, 8, 8))
    w, bias = b.constant(_weights(4, 3, 3, 3)), b.constant(_weights(4))
    y = b.add1(Op.CONV, [x, w, bias], {"pads": [1, 1, 1, 1]})
    y = b.add1(Op.RELU, [y])
    y = b.add1(Op.MAX_POOL, [y], {"kernel_shape": [2, 2], "strides": [2, 2]})
    y = b.add1(Op.FLATTEN, [y])
    fc = b.constant(_weights(5, 64))
    y = b.add1(Op.GEMM, [y, fc], {"transB": 1})
    summary = summarize(b.finish([y]), {"batch": 2})

    conv = 2 * (2 * 4 * 8 * 8) * (3 * 3 * 3) + 2 * 4 * 8 * 8  # MACs x2, plus the bias add
    assert summary.flops_by_kind == {
        "conv": conv,
        "matmul": 2 * 2 * 5 * 64,
        "elementwise": 2 * 4 * 8 * 8,  # relu
        "pooling": 2 * 4 * 4 * 4 * 4,  # out elements x window size
    }
    assert summary.parameter_count == 4 * 27 + 4 + 5 * 64
    assert summary.parameter_bytes == 4 * summary.parameter_count
    assert summary.op_counts == {"constant": 3, "conv": 1, "flatten": 1, "gemm": 1,
                                 "max_pool": 1, "relu": 1}
    assert summary.assumed_dims == {}
    assert summary.inputs == (("x", _f32("batch", 3, 8, 8)),)


def test_symbols_default_to_one_and_are_reported() -> None:
    b = GraphBuilder()
    x = b.add_input("x", _f32("n", 6))
    summary = summarize(b.finish([b.add1(Op.EXP, [x])]))
    assert summary.flops_by_kind == {"elementwise": 6}
    assert summary.assumed_dims == {"n": 1}
    text = format_summary(summary)
    assert "symbolic dimensions taken as: n=1" in text
    assert "x  f32[n,6]" in text


def test_batched_matmul_and_einsum() -> None:
    b = GraphBuilder()
    a = b.add_input("a", _f32(3, 4, 5))
    c = b.add_input("c", _f32(3, 5, 6))
    m = b.add1(Op.MATMUL, [a, c])
    e = b.add1(Op.EINSUM, [a, c], {"equation": "bij,bjk->bik"})
    summary = summarize(b.finish([m, e]))
    assert summary.flops_by_kind == {"matmul": 2 * (2 * 3 * 4 * 6 * 5)}


def test_lstm_counts_its_gate_matmuls() -> None:
    seq, batch, inp, hidden = 7, 2, 3, 4
    b = GraphBuilder()
    x = b.add_input("x", _f32(seq, batch, inp))
    w = b.constant(_weights(1, 4 * hidden, inp))
    r = b.constant(_weights(1, 4 * hidden, hidden))
    y, _, _ = b.add(Op.LSTM, [x, w, r], {"hidden_size": hidden}, outputs=3)
    assert y is not None
    summary = summarize(b.finish([y]))
    assert summary.flops_by_kind["recurrent"] == 2 * seq * batch * 4 * hidden * (inp + hidden)


def test_data_dependent_shapes_are_not_guessed() -> None:
    b = GraphBuilder()
    x = b.add_input("x", _f32(4))
    indices = b.add1(Op.NONZERO, [x])  # i64[1, ?]
    doubled = b.add1(Op.ADD, [indices, indices])
    summary = summarize(b.finish([doubled]))
    assert summary.unknown_flop_nodes == 1
    assert "1 nodes with data-dependent shapes not counted" in format_summary(summary)
