"""The operator fusion pass (compiler/passes/fuse.py): golden structure and soundness.

Each pattern is a small graph with the fused structure it must get, written by hand (groups,
kinds, the ops inside each body, the node's outputs); soundness runs the reference executor on
random inputs before and after fusion. tests/lowering/test_lower_fused.py compiles the same
patterns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.compiler import reference
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph, Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.parser import parse_graph
from kiln.compiler.ir.printer import print_graph
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.ir.verify import verify
from kiln.compiler.passes.fuse import fuse_operators

F32 = DType.F32
RNG = np.random.default_rng(0)


@dataclass(frozen=True)
class Pattern:
    """A graph, random inputs for it, and the expected fused groups: (kind, ops in the body
    in order, constants left out, number of node outputs) per FUSED node, in graph order."""

    graph: Graph
    inputs: dict[str, np.ndarray]
    groups: list[tuple[str, list[str], int]]


def _data(shape: tuple[int, ...], dtype: DType = F32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype.numpy)


def _scalar(b: GraphBuilder, value: float, dtype: DType = F32) -> Value:
    return b.constant(np.array(value, dtype.numpy))


def _inputs(b: GraphBuilder, **shapes: tuple[int, ...]) -> tuple[list[Value], dict]:
    values = [b.add_input(name, TensorType(F32, shape)) for name, shape in shapes.items()]
    return values, {name: _data(shape) for name, shape in shapes.items()}


def elementwise_broadcast() -> Pattern:
    b = GraphBuilder()
    (x, s, c), data = _inputs(b, x=(2, 3, 4), s=(4,), c=(3, 1))
    y = b.add1(Op.MUL, [x, s], name="mul")
    y = b.add1(Op.ADD, [y, c], name="add")
    y = b.add1(Op.TANH, [y], name="tanh")
    y = b.add1(Op.CLIP, [y, _scalar(b, -0.5), _scalar(b, 0.5)], name="clip")
    return Pattern(b.finish([y]), data, [("elementwise", ["mul", "add", "tanh", "clip"], 1)])


def conv_bias_add_relu() -> Pattern:
    b = GraphBuilder()
    (x, r), data = _inputs(b, x=(1, 3, 6, 6), r=(1, 4, 6, 6))
    w = b.constant(_data((4, 3, 3, 3)), "w")
    bias = b.constant(_data((4, 1, 1)), "bias")
    y = b.add1(Op.CONV, [x, w], {"pads": (1, 1, 1, 1)}, name="conv")
    y = b.add1(Op.ADD, [y, bias], name="bias_add")
    y = b.add1(Op.ADD, [y, r], name="residual")
    y = b.add1(Op.RELU, [y], name="relu")
    return Pattern(b.finish([y]), data, [("epilogue", ["conv", "add", "add", "relu"], 1)])


def gemm_gelu() -> Pattern:
    """Gemm then GELU as exporters spell it: x * 0.5 * (1 + erf(x / sqrt 2))."""
    b = GraphBuilder()
    (x,), data = _inputs(b, x=(3, 5))
    w = b.constant(_data((5, 4)), "w")
    c = b.constant(_data((4,)), "c")
    y = b.add1(Op.GEMM, [x, w, c], name="gemm")
    e = b.add1(Op.DIV, [y, _scalar(b, np.sqrt(2.0))], name="div")
    e = b.add1(Op.ERF, [e], name="erf")
    e = b.add1(Op.ADD, [e, _scalar(b, 1.0)], name="add")
    e = b.add1(Op.MUL, [y, e], name="mul")
    e = b.add1(Op.MUL, [e, _scalar(b, 0.5)], name="half")
    return Pattern(b.finish([e]), data,
                   [("epilogue", ["gemm", "div", "erf", "add", "mul", "mul"], 1)])


def reduce_prologue_epilogue() -> Pattern:
    """sqrt(mean(x * x, last axis) + eps): the root-mean-square of rows."""
    b = GraphBuilder()
    (x,), data = _inputs(b, x=(3, 2, 5))
    sq = b.add1(Op.MUL, [x, x], name="square")
    m = b.add1(Op.REDUCE_MEAN, [sq, b.constant(np.array([-1]))], {"keepdims": 1}, name="mean")
    m = b.add1(Op.ADD, [m, _scalar(b, 1e-5)], name="eps")
    m = b.add1(Op.SQRT, [m], name="sqrt")
    return Pattern(b.finish([m]), data,
                   [("reduction", ["mul", "reduce_mean", "add", "sqrt"], 1)])


def reduce_keeping_last_axis() -> Pattern:
    """A reduction whose lowering accumulates in its output (the epilogue runs after it)."""
    b = GraphBuilder()
    (x,), data = _inputs(b, x=(2, 3, 4))
    s = b.add1(Op.REDUCE_SUM, [x, b.constant(np.array([1]))], {"keepdims": 0}, name="sum")
    s = b.add1(Op.RELU, [s], name="relu")
    return Pattern(b.finish([s]), data, [("reduction", ["reduce_sum", "relu"], 1)])


def softmax_epilogue() -> Pattern:
    b = GraphBuilder()
    (x, m), data = _inputs(b, x=(2, 3, 6), m=(6,))
    y = b.add1(Op.MUL, [x, _scalar(b, 0.125)], name="scale")
    y = b.add1(Op.ADD, [y, m], name="mask")
    y = b.add1(Op.SOFTMAX, [y], {"axis": -1}, name="softmax")
    y = b.add1(Op.MUL, [y, _scalar(b, 2.0)], name="double")
    return Pattern(b.finish([y]), data, [("reduction", ["mul", "add", "softmax", "mul"], 1)])


def layernorm_residual() -> Pattern:
    b = GraphBuilder()
    (x, r), data = _inputs(b, x=(2, 4, 8), r=(2, 4, 8))
    y = b.add1(Op.ADD, [x, r], name="residual")
    y = b.add1(Op.LAYER_NORMALIZATION, [y, b.constant(_data((8,))), b.constant(_data((8,)))],
               {"axis": -1}, name="ln")
    y = b.add1(Op.RELU, [y], name="relu")
    return Pattern(b.finish([y]), data,
                   [("reduction", ["add", "layer_normalization", "relu"], 1)])


def epilogue_value_used_outside() -> Pattern:
    """The biased conv output is also a graph output: the fused node yields it too."""
    b = GraphBuilder()
    (x,), data = _inputs(b, x=(1, 2, 5, 5))
    y = b.add1(Op.CONV, [x, b.constant(_data((3, 2, 3, 3)))], name="conv")
    z = b.add1(Op.ADD, [y, b.constant(_data((3, 1, 1)))], name="bias")
    o = b.add1(Op.SIGMOID, [z], name="sigmoid")
    return Pattern(b.finish([o, z]), data, [("epilogue", ["conv", "add", "sigmoid"], 2)])


def no_cycle_through_outside() -> Pattern:
    """b = relu(matmul) feeds a second matmul c and d = b + c: d cannot join the first group
    (it reads c, computed from the group outside it), so it joins c's."""
    b = GraphBuilder()
    (x,), data = _inputs(b, x=(2, 4))
    a = b.add1(Op.MATMUL, [x, b.constant(_data((4, 4)))], name="mm1")
    r = b.add1(Op.RELU, [a], name="relu")
    c = b.add1(Op.MATMUL, [r, b.constant(_data((4, 4)))], name="mm2")
    d = b.add1(Op.ADD, [r, c], name="add")
    return Pattern(b.finish([d]), data,
                   [("epilogue", ["matmul", "relu"], 1), ("epilogue", ["matmul", "add"], 1)])


def prologue_used_outside() -> Pattern:
    """x * x is a graph output too, so it is not a prologue; nothing fuses."""
    b = GraphBuilder()
    (x,), data = _inputs(b, x=(3, 4))
    sq = b.add1(Op.MUL, [x, x], name="square")
    m = b.add1(Op.REDUCE_MAX, [sq, b.constant(np.array([1]))], name="max")
    return Pattern(b.finish([m, sq]), data, [])


PATTERNS: dict[str, Callable[[], Pattern]] = {fn.__name__: fn for fn in (
    elementwise_broadcast, conv_bias_add_relu, gemm_gelu, reduce_prologue_epilogue,
    reduce_keeping_last_axis, softmax_epilogue, layernorm_residual, epilogue_value_used_outside,
    no_cycle_through_outside, prologue_used_outside,
)}


def check_fused_graph(graph: Graph) -> None:
    """The verifier and the text round trip on a pass's result."""
    verify(graph)
    text = print_graph(graph, full_constants=True)
    assert print_graph(parse_graph(text), full_constants=True) == text


def structure(graph: Graph) -> list[tuple[str, list[str], int]]:
    """(kind, ops of the body without its constants, outputs) of each FUSED node."""
    return [(n.attrs["kind"], [m.op.value for m in n.attrs["body"].nodes
                               if m.op is not Op.CONSTANT], len(n.outputs))
            for n in graph.nodes if n.op is Op.FUSED]


@pytest.mark.parametrize("name", PATTERNS)
def test_golden_structure(name: str) -> None:
    pattern = PATTERNS[name]()
    fused = fuse_operators(pattern.graph)
    check_fused_graph(fused)
    assert structure(fused) == pattern.groups
    if not pattern.groups:
        assert fused is pattern.graph


@pytest.mark.parametrize("name", PATTERNS)
def test_reference_same_before_and_after(name: str) -> None:
    pattern = PATTERNS[name]()
    expected = reference.run(pattern.graph, pattern.inputs)
    got = reference.run(fuse_operators(pattern.graph), pattern.inputs)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(g, e)


def test_ir_text_shows_the_group() -> None:
    text = print_graph(fuse_operators(conv_bias_add_relu().graph))
    assert 'kind="epilogue"' in text
    assert 'loc("conv")' in text and 'loc("relu")' in text
    assert "fused(" in text


def test_second_run_changes_nothing() -> None:
    once = fuse_operators(conv_bias_add_relu().graph)
    assert fuse_operators(once) is once


def test_keeps_node_order_outside_groups() -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorType(F32, (4,)))
    t = b.add1(Op.TRANSPOSE, [x], name="first")
    e = b.add1(Op.EXP, [t], name="exp")
    n = b.add1(Op.NEG, [e], name="neg")
    fused = fuse_operators(b.finish([n, t]))
    assert [n.op for n in fused.nodes] == [Op.TRANSPOSE, Op.FUSED]


SHAPES = st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple)
UNARY = [Op.NEG, Op.EXP, Op.TANH, Op.RELU, Op.ABS, Op.SIGMOID]
BINARY = [Op.ADD, Op.SUB, Op.MUL, Op.MAX]


@settings(max_examples=25)
@given(shape=SHAPES, steps=st.lists(st.tuples(st.sampled_from(UNARY + BINARY),
                                              st.integers(0, 7)), min_size=2, max_size=6))
def test_random_elementwise_chains(shape: tuple[int, ...], steps: list[tuple[Op, int]]) -> None:
    """Chains of unary/binary ops whose second operands broadcast from random sub-shapes."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType(F32, shape))
    inputs = {"x": _data(shape)}
    y = x
    for k, (op, mask) in enumerate(steps):
        if op in BINARY:
            sub = tuple(1 if mask >> a & 1 else d for a, d in enumerate(shape))[mask % 2:]
            name = f"in{k}"
            inputs[name] = _data(sub)
            y = b.add1(op, [y, b.add_input(name, TensorType(F32, sub))], name=f"n{k}")
        else:
            y = b.add1(op, [y], name=f"n{k}")
    graph = b.finish([y])
    fused = fuse_operators(graph)
    check_fused_graph(fused)
    assert structure(fused) == [("elementwise", [op.value for op, _ in steps], 1)]
    np.testing.assert_array_equal(reference.run(fused, inputs)[0],
                                  reference.run(graph, inputs)[0])


def test_groups_that_would_read_each_other_are_not_both_made(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With groups of at most 3 nodes, {mm1, relu, add} reads mm2 while {mm2, mul} would read
    relu: contracting both would make a cycle, so the second group is not made."""
    import kiln.compiler.passes.fuse as fuse

    monkeypatch.setattr(fuse, "MAX_GROUP_NODES", 3)
    b = GraphBuilder()
    (x, z), data = _inputs(b, x=(2, 4), z=(2, 3))
    a1 = b.add1(Op.MATMUL, [x, b.constant(_data((4, 4)))], name="mm1")
    v = b.add1(Op.RELU, [a1], name="relu")
    a2 = b.add1(Op.MATMUL, [z, b.constant(_data((3, 4)))], name="mm2")
    m = b.add1(Op.ADD, [v, a2], name="add")
    q = b.add1(Op.MUL, [a2, v], name="mul")
    graph = b.finish([m, q])
    fused = fuse_operators(graph)
    check_fused_graph(fused)
    assert structure(fused) == [("epilogue", ["matmul", "relu", "add"], 2)]
    for e, g in zip(reference.run(graph, data), reference.run(fused, data), strict=True):
        np.testing.assert_array_equal(g, e)


def test_blocked_convolutions_take_their_epilogue() -> None:
    """After layout selection, a blocked conv's bias/ReLU run inside the conv's group, and the
    compiled result still equals the reference of the unblocked graph."""
    from kiln.compiler import build
    from kiln.compiler.passes.pipeline import optimize

    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, (1, 16, 10, 10)))
    rng = np.random.default_rng(3)
    w = b.constant(rng.standard_normal((32, 16, 3, 3)).astype(np.float32))
    conv = b.add1(Op.CONV, [x, w], {"pads": [1, 1, 1, 1]})
    graph = b.finish([b.add1(Op.RELU, [conv])])
    optimized = optimize(graph, 3)
    groups = [n for n in optimized.nodes if n.op is Op.FUSED]
    assert any(inner.op is Op.CONV_NCHWC for g in groups for inner in g.attrs["body"].nodes)
    assert not any(n.op is Op.RELU for n in optimized.nodes)
    feeds = {"x": rng.standard_normal((1, 16, 10, 10)).astype(np.float32)}
    np.testing.assert_allclose(build(graph, opt_level=3).run(feeds)[0],
                               reference.run(graph, feeds)[0], rtol=1e-4, atol=1e-4)
