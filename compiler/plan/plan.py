"""The execution plan: ordered kernel calls with every buffer placed in memory.

Every buffer a kernel touches lives in one of these places: a caller's input, a caller's output,
the read-only weights blob (constants, packed at aligned offsets), the activation arena
(intermediates and scratch, placed by ``memory.place`` so that tensors share bytes only when
their lifetimes are disjoint), the run's ``DIMS`` array, or a buffer allocated during the run.
A graph output that the kernels do not write directly (it is a graph input, a constant, or the
same value as an earlier output) gets a copy kernel at the end.

Extents known only at run time: a buffer whose size depends only on the input shapes stays in
the arena at an offset computed when the run starts (``memory.place_symbolic``; the arena grows
then if it must); one whose size depends on values computed by kernels (a NonZero count) is a
*dynamic* buffer, allocated right before the first call that takes it, once those values exist.
Outputs of run-time shape are dynamic buffers the caller reads after the run.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..artifact.weights import pack_weights
from ..errors import KilnError
from ..lower.from_graph import DimTable, LoweredGraph, defined_slots, with_dims_param
from ..lower.inline import walk
from ..lower.interpret import concrete_shape
from ..lower.kernel_ir import (
    DIMS,
    Block,
    Buffer,
    Expr,
    If,
    Kernel,
    Loop,
    LoopKind,
    Report,
    Stmt,
    Var,
    as_index,
    dim_slot,
)
from .memory import Lifetime, align, place, place_symbolic


class Place(enum.Enum):
    INPUT = "input"
    OUTPUT = "output"
    WEIGHT = "weight"
    ARENA = "arena"
    DIMS = "dims"
    DYNAMIC = "dynamic"


@dataclass(frozen=True)
class Location:
    """Where a buffer lives: input/output slot index, a byte offset into weights/arena (an
    expression of the run's dims when sizes are known only at run time), the dims array, or
    the index of a dynamic buffer."""

    place: Place
    at: int | Expr


@dataclass(frozen=True)
class DynamicBuffer:
    """A buffer allocated during the run, before call ``first_call``, of ``nbytes`` bytes."""

    name: str
    nbytes: Expr
    first_call: int


@dataclass(frozen=True)
class Call:
    kernel: Kernel
    args: tuple[Location, ...]  # one per kernel.params buffer
    may_report: bool  # the kernel contains a Report: the plan checks for failure after it


@dataclass(frozen=True)
class Plan:
    inputs: tuple[Buffer, ...]
    outputs: tuple[Buffer, ...]
    output_names: tuple[str, ...]
    calls: tuple[Call, ...]
    weights: bytes
    arena_bytes: int  # allocated up front: exact when static, else at the bounds or minimal
    unshared_bytes: int  # the arena a planner without buffer reuse would need
    dims: DimTable = field(default_factory=DimTable)  # none: a static plan
    arena_extent: Expr | None = None  # the arena's size for a run (None: arena_bytes)
    dynamic: tuple[DynamicBuffer, ...] = ()
    output_dynamic: tuple[int, ...] = ()  # per output: its dynamic buffer, or -1
    bounds: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # symbol -> lo, hi

    @property
    def is_static(self) -> bool:
        return not self.dims.names

    @property
    def kernels(self) -> tuple[Kernel, ...]:
        return tuple(call.kernel for call in self.calls)


def copy_kernel(name: str, source: Buffer, target: Buffer) -> Kernel:
    """A kernel copying ``source`` into ``target`` (same type), as one flat vectorized loop."""
    flat_source = Buffer(source.name, source.dtype, (source.numel,))
    flat_target = Buffer(target.name, target.dtype, (target.numel,))
    i = Var("i")
    body = Loop(i, as_index(source.numel), flat_target.store([i], flat_source.load(i)),
                LoopKind.VECTORIZE)
    return with_dims_param(Kernel(name, (flat_source,), (flat_target,), body))


def contains_report(stmt: Stmt) -> bool:
    if isinstance(stmt, Report):
        return True
    if isinstance(stmt, Block):
        return any(contains_report(s) for s in stmt.body)
    if isinstance(stmt, Loop):
        return contains_report(stmt.body)
    if isinstance(stmt, If):
        return contains_report(stmt.then) or (
            stmt.otherwise is not None and contains_report(stmt.otherwise)
        )
    return False


def read_constants(lowered: LoweredGraph) -> list[str]:
    """The constants some kernel (or the graph's outputs) reads, by name: a weight a lowering
    re-laid into a derived constant is dropped."""
    read = {b.name for step in lowered.steps for k in step.kernels for b in k.params}
    read.update(b.name for b in lowered.outputs)
    return sorted(n for n in lowered.constants if n in read)


def pack_constants(graphs: Sequence[LoweredGraph]) -> tuple[bytes, dict[str, int]]:
    """One weights blob for the constants the lowered graphs read (plans of one model at
    several shapes share it: a constant's name identifies its content), and their offsets."""
    arrays: dict[str, np.ndarray] = {}
    for lowered in graphs:
        for name in read_constants(lowered):
            arrays.setdefault(name, lowered.constants[name])
    names = sorted(arrays)
    blob, offsets = pack_weights([arrays[n] for n in names])
    return blob, dict(zip(names, offsets, strict=True))


def make_plan(lowered: LoweredGraph, bounds: Mapping[str, tuple[int, int]] | None = None,
              shared: tuple[bytes, dict[str, int]] | None = None) -> Plan:
    """Place every buffer of ``lowered`` and order its kernel calls; ``bounds`` (symbol ->
    smallest, largest extent) size the arena of a plan with run-time extents up front;
    ``shared`` is a weights blob packed for several plans (``pack_constants``)."""
    bounds = dict(bounds or {})
    locations: dict[str, Location] = {
        b.name: Location(Place.INPUT, i) for i, b in enumerate(lowered.inputs)
    }
    locations[DIMS.name] = Location(Place.DIMS, 0)
    weights, weight_offsets = shared if shared is not None else pack_constants([lowered])
    for name in read_constants(lowered):
        locations[name] = Location(Place.WEIGHT, weight_offsets[name])

    produced: set[str] = set()
    for step in lowered.steps:
        for kernel in step.kernels:
            produced.update(b.name for b in kernel.outputs)
    copies: list[Kernel] = []
    output_buffers: list[Buffer] = []
    prologue = {slot.slot for slot in lowered.dims.input_dims}
    dynamic_outputs: dict[str, int] = {}  # buffer holding an output whose shape needs values
    for index, buffer in enumerate(lowered.outputs):
        slot = Buffer(f"output.{index}", buffer.dtype, buffer.shape)
        output_buffers.append(slot)
        if buffer.name in produced and buffer.name not in locations:
            target = buffer.name
        else:
            target = slot.name
            copies.append(copy_kernel(f"copy_output_{index}", buffer, slot))
        # an output whose shape follows from the input shapes is sized before the run: the
        # caller's memory (or the runtime's, for a caller that passes none), like a static one
        if isinstance(buffer.nbytes, int) or dims_read(buffer.nbytes) <= prologue:
            locations[target] = Location(Place.OUTPUT, index)
        else:
            dynamic_outputs[target] = index

    kernels = [k for step in lowered.steps for k in step.kernels] + copies
    lifetimes = _lifetimes(lowered, locations, copies)
    _check_dims_defined(kernels, prologue, lowered.dims)
    dynamic: list[DynamicBuffer] = []
    for name, lifetime in sorted(lifetimes.items(), key=lambda item: item[1].first):
        size = lifetime.size
        if name in dynamic_outputs or (
                not isinstance(size, int) and not dims_read(size) <= prologue):
            first = next(i for i, k in enumerate(kernels) if name in {b.name for b in k.params})
            locations[name] = Location(Place.DYNAMIC, len(dynamic))
            dynamic.append(DynamicBuffer(name, as_index(size), first))
            del lifetimes[name]
    symbolic_sizes = [t for t in lifetimes.values() if not isinstance(t.size, int)]
    arena_extent: Expr | None = None
    if symbolic_sizes:
        reference = _reference_dims(lowered.dims, bounds)
        arena = place_symbolic(list(lifetimes.values()),
                               lambda size: int(concrete_shape((size,), reference)[0]))
        arena_extent = as_index(arena.arena_bytes)
        arena_bytes = int(concrete_shape((arena_extent,), reference)[0])
        unshared = sum(align(int(concrete_shape((as_index(t.size),), reference)[0]))
                       for t in lifetimes.values())
    else:
        arena = place(list(lifetimes.values()))  # type: ignore[arg-type]
        arena_bytes, unshared = arena.arena_bytes, arena.total_bytes  # type: ignore[assignment]
    for name, offset in arena.offsets.items():
        locations[name] = Location(Place.ARENA, offset)

    calls = tuple(
        Call(k, tuple(locations[b.name] for b in k.params), contains_report(k.body))
        for k in kernels
    )
    output_dynamic = [-1] * len(lowered.outputs)
    for name, index in dynamic_outputs.items():
        output_dynamic[index] = int(locations[name].at)  # type: ignore[arg-type]
    return Plan(
        lowered.inputs, tuple(output_buffers), tuple(b.name for b in lowered.outputs), calls,
        weights, int(arena_bytes), int(unshared), lowered.dims, arena_extent, tuple(dynamic),
        tuple(output_dynamic), bounds,
    )


def _check_dims_defined(kernels: list[Kernel], prologue: set[int], table: DimTable) -> None:
    """Raise unless every run-time extent a kernel uses is set before it runs (by the input
    shapes, an earlier kernel, or the kernel itself): a lowering bug, caught at compile time
    instead of reading an unset extent."""
    defined = set(prologue)
    for kernel in kernels:
        own = defined_slots(kernel)
        used: set[int] = set()
        for buffer in kernel.params:
            for extent in (*buffer.shape, *(buffer.strides or ())):
                if not isinstance(extent, int):
                    used |= dims_read(extent)
        for node in walk(kernel.body):
            slot = dim_slot(node) if isinstance(node, Expr) else None
            if slot is not None:
                used.add(slot)
        missing = sorted(used - defined - own)
        if missing:
            raise KilnError(f"kernel {kernel.name} uses the run-time extent of "
                            f"{table.names[missing[0]]} before any kernel sets it")
        defined |= own


def dims_read(expr: Expr) -> set[int]:
    """The ``DIMS`` slots an extent expression reads."""
    slots: set[int] = set()
    for node in walk(expr):
        slot = dim_slot(node)
        if slot is not None:
            slots.add(slot)
    return slots


def _reference_dims(table: DimTable, bounds: Mapping[str, tuple[int, int]]) -> np.ndarray:
    """The dims at which a plan with run-time extents sizes its arena up front: each input
    symbol at its upper bound when given, else 1 (the arena grows at run time)."""
    values = np.ones(DIMS.shape[0], np.int64)  # type: ignore[arg-type]
    for symbol, slot in table.symbols.items():
        values[slot] = bounds[symbol][1] if symbol in bounds else 1
    return values


def _lifetimes(
    lowered: LoweredGraph, fixed: dict[str, Location], copies: list[Kernel]
) -> dict[str, Lifetime]:
    spans: dict[str, list[int]] = {}
    sizes: dict[str, int | Expr] = {}
    steps = [list(step.kernels) for step in lowered.steps] + [[k] for k in copies]
    for index, kernels in enumerate(steps):
        for kernel in kernels:
            for buffer in kernel.params:
                if buffer.name in fixed:
                    continue
                span = spans.setdefault(buffer.name, [index, index])
                span[0] = min(span[0], index)
                span[1] = max(span[1], index)
                sizes[buffer.name] = buffer.nbytes
    return {name: Lifetime(name, sizes[name], s[0], s[1]) for name, s in spans.items()}
