"""Lowerings of the reduce ops, run by the kernel-IR interpreter against the reference executor:
Reduce* over axis sets, keepdims and noop, empty reductions, NaN; ArgMax/ArgMin with ties and
NaN; Softmax/LogSoftmax/Hardmax, LpNormalization, CumSum/CumProd; the errors for axes known
only at run time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_lower_elementwise import (
    BF16,
    FLOATS,
    check_compiled,
    check_node,
    dims,
    float_data,
    int_data,
    lowered_loops,
    node_graph,
)

from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.op import Group, Op
from kiln.compiler.ir.schema import ops_in
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import lower_graph
from kiln.compiler.lower.kernel_ir import Block, Loop, LoopKind, Stmt
from kiln.compiler.lower.registry import LoweringError, lowering_for

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

SUM_LIKE = [Op.REDUCE_SUM, Op.REDUCE_SUM_SQUARE, Op.REDUCE_L1, Op.REDUCE_L2, Op.REDUCE_MEAN,
            Op.REDUCE_PROD, Op.REDUCE_MAX, Op.REDUCE_MIN]
FLOAT_ONLY = [Op.REDUCE_LOG_SUM, Op.REDUCE_LOG_SUM_EXP]
AXES = [None, [1], [0, 2], [-1], [2, 0, 1], []]


def reduce_input(op: Op, dtype: np.dtype, shape: tuple[int, ...] = (2, 3, 4)) -> np.ndarray:
    if dtype.kind in "iu":
        return int_data(dtype, shape, low=-3 if op is Op.REDUCE_PROD else -50, high=3
                        if op is Op.REDUCE_PROD else 50)
    if op is Op.REDUCE_LOG_SUM:
        return float_data(dtype, shape, low=0.1, high=4.0, specials=False)
    return float_data(dtype, shape, specials=False)


def check_reduce(op: Op, data: np.ndarray, axes: list[int] | None, attrs: dict[str, Any]) -> None:
    if axes is None:
        check_node(op, [data], attrs)
    else:
        check_node(op, [data, np.array(axes, np.int64)], attrs, consts=[1])


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", AXES, ids=str)
@pytest.mark.parametrize("op", SUM_LIKE + FLOAT_ONLY, ids=lambda op: op.value)
def test_reduce(op: Op, axes: list[int] | None, keepdims: int) -> None:
    dtypes = FLOATS if op in FLOAT_ONLY else FLOATS + [np.dtype(t) for t in (
        np.int32, np.int64, np.uint32, np.uint64)]
    for dtype in dtypes:
        data = reduce_input(op, dtype)
        if dtype.kind == "u" and op is not Op.REDUCE_PROD:
            data = np.abs(data.astype(np.int64)).astype(dtype)
        check_reduce(op, data, axes, {"keepdims": keepdims})


@pytest.mark.parametrize("op", SUM_LIKE + FLOAT_ONLY, ids=lambda op: op.value)
def test_reduce_noop_with_empty_axes(op: Op) -> None:
    data = reduce_input(op, np.dtype(np.float32))
    check_reduce(op, data, [], {"noop_with_empty_axes": 1})
    check_reduce(op, data, None, {"noop_with_empty_axes": 1})


@pytest.mark.parametrize("op", SUM_LIKE + FLOAT_ONLY, ids=lambda op: op.value)
def test_empty_reductions_give_identities(op: Op) -> None:
    for dtype in (np.float32, np.float16, np.int64):
        if op in FLOAT_ONLY and dtype == np.int64:
            continue
        if op is Op.REDUCE_MEAN and dtype == np.int64:
            continue  # numpy converts the NaN mean to an undefined integer
        data = np.zeros((2, 0, 3), dtype)
        for axes in ([1], [0], None):
            check_reduce(op, data, axes, {"keepdims": 1})
            check_reduce(op, data, axes, {"keepdims": 0})


@pytest.mark.parametrize("op", [Op.REDUCE_MAX, Op.REDUCE_MIN], ids=lambda op: op.value)
def test_reduce_max_min_small_types_and_nan(op: Op) -> None:
    for dtype in (np.int8, np.uint8):
        check_reduce(op, int_data(np.dtype(dtype), (3, 5), low=-128, high=255), [1], {})
    check_reduce(op, np.random.default_rng(0).integers(0, 2, (3, 5)).astype(bool), [0], {})
    for dtype in FLOATS:
        check_reduce(op, float_data(dtype, (3, 5)), [1], {})  # NaN and +-inf in row 0


def test_reduce_log_sum_exp_infinities() -> None:
    rows = np.array([[-np.inf, -np.inf], [np.inf, 1.0], [np.inf, -np.inf], [np.nan, 0.0],
                     [1000.0, 1000.0], [-1000.0, -1001.0]], np.float32)
    check_reduce(Op.REDUCE_LOG_SUM_EXP, rows, [1], {})


def test_run_time_axes_reducing_everything() -> None:
    """Axes fed at run time are fine where the static output shape settles the result."""
    for op in (Op.REDUCE_SUM, Op.REDUCE_L2, Op.REDUCE_MAX):
        data = float_data(np.dtype(np.float32), (5,), specials=False)
        check_node(op, [data, np.array([0])], {"keepdims": 0})
        check_node(op, [data[:1].reshape(1, 1, 1), np.array([0, 2])], {"keepdims": 1})


ARG_CASES = [(axis, keepdims, last) for axis in (0, 1, -1) for keepdims in (0, 1)
             for last in (0, 1)]


@pytest.mark.parametrize(("axis", "keepdims", "last"), ARG_CASES, ids=str)
@pytest.mark.parametrize("op", [Op.ARGMAX, Op.ARGMIN], ids=lambda op: op.value)
def test_arg_reduce(op: Op, axis: int, keepdims: int, last: int) -> None:
    """Ties (small integers) pick the first or last index; NaN counts as the extreme."""
    attrs = {"axis": axis, "keepdims": keepdims, "select_last_index": last}
    for dtype in (np.int32, np.uint8, np.int64):
        check_node(op, [int_data(np.dtype(dtype), (3, 4, 5), low=0, high=3)], attrs)
    for dtype in FLOATS:
        data = float_data(dtype, (3, 4, 5), specials=False).round()
        data.reshape(-1)[[0, 7, 9, 23, 24, 40]] = [np.nan, np.nan, np.inf, -np.inf, np.nan, 0]
        check_node(op, [data], attrs)


def test_arg_reduce_of_an_empty_axis_is_an_error() -> None:
    builder = GraphBuilder(fold=False)
    x = builder.add_input("x", TensorType(DType.F32, (2, 0)))
    graph = builder.finish([builder.add1(Op.ARGMAX, [x], {"axis": 1}, name="am")])
    with pytest.raises(LoweringError, match="empty axis 1"):
        lower_graph(graph)


# Softmax sums of float16 along a strided axis: numpy adds rows in float16, the lowering in
# float32, so they differ by an ulp of the (order 1) sum, which LogSoftmax passes on absolutely.
NARROW_SUMS = {np.dtype(np.float16): (2e-3, 2e-3), BF16: (1.6e-2, 1.6e-2)}


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("op", [Op.SOFTMAX, Op.LOG_SOFTMAX, Op.HARDMAX],
                         ids=lambda op: op.value)
def test_softmax_family(op: Op, axis: int) -> None:
    for dtype in FLOATS:
        data = float_data(dtype, (3, 4, 5), specials=False)
        data[0, 0, :] = -np.inf  # an all -inf slice (NaN, as in the reference)
        data[1, :, 1] = 3.0  # ties for Hardmax
        data[2, 1, :] = [1e4, -1e4, 0.0, 1e4, 5.0]  # needs the max shift
        check_node(op, [data], {"axis": axis}, tolerance=NARROW_SUMS)
    if op is Op.HARDMAX:  # the reference's Softmax refuses empty slices
        check_node(op, [np.zeros((2, 0, 3), np.float32)], {"axis": axis})


def test_softmax_narrow_types_round_each_step() -> None:
    """float16 sums accumulate in float32 and bfloat16 ones in bfloat16, as numpy's do."""
    for dtype in (np.dtype(np.float16), BF16):
        data = float_data(dtype, (2, 40), seed=3, specials=False)
        check_node(Op.SOFTMAX, [data], {"axis": 1})
        check_node(Op.LOG_SOFTMAX, [data], {"axis": 1})


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [0, -1])
def test_lp_normalization(p: int, axis: int) -> None:
    for dtype in FLOATS:
        data = float_data(dtype, (3, 4), specials=False)
        data[:, 0] = 0.0
        data[0, :] = 0.0  # zero norms give zeros
        check_node(Op.LP_NORMALIZATION, [data], {"axis": axis, "p": p})


SCAN_FLAGS = [{"exclusive": e, "reverse": r} for e in (0, 1) for r in (0, 1)]


@pytest.mark.parametrize("flags", SCAN_FLAGS, ids=str)
@pytest.mark.parametrize("op", [Op.CUMSUM, Op.CUMPROD], ids=lambda op: op.value)
def test_scan(op: Op, flags: dict[str, int]) -> None:
    for axis in (0, 1, -1):
        for dtype in (np.float32, np.float16, np.float64, BF16):
            data = float_data(np.dtype(dtype), (3, 4, 5), specials=False) / 3
            check_node(op, [data, np.array(axis, np.int64)], flags, consts=[1])
        for dtype in (np.int32, np.int64, np.uint64):
            data = int_data(np.dtype(dtype), (3, 4, 5), low=1, high=9)
            check_node(op, [data, np.array([axis], np.int32)], flags, consts=[1])


def test_every_reduce_op_has_a_lowering() -> None:
    missing = [op.value for op in ops_in(Group.REDUCE) if lowering_for(op) is None]
    assert not missing


def test_schedule_large_reduction_is_parallel_over_the_output() -> None:
    nest = lowered_loops(Op.SOFTMAX, [(256, 512)])
    assert nest[0].kind is LoopKind.PARALLEL
    small = lowered_loops(Op.SOFTMAX, [(4, 8)])
    assert small[0].kind is LoopKind.SERIAL


def loop_kinds(stmt: Stmt) -> list[LoopKind]:
    """Kinds of every loop in ``stmt``, in pre-order."""
    if isinstance(stmt, Loop):
        return [stmt.kind, *loop_kinds(stmt.body)]
    if isinstance(stmt, Block):
        return [kind for inner in stmt.body for kind in loop_kinds(inner)]
    return []


def test_schedule_reduction_keeping_the_last_axis_vectorizes_rows() -> None:
    """Reducing axis 1 of [64, 32, 512] accumulates rows of the last axis: every innermost
    loop is over it and vectorized; the outer loop is parallel."""
    graph, _ = node_graph(Op.REDUCE_MEAN, [np.zeros((64, 32, 512), np.float16), np.array([1])],
                          None, consts=[1])
    (kernel,) = lower_graph(graph).steps[0].kernels
    kinds = loop_kinds(kernel.body)
    assert kinds[0] is LoopKind.PARALLEL
    assert kinds.count(LoopKind.VECTORIZE) == 3  # init, accumulate, final (float16 scratch)


# ---------------------------------------------------------------------------------------------
# Through native code (kiln.compiler.build): parallel slices, row accumulation, random shapes.

# Sequential float32 sums of up to thousands of terms vs numpy's pairwise ones.
LONG_SUMS = {np.dtype(np.float32): (1e-4, 1e-5)}


@pytest.mark.parametrize("op", SUM_LIKE + FLOAT_ONLY, ids=lambda op: op.value)
def test_compiled_reductions_at_scale(op: Op) -> None:
    for dtype in (np.dtype(np.float32), np.dtype(np.float16)):
        data = reduce_input(op, dtype, (64, 32, 40))
        if op is Op.REDUCE_PROD:
            data = (1 + data / 100).astype(dtype)
        for axes in ([2], [0], [1], [0, 2], None):
            inputs = [data] if axes is None else [data, np.array(axes)]
            check_compiled(op, inputs, {"keepdims": 0},
                           consts=[1], tolerance=LONG_SUMS)


@pytest.mark.parametrize("op", [Op.SOFTMAX, Op.LOG_SOFTMAX, Op.HARDMAX, Op.ARGMAX, Op.ARGMIN,
                                Op.LP_NORMALIZATION], ids=lambda op: op.value)
def test_compiled_along_axis_at_scale(op: Op) -> None:
    data = float_data(np.dtype(np.float32), (128, 300), specials=False)
    for axis in (0, 1):
        check_compiled(op, [data], {"axis": axis}, tolerance=LONG_SUMS, threads=3)


def test_compiled_scans_at_scale() -> None:
    data = float_data(np.dtype(np.float32), (64, 700), specials=False)
    for op in (Op.CUMSUM, Op.CUMPROD):
        for axis in (0, 1):
            check_compiled(op, [1 + data / 1000 if op is Op.CUMPROD else data,
                                np.array([axis])], {"reverse": 1}, consts=[1],
                           tolerance=LONG_SUMS)


@settings(max_examples=25, deadline=None)
@given(shape=dims(), op=st.sampled_from([Op.REDUCE_SUM, Op.REDUCE_MAX, Op.REDUCE_MEAN,
                                         Op.REDUCE_L2, Op.REDUCE_LOG_SUM_EXP]),
       keepdims=st.integers(0, 1), data=st.data())
def test_compiled_random_reductions(shape: tuple[int, ...], op: Op, keepdims: int,
                                    data: st.DataObject) -> None:
    axes = data.draw(st.lists(st.integers(-len(shape), len(shape) - 1), unique_by=lambda a:
                              a % len(shape), max_size=len(shape)) if shape else st.just([]))
    dtype = data.draw(st.sampled_from([np.dtype(np.float32), np.dtype(np.float16)]))
    x = float_data(dtype, shape, specials=False)
    check_compiled(op, [x, np.array(axes, np.int64)], {"keepdims": keepdims}, consts=[1])
