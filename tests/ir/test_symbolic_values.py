"""Symbolic shape values: Shape -> Gather -> Unsqueeze -> Concat -> Reshape chains over symbolic
dims keep their symbols, checked against the numpy reference executor and onnxruntime at
several sizes (and, for torch exports with dynamic axes, against torch's own symbolic shapes).
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from kiln.compiler import reference
from kiln.compiler.ir import symbolic
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph, Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.symbolic_values import dims_of_array, graph_dims_values, propagate
from kiln.compiler.ir.types import UNKNOWN, Dim, DType, TensorType
from kiln.compiler.ir.verify import verify
from kiln.compiler.passes.specialize import specialize
from kiln.frontends.onnx import load_onnx

torch = pytest.importorskip("torch")


def f32(*shape: Dim) -> TensorType:
    return TensorType(DType.F32, tuple(shape))


def i64(values: Sequence[int] | int) -> np.ndarray:
    return np.asarray(values, np.int64)


def shapes_at(graph: Graph, binding: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    return {v.name: tuple(symbolic.evaluate(d, binding) for d in v.type.shape)
            for v in graph.inputs}


def check_outputs(graph: Graph, binding: Mapping[str, int],
                  results: Sequence[np.ndarray]) -> None:
    """Each output dim that is not UNKNOWN evaluates to the extent an oracle produced."""
    for value, result in zip(graph.outputs, results, strict=True):
        assert len(value.type.shape) == result.ndim
        for dim, extent in zip(value.type.shape, result.shape, strict=True):
            if dim != UNKNOWN:
                assert symbolic.evaluate(dim, binding) == extent, (value, binding)


# ------------------------------------------------------------------------ value propagation

def test_shape_gather_concat_values() -> None:
    x = f32("b", "s", 8)
    shape = TensorType(DType.I64, (3,))
    assert propagate(Op.SHAPE, {"start": 1}, [x], [None], [TensorType(DType.I64, (2,))]) \
        == [("s", 8)]
    assert propagate(Op.SIZE, {}, [x], [None], [TensorType(DType.I64, ())]) == [("8*b*s",)]
    scalar = TensorType(DType.I64, ())
    assert propagate(Op.GATHER, {"axis": 0}, [shape, scalar], [("b", "s", 8), (-2,)],
                     [scalar]) == [("s",)]
    assert propagate(Op.GATHER, {"axis": 0}, [shape, scalar], [("b", "s", 8), (3,)],
                     [scalar]) == [None]
    pair = TensorType(DType.I64, (2,))
    assert propagate(Op.CONCAT, {"axis": 0}, [pair, pair], [("b", 1), ("s", -1)],
                     [TensorType(DType.I64, (4,))]) == [("b", 1, "s", -1)]
    assert propagate(Op.CONCAT, {"axis": 0}, [pair, pair], [("b", 1), None],
                     [TensorType(DType.I64, (4,))]) == [None]


def test_arithmetic_values() -> None:
    pair, one = TensorType(DType.I64, (2,)), TensorType(DType.I64, (1,))
    assert propagate(Op.MUL, {}, [pair, one], [("b", "s"), (2,)], [pair]) == [("2*b", "2*s")]
    assert propagate(Op.SUB, {}, [pair, pair], [("b", "s"), (1, "s")], [pair]) == [("b-1", 0)]
    assert propagate(Op.DIV, {}, [pair, one], [("2*b", "s"), (2,)], [pair]) == [("b", UNKNOWN)]
    assert propagate(Op.MAX, {}, [pair, one], [("s", 0), (1,)], [pair]) == [("s", 1)]
    assert propagate(Op.MIN, {}, [pair, one], [("s", "b"), (1,)], [pair]) == [(1, 1)]
    assert propagate(Op.MAX, {}, [pair, pair], [("s", 3), ("b", 2)], [pair]) == [(UNKNOWN, 3)]
    assert propagate(Op.CAST, {"to": DType.F32}, [pair], [("b", 2)],
                     [TensorType(DType.F32, (2,))]) == [("b", 2)]
    assert propagate(Op.CAST, {"to": DType.BOOL}, [pair], [("b", 2)],
                     [TensorType(DType.BOOL, (2,))]) == [None]
    assert propagate(Op.REDUCE_PROD, {"keepdims": 0}, [pair], [("b", "s")],
                     [TensorType(DType.I64, ())]) == [("b*s",)]


def test_equal_and_where_values() -> None:
    three, flags = TensorType(DType.I64, (3,)), TensorType(DType.BOOL, (3,))
    assert propagate(Op.EQUAL, {}, [three, three], [("b", -1, UNKNOWN), (-1, -1, -1)],
                     [flags]) == [(0, 1, UNKNOWN)]
    assert propagate(Op.EQUAL, {}, [three, three], [("b", "s", UNKNOWN), ("b", 2, UNKNOWN)],
                     [flags]) == [(1, UNKNOWN, UNKNOWN)]
    assert propagate(Op.WHERE, {}, [flags, three, three], [(0, 1, UNKNOWN), (1, 1, 1),
                                                          ("b", -1, 4)], [three]) \
        == [("b", 1, UNKNOWN)]


def test_constants_as_dims() -> None:
    assert dims_of_array(i64([1, -1, 4])) == (1, -1, 4)
    assert dims_of_array(np.asarray(2.0, np.float32)) == (2,)
    assert dims_of_array(np.asarray([0.5], np.float32)) is None
    assert dims_of_array(np.zeros((2, 2), np.int64)) is None


# --------------------------------------------------------------------- chains in the builder

def reshape_chain(b: GraphBuilder, x: Value) -> list[Value]:
    """x.view(x.shape[0], x.shape[1], 4, -1) the way torch's tracing exporter spells it."""
    shape = b.add1(Op.SHAPE, [x])
    dims = [b.add1(Op.UNSQUEEZE, [b.add1(Op.GATHER, [shape, b.constant(i64(i))]),
                                  b.constant(i64([0]))]) for i in (0, 1)]
    target = b.add1(Op.CONCAT, [*dims, b.constant(i64([4])), b.constant(i64([-1]))],
                    {"axis": 0})
    view = b.add1(Op.RESHAPE, [x, target])
    # Half the sequence by a computed Slice end; a mask built from Shape by ConstantOfShape;
    # positions by Range(0, seq).
    half = b.add1(Op.DIV, [b.add1(Op.GATHER, [shape, b.constant(i64([1]))]),
                           b.constant(i64(2))])
    head = b.add1(Op.SLICE, [x, b.constant(i64([0])), half, b.constant(i64([1]))])
    mask = b.add1(Op.CONSTANT_OF_SHAPE, [b.add1(Op.SLICE, [shape, b.constant(i64([0])),
                                                            b.constant(i64([2]))])])
    seq = b.add1(Op.GATHER, [shape, b.constant(i64(1))])
    positions = b.add1(Op.RANGE, [b.constant(i64(0)), seq, b.constant(i64(1))])
    grown = b.add1(Op.EXPAND, [b.add1(Op.UNSQUEEZE, [positions, b.constant(i64([0]))]),
                               b.add1(Op.SLICE, [shape, b.constant(i64([0])),
                                                 b.constant(i64([2]))])])
    return [view, head, mask, positions, grown]


def test_reshape_chain_keeps_symbols() -> None:
    b = GraphBuilder()
    x = b.add_input("x", f32("b", "2*s", 8))
    graph = b.finish(reshape_chain(b, x))
    assert [v.type.shape for v in graph.outputs] == [
        ("b", "2*s", 4, 2), ("b", "s", 8), ("b", "2*s"), ("2*s",), ("b", "2*s")]
    verify(graph)
    rng = np.random.default_rng(0)
    for binding in ({"b": 1, "s": 1}, {"b": 3, "s": 4}):
        feeds = {"x": rng.standard_normal(shapes_at(graph, binding)["x"]).astype(np.float32)}
        check_outputs(graph, binding, reference.run(graph, feeds))


def test_specialize_re_derives_the_values() -> None:
    b = GraphBuilder()
    x = b.add_input("x", f32(UNKNOWN, "seq", 8))
    graph = b.finish(reshape_chain(b, x))
    # Two UNKNOWN extents are not known to be equal: the -1 is known only at run time.
    assert graph.outputs[0].type.shape == (UNKNOWN, "seq", 4, UNKNOWN)
    named = specialize(graph)
    assert named.outputs[0].type.shape == ("x_0", "seq", 4, 2)
    bound = specialize(graph, {"x": [2, None, 8]})
    assert bound.outputs[0].type.shape == (2, "seq", 4, 2)
    # The batch extent is now known: the Gather of it folds to a constant.
    gathers = [n for n in bound.nodes if n.op is Op.GATHER]
    assert len(gathers) < len([n for n in graph.nodes if n.op is Op.GATHER])


# ---------------------------------------------------------------------- real torch exports

class _Views(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, s, f = x.shape
        flat = x.reshape(b * s, f)
        return (flat.view(b, s, 4, -1) * 2, x.flatten(0, 1) + 1,
                torch.cat([x, x], dim=1)[:, 1:], x[:, :-1])


def _export(path: Path, exporter: str) -> Path:
    x = torch.randn(2, 3, 8)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(_Views().eval(), (x,), str(path), dynamo=False, opset_version=17,
                              input_names=["x"], dynamic_axes={"x": {0: "batch", 1: "seq"}})
        else:
            dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq")}
            program = torch.onnx.export(_Views().eval(), (x,), dynamo=True, input_names=["x"],
                                        dynamic_shapes={"x": dims})
            assert program is not None
            program.save(str(path))
    return path


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_torch_export_with_dynamic_axes(tmp_path: Path, exporter: str) -> None:
    path = _export(tmp_path / "views.onnx", exporter)
    graph = load_onnx(str(path))
    assert [v.type.shape for v in graph.outputs] == [
        ("batch", "seq", 4, 2), ("batch*seq", 8), ("batch", "2*seq-1", 8),
        ("batch", "seq-1", 8)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for binding in ({"batch": 2, "seq": 3}, {"batch": 5, "seq": 7}, {"batch": 1, "seq": 2}):
        x = rng.standard_normal((binding["batch"], binding["seq"], 8)).astype(np.float32)
        want = session.run(None, {"x": x})
        check_outputs(graph, binding, want)
        got = reference.run(graph, {"x": x})
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-6)


def test_graph_dims_values_match_the_builder() -> None:
    b = GraphBuilder()
    x = b.add_input("x", f32("b", "2*s", 8))
    graph = b.finish(reshape_chain(b, x))
    found = graph_dims_values(graph.nodes)
    for node in graph.nodes:
        if node.op is not Op.CONSTANT:
            out = node.outputs[0]
            assert out is not None
            assert found.get(out.name) == b.dims_value(out)
    concat = next(n for n in graph.nodes if n.op is Op.CONCAT).outputs[0]
    assert found[concat.name] == ("b", "2*s", 4, -1)


def test_loop_over_a_symbolic_extent_stacks_that_many() -> None:
    b = GraphBuilder()
    x = b.add_input("x", f32("b", "s"))
    trips = b.add1(Op.GATHER, [b.add1(Op.SHAPE, [x]), b.constant(i64(1))])
    body = b.sub("body")
    i = body.add_input("i", TensorType(DType.I64, ()))
    cond_in = body.add_input("cond_in", TensorType(DType.BOOL, ()))
    count = body.add_input("count", TensorType(DType.I64, ()))
    row = body.add1(Op.GATHER, [x, i], {"axis": 1})
    outs = [body.add1(Op.IDENTITY, [cond_in]), body.add1(Op.IDENTITY, [count]), row]
    loop = b.add(Op.LOOP, [trips, None, b.constant(i64(0))], {"body": body.finish(outs)},
                 outputs=[None, "rows"])
    graph = b.finish([v for v in loop if v is not None])
    assert graph.outputs[0].type.shape == ("s", "b")
    for binding in ({"b": 2, "s": 1}, {"b": 3, "s": 4}):
        x_data = np.arange(binding["b"] * binding["s"], dtype=np.float32)
        (got,) = reference.run(graph, {"x": x_data.reshape(binding["b"], binding["s"])})
        check_outputs(graph, binding, [got])
        np.testing.assert_array_equal(got, x_data.reshape(binding["b"], binding["s"]).T)


class _Expands(torch.nn.Module):
    """A class token expanded over the batch and positions over batch and sequence, as torch's
    tracing exporter spells expand(-1): Where(Equal(shape, -1), 1, shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = torch.nn.Parameter(torch.randn(1, 1, 8))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(x.shape[1]).unsqueeze(0).expand(x.shape[0], -1)
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1), positions


def test_traced_expand_keeps_symbols(tmp_path: Path) -> None:
    path = tmp_path / "expands.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(_Expands().eval(), (torch.randn(2, 3, 8),), str(path), dynamo=False,
                          opset_version=17, input_names=["x"],
                          dynamic_axes={"x": {0: "batch", 1: "seq"}})
    graph = load_onnx(str(path))
    assert [v.type.shape for v in graph.outputs] == [("batch", "seq+1", 8), ("batch", "seq")]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    for binding in ({"batch": 1, "seq": 1}, {"batch": 4, "seq": 6}):
        x = rng.standard_normal((binding["batch"], binding["seq"], 8)).astype(np.float32)
        want = session.run(None, {"x": x})
        check_outputs(graph, binding, want)
        for got, expected in zip(reference.run(graph, {"x": x}), want, strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-6)


def _every_value(graph: Graph) -> Graph:
    """``graph`` with every node output made a graph output (to see all extents)."""
    values = tuple(v for n in graph.nodes for v in n.outputs if v is not None)
    return Graph(graph.name, graph.inputs, graph.nodes, values)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_every_symbolic_extent_of_a_decoder_is_right(tmp_path: Path, exporter: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
    from zoo import GPT2StyleDecoder

    torch.manual_seed(0)
    module = GPT2StyleDecoder(50, 16, 32, 2, 1).eval()
    ids = torch.randint(0, 50, (2, 8))
    path = tmp_path / "gpt.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(module, (ids,), str(path), dynamo=False, opset_version=17,
                              input_names=["ids"], dynamic_axes={"ids": {0: "batch", 1: "seq"}})
        else:
            dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq", max=16)}
            program = torch.onnx.export(module, (ids,), dynamo=True, input_names=["ids"],
                                        dynamic_shapes={"ids": dims})
            assert program is not None
            program.save(str(path))
    graph = load_onnx(str(path))
    assert graph.outputs[0].type.shape == ("batch", "seq", 50)
    everything = _every_value(graph)
    # Only the causal mask (a slice of a 16x16 buffer up to seq) and what it feeds are UNKNOWN.
    unknown = [v for v in everything.outputs if UNKNOWN in v.type.shape]
    assert len(unknown) <= 8
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    for batch, seq in ((1, 1), (3, 5), (2, 16)):
        feeds = {"ids": rng.integers(0, 50, (batch, seq)).astype(np.int64)}
        results = reference.run(everything, feeds)
        check_outputs(everything, {"batch": batch, "seq": seq}, results)
        logits = results[everything.outputs.index(graph.outputs[0])]
        np.testing.assert_allclose(logits, session.run(None, feeds)[0], rtol=1e-4, atol=1e-5)
