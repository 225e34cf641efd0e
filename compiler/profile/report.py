"""``kiln profile``'s report: per-kernel rows from a profiling build's counters, as a table,
JSON or CSV.

One row per distinct kernel (plan calls of the same kernel function add up; ``calls`` counts
them all): the source ops it implements (original graph node names, fused bodies expanded),
total and mean time, its share of the whole-run time, the static FLOPs and bytes of one call,
the achieved GFLOP/s and GB/s, and its fraction of this machine's peak, the roofline-relevant
one: the larger of GFLOP/s over ``threads`` x the FMA peak per thread and GB/s over the memory
bandwidth, with ``bound`` naming which (``compute`` or ``memory``). The bandwidth is DRAM's
(calibrate.py), so a kernel whose working set stays in cache can exceed 100% of it. Rows are
sorted by total time, longest first.

Totals: the kernels' time summed against the whole-run time the runtime measured around the
plan of each run (which adds the plan's own code between kernels and the timer calls), so the
share of the run spent outside kernels shows.

JSON (``format_json``)::

    {"model": ..., "threads": 2, "runs": 10,
     "peaks": {"gflops_per_thread": ..., "gbytes_per_second": ..., "cpu": ..., ...},
     "totals": {"runs": 10, "run_ms": ..., "kernel_ms": ..., "kernel_percent": ...},
     "kernels": [{COLUMNS...}, ...], <section key>: <section data>, ...}

with a ``Section`` per extra part the command asked for (``kiln profile --compare-onnxruntime``
adds "onnxruntime", ``--numerics`` adds "numerics").

CSV (``format_csv``): a header of ``COLUMNS`` and one line per kernel, the same numbers as the
JSON's ``kernels`` (``source_ops`` joined with ``;``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.runtime import ProfileCounters

    from .calibrate import Peaks

# The columns of a kernel row in JSON and CSV, in table order.
COLUMNS = ("name", "calls", "total_ms", "mean_us", "share_percent", "flops", "bytes",
           "gflops_per_s", "gbytes_per_s", "peak_percent", "bound", "source_ops")
SOURCE_OPS_SEPARATOR = ";"  # in CSV


@dataclass(frozen=True)
class KernelRow:
    """One distinct kernel over the profiled runs; ``flops`` and ``bytes`` are one call's."""

    name: str
    source_ops: tuple[str, ...]
    calls: int
    total_ns: int
    flops: int
    bytes: int
    share: float  # of the whole-run time
    gflops_per_s: float
    gbytes_per_s: float
    peak_fraction: float  # the larger of the compute and the memory fraction
    bound: str  # which of the two it is: "compute" or "memory"

    @property
    def mean_ns(self) -> float:
        return self.total_ns / self.calls if self.calls else 0.0

    def columns(self) -> dict[str, Any]:
        """The row as ``COLUMNS`` (times in ms and us, fractions in percent)."""
        return {"name": self.name, "calls": self.calls, "total_ms": self.total_ns / 1e6,
                "mean_us": self.mean_ns / 1e3, "share_percent": 100 * self.share,
                "flops": self.flops, "bytes": self.bytes, "gflops_per_s": self.gflops_per_s,
                "gbytes_per_s": self.gbytes_per_s, "peak_percent": 100 * self.peak_fraction,
                "bound": self.bound, "source_ops": list(self.source_ops)}


@dataclass(frozen=True)
class Totals:
    """The profiled runs: how many, their whole time and the part spent in kernels."""

    runs: int
    run_ns: int
    kernel_ns: int

    @staticmethod
    def of(counters: ProfileCounters) -> Totals:
        return Totals(counters.runs, counters.run_ns, counters.kernel_ns)

    @property
    def kernel_fraction(self) -> float:
        return self.kernel_ns / self.run_ns if self.run_ns else 0.0

    def columns(self) -> dict[str, Any]:
        return {"runs": self.runs, "run_ms": self.run_ns / 1e6, "kernel_ms": self.kernel_ns / 1e6,
                "kernel_percent": 100 * self.kernel_fraction}


def profile_rows(counters: ProfileCounters, peaks: Peaks, threads: int) -> list[KernelRow]:
    """One row per distinct kernel name, longest total time first."""
    groups: dict[str, list[Any]] = {}
    for kernel in counters.kernels:
        groups.setdefault(kernel.name, []).append(kernel)
    rows = []
    for name, calls in groups.items():
        total_ns = sum(c.total_ns for c in calls)
        count = sum(c.calls for c in calls)
        # rates from the work of every call done over the time of every call: FLOPs per ns
        # are GFLOP/s, bytes per ns GB/s
        gflops = sum(c.flops * c.calls for c in calls) / total_ns if total_ns else 0.0
        gbytes = sum(c.bytes * c.calls for c in calls) / total_ns if total_ns else 0.0
        compute = gflops / peaks.gflops(threads)
        memory = gbytes / peaks.gbytes_per_second
        sources = tuple(dict.fromkeys(op for c in calls for op in c.source_ops))
        rows.append(KernelRow(
            name, sources, count, total_ns, calls[0].flops, calls[0].bytes,
            total_ns / counters.run_ns if counters.run_ns else 0.0, gflops, gbytes,
            max(compute, memory), "compute" if compute >= memory else "memory"))
    return sorted(rows, key=lambda row: (-row.total_ns, row.name))


# --- formats ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """A part of the report after the kernels (onnxruntime side by side, the numerics check):
    ``text`` goes under ``title`` in the table, ``data`` under ``key`` in the JSON."""

    key: str
    title: str
    text: str
    data: Any


@dataclass(frozen=True)
class Report:
    """Everything ``kiln profile`` prints."""

    model: str
    threads: int
    peaks: Peaks
    rows: list[KernelRow]
    totals: Totals
    sections: tuple[Section, ...] = ()


def format_table(report: Report, source_width: int = 60) -> str:
    """The report as text: a header line, the kernel table (source ops cut to
    ``source_width`` characters), the totals and the optional sections."""
    totals, peaks = report.totals, report.peaks
    lines = [f"{report.model}: {totals.runs} run(s) on {report.threads} thread(s); peaks "
             f"{report.threads} x {peaks.gflops_per_thread:.1f} GFLOP/s (FMA), "
             f"{peaks.gbytes_per_second:.1f} GB/s (memory) [{peaks.cpu}]", ""]
    table = [("kernel", "calls", "total ms", "mean us", "share", "FLOPs", "bytes", "GFLOP/s",
              "GB/s", "%peak", "bound", "source ops")]
    for row in report.rows:
        table.append((row.name, str(row.calls), f"{row.total_ns / 1e6:.3f}",
                      f"{row.mean_ns / 1e3:.1f}", f"{100 * row.share:.1f}%", _si(row.flops),
                      _si(row.bytes, "B"), f"{row.gflops_per_s:.2f}", f"{row.gbytes_per_s:.2f}",
                      f"{100 * row.peak_fraction:.1f}%", row.bound,
                      _cut(", ".join(row.source_ops), source_width)))
    per_run = totals.run_ns / totals.runs if totals.runs else 0.0
    table.append(("all kernels", str(sum(row.calls for row in report.rows)),
                  f"{totals.kernel_ns / 1e6:.3f}", "", f"{100 * totals.kernel_fraction:.1f}%",
                  *[""] * 7))
    table.append(("whole run", str(totals.runs), f"{totals.run_ns / 1e6:.3f}",
                  f"{per_run / 1e3:.1f}", "100.0%", *[""] * 6,
                  f"{100 * (1 - totals.kernel_fraction):.1f}% outside kernels"))
    lines += _aligned(table, left={0, 10, 11}, rule_before=len(table) - 2)
    for section in report.sections:
        lines += ["", f"{section.title}:", *section.text.rstrip("\n").splitlines()]
    return "\n".join(lines) + "\n"


def format_json(report: Report) -> str:
    data: dict[str, Any] = {
        "model": report.model, "threads": report.threads, "runs": report.totals.runs,
        "peaks": asdict(report.peaks), "totals": report.totals.columns(),
        "kernels": [row.columns() for row in report.rows]}
    data |= {section.key: section.data for section in report.sections}
    return json.dumps(_strict(data), indent=1, allow_nan=False) + "\n"


def format_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        columns = row.columns()
        writer.writerow(columns | {
            "source_ops": SOURCE_OPS_SEPARATOR.join(columns["source_ops"])})
    return out.getvalue()


def _strict(data: Any) -> Any:
    """``data`` with non-finite floats as the strings "inf", "-inf" and "nan": strict JSON has
    no such numbers (a numerics section's error is infinite when shapes differ)."""
    if isinstance(data, float) and not math.isfinite(data):
        return str(data)
    if isinstance(data, dict):
        return {key: _strict(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_strict(value) for value in data]
    return data


def _aligned(table: Sequence[Sequence[str]], left: set[int], rule_before: int) -> list[str]:
    """Columns padded to their widest cell (``left`` ones left-aligned, the others right), with
    a rule under the header and before row ``rule_before``; trailing blanks stripped."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for index, row in enumerate(table):
        if index in (1, rule_before):
            lines.append("  ".join("-" * w for w in widths))
        cells = [c.ljust(w) if i in left else c.rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return lines


def _si(value: float, unit: str = "") -> str:
    """``value`` with a decimal SI prefix: 950, 1.20k, 3.41M, 2.00G."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{prefix}{unit}"
    return f"{value:g}{unit}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
