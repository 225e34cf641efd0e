"""Conformance report: ``python tests/conformance/report.py [--filter SUBSTR] [--quiet]``.

Prints one line per ONNX node test case (status, group, reason), then totals per group and the
pass rate over numeric cases. ``--write-known-failures`` rewrites known_failures.txt from the
failures of this run (for the full, unfiltered sweep).
"""

from __future__ import annotations

import argparse
import collections
import functools
import multiprocessing
import sys
import time

from harness import KNOWN_FAILURES, KNOWN_FAILURES_COMPILED, CaseResult, collect_cases, run_case


def summarize(results: list[CaseResult]) -> str:
    lines = []
    by_group: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for result in results:
        by_group[result.group][result.status] += 1
    lines.append(f"all cases: {len(results)}")
    for group in ("numeric", "random", "excluded"):
        counts = by_group.get(group)
        if counts:
            parts = ", ".join(f"{status.lower()} {n}" for status, n in sorted(counts.items()))
            lines.append(f"  {group}: {sum(counts.values())} ({parts})")
    excluded = collections.Counter(r.reason for r in results if r.group == "excluded")
    for reason, n in excluded.most_common():
        lines.append(f"    excluded, {reason}: {n}")
    checked = [r for r in results if r.group in ("numeric", "random")]
    passed = sum(r.status == "PASS" for r in checked)
    if checked:
        lines.append(
            f"numeric (incl. random): {len(checked)}, passed {passed} "
            f"({100.0 * passed / len(checked):.1f}%), failed "
            f"{sum(r.status == 'FAIL' for r in checked)}, error "
            f"{sum(r.status == 'ERROR' for r in checked)}"
        )
    return "\n".join(lines)


def _run_named(name: str, compiled: bool, shape_operands: bool) -> CaseResult:
    return run_case(collect_cases()[name], compiled=compiled, shape_operands=shape_operands)


class _Serial:
    """The Pool interface, in this process (for --jobs 1, and tracebacks that stay readable)."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap(self, fn, items):  # type: ignore[no-untyped-def]
        return map(fn, items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    parser.add_argument("--quiet", action="store_true", help="print only non-passing cases")
    parser.add_argument("--compiled", action="store_true",
                        help="run through kiln.compiler.build (constant integer inputs frozen)")
    parser.add_argument("--integer-inputs-only", action="store_true",
                        help="with --compiled, freeze only integer inputs (not Resize scales, "
                             "Range bounds, OneHot depth)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--write-known-failures", action="store_true",
                        help="rewrite known_failures.txt from this run's failures")
    args = parser.parse_args(argv)
    cases = {n: c for n, c in collect_cases().items() if args.filter in n}
    results = []
    start = time.perf_counter()
    names = sorted(cases)
    run = functools.partial(_run_named, compiled=args.compiled,
                            shape_operands=not args.integer_inputs_only)
    pool = multiprocessing.get_context("fork").Pool(args.jobs) if args.jobs > 1 else _Serial()
    with pool:
        for name, result in zip(names, pool.imap(run, names), strict=True):
            results.append(result)
            if not args.quiet or result.status in ("FAIL", "ERROR"):
                reason = f"  {result.reason}" if result.reason else ""
                print(f"{result.status:8} {result.group:8} {name}{reason}"[:400], flush=True)
    print(summarize(results))
    print(f"time: {time.perf_counter() - start:.1f}s")
    if args.write_known_failures:
        failing = [r for r in results if r.status in ("FAIL", "ERROR")]
        known = KNOWN_FAILURES_COMPILED if args.compiled else KNOWN_FAILURES
        known.write_text(
            "# ONNX node cases that fail today: `name  # reason`. Regenerate with\n"
            "# python tests/conformance/report.py --write-known-failures"
            + (" --compiled\n" if args.compiled else "\n")
            + "".join(f"{r.name}  # {r.status}: {r.reason[:200]}\n" for r in failing)
        )
        print(f"wrote {len(failing)} entries to {known}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
