"""Symbolic dims through the type rules, specialize, the importer and the IR text form.

Each rule case builds a graph over symbolic inputs, checks the symbolic output dims the rules
give (written out by hand), then runs the graph with the numpy reference executor at several
sizes: every dim that is not UNKNOWN, evaluated at those sizes, must equal the extent the
numpy kernel produced, and specializing the graph to those sizes must give the same static
types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pytest
from onnx import TensorProto, helper

from kiln.compiler import reference
from kiln.compiler.errors import KilnError, ParseError
from kiln.compiler.ir import symbolic
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph, Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.parser import parse_graph
from kiln.compiler.ir.printer import print_graph
from kiln.compiler.ir.shapes import broadcast, product
from kiln.compiler.ir.types import UNKNOWN, Dim, DType, TensorType
from kiln.compiler.passes.specialize import specialize
from kiln.frontends.onnx import load_onnx

SIZES = ({"b": 1, "s": 1, "h": 1}, {"b": 3, "s": 5, "h": 2}, {"b": 2, "s": 17, "h": 7})


def f32(*shape: Dim) -> TensorType:
    return TensorType(DType.F32, tuple(shape))


def i64(values: Sequence[int]) -> np.ndarray:
    return np.asarray(values, np.int64)


def build(inputs: Mapping[str, TensorType], body: Callable[..., Sequence[Value]]) -> Graph:
    b = GraphBuilder()
    values = [b.add_input(name, t) for name, t in inputs.items()]
    return b.finish(list(body(b, *values)))


def check_against_reference(graph: Graph, sizes: Sequence[Mapping[str, int]] = SIZES) -> None:
    """Every non-UNKNOWN output dim, evaluated, equals what the numpy kernels produce; the
    graph specialized to the sizes has those static extents too."""
    rng = np.random.default_rng(0)
    for binding in sizes:
        shapes = {v.name: tuple(symbolic.evaluate(d, binding) for d in v.type.shape)
                  for v in graph.inputs}
        feeds = {name: rng.standard_normal(shape).astype(np.float32)
                 for name, shape in shapes.items()}
        results = reference.run(graph, feeds)
        static = specialize(graph, shapes)
        for value, result, bound in zip(graph.outputs, results, static.outputs, strict=True):
            assert bound.type.shape == result.shape, (value, binding)
            for dim, extent in zip(value.type.shape, result.shape, strict=True):
                if dim != UNKNOWN:
                    assert symbolic.evaluate(dim, binding) == extent, (value, binding)


def out_shapes(graph: Graph) -> list[tuple[Dim, ...]]:
    return [v.type.shape for v in graph.outputs]


# ------------------------------------------------------------------------------ shapes.py

def test_product_and_broadcast_of_symbols() -> None:
    assert product(["b", "s", 4]) == "4*b*s"
    assert product(["b", UNKNOWN]) == UNKNOWN
    assert product(["b", 0, UNKNOWN]) == 0
    assert product([2, 3]) == 6
    assert broadcast(("b", 1), (1, "s")) == ("b", "s")
    assert broadcast(("b", "s"), ("b", 4)) == ("b", 4)
    assert broadcast(("b",), ("s",)) == (UNKNOWN,)
    assert broadcast(("b*s",), ("b*s",)) == ("b*s",)


# ---------------------------------------------------------------------------- type rules

def test_concat_flatten_reshape() -> None:
    def body(b: GraphBuilder, x: Value, y: Value) -> list[Value]:
        cat = b.add1(Op.CONCAT, [x, y], {"axis": 1})
        flat = b.add1(Op.FLATTEN, [x], {"axis": 2})
        rows = b.add1(Op.RESHAPE, [x, b.constant(i64([-1, 4]))])
        keep = b.add1(Op.RESHAPE, [x, b.constant(i64([0, -1]))])
        return [cat, flat, rows, keep]
    graph = build({"x": f32("b", "s", 4), "y": f32("b", 3, 4)}, body)
    assert out_shapes(graph) == [("b", "s+3", 4), ("b*s", 4), ("b*s", 4), ("b", "4*s")]
    check_against_reference(graph)


def test_slices_of_a_symbolic_axis() -> None:
    big = 2**63 - 1
    cases = [((0,), (-1,), "s-1"), ((1,), (big,), "s-1"), ((-1,), (big,), 1),
             ((0,), (1,), 1), ((0,), (3,), UNKNOWN), ((2,), (big,), UNKNOWN),
             ((-2,), (big,), UNKNOWN), ((1,), (-1,), UNKNOWN)]

    def body(b: GraphBuilder, x: Value) -> list[Value]:
        return [b.add1(Op.SLICE, [x, b.constant(i64(s)), b.constant(i64(e)),
                                  b.constant(i64([1]))]) for s, e, _ in cases]
    graph = build({"x": f32("b", "s")}, body)
    assert [shape[1] for shape in out_shapes(graph)] == [want for _, _, want in cases]
    check_against_reference(graph, [{"b": 2, "s": s} for s in (1, 2, 5)])


def test_pad_tile_split_expand() -> None:
    def body(b: GraphBuilder, x: Value, y: Value) -> list[Value]:
        padded = b.add1(Op.PAD, [x, b.constant(i64([0, 1, 0, 2]))])
        tiled = b.add1(Op.TILE, [x, b.constant(i64([2, 3]))])
        halves = b.add(Op.SPLIT, [y], {"axis": 1, "num_outputs": 2}, outputs=2)
        grown = b.add1(Op.EXPAND, [b.add1(Op.UNSQUEEZE, [x, b.constant(i64([2]))]),
                                   b.constant(i64([1, 1, 6]))])
        seq = b.add1(Op.SHAPE, [x], {"start": 1})
        sizes = b.add1(Op.CONCAT, [seq, b.constant(i64([1])), seq], {"axis": 0})
        wide = b.add1(Op.PAD, [y, b.constant(i64([0, 0, 0, 1]))])
        thirds = b.add(Op.SPLIT, [b.add1(Op.TRANSPOSE, [wide]), sizes], outputs=3)
        return [padded, tiled, *halves, grown, *thirds]  # type: ignore[list-item]
    graph = build({"x": f32("b", "s"), "y": f32("b", "2*s")}, body)
    assert out_shapes(graph) == [("b", "s+3"), ("2*b", "3*s"), ("b", "s"), ("b", "s"),
                                 ("b", "s", 6), ("s", "b"), (1, "b"), ("s", "b")]
    check_against_reference(graph)


def test_window_ops_keep_the_batch_and_exact_extents() -> None:
    w = np.ones((4, 3, 3, 3), np.float32)

    def body(b: GraphBuilder, x: Value) -> list[Value]:
        same = b.add1(Op.CONV, [x, b.constant(w)], {"pads": (1, 1, 1, 1)})
        pooled = b.add1(Op.MAX_POOL, [x], {"kernel_shape": (2, 2), "strides": (2, 2)})
        strided = b.add1(Op.CONV, [x, b.constant(w)], {"pads": (1, 1, 1, 1), "strides": (2, 2)})
        upper = b.add1(Op.CONV, [x, b.constant(w)], {"auto_pad": "SAME_UPPER", "strides": (2, 2)})
        return [same, pooled, strided, upper]
    graph = build({"x": f32("b", 3, "2*h", "2*s")}, body)
    assert out_shapes(graph) == [("b", 4, "2*h", "2*s"), ("b", 3, "h", "s"),
                                 ("b", 4, UNKNOWN, UNKNOWN), ("b", 4, "h", "s")]
    check_against_reference(graph)


def test_conv_transpose_extents() -> None:
    w = np.ones((3, 2, 3, 3), np.float32)

    def body(b: GraphBuilder, x: Value) -> list[Value]:
        plain = b.add1(Op.CONV_TRANSPOSE, [x, b.constant(w)], {"strides": (2, 2),
                                                               "pads": (1, 1, 1, 1)})
        same = b.add1(Op.CONV_TRANSPOSE, [x, b.constant(w)], {"strides": (2, 2),
                                                              "auto_pad": "SAME_UPPER"})
        return [plain, same]
    graph = build({"x": f32("b", 3, "h", "s")}, body)
    assert out_shapes(graph) == [("b", 2, "2*h-1", "2*s-1"), ("b", 2, "2*h", "2*s")]
    check_against_reference(graph)


def test_matmul_gather_broadcast() -> None:
    m = np.ones((4, 5), np.float32)

    def body(b: GraphBuilder, x: Value, y: Value, z: Value) -> list[Value]:
        prod = b.add1(Op.MATMUL, [x, b.constant(m)])
        rows = b.add1(Op.GATHER, [x, b.constant(i64([0, 0, 0]))], {"axis": 1})
        outer = b.add1(Op.ADD, [y, z])
        dense = b.add1(Op.GEMM, [b.add1(Op.FLATTEN, [x]), b.constant(np.ones((5, 4 * 3),
                                                                         np.float32))],
                       {"transB": 1})
        return [prod, rows, outer, dense]
    graph = build({"x": f32("b", 3, 4), "y": f32("b", 1), "z": f32(1, "s")}, body)
    assert out_shapes(graph) == [("b", 3, 5), ("b", 3, 4), ("b", "s"), ("b", 5)]
    check_against_reference(graph)


# ------------------------------------------------------------------------------ specialize

def test_specialize_keeps_unbound_symbols_and_names_unknown_axes() -> None:
    graph = build({"X": f32(UNKNOWN, 3, "X_0"), "y": f32("n", 3, UNKNOWN)},
                  lambda b, x, y: [b.add1(Op.ADD, [x, y])])
    dynamic = specialize(graph)
    assert [v.type.shape for v in dynamic.inputs] == [("X_0_2", 3, "X_0"), ("n", 3, "y_2")]
    bound = specialize(graph, {"y": [4, None, 2]})
    assert [v.type.shape for v in bound.inputs] == [("X_0_2", 3, "X_0"), (4, 3, 2)]


def test_specialize_binds_a_symbol_on_every_input() -> None:
    graph = build({"x": f32("n", 2), "y": f32("n", "2*n")},
                  lambda b, x, y: [b.add1(Op.CONCAT, [x, y], {"axis": 1})])
    bound = specialize(graph, {"x": [3, 2]})
    assert [v.type.shape for v in bound.inputs] == [(3, 2), (3, 6)]
    assert out_shapes(bound) == [(3, 8)]
    assert out_shapes(specialize(graph)) == [("n", "2*n+2")]
    # An extent of a linear dim binds its symbol too (torch's dynamo names dims like 2*s0).
    solved = specialize(graph, {"y": [None, 6]})
    assert [v.type.shape for v in solved.inputs] == [(3, 2), (3, 6)]


def test_specialize_errors() -> None:
    graph = build({"x": f32("n", 2), "y": f32("n", "2*n")},
                  lambda b, x, y: [b.add1(Op.CONCAT, [x, y], {"axis": 1})])
    with pytest.raises(KilnError, match="does not fit the declared"):
        specialize(graph, {"x": [3, 4]})
    with pytest.raises(KilnError, match="does not fit the declared '2\\*n' = 6"):
        specialize(graph, {"x": [3, 2], "y": [3, 5]})
    with pytest.raises(KilnError, match="symbol 'n' is given as both 3 and 4"):
        specialize(graph, {"x": [3, 2], "y": [4, None]})
    with pytest.raises(KilnError, match="negative extent"):
        specialize(graph, {"x": [-1, 2]})


# ---------------------------------------------------------------------- importer, IR text

def test_dim_params_become_polynomials() -> None:
    params = ["2*s0", "s0 + 1", "batch size", "3", "N"]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, params)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                                [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    graph = load_onnx(model)
    assert graph.inputs[0].type.shape == ("2*s0", "s0+1", "batch_size", "_3", "N")


def test_ir_text_round_trips_polynomial_dims() -> None:
    graph = build({"x": f32("b*s", "2*s+1", "s-1", "-b+4", "-3*b+2*s", UNKNOWN, 3)},
                  lambda b, x: [b.add1(Op.RELU, [x])])
    text = print_graph(graph)
    assert "f32[b*s,2*s+1,s-1,-b+4,-3*b+2*s,?,3]" in text
    again = parse_graph(text)
    assert again.inputs[0].type == graph.inputs[0].type
    assert print_graph(again) == text
    with pytest.raises(ParseError, match="expected a dimension"):
        parse_graph(text.replace("2*s+1", "2*+s"))


def test_resize_topk_range_from_shape_values() -> None:
    def body(b: GraphBuilder, x: Value) -> list[Value]:
        shape = b.add1(Op.SHAPE, [x])
        scaled = b.add1(Op.RESIZE, [x, None, b.constant(np.asarray([1, 1, 2, 3], np.float32))])
        sizes = b.add1(Op.MUL, [shape, b.constant(i64([1, 1, 2, 1]))])
        sized = b.add1(Op.RESIZE, [x, None, None, sizes])
        k = b.add1(Op.SLICE, [shape, b.constant(i64([3])), b.constant(i64([4]))])
        top, _ = b.add(Op.TOPK, [x, k], outputs=2)
        steps = b.add1(Op.RANGE, [b.constant(i64(1)), b.add1(Op.GATHER, [shape, b.constant(
            i64(2))]), b.constant(i64(1))])
        assert top is not None
        return [scaled, sized, top, steps]
    graph = build({"x": f32("b", 2, "h", "s")}, body)
    assert out_shapes(graph) == [("b", 2, "2*h", "3*s"), ("b", 2, "2*h", "s"),
                                 ("b", 2, "h", "s"), ("h-1",)]
    check_against_reference(graph)
