"""The arena planner: tensors alive together never share bytes; dead ones are reused."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.compiler.plan.memory import ALIGNMENT, Lifetime, check_no_conflicts, place


@st.composite
def lifetimes(draw: st.DrawFn) -> list[Lifetime]:
    count = draw(st.integers(0, 25))
    found = []
    for index in range(count):
        first = draw(st.integers(0, 20))
        last = draw(st.integers(first, first + 8))
        size = draw(st.integers(0, 5000))
        found.append(Lifetime(f"t{index}", size, first, last))
    return found


@settings(max_examples=200, derandomize=True)
@given(lifetimes())
def test_live_tensors_never_overlap_and_offsets_are_aligned(tensors: list[Lifetime]) -> None:
    plan = place(tensors)
    check_no_conflicts(tensors, plan)
    assert all(offset % ALIGNMENT == 0 for offset in plan.offsets.values())
    assert plan.arena_bytes <= plan.total_bytes
    for tensor in tensors:
        assert plan.offsets[tensor.name] + tensor.size <= plan.arena_bytes


def test_a_chain_reuses_memory() -> None:
    # a -> b -> c -> d: each tensor dies once the next is computed, so two slots suffice.
    chain = [Lifetime(name, 1024, i, i + 1) for i, name in enumerate("abcd")]
    plan = place(chain)
    check_no_conflicts(chain, plan)
    assert plan.total_bytes == 4 * 1024
    assert plan.arena_bytes == 2 * 1024


def test_checker_catches_a_bad_plan() -> None:
    import pytest

    from kiln.compiler.plan.memory import ArenaPlan

    tensors = [Lifetime("a", 100, 0, 2), Lifetime("b", 100, 1, 3)]
    with pytest.raises(AssertionError, match="live together"):
        check_no_conflicts(tensors, ArenaPlan({"a": 0, "b": 64}, 164, 256))
