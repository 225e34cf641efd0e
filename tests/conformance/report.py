"""Conformance report: ``python tests/conformance/report.py [--filter SUBSTR] [--quiet]
[--compiled [--opt-level N] [--freeze [--integer-inputs-only]]] [--jobs J]``.

Prints one line per ONNX node test case (status, group, reason), then totals per group and the
pass rate over numeric cases. ``--compiled`` runs the cases through ``kiln.compiler.build`` at
``--opt-level`` (default 2), every input fed at run time; ``--freeze`` turns the constant
integer inputs (and shape operands) into initializers first. ``--write-known-failures``
rewrites the known-failures file of the engine from the failures of this run (for the full,
unfiltered sweep): known_failures.txt for the reference executor, known_failures_compiled.txt
for ``--compiled --opt-level 3`` and known_failures_compiled_O0.txt for ``--compiled
--opt-level 0`` (the two compiled engines of test_node_cases.py).
"""

from __future__ import annotations

import argparse
import collections
import functools
import multiprocessing
import sys
import time
from pathlib import Path

from harness import (
    KNOWN_FAILURES,
    KNOWN_FAILURES_BY_OPT_LEVEL,
    CaseResult,
    collect_cases,
    run_case,
)


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


def _run_named(name: str, compiled: bool, shape_operands: bool, opt_level: int,
               freeze: bool) -> CaseResult:
    return run_case(collect_cases()[name], compiled=compiled, shape_operands=shape_operands,
                    opt_level=opt_level, freeze=freeze)


def known_failures_file(compiled: bool, opt_level: int) -> Path | None:
    """The known-failures file of an engine, None for a compiled level the suite does not run."""
    if not compiled:
        return KNOWN_FAILURES
    return KNOWN_FAILURES_BY_OPT_LEVEL.get(opt_level)


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
                        help="run through kiln.compiler.build (every input at run time)")
    parser.add_argument("--freeze", action="store_true",
                        help="with --compiled, make constant integer inputs and shape operands "
                             "initializers")
    parser.add_argument("--integer-inputs-only", action="store_true",
                        help="with --freeze, freeze only integer inputs (not Resize scales, "
                             "Range bounds, OneHot depth)")
    parser.add_argument("--opt-level", type=int, choices=range(4), default=2, metavar="N",
                        help="with --compiled, the optimization level 0-3 (default 2)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--write-known-failures", action="store_true",
                        help="rewrite the engine's known-failures file from this run's failures")
    args = parser.parse_args(argv)
    known = known_failures_file(args.compiled, args.opt_level)
    if args.write_known_failures and (known is None or args.freeze):
        parser.error("--write-known-failures with --compiled needs --opt-level 3 or 0 (the "
                     "levels with a known-failures file) and no --freeze")
    cases = {n: c for n, c in collect_cases().items() if args.filter in n}
    results = []
    start = time.perf_counter()
    names = sorted(cases)
    run = functools.partial(_run_named, compiled=args.compiled,
                            shape_operands=not args.integer_inputs_only,
                            opt_level=args.opt_level, freeze=args.freeze)
    pool = multiprocessing.get_context("fork").Pool(args.jobs) if args.jobs > 1 else _Serial()
    with pool:
        for name, result in zip(names, pool.imap(run, names), strict=True):
            results.append(result)
            if not args.quiet or result.status in ("FAIL", "ERROR"):
                reason = f"  {result.reason}" if result.reason else ""
                print(f"{result.status:8} {result.group:8} {name}{reason}"[:400], flush=True)
    if args.compiled:
        print(f"compiled at -O{args.opt_level}" + (", inputs frozen" if args.freeze else ""))
    print(summarize(results))
    print(f"time: {time.perf_counter() - start:.1f}s")
    if args.write_known_failures:
        assert known is not None
        failing = [r for r in results if r.status in ("FAIL", "ERROR")]
        flags = f" --compiled --opt-level {args.opt_level}" if args.compiled else ""
        known.write_text(
            "# ONNX node cases that fail today: `name  # reason`. Regenerate with\n"
            f"# python tests/conformance/report.py --write-known-failures{flags}\n"
            + "".join(f"{r.name}  # {r.status}: {r.reason[:200]}\n" for r in failing)
        )
        print(f"wrote {len(failing)} entries to {known}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
