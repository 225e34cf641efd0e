"""Profiling a compiled model: ``kiln profile``'s machine peaks, per-kernel report and trace.

``calibrate.py`` measures this machine's peaks once and caches them (``machine_peaks``: FMA
GFLOP/s per thread, memory bandwidth); ``report.py`` turns a profiling build's counters into
per-kernel rows (time, share, FLOPs, bytes, achieved rates, fraction of peak) and formats them
as a table, JSON or CSV, beside onnxruntime's per-op times when asked; ``trace.py`` writes the
trace events as a Chrome / Perfetto trace; ``numerics.py`` finds the first intermediate tensor
that diverges from a reference. The modules are imported by their full names: importing this
package loads nothing.
"""
