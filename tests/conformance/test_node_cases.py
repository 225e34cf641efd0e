"""The ONNX backend node test cases, one pytest test each (see harness.py for the rules).

Cases listed in known_failures.txt are strict xfails, so a fix shows up as XPASS and the list
must be updated (``python tests/conformance/report.py --write-known-failures``).
"""

from __future__ import annotations

import pytest
from harness import CaseResult, collect_cases, load_known_failures, run_case

CASES = collect_cases()
KNOWN = load_known_failures()
MIN_PASS_RATE = 0.90
_results: dict[str, CaseResult] = {}


def _result(name: str) -> CaseResult:
    if name not in _results:
        _results[name] = run_case(CASES[name])
    return _results[name]


def _param(name: str) -> object:
    if name in KNOWN:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN[name]))
    return name


@pytest.mark.parametrize("name", [_param(n) for n in sorted(CASES)])
def test_node_case(name: str) -> None:
    result = _result(name)
    if result.status == "EXCLUDED":
        pytest.skip(f"excluded: {result.reason}")
    assert result.status == "PASS", f"{result.status}: {result.reason}"


def test_known_failures_name_real_cases() -> None:
    assert sorted(set(KNOWN) - set(CASES)) == []


def test_numeric_pass_rate() -> None:
    checked = [r for r in map(_result, CASES) if r.group != "excluded"]
    passed = sum(r.status == "PASS" for r in checked)
    assert passed >= MIN_PASS_RATE * len(checked), (
        f"{passed}/{len(checked)} numeric cases pass, below {MIN_PASS_RATE:.0%}"
    )
