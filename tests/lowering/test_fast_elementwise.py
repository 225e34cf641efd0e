"""Elementwise and movement fast paths: axes of fused elementwise groups merged by
``collapse_axes`` (and the ones it must leave alone), Pow by the exponents that become
multiplies / sqrt, and the tiled Transpose, compiled and interpreted against the reference
executor, over odd extents."""

from __future__ import annotations

import numpy as np
import pytest
from nodegraph import node_graph
from test_fast_rows import compiled, data
from test_lower_elementwise import assert_matches

from kiln.compiler import build, reference
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph
from kiln.compiler.lower.inline import walk
from kiln.compiler.lower.kernel_ir import Binary, Loop, LoopKind
from kiln.compiler.passes.fuse import fuse_operators

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def loops(op: Op, inputs: list[np.ndarray]) -> list[Loop]:
    graph, _ = node_graph(op, inputs, None)
    (step,) = lower_graph(graph).steps
    return [n for k in step.kernels for n in walk(k.body) if isinstance(n, Loop)]


def fused_graph(shapes: list[tuple[int, ...]]) -> tuple[Graph, dict[str, np.ndarray]]:
    """relu(x0 + x1 + ...): one fused elementwise group over the broadcast shape."""
    b = GraphBuilder()
    feeds = {f"x{i}": data(s, seed=i) for i, s in enumerate(shapes)}
    values = [b.add_input(name, TensorType.of(array)) for name, array in feeds.items()]
    total = values[0]
    for value in values[1:]:
        total = b.add1(Op.ADD, [total, value])
    return b.finish([b.add1(Op.RELU, [total])]), feeds


def fused_extents(graph: Graph) -> list[int | None]:
    """The constant extents of the fused kernel's loops (None for computed ones)."""
    (step,) = [s for s in lower_graph(fuse_operators(graph)).steps if s.node.op is Op.FUSED]
    return [getattr(n.extent, "value", None) for k in step.kernels for n in walk(k.body)
            if isinstance(n, Loop)]


# (operand shapes, loop extents after merging)
BROADCASTS = [
    ([(2, 3, 17, 19), (2, 3, 17, 19)], [6 * 17 * 19]),
    ([(2, 3, 17, 19), (3, 1, 1)], [2, 3, 17 * 19]),
    ([(2, 3, 17, 19), (1, 3, 1, 19)], [2, 3, 17, 19]),
    ([(2, 3, 17, 19), (17, 19)], [6, 17 * 19]),
    ([(4, 1, 5), (1, 3, 1)], [4, 3, 5]),
]


@pytest.mark.parametrize(("shapes", "extents"), BROADCASTS, ids=str)
def test_fused_axes_merge_where_every_operand_walks_them(
        shapes: list[tuple[int, ...]], extents: list[int]) -> None:
    graph, feeds = fused_graph(shapes)
    assert fused_extents(graph) == extents
    assert_matches(build(graph, threads=2).run(feeds)[0], reference.run(graph, feeds)[0])
    fused = fuse_operators(graph)
    assert_matches(interpret_lowered(lower_graph(fused), feeds)[0],
                   reference.run(graph, feeds)[0])


def test_large_nest_keeps_its_parallel_axis() -> None:
    """With the outer axis parallel, only the axes inside it merge (a lone merged axis would
    be split into chunks)."""
    graph, feeds = fused_graph([(64, 30, 40), (64, 30, 40)])
    assert fused_extents(graph) == [64, 1200]
    assert_matches(build(graph, threads=2).run(feeds)[0], reference.run(graph, feeds)[0])


def test_single_op_inside_a_control_flow_body() -> None:
    """A lone elementwise op merges its axes into one loop, and still inlines into a
    control-flow body (whose inlining maps the merged view's indices back to the value's)."""
    b = GraphBuilder()
    cond = b.add_input("cond", TensorType(DType.BOOL, ()))
    x = b.add_input("x", TensorType(DType.F32, (2, 3, 4)))
    then_b, else_b = b.sub("then"), b.sub("else")
    outs = b.add(Op.IF, [cond], {
        "then_branch": then_b.finish([then_b.add1(Op.SIGMOID, [x])]),
        "else_branch": else_b.finish([else_b.add1(Op.MUL, [x, x])])})
    graph = b.finish([v for v in outs if v is not None])
    assert loops(Op.SIGMOID, [data((2, 3, 4))])[-1].extent.value == 24  # type: ignore[attr-defined]
    for flag in (True, False):
        feeds = {"cond": np.array(flag), "x": data((2, 3, 4))}
        assert_matches(build(graph).run(feeds)[0], reference.run(graph, feeds)[0])


SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 0.5, -2.5, 3e-39, 1e30,
                     -1e30, 7.0], np.float32)


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0, 3.0, -1.0, 0.5, 1.5])
def test_pow_by_a_constant(exponent: float) -> None:
    x = np.concatenate([SPECIALS, data((51,))])
    e = np.array(exponent, np.float32)
    compiled(Op.POW, [x, e], consts=[1], interpret=True)
    graph, _ = node_graph(Op.POW, [x, e], None, [1])
    (step,) = lower_graph(graph).steps
    powers = [n for k in step.kernels for n in walk(k.body) if isinstance(n, Binary)
              and n.op == "pow"]
    assert len(powers) == (exponent == 1.5)  # the others need no libm call


@pytest.mark.parametrize(("shape", "perm"), [
    ((1, 3, 70, 33), [0, 1, 3, 2]),
    ((2, 40, 45), [0, 2, 1]),
    ((37, 65), [1, 0]),
    ((3, 33, 4, 35), [3, 1, 2, 0]),
    ((2, 9, 5, 7), [0, 2, 1, 3]),
    ((1, 301, 517), [0, 2, 1]),  # beyond half the L2 cache: tiled, partial tiles included
], ids=str)
def test_transpose(shape: tuple[int, ...], perm: list[int]) -> None:
    compiled(Op.TRANSPOSE, [data(shape)], {"perm": perm}, interpret=max(shape) < 50)


def test_transpose_tiles_the_swapped_plane() -> None:
    # out [300, 450]: 10 x 15 tiles of 32, the last ones partial; small tensors are not tiled
    nest = loops(Op.TRANSPOSE, [data((450, 300))])
    assert [getattr(n.extent, "value", None) for n in nest] == [10, 15, None, None]
    assert nest[0].kind is LoopKind.PARALLEL and nest[-1].kind is LoopKind.VECTORIZE
    assert len(loops(Op.TRANSPOSE, [data((70, 33))])) == 2
