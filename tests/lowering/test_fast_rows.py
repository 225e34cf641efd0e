"""Row kernels with lane folds (compiler/lower/ops/rows.py): Softmax / LogSoftmax, the
normalizations, Reduce* over axes that include the last one and the global pools, compiled
(and some interpreted) against the reference executor, over row lengths around the vector
widths (1, tails of every size, one and two vectors of lanes, long rows), NaN in the rows, and
the fused forms (prologue recomputed where the row is read, epilogue after the row)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from nodegraph import node_graph
from test_lower_elementwise import assert_matches

from kiln.compiler import build, reference
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import TensorType
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph
from kiln.compiler.lower.ops.rows import lane_count, rows_of
from kiln.compiler.machine import Machine

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# Row lengths around 8 / 16 lanes (AVX2 / AVX-512 f32) and their multiples, with tails.
LENGTHS = [1, 7, 8, 15, 16, 17, 31, 32, 33, 64, 100, 257, 1000]


def data(shape: Sequence[int], dtype: type = np.float32, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 3).astype(dtype)


def compiled(op: Op, inputs: Sequence[np.ndarray], attrs: Mapping[str, Any] | None = None,
             consts: Sequence[int] = (), outputs: int = 1, interpret: bool = False) -> None:
    """Build (and with ``interpret`` also interpret) one node; compare with the reference."""
    graph, feeds = node_graph(op, inputs, attrs, consts, outputs)
    expected = reference.run(graph, feeds)
    runs = [build(graph, threads=2).run(feeds)]
    if interpret:
        runs.append(interpret_lowered(lower_graph(graph), feeds))
    for actual in runs:
        for got, want in zip(actual, expected, strict=True):
            assert_matches(np.asarray(got), np.asarray(want))


def test_lane_count_grows_with_the_row() -> None:
    wide = Machine(vector_bits=512)
    assert [lane_count(wide, n) for n in (1, 31, 32, 255, 256)] == [1, 1, 16, 16, 32]
    assert lane_count(Machine(vector_bits=64), 1000) == 1


def test_rows_block_count_is_bounded() -> None:
    rows = rows_of([3, 1000], work=1 << 30)
    assert rows.blocks * rows.size >= 3000 and rows.blocks <= 256
    assert rows_of([3, 1000], work=10).blocks == 1


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("op", [Op.SOFTMAX, Op.LOG_SOFTMAX], ids=lambda op: op.value)
def test_softmax_rows(op: Op, length: int) -> None:
    compiled(op, [data((3, 5, length))], {"axis": -1})


@pytest.mark.parametrize("dtype", [np.float16, np.float64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("op", [Op.SOFTMAX, Op.LOG_SOFTMAX], ids=lambda op: op.value)
def test_softmax_rows_other_types(op: Op, dtype: type) -> None:
    compiled(op, [data((4, 70), dtype)], {"axis": -1}, interpret=True)


def test_softmax_rows_with_nan_and_infinities() -> None:
    x = data((4, 40))
    x[0, 37] = np.nan  # in the tail of a 32-lane fold
    x[1, 3] = np.inf
    x[2, :] = -np.inf
    compiled(Op.SOFTMAX, [x], {"axis": -1}, interpret=True)


def test_softmax_many_rows_in_parallel_blocks() -> None:
    compiled(Op.SOFTMAX, [data((2, 12, 33, 65))], {"axis": 3})


def test_fused_prologue_and_epilogue_around_softmax() -> None:
    """scores / 8 + mask -> Softmax -> * 2: the prologue is recomputed in each pass over the
    row and the epilogue follows it (fused at -O2)."""
    b = GraphBuilder()
    scores = b.add_input("scores", TensorType.of(data((2, 3, 17, 77))))
    mask = b.constant(data((1, 1, 1, 77), seed=1))
    shifted = b.add1(Op.ADD, [b.add1(Op.DIV, [scores, b.constant(np.float32(8.0))]), mask])
    probs = b.add1(Op.SOFTMAX, [shifted], {"axis": -1})
    graph = b.finish([b.add1(Op.MUL, [probs, b.constant(np.float32(2.0))])])
    feeds = {"scores": data((2, 3, 17, 77))}
    for level in (0, 2):
        got = build(graph, opt_level=level, threads=2).run(feeds)
        assert_matches(got[0], reference.run(graph, feeds)[0])


@pytest.mark.parametrize("length", [5, 16, 100, 768, 1025])
def test_layer_norm_rows(length: int) -> None:
    x = data((2, 9, length))
    compiled(Op.LAYER_NORMALIZATION, [x, data((length,), seed=1), data((length,), seed=2)],
             {"axis": -1}, consts=[1, 2], outputs=3)


def test_layer_norm_over_two_axes_without_bias() -> None:
    x = data((3, 6, 37))
    compiled(Op.LAYER_NORMALIZATION, [x, data((6, 37), seed=1)], {"axis": 1}, consts=[1],
             interpret=True)


@pytest.mark.parametrize("length", [7, 64, 333])
def test_rms_norm_rows(length: int) -> None:
    compiled(Op.RMS_NORMALIZATION, [data((4, length)), data((length,), seed=1)], {"axis": -1},
             consts=[1])


def test_group_and_instance_norm_rows() -> None:
    x = data((2, 8, 7, 9))
    scale, bias = data((8,), seed=1), data((8,), seed=2)
    compiled(Op.GROUP_NORMALIZATION, [x, scale, bias], {"num_groups": 4}, consts=[1, 2])
    compiled(Op.INSTANCE_NORMALIZATION, [x, scale, bias], consts=[1, 2], interpret=True)


def test_mean_variance_normalization_rows() -> None:
    compiled(Op.MEAN_VARIANCE_NORMALIZATION, [data((2, 3, 5, 41))], {"axes": [0, 2, 3]})


REDUCERS = [Op.REDUCE_SUM, Op.REDUCE_MEAN, Op.REDUCE_MAX, Op.REDUCE_MIN, Op.REDUCE_PROD,
            Op.REDUCE_L1, Op.REDUCE_L2, Op.REDUCE_SUM_SQUARE, Op.REDUCE_LOG_SUM_EXP]


@pytest.mark.parametrize("axes", [[-1], [1, 2], [0, 2]], ids=str)
@pytest.mark.parametrize("op", REDUCERS, ids=lambda op: op.value)
def test_reduce_lanes(op: Op, axes: list[int]) -> None:
    x = data((3, 4, 45))
    if op is Op.REDUCE_PROD:  # a product of 45+ normal values over- or underflows
        x = (1 + x / 100).astype(np.float32)
    for keepdims in (0, 1):
        compiled(op, [x, np.array(axes, np.int64)], {"keepdims": keepdims}, consts=[1])


def test_reduce_lanes_integers_and_nan() -> None:
    ints = np.random.default_rng(0).integers(-50, 50, (5, 70)).astype(np.int32)
    compiled(Op.REDUCE_SUM, [ints, np.array([-1], np.int64)], consts=[1])
    x = data((5, 70))
    x[1, 69] = np.nan
    x[2, 0] = np.nan
    compiled(Op.REDUCE_MAX, [x, np.array([-1], np.int64)], consts=[1], interpret=True)


@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (1, 5, 13, 17), (1, 2, 40)], ids=str)
@pytest.mark.parametrize("op", [Op.GLOBAL_AVERAGE_POOL, Op.GLOBAL_MAX_POOL, Op.GLOBAL_LP_POOL],
                         ids=lambda op: op.value)
def test_global_pool_rows(op: Op, shape: tuple[int, ...]) -> None:
    attrs = {"p": 3} if op is Op.GLOBAL_LP_POOL else {}
    compiled(op, [data(shape)], attrs)
