"""Shared by the lowering tests: the one-node graph they build (inputs as graph inputs or
constants), the interpreted-vs-reference check of a lowering, and the tiles it made."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kiln.compiler import reference
from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Graph
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.lower.from_graph import LoweredGraph, interpret_lowered, lower_graph
from kiln.compiler.lower.inline import walk
from kiln.compiler.lower.kernel_ir import MatmulTile
from kiln.compiler.machine import Machine


def node_graph(op: Op, inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any] | None,
               consts: Sequence[int] = (), outputs: int = 1) -> tuple[Graph, dict[str, Any]]:
    """A graph of one ``op`` node; inputs listed in ``consts`` become constants."""
    builder = GraphBuilder(fold=False)
    values, feeds = [], {}
    for index, array in enumerate(inputs):
        if array is None:
            values.append(None)
        elif index in consts:
            values.append(builder.constant(array))
        else:
            values.append(builder.add_input(f"in{index}", TensorType.of(array)))
            feeds[f"in{index}"] = array
    results = builder.add(op, values, attrs, outputs=outputs)
    return builder.finish([v for v in results if v is not None]), feeds


def lowered_matches_reference(graph: Graph, feeds: Mapping[str, np.ndarray],
                              machine: Machine) -> LoweredGraph:
    """The graph lowered for ``machine``; interpreted, it matches the reference executor."""
    expected = reference.run(graph, feeds)
    lowered = lower_graph(graph, machine)
    for want, got in zip(expected, interpret_lowered(lowered, feeds), strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    return lowered


def tiles(lowered: LoweredGraph) -> list[MatmulTile]:
    return [n for s in lowered.steps for k in s.kernels for n in walk(k.body)
            if isinstance(n, MatmulTile)]


def plain_conv(x_shape: tuple[int, ...], w: np.ndarray, bias: np.ndarray | None,
               dtype: DType = DType.F32, **attrs: Any) -> Graph:
    """A graph of one Conv of input ``x`` with constant weights (and bias)."""
    b = GraphBuilder()
    x = b.add_input("x", TensorType(dtype, x_shape))
    operands = [x, b.constant(w)] + ([] if bias is None else [b.constant(bias)])
    return b.finish([b.add1(Op.CONV, operands, attrs)])
