"""Kiln's thin runtime: loads compiled artifacts; imports only the standard library and numpy.

``load("model.so", threads=None) -> Model``; ``Model.inputs`` / ``Model.outputs`` describe the
tensors (``TensorInfo``: name, numpy dtype, shape) and ``Model.run({name: array})`` returns one
fresh array per output. Failures raise ``KilnRuntimeError`` (a ``ValueError``). A model compiled
with profiling reports per-kernel counters and trace events (``Model.profile``,
``Model.trace_events``; the records are in ``kiln.runtime.profile``).
"""

from .loader import load
from .model import KilnRuntimeError, Model, TensorInfo
from .profile import KernelCounters, KernelInfo, ProfileCounters, TraceEvent

__all__ = ["KernelCounters", "KernelInfo", "KilnRuntimeError", "Model", "ProfileCounters",
           "TensorInfo", "TraceEvent", "load"]
