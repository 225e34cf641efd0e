"""The static execution plan: ordered kernel calls with every buffer placed in memory.

Every buffer a kernel touches lives in one of four places: a caller's input, a caller's output,
the read-only weights blob (constants, packed at aligned offsets), or the activation arena
(intermediates and scratch, placed by ``memory.place`` so that tensors share bytes only when
their lifetimes are disjoint). A graph output that the kernels do not write directly (it is a
graph input, a constant, or the same value as an earlier output) gets a copy kernel at the end.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..artifact.weights import pack_weights
from ..ir.types import DType
from ..lower.from_graph import LoweredGraph
from ..lower.kernel_ir import Block, Buffer, Const, If, Kernel, Loop, LoopKind, Report, Stmt, Var
from .memory import Lifetime, place


class Place(enum.Enum):
    INPUT = "input"
    OUTPUT = "output"
    WEIGHT = "weight"
    ARENA = "arena"


@dataclass(frozen=True)
class Location:
    """Where a buffer lives: input/output slot index, or a byte offset into weights/arena."""

    place: Place
    at: int


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
    arena_bytes: int
    unshared_bytes: int  # the arena a planner without buffer reuse would need

    @property
    def kernels(self) -> tuple[Kernel, ...]:
        return tuple(call.kernel for call in self.calls)


def copy_kernel(name: str, source: Buffer, target: Buffer) -> Kernel:
    """A kernel copying ``source`` into ``target`` (same type), as one flat vectorized loop."""
    flat_source = Buffer(source.name, source.dtype, (source.numel,))
    flat_target = Buffer(target.name, target.dtype, (target.numel,))
    i = Var("i")
    body = Loop(i, Const(source.numel, DType.I64), flat_target.store([i], flat_source.load(i)),
                LoopKind.VECTORIZE)
    return Kernel(name, (flat_source,), (flat_target,), body)


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


def make_plan(lowered: LoweredGraph) -> Plan:
    """Place every buffer of ``lowered`` and order its kernel calls."""
    locations: dict[str, Location] = {
        b.name: Location(Place.INPUT, i) for i, b in enumerate(lowered.inputs)
    }
    # constants no kernel reads (weights a lowering re-laid into a derived constant) are dropped
    read = {b.name for step in lowered.steps for k in step.kernels for b in k.params}
    read.update(b.name for b in lowered.outputs)
    names = sorted(n for n in lowered.constants if n in read)
    weights, weight_offsets = pack_weights([lowered.constants[n] for n in names])
    for name, offset in zip(names, weight_offsets, strict=True):
        locations[name] = Location(Place.WEIGHT, offset)

    produced: set[str] = set()
    for step in lowered.steps:
        for kernel in step.kernels:
            produced.update(b.name for b in kernel.outputs)
    copies: list[Kernel] = []
    output_buffers: list[Buffer] = []
    for index, buffer in enumerate(lowered.outputs):
        slot = Buffer(f"output.{index}", buffer.dtype, buffer.shape)
        output_buffers.append(slot)
        if buffer.name in produced and buffer.name not in locations:
            locations[buffer.name] = Location(Place.OUTPUT, index)
        else:
            locations[slot.name] = Location(Place.OUTPUT, index)
            copies.append(copy_kernel(f"copy_output_{index}", buffer, slot))

    lifetimes = _lifetimes(lowered, locations, copies)
    arena = place(list(lifetimes.values()))
    for name, offset in arena.offsets.items():
        locations[name] = Location(Place.ARENA, offset)

    kernels = [k for step in lowered.steps for k in step.kernels] + copies
    calls = tuple(
        Call(k, tuple(locations[b.name] for b in k.params), contains_report(k.body))
        for k in kernels
    )
    return Plan(
        lowered.inputs, tuple(output_buffers), tuple(b.name for b in lowered.outputs), calls,
        weights, arena.arena_bytes, arena.total_bytes,
    )


def _lifetimes(
    lowered: LoweredGraph, fixed: dict[str, Location], copies: list[Kernel]
) -> dict[str, Lifetime]:
    spans: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}
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
