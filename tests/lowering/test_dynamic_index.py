"""Index and signal lowerings with extents known only at run time (issue 11).

Two kinds: symbolic input extents (an embedding lookup over [batch, seq] ids, gathers,
scatters, TopK, OneHot over a run-time batch) and outputs sized by input VALUES (NonZero,
Unique, Compress, TopK with a run-time K, NonMaxSuppression, OneHot's depth, window sizes,
DFT/STFT/MelWeightMatrix lengths). Each graph is lowered ONCE and interpreted at several sizes
and values, against the numpy reference executor (and onnxruntime for a few); bad values must
fail the run with a clear message naming the node.
"""

from __future__ import annotations

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
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph

RNG = np.random.default_rng(11)
F32, I64 = DType.F32, DType.I64


def one_node(op: Op, inputs: Sequence[TensorType | np.ndarray | None],
             attrs: Mapping[str, Any] | None = None, outputs: int = 1) -> Graph:
    """A graph of one ``op``: a TensorType makes graph input ``in{i}``, an array a constant."""
    builder = GraphBuilder(fold=False)
    values = []
    for index, item in enumerate(inputs):
        if item is None:
            values.append(None)
        elif isinstance(item, TensorType):
            values.append(builder.add_input(f"in{index}", item))
        else:
            values.append(builder.constant(item))
    results = builder.add(op, values, attrs, outputs=outputs)
    return builder.finish([v for v in results if v is not None])


def check(graph: Graph, runs: Sequence[Mapping[str, np.ndarray]], rtol: float = 1e-6,
          atol: float = 1e-6) -> None:
    """One lowering of ``graph``, interpreted on every feed of ``runs``, matches the reference
    executor (shapes, dtypes and values)."""
    lowered = lower_graph(graph)
    for feeds in runs:
        expected = reference.run(graph, feeds)
        got = interpret_lowered(lowered, feeds)
        assert len(got) == len(expected)
        for want, found in zip(expected, got, strict=True):
            assert found.shape == want.shape and found.dtype == want.dtype, (found, want)
            np.testing.assert_allclose(found, want, rtol=rtol, atol=atol)


def fails(graph: Graph, feeds: Mapping[str, np.ndarray], match: str) -> None:
    lowered = lower_graph(graph)
    with pytest.raises(KilnError, match=match):
        interpret_lowered(lowered, feeds)


def floats(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def ints(high: int, *shape: int, low: int = 0) -> np.ndarray:
    return RNG.integers(low, high, shape).astype(np.int64)


def scalar(value: int) -> np.ndarray:
    return np.array([value], np.int64)


# ------------------------------------------------------------------ symbolic input extents

def test_embedding_lookup_over_batch_and_seq() -> None:
    table = floats(10, 4)
    graph = one_node(Op.GATHER, [table, TensorType(I64, ("batch", "seq"))], {"axis": 0})
    assert graph.outputs[0].type.shape == ("batch", "seq", 4)
    check(graph, [{"in1": ints(10, b, s, low=-10)} for b, s in ((1, 1), (2, 3), (3, 5))])
    check(graph, [{"in1": np.zeros((0, 2), np.int64)}])


def test_gathers_with_run_time_extents() -> None:
    graph = one_node(Op.GATHER, [TensorType(F32, ("n", 3)), TensorType(I64, ("k",))],
                     {"axis": 0})
    check(graph, [{"in0": floats(n, 3), "in1": ints(n, k, low=-n)} for n, k in
                  ((1, 1), (4, 6), (7, 2))])
    graph = one_node(Op.GATHER_ELEMENTS, [TensorType(F32, ("batch", 5)),
                                          TensorType(I64, ("batch", 3))], {"axis": 1})
    check(graph, [{"in0": floats(b, 5), "in1": ints(5, b, 3, low=-5)} for b in (1, 4)])
    graph = one_node(Op.GATHER_ELEMENTS, [TensorType(F32, ("b", "n")),
                                          TensorType(I64, ("b", "k"))], {"axis": 1})
    check(graph, [{"in0": floats(b, n), "in1": ints(n, b, k)} for b, n, k in
                  ((1, 3, 2), (3, 2, 4))])
    graph = one_node(Op.GATHER_ND, [TensorType(F32, ("batch", 4, 3)),
                                    TensorType(I64, ("batch", "q", 1))], {"batch_dims": 1})
    check(graph, [{"in0": floats(b, 4, 3), "in1": ints(4, b, q, 1, low=-4)}
                  for b, q in ((1, 1), (3, 2))])


def test_gather_bad_index_and_empty_axis_report() -> None:
    graph = one_node(Op.GATHER, [TensorType(F32, ("n", 2)), TensorType(I64, ("k",))])
    fails(graph, {"in0": floats(3, 2), "in1": np.array([0, 3])}, "gather.*out of range")
    fails(graph, {"in0": floats(0, 2), "in1": np.array([0])}, "gather.*out of range")
    check(graph, [{"in0": floats(0, 2), "in1": np.zeros(0, np.int64)}])
    graph = one_node(Op.GATHER_ELEMENTS, [TensorType(F32, ("b", "n")),
                                          TensorType(I64, ("c", 1))], {"axis": 1})
    fails(graph, {"in0": floats(2, 3), "in1": np.zeros((3, 1), np.int64)},
          "gather_elements.*exceeds the data")


@pytest.mark.parametrize("reduction", ["none", "add", "max"])
def test_scatters_with_run_time_extents(reduction: str) -> None:
    graph = one_node(Op.SCATTER_ELEMENTS, [TensorType(F32, ("batch", 6)),
                                           TensorType(I64, ("batch", 2)),
                                           TensorType(F32, ("batch", 2))],
                     {"axis": 1, "reduction": reduction})
    check(graph, [{"in0": floats(b, 6), "in1": ints(6, b, 2, low=-6), "in2": floats(b, 2)}
                  for b in (1, 3)])
    graph = one_node(Op.SCATTER_ND, [TensorType(F32, ("n", 3)), TensorType(I64, ("k", 1)),
                                     TensorType(F32, ("k", 3))], {"reduction": reduction})
    check(graph, [{"in0": floats(n, 3), "in1": ints(n, k, 1), "in2": floats(k, 3)}
                  for n, k in ((1, 2), (5, 3))])


def test_tensor_scatter_with_run_time_batch() -> None:
    graph = one_node(Op.TENSOR_SCATTER, [TensorType(F32, ("batch", 6, 2)),
                                         TensorType(F32, ("batch", 2, 2)),
                                         TensorType(I64, ("batch",))], {"axis": 1})
    check(graph, [{"in0": floats(b, 6, 2), "in1": floats(b, 2, 2), "in2": ints(5, b)}
                  for b in (1, 3)])
    fails(graph, {"in0": floats(1, 6, 2), "in1": floats(1, 2, 2), "in2": scalar(5)},
          "tensor_scatter.*overruns")


@pytest.mark.parametrize("largest", [0, 1])
def test_topk_static_k_run_time_rows(largest: int) -> None:
    graph = one_node(Op.TOPK, [TensorType(F32, ("batch", "n")), scalar(2)],
                     {"largest": largest}, outputs=2)
    data = floats(3, 7)
    data[1, 2:5] = 0.5  # ties keep the lower index first
    check(graph, [{"in0": data}, {"in0": floats(1, 2)}])


def test_one_hot_static_depth_run_time_batch() -> None:
    graph = one_node(Op.ONE_HOT, [TensorType(I64, ("batch",)), np.array(4, np.int64),
                                  np.array([0.0, 3.0], np.float32)], {"axis": 0})
    check(graph, [{"in0": ints(6, b, low=-5)} for b in (1, 5)])


# ------------------------------------------------------------- outputs sized by values

def test_nonzero_counts_then_fills() -> None:
    graph = one_node(Op.NONZERO, [TensorType(F32, ("batch", 3))])
    x = floats(4, 3)
    x[x < 0.3] = 0
    check(graph, [{"in0": x}, {"in0": np.zeros((2, 3), np.float32)},
                  {"in0": np.ones((1, 3), np.float32)}])


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("sort", [0, 1])
def test_unique_all_outputs(axis: int | None, sort: int) -> None:
    attrs = {"sorted": sort} | ({} if axis is None else {"axis": axis})
    graph = one_node(Op.UNIQUE, [TensorType(F32, ("rows", 3))], attrs, outputs=4)
    x = RNG.integers(0, 3, (5, 3)).astype(np.float32)
    x[3] = x[1]
    x[:, 2] = x[:, 0]
    runs = [{"in0": x}, {"in0": np.zeros((1, 3), np.float32)}]
    if axis is None:
        nan = np.array([[np.nan, 1, np.nan], [-1, 1, np.nan]], np.float32)
        runs.append({"in0": nan})
    check(graph, runs)


def test_unique_integers_without_axis_against_onnxruntime() -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from kiln.frontends.onnx import load_onnx

    node = helper.make_node("Unique", ["x"], ["y", "i", "inv", "c"], sorted=0)
    model = helper.make_model(helper.make_graph(
        [node], "u", [helper.make_tensor_value_info("x", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info(n, TensorProto.INT64, None)
         for n in ("y", "i", "inv", "c")]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    graph = load_onnx(onnx.load_from_string(model.SerializeToString()))
    lowered = lower_graph(graph)
    for n in (1, 6, 11):
        x = ints(4, n)
        for got, want in zip(interpret_lowered(lowered, {"x": x}), session.run(None, {"x": x}),
                             strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_compress_by_run_time_condition(axis: int | None) -> None:
    attrs = {} if axis is None else {"axis": axis}
    graph = one_node(Op.COMPRESS, [TensorType(F32, ("rows", 3)), TensorType(DType.BOOL, ("c",))],
                     attrs)
    runs = []
    for rows, length in ((2, 2), (4, 3), (3, 1)):
        limit = {None: rows * 3, 0: rows, 1: 3}[axis]
        condition = RNG.random(min(length, limit)) < 0.6
        runs.append({"in0": floats(rows, 3), "in1": condition})
    check(graph, runs)
    fails(graph, {"in0": floats(1, 3), "in1": np.ones(5, bool)}, "compress.*selects beyond")


@pytest.mark.parametrize("largest", [0, 1])
def test_topk_run_time_k(largest: int) -> None:
    graph = one_node(Op.TOPK, [TensorType(F32, ("batch", 5)), TensorType(I64, (1,))],
                     {"largest": largest, "axis": 1}, outputs=2)
    data = floats(2, 5)
    data[0, 1] = np.nan
    check(graph, [{"in0": data, "in1": scalar(k)} for k in (0, 1, 3, 5)])
    fails(graph, {"in0": data, "in1": scalar(6)}, "topk.*K is outside")
    fails(graph, {"in0": data, "in1": scalar(-1)}, "topk.*K is outside")


def test_one_hot_run_time_depth() -> None:
    graph = one_node(Op.ONE_HOT, [TensorType(I64, ("n",)), TensorType(F32, ()),
                                  np.array([-1, 2], np.int64)], {"axis": -1})
    check(graph, [{"in0": ints(5, n, low=-4), "in1": np.array(d, np.float32)}
                  for n, d in ((3, 2.0), (4, 5.7), (1, 1.0))])
    fails(graph, {"in0": ints(2, 2), "in1": np.array(0, np.float32)}, "one_hot.*depth")


def nms_graph(center: int = 0) -> Graph:
    return one_node(Op.NON_MAX_SUPPRESSION, [
        TensorType(F32, ("batch", "boxes", 4)), TensorType(F32, ("batch", "classes", "boxes")),
        TensorType(I64, (1,)), TensorType(F32, (1,)), TensorType(F32, (1,))],
        {"center_point_box": center})


@pytest.mark.parametrize("center", [0, 1])
def test_non_max_suppression(center: int) -> None:
    graph = nms_graph(center)
    runs = []
    for batch, classes, boxes, limit in ((1, 1, 6, 3), (2, 3, 5, 10), (1, 2, 1, 0)):
        corners = RNG.random((batch, boxes, 4)).astype(np.float32) * 4
        corners[..., 2:] += 1
        scores = RNG.random((batch, classes, boxes)).astype(np.float32)
        scores[..., -1] = scores[..., 0]  # a tie: the lower box index wins
        runs.append({"in0": corners, "in1": scores, "in2": scalar(limit),
                     "in3": np.array([0.3], np.float32), "in4": np.array([0.2], np.float32)})
    check(graph, runs)


def test_non_max_suppression_against_onnxruntime() -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from kiln.frontends.onnx import load_onnx

    names = ["boxes", "scores", "limit", "iou", "score"]
    node = helper.make_node("NonMaxSuppression", names, ["selected"])
    inputs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["b", "n", 4]),
              helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["b", "c", "n"]),
              helper.make_tensor_value_info("limit", TensorProto.INT64, [1]),
              helper.make_tensor_value_info("iou", TensorProto.FLOAT, [1]),
              helper.make_tensor_value_info("score", TensorProto.FLOAT, [1])]
    model = helper.make_model(helper.make_graph(
        [node], "nms", inputs,
        [helper.make_tensor_value_info("selected", TensorProto.INT64, None)]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    lowered = lower_graph(load_onnx(onnx.load_from_string(model.SerializeToString())))
    for batch, classes, boxes in ((1, 1, 5), (2, 2, 7)):
        corners = RNG.random((batch, boxes, 4)).astype(np.float32) * 3
        corners[..., 2:] += 1
        feeds = {"boxes": corners, "scores": RNG.random((batch, classes, boxes)).astype(
            np.float32), "limit": scalar(3), "iou": np.array([0.4], np.float32),
            "score": np.array([0.1], np.float32)}
        (got,) = interpret_lowered(lowered, feeds)
        np.testing.assert_array_equal(got, session.run(None, feeds)[0])


@pytest.mark.parametrize("op", [Op.HANN_WINDOW, Op.HAMMING_WINDOW, Op.BLACKMAN_WINDOW])
@pytest.mark.parametrize("periodic", [0, 1])
def test_windows_of_run_time_size(op: Op, periodic: int) -> None:
    graph = one_node(op, [TensorType(DType.I32, ())], {"periodic": periodic})
    check(graph, [{"in0": np.array(n, np.int32)} for n in (0, 1, 2, 7)])
    fails(graph, {"in0": np.array(-1, np.int32)}, "window.*size must be >= 0")


@pytest.mark.parametrize(("inverse", "onesided", "parts"),
                         [(0, 0, 1), (0, 1, 1), (1, 0, 2), (1, 1, 2), (0, 0, 2)])
def test_dft_run_time_length_and_axis(inverse: int, onesided: int, parts: int) -> None:
    attrs = {"inverse": inverse, "onesided": onesided}
    graph = one_node(Op.DFT, [TensorType(F32, (2, "n", parts)), TensorType(I64, ()),
                              TensorType(I64, ())], attrs)
    runs = [{"in0": floats(2, n, parts), "in1": np.array(length), "in2": np.array(axis)}
            for n, length, axis in ((3, 4, 1), (5, 3, -2), (4, 2, 0), (1, 1, 1))]
    check(graph, runs, rtol=1e-4, atol=1e-5)
    fails(graph, {"in0": floats(2, 3, parts), "in1": np.array(0), "in2": np.array(1)},
          "dft.*out of range")
    fails(graph, {"in0": floats(2, 3, parts), "in1": np.array(2), "in2": np.array(2)},
          "dft.*out of range")


def test_dft_symbolic_signal_default_length() -> None:
    graph = one_node(Op.DFT, [TensorType(F32, ("batch", "n", 1))], {"onesided": 1})
    check(graph, [{"in0": floats(b, n, 1)} for b, n in ((1, 4), (2, 7))], rtol=1e-4,
          atol=1e-5)


@pytest.mark.parametrize("window", [False, True])
def test_stft_run_time_step_and_frame(window: bool) -> None:
    inputs: list[TensorType | np.ndarray | None] = [
        TensorType(F32, (1, "length", 1)), TensorType(I64, ())]
    inputs += [np.hanning(6).astype(np.float32), None] if window else [
        None, TensorType(I64, ())]
    graph = one_node(Op.STFT, inputs, {"onesided": 1})
    runs = []
    for length, step, frame in ((12, 3, 6), (9, 2, 6), (6, 5, 6)):
        feeds = {"in0": floats(1, length, 1), "in1": np.array(step)}
        if not window:
            feeds["in3"] = np.array(frame - 1)
        runs.append(feeds)
    check(graph, runs, rtol=1e-4, atol=1e-5)
    fails(graph, {"in0": floats(1, 8, 1), "in1": np.array(0), "in3": np.array(4)},
          "stft.*out of range")


def test_mel_weight_matrix_run_time_sizes() -> None:
    graph = one_node(Op.MEL_WEIGHT_MATRIX, [TensorType(I64, ()), TensorType(I64, ()),
                                            TensorType(I64, ()), TensorType(F32, ()),
                                            TensorType(F32, ())])
    check(graph, [{"in0": np.array(mels), "in1": np.array(length), "in2": np.array(8000),
                   "in3": np.array(20.0, np.float32), "in4": np.array(3000.0, np.float32)}
                  for mels, length in ((4, 16), (7, 9), (1, 2))])
    graph = one_node(Op.MEL_WEIGHT_MATRIX, [np.array(5), TensorType(I64, ()), np.array(800),
                                            np.array(0.0, np.float32),
                                            np.array(400.0, np.float32)])
    check(graph, [{"in1": np.array(length)} for length in (8, 13)])


# ------------------------------------------------------------------------- compiled path

def compiled_cases() -> list[tuple[str, Graph, list[dict[str, np.ndarray]]]]:
    """Graphs with symbolic and value-dependent extents, each with feeds of several sizes."""
    x = floats(4, 3)
    x[x < 0.3] = 0
    boxes = RNG.random((2, 6, 4)).astype(np.float32) * 3
    boxes[..., 2:] += 1
    return [
        ("embedding", one_node(Op.GATHER, [floats(10, 4), TensorType(I64, ("batch", "seq"))]),
         [{"in1": ints(10, b, s, low=-10)} for b, s in ((1, 1), (2, 3), (5, 7))]),
        ("scatter_elements", one_node(Op.SCATTER_ELEMENTS, [
            TensorType(F32, ("batch", 6)), TensorType(I64, ("batch", 2)),
            TensorType(F32, ("batch", 2))], {"axis": 1, "reduction": "add"}),
         [{"in0": floats(b, 6), "in1": ints(6, b, 2), "in2": floats(b, 2)} for b in (1, 3)]),
        ("nonzero", one_node(Op.NONZERO, [TensorType(F32, ("batch", 3))]),
         [{"in0": x}, {"in0": x[:1]}, {"in0": np.zeros((2, 3), np.float32)}]),
        ("topk", one_node(Op.TOPK, [TensorType(F32, ("batch", 5)), TensorType(I64, (1,))],
                          {"axis": 1}, outputs=2),
         [{"in0": floats(b, 5), "in1": scalar(k)} for b, k in ((2, 0), (1, 2), (3, 5))]),
        ("unique", one_node(Op.UNIQUE, [TensorType(F32, ("rows", 3))], {"axis": 0},
                            outputs=4),
         [{"in0": RNG.integers(0, 2, (r, 3)).astype(np.float32)} for r in (1, 5, 9)]),
        ("compress", one_node(Op.COMPRESS, [TensorType(F32, ("rows", 3)),
                                            TensorType(DType.BOOL, ("c",))], {"axis": 0}),
         [{"in0": floats(4, 3), "in1": np.array([1, 0, 1], bool)},
          {"in0": floats(2, 3), "in1": np.array([0], bool)}]),
        ("nms", nms_graph(),
         [{"in0": boxes[:b], "in1": RNG.random((b, 2, 6)).astype(np.float32),
           "in2": scalar(3), "in3": np.array([0.3], np.float32),
           "in4": np.array([0.1], np.float32)} for b in (1, 2)]),
        ("one_hot", one_node(Op.ONE_HOT, [TensorType(I64, ("n",)), TensorType(F32, ()),
                                          np.array([-1, 2], np.int64)]),
         [{"in0": ints(5, n), "in1": np.array(d, np.float32)} for n, d in ((3, 5), (1, 2))]),
        ("stft", one_node(Op.STFT, [TensorType(F32, (1, "length", 1)), TensorType(I64, ()),
                                    None, TensorType(I64, ())], {"onesided": 1}),
         [{"in0": floats(1, n, 1), "in1": np.array(s), "in3": np.array(f)}
          for n, s, f in ((12, 3, 6), (20, 4, 5))]),
    ]


@pytest.mark.parametrize("case", range(len(compiled_cases())))
def test_compiled_one_library_for_all_sizes(case: int) -> None:
    from kiln.compiler import build

    _, graph, runs = compiled_cases()[case]
    executable = build(graph)
    for feeds in runs:
        expected = reference.run(graph, feeds)
        got = executable.run(feeds)
        for want, found in zip(expected, got, strict=True):
            assert found.shape == want.shape and found.dtype == want.dtype
            np.testing.assert_allclose(found, want, rtol=1e-5, atol=1e-5)


def test_compiled_bad_values_fail_the_run() -> None:
    from kiln.compiler import build

    graph = one_node(Op.COMPRESS, [TensorType(F32, ("rows", 3)),
                                   TensorType(DType.BOOL, ("c",))])
    executable = build(graph)
    for rows, condition in ((2, [1, 0, 1, 1]), (1, [0, 1])):
        feeds = {"in0": floats(rows, 3), "in1": np.array(condition, bool)}
        np.testing.assert_array_equal(executable.run(feeds)[0], reference.run(graph, feeds)[0])
    with pytest.raises(Exception, match="compress: the condition selects beyond"):
        executable.run({"in0": floats(1, 3), "in1": np.ones(4, bool)})
    graph = one_node(Op.HANN_WINDOW, [TensorType(DType.I32, ())])
    executable = build(graph)
    np.testing.assert_allclose(executable.run({"in0": np.array(5, np.int32)})[0],
                               reference.run(graph, {"in0": np.array(5, np.int32)})[0],
                               rtol=1e-6, atol=1e-7)
    with pytest.raises(Exception, match="hann_window: size must be >= 0"):
        executable.run({"in0": np.array(-2, np.int32)})
