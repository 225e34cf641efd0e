"""Liveness-based placement of intermediate tensors in one activation arena.

Each intermediate has a lifetime ``[first step that writes it, last step that reads it]``.
Placement is greedy best-fit in order of decreasing size (the heuristic of TFLite's and
onnxruntime's planners): a tensor takes the lowest aligned offset where it overlaps no
already-placed tensor whose lifetime intersects its own. Two tensors share memory only when their
lifetimes are disjoint, so a plan run never reads a value another kernel has overwritten.

Sizes known only at run time (expressions of the input shapes): ``place_symbolic`` orders the
tensors by their offsets in a placement at reference sizes, then stacks them in that order: a
tensor's offset is the highest end of the tensors below it whose lifetimes intersect its own.
The offsets are expressions the plan evaluates when a run starts; for any sizes, tensors alive
together never overlap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..lower.kernel_ir import Expr, binary, extent_add

ALIGNMENT = 64


@dataclass(frozen=True)
class Lifetime:
    name: str
    size: int | Expr
    first: int
    last: int

    def overlaps(self, other: Lifetime) -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class ArenaPlan:
    offsets: dict[str, int]
    arena_bytes: int
    total_bytes: int  # sum of all sizes: the arena a planner without reuse would need


def align(size: int, alignment: int = ALIGNMENT) -> int:
    return (size + alignment - 1) // alignment * alignment


def align_extent(size: int | Expr) -> int | Expr:
    """``align`` of a size that may be known only at run time (at least one unit, as ``place``
    gives an empty tensor)."""
    if isinstance(size, int):
        return align(max(size, 1))
    return (binary("max", size, 1) + (ALIGNMENT - 1)) // ALIGNMENT * ALIGNMENT


@dataclass(frozen=True)
class SymbolicArenaPlan:
    offsets: dict[str, int | Expr]
    arena_bytes: int | Expr


def place_symbolic(lifetimes: Sequence[Lifetime],
                   reference: Callable[[Expr], int]) -> SymbolicArenaPlan:
    """Offsets (expressions) valid for every run-time size; ``reference`` evaluates a size at
    the reference extents that choose the stacking order."""
    at_reference = [Lifetime(t.name, t.size if isinstance(t.size, int) else reference(t.size),
                             t.first, t.last) for t in lifetimes]
    order = place(at_reference).offsets
    stacked = sorted(lifetimes, key=lambda t: (order[t.name], t.first, t.name))
    offsets: dict[str, int | Expr] = {}
    ends: dict[str, int | Expr] = {}
    arena: int | Expr = 0
    for index, tensor in enumerate(stacked):
        offset: int | Expr = 0
        for below in stacked[:index]:
            if below.overlaps(tensor):
                offset = _max(offset, ends[below.name])
        offsets[tensor.name] = offset
        ends[tensor.name] = extent_add(offset, align_extent(tensor.size))
        arena = _max(arena, ends[tensor.name])
    return SymbolicArenaPlan(offsets, arena)


def _max(a: int | Expr, b: int | Expr) -> int | Expr:
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    if isinstance(a, int) and a == 0:
        return b
    return binary("max", a, b)


def place(lifetimes: Sequence[Lifetime]) -> ArenaPlan:
    """Offsets for every tensor such that tensors alive at the same step never overlap."""
    placed: list[tuple[Lifetime, int]] = []
    offsets: dict[str, int] = {}
    order = sorted(lifetimes, key=lambda t: (-t.size, t.first, t.name))
    for tensor in order:
        size = align(max(tensor.size, 1))
        busy = sorted(
            (offset, offset + align(max(other.size, 1)))
            for other, offset in placed
            if other.overlaps(tensor)
        )
        best: int | None = None
        best_gap: int | None = None
        cursor = 0
        for start, end in busy:
            gap = start - cursor
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, end)
        offset = cursor if best is None else best
        offsets[tensor.name] = offset
        placed.append((tensor, offset))
    arena = max((offsets[t.name] + align(max(t.size, 1)) for t in lifetimes), default=0)
    return ArenaPlan(offsets, arena, sum(align(max(t.size, 1)) for t in lifetimes))


def check_no_conflicts(lifetimes: Sequence[Lifetime], plan: ArenaPlan) -> None:
    """Raise AssertionError if two simultaneously live tensors share bytes (used in tests)."""
    items = list(lifetimes)
    for i, a in enumerate(items):
        for b in items[i + 1:]:
            if not a.overlaps(b) or a.size == 0 or b.size == 0:
                continue
            a0, b0 = plan.offsets[a.name], plan.offsets[b.name]
            if a0 < b0 + b.size and b0 < a0 + a.size:
                raise AssertionError(f"{a.name} and {b.name} are live together and overlap")
