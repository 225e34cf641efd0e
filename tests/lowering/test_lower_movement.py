"""Lowerings of the movement and shape ops, run by the kernel-IR interpreter against the
reference executor: every op and attribute combination on small shapes (Reshape's refinement
and decomposition paths, Slice with negative steps, every Pad mode with growing and cropping
widths, every Resize mode and coordinate mapping, every BitCast pair), the loop schedule, and
the errors for what cannot be lowered; then bigger shapes (parallel loops) through the whole
compiled pipeline, ``build(graph).run``.

``check_node`` (one node lowered and interpreted vs the reference) and ``check_compiled`` (one
node built and run) are shared with test_lower_index.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nodegraph import node_graph

from kiln.compiler import build, reference
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph
from kiln.compiler.lower.kernel_ir import Loop, LoopKind, Stmt

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

RNG = np.random.default_rng(7)
BF16 = np.dtype(ml_dtypes.bfloat16)
# Only Resize computes; its sum order differs from the reference's (per-axis passes in f64).
TOLERANCE = {np.dtype(np.float16): (2e-3, 2e-3), BF16: (1.6e-2, 1e-2),
             np.dtype(np.float32): (1e-5, 1e-5), np.dtype(np.float64): (1e-12, 1e-12)}




def assert_matches(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if expected.dtype in TOLERANCE:
        rtol, atol = TOLERANCE[expected.dtype]
        np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                                   rtol=rtol, atol=atol, equal_nan=True)
    else:
        np.testing.assert_array_equal(actual, expected)


def check_node(op: Op, inputs: Sequence[np.ndarray | None],
               attrs: Mapping[str, Any] | None = None, consts: Sequence[int] = (),
               outputs: int = 1) -> list[np.ndarray]:
    """Lower one node, interpret it, compare every output with the reference executor."""
    graph, feeds = node_graph(op, inputs, attrs, consts, outputs)
    expected = reference.run(graph, feeds)
    actual = interpret_lowered(lower_graph(graph), feeds)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert_matches(np.asarray(got), np.asarray(want))
    return actual


def check_compiled(op: Op, inputs: Sequence[np.ndarray | None],
                   attrs: Mapping[str, Any] | None = None, consts: Sequence[int] = (),
                   outputs: int = 1, threads: int = 2) -> None:
    """Build one node with the whole pipeline (codegen, plan, runtime) and compare with the
    reference executor: for shapes too big for the interpreter (parallel loops)."""
    graph, feeds = node_graph(op, inputs, attrs, consts, outputs)
    expected = reference.run(graph, feeds)
    actual = build(graph, threads=threads).run(feeds)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert_matches(np.asarray(got), np.asarray(want))


def data(*shape: int, dtype: Any = np.float32) -> np.ndarray:
    if np.dtype(dtype) == np.bool_:
        return RNG.random(shape) < 0.5
    if np.dtype(dtype).kind in "iu":
        return RNG.integers(0, 100, shape).astype(dtype)
    return RNG.standard_normal(shape).astype(dtype)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def loops_of(stmt: Stmt) -> list[Loop]:
    found: list[Loop] = []

    def walk(node: Any) -> None:
        if isinstance(node, Loop):
            found.append(node)
        for child in ("body", "then", "otherwise"):
            inner = getattr(node, child, None)
            if isinstance(inner, tuple):
                for item in inner:
                    walk(item)
            elif inner is not None:
                walk(inner)

    walk(stmt)
    return found


# ------------------------------------------------------------------------- compiled path

COMPILED_CASES: list[tuple[str, Op, list[np.ndarray | None], dict[str, Any] | None,
                           list[int], int]] = [
    ("reshape", Op.RESHAPE, [data(8, 60, 70), i64(48, 10, 7, 10)], None, [1], 1),
    ("reshape_decomposed", Op.RESHAPE, [data(6, 35, 200), i64(35, 6, 200)], None, [1], 1),
    ("transpose", Op.TRANSPOSE, [data(16, 40, 70)], {"perm": (2, 0, 1)}, [], 1),
    ("concat", Op.CONCAT, [data(4, 90, 50), data(4, 10, 50)], {"axis": 1}, [], 1),
    ("split", Op.SPLIT, [data(40, 30, 50), i64(7, 23)], {"axis": 1}, [1], 2),
    ("slice", Op.SLICE, [data(60, 80, 20), i64(-1, 3), i64(-1000, 77), i64(0, 1),
                         i64(-2, 3)], None, [1, 2, 3, 4], 1),
    ("expand", Op.EXPAND, [data(30, 1, 60), i64(4, 30, 40, 60)], None, [1], 1),
    ("tile", Op.TILE, [data(20, 30, 31), i64(2, 1, 3)], None, [1], 1),
    ("pad_reflect", Op.PAD, [data(8, 60, 70), i64(0, 3, -2, 0, 5, 4)], {"mode": "reflect"},
     [1], 1),
    ("pad_constant", Op.PAD, [data(8, 60, 70), i64(1, 3, 2, 0, -5, 4), np.array(
        1.5, np.float32)], None, [1], 1),
    ("pad_wrap", Op.PAD, [data(8, 60, 70, dtype=np.int8), i64(0, 70, 2, 0, 5, 90)],
     {"mode": "wrap"}, [1], 1),
    ("depth_to_space", Op.DEPTH_TO_SPACE, [data(2, 36, 30, 40)],
     {"blocksize": 3, "mode": "CRD"}, [], 1),
    ("space_to_depth", Op.SPACE_TO_DEPTH, [data(2, 8, 60, 40)], {"blocksize": 2}, [], 1),
    ("trilu", Op.TRILU, [data(4, 90, 100), np.array(-3, np.int64)], {"upper": 0}, [], 1),
    ("resize_cubic", Op.RESIZE, [data(2, 3, 50, 60), None, np.array(
        [1, 1, 1.7, 0.45], np.float32)], {"mode": "cubic", "antialias": 1}, [1, 2], 1),
    ("resize_nearest_u8", Op.RESIZE, [data(2, 3, 50, 60, dtype=np.uint8), None, None,
                                      i64(2, 3, 100, 90)], {"mode": "nearest"}, [1, 3], 1),
    ("bit_cast", Op.BIT_CAST, [data(300, 200)], {"to": DType.I32}, [], 1),
]


@pytest.mark.parametrize(("op", "inputs", "attrs", "consts", "outputs"),
                         [case[1:] for case in COMPILED_CASES],
                         ids=[case[0] for case in COMPILED_CASES])
def test_compiled(op: Op, inputs: list[np.ndarray | None], attrs: dict[str, Any] | None,
                  consts: list[int], outputs: int) -> None:
    check_compiled(op, inputs, attrs, consts, outputs)


# ------------------------------------------------------------------------ reshape family

RESHAPES = [
    ((2, 3, 4), (6, 4)), ((2, 3, 4), (24,)), ((24,), (2, 3, 4)), ((2, 3), (3, 2)),
    ((4, 6), (3, 8)), ((2, 1, 3), (6,)), ((1, 6, 1), (2, 1, 3, 1)), ((), (1, 1)), ((1, 1), ()),
    ((2, 6, 5), (4, 3, 5)), ((3, 4, 5), (5, 4, 3)), ((0, 3), (-1,)), ((2, 2, 3), (4, 3)),
]


@pytest.mark.parametrize(("source", "target"), RESHAPES)
def test_reshape(source: tuple[int, ...], target: tuple[int, ...]) -> None:
    check_node(Op.RESHAPE, [data(*source), i64(*target)], consts=[1])


def factorizations(total: int) -> st.SearchStrategy[tuple[int, ...]]:
    """Shapes with ``total`` elements: the prime factors of total grouped at random, with unit
    axes sprinkled in."""
    primes, n, p = [], total, 2
    while n > 1:
        while n % p == 0:
            primes.append(p)
            n //= p
        p += 1

    @st.composite
    def shapes(draw: st.DrawFn) -> tuple[int, ...]:
        order = draw(st.permutations(primes))
        cuts = sorted(draw(st.lists(st.integers(0, len(order)), max_size=4)))
        bounds = [0, *cuts, len(order)]
        dims = [int(np.prod(order[a:b])) for a, b in zip(bounds, bounds[1:], strict=False)]
        return tuple(dims)

    return shapes()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([24, 36, 60, 64]).flatmap(lambda n: st.tuples(factorizations(n),
                                                                      factorizations(n))))
def test_reshape_random_factorizations(shapes: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
    source, target = shapes
    check_node(Op.RESHAPE, [data(*source), i64(*target)], consts=[1])


@pytest.mark.parametrize("dtype", [np.float16, BF16, np.int8, np.uint64, np.bool_])
def test_reshape_dtypes(dtype: Any) -> None:
    check_node(Op.RESHAPE, [data(2, 3, 2, dtype=dtype), i64(3, -1)], consts=[1])


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
def test_flatten(axis: int) -> None:
    check_node(Op.FLATTEN, [data(2, 3, 1, 4)], {"axis": axis})


def test_squeeze_unsqueeze() -> None:
    check_node(Op.SQUEEZE, [data(1, 3, 1, 2)])
    check_node(Op.SQUEEZE, [data(1, 3, 1, 2), i64(-2)], consts=[1])
    check_node(Op.UNSQUEEZE, [data(3, 2), i64(0, 3, -1)], consts=[1])


def test_large_copy_is_parallel_and_vectorized() -> None:
    graph, _ = node_graph(Op.RESHAPE, [data(64, 32, 32), i64(64, 1024)], None, consts=[1])
    kernels = lower_graph(graph).steps[-1].kernels
    found = loops_of(kernels[0].body)
    assert found[0].kind is LoopKind.PARALLEL
    assert found[-1].kind is LoopKind.VECTORIZE


# ----------------------------------------------------------------------- data movement

@pytest.mark.parametrize("perm", [None, (0, 2, 1), (2, 0, 1), (1, 2, 0)])
def test_transpose(perm: tuple[int, ...] | None) -> None:
    check_node(Op.TRANSPOSE, [data(2, 3, 4)], None if perm is None else {"perm": perm})


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis: int) -> None:
    shapes = [[2, 3, 2], [2, 3, 2], [2, 3, 2]]
    for k, shape in enumerate(shapes):
        shape[axis] = k + 1
    check_node(Op.CONCAT, [data(*s) for s in shapes], {"axis": axis})


def test_concat_with_empty_input() -> None:
    check_node(Op.CONCAT, [data(2, 0), data(2, 3), data(2, 1)], {"axis": 1})


@pytest.mark.parametrize(("split", "outputs", "axis"), [
    (None, 3, 1), (None, 2, 0), ((1, 4, 0), 3, 1), ((2, 2, 1), 3, -1),
])
def test_split(split: tuple[int, ...] | None, outputs: int, axis: int) -> None:
    x = data(3, 5, 5)
    inputs = [x] if split is None else [x, i64(*split)]
    check_node(Op.SPLIT, inputs, {"axis": axis}, consts=[1], outputs=outputs)


@pytest.mark.parametrize(("starts", "ends", "axes", "steps"), [
    ((1, 0), (3, 5), None, None),
    ((-1,), (-100,), (1,), (-1,)),
    ((4, 10), (0, -10), (0, 1), (-2, -3)),
    ((0, 1), (100, 4), (-1, 0), (2, 1)),
    ((2,), (2,), (0,), (1,)),
    ((-2, 0), (1000, 5), None, (1, 4)),
])
def test_slice(starts: tuple[int, ...], ends: tuple[int, ...], axes: tuple[int, ...] | None,
               steps: tuple[int, ...] | None) -> None:
    inputs = [data(5, 6), i64(*starts), i64(*ends),
              None if axes is None else i64(*axes), None if steps is None else i64(*steps)]
    check_node(Op.SLICE, inputs, consts=[1, 2, 3, 4])


@pytest.mark.parametrize(("shape", "target"), [
    ((3, 1), (2, 3, 4)), ((1,), (5,)), ((2, 1, 3), (2, 4, 3)), ((3,), (1, 3)),
])
def test_expand(shape: tuple[int, ...], target: tuple[int, ...]) -> None:
    check_node(Op.EXPAND, [data(*shape), i64(*target)], consts=[1])


@pytest.mark.parametrize("repeats", [(1, 1), (2, 3), (3, 1), (0, 2)])
def test_tile(repeats: tuple[int, ...]) -> None:
    check_node(Op.TILE, [data(2, 3, dtype=np.int32), i64(*repeats)], consts=[1])


# -------------------------------------------------------------------------------- Pad

PADS = [(1, 2, 0, 3), (0, 0, 2, 0), (5, 1, 4, 6), (-1, 0, 1, -2), (2, -1, -2, 3), (0, 0, 0, 0)]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", PADS)
def test_pad(mode: str, pads: tuple[int, ...]) -> None:
    check_node(Op.PAD, [data(3, 4), i64(*pads)], {"mode": mode}, consts=[1])


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_3d_with_axes_and_value(mode: str) -> None:
    value = np.array(2.5, dtype=np.float32)
    check_node(Op.PAD, [data(2, 3, 3), i64(1, 2, 2, 1), value, i64(0, -1)], {"mode": mode},
               consts=[1, 3])


def test_pad_reflect_single_row_and_ints() -> None:
    check_node(Op.PAD, [data(1, 3, dtype=np.int64), i64(2, 1, 1, 2)], {"mode": "reflect"},
               consts=[1])
    check_node(Op.PAD, [data(4, dtype=np.uint8), i64(-4, 3)], consts=[1])


def test_pad_of_empty_tensor_in_reflect_mode_fails() -> None:
    graph, _ = node_graph(Op.PAD, [data(0, 3), i64(1, 0, 1, 0)], {"mode": "reflect"},
                          consts=[1])
    with pytest.raises(KilnError, match="cannot pad an empty tensor in reflect mode"):
        lower_graph(graph)


@pytest.mark.parametrize(("source", "target", "axes"), [
    ((5, 4), (3, 6), None), ((5, 4), (6, 2), None), ((5, 4), (4, 4), None),
    ((5, 4), (5, 7), None), ((3, 5, 4), (2,), (1,)), ((3, 5, 4), (4, 1), (-1, 0)),
])
def test_center_crop_pad(source: tuple[int, ...], target: tuple[int, ...],
                         axes: tuple[int, ...] | None) -> None:
    attrs = None if axes is None else {"axes": axes}
    check_node(Op.CENTER_CROP_PAD, [data(*source), i64(*target)], attrs, consts=[1])


# -------------------------------------------------------------------- block rearranging

@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("op", [Op.DEPTH_TO_SPACE, Op.SPACE_TO_DEPTH])
def test_block_rearrange(op: Op, mode: str) -> None:
    x = data(2, 8, 3, 2) if op is Op.DEPTH_TO_SPACE else data(2, 2, 4, 6)
    check_node(op, [x], {"blocksize": 2, "mode": mode})


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, 0, 2, -1, -7, 9])
def test_trilu(upper: int, k: int | None) -> None:
    inputs = [data(2, 4, 5, dtype=np.int32)] + ([] if k is None else [np.array(k, np.int64)])
    check_node(Op.TRILU, inputs, {"upper": upper})


@pytest.mark.parametrize("time_axis", [0, 1])
def test_reverse_sequence(time_axis: int) -> None:
    x = data(4, 3, 2) if time_axis == 0 else data(3, 4, 2)
    check_node(Op.REVERSE_SEQUENCE, [x, i64(4, 0, 2)],
               {"time_axis": time_axis, "batch_axis": 1 - time_axis})


def test_reverse_sequence_bad_length_reports() -> None:
    graph, feeds = node_graph(Op.REVERSE_SEQUENCE, [data(4, 2), i64(5, -1)], None)
    with pytest.raises(KilnError, match=r"sequence length is outside \[0, 4\]"):
        interpret_lowered(lower_graph(graph), feeds)


# ------------------------------------------------------------------------------- Resize

COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
          "asymmetric", "tf_crop_and_resize"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


def resize(x: np.ndarray, attrs: dict[str, Any], scales: Sequence[float] | None = None,
           sizes: Sequence[int] | None = None, roi: Sequence[float] | None = None) -> None:
    inputs = [x, None if roi is None else np.array(roi, np.float32),
              None if scales is None else np.array(scales, np.float32),
              None if sizes is None else i64(*sizes)]
    check_node(Op.RESIZE, inputs, attrs, consts=[1, 2, 3])


@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_modes(coord: str, mode: str) -> None:
    attrs = {"mode": mode, "coordinate_transformation_mode": coord,
             "extrapolation_value": -3.0}
    roi = [0, 0, 0.2, 0.1, 1, 1, 0.9, 1.2] if coord == "tf_crop_and_resize" else None
    resize(data(1, 2, 4, 5), attrs, scales=[1, 1, 1.5, 0.6], roi=roi)
    resize(data(1, 1, 3, 4), attrs, sizes=[1, 1, 7, 3], roi=roi)


@pytest.mark.parametrize("nearest_mode", NEAREST)
def test_resize_nearest_modes(nearest_mode: str) -> None:
    attrs = {"mode": "nearest", "nearest_mode": nearest_mode}
    resize(data(1, 1, 4, 4), attrs, scales=[1, 1, 2.5, 0.75])
    resize(data(2, 5, dtype=np.int8), {**attrs, "coordinate_transformation_mode":
                                       "asymmetric"}, sizes=[2, 11])


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_antialias_exclude_outside_and_ints(mode: str) -> None:
    resize(data(1, 1, 8, 8), {"mode": mode, "antialias": 1}, scales=[1, 1, 0.4, 0.6])
    resize(data(1, 1, 4, 4), {"mode": mode, "exclude_outside": 1, "cubic_coeff_a": -0.5},
           scales=[1, 1, 1.6, 0.8])
    resize(data(1, 6, 6, dtype=np.uint8), {"mode": mode}, sizes=[1, 9, 4])


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_resize_sizes_with_axes_and_policy(policy: str) -> None:
    resize(data(2, 4, 6), {"mode": "linear", "axes": [2, 1],
                           "keep_aspect_ratio_policy": policy}, sizes=[9, 5])


def test_resize_f16_and_identity_axes() -> None:
    resize(data(1, 3, 4, dtype=np.float16), {"mode": "linear"}, scales=[1.0, 1.0, 2.0])
    resize(data(2, 3), {"mode": "cubic"}, scales=[1.0, 1.0])


# ------------------------------------------------------------------------------ BitCast

SAME_WIDTH = {1: [np.int8, np.uint8, np.bool_], 2: [np.int16, np.uint16, np.float16, BF16],
              4: [np.int32, np.uint32, np.float32], 8: [np.int64, np.uint64, np.float64]}


def special_values(dtype: Any) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.array([True, False])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([0, 1, info.max, info.min, info.max // 3, 7], dtype=dtype)
    tiny = float(ml_dtypes.finfo(dtype).smallest_subnormal)
    big = float(ml_dtypes.finfo(dtype).max)
    values = [0.0, -0.0, 1.0, -2.5, 3.75, np.inf, -np.inf, np.nan, tiny, -tiny * 3, big,
              -big, float(ml_dtypes.finfo(dtype).tiny), 1e-3, 12345.678]
    return np.array(values, dtype=np.float64).astype(dtype)


@pytest.mark.parametrize(("source", "target"), [
    (s, t) for group in SAME_WIDTH.values() for s, t in itertools.permutations(group, 2)
    if np.dtype(t) != np.bool_
])
def test_bit_cast(source: Any, target: Any) -> None:
    x = special_values(source)
    graph, feeds = node_graph(Op.BIT_CAST, [x], {"to": DType.from_numpy(target)})
    expected = reference.run(graph, feeds)[0]
    actual = interpret_lowered(lower_graph(graph), feeds)[0]
    assert actual.dtype == expected.dtype
    # Bit-exact; NaN patterns read as floats compare equal as NaN whatever their payload
    # (compared in f64, as numpy's NaN test does not see bf16 NaNs).
    if np.dtype(target).kind in "iub":
        np.testing.assert_array_equal(actual, expected)
    else:
        np.testing.assert_array_equal(actual.astype(np.float64), expected.astype(np.float64))


# ---------------------------------------------------------------------------- shape ops

@pytest.mark.parametrize(("start", "end"), [(0, None), (1, None), (-2, -1), (3, 1)])
def test_shape(start: int, end: int | None) -> None:
    attrs: dict[str, Any] = {"start": start} if end is None else {"start": start, "end": end}
    check_node(Op.SHAPE, [data(2, 3, 4)], attrs)


def test_size_constant_of_shape_eye_like() -> None:
    check_node(Op.SIZE, [data(2, 3)])
    check_node(Op.CONSTANT_OF_SHAPE, [i64(2, 3)], consts=[0])
    check_node(Op.CONSTANT_OF_SHAPE, [i64(4)], {"value": np.array([7], np.int32)}, consts=[0])
    for k, dtype in [(0, None), (1, DType.I32), (-2, DType.BOOL), (5, DType.F64)]:
        attrs: dict[str, Any] = {"k": k} if dtype is None else {"k": k, "dtype": dtype}
        check_node(Op.EYE_LIKE, [data(3, 4)], attrs)


@pytest.mark.parametrize("shape", [(), (1,)])
@pytest.mark.parametrize(("start", "limit", "delta"), [
    (1, 10, 3), (10, -4, -3), (0.5, 2.0, 0.25), (-1.0, 1.0, 0.3)])
def test_range_with_run_time_scalars(start: float, limit: float, delta: float,
                                     shape: tuple[int, ...]) -> None:
    dtype = np.int32 if isinstance(start, int) else np.float32
    inputs = [np.full(shape, v, dtype) for v in (start, limit, delta)]
    # Constant inputs (not folded) give the static extent; start and delta are read at run
    # time by the kernel.
    check_node(Op.RANGE, inputs, consts=[0, 1, 2])
