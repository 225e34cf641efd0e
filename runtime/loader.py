"""Opening a compiled model library with ctypes: ``load(path, threads=None) -> Model``.

``NativeLibrary`` binds the C ABI of kiln.h (prototypes, status checks turning a failure into
``KilnRuntimeError`` with ``kiln_last_error``'s text), the profiling queries included. The
library is opened with RTLD_LOCAL, so several models can live in one process without their
symbols clashing. Libraries of ABI version 1 (before profiling) still load; they report
profiling disabled. A CUDA artifact (its magic says so) loads through ``cuda.load_cuda``.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

import numpy as np

from . import abi
from .cuda import is_cuda_artifact, load_cuda
from .model import KilnRuntimeError, Model, TensorInfo
from .profile import KernelCounters, KernelInfo, ProfileCounters, TraceEvent


class _TensorInfoStruct(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("dtype", ctypes.c_int32),
        ("rank", ctypes.c_int32),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
    ]


class _KernelInfoStruct(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("source_ops", ctypes.c_char_p),
        ("flops", ctypes.c_int64),
        ("bytes", ctypes.c_int64),
    ]


class _TraceEventStruct(ctypes.Structure):
    _fields_ = [
        ("kernel", ctypes.c_int32),
        ("thread", ctypes.c_int32),
        ("begin_ns", ctypes.c_int64),
        ("end_ns", ctypes.c_int64),
    ]


_I64P = ctypes.POINTER(ctypes.c_int64)
_PROTOTYPES: dict[str, tuple[object, list[object]]] = {
    "kiln_abi_version": (ctypes.c_int32, []),
    "kiln_num_inputs": (ctypes.c_int32, []),
    "kiln_num_outputs": (ctypes.c_int32, []),
    "kiln_input_info": (ctypes.c_int, [ctypes.c_int32, ctypes.POINTER(_TensorInfoStruct)]),
    "kiln_output_info": (ctypes.c_int, [ctypes.c_int32, ctypes.POINTER(_TensorInfoStruct)]),
    "kiln_create": (ctypes.c_int, [ctypes.c_int32, ctypes.c_char_p,
                                   ctypes.POINTER(ctypes.c_void_p)]),
    "kiln_destroy": (None, [ctypes.c_void_p]),
    "kiln_run": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]),
    "kiln_last_error": (ctypes.c_char_p, []),
}
_PROFILE_PROTOTYPES: dict[str, tuple[object, list[object]]] = {
    "kiln_profile_enabled": (ctypes.c_int32, []),
    "kiln_profile_num_kernels": (ctypes.c_int32, []),
    "kiln_profile_kernel_info": (ctypes.c_int, [ctypes.c_int32,
                                                ctypes.POINTER(_KernelInfoStruct)]),
    "kiln_profile_counters": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int32, _I64P, _I64P]),
    "kiln_profile_run_stats": (ctypes.c_int, [ctypes.c_void_p, _I64P, _I64P]),
    "kiln_profile_reset": (ctypes.c_int, [ctypes.c_void_p]),
    "kiln_profile_trace": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(_TraceEventStruct),
                                          ctypes.c_int64, _I64P]),
}


_I64PP = ctypes.POINTER(_I64P)
_SHAPED_PROTOTYPES: dict[str, tuple[object, list[object]]] = {
    "kiln_infer_shapes": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p]),
    "kiln_run_shaped": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                       ctypes.c_void_p]),
    "kiln_output": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int32,
                                   ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(_I64P)]),
}


class NativeLibrary:
    """The C ABI of one model library."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        if not os.path.isfile(self.path):
            raise KilnRuntimeError(f"no model library at {self.path}")
        try:
            self._dll = ctypes.CDLL(self.path, mode=os.RTLD_LOCAL | os.RTLD_NOW)
        except OSError as error:
            raise KilnRuntimeError(f"cannot load model library {self.path}: {error}") from None
        self._bind(_PROTOTYPES)
        version = self._dll.kiln_abi_version()
        if not abi.OLDEST_ABI_VERSION <= version <= abi.ABI_VERSION:
            raise KilnRuntimeError(
                f"{self.path} was built for Kiln ABI version {version}; this runtime speaks "
                f"versions {abi.OLDEST_ABI_VERSION} to {abi.ABI_VERSION}")
        self.profiling = False
        self._kernels: list[KernelInfo] = []
        if version >= abi.PROFILING_ABI_VERSION:
            self._bind(_PROFILE_PROTOTYPES)
            self.profiling = self._dll.kiln_profile_enabled() == 1
            self._kernels = [self._kernel_info(i)
                             for i in range(self._dll.kiln_profile_num_kernels())]
        if version >= abi.SHAPED_ABI_VERSION:
            self._bind(_SHAPED_PROTOTYPES)

    def _bind(self, prototypes: dict[str, tuple[object, list[object]]]) -> None:
        for name, (restype, argtypes) in prototypes.items():
            try:
                function = getattr(self._dll, name)
            except AttributeError:
                raise KilnRuntimeError(
                    f"{self.path} is not a Kiln model library (it lacks {name})") from None
            function.restype = restype
            function.argtypes = argtypes

    def _check(self, status: int, what: str) -> None:
        if status == abi.Status.OK:
            return
        message = (self._dll.kiln_last_error() or b"").decode("utf-8", "replace")
        try:
            code: abi.Status | None = abi.Status(status)
            name = code.name
        except ValueError:
            code, name = None, f"status {status}"
        raise KilnRuntimeError(f"{what} failed ({name}): {message}", code)

    def _infos(self, output: bool) -> list[_TensorInfoStruct]:
        count = self._dll.kiln_num_outputs() if output else self._dll.kiln_num_inputs()
        query = self._dll.kiln_output_info if output else self._dll.kiln_input_info
        infos = []
        for index in range(count):
            info = _TensorInfoStruct()
            self._check(query(index, ctypes.byref(info)), "querying the model")
            infos.append(info)
        return infos

    def dtype_codes(self, output: bool) -> list[int]:
        return [info.dtype for info in self._infos(output)]

    def tensors(self, output: bool, dtype_of: Callable[[int], np.dtype]) -> list[TensorInfo]:
        tensors = []
        for info in self._infos(output):
            if info.dtype not in abi.DTYPE_NAMES:
                raise KilnRuntimeError(f"{self.path}: tensor {info.name!r} has unknown dtype "
                                       f"code {info.dtype}")
            shape = tuple(None if info.shape[d] < 0 else int(info.shape[d])
                          for d in range(info.rank))
            tensors.append(TensorInfo(info.name.decode("utf-8"), dtype_of(info.dtype), shape))
        return tensors

    def create(self, threads: int | None, weights_path: str | None) -> ctypes.c_void_p:
        handle = ctypes.c_void_p()
        path = None if weights_path is None else os.fsencode(weights_path)
        self._check(self._dll.kiln_create(threads or 0, path, ctypes.byref(handle)),
                    "creating the model instance")
        return handle

    def destroy(self, handle: ctypes.c_void_p) -> None:
        self._dll.kiln_destroy(handle)

    def run(self, handle: ctypes.c_void_p, inputs: ctypes.Array, outputs: ctypes.Array) -> None:
        self._check(self._dll.kiln_run(handle, inputs, outputs), "running the model")

    def run_shaped(self, handle: ctypes.c_void_p, inputs: ctypes.Array, shapes: ctypes.Array,
                   outputs: ctypes.Array) -> None:
        self._check(self._dll.kiln_run_shaped(handle, inputs, shapes, outputs),
                    "running the model")

    def output(self, handle: ctypes.c_void_p, index: int, rank: int) -> tuple[int, tuple[int, ...]]:
        """Where output ``index`` of the last run is, and its shape."""
        data, shape = ctypes.c_void_p(), _I64P()
        self._check(self._dll.kiln_output(handle, index, ctypes.byref(data), ctypes.byref(shape)),
                    "reading an output")
        return data.value or 0, tuple(int(shape[d]) for d in range(rank))

    def infer_shapes(self, shapes: ctypes.Array, ranks: list[int]) -> list[tuple[int | None, ...]]:
        rows = [(ctypes.c_int64 * max(rank, 1))() for rank in ranks]
        pointers = (ctypes.c_void_p * max(len(rows), 1))(
            *[ctypes.addressof(row) for row in rows])
        self._check(self._dll.kiln_infer_shapes(shapes, pointers), "inferring the output shapes")
        return [tuple(None if row[d] < 0 else int(row[d]) for d in range(rank))
                for row, rank in zip(rows, ranks, strict=True)]

    def _kernel_info(self, index: int) -> KernelInfo:
        info = _KernelInfoStruct()
        self._check(self._dll.kiln_profile_kernel_info(index, ctypes.byref(info)),
                    "querying the profiled kernels")
        ops = info.source_ops.decode("utf-8")
        return KernelInfo(index, info.name.decode("utf-8"),
                          tuple(ops.split(abi.SOURCE_OPS_SEPARATOR)) if ops else (),
                          info.flops, info.bytes)

    @property
    def kernels(self) -> list[KernelInfo]:
        """The kernel calls of the plan ([] without profiling)."""
        return list(self._kernels)

    def _require_profiling(self, what: str) -> None:
        if not self.profiling:
            raise KilnRuntimeError(
                f"{what}: {self.path} was compiled without profiling (compile it with "
                "--profile, or build(..., profile=True))", abi.Status.NOT_PROFILED)

    def counters(self, handle: ctypes.c_void_p) -> ProfileCounters:
        what = "reading the profile counters"
        self._require_profiling(what)
        first, second = ctypes.c_int64(), ctypes.c_int64()
        kernels = []
        for info in self._kernels:
            self._check(self._dll.kiln_profile_counters(handle, info.index, ctypes.byref(first),
                                                        ctypes.byref(second)), what)
            kernels.append(KernelCounters(info.index, info.name, info.source_ops, info.flops,
                                          info.bytes, first.value, second.value))
        self._check(self._dll.kiln_profile_run_stats(handle, ctypes.byref(first),
                                                     ctypes.byref(second)), what)
        return ProfileCounters(first.value, second.value, kernels)

    def trace(self, handle: ctypes.c_void_p) -> list[TraceEvent]:
        what = "reading the trace"
        self._require_profiling(what)
        count = ctypes.c_int64()
        self._check(self._dll.kiln_profile_trace(handle, None, 0, ctypes.byref(count)), what)
        capacity = count.value
        events = (_TraceEventStruct * max(capacity, 1))()
        self._check(self._dll.kiln_profile_trace(handle, events, capacity, ctypes.byref(count)),
                    what)
        return [TraceEvent(e.kernel, e.thread, e.begin_ns, e.end_ns)
                for e in events[:min(capacity, count.value)]]

    def reset_profile(self, handle: ctypes.c_void_p) -> None:
        what = "resetting the profile"
        self._require_profiling(what)
        self._check(self._dll.kiln_profile_reset(handle), what)


def load(path: str | os.PathLike[str], threads: int | None = None,
         weights_path: str | os.PathLike[str] | None = None) -> Model:
    """Open a compiled model library and create an instance; a CUDA artifact
    (``--target cuda``, recognized by its magic) loads onto the GPU (``cuda.CudaModel``).

    ``threads``: size of the instance's thread pool (None or 0: one per online CPU).
    ``weights_path``: the external weights file of a library built with external weights
    (default: the ``.bin`` beside the library); ignored when the weights are embedded.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)):
        raise KilnRuntimeError(f"threads must be an int or None, got {threads!r}")
    if is_cuda_artifact(path):
        if weights_path is not None:
            raise KilnRuntimeError(f"{os.fspath(path)} is a CUDA artifact: its weights are "
                                   "inside it (no weights_path)")
        return load_cuda(path)
    weights = None if weights_path is None else os.fspath(weights_path)
    return Model(NativeLibrary(path), threads, weights)
