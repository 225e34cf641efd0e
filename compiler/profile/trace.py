"""A profiling build's trace events as a Chrome trace-event file (``kiln profile --trace``).

``chrome_trace(events, kernel_info)`` returns the JSON object form of the trace-event format
(https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU), which
Perfetto (ui.perfetto.dev) and chrome://tracing load: ``{"traceEvents": [...],
"displayTimeUnit": "ns"}``. Each event becomes a complete event (``"ph": "X"``) named after its
kernel on the track of the thread that ran it (``pid`` 1, ``tid`` the runtime's thread index),
with ``ts`` and ``dur`` in microseconds (fractional: the clock counts nanoseconds) from the
earliest event, and ``args`` holding the plan call index, the source ops, FLOPs and bytes. A
metadata event (``"ph": "M"``) names the process and each thread's track. Events on one thread
nest (a kernel on the calling thread encloses the parallel chunk that thread ran); they are
sorted by thread, start and longest first, the order the format asks of nested events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.runtime import KernelInfo, TraceEvent

PID = 1


def chrome_trace(events: Sequence[TraceEvent], kernel_info: Sequence[KernelInfo]
                 ) -> dict[str, Any]:
    """The trace-event JSON object of ``events`` (``kernel`` indexes ``kernel_info``)."""
    by_index = {info.index: info for info in kernel_info}
    origin = min((event.begin_ns for event in events), default=0)
    ordered = sorted(events, key=lambda e: (e.thread, e.begin_ns, e.begin_ns - e.end_ns))
    threads = sorted({event.thread for event in events})
    trace: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": PID, "tid": 0, "args": {"name": "kiln"}}]
    trace += [{"name": "thread_name", "ph": "M", "pid": PID, "tid": thread,
               "args": {"name": thread_name(thread)}} for thread in threads]
    for event in ordered:
        info = by_index[event.kernel]
        trace.append({
            "name": info.name, "cat": "kernel", "ph": "X", "pid": PID, "tid": event.thread,
            "ts": (event.begin_ns - origin) / 1000, "dur": (event.end_ns - event.begin_ns) / 1000,
            "args": {"call": info.index, "source_ops": ",".join(info.source_ops),
                     "flops": info.flops, "bytes": info.bytes},
        })
    return {"traceEvents": trace, "displayTimeUnit": "ns"}


def thread_name(thread: int) -> str:
    """A track's name: thread 0 called ``kiln_run`` and records each kernel call, the pool's
    workers 1, 2, ... record the parallel chunks they ran."""
    return "kiln caller: kernel calls" if thread == 0 else f"kiln worker {thread}: chunks"
