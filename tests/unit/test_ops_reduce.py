"""Reduce ops: Reduce*, ArgMax/ArgMin, Softmax family, CumSum/CumProd, LpNormalization;
type rules (constant and non-constant axes, symbolic dims) and kernels against onnxruntime,
torch and numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ops_elementwise import assert_close, float_data, infer, run_op, run_ort

from kiln.compiler.errors import ExecutionError, TypeInferenceError
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import UNKNOWN, DType, TensorType

REDUCE_OPS = [Op.REDUCE_L1, Op.REDUCE_L2, Op.REDUCE_LOG_SUM, Op.REDUCE_LOG_SUM_EXP,
              Op.REDUCE_MAX, Op.REDUCE_MEAN, Op.REDUCE_MIN, Op.REDUCE_PROD, Op.REDUCE_SUM,
              Op.REDUCE_SUM_SQUARE]

# Independent numpy definitions (float64), reducing over a tuple of axes with keepdims.
EXPECTED = {
    Op.REDUCE_L1: lambda x, ax: np.sum(np.abs(x), axis=ax, keepdims=True),
    Op.REDUCE_L2: lambda x, ax: np.sqrt(np.sum(x * x, axis=ax, keepdims=True)),
    Op.REDUCE_LOG_SUM: lambda x, ax: np.log(np.sum(x, axis=ax, keepdims=True)),
    Op.REDUCE_LOG_SUM_EXP: lambda x, ax: np.log(np.sum(np.exp(x), axis=ax, keepdims=True)),
    Op.REDUCE_MAX: lambda x, ax: np.max(x, axis=ax, keepdims=True, initial=-np.inf),
    Op.REDUCE_MEAN: lambda x, ax: np.sum(x, axis=ax, keepdims=True) / np.prod(
        [x.shape[a] for a in ax]),
    Op.REDUCE_MIN: lambda x, ax: np.min(x, axis=ax, keepdims=True, initial=np.inf),
    Op.REDUCE_PROD: lambda x, ax: np.prod(x, axis=ax, keepdims=True),
    Op.REDUCE_SUM: lambda x, ax: np.sum(x, axis=ax, keepdims=True),
    Op.REDUCE_SUM_SQUARE: lambda x, ax: np.sum(x * x, axis=ax, keepdims=True),
}


@st.composite
def reduction(draw: st.DrawFn) -> tuple:
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=4)))
    axes = draw(st.lists(st.integers(-len(shape), len(shape) - 1), unique_by=lambda a: a %
                         max(len(shape), 1), max_size=len(shape)) if shape else st.just([]))
    return shape, axes, draw(st.booleans()), draw(st.booleans()), draw(st.booleans())


@settings(max_examples=60, deadline=None)
@given(case=reduction(), op=st.sampled_from(REDUCE_OPS), seed=st.integers(0, 1000))
def test_reduce_matches_numpy(case: tuple, op: Op, seed: int) -> None:
    shape, axes, keepdims, noop, const_axes = case
    x = (np.random.default_rng(seed).random(shape) * 2 + 0.1).astype(np.float32)
    axes_array = np.array(axes, np.int64)
    attrs = {"keepdims": int(keepdims), "noop_with_empty_axes": int(noop)}
    got = run_op(op, [x, axes_array], attrs, consts=[1] if const_axes else [])[0]
    chosen = tuple(a % len(shape) for a in axes) if axes else (
        () if noop else tuple(range(len(shape))))
    with np.errstate(all="ignore"):
        expected = EXPECTED[op](x.astype(np.float64), chosen)
    if not keepdims:
        expected = np.squeeze(expected, axis=chosen)
    assert_close(got, expected.astype(np.float32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_reduce_matches_onnxruntime(op: Op, dtype: type) -> None:
    if np.dtype(dtype).kind == "i" and op in (Op.REDUCE_LOG_SUM, Op.REDUCE_LOG_SUM_EXP):
        pytest.skip("ONNX defines ReduceLogSum(Exp) on floats only")
    x = (np.random.default_rng(7).random((3, 4, 5)) * 4 - 1).astype(dtype)
    if op is Op.REDUCE_LOG_SUM:
        x = np.abs(x)
    for axes, keepdims in [([1], 1), ([0, -1], 0), ([], 0)]:
        inputs = [x, np.array(axes, np.int64)]
        attrs = {"keepdims": keepdims}
        assert_close(run_op(op, inputs, attrs, consts=[1])[0],
                     run_ort(op, inputs, attrs, opset=18)[0], rtol=1e-5)


def test_reduce_without_axes_input_and_noop() -> None:
    x = float_data(np.dtype(np.float32), seed=2)
    finite = np.nan_to_num(x, posinf=9.0, neginf=-9.0)
    assert_close(run_op(Op.REDUCE_SUM, [finite])[0], np.sum(finite, keepdims=True))
    noop = {"noop_with_empty_axes": 1, "keepdims": 0}
    assert_close(run_op(Op.REDUCE_SUM_SQUARE, [finite], noop)[0], finite * finite)
    assert_close(run_op(Op.REDUCE_L1, [finite, np.zeros(0, np.int64)], noop, consts=[1])[0],
                 np.abs(finite))
    assert_close(run_op(Op.REDUCE_MAX, [x], noop)[0], x)


@pytest.mark.parametrize(("op", "value"), [
    (Op.REDUCE_SUM, 0.0), (Op.REDUCE_PROD, 1.0), (Op.REDUCE_MAX, -np.inf),
    (Op.REDUCE_MIN, np.inf), (Op.REDUCE_LOG_SUM, -np.inf), (Op.REDUCE_LOG_SUM_EXP, -np.inf),
    (Op.REDUCE_L1, 0.0), (Op.REDUCE_L2, 0.0), (Op.REDUCE_SUM_SQUARE, 0.0),
    (Op.REDUCE_MEAN, np.nan),
])
def test_empty_set_reductions(op: Op, value: float) -> None:
    x = np.zeros((2, 0, 4), np.float32)
    got = run_op(op, [x, np.array([1], np.int64)], consts=[1])[0]
    assert_close(got, np.full((2, 1, 4), value, np.float32))


def test_empty_set_integer_and_bool_extremes() -> None:
    axes = np.array([0], np.int64)
    got = run_op(Op.REDUCE_MAX, [np.zeros((0, 2), np.int32), axes], consts=[1])[0]
    np.testing.assert_array_equal(got, np.full((1, 2), np.iinfo(np.int32).min))
    got = run_op(Op.REDUCE_MIN, [np.zeros((0, 2), np.uint8), axes], consts=[1])[0]
    np.testing.assert_array_equal(got, np.full((1, 2), 255))
    got = run_op(Op.REDUCE_MAX, [np.zeros((0, 2), bool), axes], consts=[1])[0]
    np.testing.assert_array_equal(got, np.zeros((1, 2), bool))


def test_reduce_nan_and_inf() -> None:
    x = np.array([[1.0, np.nan, 3.0], [np.inf, 1.0, -np.inf], [-np.inf, -np.inf, 0.0]])
    axes = np.array([1], np.int64)
    got = run_op(Op.REDUCE_MAX, [x, axes], {"keepdims": 0}, consts=[1])[0]
    np.testing.assert_array_equal(got, [np.nan, np.inf, 0.0])
    got = run_op(Op.REDUCE_LOG_SUM_EXP, [x, axes], {"keepdims": 0}, consts=[1])[0]
    np.testing.assert_array_equal(got, [np.nan, np.inf, 0.0])
    big = np.array([[1000.0, 1000.0], [-np.inf, -np.inf]])
    got = run_op(Op.REDUCE_LOG_SUM_EXP, [big, axes], {"keepdims": 0}, consts=[1])[0]
    np.testing.assert_allclose(got, [1000.0 + np.log(2.0), -np.inf])


def test_half_precision_reductions_accumulate_in_float32() -> None:
    x = np.full((4096,), 0.1, np.float16)
    got = run_op(Op.REDUCE_SUM, [x])[0]
    assert got.dtype == np.float16
    assert got[0] == np.float16(np.sum(x.astype(np.float32)))


# ---------------------------------------------------------------------------------------------
# ArgMax / ArgMin

@pytest.mark.parametrize("op", [Op.ARGMAX, Op.ARGMIN])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("last", [0, 1])
def test_arg_reduce_matches_onnxruntime(op: Op, axis: int, keepdims: int, last: int) -> None:
    # Few distinct values, so that ties (and select_last_index) matter.
    x = np.random.default_rng(8).integers(0, 3, (3, 4, 5)).astype(np.float32)
    attrs = {"axis": axis, "keepdims": keepdims, "select_last_index": last}
    got = run_op(op, [x], attrs)[0]
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, run_ort(op, [x], attrs)[0])


def test_arg_reduce_of_empty_axis_fails() -> None:
    with pytest.raises(ExecutionError, match="empty axis 1"):
        run_op(Op.ARGMAX, [np.zeros((2, 0), np.float32)], {"axis": 1})
    assert run_op(Op.ARGMIN, [np.zeros((0, 3), np.int8)], {"axis": 1})[0].shape == (0, 1)


# ---------------------------------------------------------------------------------------------
# Softmax family, LpNormalization

@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_family_matches_torch(axis: int, dtype: type) -> None:
    x = (np.random.default_rng(9).normal(size=(3, 4, 5)) * 5).astype(dtype)
    t = torch.from_numpy(x)
    assert_close(run_op(Op.SOFTMAX, [x], {"axis": axis})[0], torch.softmax(t, axis).numpy())
    assert_close(run_op(Op.LOG_SOFTMAX, [x], {"axis": axis})[0],
                 torch.log_softmax(t, axis).numpy(), atol=1e-5)
    one_hot = torch.nn.functional.one_hot(t.argmax(axis), x.shape[axis]).movedim(-1, axis)
    assert_close(run_op(Op.HARDMAX, [x], {"axis": axis})[0], one_hot.numpy().astype(dtype))


def test_softmax_extremes_and_hardmax_ties() -> None:
    x = np.array([[1000.0, 0.0, -np.inf], [-np.inf, -np.inf, 1.0]], np.float32)
    np.testing.assert_allclose(run_op(Op.SOFTMAX, [x])[0], [[1, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(run_op(Op.LOG_SOFTMAX, [x])[0][1], [-np.inf, -np.inf, 0])
    ties = np.array([[2.0, 5.0, 5.0]], np.float32)
    np.testing.assert_array_equal(run_op(Op.HARDMAX, [ties])[0], [[0, 1, 0]])
    assert run_op(Op.SOFTMAX, [np.zeros((0, 3), np.float32)])[0].shape == (0, 3)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [0, -1])
def test_lp_normalization_matches_torch(p: int, axis: int) -> None:
    x = np.random.default_rng(10).normal(size=(4, 6)).astype(np.float32)
    x[1] = 0.0
    x[:, 2] = 0.0
    expected = torch.nn.functional.normalize(torch.from_numpy(x), p=p, dim=axis).numpy()
    assert_close(run_op(Op.LP_NORMALIZATION, [x], {"p": p, "axis": axis})[0], expected)


# ---------------------------------------------------------------------------------------------
# CumSum / CumProd

def _scan_reference(x: np.ndarray, axis: int, product: bool, exclusive: bool,
                    reverse: bool) -> np.ndarray:
    """Running sum/product with a Python loop over the axis (an independent formulation)."""
    moved = np.moveaxis(x, axis, 0)
    order = range(moved.shape[0] - 1, -1, -1) if reverse else range(moved.shape[0])
    out = np.empty_like(moved)
    acc = (np.ones if product else np.zeros)(moved.shape[1:], x.dtype)
    for i in order:
        if exclusive:
            out[i] = acc
        acc = acc * moved[i] if product else acc + moved[i]
        if not exclusive:
            out[i] = acc
    return np.moveaxis(out, 0, axis)


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 4), min_size=1, max_size=3), data=st.data(),
       op=st.sampled_from([Op.CUMSUM, Op.CUMPROD]), exclusive=st.booleans(),
       reverse=st.booleans(), dtype=st.sampled_from([np.float32, np.int32, np.int64]))
def test_scan_matches_loop(shape: list, data: st.DataObject, op: Op, exclusive: bool,
                           reverse: bool, dtype: type) -> None:
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = np.random.default_rng(len(shape)).integers(-3, 4, shape).astype(dtype)
    attrs = {"exclusive": int(exclusive), "reverse": int(reverse)}
    got = run_op(op, [x, np.array(axis, np.int32)], attrs)[0]
    expected = _scan_reference(x, axis % len(shape), op is Op.CUMPROD, exclusive, reverse)
    assert_close(got, expected)


def test_cumsum_matches_onnxruntime() -> None:
    x = np.random.default_rng(11).normal(size=(3, 5)).astype(np.float64)
    for attrs in ({}, {"exclusive": 1}, {"reverse": 1}, {"exclusive": 1, "reverse": 1}):
        inputs = [x, np.array(1, np.int64)]
        assert_close(run_op(Op.CUMSUM, inputs, attrs)[0], run_ort(Op.CUMSUM, inputs, attrs)[0],
                     rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Type rules

F32 = DType.F32
AXES = TensorType(DType.I64, (2,))


def test_reduce_rules() -> None:
    x = TensorType(F32, ("n", 3, 4))
    assert infer(Op.REDUCE_SUM, [x]).shape == (1, 1, 1)
    assert infer(Op.REDUCE_SUM, [x], {"keepdims": 0}).shape == ()
    assert infer(Op.REDUCE_MEAN, [x, AXES], {"keepdims": 0},
                 {1: np.array([0, -1])}).shape == (3,)
    assert infer(Op.REDUCE_MAX, [x, AXES], {}, {1: np.array([2, 1])}).shape == ("n", 1, 1)
    assert infer(Op.REDUCE_L2, [x], {"noop_with_empty_axes": 1}).shape == ("n", 3, 4)
    assert infer(Op.REDUCE_MIN, [TensorType(DType.BOOL, (2,))]).dtype is DType.BOOL


def test_reduce_rules_with_runtime_axes() -> None:
    x = TensorType(F32, ("n", 1, 4))
    assert infer(Op.REDUCE_SUM, [x, AXES]).shape == (UNKNOWN, 1, UNKNOWN)
    # The rank is known from the static length of the axes input, the extents are not.
    assert infer(Op.REDUCE_SUM, [x, AXES], {"keepdims": 0}).shape == (UNKNOWN,)
    empty = TensorType(DType.I64, (0,))
    assert infer(Op.REDUCE_SUM, [x, empty], {"keepdims": 0}).shape == ()
    with pytest.raises(TypeInferenceError, match="reduce_sum: with keepdims=0 the axes input "
                       "must be a compile-time constant or have a static length"):
        infer(Op.REDUCE_SUM, [x, TensorType(DType.I64, ("k",))], {"keepdims": 0})


def test_other_reduce_rules() -> None:
    x = TensorType(DType.F16, ("b", 5, 7))
    assert infer(Op.ARGMAX, [x], {"axis": -1}) == TensorType(DType.I64, ("b", 5, 1))
    assert infer(Op.ARGMIN, [x], {"axis": 0, "keepdims": 0}) == TensorType(DType.I64, (5, 7))
    assert infer(Op.SOFTMAX, [x]) == x
    assert infer(Op.LP_NORMALIZATION, [x], {"p": 1, "axis": 1}) == x
    assert infer(Op.CUMSUM, [TensorType(DType.I32, ("b",)), TensorType(DType.I32, ())]) == (
        TensorType(DType.I32, ("b",)))


@pytest.mark.parametrize(("op", "types", "attrs", "consts", "message"), [
    (Op.REDUCE_SUM, [TensorType(F32, (2, 3)), AXES], {}, {1: np.array([0, 2])},
     "reduce_sum: axes entry 2 is out of range for rank 2"),
    (Op.REDUCE_SUM, [TensorType(F32, (2, 3)), AXES], {}, {1: np.array([1, -1])},
     "reduce_sum: repeated axes entry in [1, -1]"),
    (Op.REDUCE_LOG_SUM, [TensorType(DType.I32, (2,))], {}, {},
     "reduce_log_sum: input 0 has element type i32; expected one of bf16, f16, f32, f64"),
    (Op.REDUCE_SUM, [TensorType(DType.I8, (2,))], {}, {}, "reduce_sum: input 0 has element type"),
    (Op.REDUCE_SUM, [TensorType(F32, (2,)), TensorType(DType.I32, (1,))], {}, {},
     "reduce_sum: input 1 has element type i32; expected one of i64"),
    (Op.ARGMAX, [TensorType(F32, (2, 3))], {"axis": 2}, {},
     "argmax: axis 2 is out of range for rank 2"),
    (Op.SOFTMAX, [TensorType(DType.I32, (2, 3))], {}, {}, "softmax: input 0 has element type"),
    (Op.SOFTMAX, [TensorType(F32, ())], {}, {}, "softmax: axis -1 is out of range for rank 0"),
    (Op.LP_NORMALIZATION, [TensorType(F32, (2, 3))], {"p": 3}, {},
     "lp_normalization: attribute 'p' is 3; only 1 and 2 are supported"),
    (Op.CUMSUM, [TensorType(F32, (2, 3)), TensorType(DType.I64, (2,))], {}, {},
     "cumsum: axis must be a scalar, got i64[2]"),
    (Op.CUMPROD, [TensorType(F32, (2, 3)), TensorType(DType.I64, ())], {}, {1: np.array(-3)},
     "cumprod: axis -3 is out of range for rank 2"),
])
def test_rule_errors(op: Op, types: list, attrs: dict, consts: dict, message: str) -> None:
    with pytest.raises(TypeInferenceError) as error:
        infer(op, types, attrs, consts)
    assert str(error.value).startswith(message), str(error.value)


def test_runtime_axes_out_of_range_fail_at_run_time() -> None:
    with pytest.raises(ExecutionError, match="axis 3 is out of range for rank 2"):
        run_op(Op.REDUCE_SUM, [np.ones((2, 3), np.float32), np.array([3], np.int64)])
    with pytest.raises(ExecutionError, match="repeated entries in axes"):
        run_op(Op.REDUCE_SUM, [np.ones((2, 3), np.float32), np.array([1, -1], np.int64)],
               {"keepdims": 0})
