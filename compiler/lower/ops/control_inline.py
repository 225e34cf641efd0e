"""Inlining a control-flow body (a ``Graph`` attribute) into the kernel of its If/Loop/Scan.

A body is re-typed with the static types it sees at this node (``rebuild_body``: its inputs,
plus the enclosing values it reads, which become extra graph inputs), lowered node by node with
``lower_graph``, and its kernels' statements are rewritten for the enclosing kernel
(``InlinedBody``):

- buffers of the body's own values and scratch become scratch buffers of the node (renamed, so
  they cannot clash with the enclosing graph's); enclosing values keep their buffers (inputs of
  the node's kernel);
- loads of a body input may be *bound* to an expression (a Loop's iteration number, a Scan's
  slice of its sequence input); the other body inputs are scratch the node's kernel fills;
- constants of the body: scalars are folded into the expressions, others are filled into
  scratch by the kernel's prologue;
- loop variables and locals are prefixed with the node's name, so nested bodies never shadow
  the enclosing kernel's variables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from ...errors import KilnError
from ...ir.builder import GraphBuilder
from ...ir.graph import Graph, Value
from ...ir.types import DType, TensorType
from ...passes.specialize import copy_nodes
from ..from_graph import LoweredGraph, lower_graph
from ..inline import Rewriter
from ..kernel_ir import (
    Block,
    Buffer,
    Const,
    Expr,
    Stmt,
    Store,
    Var,
    as_expr,
    block,
)
from ..registry import LowerContext
from .nn_common import ravel, unravel

# Body constants are written element by element by the kernel's prologue; larger ones would
# need a weights buffer, which a lowering cannot add yet.
MAX_INLINE_CONSTANT = 4096

Binding = Callable[[tuple[Expr, ...]], Expr]


def free_values(graph: Graph) -> list[Value]:
    """Values read by ``graph`` (its nodes, nested bodies, outputs) but defined outside it."""
    defined: set[str] = set()
    found: dict[str, Value] = {}

    def visit(body: Graph) -> None:
        defined.update(v.name for v in body.inputs)
        for node in body.nodes:
            for value in node.inputs:
                if value is not None and value.name not in defined:
                    found.setdefault(value.name, value)
            for inner in node.subgraphs():
                visit(inner)
            defined.update(v.name for v in node.outputs if v is not None)
        for value in body.outputs:
            if value.name not in defined:
                found.setdefault(value.name, value)

    visit(graph)
    return list(found.values())


def rebuild_body(ctx: LowerContext, graph: Graph, input_types: Sequence[TensorType]) -> Graph:
    """``graph`` re-typed for static ``input_types``; the enclosing values it reads become
    extra inputs after its own."""
    builder = GraphBuilder(graph.name)
    mapping: dict[str, Value] = {}
    for value, type_ in zip(graph.inputs, input_types, strict=True):
        mapping[value.name] = builder.add_input(value.name, type_)
    for value in free_values(graph):
        if not value.type.is_static:
            raise ctx.fail(
                f"body {graph.name!r} reads %{value.name} of non-static type {value.type}; "
                "dynamic shapes are not supported yet"
            )
        mapping[value.name] = builder.add_input(value.name, value.type)
    try:
        copy_nodes(graph.nodes, builder, mapping)
    except KilnError as error:
        raise ctx.fail(f"body {graph.name!r} does not type-check at this node: {error}") from None
    return Graph(graph.name, tuple(builder.inputs), tuple(builder.nodes),
                 tuple(mapping[v.name] for v in graph.outputs))


def static_shape(ctx: LowerContext, value: Value, what: str) -> tuple[int, ...]:
    if not value.type.is_static:
        raise ctx.fail(f"{what} %{value.name} has non-static type {value.type}; dynamic shapes "
                       "are not supported yet")
    return tuple(int(d) for d in value.type.shape)


class InlinedBody:
    """A body lowered and rewritten for inlining into the kernel of ``ctx``'s node.

    ``stmts`` computes the body (after ``prologue`` ran once); ``read(i, idx)`` is element
    ``idx`` of body output ``i``; ``state(k)`` is the scratch holding unbound body input ``k``.
    Free values of the body are ``free`` (inputs of the node's kernel)."""

    def __init__(self, ctx: LowerContext, graph: Graph, input_types: Sequence[TensorType],
                 bindings: dict[int, Binding]) -> None:
        self.ctx = ctx
        self.prefix = f"{ctx.name}__"
        body = rebuild_body(ctx, graph, input_types)
        self.graph = body
        try:
            lowered: LoweredGraph = lower_graph(body, ctx.machine)
        except KilnError as error:
            raise ctx.fail(f"body {graph.name!r}: {error}") from None
        own_inputs = body.inputs[:len(input_types)]
        self.free: list[Buffer] = list(lowered.inputs[len(input_types):])
        free_names = {b.name for b in self.free}
        self.bindings = {own_inputs[i].name: bind for i, bind in bindings.items()}
        self.constants = lowered.constants
        self.shapes = {name: buffer.shape for name, buffer in lowered.buffers.items()}
        self.renamed: dict[str, Buffer] = {}
        self.prologue: list[Stmt] = []
        for buffer in lowered.buffers.values():
            if buffer.name not in free_names and buffer.name not in self.bindings:
                self._scratch(buffer)
        for step in lowered.steps:
            for buffer in step.scratch:
                self._scratch(buffer)
        rewrite = self.rewriter()
        self.stmts: list[Stmt] = [
            rewrite.stmt(kernel.body) for step in lowered.steps for kernel in step.kernels
        ]
        self.own_inputs = own_inputs

    def _scratch(self, buffer: Buffer) -> None:
        if buffer.name in self.renamed:
            return
        data = self.constants.get(buffer.name)
        if data is not None and data.size == 1:
            return  # folded into the expressions that read it
        fresh = self.ctx.scratch(buffer.name.replace(".", "_"), buffer.dtype, buffer.shape)
        self.renamed[buffer.name] = replace(fresh, strides=buffer.strides)
        if data is not None:
            if data.size > MAX_INLINE_CONSTANT:
                raise self.ctx.fail(
                    f"constant of {data.size} elements inside a control-flow body; at most "
                    f"{MAX_INLINE_CONSTANT} are supported (hoist it out of the body)"
                )
            for position in np.ndindex(*data.shape):
                self.prologue.append(fresh.store(list(position), _const(data[position],
                                                                        buffer.dtype)))

    def state(self, index: int) -> Buffer:
        return self.buffer(self.own_inputs[index].name)

    def buffer(self, name: str) -> Buffer:
        found = self.renamed.get(name)
        if found is not None:
            return found
        for buffer in self.free:
            if buffer.name == name:
                return buffer
        raise self.ctx.fail(f"body value %{name} has no buffer")

    def read(self, index: int, indices: Sequence[Expr]) -> Expr:
        return self.value(self.graph.outputs[index].name, tuple(indices))

    def value(self, name: str, indices: tuple[Expr, ...]) -> Expr:
        bind = self.bindings.get(name)
        if bind is not None:
            return bind(indices)
        data = self.constants.get(name)
        if data is not None and data.size == 1:
            dtype = DType.from_numpy(data.dtype)
            return _const(data.reshape(-1)[0], dtype)
        return self.buffer(name).load(*indices)

    def var(self, var: Var) -> Var:
        return Var(self.prefix + var.name, var.dtype)

    def own_indices(self, access: Buffer, indices: tuple[Expr, ...]) -> tuple[Expr, ...]:
        """``indices`` of an access through a view of another shape (merged axes, a flat
        view), as indices of the body value's own shape."""
        shape = self.shapes.get(access.name, access.shape)
        if shape == access.shape:
            return indices
        return tuple(unravel(ravel(indices, access.shape), shape))

    def rewriter(self) -> Rewriter:
        """Maps the lowered body's kernels into this kernel: body values read through their
        bindings, buffers to this kernel's, variables prefixed with the node's name."""
        return Rewriter(
            on_load=lambda load: self.value(load.buffer.name, self.own_indices(load.buffer,
                                                                                load.indices)),
            on_store=lambda store: Store(self.buffer(store.buffer.name),
                                         self.own_indices(store.buffer, store.indices),
                                         store.value),
            on_var=self.var,
            expand_tiles=True,  # a body value may be bound to an expression, not a buffer
        )

    def body(self) -> Block:
        return block(self.stmts)


def _const(value: object, dtype: DType) -> Const:
    scalar = np.asarray(value).item()
    return as_expr(scalar, dtype)  # type: ignore[return-value]
