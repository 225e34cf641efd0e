"""Movement and shape ops with extents known only at run time, lowered ONCE and interpreted at
several sizes / values against the reference executor (and onnxruntime for a few ONNX models),
and compiled ONCE (``build``) and run at those sizes / values.

Two kinds of run-time extents: symbolic input dims ("batch", "seq") flowing through every op,
and output extents that depend on VALUES read at run time (Reshape's shape, Slice's starts,
Pad's pads, Resize's scales...), which a shape kernel computes, checks (Reports) and defines
before the compute kernel runs. Invalid values must give a clear run-time error, never a crash.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kiln.compiler import build, reference
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import LoweredGraph, interpret_lowered, lower_graph
from kiln.compiler.lower.kernel_ir import DIMS
from kiln.runtime import KilnRuntimeError

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

RNG = np.random.default_rng(11)
Shape = tuple[int | str, ...]


def one_node(op: Op, inputs: Sequence[tuple[DType, Shape] | np.ndarray | None],
             attrs: Mapping[str, Any] | None = None, outputs: int = 1) -> Graph:
    """A graph of one ``op`` node: (dtype, shape) entries are graph inputs named in0, in1...,
    arrays are constants."""
    builder = GraphBuilder(fold=False)
    values = []
    for index, operand in enumerate(inputs):
        if operand is None:
            values.append(None)
        elif isinstance(operand, np.ndarray):
            values.append(builder.constant(operand))
        else:
            values.append(builder.add_input(f"in{index}", TensorType(*operand)))
    results = builder.add(op, values, dict(attrs or {}), outputs=outputs)
    return builder.finish([v for v in results if v is not None])


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape,
                                                                 want.dtype, want.shape)
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)


def check_runs(graph: Graph, runs: Sequence[Mapping[str, np.ndarray]]) -> None:
    """One lowering of ``graph`` interpreted, and one library built from it, run on every feed
    of ``runs`` and compared with the reference executor."""
    lowered = lower_graph(graph)
    assert not lowered.is_static
    compiled = build(graph)
    for feeds in runs:
        want = reference.run(graph, dict(feeds))
        for got in (interpret_lowered(lowered, feeds), compiled.run(dict(feeds))):
            assert len(got) == len(want)
            for g, w in zip(got, want, strict=True):
                assert_same(np.asarray(g), np.asarray(w))


def check_fails(graph: Graph, feeds: Mapping[str, np.ndarray], message: str) -> None:
    """Interpreted and compiled, ``feeds`` fail at run time with ``message``."""
    with pytest.raises(KilnError, match=message):
        interpret_lowered(lower_graph(graph), feeds)
    with pytest.raises(KilnRuntimeError, match=message):
        build(graph).run(dict(feeds))


def data(*shape: int, dtype: Any = np.float32) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return RNG.standard_normal(shape).astype(dtype)
    return RNG.integers(-50, 50, shape).astype(dtype)


def i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


F32, I64 = DType.F32, DType.I64
SIZES = ((1, 2), (3, 5), (2, 1))  # (batch, seq)


# ------------------------------------------------------------------ symbolic input extents

SYMBOLIC: dict[str, tuple[Op, list[Any], dict[str, Any]]] = {
    "transpose": (Op.TRANSPOSE, [], {"perm": [1, 0, 2]}),
    "transpose_last": (Op.TRANSPOSE, [], {"perm": [2, 0, 1]}),
    "slice_const": (Op.SLICE, [i64(1, -1), i64(2**62, 0), i64(1, 2), i64(1, -1)], {}),
    "slice_reverse": (Op.SLICE, [i64(-1), i64(-(2**62)), i64(1), i64(-2)], {}),
    "reshape_const": (Op.RESHAPE, [i64(-1, 4)], {}),
    "reshape_zero": (Op.RESHAPE, [i64(0, -1)], {}),
    "flatten": (Op.FLATTEN, [], {"axis": 2}),
    "unsqueeze": (Op.UNSQUEEZE, [i64(0, -1)], {}),
    "tile": (Op.TILE, [i64(2, 1, 3)], {}),
    "pad_constant": (Op.PAD, [i64(1, 0, 2, 0, 2, -1)], {}),
    "pad_reflect": (Op.PAD, [i64(0, 1, 2, 0, 0, 3)], {"mode": "reflect"}),
    "pad_edge": (Op.PAD, [i64(2, 2, 0, 1, 3, 1)], {"mode": "edge"}),
    "pad_wrap": (Op.PAD, [i64(0, 3, 1, 0, 2, 5)], {"mode": "wrap"}),
    "split": (Op.SPLIT, [], {"axis": 1, "num_outputs": 2}),
    "split_sizes": (Op.SPLIT, [i64(1, 3)], {"axis": 2}),
    "trilu": (Op.TRILU, [], {"upper": 0}),
    "shape": (Op.SHAPE, [], {}),
    "shape_part": (Op.SHAPE, [], {"start": 1, "end": -1}),
    "size": (Op.SIZE, [], {}),
    "bit_cast": (Op.BIT_CAST, [], {"to": DType.I32}),
    "resize_linear": (Op.RESIZE, [None, np.array([1, 1.5, 0.5], np.float32)],
                      {"mode": "linear"}),
    "resize_nearest": (Op.RESIZE, [None, np.array([1, 2, 1], np.float32)], {}),
}


@pytest.mark.parametrize("case", sorted(SYMBOLIC))
def test_symbolic_extents(case: str) -> None:
    """[batch, seq, 4] through each op: one lowering, every size."""
    op, extra, attrs = SYMBOLIC[case]
    outputs = 2 if op is Op.SPLIT else 1
    graph = one_node(op, [(F32, ("batch", "seq", 4)), *extra], attrs, outputs)
    check_runs(graph, [{"in0": data(b, s, 4)} for b, s in SIZES])


def test_concat_of_symbolic_inputs() -> None:
    """The joined axis is a sum of run-time extents; the others are checked to match."""
    graph = one_node(Op.CONCAT, [(F32, ("batch", "seq", 4)), (F32, ("batch", 3, 4)),
                                 (F32, ("batch", "other", 4))], {"axis": 1})
    check_runs(graph, [{"in0": data(b, s, 4), "in1": data(b, 3, 4), "in2": data(b, s + 1, 4)}
                       for b, s in SIZES])
    graph = one_node(Op.CONCAT, [(F32, ("n", 2)), (F32, ("m", 2))], {"axis": 0})
    check_runs(graph, [{"in0": data(n, 2), "in1": data(m, 2)} for n, m in ((1, 4), (3, 1))])


def test_expand_and_squeeze_of_symbolic_inputs() -> None:
    graph = one_node(Op.EXPAND, [(F32, ("batch", 1, "seq")), i64(2, 1, 3, 1)])
    check_runs(graph, [{"in0": data(b, 1, s)} for b, s in SIZES])
    graph = one_node(Op.SQUEEZE, [(F32, ("batch", 1, "seq")), i64(1)])
    check_runs(graph, [{"in0": data(b, 1, s)} for b, s in SIZES])


def test_depth_to_space_and_back() -> None:
    for op, channels in ((Op.DEPTH_TO_SPACE, 8), (Op.SPACE_TO_DEPTH, 2)):
        for mode in ("DCR", "CRD"):
            graph = one_node(op, [(F32, ("n", channels, "h", "w"))],
                             {"blocksize": 2, "mode": mode})
            check_runs(graph, [{"in0": data(n, channels, 2 * h, 2 * w)}
                               for n, h, w in ((1, 1, 2), (2, 1, 1))])
    graph = one_node(Op.DEPTH_TO_SPACE, [(F32, (1, "c", 2, 2))], {"blocksize": 2})
    check_runs(graph, [{"in0": data(1, c, 2, 2)} for c in (4, 8)])


def test_reverse_sequence_and_eye_like() -> None:
    graph = one_node(Op.REVERSE_SEQUENCE, [(F32, ("steps", "batch", 2)), (I64, ("batch",))])
    check_runs(graph, [{"in0": data(t, b, 2), "in1": RNG.integers(0, t + 1, b)}
                       for t, b in ((3, 2), (5, 1))])
    graph = one_node(Op.EYE_LIKE, [(F32, ("n", "m"))], {"k": 1})
    check_runs(graph, [{"in0": data(n, m)} for n, m in ((1, 3), (4, 2))])


def test_shape_feeds_constant_of_shape() -> None:
    """Shape writes the run-time extents; ConstantOfShape reads them back as its shape."""
    builder = GraphBuilder(fold=False)
    x = builder.add_input("x", TensorType(F32, ("batch", "seq")))
    shape = builder.add1(Op.SHAPE, [x])
    filled = builder.add1(Op.CONSTANT_OF_SHAPE, [shape], {"value": np.array([7], np.int32)})
    graph = builder.finish([filled, builder.add1(Op.SIZE, [x])])
    check_runs(graph, [{"x": data(b, s)} for b, s in SIZES])


# ---------------------------------------------------------- values read at run time (shapes)

def value_runs(op: Op, x: tuple[DType, Shape], values: Sequence[tuple[np.ndarray, ...]],
               make_x: Any, attrs: Mapping[str, Any] | None = None, outputs: int = 1,
               value_types: Sequence[DType] | None = None) -> None:
    """``op`` whose operands after the first are run-time inputs: one lowering, run on each
    tuple of ``values`` (with the data from ``make_x``)."""
    first = values[0]
    types = value_types or [DType.from_numpy(v.dtype) for v in first]
    graph = one_node(op, [x, *[(t, v.shape) for t, v in zip(types, first, strict=True)]],
                     attrs, outputs)
    check_runs(graph, [{"in0": make_x(), **{f"in{i + 1}": v for i, v in enumerate(vs)}}
                       for vs in values])


def test_reshape_of_runtime_shape() -> None:
    x = data(2, 3, 4)
    value_runs(Op.RESHAPE, (F32, (2, 3, 4)), [(i64(0, -1, 2),), (i64(-1, 1, 4),),
                                              (i64(4, 0, 2),), (i64(24, 1, 1),)], lambda: x)
    empty = np.zeros((0, 3), np.float32)
    value_runs(Op.RESHAPE, (F32, (0, 3)), [(i64(3, 0),), (i64(0, 5),)], lambda: empty,
               {"allowzero": 1})


def test_reshape_of_symbolic_input_and_runtime_shape() -> None:
    graph = one_node(Op.RESHAPE, [(F32, ("batch", "seq", 4)), (I64, (2,))])
    check_runs(graph, [{"in0": data(b, s, 4), "in1": target} for b, s in SIZES
                       for target in (i64(-1, 4), i64(b, -1), i64(0, s * 4))])


def test_expand_and_tile_of_runtime_values() -> None:
    x = data(3, 1)
    value_runs(Op.EXPAND, (F32, (3, 1)), [(i64(2, 1, 6),), (i64(1, 3, 0),), (i64(1, 1, 1),)],
               lambda: x)
    value_runs(Op.EXPAND, (F32, (3, 1)), [(i64(4),), (i64(1),)], lambda: x)
    value_runs(Op.TILE, (F32, (2, 3)), [(i64(1, 1),), (i64(3, 2),), (i64(0, 4),)],
               lambda: data(2, 3))
    graph = one_node(Op.EXPAND, [(F32, ("n", 1)), (I64, (2,))])
    check_runs(graph, [{"in0": data(n, 1), "in1": i64(k, m)}
                       for n, k, m in ((1, 4, 3), (3, 1, 2), (2, 2, 5))])


SLICES = [
    (i64(0, 1), i64(2, 5), i64(0, 1), i64(1, 2)),
    (i64(-1, 10), i64(-10, -100), i64(0, 1), i64(-1, -3)),
    (i64(2**62, -(2**62)), i64(-(2**62), 2**62), i64(-2, -1), i64(-1, 1)),
    (i64(1, 0), i64(1, 9), i64(1, 0), i64(1, 2)),
    (i64(5, -7), i64(-9, 2), i64(1, 0), i64(-2, 1)),
]


def test_slice_of_runtime_values() -> None:
    x = data(4, 6)
    value_runs(Op.SLICE, (F32, (4, 6)), SLICES, lambda: x)
    graph = one_node(Op.SLICE, [(F32, (4, 6)), (DType.I32, (1,)), (DType.I32, (1,))])
    check_runs(graph, [{"in0": x, "in1": np.array([s], np.int32), "in2": np.array([e], np.int32)}
                       for s, e in ((1, 3), (-3, 2**31 - 1), (3, 1))])


def test_slice_of_symbolic_input_and_runtime_values() -> None:
    graph = one_node(Op.SLICE, [(F32, ("batch", "seq")), (I64, (2,)), (I64, (2,)), (I64, (2,)),
                                (I64, (2,))])
    check_runs(graph, [{"in0": data(b, s), **{f"in{i + 1}": v for i, v in enumerate(values)}}
                       for (b, s), values in zip(SIZES * 2, SLICES, strict=False)])


def test_squeeze_unsqueeze_of_runtime_axes() -> None:
    x = data(1, 3, 1)
    value_runs(Op.SQUEEZE, (F32, (1, 3, 1)), [(i64(0, 2),), (i64(-1, 0),)], lambda: x)
    value_runs(Op.SQUEEZE, (F32, (1, 3, 1)), [(i64(0),), (i64(-1),)], lambda: x)
    value_runs(Op.UNSQUEEZE, (F32, (2, 3)), [(i64(0, 3),), (i64(-1, 1),), (i64(2, 0),)],
               lambda: data(2, 3))


def test_split_of_runtime_sizes() -> None:
    x = data(2, 6)
    value_runs(Op.SPLIT, (F32, (2, 6)), [(i64(1, 2, 3),), (i64(0, 6, 0),), (i64(2, 2, 2),)],
               lambda: x, {"axis": 1}, outputs=3)
    graph = one_node(Op.SPLIT, [(F32, ("n", 2)), (I64, (2,))], {"axis": 0}, outputs=2)
    check_runs(graph, [{"in0": data(n, 2), "in1": i64(k, n - k)} for n, k in ((1, 0), (4, 3))])


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_of_runtime_pads(mode: str) -> None:
    x = data(3, 4)
    runs = [(i64(1, 2, 0, 1), np.float32(2.5)), (i64(0, -1, 2, -2), np.float32(-1)),
            (i64(-2, 0, 0, 3), np.float32(0))]
    value_runs(Op.PAD, (F32, (3, 4)), [(p, np.array(v, np.float32)) for p, v in runs],
               lambda: x, {"mode": mode})
    value_runs(Op.PAD, (F32, (3, 4)), [(i64(2, 1), np.array(1, np.float32), i64(-1)),
                                       (i64(1, 1), np.array(1, np.float32), i64(0))],
               lambda: x, {"mode": mode})
    graph = one_node(Op.PAD, [(F32, ("batch", "seq")), (I64, (4,))], {"mode": mode})
    check_runs(graph, [{"in0": data(b, s + 1), "in1": i64(b, 0, 1, s)} for b, s in SIZES])


def test_center_crop_pad_of_runtime_shape() -> None:
    x = data(3, 5)
    value_runs(Op.CENTER_CROP_PAD, (F32, (3, 5)), [(i64(2, 8),), (i64(6, 1),), (i64(3, 5),)],
               lambda: x)
    graph = one_node(Op.CENTER_CROP_PAD, [(F32, ("h", "w", 2)), i64(3, 4)], {"axes": [0, 1]})
    check_runs(graph, [{"in0": data(h, w, 2)} for h, w in ((1, 7), (6, 4))])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.int32, np.int64,
                                   np.float16])
def test_range_of_runtime_limits(dtype: Any) -> None:
    kind = DType.from_numpy(np.dtype(dtype))
    graph = one_node(Op.RANGE, [(kind, ()), (kind, ()), (kind, ())])
    runs = [(0, 5, 1), (10, 1, -3), (3, 3, 2), (-4, 7, 3), (7, 2, 1)]
    if np.dtype(dtype).kind == "f":
        runs += [(0.5, 2.25, 0.25), (1.0, -2.0, -0.7)]
    check_runs(graph, [{f"in{i}": np.array(v, dtype) for i, v in enumerate(r)} for r in runs])


def test_constant_of_shape_of_runtime_shape() -> None:
    graph = one_node(Op.CONSTANT_OF_SHAPE, [(I64, (2,))], {"value": np.array([1.5], np.float64)})
    check_runs(graph, [{"in0": i64(*s)} for s in ((2, 3), (0, 4), (1, 1))])


RESIZES: list[dict[str, Any]] = [
    {"mode": "nearest"},
    {"mode": "nearest", "nearest_mode": "floor", "coordinate_transformation_mode": "asymmetric"},
    {"mode": "nearest", "nearest_mode": "ceil", "coordinate_transformation_mode":
     "align_corners"},
    {"mode": "nearest", "nearest_mode": "round_prefer_ceil"},
    {"mode": "linear"},
    {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
    {"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"},
    {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
    {"mode": "linear", "antialias": 1},
    {"mode": "cubic"},
    {"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1},
    {"mode": "cubic", "antialias": 1, "coordinate_transformation_mode": "asymmetric"},
]
# The first of each mode in the fast tier, the rest of the matrix in the slow one.
FAST_RESIZES = (0, 4, 9)


@pytest.mark.parametrize("attrs", [
    pytest.param(a, marks=() if i in FAST_RESIZES else pytest.mark.slow,
                 id="-".join(map(str, a.values()))) for i, a in enumerate(RESIZES)])
def test_resize_of_runtime_scales(attrs: dict[str, Any]) -> None:
    graph = one_node(Op.RESIZE, [(F32, (4, 5)), None, (F32, (2,))], attrs)
    x = data(4, 5)
    scales = [(0.5, 1.5), (2, 0.8), (1, 1), (0.6, 0.34)]
    check_runs(graph, [{"in0": x, "in2": np.array(s, np.float32)} for s in scales])


def test_resize_of_runtime_scales_on_some_axes() -> None:
    graph = one_node(Op.RESIZE, [(F32, (1, 2, 3, 4)), None, (F32, (4,))], {"mode": "nearest"})
    x = data(1, 2, 3, 4)
    check_runs(graph, [{"in0": x, "in2": np.array(s, np.float32)}
                       for s in ((1, 1, 2, 0.5), (1, 2, 1, 1.3))])


def value_resize(attrs: Mapping[str, Any], x_shape: Shape, make_x: Any,
                 sizes: Sequence[np.ndarray], axes: Sequence[int] | None = None) -> None:
    graph = one_node(Op.RESIZE, [(F32, x_shape), None, None, (I64, sizes[0].shape)],
                     {**attrs, **({} if axes is None else {"axes": axes})})
    check_runs(graph, [{"in0": make_x(), "in3": s} for s in sizes])


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_resize_of_runtime_sizes(policy: str) -> None:
    x = data(1, 1, 3, 4)
    for mode in ("nearest", "linear", "cubic"):
        value_resize({"mode": mode, "keep_aspect_ratio_policy": policy}, (1, 1, 3, 4),
                     lambda: x, [i64(5, 2), i64(2, 7), i64(3, 4)], axes=[2, 3])


def test_resize_of_symbolic_input_and_integer_data() -> None:
    value_resize({"mode": "linear"}, ("n", 2), lambda: data(3, 2, dtype=np.int32).astype(
        np.float32), [i64(5, 3), i64(1, 2)])
    graph = one_node(Op.RESIZE, [(DType.U8, ("h", "w")), None, np.array([1.5, 0.5], np.float32)],
                     {"mode": "cubic"})
    check_runs(graph, [{"in0": RNG.integers(0, 256, (h, w)).astype(np.uint8)}
                       for h, w in ((2, 4), (5, 3))])


def test_resize_tf_crop_and_resize_of_runtime_roi() -> None:
    attrs = {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
             "extrapolation_value": 9.0, "axes": [1, 2]}
    graph = one_node(Op.RESIZE, [(F32, (1, 4, 4)), (F32, (4,)), None, (I64, (2,))], attrs)
    x = data(1, 4, 4)
    check_runs(graph, [{"in0": x, "in1": np.array(roi, np.float32), "in3": i64(*size)}
                       for roi, size in (((0, 0.2, 0.8, 1.2), (3, 3)),
                                         ((0.4, 0.6, 0.6, 0.4), (1, 5)))])


# ------------------------------------------------------------- invalid values at run time

FAILURES = [
    (Op.RESHAPE, (F32, (2, 3)), [i64(4, -1)], {}, "does not keep the input's element count"),
    (Op.RESHAPE, (F32, (2, 3)), [i64(-1, -1)], {}, "more than one -1"),
    (Op.RESHAPE, (F32, (2, 3)), [i64(3, -2)], {}, "shape entry 1 is below -1"),
    (Op.EXPAND, (F32, (2, 3)), [i64(4, 3)], {}, "does not broadcast"),
    (Op.TILE, (F32, (2, 3)), [i64(1, -1)], {}, "repeat count is negative"),
    (Op.SLICE, (F32, (2, 3)), [i64(0), i64(1), i64(0), i64(0)], {}, "slice step is 0"),
    (Op.SLICE, (F32, (2, 3)), [i64(0), i64(1), i64(2)], {}, r"axes entry 0 is outside"),
    (Op.SQUEEZE, (F32, (2, 1)), [i64(0)], {}, "axis 0 is squeezed but its extent is not 1"),
    (Op.UNSQUEEZE, (F32, (2, 1)), [i64(1, 1)], {}, "name one axis twice"),
    (Op.PAD, (F32, (2, 3)), [i64(0, -2, 0, -2)], {}, "crop more than the extent of axis 1"),
    (Op.PAD, (F32, (2, 0)), [i64(0, 1, 0, 0)], {"mode": "edge"}, "empty tensor in edge mode"),
    (Op.CENTER_CROP_PAD, (F32, (2, 3)), [i64(2, -1)], {}, "extent of axis 1 is negative"),
    (Op.CONSTANT_OF_SHAPE, None, [i64(2, -3)], {}, "negative extent"),
]


@pytest.mark.parametrize("op, x, values, attrs, message", FAILURES,
                         ids=[f[0].value + str(i) for i, f in enumerate(FAILURES)])
def test_invalid_runtime_values_report(op: Op, x: tuple[DType, Shape] | None,
                                       values: list[np.ndarray], attrs: dict[str, Any],
                                       message: str) -> None:
    inputs: list[Any] = [] if x is None else [x]
    inputs += [(DType.from_numpy(v.dtype), v.shape) for v in values]
    graph = one_node(op, inputs, attrs)
    feeds = {f"in{i}": v for i, v in enumerate(values, start=len(inputs) - len(values))}
    if x is not None:
        feeds["in0"] = np.zeros([d for d in x[1] if isinstance(d, int)], np.float32)
    check_fails(graph, feeds, f"{op.value}: .*{message}")


def test_invalid_split_and_range_report() -> None:
    graph = one_node(Op.SPLIT, [(F32, (5,)), (I64, (2,))], {}, outputs=2)
    check_fails(graph, {"in0": data(5), "in1": i64(2, 2)}, "do not add up to the extent of axis 0")
    graph = one_node(Op.RANGE, [(I64, ()), (I64, ()), (I64, ())])
    check_fails(graph, {f"in{i}": np.array(v) for i, v in enumerate((0, 4, 0))}, "delta is 0")
    graph = one_node(Op.RANGE, [(F32, ()), (F32, ()), (F32, ())])
    check_fails(graph, {f"in{i}": np.array(v, np.float32) for i, v in
                        enumerate((0, np.inf, 1))}, "number of elements is not finite")


def test_mismatched_concat_and_squeezed_runtime_one_report() -> None:
    graph = one_node(Op.CONCAT, [(F32, ("n", "a")), (F32, ("n", "b"))], {"axis": 0})
    check_fails(graph, {"in0": data(1, 2), "in1": data(1, 3)}, "input 1 differs from the output")
    graph = one_node(Op.SQUEEZE, [(F32, ("n", 2))])
    check_fails(graph, {"in0": data(1, 2)}, "extent known only at run time is 1")


# ---------------------------------------------------------------- static graphs unchanged

def test_static_graphs_keep_their_single_kernel() -> None:
    """Constant values on static inputs lower to one kernel, without DIMS."""
    for op, extra in ((Op.SLICE, [i64(1), i64(3)]), (Op.PAD, [i64(1, 0, 0, 2)]),
                      (Op.RESHAPE, [i64(-1)]), (Op.TILE, [i64(2, 1)]),
                      (Op.RESIZE, [None, np.array([2, 1], np.float32)])):
        lowered = lower_graph(one_node(op, [(F32, (4, 4)), *extra]))
        assert lowered.is_static
        (step,) = lowered.steps
        assert len(step.kernels) == 1 + (op is Op.RESIZE)
        assert all(DIMS not in k.params for k in step.kernels)


# ------------------------------------------------------------------------ onnxruntime

def test_runtime_values_match_onnxruntime() -> None:
    """ONNX models whose shape operands are graph inputs, imported, lowered once and run."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from kiln.frontends.onnx import load_onnx

    def model(node: Any, inputs: list[Any]) -> Any:
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", "columns"])
        graph = helper.make_graph([node], "g", inputs, [out])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)],
                                 ir_version=9)

    f32 = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])]
    cases = [
        (helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["y"]),
         f32 + [helper.make_tensor_value_info(n, TensorProto.INT64, [1]) for n in "seat"],
         [{"s": i64(-1), "e": i64(-10), "a": i64(1), "t": i64(-2)},
          {"s": i64(1), "e": i64(100), "a": i64(0), "t": i64(1)}]),
        (helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect"),
         f32 + [helper.make_tensor_value_info("p", TensorProto.INT64, [4])],
         [{"p": i64(0, 2, 0, 3)}, {"p": i64(0, -1, 0, 1)}]),
        (helper.make_node("Resize", ["x", "", "", "z"], ["y"], mode="cubic"),
         f32 + [helper.make_tensor_value_info("z", TensorProto.INT64, [2])],
         [{"z": i64(3, 9)}, {"z": i64(4, 2)}]),
    ]
    for node, inputs, runs in cases:
        proto = model(node, inputs)
        onnx.checker.check_model(proto)
        session = ort.InferenceSession(proto.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        lowered = lower_graph(load_onnx(proto))
        for n, values in zip((2, 5), runs, strict=True):
            feeds = {"x": data(n, 6), **values}
            want = session.run(None, feeds)[0]
            got = interpret_lowered(lowered, feeds)[0]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_chain_of_runtime_shapes() -> None:
    """Extents defined by one node's shape kernel size the next nodes (one library)."""
    builder = GraphBuilder(fold=False)
    x = builder.add_input("x", TensorType(F32, ("batch", "seq", 4)))
    target = builder.add_input("target", TensorType(I64, (2,)))
    pads = builder.add_input("pads", TensorType(I64, (4,)))
    ends = builder.add_input("ends", TensorType(I64, (1,)))
    reshaped = builder.add1(Op.RESHAPE, [x, target])
    moved = builder.add1(Op.TRANSPOSE, [reshaped], {"perm": [1, 0]})
    padded = builder.add1(Op.PAD, [moved, pads], {"mode": "edge"})
    cut = builder.add1(Op.SLICE, [padded, builder.constant(i64(1)), ends])
    graph = builder.finish([cut, builder.add1(Op.SHAPE, [cut])])
    check_runs(graph, [{"x": data(b, s, 4), "target": i64(-1, 2), "pads": i64(1, 0, 0, 2),
                        "ends": i64(e)} for (b, s), e in zip(SIZES, (3, -1, 100), strict=True)])


AFTER_UNKNOWN: dict[str, tuple[Op, list[Any], dict[str, Any]]] = {
    "transpose": (Op.TRANSPOSE, [], {}),
    "trilu": (Op.TRILU, [], {}),
    "eye_like": (Op.EYE_LIKE, [], {}),
    "bit_cast": (Op.BIT_CAST, [], {"to": DType.I32}),
    "concat": (Op.CONCAT, ["self"], {"axis": 1}),
    "split": (Op.SPLIT, [], {"axis": 0, "num_outputs": 2}),
    "slice": (Op.SLICE, [i64(1), i64(-1)], {}),
    "expand": (Op.EXPAND, [i64(2, 1, 1)], {}),
    "tile": (Op.TILE, [i64(2, 1)], {}),
    "pad": (Op.PAD, [i64(1, 0, 0, 2)], {"mode": "reflect"}),
    "resize": (Op.RESIZE, [None, np.array([1, 2], np.float32)], {}),
    "unsqueeze": (Op.UNSQUEEZE, [i64(1)], {}),
    "flatten": (Op.FLATTEN, [], {"axis": 0}),
    "shape": (Op.SHAPE, [], {}),
    "depth_to_space": (Op.DEPTH_TO_SPACE, [], {"blocksize": 2}),
}


@pytest.mark.parametrize("case", sorted(AFTER_UNKNOWN))
def test_extents_known_from_values_flow_on(case: str) -> None:
    """An op whose input extents were defined from values (a Reshape to a run-time shape)
    defines its own output extents from them."""
    op, extra, attrs = AFTER_UNKNOWN[case]
    rank = 4 if op is Op.DEPTH_TO_SPACE else 2
    builder = GraphBuilder(fold=False)
    x = builder.add_input("x", TensorType(F32, (4, 6)))
    target = builder.add_input("target", TensorType(I64, (rank,)))
    reshaped = builder.add1(Op.RESHAPE, [x, target])
    operands = [reshaped] + [reshaped if isinstance(e, str) else None if e is None else
                             builder.constant(e) for e in extra]
    results = builder.add(op, operands, attrs, outputs=2 if op is Op.SPLIT else 1)
    graph = builder.finish([reshaped, *results])
    shapes = [(1, 8, 1, 3), (1, 4, 3, 2)] if rank == 4 else [(4, 6), (2, 12), (6, 4)]
    check_runs(graph, [{"x": data(4, 6), "target": i64(*s)} for s in shapes])



@functools.cache
def _one_library(op: Op, attrs: tuple[tuple[str, Any], ...] = ()) -> tuple[Graph, LoweredGraph,
                                                                         Any]:
    """A [rows, columns] f32 input and run-time i64 operands (each of 2 entries) into ``op``:
    the graph, its lowering and its library, made once for every example."""
    count = {Op.SLICE: 4, Op.PAD: 1}[op]
    graph = one_node(op, [(F32, ("rows", "columns")),
                          *[(I64, (4 if op is Op.PAD else 2,))] * count], dict(attrs))
    return graph, lower_graph(graph), build(graph)


def _agree(graph: Graph, lowered: LoweredGraph, library: Any,
           feeds: dict[str, np.ndarray]) -> None:
    """The interpreted and compiled runs give the reference's result, or all three fail."""
    try:
        want = reference.run(graph, dict(feeds))
    except KilnError:
        with pytest.raises(KilnError):
            interpret_lowered(lowered, feeds)
        with pytest.raises(KilnRuntimeError):
            library.run(dict(feeds))
        return
    for got in (interpret_lowered(lowered, feeds), library.run(dict(feeds))):
        assert_same(np.asarray(got[0]), want[0])


BOUND = st.integers(-8, 8) | st.sampled_from([2**62, -(2**62), 2**63 - 1, -(2**63)])


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 4), columns=st.integers(1, 5),
       starts=st.tuples(BOUND, BOUND), ends=st.tuples(BOUND, BOUND),
       axes=st.sampled_from([(0, 1), (1, 0), (-1, -2), (1, -1)]),
       steps=st.tuples(st.integers(-3, 3), st.integers(-3, 3)))
def test_slice_agrees_for_any_values(rows: int, columns: int, starts: tuple[int, int],
                                     ends: tuple[int, int], axes: tuple[int, int],
                                     steps: tuple[int, int]) -> None:
    """Any starts / ends / axes / steps (clamped, negative, repeated axes, zero steps)."""
    graph, lowered, library = _one_library(Op.SLICE)
    _agree(graph, lowered, library, {"in0": data(rows, columns), "in1": i64(*starts),
                                     "in2": i64(*ends), "in3": i64(*axes), "in4": i64(*steps)})


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 3), columns=st.integers(1, 4),
       pads=st.tuples(*[st.integers(-4, 4)] * 4),
       mode=st.sampled_from(["constant", "reflect", "edge", "wrap"]))
def test_pad_agrees_for_any_pads(rows: int, columns: int, pads: tuple[int, ...],
                                 mode: str) -> None:
    """Any growing or cropping pads, emptying ones included. (Crops that together exceed an
    extent are Reported; the reference crops first and then pads there, which contradicts
    its own output type, so they are left out.)"""
    for extent, lo, hi in ((rows, pads[0], pads[2]), (columns, pads[1], pads[3])):
        assume(max(-lo, 0) + max(-hi, 0) <= extent)
    graph, lowered, library = _one_library(Op.PAD, (("mode", mode),))
    _agree(graph, lowered, library, {"in0": data(rows, columns), "in1": i64(*pads)})
