"""Elementwise ops: type rules and reference kernels against onnxruntime, torch and numpy.

The helpers ``run_op`` (one node through the reference executor) and ``run_ort`` (the same node
through onnxruntime) are shared with test_ops_reduce.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from kiln.compiler import reference
from kiln.compiler.errors import KilnError, TypeInferenceError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import UNKNOWN, DType, TensorType
from kiln.frontends.onnx.mapping import DTYPE_TO_ONNX

ORT_OPSET = 22  # the newest opset this onnxruntime runs for every op tested against it
_ONNX_NAMES = {s.name.lower(): s.name for s in onnx.defs.get_all_schemas() if s.domain == ""}
BF16 = np.dtype(ml_dtypes.bfloat16)
ORT_ERRORS = ort.capi.onnxruntime_pybind11_state


def run_op(
    op: Op,
    inputs: Sequence[np.ndarray | None],
    attrs: Mapping[str, Any] | None = None,
    *,
    consts: Sequence[int] = (),
    outputs: int = 1,
) -> list[np.ndarray]:
    """Run one ``op`` node in the reference executor; inputs listed in ``consts`` are constants."""
    builder = GraphBuilder(fold=False)
    values = []
    feeds = {}
    for index, array in enumerate(inputs):
        if array is None:
            values.append(None)
        elif index in consts:
            values.append(builder.constant(array))
        else:
            name = f"in{index}"
            values.append(builder.add_input(name, TensorType.of(array)))
            feeds[name] = array
    results = builder.add(op, values, attrs, outputs=outputs)
    return reference.run(builder.finish([r for r in results if r is not None]), feeds)


def infer(op: Op, types: Sequence[TensorType], attrs: Mapping[str, Any] | None = None,
          consts: Mapping[int, np.ndarray] | None = None) -> TensorType:
    """The output type of ``op`` on inputs of ``types`` (those in ``consts`` are constants)."""
    builder = GraphBuilder(fold=False)
    values = [
        builder.constant(consts[i]) if consts and i in consts else builder.add_input(f"in{i}", t)
        for i, t in enumerate(types)
    ]
    return builder.add1(op, values, attrs).type


def run_ort(
    op: Op, inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any] | None = None,
    opset: int = ORT_OPSET,
) -> list[np.ndarray]:
    """Run the ONNX operator of the same name in onnxruntime."""
    names = [("" if a is None else f"in{i}") for i, a in enumerate(inputs)]
    graph_inputs = [
        helper.make_tensor_value_info(n, DTYPE_TO_ONNX[DType.from_numpy(a.dtype)], a.shape)
        for n, a in zip(names, inputs, strict=True) if a is not None
    ]
    onnx_attrs = {k: DTYPE_TO_ONNX[v] if isinstance(v, DType) else v
                  for k, v in (attrs or {}).items()}
    node = helper.make_node(_ONNX_NAMES[op.value.replace("_", "")], names, ["out"], **onnx_attrs)
    graph = helper.make_graph(
        [node], "g", graph_inputs, [helper.make_value_info("out", onnx.TypeProto())]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {n: a for n, a in zip(names, inputs, strict=True) if a is not None}
    return session.run(None, feeds)


def ort_or_skip(op: Op, inputs: Sequence[np.ndarray], attrs: Mapping[str, Any] | None = None,
                ) -> np.ndarray:
    """onnxruntime's result, skipping the test where it has no kernel for these types."""
    try:
        return run_ort(op, inputs, attrs)[0]
    except ORT_ERRORS.NotImplemented:
        pytest.skip(f"onnxruntime has no {op.value} kernel for {[a.dtype for a in inputs]}")


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = 1e-6,
                 atol: float = 1e-6) -> None:
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                               rtol=rtol, atol=atol, equal_nan=True)


SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 0.5, -0.5, 1.0, -1.0, 1e-7, 30.0, -30.0])


def float_data(dtype: np.dtype, shape: tuple[int, ...] = (4, 7), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.normal(0, 3, size=shape).reshape(-1)
    data[: min(len(SPECIALS), data.size)] = SPECIALS[: data.size]
    return data.reshape(shape).astype(dtype)


# ---------------------------------------------------------------------------------------------
# Unary ops

FLOAT_UNARY_ORT = [
    (Op.ABS, {}), (Op.ACOS, {}), (Op.ACOSH, {}), (Op.ASIN, {}), (Op.ASINH, {}), (Op.ATAN, {}),
    (Op.ATANH, {}), (Op.CEIL, {}), (Op.COS, {}), (Op.COSH, {}), (Op.ERF, {}), (Op.EXP, {}),
    (Op.FLOOR, {}), (Op.LOG, {}), (Op.NEG, {}), (Op.RECIPROCAL, {}), (Op.RELU, {}),
    (Op.ROUND, {}), (Op.SIGMOID, {}), (Op.SIGN, {}), (Op.SIN, {}), (Op.SINH, {}), (Op.SQRT, {}),
    (Op.TAN, {}), (Op.TANH, {}), (Op.SOFTPLUS, {}), (Op.SOFTSIGN, {}), (Op.MISH, {}),
    (Op.GELU, {}), (Op.GELU, {"approximate": "tanh"}), (Op.ELU, {}), (Op.ELU, {"alpha": 0.3}),
    (Op.SELU, {}), (Op.CELU, {"alpha": 2.0}), (Op.LEAKY_RELU, {}),
    (Op.HARD_SIGMOID, {"alpha": 0.3, "beta": 0.4}), (Op.HARD_SWISH, {}),
    (Op.THRESHOLDED_RELU, {"alpha": 0.7}), (Op.SHRINK, {"lambd": 1.0, "bias": 0.25}),
    (Op.IDENTITY, {}), (Op.IS_NAN, {}), (Op.IS_INF, {}), (Op.IS_INF, {"detect_negative": 0}),
    (Op.IS_INF, {"detect_positive": 0}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("op", "attrs"), FLOAT_UNARY_ORT,
                         ids=[f"{o.value}{a}" for o, a in FLOAT_UNARY_ORT])
def test_float_unary_matches_onnxruntime(op: Op, attrs: dict, dtype: type) -> None:
    # float32-representable data, so that onnxruntime's float32 kernels can judge float64 too
    # (it has float64 kernels for only some of these ops).
    x = float_data(np.dtype(np.float32)).astype(dtype)
    try:
        expected = run_ort(op, [x], attrs)[0]
    except (ORT_ERRORS.NotImplemented, ORT_ERRORS.InvalidGraph):
        expected = run_ort(op, [x.astype(np.float32)], attrs)[0]
        expected = expected.astype(dtype if expected.dtype.kind == "f" else expected.dtype)
    # onnxruntime's float32 kernels are vectorized approximations (a few ulp), and some
    # (Gelu-tanh, Elu near 0) lose a few more ulp to cancellation than the reference does.
    assert_close(run_op(op, [x], attrs)[0], expected, rtol=3e-6, atol=5e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_swish_matches_torch_silu(dtype: type) -> None:
    x = float_data(np.dtype(dtype))
    expected = torch.nn.functional.silu(torch.from_numpy(x)).numpy()
    assert_close(run_op(Op.SWISH, [x])[0], expected)
    scaled = run_op(Op.SWISH, [x], {"alpha": 0.5})[0]
    t = torch.from_numpy(x)
    assert_close(scaled, (t * torch.sigmoid(t * 0.5)).numpy())


def test_erf_is_accurate_to_float64() -> None:
    x = np.linspace(-8, 8, 4001)
    expected = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(run_op(Op.ERF, [x])[0], expected, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("dtype", [np.float16, BF16])
@pytest.mark.parametrize("op", [Op.EXP, Op.TANH, Op.GELU, Op.SIGMOID, Op.SOFTPLUS, Op.ERF])
def test_narrow_floats_compute_in_float32_and_round_once(op: Op, dtype: np.dtype) -> None:
    x = float_data(np.dtype(dtype), seed=3)
    with np.errstate(over="ignore"):  # exp(30) is out of float16's range: inf is expected
        expected = run_op(op, [x.astype(np.float32)])[0].astype(dtype)
    got = run_op(op, [x])[0]
    assert got.dtype == expected.dtype
    # numpy's testing does not know bfloat16 NaNs; compare their float32 images.
    np.testing.assert_array_equal(got.astype(np.float32), expected.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64])
@pytest.mark.parametrize("op", [Op.ABS, Op.SIGN, Op.NEG, Op.RELU, Op.BITWISE_NOT, Op.SHRINK])
def test_integer_unary_matches_onnxruntime(op: Op, dtype: type) -> None:
    if np.dtype(dtype).kind == "u" and op in (Op.NEG, Op.RELU):
        pytest.skip("ONNX defines Neg and Relu on signed types only")
    info = np.iinfo(dtype)
    x = np.random.default_rng(1).integers(max(info.min, -100), min(info.max, 100), (3, 5),
                                          dtype=dtype)
    attrs = {"lambd": 1.5, "bias": 0.5} if op is Op.SHRINK else {}
    np.testing.assert_array_equal(run_op(op, [x], attrs)[0], ort_or_skip(op, [x], attrs))


def test_not_and_zero_size() -> None:
    x = np.array([[True, False, True]])
    np.testing.assert_array_equal(run_op(Op.NOT, [x])[0], ~x)
    empty = np.zeros((0, 3), np.float32)
    assert run_op(Op.EXP, [empty])[0].shape == (0, 3)


CASTS = [
    (np.float32, DType.I32, [1.9, -1.9, 0.0, 100.5]),
    (np.float32, DType.BOOL, [0.0, -0.0, 0.1, np.nan]),
    (np.int32, DType.I8, [200, -200, 127, 1000]),
    (np.int64, DType.F16, [1, 70000, -3, 2049]),
    (np.bool_, DType.F32, [True, False, True, True]),
    (np.float64, DType.U8, [0.0, 1.5, 255.0, 17.9]),
]


@pytest.mark.parametrize(("source", "to", "values"), CASTS)
def test_cast_matches_onnxruntime(source: type, to: DType, values: list) -> None:
    x = np.array(values, dtype=source)
    got = run_op(Op.CAST, [x], {"to": to})[0]
    assert got.dtype == to.numpy
    np.testing.assert_array_equal(got, run_ort(Op.CAST, [x], {"to": to})[0].astype(to.numpy))


def test_cast_to_bfloat16_rounds_to_nearest_even() -> None:
    x = np.array([1.0, 3.14159, -1e30, np.inf, 1.00390625, 1.01171875], np.float32)
    got = run_op(Op.CAST, [x], {"to": DType.BF16})[0]
    assert got.dtype == BF16
    np.testing.assert_array_equal(got.astype(np.float32),
                                  torch.from_numpy(x).bfloat16().float().numpy())


# ---------------------------------------------------------------------------------------------
# Binary, variadic and ternary ops

DTYPES = [np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, np.uint32]


@st.composite
def broadcast_pair(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two shapes that broadcast (including zero-size and rank-0 ones)."""
    out = draw(st.lists(st.integers(0, 4), min_size=0, max_size=4))
    shapes = []
    for _ in range(2):
        rank = draw(st.integers(0, len(out)))
        tail = out[len(out) - rank:]
        shapes.append(tuple(d if draw(st.booleans()) else 1 for d in tail))
    return shapes[0], shapes[1]


def random_data(dtype: type, shape: tuple[int, ...], rng: np.random.Generator,
                nonzero: bool = False) -> np.ndarray:
    kind = np.dtype(dtype).kind
    if kind == "f":
        data = rng.normal(0, 4, shape)
    elif kind == "b":
        return rng.random(shape) < 0.5
    else:
        low = 0 if kind == "u" else -50
        data = rng.integers(low, 50, shape)
    if nonzero:
        data = np.where(data == 0, 3, data)
    return data.astype(dtype)


ARITH = [Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.EQUAL, Op.GREATER, Op.LESS, Op.GREATER_OR_EQUAL,
         Op.LESS_OR_EQUAL, Op.MAX, Op.MIN]


@settings(max_examples=40, deadline=None)
@given(shapes=broadcast_pair(), op=st.sampled_from(ARITH), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 1000))
def test_broadcast_arithmetic_matches_onnxruntime(shapes: tuple, op: Op, dtype: type,
                                                  seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = random_data(dtype, shapes[0], rng)
    b = random_data(dtype, shapes[1], rng, nonzero=op is Op.DIV)
    got = run_op(op, [a, b])[0]
    assert got.shape == np.broadcast_shapes(a.shape, b.shape)
    if got.size:
        assert_close(got, run_ort(op, [a, b])[0])


@settings(max_examples=25, deadline=None)
@given(shapes=broadcast_pair(), op=st.sampled_from(
    [Op.BITWISE_AND, Op.BITWISE_OR, Op.BITWISE_XOR, Op.AND, Op.OR, Op.XOR]),
    dtype=st.sampled_from([np.int8, np.int64, np.uint16]), seed=st.integers(0, 1000))
def test_bitwise_and_logical_ops(shapes: tuple, op: Op, dtype: type, seed: int) -> None:
    rng = np.random.default_rng(seed)
    if op in (Op.AND, Op.OR, Op.XOR):
        dtype = np.bool_
    a, b = random_data(dtype, shapes[0], rng), random_data(dtype, shapes[1], rng)
    expected = {Op.BITWISE_AND: np.bitwise_and, Op.BITWISE_OR: np.bitwise_or,
                Op.BITWISE_XOR: np.bitwise_xor, Op.AND: np.logical_and, Op.OR: np.logical_or,
                Op.XOR: np.logical_xor}[op](a, b)
    np.testing.assert_array_equal(run_op(op, [a, b])[0], expected)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
def test_integer_division_truncates_toward_zero(dtype: type) -> None:
    a = np.array([-7, 7, -7, 7, -6, 0, 5], dtype)
    b = np.array([2, 2, -2, -2, 3, -4, 7], dtype)
    expected = torch.div(torch.from_numpy(a), torch.from_numpy(b), rounding_mode="trunc")
    np.testing.assert_array_equal(run_op(Op.DIV, [a, b])[0], expected.numpy())


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64])
def test_mod_signs(dtype: type) -> None:
    a = np.array([-7, 7, -7, 7, 5, -5, 0], dtype)
    b = np.array([3, 3, -3, -3, 5, 2, -4], dtype)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    np.testing.assert_array_equal(run_op(Op.MOD, [a, b])[0], torch.remainder(ta, tb).numpy())
    np.testing.assert_array_equal(run_op(Op.MOD, [a, b], {"fmod": 1})[0],
                                  torch.fmod(ta, tb).numpy())


def test_float_mod_special_cases() -> None:
    a = np.array([0.0, -0.0, np.inf, 1.0, 2.0, -2.0, np.nan], np.float64)
    b = np.array([-3.0, 3.0, 2.0, 0.0, np.inf, np.inf, 1.0], np.float64)
    got = run_op(Op.MOD, [a, b])[0]
    expected = np.array([-0.0, 0.0, np.nan, np.nan, 2.0, np.inf, np.nan])
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.signbit(got[:2]), [True, False])


@pytest.mark.parametrize(("base", "exponent"), [
    (np.float32, np.float32), (np.float32, np.int64), (np.int32, np.int32),
    (np.int64, np.float32), (np.float64, np.int8), (np.int32, np.uint8),
])
def test_pow_mixed_types_matches_onnxruntime(base: type, exponent: type) -> None:
    rng = np.random.default_rng(5)
    x = random_data(base, (3, 4), rng) % 9
    y = (np.abs(random_data(exponent, (4,), rng)) % 4).astype(exponent)
    got = run_op(Op.POW, [x, y])[0]
    assert got.dtype == np.dtype(base)
    assert_close(got, ort_or_skip(Op.POW, [x, y]), rtol=1e-6)


def test_integer_pow_negative_exponent() -> None:
    x = np.array([2, -1, 1, -2, 3], np.int64)
    y = np.array([-1, -3, -2, 2, 0], np.int64)
    np.testing.assert_array_equal(run_op(Op.POW, [x, y])[0], [0, -1, 1, 4, 1])


def test_bit_shift() -> None:
    x = np.array([16, 4, 1], np.uint8)
    y = np.array([1, 2, 3], np.uint8)
    np.testing.assert_array_equal(run_op(Op.BIT_SHIFT, [x, y], {"direction": "RIGHT"})[0],
                                  [8, 1, 0])
    np.testing.assert_array_equal(run_op(Op.BIT_SHIFT, [x, y], {"direction": "LEFT"})[0],
                                  [32, 16, 8])


def test_variadic_ops_broadcast_and_propagate_nan() -> None:
    a = np.array([[1.0, np.nan, 3.0]], np.float32)
    b = np.array([[2.0], [0.0]], np.float32)
    c = np.array(5.0, np.float32)
    mx, mn = run_op(Op.MAX, [a, b])[0], run_op(Op.MIN, [a, b])[0]
    np.testing.assert_array_equal(mx, [[2.0, np.nan, 3.0], [1.0, np.nan, 3.0]])
    np.testing.assert_array_equal(mn, [[1.0, np.nan, 2.0], [0.0, np.nan, 0.0]])
    assert_close(run_op(Op.SUM, [a, b, c])[0], a + b + c)
    assert_close(run_op(Op.MEAN, [a, b, c])[0], (a + b + c) / 3)
    assert_close(run_op(Op.MAX, [a])[0], a)


def test_variadic_matches_onnxruntime_for_three_inputs() -> None:
    rng = np.random.default_rng(2)
    xs = [rng.normal(size=s).astype(np.float32) for s in [(2, 1, 4), (3, 1), (4,)]]
    for op in (Op.MAX, Op.MIN, Op.SUM, Op.MEAN):
        assert_close(run_op(op, xs)[0], run_ort(op, xs)[0])


def test_where_broadcasts_three_ways() -> None:
    rng = np.random.default_rng(3)
    cond = rng.random((2, 1, 3)) < 0.5
    x = rng.normal(size=(4, 1)).astype(np.float64)
    y = np.array(7.0)
    np.testing.assert_array_equal(run_op(Op.WHERE, [cond, x, y])[0], np.where(cond, x, y))


@pytest.mark.parametrize(("low", "high"), [(-1.0, 1.0), (None, 0.5), (0.2, None), (None, None),
                                           (2.0, 1.0)])
def test_clip_matches_onnxruntime(low: float | None, high: float | None) -> None:
    x = float_data(np.dtype(np.float32))
    bounds = [None if v is None else np.array(v, np.float32) for v in (low, high)]
    got = run_op(Op.CLIP, [x, *bounds])[0]
    # An absent bound clips nothing, infinities included (onnxruntime clamps those to the
    # largest finite floats, the ONNX reference does not).
    assert_close(got, np.minimum(np.maximum(x, -np.inf if low is None else low),
                                 np.inf if high is None else high).astype(np.float32))
    finite = np.nan_to_num(x, posinf=1e9, neginf=-1e9)
    assert_close(run_op(Op.CLIP, [finite, *bounds])[0], run_ort(Op.CLIP, [finite, *bounds])[0])


def test_clip_integers() -> None:
    x = np.arange(-5, 6, dtype=np.int16)
    got = run_op(Op.CLIP, [x, np.array(-2, np.int16), np.array(3, np.int16)])[0]
    np.testing.assert_array_equal(got, np.clip(x, -2, 3))


@pytest.mark.parametrize(("x_shape", "slope_shape"), [((2, 3, 4), (1,)), ((2, 3, 4), (4,)),
                                                      ((2, 3, 4), (3, 1)), ((2, 3), (2, 3))])
def test_prelu_matches_torch(x_shape: tuple, slope_shape: tuple) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=x_shape).astype(np.float32)
    slope = rng.normal(size=slope_shape).astype(np.float32)
    expected = torch.where(torch.from_numpy(x) < 0, torch.from_numpy(x) * torch.from_numpy(slope),
                           torch.from_numpy(x)).numpy()
    assert_close(run_op(Op.PRELU, [x, slope])[0], expected)
    assert_close(run_op(Op.PRELU, [x, slope])[0], run_ort(Op.PRELU, [x, slope])[0])


@pytest.mark.parametrize("alpha", [1.0, 1.702])
def test_swiglu_matches_torch(alpha: float) -> None:
    rng = np.random.default_rng(6)
    a, b = (rng.normal(size=(3, 8)).astype(np.float32) for _ in range(2))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    expected = (ta * torch.sigmoid(alpha * ta) * tb).numpy()
    assert_close(run_op(Op.SWIGLU, [a, b], {"alpha": alpha})[0], expected, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Type rules

F32 = DType.F32


def test_rules_keep_symbolic_dims() -> None:
    assert infer(Op.ADD, [TensorType(F32, ("n", 1, 3)), TensorType(F32, (4, 1))]).shape == (
        "n", 4, 3)
    assert infer(Op.EQUAL, [TensorType(F32, ("n",)), TensorType(F32, ("m",))]) == TensorType(
        DType.BOOL, (UNKNOWN,))
    assert infer(Op.SQRT, [TensorType(DType.F16, ("b", 2))]) == TensorType(DType.F16, ("b", 2))
    assert infer(Op.IS_NAN, [TensorType(F32, ("b",))]) == TensorType(DType.BOOL, ("b",))
    assert infer(Op.CAST, [TensorType(F32, ("b",))], {"to": DType.I8}).dtype is DType.I8
    assert infer(Op.POW, [TensorType(DType.I32, (2, 1)), TensorType(F32, (3,))]) == TensorType(
        DType.I32, (2, 3))
    assert infer(Op.SWIGLU, [TensorType(F32, ("n", 4)), TensorType(F32, (2, "k"))]).shape == (
        2, 4)
    assert infer(Op.WHERE, [TensorType(DType.BOOL, ("n", 1)), TensorType(F32, (3,)),
                            TensorType(F32, ())]).shape == ("n", 3)


@pytest.mark.parametrize(("op", "types", "attrs", "message"), [
    (Op.SQRT, [TensorType(DType.I32, (2,))], {},
     "sqrt: input 0 has element type i32; expected one of bf16, f16, f32, f64"),
    (Op.BITWISE_AND, [TensorType(F32, (2,))] * 2, {}, "bitwise_and: input 0 has element type f32"),
    (Op.NOT, [TensorType(F32, (2,))], {},
     "not: input 0 has element type f32; expected one of bool"),
    (Op.ADD, [TensorType(F32, (2,)), TensorType(DType.F64, (2,))], {},
     "add: input 1 has element type f64 but input 0 has f32; they must match"),
    (Op.MUL, [TensorType(F32, (2, 3)), TensorType(F32, (4,))], {},
     "mul: shapes [2,3] and [4] do not broadcast"),
    (Op.BIT_SHIFT, [TensorType(DType.U8, (2,))] * 2, {"direction": "UP"},
     "bit_shift: attribute 'direction' is 'UP'; expected one of ['LEFT', 'RIGHT']"),
    (Op.GELU, [TensorType(F32, (2,))], {"approximate": "erf"},
     "gelu: attribute 'approximate' is 'erf'; expected one of ['none', 'tanh']"),
    (Op.MOD, [TensorType(F32, (2,))] * 2, {"fmod": 2},
     "mod: attribute 'fmod' is 2; expected one of [0, 1]"),
    (Op.PRELU, [TensorType(F32, (2, 3)), TensorType(F32, (2,))], {},
     "prelu: slope shape [2] does not broadcast to X shape [2,3]"),
    (Op.SWIGLU, [TensorType(F32, (2, 3)), TensorType(F32, (3,))], {},
     "swiglu: A [2,3] and B [3] must have the same shape"),
    (Op.WHERE, [TensorType(DType.I8, (2,)), TensorType(F32, (2,)), TensorType(F32, (2,))], {},
     "where: input 0 has element type i8"),
    (Op.CLIP, [TensorType(F32, (2,)), TensorType(F32, (2,))], {},
     "clip: bound min must be a scalar, got f32[2]"),
    (Op.POW, [TensorType(DType.U8, (2,)), TensorType(F32, (2,))], {},
     "pow: input 0 has element type u8"),
    (Op.SUM, [TensorType(DType.I32, (2,))] * 2, {}, "sum: input 0 has element type i32"),
])
def test_rule_errors(op: Op, types: list, attrs: dict, message: str) -> None:
    with pytest.raises(TypeInferenceError) as error:
        infer(op, types, attrs)
    assert str(error.value).startswith(message), str(error.value)


def test_cast_requires_to() -> None:
    with pytest.raises(KilnError, match="required attribute 'to' is missing"):
        infer(Op.CAST, [TensorType(F32, (2,))])
