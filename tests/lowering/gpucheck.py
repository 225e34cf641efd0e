"""Shared by the GPU lowering tests: lower a graph with ``lower_graph_gpu``, check that every
kernel is in GPU form, interpret it (sequential GPU semantics, race rule checked) and compare
with the reference executor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from nodegraph import node_graph

from kiln.compiler import reference
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.lower.from_graph import LoweredGraph, interpret_lowered
from kiln.compiler.lower.gpu import check_gpu_form, lower_graph_gpu
from kiln.compiler.lower.kernel_ir import Kernel


def gpu_matches_reference(graph: Graph, feeds: Mapping[str, np.ndarray], rtol: float = 1e-4,
                          atol: float = 1e-5) -> LoweredGraph:
    """``graph`` lowered for the GPU: every kernel in GPU form, interpreted equal to the
    reference executor's results."""
    expected = reference.run(graph, feeds)
    lowered = lower_graph_gpu(graph)
    for kernel in kernels(lowered):
        check_gpu_form(kernel)
    for want, got in zip(expected, interpret_lowered(lowered, feeds), strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    return lowered


def check_node(op: Op, inputs: Sequence[np.ndarray | None],
               attrs: Mapping[str, Any] | None = None, consts: Sequence[int] = (),
               outputs: int = 1) -> LoweredGraph:
    graph, feeds = node_graph(op, inputs, attrs, consts, outputs)
    return gpu_matches_reference(graph, feeds)


def kernels(lowered: LoweredGraph) -> list[Kernel]:
    return [k for step in lowered.steps for k in step.kernels]


def scheduled(lowered: LoweredGraph) -> bool:
    """Whether a dedicated schedule made the kernels (they use shared or thread-local
    memory)."""
    return any(k.shared or k.thread_local for k in kernels(lowered))


def rand(*shape: int) -> np.ndarray:
    return np.random.default_rng(sum(shape) + len(shape)).standard_normal(shape).astype(
        np.float32)
