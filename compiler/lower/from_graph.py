"""Lowering a whole (specialized, fully static) graph to kernels, node by node.

``lower_graph`` checks that every value has a static type, gives each value a ``Buffer`` named
after it, and calls each node's lowering. ``interpret_lowered`` runs the result with the
kernel-IR interpreter: the backend-independent check of the lowerings in tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from ..errors import KilnError
from ..ir.graph import Graph, Node, Value
from ..ir.op import Op
from ..ir.schema import op_def
from ..ir.types import DType
from ..machine import DEFAULT_MACHINE, Machine
from .interpret import run_kernel
from .kernel_ir import Buffer, Kernel
from .registry import LowerContext, LoweringError, lowering_for

# Constants of at most this many elements are copied into the control-flow bodies that read
# them: a body is re-typed for its node as a graph of its own (ops/control_inline.py), where an
# enclosing value would otherwise be an opaque input and its shape operands (Unsqueeze axes,
# Reshape shape...) would give dynamic shapes. Larger ones (weights) stay values the body reads.
BODY_CONSTANT_ELEMENTS = 64


@dataclass(frozen=True)
class LoweredNode:
    node: Node
    kernels: tuple[Kernel, ...]
    scratch: tuple[Buffer, ...]


@dataclass(frozen=True)
class LoweredGraph:
    """Buffers for the graph's inputs, outputs and constants, and each node's kernels."""

    inputs: tuple[Buffer, ...]
    outputs: tuple[Buffer, ...]
    constants: dict[str, np.ndarray]
    buffers: dict[str, Buffer]
    steps: tuple[LoweredNode, ...]


def buffer_of(value: Value) -> Buffer:
    if not value.type.is_static:
        raise KilnError(f"value %{value.name} has a non-static type {value.type}")
    return Buffer(value.name, value.type.dtype, tuple(int(d) for d in value.type.shape))


def lower_graph(graph: Graph, machine: Machine = DEFAULT_MACHINE) -> LoweredGraph:
    """Lower every node of a static graph for ``machine``; raises naming the first node that
    cannot be."""
    buffers: dict[str, Buffer] = {v.name: buffer_of(v) for v in graph.inputs}
    constants: dict[str, np.ndarray] = {}
    constant_nodes: dict[str, Node] = {}
    steps: list[LoweredNode] = []
    for index, node in enumerate(graph.nodes):
        if node.op is Op.CONSTANT:
            out = node.outputs[0]
            assert out is not None
            buffers[out.name] = buffer_of(out)
            constants[out.name] = np.asarray(node.attrs["value"], order="C")
            if constants[out.name].size <= BODY_CONSTANT_ELEMENTS:
                constant_nodes[out.name] = node
            continue
        node = _with_body_constants(node, constant_nodes)
        for value in node.outputs:
            if value is not None and not value.type.is_static:
                raise LoweringError(
                    f"{node.describe()}: output %{value.name} has shape "
                    f"[{','.join(map(str, value.type.shape))}], which depends on input values "
                    "known only at run time; dynamic shapes are not supported yet"
                )
        fn = lowering_for(node.op)
        if fn is None:
            raise LoweringError(f"{node.describe()}: no lowering for op {node.op.value}")
        for value in node.outputs:
            if value is not None:
                buffers[value.name] = buffer_of(value)
        ctx = LowerContext(
            node,
            op_def(node.op).with_defaults(node.attrs),
            [None if v is None else buffers[v.name] for v in node.inputs],
            [None if v is None else buffers[v.name] for v in node.outputs],
            [None if v is None else constants.get(v.name) for v in node.inputs],
            f"k{index}_{node.op.value}",
            machine,
        )
        kernels = fn(ctx)
        for name, data in ctx.derived.items():
            constants[name] = data
            buffers[name] = Buffer(name, DType.from_numpy(data.dtype), tuple(data.shape))
        steps.append(LoweredNode(node, tuple(kernels), tuple(ctx.scratch_buffers)))
    return LoweredGraph(
        tuple(buffers[v.name] for v in graph.inputs),
        tuple(buffers[v.name] for v in graph.outputs),
        constants,
        buffers,
        tuple(steps),
    )


def _with_body_constants(node: Node, constant_nodes: Mapping[str, Node]) -> Node:
    """``node`` with the constant nodes of ``constant_nodes`` that its bodies read copied
    into those bodies; value names stay the same."""
    if not any(True for _ in node.subgraphs()):
        return node

    def embed(body: Graph) -> Graph:
        read = {v.name for inner in body.walk() for v in inner.inputs if v is not None}
        read.update(v.name for v in body.outputs)
        copies = tuple(found for name, found in constant_nodes.items() if name in read)
        return replace(body, nodes=copies + body.nodes) if copies else body

    attrs = {key: embed(value) if isinstance(value, Graph) else value
             for key, value in node.attrs.items()}
    return replace(node, attrs=attrs)


def interpret_lowered(lowered: LoweredGraph, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run the lowered kernels with the scalar interpreter (small graphs only)."""
    memory: dict[str, np.ndarray] = dict(lowered.constants)
    memory.update({k: np.asarray(v) for k, v in inputs.items()})
    for step in lowered.steps:
        for kernel in step.kernels:
            params = {b.name: memory[b.name] for b in kernel.params if b.name in memory}
            memory.update(run_kernel(kernel, params))
    return [memory[b.name] for b in lowered.outputs]
