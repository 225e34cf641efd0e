"""Lowerings of the elementwise ops, run by the kernel-IR interpreter against the reference
executor: every op over several dtypes, broadcasting, NaN/Inf, integer corner cases (division
by zero, INT_MIN / -1, shifts past the width), every Cast pair; plus the loop schedule.

``check_node`` (one node lowered and interpreted vs the reference) and ``assert_matches`` (one
per-dtype tolerance table) are shared with test_lower_reduce.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nodegraph import node_graph

from kiln.compiler import build, reference
from kiln.compiler.ir.op import Group, Op
from kiln.compiler.ir.schema import ops_in
from kiln.compiler.ir.types import DType
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph
from kiln.compiler.lower.kernel_ir import Block, Loop, LoopKind, Stmt
from kiln.compiler.lower.registry import lowering_for

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

BF16 = np.dtype(ml_dtypes.bfloat16)
FLOATS = [np.dtype(np.float16), BF16, np.dtype(np.float32), np.dtype(np.float64)]
# (rtol, atol) per float dtype: a few units in the last place (the interpreter evaluates
# transcendental functions in float64, numpy in the data's type).
TOLERANCE = {
    np.dtype(np.float16): (2e-3, 1e-4),
    BF16: (1.6e-2, 1e-3),
    np.dtype(np.float32): (1e-5, 1e-6),
    np.dtype(np.float64): (1e-12, 1e-13),
}
SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, 0.5, -0.5, 1e-7, -1e-7, 30.0, -30.0, 100.0]


def assert_matches(actual: np.ndarray, expected: np.ndarray,
                   tolerance: Mapping[np.dtype, tuple[float, float]] | None = None) -> None:
    """Same dtype and shape; ints and bools exact, floats per ``tolerance`` (default
    TOLERANCE), NaN equal to NaN."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    tolerance = TOLERANCE if tolerance is None else {**TOLERANCE, **tolerance}
    if expected.dtype in tolerance:
        rtol, atol = tolerance[expected.dtype]
        np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                                   rtol=rtol, atol=atol, equal_nan=True)
    else:
        np.testing.assert_array_equal(actual, expected)




def check_node(op: Op, inputs: Sequence[np.ndarray | None],
               attrs: Mapping[str, Any] | None = None, consts: Sequence[int] = (),
               tolerance: Mapping[np.dtype, tuple[float, float]] | None = None) -> None:
    """Lower one node, interpret it, compare with the reference executor."""
    graph, feeds = node_graph(op, inputs, attrs, consts)
    expected = reference.run(graph, feeds)
    actual = interpret_lowered(lower_graph(graph), feeds)
    for got, want in zip(actual, expected, strict=True):
        assert_matches(got, want, tolerance)


def check_compiled(op: Op, inputs: Sequence[np.ndarray | None],
                   attrs: Mapping[str, Any] | None = None, consts: Sequence[int] = (),
                   tolerance: Mapping[np.dtype, tuple[float, float]] | None = None,
                   threads: int = 2) -> None:
    """Build one node to native code (``kiln.compiler.build``), compare with the reference."""
    graph, feeds = node_graph(op, inputs, attrs, consts)
    expected = reference.run(graph, feeds)
    actual = build(graph, threads=threads).run(feeds)
    for got, want in zip(actual, expected, strict=True):
        assert_matches(got, want, tolerance)


def float_data(dtype: np.dtype, shape: tuple[int, ...] = (3, 8), seed: int = 0,
               low: float | None = None, high: float | None = None,
               specials: bool = True) -> np.ndarray:
    """Normal data (uniform in [low, high] when given), led by SPECIALS when asked."""
    rng = np.random.default_rng(seed)
    if low is None or high is None:
        data = rng.normal(0, 3, size=shape).reshape(-1)
    else:
        data = rng.uniform(low, high, size=shape).reshape(-1)
    if specials:
        count = min(len(SPECIALS), data.size)
        data[:count] = SPECIALS[:count]
    return data.reshape(shape).astype(dtype)


def int_data(dtype: np.dtype, shape: tuple[int, ...] = (3, 8), seed: int = 0,
             low: int = -20, high: int = 20) -> np.ndarray:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    return rng.integers(max(low, info.min), min(high, info.max), size=shape,
                        endpoint=True).astype(dtype)


# Float maps and the input domain each is tested on (None: normal data with specials).
FLOAT_MAPS: list[tuple[Op, dict[str, Any], tuple[float, float] | None]] = [
    (Op.ACOS, {}, (-0.99, 0.99)), (Op.ASIN, {}, (-0.99, 0.99)), (Op.ATANH, {}, (-0.9, 0.9)),
    (Op.ACOSH, {}, (1.0, 9.0)), (Op.LOG, {}, (0.01, 50.0)), (Op.SQRT, {}, (0.0, 50.0)),
    (Op.ASINH, {}, None), (Op.ATAN, {}, None), (Op.COS, {}, (-6.0, 6.0)),
    (Op.SIN, {}, (-6.0, 6.0)), (Op.TAN, {}, (-1.4, 1.4)), (Op.COSH, {}, (-9.0, 9.0)),
    (Op.SINH, {}, (-9.0, 9.0)), (Op.ERF, {}, None), (Op.EXP, {}, None), (Op.TANH, {}, None),
    (Op.SIGMOID, {}, None), (Op.RECIPROCAL, {}, None), (Op.SOFTPLUS, {}, None),
    (Op.SOFTSIGN, {}, None), (Op.MISH, {}, None), (Op.GELU, {}, None),
    (Op.GELU, {"approximate": "tanh"}, None), (Op.ELU, {}, None), (Op.ELU, {"alpha": 0.3}, None),
    (Op.SELU, {}, None), (Op.CELU, {}, None), (Op.CELU, {"alpha": 2.0}, None),
    (Op.LEAKY_RELU, {}, None), (Op.LEAKY_RELU, {"alpha": 0.2}, None),
    (Op.HARD_SIGMOID, {}, None), (Op.HARD_SIGMOID, {"alpha": 0.3, "beta": 0.4}, None),
    (Op.HARD_SWISH, {}, None), (Op.THRESHOLDED_RELU, {"alpha": 0.7}, None),
    (Op.SWISH, {}, None), (Op.SWISH, {"alpha": 1.7}, None), (Op.SHRINK, {}, None),
    (Op.SHRINK, {"lambd": 1.0, "bias": 0.25}, None),
]
EXACT_FLOAT_MAPS = [Op.ABS, Op.NEG, Op.SIGN, Op.RELU, Op.CEIL, Op.FLOOR, Op.ROUND, Op.IDENTITY,
                    Op.IS_NAN]


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize(("op", "attrs", "domain"), FLOAT_MAPS,
                         ids=[f"{op.value}{attrs}" for op, attrs, _ in FLOAT_MAPS])
def test_float_maps(op: Op, attrs: dict[str, Any], domain: tuple[float, float] | None,
                    dtype: np.dtype) -> None:
    if op is Op.SHRINK and dtype == BF16:
        pytest.skip("Shrink admits no bfloat16")
    low, high = domain or (None, None)
    check_node(op, [float_data(dtype, low=low, high=high, specials=domain is None)], attrs)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("op", EXACT_FLOAT_MAPS, ids=lambda op: op.value)
def test_exact_float_maps(op: Op, dtype: np.dtype) -> None:
    data = float_data(dtype)
    data.reshape(-1)[-4:] = np.array([2.5, -2.5, 3.5, -0.5]).astype(dtype)  # round half to even
    check_node(op, [data])


@pytest.mark.parametrize("attrs", [{}, {"detect_negative": 0}, {"detect_positive": 0},
                                   {"detect_negative": 0, "detect_positive": 0}], ids=str)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_is_inf(attrs: dict[str, int], dtype: np.dtype) -> None:
    check_node(Op.IS_INF, [float_data(dtype)], attrs)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64], ids=str)
def test_integer_maps(dtype: type) -> None:
    signed = np.dtype(dtype).kind == "i"
    data = int_data(np.dtype(dtype), low=-128, high=255)
    check_node(Op.ABS, [data])
    check_node(Op.SIGN, [data])
    check_node(Op.BITWISE_NOT, [data])
    check_node(Op.IDENTITY, [data])
    if signed:
        check_node(Op.NEG, [data])
        check_node(Op.RELU, [data])
        check_node(Op.SHRINK, [data], {"lambd": 1.5, "bias": 2.0})


def test_bool_maps() -> None:
    data = np.random.default_rng(0).integers(0, 2, size=(2, 5)).astype(bool)
    check_node(Op.NOT, [data])
    check_node(Op.IDENTITY, [data])


BROADCAST_SHAPES = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (2, 3)),
                    ((1,), (3, 1)), ((2, 0, 3), (1, 3))]
ARITHMETIC = [Op.ADD, Op.SUB, Op.MUL, Op.DIV]


@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
@pytest.mark.parametrize("op", ARITHMETIC + [Op.MOD], ids=lambda op: op.value)
def test_float_arithmetic_broadcasting(op: Op, shapes: tuple[tuple[int, ...], ...]) -> None:
    for dtype in FLOATS:
        a = float_data(dtype, shapes[0], seed=1)
        b = float_data(dtype, shapes[1], seed=2, specials=False)
        if op is Op.MOD:
            check_node(op, [a, b], {"fmod": 0})
            check_node(op, [a, b], {"fmod": 1})
        else:
            check_node(op, [a, b])


@pytest.mark.parametrize("fmod", [0, 1])
def test_float_mod_specials(fmod: int) -> None:
    values = np.array(SPECIALS + [-7.5, 7.5, 3.0, -3.0])
    a, b = np.meshgrid(values, values)
    for dtype in (np.float32, np.float64, np.float16):
        check_node(Op.MOD, [a.astype(dtype), b.astype(dtype)], {"fmod": fmod})


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32,
                                   np.uint64], ids=str)
def test_integer_arithmetic(dtype: type) -> None:
    """Wrapping add/mul, truncating division and both Mods, with zero divisors (0, as numpy
    gives) and INT_MIN / -1 (wraps) among the operands."""
    info = np.iinfo(dtype)
    a = int_data(np.dtype(dtype), (4, 9), seed=3, low=-100, high=200)
    b = int_data(np.dtype(dtype), (4, 9), seed=4, low=-9, high=9)
    a[0, :4] = [info.min, info.max, info.min, 7]
    b[0, :4] = [-1 if info.min else 1, 0, 0, -1 if info.min else 3]
    for op in ARITHMETIC:
        check_node(op, [a, b])
    check_node(Op.MOD, [a, b], {"fmod": 0})
    check_node(Op.MOD, [a, b], {"fmod": 1})
    check_node(Op.MAX, [a, b])
    check_node(Op.MIN, [a, b])
    check_node(Op.DIV, [a, b[:1]])  # broadcast divisor row


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64, np.int32],
                         ids=str)
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bit_shift(dtype: type, direction: str) -> None:
    bits = np.dtype(dtype).itemsize * 8
    a = int_data(np.dtype(dtype), (3, 8), low=0, high=255)
    shifts = np.arange(24).reshape(3, 8) % (bits + 3)
    check_node(Op.BIT_SHIFT, [a, shifts.astype(dtype)], {"direction": direction})


@pytest.mark.parametrize("op", [Op.BITWISE_AND, Op.BITWISE_OR, Op.BITWISE_XOR],
                         ids=lambda op: op.value)
def test_bitwise(op: Op) -> None:
    for dtype in (np.int8, np.uint16, np.int64):
        a = int_data(np.dtype(dtype), (2, 3, 4), seed=5, low=-100, high=100)
        b = int_data(np.dtype(dtype), (3, 1), seed=6, low=-100, high=100)
        check_node(op, [a, b])


def test_logic_and_comparisons() -> None:
    rng = np.random.default_rng(7)
    p, q = rng.integers(0, 2, (2, 3, 4)).astype(bool), rng.integers(0, 2, (3, 1)).astype(bool)
    for op in (Op.AND, Op.OR, Op.XOR, Op.EQUAL):
        check_node(op, [p, q])
    comparisons = [Op.EQUAL, Op.LESS, Op.GREATER, Op.LESS_OR_EQUAL, Op.GREATER_OR_EQUAL]
    for dtype in FLOATS:
        a = float_data(dtype, (4, 6), seed=8)
        b = float_data(dtype, (4, 6), seed=8)[::-1].copy()
        for op in comparisons:
            check_node(op, [a, b])
            check_node(op, [a, b[:, :1]])
    for dtype in (np.int8, np.uint32, np.int64):
        a, b = int_data(np.dtype(dtype), (4, 6), 9), int_data(np.dtype(dtype), (6,), 10)
        for op in comparisons:
            check_node(op, [a, b])


POW_CASES = [
    (np.float32, np.float32), (np.float64, np.float32), (np.float32, np.int64),
    (np.float16, np.float32), (BF16, np.float16), (np.int32, np.int32), (np.int64, np.int32),
    (np.int64, np.float32), (np.int32, np.float64),
]


@pytest.mark.parametrize(("base", "exponent"), POW_CASES, ids=str)
def test_pow(base: np.dtype, exponent: np.dtype) -> None:
    """Mixed-type Pow; integer bases include negative exponents (truncated 1 / b**-e)."""
    rng = np.random.default_rng(11)
    if np.dtype(base).kind == "f":
        x = rng.uniform(0.1, 3.0, (3, 5)).astype(base)
    else:
        # Negative integer bases only with integer exponents (a float power of one is NaN,
        # which numpy converts to an undefined integer).
        low = -5 if np.dtype(exponent).kind == "i" else 1
        x = rng.integers(low, 6, (3, 5)).astype(base)
        x[x == 0] = 2
    y = (rng.integers(-3, 5, (5,)) if np.dtype(exponent).kind == "i"
         else rng.uniform(-2, 3, (5,))).astype(exponent)
    check_node(Op.POW, [x, y])


def test_pow_specials() -> None:
    values = np.array([0.0, -2.0, 2.0, np.inf, -np.inf, np.nan, 0.5])
    a, b = np.meshgrid(values, values)
    check_node(Op.POW, [a.astype(np.float32), b.astype(np.float32)])


CAST_TYPES = [DType.F16, DType.BF16, DType.F32, DType.F64, DType.I8, DType.I16, DType.I32,
              DType.I64, DType.U8, DType.U16, DType.U32, DType.U64, DType.BOOL]


def cast_source(source: DType, target: DType) -> np.ndarray:
    """Values every (source, target) pair converts alike in numpy and C: in the target's range
    for float sources (numpy leaves out-of-range float->int undefined), any for the others."""
    rng = np.random.default_rng(12)
    if source is DType.BOOL:
        return rng.integers(0, 2, (3, 7)).astype(bool)
    if source.is_float:
        low = -100.0 if target.is_signed or target is DType.BOOL else 0.0
        data = rng.uniform(low, 100.0, (3, 7))
        data[0, :3] = [0.0, 0.5, -0.0]
        if target.is_float or target is DType.BOOL:
            data[1, :3] = [np.nan, np.inf, -np.inf]
        return data.astype(source.numpy)
    info = np.iinfo(source.numpy)
    data = rng.integers(max(info.min, -300), min(info.max, 300), (3, 7), endpoint=True)
    data = data.astype(source.numpy)
    data[0, :2] = [info.min, info.max]
    return data


@pytest.mark.parametrize("source", CAST_TYPES, ids=lambda t: t.value)
def test_cast_every_pair(source: DType) -> None:
    for target in CAST_TYPES:
        check_node(Op.CAST, [cast_source(source, target)], {"to": target})


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int32, np.uint8], ids=str)
def test_clip(dtype: type) -> None:
    x = (float_data(np.dtype(dtype), (4, 5)) if np.dtype(dtype).kind == "f"
         else int_data(np.dtype(dtype), (4, 5), low=0, high=50))
    low, high = np.array(3, dtype=dtype), np.array([20], dtype=dtype)
    for inputs in ([x], [x, low], [x, None, high], [x, low, high], [x, high, low]):
        check_node(Op.CLIP, inputs)
        check_node(Op.CLIP, inputs, consts=[1, 2])


def test_where_and_prelu_broadcast() -> None:
    rng = np.random.default_rng(13)
    cond = rng.integers(0, 2, (3, 1)).astype(bool)
    for dtype in (np.float32, np.int64, np.float16, np.uint8):
        x, y = int_data(np.dtype(np.int8), (2, 3, 4), 14).astype(dtype), np.array(5, dtype)
        check_node(Op.WHERE, [cond, x, y])
    bools = rng.integers(0, 2, (4,)).astype(bool)
    check_node(Op.WHERE, [cond, bools, ~bools])
    for dtype in FLOATS:
        check_node(Op.PRELU, [float_data(dtype, (2, 3, 4)), float_data(dtype, (3, 1), 15)])
    check_node(Op.PRELU, [int_data(np.dtype(np.int32), (2, 3)), np.array([2, -3, 4], np.int32)])


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_swiglu(dtype: np.dtype) -> None:
    check_node(Op.SWIGLU, [float_data(dtype, (2, 6)), float_data(dtype, (2, 6), 16)],
               {"alpha": 1.5})


@pytest.mark.parametrize("op", [Op.MAX, Op.MIN, Op.SUM, Op.MEAN], ids=lambda op: op.value)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_variadic(op: Op, dtype: np.dtype) -> None:
    """One to three operands with broadcasting; Max/Min propagate NaN."""
    a, b, c = (float_data(dtype, (2, 3, 4), 17), float_data(dtype, (3, 1), 18),
               float_data(dtype, (4,), 19, specials=False))
    for inputs in ([a], [a, b], [a, b, c], [c, b]):
        check_node(op, inputs)


def test_every_elementwise_op_has_a_lowering() -> None:
    missing = [op.value for op in ops_in(Group.ELEMENTWISE) if lowering_for(op) is None]
    assert not missing


def loops(stmt: Stmt) -> list[Loop]:
    """The loops of a nest, outermost first (following the first loop of each block)."""
    found = []
    while isinstance(stmt, Loop | Block):
        if isinstance(stmt, Block):
            nested = [s for s in stmt.body if isinstance(s, Loop | Block)]
            if not nested:
                break
            stmt = nested[0]
            continue
        found.append(stmt)
        stmt = stmt.body
    return found


def lowered_loops(op: Op, shapes: Sequence[tuple[int, ...]]) -> list[Loop]:
    graph, _ = node_graph(op, [np.zeros(s, np.float32) for s in shapes], None)
    (step,) = lower_graph(graph).steps
    (kernel,) = step.kernels
    return loops(kernel.body)


def test_schedule_small_is_serial_and_vectorized() -> None:
    nest = lowered_loops(Op.ADD, [(4, 8), (8,)])
    assert [loop.kind for loop in nest] == [LoopKind.SERIAL, LoopKind.VECTORIZE]


def test_schedule_large_is_parallel_outside() -> None:
    nest = lowered_loops(Op.MUL, [(64, 1024), (64, 1)])
    assert [loop.kind for loop in nest] == [LoopKind.PARALLEL, LoopKind.VECTORIZE]


def test_schedule_long_vector_is_split_into_parallel_chunks() -> None:
    nest = lowered_loops(Op.EXP, [(1, 100_000)])
    assert [loop.kind for loop in nest] == [LoopKind.SERIAL, LoopKind.PARALLEL,
                                            LoopKind.VECTORIZE]


def test_split_schedule_covers_the_tail() -> None:
    """A long axis split into chunks (one partial) computes every element once."""
    x = np.linspace(-3, 3, 40_000).astype(np.float32)
    check_node(Op.NEG, [x])


# ---------------------------------------------------------------------------------------------
# Through native code (kiln.compiler.build): shapes large enough for the parallel and split
# schedules, and random broadcasting.

WIDE_RANGE = np.concatenate([np.linspace(-30, 30, 40_000), np.linspace(-1e-3, 1e-3, 1001),
                             [np.nan, np.inf, -np.inf, 0.0, -0.0, 88.0, -88.0, 1e-30, -1e-30]])


@pytest.mark.parametrize("op", [Op.GELU, Op.ELU, Op.SELU, Op.CELU, Op.SOFTPLUS, Op.MISH,
                                Op.SWISH, Op.HARD_SWISH, Op.EXP, Op.TANH, Op.SIGMOID, Op.ERF],
                         ids=lambda op: op.value)
def test_compiled_float_maps_over_a_wide_range(op: Op) -> None:
    for dtype in (np.float32, np.float64, np.float16):
        check_compiled(op, [WIDE_RANGE.astype(dtype)])


def test_compiled_binary_ops_at_scale() -> None:
    f32, f16 = np.dtype(np.float32), np.dtype(np.float16)
    check_compiled(Op.ADD, [float_data(f32, (70, 600)), float_data(f32, (600,), 1)])
    check_compiled(Op.MUL, [float_data(f16, (1, 50_001)), float_data(f16, (1,), 2)], threads=3)
    a = int_data(np.dtype(np.int32), (300, 200), low=-1000, high=1000)
    b = int_data(np.dtype(np.int32), (200,), seed=1, low=-5, high=5)
    for op, attrs in ((Op.DIV, {}), (Op.MOD, {"fmod": 0}), (Op.MOD, {"fmod": 1})):
        check_compiled(op, [a, b], attrs)
    check_compiled(Op.POW, [np.abs(float_data(f32, (40, 1000), specials=False)),
                            float_data(f32, (1000,), 3, specials=False)])
    check_compiled(Op.WHERE, [a > 0, float_data(f32, (300, 1)), float_data(f32, (200,), 4)])
    check_compiled(Op.CLIP, [float_data(f32, (300, 200)), np.array(-1.0, np.float32),
                             np.array(2.0, np.float32)])
    for target in (DType.F16, DType.BF16, DType.I32, DType.U8, DType.BOOL):
        check_compiled(Op.CAST, [cast_source(DType.F32, target).repeat(2000, axis=0)],
                       {"to": target})


def dims(max_rank: int = 4) -> st.SearchStrategy[tuple[int, ...]]:
    return st.lists(st.integers(1, 5), min_size=0, max_size=max_rank).map(tuple)


@st.composite
def broadcast_pair(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two shapes that broadcast: the second drops leading axes and sets some extents to 1."""
    shape = draw(dims())
    keep = draw(st.integers(0, len(shape)))
    other = tuple(1 if draw(st.booleans()) else n for n in shape[len(shape) - keep:])
    return (shape, other) if draw(st.booleans()) else (other, shape)


@settings(max_examples=25, deadline=None)
@given(shapes=broadcast_pair(), op=st.sampled_from([Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MAX,
                                                   Op.POW, Op.GREATER, Op.PRELU]),
       dtype=st.sampled_from([np.dtype(np.float32), np.dtype(np.float16)]),
       seed=st.integers(0, 1000))
def test_compiled_random_broadcasting(shapes: tuple[tuple[int, ...], tuple[int, ...]], op: Op,
                                      dtype: np.dtype, seed: int) -> None:
    a, b = shapes
    if op is Op.PRELU and len(b) > len(a):
        a, b = b, a  # PRelu broadcasts the slope to X only
    x = float_data(dtype, a, seed, specials=False)
    if op is Op.POW:
        x = np.abs(x)
    check_compiled(op, [x, float_data(dtype, b, seed + 1)])
