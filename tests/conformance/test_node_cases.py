"""The ONNX backend node test cases, one pytest test per case and engine (harness.py has the
rules): ``reference`` runs ``load_onnx`` + ``reference.run``; ``compiled`` runs
``build(...).run`` with the inputs an AOT compiler would see as constants frozen.

Cases listed in known_failures.txt / known_failures_compiled.txt are strict xfails, so a fix
shows up as XPASS and the list must be updated (``python tests/conformance/report.py
--write-known-failures [--compiled]``).
"""

from __future__ import annotations

import pytest
from harness import (
    KNOWN_FAILURES,
    KNOWN_FAILURES_COMPILED,
    CaseResult,
    classify,
    collect_cases,
    load_known_failures,
    run_case,
)

CASES = collect_cases()
KNOWN = {
    "reference": load_known_failures(KNOWN_FAILURES),
    "compiled": load_known_failures(KNOWN_FAILURES_COMPILED),
}
MIN_PASS_RATE = 0.90
# The compiled path may trail the reference executor by at most this fraction of its passes.
MAX_COMPILED_SHORTFALL = 0.02
_results: dict[tuple[str, str], CaseResult] = {}


def _result(name: str, engine: str) -> CaseResult:
    if (name, engine) not in _results:
        _results[name, engine] = run_case(CASES[name], compiled=engine == "compiled")
    return _results[name, engine]


def _params(engine: str) -> list[object]:
    return [
        pytest.param(name, engine, marks=pytest.mark.xfail(strict=True, reason=KNOWN[engine][name]))
        if name in KNOWN[engine] else pytest.param(name, engine)
        for name in sorted(CASES)
    ]


@pytest.mark.parametrize(("name", "engine"), _params("reference") + _params("compiled"))
def test_node_case(name: str, engine: str) -> None:
    result = _result(name, engine)
    if result.status == "EXCLUDED":
        pytest.skip(f"excluded: {result.reason}")
    assert result.status == "PASS", f"{result.status}: {result.reason}"


@pytest.mark.parametrize("engine", ["reference", "compiled"])
def test_known_failures_name_real_cases(engine: str) -> None:
    assert sorted(set(KNOWN[engine]) - set(CASES)) == []


def _passed(engine: str) -> tuple[int, int]:
    """(passing, checked) cases of ``engine``. The per-case tests hold every case to its
    known-failures entry both ways (strict xfail), so when they pass the list is exact and the
    count needs no second run (which, under pytest-xdist, would repeat every case)."""
    checked = [n for n, c in CASES.items() if classify(c.model)[0] != "excluded"]
    return sum(n not in KNOWN[engine] for n in checked), len(checked)


def test_numeric_pass_rate() -> None:
    passed, checked = _passed("reference")
    assert passed >= MIN_PASS_RATE * checked, (
        f"{passed}/{checked} numeric cases pass, below {MIN_PASS_RATE:.0%}"
    )


def test_compiled_count_is_within_two_percent_of_the_reference() -> None:
    reference, _ = _passed("reference")
    compiled, _ = _passed("compiled")
    assert compiled >= (1 - MAX_COMPILED_SHORTFALL) * reference, (
        f"compiled passes {compiled}, reference {reference}: more than "
        f"{MAX_COMPILED_SHORTFALL:.0%} apart"
    )
