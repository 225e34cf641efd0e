"""The verifier: each invariant it guards, broken on purpose, gives its own message."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kiln.compiler import reference
from kiln.compiler.errors import ExecutionError, TypeInferenceError, VerificationError
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph, Node, Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType

F2 = TensorType(DType.F32, (2,))


def small_graph() -> Graph:
    b = GraphBuilder()
    x = b.add_input("x", F2)
    y = b.add1(Op.RELU, [x], output="y")
    z = b.add1(Op.ADD, [y, x], output="z")
    return b.finish([z])


def replace_node(graph: Graph, index: int, node: Node) -> Graph:
    nodes = list(graph.nodes)
    nodes[index] = node
    return dataclasses.replace(graph, nodes=tuple(nodes))


def test_valid_graph_passes() -> None:
    from kiln.compiler.ir.verify import verify

    verify(small_graph())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda g: dataclasses.replace(g, nodes=g.nodes[::-1]), "reads %y before it is defined"),
        (lambda g: replace_node(g, 1, dataclasses.replace(g.nodes[1], outputs=(Value("y", F2),))),
         "value %y is defined more than once"),
        (lambda g: replace_node(g, 1, dataclasses.replace(
            g.nodes[1], inputs=(Value("y", TensorType(DType.F32, (3,))), g.inputs[0]))),
         "reads %y as f32[3], but it is defined as f32[2]"),
        (lambda g: replace_node(g, 0, dataclasses.replace(
            g.nodes[0], outputs=(Value("y", TensorType(DType.F32, (3,))),))),
         "output %y is typed f32[3], but the type rule gives f32[2]"),
        (lambda g: replace_node(g, 0, dataclasses.replace(g.nodes[0], attrs={"alpha": 1.0})),
         "unknown attribute 'alpha'"),
        (lambda g: replace_node(g, 0, dataclasses.replace(g.nodes[0], inputs=())),
         "takes 1 inputs, got 0"),
        (lambda g: dataclasses.replace(
            replace_node(g, 1, dataclasses.replace(
                g.nodes[1], outputs=(Value("z", TensorType(DType.F16, (2,))),))),
            outputs=(Value("z", TensorType(DType.F16, (2,))),)),
         "output %z is typed f16[2], but the type rule gives f32[2]"),
        (lambda g: dataclasses.replace(g, outputs=(Value("w", F2),)), "reads %w before"),
    ],
)
def test_each_broken_invariant_is_reported(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    from kiln.compiler.ir.verify import verify

    with pytest.raises(VerificationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        verify(mutate(small_graph()))


def test_missing_default_is_reported() -> None:
    from kiln.compiler.ir.verify import verify

    b = GraphBuilder()
    x = b.add_input("x", F2)
    graph = b.finish([b.add1(Op.LEAKY_RELU, [x], output="y")])
    broken = replace_node(graph, 0, dataclasses.replace(graph.nodes[0], attrs={}))
    with pytest.raises(VerificationError, match="attributes are not normalized"):
        verify(broken)


def test_builder_rejects_bad_types_with_node_name() -> None:
    b = GraphBuilder()
    x = b.add_input("x", F2)
    w = b.add_input("w", TensorType(DType.F32, (3,)))
    with pytest.raises(TypeInferenceError, match=r"add \(node 'sum1'\): .*do not broadcast"):
        b.add1(Op.ADD, [x, w], name="sum1")
    i = b.add_input("i", TensorType(DType.I64, (2,)))
    with pytest.raises(TypeInferenceError, match="add"):
        b.add1(Op.ADD, [x, i], name="mixed")


def test_executor_names_expected_and_actual_inputs() -> None:
    graph = small_graph()
    with pytest.raises(ExecutionError, match=r"missing \['x'\], unexpected \['y'\]"):
        reference.run(graph, {"y": np.zeros(2, np.float32)})
    with pytest.raises(ExecutionError, match=r"expected element type f32 \(float32\), got float64"):
        reference.run(graph, {"x": np.zeros(2)})
    with pytest.raises(ExecutionError, match=r"expected shape \[2\], got \[3\]"):
        reference.run(graph, {"x": np.zeros(3, np.float32)})


def test_symbolic_input_accepts_any_extent() -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, ("n", 2)))
    graph = b.finish([b.add1(Op.RELU, [x])])
    for n in (1, 5):
        out = reference.run(graph, {"x": -np.ones((n, 2), np.float32)})[0]
        assert out.shape == (n, 2) and not out.any()
