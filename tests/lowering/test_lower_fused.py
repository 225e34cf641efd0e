"""Lowering of FUSED nodes (compiler/lower/ops/fused.py): each fusion pattern of
tests/passes/test_fuse.py, fused, gives one kernel per group, and computes what the unfused graph
computes: through the kernel-IR interpreter against the reference executor, and compiled
against the compiled unfused graph.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "passes"))
from test_fuse import PATTERNS, Pattern  # noqa: E402

from kiln.compiler import build, reference  # noqa: E402
from kiln.compiler.ir.builder import GraphBuilder  # noqa: E402
from kiln.compiler.ir.graph import Graph  # noqa: E402
from kiln.compiler.ir.op import Op  # noqa: E402
from kiln.compiler.ir.types import DType, TensorType  # noqa: E402
from kiln.compiler.lower.from_graph import interpret_lowered, lower_graph  # noqa: E402
from kiln.compiler.lower.inline import accesses  # noqa: E402
from kiln.compiler.lower.registry import LoweringError  # noqa: E402
from kiln.compiler.passes.fuse import fuse_operators  # noqa: E402

FUSING = [name for name, make in PATTERNS.items() if make().groups]
# Patterns whose anchor stores its result more than once (accumulating in it; Softmax stores
# exp then scales it): the epilogue runs as a second loop nest of
# the same kernel, over a scratch copy of the anchor's result.
SEPARATE_EPILOGUE = {"reduce_keeping_last_axis", "softmax_epilogue"}


def kernel_count(graph: Graph) -> int:
    return sum(len(step.kernels) for step in lower_graph(graph).steps)


def assert_close(got: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", FUSING)
def test_one_kernel_per_group(name: str) -> None:
    pattern = PATTERNS[name]()
    fused = fuse_operators(pattern.graph)
    lowered = lower_graph(fused)
    steps = [s for s in lowered.steps if s.node.op is Op.FUSED]
    assert len(steps) == len(pattern.groups)
    for step in steps:
        assert len(step.kernels) == 1
        body_ops = {n.name for n in step.node.attrs["body"].nodes if n.op is not Op.CONSTANT}
        assert set(step.kernels[0].source) == body_ops
        # Inlined epilogues need no buffer for the anchor's result (the anchor's own working
        # scratch, e.g. a padded input, is another matter).
        anchor_buffers = [b for b in step.scratch if ".anchor." in b.name]
        assert bool(anchor_buffers) == (name in SEPARATE_EPILOGUE)
    assert kernel_count(fused) == kernel_count(pattern.graph) - sum(
        len(ops) - 1 for _, ops, _ in pattern.groups)


@pytest.mark.parametrize("name", FUSING)
def test_interpreted_matches_reference(name: str) -> None:
    pattern = PATTERNS[name]()
    expected = reference.run(pattern.graph, pattern.inputs)
    got = interpret_lowered(lower_graph(fuse_operators(pattern.graph)), pattern.inputs)
    for g, e in zip(got, expected, strict=True):
        assert_close(g, e)


def _compiled_pair(pattern: Pattern) -> None:
    fused = fuse_operators(pattern.graph)
    got = build(fused).run(pattern.inputs)
    expected = build(pattern.graph).run(pattern.inputs)
    for g, e in zip(got, expected, strict=True):
        assert_close(g, e)


@pytest.mark.parametrize("name", FUSING)
def test_compiled_fused_matches_compiled_unfused(name: str) -> None:
    _compiled_pair(PATTERNS[name]())


def test_compiled_large_conv_epilogue() -> None:
    """Big enough for parallel loops; random data."""
    rng = np.random.default_rng(1)
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, (2, 8, 20, 20)))
    y = b.add1(Op.CONV, [x, b.constant(rng.standard_normal((16, 8, 3, 3)).astype(np.float32)),
                         b.constant(rng.standard_normal(16).astype(np.float32))],
               {"pads": (1, 1, 1, 1)}, name="conv")
    y = b.add1(Op.CLIP, [y, b.constant(np.float32(0)), b.constant(np.float32(6))], name="relu6")
    graph = b.finish([y])
    _compiled_pair(Pattern(graph, {"x": rng.standard_normal((2, 8, 20, 20)).astype(np.float32)},
                           []))


def test_float16_chain_rounds_like_the_reference() -> None:
    """Every intermediate of a float16 chain is rounded to float16, as the unfused ops do."""
    rng = np.random.default_rng(2)
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F16, (3, 7)))
    y = b.add_input("y", TensorType(DType.F16, (7,)))
    z = b.add1(Op.MUL, [x, y], name="mul")
    z = b.add1(Op.EXP, [z], name="exp")
    z = b.add1(Op.SUB, [z, x], name="sub")
    graph = b.finish([z])
    inputs = {"x": rng.standard_normal((3, 7)).astype(np.float16),
              "y": rng.standard_normal(7).astype(np.float16)}
    fused = fuse_operators(graph)
    assert kernel_count(fused) == 1
    expected = reference.run(graph, inputs)[0]
    got = interpret_lowered(lower_graph(fused), inputs)[0]
    np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), rtol=1e-3)


def test_epilogue_store_replaced_once() -> None:
    """The conv kernel's store to its result becomes the store of the group's output."""
    fused = fuse_operators(PATTERNS["conv_bias_add_relu"]().graph)
    (step,) = [s for s in lower_graph(fused).steps if s.node.op is Op.FUSED]
    out = step.kernels[0].outputs[0]
    assert accesses(step.kernels[0].body, out.name) == (1, 0)


def test_two_anchors_in_a_body_are_refused() -> None:
    b = GraphBuilder()
    x = b.add_input("x", TensorType(DType.F32, (2, 2)))
    inner = b.sub("body")
    xi = inner.add_input("x.in", TensorType(DType.F32, (2, 2)))
    m = inner.add1(Op.MATMUL, [xi, xi], name="a")
    m = inner.add1(Op.MATMUL, [m, xi], name="b")
    body = inner.finish([m])
    y = b.add1(Op.FUSED, [x], {"body": body, "kind": "epilogue"}, name="f")
    with pytest.raises(LoweringError, match="at most one non-elementwise node"):
        lower_graph(b.finish([y]))
