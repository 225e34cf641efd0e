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


_COLLECTORS: ContextVar[tuple[list[Decision], ...]] = ContextVar("kiln_schedule_collectors",
                                                                 default=())


@contextlib.contextmanager
def collect(isolated: bool = False) -> Iterator[list[Decision]]:
    """Within the block, every ``choose`` appends its ``Decision`` to the yielded list, and to
    those of enclosing blocks unless ``isolated``."""
    decisions: list[Decision] = []
    token = _COLLECTORS.set((decisions,) if isolated else (*_COLLECTORS.get(), decisions))
    try:
        yield decisions
    finally:
        _COLLECTORS.reset(token)


def choose(machine: Machine, signature: str, default: T, candidates: Sequence[T]) -> T:
    """The tuned schedule for ``signature`` if ``machine`` has one that is among
    ``candidates`` (a stale or hand-edited entry is ignored), else ``default``."""
    listed = [dataclasses.asdict(c) for c in candidates]  # type: ignore[call-overload]
    chosen = default
    tuned = machine.tuned.get(signature)
    if tuned is not None:
        with contextlib.suppress(TypeError, ValueError):
            found = dataclasses.replace(default, **dict(tuned))  # type: ignore[type-var]
            if dataclasses.asdict(found) in listed:  # type: ignore[call-overload]
                chosen = found
    for decisions in _COLLECTORS.get():
        decisions.append(Decision(signature, tuple(listed),
                                  dataclasses.asdict(chosen)))  # type: ignore[call-overload]
    return chosen
