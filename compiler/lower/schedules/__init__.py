"""Schedules of the tiled kernels: the cost model's choice, or what ``kiln tune`` measured.

Each family (gemm.py, conv.py) describes its tile and block sizes as a frozen dataclass and
picks one with ``choose``: the entry ``machine.tuned`` holds for the kernel's signature (a
string naming the kernel's shape) when there is one, else the family's cost-model default.
``choose`` also reports every decision to the active ``collect()`` block, with the candidates
worth measuring: that is how ``kiln tune`` learns what a node's lowering can be tuned on.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from ...machine import Machine

T = TypeVar("T")


@dataclass(frozen=True)
class Decision:
    """One tunable choice a lowering made: its signature, the candidates, the one chosen."""

    signature: str
    candidates: tuple[dict[str, Any], ...]
    chosen: dict[str, Any]


_COLLECTOR: ContextVar[list[Decision] | None] = ContextVar("kiln_schedule_collector",
                                                           default=None)


@contextlib.contextmanager
def collect() -> Iterator[list[Decision]]:
    """Within the block, every ``choose`` appends its ``Decision`` to the yielded list."""
    decisions: list[Decision] = []
    token = _COLLECTOR.set(decisions)
    try:
        yield decisions
    finally:
        _COLLECTOR.reset(token)


def choose(machine: Machine, signature: str, default: T, candidates: Sequence[T]) -> T:
    """The tuned schedule for ``signature`` if ``machine`` has a valid one, else ``default``."""
    chosen = default
    tuned = machine.tuned.get(signature)
    if tuned is not None:
        with contextlib.suppress(TypeError, ValueError):
            chosen = dataclasses.replace(default, **dict(tuned))  # type: ignore[type-var]
    decisions = _COLLECTOR.get()
    if decisions is not None:
        decisions.append(Decision(
            signature, tuple(dataclasses.asdict(c) for c in candidates),  # type: ignore[call-overload]
            dataclasses.asdict(chosen)))  # type: ignore[call-overload]
    return chosen
