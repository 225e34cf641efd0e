"""onnxruntime beside Kiln: its intermediate tensors, its per-op times, and the side-by-side join.

- ``ort_intermediates(model, inputs)``: every tensor the main graph's nodes compute, by ONNX
  value name, from a copy of the model in which each node output is also a graph output (added
  without a type: onnxruntime types its outputs itself, so no shape inference is needed). Graph
  optimizations are off, so each value is what its own ONNX node computes: the oracle for
  ``kiln.compiler.profile.numerics.first_divergence(..., reference_values=...)``.
- ``ort_op_times(model, inputs, threads, runs)``: onnxruntime's profiler on
  (``SessionOptions.enable_profiling``), its JSON parsed: the "Node" events named
  ``<node>_kernel_time``, summed per node over the measured runs (warm-up runs left out by
  their time stamps).
- ``side_by_side(kiln_kernels, ort_ops)``: rows joining Kiln's kernels with onnxruntime's ops by
  ONNX node name (a Kiln kernel's source ops are the ONNX nodes it implements), per run.

onnxruntime is an optional (development) dependency: it is imported when a function needs it,
and its absence is reported with what to install.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import onnx
from onnx import ModelProto, ValueInfoProto

from kiln.compiler.errors import KilnError

from .loading import read_model

KERNEL_TIME_SUFFIX = "_kernel_time"
# onnxruntime's graph optimization levels by the names ``ort_op_times`` takes. "basic" (constant
# folding, redundant-node removal, folding BatchNormalization into Conv weights) keeps the ONNX
# node names, so its ops join Kiln's source ops; "extended" and "all" fuse nodes under names of
# their own ("r_nchwc", ...), which then appear as onnxruntime-only rows.
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def onnxruntime_module() -> ModuleType:
    """The onnxruntime module, or a KilnError saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise KilnError(
            "comparing with onnxruntime needs the onnxruntime package, an optional dependency "
            "of Kiln: pip install onnxruntime (or install Kiln with its dev extra)"
        ) from None
    return onnxruntime


def ort_intermediates(
    model: str | os.PathLike[str] | ModelProto, inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Every tensor value the main graph's nodes compute (graph outputs included), by name,
    run by onnxruntime with graph optimizations off. Values that are not tensors (sequences,
    maps) are left out."""
    exposed = ModelProto()
    exposed.CopyFrom(read_model(model, None))
    graph = exposed.graph
    known = {v.name for v in graph.output} | {v.name for v in graph.input}
    for node in graph.node:
        for name in node.output:
            if name and name not in known:
                graph.output.append(ValueInfoProto(name=name))
                known.add(name)
    ort = onnxruntime_module()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = _session(exposed, options)
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, dict(inputs))
    return {n: r for n, r in zip(names, results, strict=True) if isinstance(r, np.ndarray)}


@dataclass(frozen=True)
class OrtOpTime:
    """One onnxruntime node's kernel time summed over the measured runs."""

    node_name: str
    op_type: str
    calls: int
    total_us: int


def ort_op_times(
    model: str | os.PathLike[str] | ModelProto,
    inputs: Mapping[str, np.ndarray],
    threads: int = 1,
    runs: int = 10,
    *,
    warmup: int = 1,
    optimization: str = "basic",
) -> list[OrtOpTime]:
    """Per-node kernel times of ``runs`` onnxruntime runs on ``threads`` intra-op threads,
    after ``warmup`` runs that are not counted, in the order the nodes first ran.
    ``optimization`` is onnxruntime's graph optimization level (``OPTIMIZATION_LEVELS``)."""
    if optimization not in OPTIMIZATION_LEVELS:
        raise KilnError(f"optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}, "
                        f"got {optimization!r}")
    if runs < 1 or warmup < 0 or threads < 1:
        raise KilnError(f"need runs >= 1, warmup >= 0 and threads >= 1; got runs={runs}, "
                        f"warmup={warmup}, threads={threads}")
    ort = onnxruntime_module()
    levels = ort.GraphOptimizationLevel
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disable": levels.ORT_DISABLE_ALL, "basic": levels.ORT_ENABLE_BASIC,
        "extended": levels.ORT_ENABLE_EXTENDED, "all": levels.ORT_ENABLE_ALL}[optimization]
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="kiln-ort-") as folder:
        # onnxruntime writes its profile to the working folder unless given a prefix.
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = _session(read_model(model, None), options)
        feeds = dict(inputs)
        for _ in range(warmup + runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    return _node_times(events, warmup)


def _node_times(events: Sequence[Mapping[str, Any]], warmup: int) -> list[OrtOpTime]:
    """Kernel times per node from onnxruntime's trace events, leaving out the node events of
    the first ``warmup`` runs (those that start before the end of the warmup-th run)."""
    run_ends = sorted(e["ts"] + e["dur"] for e in events
                      if e.get("cat") == "Session" and e.get("name") == "model_run")
    start = run_ends[warmup - 1] if warmup else -1
    calls: dict[str, int] = {}
    total: dict[str, int] = {}
    op_types: dict[str, str] = {}
    for event in sorted(events, key=lambda e: e["ts"]):
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith(KERNEL_TIME_SUFFIX) \
                or event["ts"] < start:
            continue
        node = name[: -len(KERNEL_TIME_SUFFIX)]
        op_types.setdefault(node, event.get("args", {}).get("op_name", ""))
        calls[node] = calls.get(node, 0) + 1
        total[node] = total.get(node, 0) + int(event["dur"])
    return [OrtOpTime(node, op_types[node], calls[node], total[node]) for node in op_types]


def _session(model: ModelProto, options: Any) -> Any:
    """An onnxruntime CPU session of ``model``, read from a temporary file with its weights
    as external data (a serialized proto is limited to 2 GiB)."""
    ort = onnxruntime_module()
    with tempfile.TemporaryDirectory(prefix="kiln-ort-model-") as folder:
        path = Path(folder) / "model.onnx"
        copy = ModelProto()
        copy.CopyFrom(model)
        onnx.save_model(copy, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location="weights.bin")
        # the session reads the weights while it is created, so the folder may go after
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class KilnKernelTime(Protocol):
    """What ``side_by_side`` reads of a Kiln kernel's counters (``kiln.runtime``'s
    ``KernelCounters`` has these attributes)."""

    @property
    def name(self) -> str: ...

    @property
    def source_ops(self) -> Sequence[str]: ...

    @property
    def total_ns(self) -> int: ...


@dataclass(frozen=True)
class SideBySideRow:
    """Kiln kernels and the onnxruntime ops of the same ONNX nodes, times per run in us.

    ``kernels`` is empty for an onnxruntime op no Kiln kernel names as a source op; ``ort_ops``
    is empty for kernels whose nodes onnxruntime did not run under their names. Kernels that
    share a source op (a node lowered to several kernels) share one row, so each onnxruntime op
    is counted once."""

    kernels: tuple[str, ...]
    source_ops: tuple[str, ...]
    kiln_us: float
    ort_ops: tuple[tuple[str, float], ...]

    @property
    def ort_us(self) -> float:
        return sum(us for _, us in self.ort_ops)


def side_by_side(
    kiln_kernels: Iterable[KilnKernelTime],
    ort_ops: Iterable[OrtOpTime],
    *,
    kiln_runs: int = 1,
    ort_runs: int = 1,
) -> list[SideBySideRow]:
    """Join Kiln's kernels (in plan order) with onnxruntime's ops by ONNX node name; times are
    divided by each side's number of runs. Rows of kernels come first, in the order of their
    first kernel, then onnxruntime's unmatched ops in their order. ONNX nodes without a name
    do not join: onnxruntime names them itself (``Relu_0``), Kiln keeps them unnamed."""
    if kiln_runs < 1 or ort_runs < 1:
        raise KilnError(f"need at least one run on each side, got kiln_runs={kiln_runs}, "
                        f"ort_runs={ort_runs}")
    # Kernels sharing a source op form one group, keyed by its first kernel's position.
    groups: dict[int, tuple[list[tuple[int, KilnKernelTime]], list[str]]] = {}
    owner: dict[str, int] = {}
    for position, kernel in enumerate(kiln_kernels):
        ops = list(dict.fromkeys(kernel.source_ops))
        keys = sorted({owner[op] for op in ops if op in owner})
        key = keys[0] if keys else position
        members, names = groups.setdefault(key, ([], []))
        for other in keys[1:]:
            more_members, more_names = groups.pop(other)
            members.extend(more_members)
            names.extend(more_names)
        members.append((position, kernel))
        names.extend(op for op in ops if op not in owner)
        owner.update((op, key) for op in names)
    ort = {op.node_name: op.total_us / ort_runs for op in ort_ops}
    rows = []
    for key in sorted(groups):
        members, names = groups[key]
        kernels = [kernel for _, kernel in sorted(members, key=lambda m: m[0])]
        rows.append(SideBySideRow(tuple(k.name for k in kernels), tuple(names),
                                  sum(k.total_ns for k in kernels) / 1000 / kiln_runs,
                                  tuple((op, ort[op]) for op in names if op in ort)))
    rows += [SideBySideRow((), (op,), 0.0, ((op, us),)) for op, us in ort.items()
             if op not in owner]
    return rows


def format_side_by_side(rows: Sequence[SideBySideRow]) -> str:
    """A text table of ``side_by_side`` rows with totals: Kiln kernels and their source ops,
    Kiln us per run, the onnxruntime ops with their us per run, their sum and the ratio."""
    header = ("Kiln kernel", "source ops", "Kiln us", "onnxruntime ops (us)", "onnxruntime us",
              "Kiln / ort")
    lines = [(", ".join(r.kernels) or "-", ", ".join(r.source_ops), f"{r.kiln_us:.1f}",
              " + ".join(f"{op} {us:.1f}" for op, us in r.ort_ops) or "-", f"{r.ort_us:.1f}",
              _ratio(r.kiln_us, r.ort_us) if r.kernels and r.ort_ops else "-")
             for r in rows]
    kiln_total = sum(r.kiln_us for r in rows)
    ort_total = sum(r.ort_us for r in rows)
    lines.append(("total", "", f"{kiln_total:.1f}", "", f"{ort_total:.1f}",
                  _ratio(kiln_total, ort_total)))
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.rjust(w) if i in (2, 4, 5) else cell.ljust(w)
                  for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip()
        for line in [header, *lines]
    ) + "\n"


def _ratio(kiln_us: float, ort_us: float) -> str:
    return f"{kiln_us / ort_us:.2f}x" if ort_us > 0 else "-"
