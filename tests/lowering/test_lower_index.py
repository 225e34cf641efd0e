"""Lowerings of the index ops, run by the kernel-IR interpreter against the reference executor:
gathers and scatters (negative indices, every reduction, duplicate indices in order), OneHot,
TopK (ties, NaN, both directions), TensorScatter, the static-shape selections (Compress with a
constant condition, NonZero of a constant), the run-time ``Report`` of out-of-range indices
(and that the guarded kernel stays in bounds), and the errors for what cannot be lowered;
bigger shapes and the run-time failure of an out-of-range index through ``build(graph).run``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from nodegraph import node_graph
from test_lower_movement import check_compiled, check_node, data, i64

from kiln.compiler import build
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.op import Op
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph
from kiln.runtime import KilnRuntimeError

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

RNG = np.random.default_rng(11)


def indices(high: int, *shape: int, dtype: Any = np.int64) -> np.ndarray:
    """Indices in [-high, high): negative ones included."""
    return RNG.integers(-high, high, shape).astype(dtype)


def assert_reports(op: Op, inputs: list[np.ndarray | None], attrs: dict[str, Any] | None,
                   pattern: str) -> None:
    graph, feeds = node_graph(op, inputs, attrs)
    with pytest.raises(KilnError, match=pattern):
        interpret_lowered(lower_graph(graph), feeds)


# ------------------------------------------------------------------------------ gathers

@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_gather(axis: int, dtype: Any) -> None:
    x = data(3, 4, 5)
    check_node(Op.GATHER, [x, indices(x.shape[axis], 2, 3, dtype=dtype)], {"axis": axis})


def test_gather_scalar_index_and_constant_indices() -> None:
    check_node(Op.GATHER, [data(4, 3), np.array(-2, np.int64)], {"axis": 0})
    check_node(Op.GATHER, [data(4, 3), indices(3, 5)], {"axis": 1}, consts=[1])


def test_gather_out_of_range_reports() -> None:
    assert_reports(Op.GATHER, [data(3, 4), i64(0, 3)], {"axis": 0},
                   r"gather.*index is out of range \[-3, 3\)")
    assert_reports(Op.GATHER, [data(3, 4), i64(-5)], {"axis": 1},
                   r"out of range \[-4, 4\)")


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements(axis: int) -> None:
    x = data(3, 4, 2, dtype=np.int16)
    shape = [2, 3, 2]
    shape[axis] = 5
    check_node(Op.GATHER_ELEMENTS, [x, indices(x.shape[axis], *shape, dtype=np.int32)],
               {"axis": axis})


def test_gather_elements_out_of_range_reports() -> None:
    assert_reports(Op.GATHER_ELEMENTS, [data(2, 2), np.array([[0, 2], [1, 0]])], {"axis": 0},
                   r"out of range \[-2, 2\)")


@pytest.mark.parametrize(("data_shape", "index_shape", "batch_dims"), [
    ((3, 4), (2, 2), 0), ((3, 4), (2, 1), 0), ((2, 3, 4), (2, 1), 1), ((2, 3, 4), (2, 5, 2), 1),
    ((2, 2, 3), (4, 3), 0),
])
def test_gather_nd(data_shape: tuple[int, ...], index_shape: tuple[int, ...],
                   batch_dims: int) -> None:
    k = index_shape[-1]
    columns = [indices(data_shape[batch_dims + j], *index_shape[:-1]) for j in range(k)]
    check_node(Op.GATHER_ND, [data(*data_shape), np.stack(columns, axis=-1)],
               {"batch_dims": batch_dims})


def test_gather_nd_out_of_range_reports() -> None:
    assert_reports(Op.GATHER_ND, [data(3, 4), np.array([[1, 4]])], None,
                   r"index \(position 1\) is out of range \[-4, 4\)")


# ----------------------------------------------------------------------------- scatters

REDUCTIONS = ["none", "add", "mul", "max", "min"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("axis", [0, 1])
def test_scatter_elements(reduction: str, axis: int) -> None:
    x = data(3, 4)
    # Duplicates along the axis: the reference applies them in order.
    where = np.array([[0, -3, 1, 0], [0, 2, 2, 1]]) if axis == 0 else np.array(
        [[0, 0, -1], [3, 1, 3], [2, 2, 2]])
    check_node(Op.SCATTER_ELEMENTS, [x, where, data(*where.shape)],
               {"axis": axis, "reduction": reduction})


def test_scatter_elements_bool_and_ints() -> None:
    where = np.array([[1, 1, 0]])
    for reduction in REDUCTIONS:
        check_node(Op.SCATTER_ELEMENTS, [data(2, 3, dtype=np.bool_), where,
                                         data(1, 3, dtype=np.bool_)], {"reduction": reduction})
        check_node(Op.SCATTER_ELEMENTS, [data(2, 3, dtype=np.int8), where,
                                         data(1, 3, dtype=np.int8)], {"reduction": reduction})


def test_scatter_elements_nan_max() -> None:
    x = np.array([[1.0, np.nan, 3.0]], np.float32)
    check_node(Op.SCATTER_ELEMENTS, [x, np.array([[1, 0, 1]]), np.array(
        [[np.nan, 5.0, 2.0]], np.float32)], {"axis": 1, "reduction": "max"})


def test_scatter_elements_out_of_range_reports() -> None:
    assert_reports(Op.SCATTER_ELEMENTS, [data(2, 2), np.array([[0, -3]]), data(1, 2)], None,
                   r"scatter_elements.*out of range \[-2, 2\)")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_scatter_nd(reduction: str) -> None:
    x = data(4, 3, 2)
    where = np.array([[[0, 1], [-1, 2]], [[0, 1], [3, 0]]])  # duplicate tuple (0, 1)
    check_node(Op.SCATTER_ND, [x, where, data(2, 2, 2)], {"reduction": reduction})
    check_node(Op.SCATTER_ND, [x, np.array([[1], [1], [-4]]), data(3, 3, 2)],
               {"reduction": reduction})


def test_scatter_nd_out_of_range_reports() -> None:
    assert_reports(Op.SCATTER_ND, [data(4, 3), np.array([[4]]), data(1, 3)], None,
                   r"out of range \[-4, 4\)")


@pytest.mark.parametrize("mode", ["linear", "circular"])
@pytest.mark.parametrize("axis", [1, -2, 2])
def test_tensor_scatter(mode: str, axis: int) -> None:
    cache = data(2, 5, 3) if axis != 2 else data(2, 3, 5)
    update = data(2, 2, 3) if axis != 2 else data(2, 3, 2)
    starts = i64(3, 0) if mode == "linear" else i64(4, 7)
    check_node(Op.TENSOR_SCATTER, [cache, update, starts], {"mode": mode, "axis": axis})
    check_node(Op.TENSOR_SCATTER, [cache, update], {"mode": mode, "axis": axis})


def test_tensor_scatter_overrun_reports() -> None:
    assert_reports(Op.TENSOR_SCATTER, [data(2, 5, 3), data(2, 2, 3), i64(4, 0)],
                   {"axis": 1}, r"overruns the cache extent 5")


# ------------------------------------------------------------------------------ OneHot

@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("index_dtype", [np.int64, np.int32, np.float32])
def test_one_hot(axis: int, index_dtype: Any) -> None:
    where = np.array([[0, -1, 3], [7, -8, 2]]).astype(index_dtype)  # 7 and -8 are off
    check_node(Op.ONE_HOT, [where, np.array(5, np.int64), np.array([2, 9], np.int32)],
               {"axis": axis}, consts=[1])


# -------------------------------------------------------------------------------- TopK

@pytest.mark.parametrize("largest", [0, 1])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_topk(largest: int, axis: int) -> None:
    x = RNG.integers(0, 4, (4, 5, 3)).astype(np.float32)  # many ties
    x[1, 2, 0] = np.nan
    x[2, 0, 1] = np.nan
    x[2, 3, 1] = np.nan
    k = 2 if axis == -1 else 3
    check_node(Op.TOPK, [x, i64(k)], {"axis": axis, "largest": largest}, consts=[1],
               outputs=2)


@pytest.mark.parametrize("k", [0, 1, 6])
def test_topk_ints_and_k(k: int) -> None:
    x = RNG.integers(-3, 3, (2, 6)).astype(np.int32)
    check_node(Op.TOPK, [x, i64(k)], {"largest": 0, "sorted": 0}, consts=[1], outputs=2)


# ------------------------------------------------------------------ static selections

@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_compress_with_constant_condition(axis: int | None) -> None:
    x = data(3, 4)
    condition = np.array([True, False, True] if axis == 0 else [False, True, True, False, True]
                         if axis is None else [True, False, False, True])
    attrs = None if axis is None else {"axis": axis}
    check_node(Op.COMPRESS, [x, condition], attrs, consts=[1])


def test_nonzero_of_constant() -> None:
    check_node(Op.NONZERO, [np.array([[0, 1.5, 0], [np.nan, 0, -2]], np.float32)], consts=[0])
    check_node(Op.NONZERO, [np.array([[True, False]])], consts=[0])


# ------------------------------------------------------------------------- compiled path

def test_compiled_gathers_and_scatters() -> None:
    table = data(500, 130)
    check_compiled(Op.GATHER, [table, indices(500, 40, 9)], {"axis": 0})
    check_compiled(Op.GATHER, [data(30, 400, 6), indices(400, 50, dtype=np.int32)],
                   {"axis": 1})
    check_compiled(Op.GATHER_ELEMENTS, [data(60, 700), indices(60, 50, 700)], {"axis": 0})
    check_compiled(Op.GATHER_ND, [data(4, 50, 60, 30), np.stack(
        [indices(50, 4, 70), indices(60, 4, 70)], axis=-1)], {"batch_dims": 1})
    check_compiled(Op.SCATTER_ELEMENTS, [data(50, 700), indices(700, 50, 600), data(50, 600)],
                   {"axis": 1, "reduction": "add"})
    check_compiled(Op.SCATTER_ND, [data(40, 30, 50), indices(40, 100, 1), data(100, 30, 50)],
                   {"reduction": "max"})
    check_compiled(Op.TENSOR_SCATTER, [data(3, 400, 64), data(3, 100, 64), i64(350, 0, 7)],
                   {"axis": 1, "mode": "circular"})


def test_compiled_one_hot_topk() -> None:
    check_compiled(Op.ONE_HOT, [indices(300, 40, 50), np.array(300, np.int64),
                                np.array([0, 1], np.float32)], {"axis": 1}, consts=[1])
    x = RNG.integers(0, 50, (200, 300)).astype(np.float32)
    check_compiled(Op.TOPK, [x, i64(7)], {"axis": 1}, consts=[1], outputs=2)
    check_compiled(Op.TOPK, [x, i64(20)], {"axis": 0, "largest": 0}, consts=[1], outputs=2)


def test_compiled_out_of_range_index_fails_the_run() -> None:
    graph, feeds = node_graph(Op.GATHER, [data(64, 700), i64(3, 64, 1)], {"axis": 0})
    executable = build(graph, threads=2)
    with pytest.raises(KilnRuntimeError, match=r"index is out of range \[-64, 64\)"):
        executable.run(feeds)
    # The instance stays usable after a reported failure.
    good = {**feeds, "in1": i64(3, -64, 1)}
    np.testing.assert_array_equal(executable.run(good)[0], feeds["in0"][[3, 0, 1]])
