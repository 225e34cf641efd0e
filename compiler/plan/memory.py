"""Liveness-based placement of intermediate tensors in one activation arena.

Each intermediate has a lifetime ``[first step that writes it, last step that reads it]``.
Placement is greedy best-fit in order of decreasing size (the heuristic of TFLite's and
onnxruntime's planners): a tensor takes the lowest aligned offset where it overlaps no
already-placed tensor whose lifetime intersects its own. Two tensors share memory only when their
lifetimes are disjoint, so a plan run never reads a value another kernel has overwritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ALIGNMENT = 64


@dataclass(frozen=True)
class Lifetime:
    name: str
    size: int
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
