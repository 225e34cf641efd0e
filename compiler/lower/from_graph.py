"""Lowering a whole (specialized) graph to kernels, node by node.

``lower_graph`` gives each value a ``Buffer`` named after it and calls each node's lowering.
Extents known only at run time become expressions over the run's ``DIMS`` slots (``DimTable``):
an input's symbols are read from the input shapes before the plan runs; an extent that depends
on values (``UNKNOWN``) gets a fresh slot that its producing node's lowering must define.
``interpret_lowered`` runs the result with the kernel-IR interpreter: the backend-independent
check of the lowerings in tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..errors import ExecutionError, KilnError
from ..ir import symbolic
from ..ir.builder import infer_types
from ..ir.graph import Graph, Node, Value
from ..ir.op import Op
from ..ir.schema import op_def
from ..ir.types import UNKNOWN, Dim, DType, TensorType
from ..machine import DEFAULT_MACHINE, Machine
from .inline import accesses, walk
from .interpret import concrete_shape, run_kernel
from .kernel_ir import (
    DIMS,
    Buffer,
    Const,
    Expr,
    Kernel,
    Store,
    as_index,
    dim,
    dim_slot,
    extent_add,
    extent_mul,
)
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
    dims: DimTable

    @property
    def is_static(self) -> bool:
        """No extent of the graph is known only at run time."""
        return not self.dims.names


@dataclass(frozen=True)
class InputDim:
    """Slot ``slot`` takes the extent of axis ``axis`` of input ``input`` before the run."""

    input: int
    axis: int
    slot: int


@dataclass(frozen=True)
class InputCheck:
    """Axis ``axis`` of input ``input`` must equal ``extent`` (evaluated after the input dims
    are read)."""

    input: int
    axis: int
    extent: Expr


class DimTable:
    """The run's ``DIMS`` slots: one per input symbol, one per extent that depends on values.
    Nested bodies of control flow share their node's table (slots are unique in the run)."""

    def __init__(self) -> None:
        self.names: list[str] = []  # slot -> what it holds, for messages
        self.symbols: dict[str, int] = {}
        self.input_dims: list[InputDim] = []
        self.input_checks: list[InputCheck] = []
        self._extents: dict[Dim, Expr] = {}
        self._unnamed: dict[tuple[str, int], str] = {}  # an input's UNKNOWN axis -> its symbol
        # values with value-dependent extents, typed with their slots' symbols instead
        self.named_types: dict[str, TensorType] = {}

    def new_slot(self, name: str) -> Expr:
        self.names.append(name)
        return dim(len(self.names) - 1)

    def slot_symbol(self, slot: int) -> str:
        """A symbol that stands for slot ``slot`` in types (``kiln_slotN``)."""
        name = f"kiln_slot{slot}"
        self.symbols.setdefault(name, slot)
        return name

    def bind_inputs(self, inputs: Sequence[Value]) -> None:
        """Slots for the symbols of the graph inputs, read from the input shapes; checks for
        every other symbolic input extent (a repeated symbol, a polynomial)."""
        pending: list[tuple[int, int, Dim]] = []
        for index, value in enumerate(inputs):
            for axis, extent in enumerate(value.type.shape):
                if isinstance(extent, int):
                    continue
                if extent == UNKNOWN:
                    extent = self._unnamed[value.name, axis] = symbolic.atom_name(
                        f"{value.name}_{axis}")
                if (symbolic.poly(extent) == {(extent,): 1} and extent not in self.symbols):
                    self.symbols[extent] = dim_slot(self.new_slot(extent))  # type: ignore[assignment]
                    self.input_dims.append(InputDim(index, axis, self.symbols[extent]))
                else:
                    pending.append((index, axis, extent))
        for index, axis, extent in pending:
            self.input_checks.append(InputCheck(index, axis, as_index(self.extent(extent))))

    def extent(self, extent: Dim) -> int | Expr:
        """The kernel IR extent of a static or symbolic dim."""
        if isinstance(extent, int):
            return extent
        if extent not in self._extents:
            terms = symbolic.poly(extent)
            if terms is None:
                raise KilnError(f"extent {extent!r} has no value before the run")
            total: int | Expr = 0
            for monomial, coefficient in sorted(terms.items()):
                term: int | Expr = coefficient
                for atom in monomial:
                    if atom not in self.symbols:
                        raise KilnError(
                            f"extent {extent!r} uses the symbol {atom!r}, which no input shape "
                            "determines"
                        )
                    term = extent_mul(term, dim(self.symbols[atom]))
                total = extent_add(total, term)
            self._extents[extent] = as_index(total)
        return self._extents[extent]

    def buffer(self, value: Value) -> tuple[Buffer, list[Expr]]:
        """The buffer of ``value`` and the fresh slots of its value-dependent extents."""
        fresh: list[Expr] = []
        shape: list[int | Expr] = []
        named: list[Dim] = []
        for axis, extent in enumerate(value.type.shape):
            extent = self._unnamed.get((value.name, axis), extent)
            if extent == UNKNOWN:
                fresh.append(self.new_slot(f"%{value.name} axis {axis}"))
                shape.append(fresh[-1])
                named.append(self.slot_symbol(dim_slot(fresh[-1])))  # type: ignore[arg-type]
            else:
                shape.append(self.extent(extent))
                named.append(extent)
        if fresh:
            self.named_types[value.name] = value.type.with_shape(tuple(named))
        return Buffer(value.name, value.type.dtype, tuple(shape)), fresh

    def refined(self, node: Node, consts: Sequence[np.ndarray | None]) -> list[Value | None]:
        """``node``'s outputs with each value-dependent extent that its type rule derives from
        an input's run-time extents (a Softmax of a NonZero count) given by those extents:
        the rule re-run on the inputs typed with their slots' symbols. Nothing changes where
        the rule still cannot say (or fails)."""
        outputs = list(node.outputs)
        if not any(v is not None and v.name in self.named_types for v in node.inputs) or all(
                v is None or UNKNOWN not in v.type.shape for v in outputs):
            return outputs
        named = [None if v is None else Value(v.name, self.named_types.get(v.name, v.type))
                 for v in node.inputs]
        try:
            types = infer_types(op_def(node.op), node.name, named, node.attrs, consts,
                                len(outputs))
        except KilnError:
            return outputs
        refined: list[Value | None] = []
        for value, found in zip(outputs, types, strict=True):
            if value is None or found.rank != value.type.rank:
                refined.append(value)
                continue
            shape = tuple(
                extent if extent != UNKNOWN or not symbolic.is_symbolic(better)
                or not symbolic.atoms(better) <= set(self.symbols) else better
                for extent, better in zip(value.type.shape, found.shape, strict=True))
            refined.append(Value(value.name, value.type.with_shape(shape)))
        return refined


def lower_graph(graph: Graph, machine: Machine = DEFAULT_MACHINE,
                dims: DimTable | None = None) -> LoweredGraph:
    """Lower every node of ``graph`` for ``machine``; raises naming the first node that
    cannot be. ``dims``: the table of an enclosing graph (a control-flow body)."""
    table = DimTable() if dims is None else dims
    if dims is None:
        table.bind_inputs(graph.inputs)
    buffers: dict[str, Buffer] = {v.name: table.buffer(v)[0] for v in graph.inputs}
    constants: dict[str, np.ndarray] = {}
    constant_nodes: dict[str, Node] = {}
    steps: list[LoweredNode] = []
    for index, node in enumerate(graph.nodes):
        if node.op is Op.CONSTANT:
            out = node.outputs[0]
            assert out is not None
            buffers[out.name] = table.buffer(out)[0]
            constants[out.name] = np.asarray(node.attrs["value"], order="C")
            if constants[out.name].size <= BODY_CONSTANT_ELEMENTS:
                constant_nodes[out.name] = node
            continue
        node = _with_body_constants(node, constant_nodes)
        fn = lowering_for(node.op)
        if fn is None:
            raise LoweringError(f"{node.describe()}: no lowering for op {node.op.value}")
        undefined: list[Expr] = []
        consts = [None if v is None else constants.get(v.name) for v in node.inputs]
        for value in table.refined(node, consts):
            if value is not None:
                buffers[value.name], fresh = table.buffer(value)
                undefined.extend(fresh)
        ctx = LowerContext(
            node,
            op_def(node.op).with_defaults(node.attrs),
            [None if v is None else buffers[v.name] for v in node.inputs],
            [None if v is None else buffers[v.name] for v in node.outputs],
            consts,
            f"k{index}_{node.op.value}",
            machine,
            tuple(undefined),
            table,
        )
        try:
            kernels = [with_dims_param(k) for k in fn(ctx)]
        except TypeError as error:  # a branch on a run-time extent (Expr.__bool__)
            if all(b is None or b.is_static for b in ctx.inputs + ctx.outputs):
                raise
            raise LoweringError(
                f"{node.describe()}: this lowering of {node.op.value} needs extents known at "
                f"compile time, and some are known only at run time ({error})"
            ) from error
        _check_defined(node, undefined, kernels, table)
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
        table,
    )


def require_static(buffers: Iterable[Buffer], what: str) -> None:
    """Raise naming the buffers (the first few) whose extents are known only at run time."""
    dynamic = [f"{b.name}[{','.join(str(d) if isinstance(d, int) else '?' for d in b.shape)}]"
               for b in buffers if not b.is_static]
    if dynamic:
        raise KilnError(f"{what} needs shapes known at compile time; {', '.join(dynamic[:4])} "
                        "have extents known only at run time (give input_shapes / "
                        "--input-shape NAME=D0,D1,...)")


def defined_slots(kernel: Kernel) -> set[int]:
    """The ``DIMS`` slots ``kernel`` stores to."""
    return {int(node.indices[0].value) for node in walk(kernel.body)
            if isinstance(node, Store) and node.buffer == DIMS
            and isinstance(node.indices[0], Const)}


def _check_defined(node: Node, undefined: Sequence[Expr], kernels: Sequence[Kernel],
                   table: DimTable) -> None:
    defined = set().union(*(defined_slots(k) for k in kernels))
    for extent in undefined:
        slot = dim_slot(extent)
        if slot not in defined:
            raise LoweringError(
                f"{node.describe()}: the extent of {table.names[slot]} depends on values known "
                f"only at run time, and the lowering of {node.op.value} does not compute it"
            )


def with_dims_param(kernel: Kernel) -> Kernel:
    """``kernel`` with ``DIMS`` among its inputs when its body or its buffers' extents use it."""
    if DIMS in kernel.params:
        return kernel
    uses = any(not b.is_static or b.strides is not None and not all(
        isinstance(s, int) for s in b.strides) for b in kernel.params)
    if uses or any(accesses(kernel.body, DIMS.name)):
        return replace(kernel, inputs=(*kernel.inputs, DIMS))
    return kernel


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
    memory[DIMS.name] = read_input_dims(lowered.dims, [memory[b.name] for b in lowered.inputs])
    for step in lowered.steps:
        for kernel in step.kernels:
            params = {b.name: memory[b.name] for b in kernel.params if b.name in memory}
            memory.update(run_kernel(kernel, params))
    return [memory[b.name] for b in lowered.outputs]


def read_input_dims(table: DimTable, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """The ``DIMS`` array at the start of a run on ``inputs``; raises ExecutionError when an
    input extent contradicts another or a symbolic extent."""
    values = np.zeros(DIMS.shape[0], np.int64)  # type: ignore[arg-type]
    for bound in table.input_dims:
        values[bound.slot] = inputs[bound.input].shape[bound.axis]
    for check in table.input_checks:
        (expected,) = concrete_shape((check.extent,), values)
        found = inputs[check.input].shape[check.axis]
        if found != expected:
            raise ExecutionError(
                f"input {check.input} axis {check.axis} has extent {found}; the other inputs' "
                f"shapes make it {expected}"
            )
    return values
