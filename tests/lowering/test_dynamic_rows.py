"""Run-time extents in the elementwise, fused, reduce, normalization and misc lowerings.

Each graph is lowered ONCE with symbolic input dims and interpreted at several sizes against the
numpy reference executor: rows and batch axes of run-time length keep the static inner
schedule; run-time broadcasting (an extent that may be 1) reads with a run-time select and
Reports shapes that do not broadcast; Reduce* with run-time axes (values, not just extents)
define their output extents in a shape kernel; CumSum/CumProd take a run-time axis.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from kiln.compiler import reference
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import LoweredGraph, interpret_lowered, lower_graph
from kiln.compiler.lower.inline import walk
from kiln.compiler.lower.kernel_ir import Const, Loop, LoopKind, Select
from kiln.compiler.passes.pipeline import optimize
from kiln.runtime import KilnRuntimeError

Shape = tuple[int | str, ...]
Sizes = Sequence[Mapping[str, int]]
# batch-like sizes: one (the broadcasting corner), small, odd and not a multiple of a vector
BATCHES: Sizes = ({"b": 1}, {"b": 3}, {"b": 17})


def graph_of(op: Op, inputs: Sequence[Shape | np.ndarray | tuple[DType, Shape]],
             attrs: Mapping[str, Any] | None = None, outputs: int = 1) -> Graph:
    """One ``op`` node; an array input is a constant, a shape an f32 input (or a
    (dtype, shape) pair), named x0, x1, ..."""
    builder = GraphBuilder(fold=False)
    values = []
    for index, spec in enumerate(inputs):
        if isinstance(spec, np.ndarray):
            values.append(builder.constant(spec))
            continue
        dtype, shape = spec if isinstance(spec[0], DType) else (DType.F32, spec)
        values.append(builder.add_input(f"x{index}", TensorType(dtype, shape)))  # type: ignore[arg-type]
    results = builder.add(op, values, dict(attrs or {}), outputs=outputs)
    return builder.finish([v for v in results if v is not None])


def feeds_for(graph: Graph, sizes: Mapping[str, int], seed: int = 0,
              values: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Random inputs of ``graph`` with its symbols set to ``sizes`` (``values`` given as is)."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for value in graph.inputs:
        if values and value.name in values:
            feeds[value.name] = values[value.name]
            continue
        shape = tuple(sizes[d] if isinstance(d, str) else d for d in value.type.shape)
        dtype = value.type.dtype.numpy
        if value.type.dtype is DType.BOOL:
            feeds[value.name] = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            feeds[value.name] = rng.integers(-5, 6, shape).astype(dtype)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def check(graph: Graph, sizes: Sizes, lowered: LoweredGraph | None = None,
          values: Mapping[str, np.ndarray] | None = None, rtol: float = 1e-5,
          atol: float = 1e-5) -> LoweredGraph:
    """``graph`` lowered once, interpreted at every entry of ``sizes``, matches the reference."""
    lowered = lower_graph(graph) if lowered is None else lowered
    assert not lowered.is_static
    for seed, size in enumerate(sizes):
        feeds = feeds_for(graph, size, seed, values)
        expected = reference.run(graph, feeds)
        with np.errstate(all="ignore"):
            got = interpret_lowered(lowered, feeds)
        for want, found in zip(expected, got, strict=True):
            assert found.shape == want.shape and found.dtype == want.dtype, size
            np.testing.assert_allclose(found, want, rtol=rtol, atol=atol, err_msg=str(size))
    return lowered


def loops(lowered: LoweredGraph) -> list[Loop]:
    return [n for s in lowered.steps for k in s.kernels for n in walk(k.body)
            if isinstance(n, Loop)]


# -- elementwise ------------------------------------------------------------------------------

@pytest.mark.parametrize(("shapes", "sizes"), [
    ((("b", 5), ("b", 5)), BATCHES),
    ((("b", 5), (5,)), BATCHES),
    ((("b", 1), (1, 5)), BATCHES),
    ((("b", "s", 4), ("s", 4)), ({"b": 1, "s": 2}, {"b": 3, "s": 1}, {"b": 2, "s": 5})),
    # two unrelated symbols: the output extent is the run-time broadcast of both
    ((("b", 4), ("s", 4)), ({"b": 1, "s": 3}, {"b": 3, "s": 1}, {"b": 2, "s": 2})),
    ((("b", 1, 3), ("s", 3)), ({"b": 2, "s": 1}, {"b": 1, "s": 4}, {"b": 3, "s": 3})),
], ids=str)
def test_binary_broadcasting(shapes: tuple[Shape, ...], sizes: Sizes) -> None:
    check(graph_of(Op.ADD, shapes), sizes)


def test_shapes_that_do_not_broadcast_report() -> None:
    lowered = lower_graph(graph_of(Op.MUL, [("b", 4), ("s", 4)]))
    feeds = {"x0": np.ones((2, 4), np.float32), "x1": np.ones((3, 4), np.float32)}
    with pytest.raises(KilnError, match=re.escape("mul") + ".*do not broadcast"):
        interpret_lowered(lowered, feeds)


def test_run_time_extent_against_a_static_one_reports() -> None:
    # [b] + [4]: b must be 1 or 4 at run time
    lowered = check(graph_of(Op.SUB, [("b",), (4,)]), ({"b": 1}, {"b": 4}))
    with pytest.raises(KilnError, match="input 0 axis 0 .*do not broadcast"):
        interpret_lowered(lowered, {"x0": np.ones(3, np.float32), "x1": np.ones(4, np.float32)})


@pytest.mark.parametrize(("op", "inputs", "attrs"), [
    (Op.RELU, [("b", 7)], {}),
    (Op.TANH, [("b", "s", 3)], {}),
    (Op.GELU, [("b", 9)], {"approximate": "tanh"}),
    (Op.CAST, [("b", 3)], {"to": DType.I32}),
    (Op.CLIP, [("b", 6), np.array(-0.5, np.float32), np.array(0.5, np.float32)], {}),
    (Op.WHERE, [(DType.BOOL, ("b", 4)), ("b", 4), (4,)], {}),
    (Op.SUM, [("b", 3), (3,), ("b", 1)], {}),
    (Op.POW, [("b", 5), np.array(2.0, np.float32)], {}),
    (Op.PRELU, [("b", 3, 2), (3, 1)], {}),
], ids=lambda v: getattr(v, "value", None))
def test_elementwise_ops(op: Op, inputs: list[Any], attrs: dict[str, Any]) -> None:
    sizes = [{"b": b, "s": s} for b, s in ((1, 2), (3, 1), (17, 3))]
    check(graph_of(op, inputs, attrs), sizes)


@pytest.mark.parametrize("dtype", [DType.I8, DType.I32, DType.U8])
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bit_shift_counts_outside_the_width(dtype: DType, direction: str) -> None:
    """numpy's shifts (the reference): a count outside [0, bits) gives 0, a signed right shift
    the sign fill."""
    graph = graph_of(Op.BIT_SHIFT, [(dtype, ("b",)), (dtype, ("b",))], {"direction": direction})
    lowered = lower_graph(graph)
    data = np.array([-8, 4, -1, 100, -128, 3], dtype.numpy) if dtype.is_signed else np.array(
        [8, 4, 1, 100, 255, 3], dtype.numpy)
    counts = np.array([-1, 40, 64, 7, 1, 0] if dtype.is_signed else [1, 40, 64, 7, 8, 0],
                      dtype.numpy)
    check(graph, [{"b": 6}], lowered, values={"x0": data, "x1": counts})


def test_elementwise_keeps_a_static_vectorized_inner_loop() -> None:
    lowered = check(graph_of(Op.ADD, [("b", "s", 64), (64,)]),
                    [{"b": 2, "s": 3}, {"b": 1, "s": 1}])
    nest = loops(lowered)
    assert nest[0].kind is LoopKind.PARALLEL  # the run-time batch (see common.py's guess)
    inner = nest[-1]
    assert inner.kind is LoopKind.VECTORIZE and isinstance(inner.extent, Const)
    assert inner.extent.value == 64


def test_elementwise_collapses_run_time_axes_walked_together() -> None:
    # x + y over [b, s, 8] with both operands of that shape: one flat loop (no parallel split
    # of the first axis for this little work... a run-time extent counts as large, so the
    # first axis stays parallel and the rest merges into one vectorized loop)
    lowered = check(graph_of(Op.MUL, [("b", "s", 8), ("b", "s", 8)]),
                    [{"b": 2, "s": 3}, {"b": 1, "s": 5}])
    assert [loop.kind for loop in loops(lowered)] == [LoopKind.PARALLEL, LoopKind.VECTORIZE]


# -- fused groups -----------------------------------------------------------------------------

def _fused_graph() -> Graph:
    builder = GraphBuilder()
    x = builder.add_input("x", TensorType(DType.F32, ("b", "s", 16)))
    y = builder.add_input("y", TensorType(DType.F32, ("s", 16)))
    scaled = builder.add1(Op.MUL, [builder.add1(Op.ADD, [x, y]), builder.constant(
        np.float32(2.0))])
    activated = builder.add1(Op.RELU, [scaled])
    probabilities = builder.add1(Op.SOFTMAX, [activated], {"axis": -1})
    shifted = builder.add1(Op.ADD, [probabilities, builder.constant(np.float32(1.0))])
    normalized = builder.add1(Op.LAYER_NORMALIZATION, [
        shifted, builder.constant(np.linspace(0.5, 1.5, 16, dtype=np.float32)),
        builder.constant(np.zeros(16, np.float32))], {"axis": -1})
    mean = builder.add1(Op.REDUCE_MEAN, [normalized, builder.constant(np.array([1]))],
                        {"keepdims": 0})
    return builder.finish([activated, normalized, mean])


def test_fused_groups_with_run_time_batch_and_sequence() -> None:
    graph = _fused_graph()
    optimized = optimize(graph, 2)
    assert sum(n.op is Op.FUSED for n in optimized.nodes) >= 2
    lowered = lower_graph(optimized)
    for seed, size in enumerate([{"b": 1, "s": 2}, {"b": 3, "s": 1}, {"b": 2, "s": 5}]):
        feeds = feeds_for(graph, size, seed)
        for want, got in zip(reference.run(graph, feeds), interpret_lowered(lowered, feeds),
                             strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fused_group_reports_a_run_time_broadcast_mismatch() -> None:
    builder = GraphBuilder()
    x = builder.add_input("x", TensorType(DType.F32, ("b", 4)))
    y = builder.add_input("y", TensorType(DType.F32, ("c", 4)))
    out = builder.add1(Op.RELU, [builder.add1(Op.MUL, [x, builder.add1(Op.EXP, [x])])])
    graph = builder.finish([builder.add1(Op.ADD, [out, y])])
    check(graph, [{"b": 1, "c": 3}, {"b": 2, "c": 1}])
    optimized = optimize(graph, 2)
    lowered = lower_graph(optimized)
    check(graph, [{"b": 3, "c": 3}, {"b": 1, "c": 2}], lowered)
    feeds = {"x": np.ones((2, 4), np.float32), "y": np.ones((3, 4), np.float32)}
    with pytest.raises(KilnError, match="do not broadcast"):
        interpret_lowered(lowered, feeds)


# -- reductions along axes --------------------------------------------------------------------

@pytest.mark.parametrize(("op", "shape", "axes", "keepdims"), [
    (Op.REDUCE_SUM, ("b", 40), [1], 1),
    (Op.REDUCE_SUM, ("b", 4), [0], 0),
    (Op.REDUCE_MAX, (3, "b"), [1], 0),
    (Op.REDUCE_MEAN, ("b", 3, "s"), [0, 2], 1),
    (Op.REDUCE_MEAN, ("b", 33), [1], 0),
    (Op.REDUCE_L2, ("b", 5), [1], 0),
    (Op.REDUCE_LOG_SUM_EXP, ("b", 4), [1], 0),
    (Op.REDUCE_PROD, ("s", "b"), [0], 1),
], ids=str)
def test_reduce_over_run_time_extents(op: Op, shape: Shape, axes: list[int],
                                      keepdims: int) -> None:
    sizes = [{"b": b, "s": s} for b, s in ((1, 2), (3, 1), (17, 4))]
    check(graph_of(op, [shape, np.array(axes)], {"keepdims": keepdims}), sizes, rtol=1e-4)


def test_reduce_mean_of_an_empty_run_time_axis() -> None:
    check(graph_of(Op.REDUCE_SUM, [("b", 3), np.array([0])], {"keepdims": 0}),
          [{"b": 0}, {"b": 2}])


@pytest.mark.parametrize(("op", "shape", "attrs"), [
    (Op.SOFTMAX, ("b", 40), {"axis": -1}),
    (Op.SOFTMAX, ("b", 4), {"axis": 0}),
    (Op.SOFTMAX, (3, "b"), {"axis": -1}),
    (Op.LOG_SOFTMAX, ("b", "s", 5), {"axis": 1}),
    (Op.HARDMAX, ("b", 4), {"axis": 1}),
    (Op.ARGMAX, ("b", 4), {"axis": 0, "keepdims": 1}),
    (Op.ARGMIN, ("b", "s"), {"axis": 1, "keepdims": 0, "select_last_index": 1}),
    (Op.LP_NORMALIZATION, ("b", 6), {"axis": 1, "p": 2}),
    (Op.LP_NORMALIZATION, ("b", 6), {"axis": 0, "p": 1}),
], ids=str)
def test_along_one_axis(op: Op, shape: Shape, attrs: dict[str, Any]) -> None:
    sizes = [{"b": b, "s": s} for b, s in ((1, 2), (3, 1), (17, 4))]
    check(graph_of(op, [shape], attrs), sizes)


def test_softmax_rows_keep_the_static_lane_fold() -> None:
    lowered = check(graph_of(Op.SOFTMAX, [("b", 768)], {"axis": -1}), [{"b": 1}, {"b": 3}])
    nest = loops(lowered)
    assert nest[0].kind is LoopKind.PARALLEL  # blocks of run-time rows
    vectorized = [n for n in nest if n.kind is LoopKind.VECTORIZE]
    assert vectorized and all(isinstance(n.extent, Const) for n in vectorized)


def test_arg_max_of_an_empty_run_time_axis_reports() -> None:
    lowered = lower_graph(graph_of(Op.ARGMAX, [("b", 3)], {"axis": 0}))
    with pytest.raises(KilnError, match="argmax.*empty"):
        interpret_lowered(lowered, {"x0": np.ones((0, 3), np.float32)})


@pytest.mark.parametrize("op", [Op.CUMSUM, Op.CUMPROD])
@pytest.mark.parametrize(("exclusive", "reverse"), [(0, 0), (1, 1)])
def test_scan_along_a_constant_axis(op: Op, exclusive: int, reverse: int) -> None:
    check(graph_of(op, [("b", 4), np.array(0)], {"exclusive": exclusive, "reverse": reverse}),
          BATCHES, rtol=1e-4)


@pytest.mark.parametrize(("exclusive", "reverse"), [(0, 0), (1, 0), (0, 1)])
def test_scan_along_a_run_time_axis(exclusive: int, reverse: int) -> None:
    graph = graph_of(Op.CUMSUM, [("b", 3, 4), (DType.I64, ())],
                     {"exclusive": exclusive, "reverse": reverse})
    lowered = lower_graph(graph)
    for axis in (0, 1, 2, -1, -3):
        check(graph, [{"b": 2}, {"b": 1}], lowered, values={"x1": np.array(axis)})
    with pytest.raises(KilnError, match="cumsum.*axis input is out of range"):
        interpret_lowered(lowered, {"x0": np.ones((2, 3, 4), np.float32), "x1": np.array(3)})


# -- Reduce* with run-time axes ---------------------------------------------------------------

@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("op", [Op.REDUCE_SUM, Op.REDUCE_MEAN, Op.REDUCE_MAX,
                                Op.REDUCE_LOG_SUM_EXP])
def test_reduce_with_run_time_axes(op: Op, keepdims: int) -> None:
    graph = graph_of(op, [("b", 3, 4), (DType.I64, (2,))], {"keepdims": keepdims})
    lowered = lower_graph(graph)
    for axes in ([0, 2], [2, 1], [-1, 0], [1, -3]):
        check(graph, [{"b": 2}, {"b": 1}], lowered, values={"x1": np.array(axes)}, rtol=1e-4)


@pytest.mark.parametrize("noop", [0, 1])
def test_reduce_with_run_time_axes_of_run_time_length(noop: int) -> None:
    graph = graph_of(Op.REDUCE_SUM, [("b", 3), (DType.I64, ("n",))],
                     {"keepdims": 1, "noop_with_empty_axes": noop})
    lowered = lower_graph(graph)
    for axes in ([], [1], [0, 1], [-2]):
        check(graph, [{"b": 2, "n": len(axes)}], lowered,
              values={"x1": np.array(axes, np.int64)})


def test_elementwise_after_value_dependent_extents() -> None:
    """Unary and binary ops on a value whose extents depend on values (a Reduce* over run-time
    axes): each defines its output extents; a lone operand's extent is indexed directly."""
    builder = GraphBuilder(fold=False)
    x = builder.add_input("x", TensorType(DType.F32, ("b", 3)))
    axes = builder.add_input("axes", TensorType(DType.I64, (1,)))
    reduced = builder.add1(Op.REDUCE_SUM, [x, axes], {"keepdims": 1})
    exp = builder.add1(Op.EXP, [reduced])
    graph = builder.finish([builder.add1(Op.ADD, [exp, builder.add1(Op.NEG, [reduced])])])
    lowered = lower_graph(graph)
    for axis in (0, 1):
        check(graph, [{"b": 2}, {"b": 1}], lowered, values={"axes": np.array([axis])})
    (exp_step,) = [s for s in lowered.steps if s.node.op is Op.EXP]
    assert not any(isinstance(n, Select) for k in exp_step.kernels for n in walk(k.body))


@pytest.mark.parametrize(("axes", "message"), [
    ([0, 2], "out of range for rank 2"),
    ([1, -1], "repeats an axis"),
])
def test_reduce_with_bad_run_time_axes_reports(axes: list[int], message: str) -> None:
    lowered = lower_graph(graph_of(Op.REDUCE_MAX, [("b", 3), (DType.I64, (2,))],
                                   {"keepdims": 1}))
    with pytest.raises(KilnError, match=f"reduce_max.*{message}"):
        interpret_lowered(lowered, {"x0": np.ones((2, 3), np.float32), "x1": np.array(axes)})


# -- normalizations and misc ------------------------------------------------------------------

@pytest.mark.parametrize(("op", "inputs", "attrs"), [
    (Op.LAYER_NORMALIZATION, [("b", 40), np.ones(40, np.float32), np.zeros(40, np.float32)],
     {"axis": -1}),
    (Op.LAYER_NORMALIZATION, [("b", "s", 8), (8,), (8,)], {"axis": -1}),
    (Op.LAYER_NORMALIZATION, [("b", "s"), ("s",)], {"axis": -1}),
    (Op.RMS_NORMALIZATION, [("b", 8), (8,)], {"axis": -1}),
    (Op.BATCH_NORMALIZATION, [("b", 3, "s"), (3,), (3,), (3,), np.full(3, 2, np.float32)],
     {}),
    (Op.INSTANCE_NORMALIZATION, [("b", 3, "s"), (3,), (3,)], {}),
    (Op.GROUP_NORMALIZATION, [("b", 4, "s"), (4,), (4,)], {"num_groups": 2}),
    (Op.LRN, [("b", 4, "s", 2)], {"size": 3}),
    (Op.MEAN_VARIANCE_NORMALIZATION, [("b", 3, 2, 2)], {"axes": [0, 2, 3]}),
    (Op.DROPOUT, [("b", 4)], {}),
    (Op.DEQUANTIZE_LINEAR, [(DType.I8, ("b", 4)), np.array(0.5, np.float32)], {}),
    (Op.QUANTIZE_LINEAR, [("b", 4), np.array(0.25, np.float32), np.array(3, np.uint8)], {}),
], ids=lambda v: getattr(v, "value", None))
def test_normalizations_and_misc(op: Op, inputs: list[Any], attrs: dict[str, Any]) -> None:
    sizes = [{"b": b, "s": s} for b, s in ((1, 2), (3, 1), (5, 3))]
    check(graph_of(op, inputs, attrs), sizes, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("op", "inputs", "attrs", "outputs"), [
    (Op.DET, [("b", 3, 3)], {}, 1),
    (Op.AFFINE_GRID, [("b", 2, 3), np.array([1, 1, 4, 5])], {}, 1),
    (Op.DYNAMIC_QUANTIZE_LINEAR, [("b", 3)], {}, 3),
    (Op.DYNAMIC_QUANTIZE_LINEAR, [("b", 70)], {}, 3),
    (Op.LAYOUT_TRANSFORM, [("b", 3, 2, "s")], {"src_layout": "NCHW", "dst_layout": "NCHW8c"},
     1),
    # training mode with ratio 0: the identity through the random path
    (Op.DROPOUT, [("b", 4), np.array(0.0, np.float32), np.array(True)], {}, 2),
], ids=lambda v: getattr(v, "value", None))
def test_misc_ops(op: Op, inputs: list[Any], attrs: dict[str, Any], outputs: int) -> None:
    check(graph_of(op, inputs, attrs, outputs), [{"b": 1, "s": 2}, {"b": 3, "s": 1}],
          rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("align", [0, 1])
def test_affine_grid_of_a_run_time_size(align: int) -> None:
    graph = graph_of(Op.AFFINE_GRID, [("b", 2, 3), (DType.I64, (4,))], {"align_corners": align})
    lowered = lower_graph(graph)
    for b, height, width in ((1, 1, 4), (3, 5, 2)):
        check(graph, [{"b": b}], lowered, values={"x1": np.array([b, 1, height, width])})
    with pytest.raises(KilnError, match="affine_grid.*size"):
        interpret_lowered(lowered, {"x0": np.ones((2, 2, 3), np.float32),
                                    "x1": np.array([3, 1, 2, 2])})


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_losses_over_a_run_time_batch(reduction: str) -> None:
    rng = np.random.default_rng(1)
    nll = graph_of(Op.NEGATIVE_LOG_LIKELIHOOD_LOSS, [("b", 3, "s"), (DType.I64, ("b", "s"))],
                   {"reduction": reduction, "ignore_index": 1})
    cross = graph_of(Op.SOFTMAX_CROSS_ENTROPY_LOSS, [("b", 3), (DType.I64, ("b",))],
                     {"reduction": reduction}, outputs=2)
    for graph in (nll, cross):
        lowered = lower_graph(graph)
        for b, s in ((1, 2), (4, 1)):
            labels = rng.integers(0, 3, (b, s) if graph is nll else (b,))
            check(graph, [{"b": b, "s": s}], lowered, values={"x1": labels}, rtol=1e-4)


@pytest.mark.parametrize(("op", "inputs", "attrs"), [
    (Op.RANDOM_UNIFORM_LIKE, [("b", 3)], {"seed": 1.0}),
    (Op.RANDOM_NORMAL_LIKE, [("b", "s")], {"seed": 2.0}),
    (Op.BERNOULLI, [("b", 3)], {"seed": 1.0}),
    (Op.MULTINOMIAL, [("b", "s")], {"sample_size": 2, "seed": 1.0}),
], ids=lambda v: getattr(v, "value", None))
def test_random_ops_over_run_time_extents(op: Op, inputs: list[Any],
                                          attrs: dict[str, Any]) -> None:
    """Random values differ from the reference's numpy draws by design: shape and dtype."""
    graph = graph_of(op, inputs, attrs)
    lowered = lower_graph(graph)
    for size in ({"b": 1, "s": 2}, {"b": 4, "s": 3}):
        feeds = feeds_for(graph, size)
        if op is Op.BERNOULLI:
            feeds["x0"] = np.abs(feeds["x0"]) % 1
        (want,), (got,) = reference.run(graph, feeds), interpret_lowered(lowered, feeds)
        assert got.shape == want.shape and got.dtype == want.dtype


def test_layer_norm_rows_keep_the_static_row_body() -> None:
    graph = graph_of(Op.LAYER_NORMALIZATION, [("b", 768), np.ones(768, np.float32),
                                              np.zeros(768, np.float32)], {"axis": -1})
    lowered = check(graph, [{"b": 1}, {"b": 2}], rtol=1e-4)
    nest = loops(lowered)
    assert nest[0].kind is LoopKind.PARALLEL
    vectorized = [n for n in nest if n.kind is LoopKind.VECTORIZE]
    assert len(vectorized) >= 3 and all(isinstance(n.extent, Const) for n in vectorized)


# -- the compiled path: one library for every size --------------------------------------------

@pytest.mark.parametrize("name", ["broadcast", "unknown", "layer_norm", "softmax", "fused",
                                  "reduce_axes", "scan_axis"])
def test_one_library_for_every_size(name: str) -> None:
    from kiln.compiler import build

    values: dict[str, np.ndarray] = {}
    sizes: list[dict[str, int]] = [{"b": 1, "s": 2}, {"b": 3, "s": 1}, {"b": 17, "s": 5}]
    if name == "broadcast":
        graph = graph_of(Op.ADD, [("b", "s", 4), ("s", 4)])
    elif name == "unknown":
        graph = graph_of(Op.MUL, [("b", 4), ("s", 4)])
        sizes = [{"b": 1, "s": 3}, {"b": 3, "s": 1}, {"b": 2, "s": 2}]
    elif name == "layer_norm":
        graph = graph_of(Op.LAYER_NORMALIZATION, [("b", "s", 8), (8,), (8,)], {"axis": -1})
    elif name == "softmax":
        graph = graph_of(Op.SOFTMAX, [("b", 40)], {"axis": -1})
    elif name == "fused":
        graph = optimize(_fused_graph(), 2)
    elif name == "reduce_axes":
        graph = graph_of(Op.REDUCE_MEAN, [("b", 3, 4), (DType.I64, (2,))], {"keepdims": 0})
        values = {"x1": np.array([2, -3])}
    else:
        graph = graph_of(Op.CUMPROD, [("b", 3, 4), (DType.I64, ())], {"reverse": 1})
        values = {"x1": np.array(-2)}
    exe = build(graph)
    for seed, size in enumerate(sizes):
        feeds = feeds_for(graph, size, seed, values)
        for want, got in zip(reference.run(graph, feeds), exe.run(feeds), strict=True):
            assert got.shape == want.shape and got.dtype == want.dtype
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if name == "unknown":
        with pytest.raises(KilnRuntimeError, match="mul: .*do not broadcast"):
            exe.run({"x0": np.ones((2, 4), np.float32), "x1": np.ones((3, 4), np.float32)})


# -- the ONNX node cases, axes fed at run time ------------------------------------------------

def _onnx_cases() -> list[Any]:
    try:
        from tests.conformance.harness import collect_cases
    except ImportError:  # onnx missing
        return []
    pattern = re.compile(r"^test_(reduce_|cumsum|cumprod)")
    return [c for n, c in sorted(collect_cases().items()) if pattern.search(n)]


@pytest.mark.slow
def test_onnx_reduce_and_scan_cases_with_run_time_axes() -> None:
    """Every reduce_* / cumsum / cumprod node case, its axes input fed at run time (not
    frozen into a constant), through one lowering per case."""
    pytest.importorskip("onnx")
    from kiln.frontends.onnx import load_onnx
    from tests.conformance.harness import as_array, compare

    cases = _onnx_cases()
    assert len(cases) >= 150
    failures = []
    for case in cases:
        graph = load_onnx(case.model)
        lowered = lower_graph(graph)
        for inputs, outputs in case.data_sets:
            feeds = {v.name: as_array(inputs[i]) for i, v in enumerate(graph.inputs)}
            with np.errstate(all="ignore"):
                got = interpret_lowered(lowered, feeds)
            for actual, expected in zip(got, outputs, strict=True):
                problem = compare(np.asarray(actual), as_array(expected), case.rtol, case.atol)
                if problem:
                    failures.append(f"{case.name}: {problem}")
    assert not failures, failures
