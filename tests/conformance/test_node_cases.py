"""The ONNX backend node test cases, one pytest test per case and engine (harness.py has the
rules): ``reference`` runs ``load_onnx`` + ``reference.run``; ``compiled`` runs
``build(..., opt_level=3).run`` (every pass: fusion, layout selection) with every input fed at
run time (shape, axes, pads, K... computed by the compiled code: nothing frozen into the model);
``compiled-O0`` does the same at ``opt_level=0`` (no fusion, no layout change: the debuggable
baseline).

Cases listed in known_failures.txt / known_failures_compiled.txt /
known_failures_compiled_O0.txt are strict xfails, so a fix shows up as XPASS and the list must
be updated (``python tests/conformance/report.py --write-known-failures [--compiled
--opt-level 3|0]``). "The suite passes at -O3 exactly as at -O0" is then the equality of the two
compiled lists (``test_compiled_engines_fail_on_the_same_cases``).
"""

from __future__ import annotations

import pytest
from harness import (
    KNOWN_FAILURES,
    KNOWN_FAILURES_BY_OPT_LEVEL,
    CaseResult,
    classify,
    collect_cases,
    load_known_failures,
    run_case,
)

CASES = collect_cases()
# Compiled engine -> opt level.
OPT_LEVELS = {"compiled": 3, "compiled-O0": 0}
ENGINES = ["reference", *OPT_LEVELS]
KNOWN = {
    "reference": load_known_failures(KNOWN_FAILURES),
    **{engine: load_known_failures(KNOWN_FAILURES_BY_OPT_LEVEL[level])
       for engine, level in OPT_LEVELS.items()},
}
MIN_PASS_RATE = 0.90
# The compiled path may trail the reference executor by at most this fraction of its passes.
MAX_COMPILED_SHORTFALL = 0.01
_results: dict[tuple[str, str], CaseResult] = {}


def _result(name: str, engine: str) -> CaseResult:
    if (name, engine) not in _results:
        _results[name, engine] = run_case(CASES[name], compiled=engine in OPT_LEVELS,
                                          opt_level=OPT_LEVELS.get(engine, 2))
    return _results[name, engine]


def _params(engine: str) -> list[object]:
    return [
        pytest.param(name, engine, marks=pytest.mark.xfail(strict=True, reason=KNOWN[engine][name]))
        if name in KNOWN[engine] else pytest.param(name, engine)
        for name in sorted(CASES)
    ]


@pytest.mark.parametrize(("name", "engine"), [p for e in ENGINES for p in _params(e)])
def test_node_case(name: str, engine: str) -> None:
    result = _result(name, engine)
    if result.status == "EXCLUDED":
        pytest.skip(f"excluded: {result.reason}")
    assert result.status == "PASS", f"{result.status}: {result.reason}"


@pytest.mark.parametrize("engine", ENGINES)
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


def test_compiled_engines_fail_on_the_same_cases() -> None:
    """-O3 passes exactly the cases -O0 passes: the per-case tests hold each engine to its list
    both ways (strict xfail), so equal lists mean equal outcomes, case by case."""
    only_o3 = sorted(set(KNOWN["compiled"]) - set(KNOWN["compiled-O0"]))
    only_o0 = sorted(set(KNOWN["compiled-O0"]) - set(KNOWN["compiled"]))
    assert (only_o3, only_o0) == ([], []), (
        f"fail at -O3 only: {only_o3}; fail at -O0 only: {only_o0}"
    )
