"""``kiln profile model.kiln``: the static and measured profile of a CUDA artifact.

Static, on any machine: each kernel's launch (grid x threads), the graph ops it implements,
and what ``ptxas -v`` reports for the artifact's architecture (registers per thread, static
shared memory per block, stack frame and spill bytes), when the CUDA toolkit's ptxas is
installed. Measured, on a machine with a GPU: each kernel call's time by CUDA events
(``CudaModel.time_kernels``), averaged over the measured runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kiln.runtime.cuda import CudaArtifact, CudaModel

from ..codegen.nvptx.ptx import PtxasInfo, ptxas_path, run_ptxas


@dataclass(frozen=True)
class CudaKernelRow:
    kernel: str
    calls: int
    grid: int
    threads: int
    source_ops: tuple[str, ...]
    ptxas: PtxasInfo | None
    mean_us: float | None  # GPU time of all its calls in one run, mean over the runs


@dataclass(frozen=True)
class CudaReport:
    model: str
    arch: str
    ptxas: bool  # whether ptxas was available
    rows: tuple[CudaKernelRow, ...]
    measured: bool


def kernel_times(model: CudaModel, inputs: Mapping[str, np.ndarray], warmup: int,
                 runs: int) -> dict[str, float]:
    """Mean GPU microseconds per run of each kernel (all its calls), over ``runs`` runs."""
    for _ in range(warmup):
        model.run(inputs)
    totals: dict[str, float] = {}
    for _ in range(runs):
        for timing in model.time_kernels(inputs):
            totals[timing.kernel] = totals.get(timing.kernel, 0.0) + timing.milliseconds
    return {name: total * 1000.0 / runs for name, total in totals.items()}


def cuda_report(artifact: CudaArtifact, times: Mapping[str, float] | None) -> CudaReport:
    arch = artifact.manifest["arch"]
    have_ptxas = ptxas_path() is not None
    calls = [artifact.manifest["kernels"][c["kernel"]]["name"]
             for c in artifact.manifest["calls"]]
    rows = []
    for index, kernel in enumerate(artifact.kernels):
        info = run_ptxas(artifact.ptx(index), arch) if have_ptxas else []
        rows.append(CudaKernelRow(
            kernel["name"], calls.count(kernel["name"]), kernel["grid"], kernel["threads"],
            tuple(kernel["source"]), info[0] if info else None,
            None if times is None else times.get(kernel["name"])))
    return CudaReport(artifact.path, arch, have_ptxas, tuple(rows), times is not None)


def format_cuda_table(report: CudaReport) -> str:
    header = ["kernel", "calls", "grid x threads", "regs", "smem B", "stack B", "spill st/ld B"]
    if report.measured:
        header.append("us/run")
    header.append("ops")
    lines: list[Sequence[str]] = [header]
    for row in report.rows:
        info = row.ptxas
        cells = [row.kernel, str(row.calls), f"{row.grid} x {row.threads}",
                 *((str(info.registers), str(info.shared_bytes), str(info.stack_bytes),
                    f"{info.spill_stores}/{info.spill_loads}") if info else ("-",) * 4)]
        if report.measured:
            cells.append("-" if row.mean_us is None else f"{row.mean_us:.1f}")
        cells.append(", ".join(row.source_ops) or "-")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    text = [f"{report.model}: CUDA artifact for {report.arch}, {len(report.rows)} kernels"
            + ("" if report.ptxas else " (ptxas not installed: no register / memory columns)")
            + ("" if report.measured else "; static report (no GPU timing)")]
    for line in lines:
        text.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False))
                    + "  " + line[-1])
    return "\n".join(text) + "\n"


def format_cuda_json(report: CudaReport) -> str:
    data: dict[str, Any] = asdict(report)
    return json.dumps(data, indent=2) + "\n"
