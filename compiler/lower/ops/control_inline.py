"""Inlining a control-flow body (a ``Graph`` attribute) into the kernel of its If/Loop/Scan.

A body is re-typed with the types it sees at this node (``rebuild_body``: its inputs, plus the
enclosing values it reads, which become extra graph inputs), lowered node by node with
``lower_graph`` on the enclosing run's ``DimTable`` (so a symbol such as ``batch`` is the same
run-time extent inside and out, and slots stay unique in the run), and its kernels' statements
are rewritten for the enclosing kernel (``InlinedBody``):

- buffers of the body's own values and scratch become scratch buffers of the node (renamed, so
  they cannot clash with the enclosing graph's); enclosing values keep their buffers (inputs of
  the node's kernel);
- loads of a body input may be *bound* to an expression (a Loop's iteration number, a Scan's
  slice of its sequence input); the other body inputs are scratch the node's kernel fills;
- constants of the body: scalars are folded into the expressions, others are filled into
  scratch by the kernel's prologue;
- loop variables and locals are prefixed with the node's name, so nested bodies never shadow
  the enclosing kernel's variables.

Run-time extents: an extent of a body input or enclosing value that is a symbolic polynomial
keeps its symbols; one known only from values (UNKNOWN, a slot defined by an earlier node)
becomes a symbol bound to that slot (``body_type``). A body value whose extent is computed
*inside* the body (a Slice fed the iteration number...) needs scratch sized after the body's
kernel that defines it ran. Three ways (``InlinedBody``'s ``inner_extents``):

- ``REFUSE``: a LoweringError naming the value;
- ``SPLIT`` (If): the body's kernels are kept apart (``split_kernels``), so the plan allocates
  such a buffer after the kernel that sized it;
- ``BOUNDED`` (Loop): the value gets scratch of an upper bound of its extents (``capacities``:
  Slice and Compress take at most their input, elementwise ops the largest operand, an If
  its larger branch...; a
  loop-carried value the largest it becomes, a fixpoint), addressed with its actual extents as
  indices. A value no rule bounds is refused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from ...errors import KilnError
from ...ir.builder import GraphBuilder
from ...ir.graph import Graph, Node, Value
from ...ir.op import Group, Op
from ...ir.schema import ops_in
from ...ir.types import UNKNOWN, Dim, DType, TensorType
from ...passes.specialize import copy_nodes
from ..from_graph import LoweredGraph, lower_graph
from ..inline import Rewriter, walk
from ..kernel_ir import (
    DIMS,
    Binary,
    Block,
    Buffer,
    Const,
    Expr,
    If,
    Kernel,
    Load,
    Stmt,
    Store,
    Var,
    as_expr,
    as_index,
    binary,
    block,
    dim_slot,
    extent_add,
    extent_mul,
)
from ..registry import LowerContext
from .common import Extent, same_extent
from .nn_common import ravel, unravel

# Body constants are written element by element by the kernel's prologue; larger ones would
# need a weights buffer, which a lowering cannot add yet.
MAX_INLINE_CONSTANT = 4096

Binding = Callable[[tuple[Expr, ...]], Expr]
Bound = Extent | None  # an upper bound of an extent, None when unknown

REFUSE, SPLIT, BOUNDED = "refuse", "split", "bounded"
# Rounds of bound propagation around a loop before a growing carried value is refused.
BOUND_ROUNDS = 4


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


def slots_of(extent: Extent) -> set[int]:
    """The ``DIMS`` slots a (run-time) extent reads."""
    if isinstance(extent, int):
        return set()
    return {slot for node in walk(extent) if isinstance(node, Expr)
            for slot in [dim_slot(node)] if slot is not None}


def body_type(ctx: LowerContext, type_: TensorType, extents: Sequence[Extent]) -> TensorType:
    """``type_`` (of a value whose buffer has ``extents``) as a body sees it: each UNKNOWN dim
    becomes a symbol bound to the buffer's slot, so the body lowers it to that same extent."""
    shape = []
    for dim, extent in zip(type_.shape, extents, strict=True):
        slot = None if isinstance(extent, int) else dim_slot(extent)
        if dim != UNKNOWN:
            shape.append(dim)
        elif isinstance(extent, int):
            shape.append(extent)
        elif slot is None:
            raise ctx.fail(f"a body input of type {type_} has a run-time extent that is no "
                           "single slot")
        else:
            shape.append(slot_symbol(ctx, slot))
    return type_.with_shape(tuple(shape))


def slot_symbol(ctx: LowerContext, slot: int) -> str:
    """A symbol the run's DimTable maps to ``slot`` (a body typed with it lowers it to that
    slot's extent)."""
    if ctx.dims is None:
        raise ctx.fail("run-time extents need the run's DimTable")
    return ctx.dims.slot_symbol(slot)


def rebuild_body(ctx: LowerContext, graph: Graph, input_types: Sequence[TensorType]) -> Graph:
    """``graph`` re-typed for ``input_types`` (static or symbolic dims); the enclosing values it
    reads become extra inputs after its own."""
    builder = GraphBuilder(graph.name)
    mapping: dict[str, Value] = {}
    for value, type_ in zip(graph.inputs, input_types, strict=True):
        mapping[value.name] = builder.add_input(value.name, type_)
    for value in free_values(graph):
        if UNKNOWN in value.type.shape:
            raise ctx.fail(
                f"body {graph.name!r} reads %{value.name} of type {value.type}, whose extents "
                "are computed at run time by another node; a body may read enclosing values "
                "of static or symbolic shape only"
            )
        mapping[value.name] = builder.add_input(value.name, value.type)
    try:
        copy_nodes(graph.nodes, builder, mapping)
    except KilnError as error:
        raise ctx.fail(f"body {graph.name!r} does not type-check at this node: {error}") from None
    return Graph(graph.name, tuple(builder.inputs), tuple(builder.nodes),
                 tuple(mapping[v.name] for v in graph.outputs))


def _larger(a: Bound, b: Bound) -> Bound:
    """An upper bound of both ``a`` and ``b``."""
    if a is None or b is None:
        return None
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    if same_extent(a, b) or isinstance(b, int) and b <= 1:
        return a
    if isinstance(a, int) and a <= 1:
        return b
    return binary("max", as_index(a), as_index(b))


def _product(bounds: Sequence[Bound]) -> Bound:
    total: Extent = 1
    for bound in bounds:
        if bound is None:
            return None
        total = extent_mul(total, bound)
    return total


def _op_bounds(node: Node, inputs: Sequence[tuple[Bound, ...] | None], output: int, rank: int
               ) -> tuple[Bound, ...]:
    """Upper bounds of the extents of ``node``'s output ``output`` from its inputs' bounds."""
    if node.op is Op.IF:  # branches of static shapes: the larger of the two
        branches = [node.attrs[name].outputs[output].type.shape
                    for name in ("then_branch", "else_branch")]
        return tuple(max(a, b) if isinstance(a, int) and isinstance(b, int) else None
                     for a, b in zip(*branches, strict=True))
    if node.op in _elementwise():
        result: list[Bound] = []
        for axis in range(rank):
            bound: Bound = 1
            for shape in inputs:
                offset = axis - (rank - len(shape)) if shape is not None else -1
                if shape is not None and offset >= 0:
                    bound = _larger(bound, shape[offset])
            result.append(bound)
        return tuple(result)
    data = inputs[0] if inputs else None
    if data is not None and node.op is Op.SLICE:
        return data
    if data is not None and node.op is Op.COMPRESS:
        axis = node.attrs.get("axis")
        if axis is None:
            return (_product(data),)
        return tuple(_product(data) if a == axis % len(data) else b for a, b in enumerate(data))
    if data is not None and node.op is Op.NONZERO:
        return (len(data), _product(data))
    return (None,) * rank


@functools.cache
def _elementwise() -> frozenset[Op]:
    """Ops whose output extents are their operands' broadcast."""
    return ops_in(Group.ELEMENTWISE) | {Op.IDENTITY}


class InlinedBody:
    """A body lowered and rewritten for inlining into the kernel of ``ctx``'s node.

    ``stmts`` computes the body (after ``prologue`` ran once); ``read(i, idx)`` is element
    ``idx`` of body output ``i``; ``state(k)`` is the scratch holding unbound body input ``k``.
    Free values of the body are ``free`` (inputs of the node's kernel)."""

    def __init__(self, ctx: LowerContext, graph: Graph, input_types: Sequence[TensorType],
                 bindings: dict[int, Binding], inner_extents: str = REFUSE,
                 carried: Sequence[tuple[int, int, tuple[Extent, ...]]] = ()) -> None:
        self.ctx = ctx
        self.prefix = f"{ctx.name}__"
        # Slots from here on are defined while the node's kernels run (by the body's nodes, or
        # by the node: the extents of a carried value that the body changes).
        self.first_inner_slot = 0 if ctx.dims is None else len(ctx.dims.names)
        input_types = [self._changing(value.name, t)
                       for value, t in zip(graph.inputs, input_types, strict=True)]
        body = rebuild_body(ctx, graph, input_types)
        self.graph = body
        try:
            lowered: LoweredGraph = lower_graph(body, ctx.machine, dims=ctx.dims)
        except KilnError as error:
            raise ctx.fail(f"body {graph.name!r}: {error}") from None
        self.inner_extents = inner_extents
        # The slots the body's nodes define (allowed unless REFUSE).
        self.inner_slots = range(self.first_inner_slot,
                                 self.first_inner_slot if ctx.dims is None else len(ctx.dims.names))
        self.shapes = {name: buffer.shape for name, buffer in lowered.buffers.items()}
        self.slot_bounds = self.capacities(carried) if inner_extents == BOUNDED else {}
        self.carried_names = {body.inputs[i].name for i, _, _ in carried}
        own_inputs = body.inputs[:len(input_types)]
        self.free: list[Buffer] = list(lowered.inputs[len(input_types):])
        free_names = {b.name for b in self.free}
        self.bindings = {own_inputs[i].name: bind for i, bind in bindings.items()}
        self.constants = lowered.constants
        self.outputs = lowered.outputs
        self.renamed: dict[str, Buffer] = {}
        self.prologue: list[Stmt] = []
        for buffer in lowered.buffers.values():
            if buffer.name not in free_names and buffer.name not in self.bindings:
                self._scratch(buffer)
        for step in lowered.steps:
            for buffer in step.scratch:
                self._scratch(buffer)
        rewrite = self.rewriter()
        # One statement per kernel of the body, in order.
        self.stmts: list[Stmt] = [
            rewrite.stmt(kernel.body) for step in lowered.steps for kernel in step.kernels
        ]
        self.own_inputs = own_inputs

    def _changing(self, name: str, type_: TensorType) -> TensorType:
        """``type_`` of body input ``name`` with each UNKNOWN dim (an extent the body changes)
        a symbol of a fresh slot, which the node's kernel defines."""
        if UNKNOWN not in type_.shape or self.ctx.dims is None:
            return type_
        table = self.ctx.dims
        shape: list[Dim] = []
        for axis, dim in enumerate(type_.shape):
            slot = dim_slot(table.new_slot(f"%{name} axis {axis}")) if dim == UNKNOWN else None
            shape.append(dim if slot is None else slot_symbol(self.ctx, slot))
        return type_.with_shape(tuple(shape))

    def is_inner(self, extent: Extent) -> bool:
        """Whether ``extent`` depends on a slot the body defines."""
        return any(slot >= self.first_inner_slot for slot in slots_of(extent))

    def capacities(self, carried: Sequence[tuple[int, int, tuple[Extent, ...]]]
                   ) -> dict[int, Extent]:
        """Upper bounds of the slots the body defines, by slot. ``carried`` lists the
        loop-carried values: (body input, body output, initial extents); a carried input's
        bound is the largest of its initial and output bounds (iterated to a fixpoint)."""
        graph = self.graph
        seeds = {graph.inputs[i].name: initial for i, _, initial in carried}
        for _ in range(BOUND_ROUNDS):
            bounds: dict[str, tuple[Bound, ...]] = {}
            for value in graph.inputs:
                bounds[value.name] = self._own_bounds(value.name, seeds.get(value.name))
            for node in graph.nodes:
                ins = [None if v is None else bounds.get(v.name, self._own_bounds(v.name))
                       for v in node.inputs]
                for index, value in enumerate(node.outputs):
                    if value is not None:
                        bounds[value.name] = self._own_bounds(
                            value.name, _op_bounds(node, ins, index, value.type.rank))
            grown = False
            for i, o, _ in carried:
                name = graph.inputs[i].name
                merged = tuple(_larger(a, b) for a, b in zip(
                    seeds[name], bounds[graph.outputs[o].name], strict=True))
                grown |= not all(a is b or a is not None and b is not None and same_extent(a, b)
                                 for a, b in zip(merged, seeds[name], strict=True))
                seeds[name] = merged
            if not grown:
                break
        else:
            return {}  # a carried value that keeps growing: no bound
        found: dict[int, Extent] = {}
        for name, shape in bounds.items():
            for extent, bound in zip(self.shapes.get(name, ()), shape, strict=False):
                slot = None if isinstance(extent, int) else dim_slot(extent)
                if slot is not None and bound is not None and self.is_inner(extent):
                    found[slot] = bound
        return found

    def _own_bounds(self, name: str, rule: Sequence[Bound] | None = None) -> tuple[Bound, ...]:
        """Bounds of the value ``name``: its extents where not computed by the body, else
        ``rule``'s (None where unknown)."""
        shape = self.shapes.get(name, ())
        rule = rule if rule is not None else (None,) * len(shape)
        return tuple(bound if self.is_inner(extent) else extent
                     for extent, bound in zip(shape, rule, strict=True))

    def capacity(self, extent: Extent) -> Extent | None:
        """An upper bound of ``extent``, known before the node runs (None if none is)."""
        if not self.is_inner(extent):
            return extent
        assert isinstance(extent, Expr)
        slot = dim_slot(extent)
        if slot is not None:
            return self.slot_bounds.get(slot)
        if isinstance(extent, Binary) and extent.op in ("add", "mul", "max", "min"):
            a, b = self.capacity(extent.a), self.capacity(extent.b)
            if a is None or b is None:
                return None
            return binary(extent.op, as_index(a), as_index(b))  # monotone: bounds combine
        return None

    def _scratch(self, buffer: Buffer) -> None:
        if buffer.name in self.renamed:
            return
        data = self.constants.get(buffer.name)
        if data is not None and data.size == 1:
            return  # folded into the expressions that read it
        inner = [slot for extent in buffer.shape for slot in slots_of(extent)
                 if slot >= self.first_inner_slot]
        shape: Sequence[Extent | None] = buffer.shape
        if inner and self.inner_extents == BOUNDED and buffer.strides is None:
            shape = [self.capacity(extent) for extent in buffer.shape]
        if inner and self.ctx.dims is not None and (
                self.inner_extents == REFUSE or any(d is None for d in shape)):
            if buffer.name in self.carried_names:
                raise self.ctx.fail(
                    f"loop-carried value %{buffer.name} changes shape across iterations, and "
                    "no upper bound of its extents is known (it may grow without end)")
            raise self.ctx.fail(
                f"body {self.graph.name!r}: the extent of {self.ctx.dims.names[inner[0]]} is "
                "computed inside the body at run time, and no upper bound of it is known "
                "before the node runs (a loop or scan body runs within one kernel: its values "
                "need shapes that are static, symbolic, computed by an earlier node, or "
                "bounded: Slice, Compress, NonZero, elementwise ops of bounded inputs)"
            )
        fresh = self.ctx.scratch(buffer.name.replace(".", "_"), buffer.dtype,
                                 shape)  # type: ignore[arg-type]
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

    def output_shape(self, index: int) -> tuple[Extent, ...]:
        """The extents of body output ``index`` (ints, or run-time extents of the run)."""
        return self.outputs[index].shape

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
        if all(isinstance(d, int) for d in (*shape, *access.shape)):
            flat = ravel(indices, access.shape)  # type: ignore[arg-type]
        else:
            total: Extent = 0
            for index, stride in zip(indices, access.element_strides, strict=True):
                total = extent_add(total, extent_mul(index, stride))
            flat = as_index(total)
        return tuple(unravel(flat, shape))

    def rewriter(self) -> Rewriter:
        """Maps the lowered body's kernels into this kernel: body values read through their
        bindings, buffers to this kernel's, variables prefixed with the node's name."""
        return Rewriter(
            on_load=self._load,
            on_store=lambda store: None if store.buffer == DIMS else Store(
                self.buffer(store.buffer.name), self.own_indices(store.buffer, store.indices),
                store.value),
            on_var=self.var,
            expand_tiles=True,  # a body value may be bound to an expression, not a buffer
        )

    def _load(self, load: Load) -> Expr | None:
        if load.buffer == DIMS:
            return None  # the run's extents are shared with the enclosing kernel
        return self.value(load.buffer.name, self.own_indices(load.buffer, load.indices))

    def body(self) -> Block:
        return block(self.stmts)

    def split_kernels(self, guard: Expr | None, guard_inputs: Sequence[Buffer]) -> list[Kernel]:
        """The body's kernels kept apart, each run under ``guard`` (which reads
        ``guard_inputs``) and given only the buffers it accesses: a scratch buffer sized by a
        slot an earlier kernel defines is then allocated after that kernel ran."""
        stmts = [block(self.prologue), *self.stmts] if self.prologue else self.stmts
        kernels = []
        for stmt in stmts:
            used = {node.buffer.name for node in walk(stmt) if isinstance(node, Load | Store)}
            scratch = [b for b in self.ctx.scratch_buffers if b.name in used]
            inputs = [*guard_inputs, *(b for b in self.free if b.name in used)]
            body = stmt if guard is None else If(guard, stmt)
            kernels.append(self.ctx.kernel(body, inputs=inputs, outputs=[], scratch=scratch))
        return kernels


def _const(value: object, dtype: DType) -> Const:
    scalar = np.asarray(value).item()
    return as_expr(scalar, dtype)  # type: ignore[return-value]
