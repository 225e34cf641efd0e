"""What a profiling build of a model reports through ``Model`` (the C ABI's kiln_profile_*).

``KernelInfo``: the static facts of one kernel call of the plan (its index in plan order, the
kernel's name, the original graph nodes it implements, its FLOPs and bytes moved per call).
``KernelCounters``: those plus the calls and total nanoseconds measured since the instance was
created or reset; ``ProfileCounters``: every kernel's counters and the whole-run totals.
``TraceEvent``: one span of work on one thread (0: the thread that called ``run``, recording
whole kernel calls; 1..threads-1: pool workers, recording the parallel chunks they ran).
Times come from the monotonic clock, in nanoseconds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KernelInfo:
    """One kernel call of the plan."""

    index: int
    name: str
    source_ops: tuple[str, ...]  # original graph (ONNX) node names; () for an output copy
    flops: int  # per call, counted statically from the kernel IR
    bytes: int  # per call: the buffers it reads or writes, each once


@dataclass(frozen=True)
class KernelCounters(KernelInfo):
    """A kernel call's static facts and what was measured of it."""

    calls: int
    total_ns: int

    @property
    def mean_ns(self) -> float:
        return self.total_ns / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class ProfileCounters:
    """Counters of an instance since its creation or last reset."""

    runs: int  # runs that executed the plan
    run_ns: int  # their total time (the plan function, wall clock)
    kernels: list[KernelCounters]

    @property
    def kernel_ns(self) -> int:
        """The time spent inside kernels (the rest of a run is the plan's own overhead)."""
        return sum(kernel.total_ns for kernel in self.kernels)


@dataclass(frozen=True)
class TraceEvent:
    """A span of ``kernel`` (its plan index) on ``thread``."""

    kernel: int
    thread: int
    begin_ns: int
    end_ns: int
