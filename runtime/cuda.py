"""CUDA artifacts (``kiln compile --target cuda -o model.kiln``): the file format, and running
one on an NVIDIA GPU through the CUDA driver API (``libcuda.so.1``, via ctypes; no toolkit).

File format (little-endian), written by ``kiln.compiler.artifact.cuda``:

    header (64 bytes): magic b"KILNCUDA", u32 format version, u32 0, u64 manifest bytes,
                       u64 payload bytes, u32 CRC-32 of manifest + payload, zero padding
    manifest:          UTF-8 JSON (below)
    payload:           the weights blob (at offset 0), then each kernel's PTX text

The manifest holds ``arch`` (``sm_80``: the PTX's target), ``inputs`` / ``outputs`` (name,
dtype as Kiln spells it, shape), ``arena_bytes``, ``weights`` and each kernel's ``ptx``
(``{"offset", "bytes"}`` into the payload), ``kernels`` (name, grid, threads, params, source
ops), ``calls`` (the plan in order: kernel index and one ``[place, at]`` per parameter, place
``input`` / ``output`` (slot) or ``weight`` / ``arena`` (byte offset)), and ``messages``: the
texts of the kernels' data errors (the device error word holds 1 + the index of the first).

Running (``CudaModel``): the primary context of device 0, one stream; each kernel's PTX is
loaded with ``cuModuleLoadDataEx`` (the driver JIT-compiles it for the GPU at hand, its error
log in the message on failure); device memory for the weights (copied once), one activation
arena, each input and output, and the error word. ``run`` copies the inputs in, launches the
calls in plan order, copies the outputs and the error word back and synchronizes; a non-zero
error word raises its message. Every driver call is checked: a failure raises
``CudaError`` naming the call and the driver's error name and text.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import abi
from .model import KilnRuntimeError, Model, TensorInfo, numpy_dtype

MAGIC = b"KILNCUDA"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIIQQI")
HEADER_BYTES = 64


class CudaError(KilnRuntimeError):
    """A CUDA driver call failed, or there is no driver or device."""


@dataclass(frozen=True)
class CudaArtifact:
    """A parsed CUDA artifact: the manifest and the payload it points into."""

    path: str
    manifest: dict[str, Any]
    payload: bytes

    def section(self, where: Mapping[str, int]) -> bytes:
        return self.payload[where["offset"]:where["offset"] + where["bytes"]]

    @property
    def weights(self) -> bytes:
        return self.section(self.manifest["weights"])

    def ptx(self, index: int) -> str:
        return self.section(self.manifest["kernels"][index]["ptx"]).decode("utf-8")

    @property
    def kernels(self) -> list[dict[str, Any]]:
        return list(self.manifest["kernels"])

    def tensors(self, output: bool) -> list[TensorInfo]:
        return [TensorInfo(t["name"], numpy_dtype(abi.DTYPE_CODES[t["dtype"]]),
                           tuple(t["shape"]))
                for t in self.manifest["outputs" if output else "inputs"]]

    def dtype_codes(self, output: bool) -> list[int]:
        return [abi.DTYPE_CODES[t["dtype"]] for t in self.manifest["outputs" if output
                                                                   else "inputs"]]


def is_cuda_artifact(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def parse_artifact(data: bytes, path: str = "<bytes>") -> CudaArtifact:
    """Check and split an artifact's bytes; a corrupt or foreign file raises a clear error."""
    if len(data) < HEADER_BYTES or data[:len(MAGIC)] != MAGIC:
        raise KilnRuntimeError(f"{path} is not a Kiln CUDA artifact (bad magic or too short)")
    magic, version, _, manifest_bytes, payload_bytes, crc = HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise KilnRuntimeError(f"{path} has CUDA artifact format {version}; this runtime reads "
                               f"format {FORMAT_VERSION}")
    body = data[HEADER_BYTES:]
    if len(body) != manifest_bytes + payload_bytes:
        raise KilnRuntimeError(f"{path} is truncated or corrupt: {len(body)} bytes after the "
                               f"header, expected {manifest_bytes + payload_bytes}")
    if zlib.crc32(body) != crc:
        raise KilnRuntimeError(f"{path} is corrupt: checksum mismatch")
    try:
        manifest = json.loads(body[:manifest_bytes].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise KilnRuntimeError(f"{path} has an unreadable manifest: {error}") from None
    return CudaArtifact(path, manifest, bytes(body[manifest_bytes:]))


def encode_artifact(manifest: Mapping[str, Any], payload: bytes) -> bytes:
    """The artifact bytes of ``manifest`` and ``payload`` (the writer's half of the format)."""
    text = json.dumps(manifest, separators=(",", ":")).encode("utf-8")
    body = text + payload
    header = HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(text), len(payload), zlib.crc32(body))
    return header.ljust(HEADER_BYTES, b"\0") + body


def read_artifact(path: str | os.PathLike[str]) -> CudaArtifact:
    name = os.fspath(path)
    try:
        with open(name, "rb") as file:
            data = file.read()
    except OSError as error:
        raise KilnRuntimeError(f"cannot read {name}: {error}") from None
    return parse_artifact(data, name)


# -- the CUDA driver API ---------------------------------------------------------------------

_P = ctypes.c_void_p
_U64 = ctypes.c_uint64
_PROTOTYPES: dict[str, list[Any]] = {
    "cuInit": [ctypes.c_uint],
    "cuDeviceGetCount": [ctypes.POINTER(ctypes.c_int)],
    "cuDeviceGet": [ctypes.POINTER(ctypes.c_int), ctypes.c_int],
    "cuDeviceGetName": [ctypes.c_char_p, ctypes.c_int, ctypes.c_int],
    "cuDevicePrimaryCtxRetain": [ctypes.POINTER(_P), ctypes.c_int],
    "cuDevicePrimaryCtxRelease_v2": [ctypes.c_int],
    "cuCtxSetCurrent": [_P],
    "cuModuleLoadDataEx": [ctypes.POINTER(_P), ctypes.c_char_p, ctypes.c_uint,
                           ctypes.POINTER(ctypes.c_int), ctypes.POINTER(_P)],
    "cuModuleUnload": [_P],
    "cuModuleGetFunction": [ctypes.POINTER(_P), _P, ctypes.c_char_p],
    "cuMemAlloc_v2": [ctypes.POINTER(_U64), ctypes.c_size_t],
    "cuMemFree_v2": [_U64],
    "cuMemcpyHtoDAsync_v2": [_U64, _P, ctypes.c_size_t, _P],
    "cuMemcpyDtoHAsync_v2": [_P, _U64, ctypes.c_size_t, _P],
    "cuMemsetD32Async": [_U64, ctypes.c_uint, ctypes.c_size_t, _P],
    "cuLaunchKernel": [_P, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                       ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, _P, ctypes.POINTER(_P),
                       ctypes.POINTER(_P)],
    "cuStreamCreate": [ctypes.POINTER(_P), ctypes.c_uint],
    "cuStreamDestroy_v2": [_P],
    "cuStreamSynchronize": [_P],
    "cuEventCreate": [ctypes.POINTER(_P), ctypes.c_uint],
    "cuEventDestroy_v2": [_P],
    "cuEventRecord": [_P, _P],
    "cuEventSynchronize": [_P],
    "cuEventElapsedTime": [ctypes.POINTER(ctypes.c_float), _P, _P],
    "cuGetErrorName": [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)],
    "cuGetErrorString": [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)],
}
_NO_DEVICE = 100  # CUDA_ERROR_NO_DEVICE
# cuModuleLoadDataEx options: CU_JIT_INFO_LOG_BUFFER (3) and its size (4), the error log (5, 6)
_JIT_ERROR_LOG_BUFFER, _JIT_ERROR_LOG_SIZE = 5, 6
_LOG_BYTES = 16384


class CudaDriver:
    """``libcuda.so.1`` bound with ctypes; ``call`` checks each ``CUresult``."""

    def __init__(self, library: str = "libcuda.so.1") -> None:
        try:
            self._dll = ctypes.CDLL(library)
        except OSError as error:
            raise CudaError(f"no CUDA driver ({library}) found: {error}; CUDA artifacts run "
                            "only on a machine with an NVIDIA GPU and its driver") from None
        for name, argtypes in _PROTOTYPES.items():
            function = getattr(self._dll, name, None)
            if function is None:
                raise CudaError(f"the CUDA driver {library} lacks {name} (too old?)")
            function.restype = ctypes.c_int
            function.argtypes = argtypes

    def error_text(self, code: int) -> str:
        name, text = ctypes.c_char_p(), ctypes.c_char_p()
        self._dll.cuGetErrorName(code, ctypes.byref(name))
        self._dll.cuGetErrorString(code, ctypes.byref(text))
        spelled = (name.value or b"").decode() or f"CUresult {code}"
        return f"{spelled}: {(text.value or b'').decode()}".rstrip(": ")

    def call(self, name: str, *args: Any, detail: str = "") -> None:
        code = getattr(self._dll, name)(*args)
        if code != 0:
            suffix = f"\n{detail}" if detail else ""
            raise CudaError(f"{name} failed ({self.error_text(code)}){suffix}")

    def init_device(self, ordinal: int) -> tuple[int, str]:
        """cuInit, then device ``ordinal`` (and its name); a clear error without one."""
        code = self._dll.cuInit(0)
        if code == _NO_DEVICE:
            raise CudaError("no CUDA device: the driver is installed but finds no GPU")
        if code != 0:
            raise CudaError(f"cuInit failed ({self.error_text(code)})")
        count = ctypes.c_int()
        self.call("cuDeviceGetCount", ctypes.byref(count))
        if count.value <= ordinal:
            raise CudaError(f"no CUDA device {ordinal}: the driver finds {count.value}")
        device = ctypes.c_int()
        self.call("cuDeviceGet", ctypes.byref(device), ordinal)
        name = ctypes.create_string_buffer(256)
        self.call("cuDeviceGetName", name, 256, device)
        return device.value, name.value.decode("utf-8", "replace")

    def alloc(self, nbytes: int) -> int:
        pointer = _U64()
        self.call("cuMemAlloc_v2", ctypes.byref(pointer), max(int(nbytes), 1))
        return int(pointer.value)

    def load_module(self, ptx: str, kernel: str) -> tuple[_P, _P]:
        """JIT-load one PTX module; (module, function ``kernel``)."""
        log = ctypes.create_string_buffer(_LOG_BYTES)
        options = (ctypes.c_int * 2)(_JIT_ERROR_LOG_BUFFER, _JIT_ERROR_LOG_SIZE)
        values = (_P * 2)(ctypes.cast(log, _P), _P(_LOG_BYTES))
        module = _P()
        image = ptx.encode("utf-8") + b"\0"
        code = self._dll.cuModuleLoadDataEx(ctypes.byref(module), image, 2, options, values)
        if code != 0:
            raise CudaError(f"cuModuleLoadDataEx failed for kernel {kernel} "
                            f"({self.error_text(code)}); JIT log:\n"
                            f"{log.value.decode('utf-8', 'replace')}")
        function = _P()
        self.call("cuModuleGetFunction", ctypes.byref(function), module, kernel.encode())
        return module, function


@dataclass(frozen=True)
class KernelTime:
    """One kernel call's GPU time in a profiled run."""

    index: int
    kernel: str
    source_ops: tuple[str, ...]
    milliseconds: float


class CudaModel(Model):
    """A CUDA artifact loaded on a GPU; ``run`` as ``Model.run`` (inputs checked the same
    way). One instance runs one call at a time."""

    def __init__(self, artifact: CudaArtifact, device: int = 0,
                 driver: CudaDriver | None = None) -> None:
        self._handle = None
        self._cuda: CudaDriver | None = None
        self.path = artifact.path
        self.artifact = artifact
        self.inputs = artifact.tensors(output=False)
        self.outputs = artifact.tensors(output=True)
        self._input_codes = artifact.dtype_codes(output=False)
        self._output_codes = artifact.dtype_codes(output=True)
        self._allocations: list[int] = []
        self._modules: list[_P] = []
        cuda = driver or CudaDriver()
        ordinal, self.device_name = cuda.init_device(device)
        context = _P()
        cuda.call("cuDevicePrimaryCtxRetain", ctypes.byref(context), ordinal)
        self._cuda, self._device, self._context = cuda, ordinal, context
        cuda.call("cuCtxSetCurrent", context)
        self._stream = _P()
        cuda.call("cuStreamCreate", ctypes.byref(self._stream), 0)
        manifest = artifact.manifest
        functions = []
        for index, kernel in enumerate(manifest["kernels"]):
            module, function = cuda.load_module(artifact.ptx(index), kernel["name"])
            self._modules.append(module)
            functions.append(function)
        weights = artifact.weights
        self._weights = self._alloc(len(weights))
        if weights:
            host = np.frombuffer(weights, np.uint8)
            cuda.call("cuMemcpyHtoDAsync_v2", self._weights, host.ctypes.data, host.nbytes,
                      self._stream)
            cuda.call("cuStreamSynchronize", self._stream)
        self._arena = self._alloc(manifest["arena_bytes"])
        self._error = self._alloc(4)
        self._in = [self._alloc(t.nbytes) for t in self.inputs]
        self._out = [self._alloc(t.nbytes) for t in self.outputs]
        self._launches = [self._launch(call, functions, manifest["kernels"])
                          for call in manifest["calls"]]
        self._handle = context

    def _alloc(self, nbytes: int) -> int:
        assert self._cuda is not None
        pointer = self._cuda.alloc(nbytes)
        self._allocations.append(pointer)
        return pointer

    def _launch(self, call: Mapping[str, Any], functions: list[_P],
                kernels: list[Mapping[str, Any]]) -> tuple[_P, int, int, Any, Any]:
        """(function, grid, threads, parameter array, its values) of one plan call."""
        bases = {"weight": self._weights, "arena": self._arena}
        pointers = []
        for place, at in call["args"]:
            if place == "input":
                pointers.append(self._in[at])
            elif place == "output":
                pointers.append(self._out[at])
            elif place in bases:
                pointers.append(bases[place] + at)
            else:
                raise KilnRuntimeError(f"{self.path}: unknown buffer place {place!r}")
        pointers.append(self._error)
        values = (_U64 * len(pointers))(*pointers)
        params = (_P * len(pointers))(*(ctypes.addressof(values) + 8 * i
                                        for i in range(len(pointers))))
        kernel = kernels[call["kernel"]]
        return functions[call["kernel"]], kernel["grid"], kernel["threads"], params, values

    def __repr__(self) -> str:
        return (f"CudaModel({self.path!r}, inputs=[{', '.join(map(str, self.inputs))}], "
                f"outputs=[{', '.join(map(str, self.outputs))}])")

    def close(self) -> None:
        """Free the device memory and modules and release the context."""
        cuda, self._cuda = getattr(self, "_cuda", None), None
        self._handle = None
        if cuda is None:
            return
        cuda.call("cuCtxSetCurrent", self._context)
        for pointer in self._allocations:
            cuda.call("cuMemFree_v2", pointer)
        for module in self._modules:
            cuda.call("cuModuleUnload", module)
        if getattr(self, "_stream", None):
            cuda.call("cuStreamDestroy_v2", self._stream)
        cuda.call("cuDevicePrimaryCtxRelease_v2", self._device)

    @property
    def profiling(self) -> bool:
        return False

    def kernel_info(self) -> list[Any]:
        return []

    def _not_profiled(self, what: str) -> KilnRuntimeError:
        return KilnRuntimeError(f"{what}: a CUDA model has no profile counters; use "
                                "time_kernels(inputs) (or kiln profile)", abi.Status.NOT_PROFILED)

    def profile(self) -> Any:
        raise self._not_profiled("reading the profile counters")

    def trace_events(self) -> list[Any]:
        raise self._not_profiled("reading the trace")

    def reset_profile(self) -> None:
        raise self._not_profiled("resetting the profile")

    def _driver(self) -> CudaDriver:
        if self._cuda is None:
            raise KilnRuntimeError(f"model {self.path} is closed")
        self._cuda.call("cuCtxSetCurrent", self._context)
        return self._cuda

    def _enqueue(self, inputs: Mapping[str, Any], events: list[_P] | None
                 ) -> tuple[list[np.ndarray], ctypes.c_uint32]:
        cuda = self._driver()
        arrays = self._check_inputs(inputs)
        stream = self._stream
        cuda.call("cuMemsetD32Async", self._error, 0, 1, stream)
        for device, array in zip(self._in, arrays, strict=True):
            cuda.call("cuMemcpyHtoDAsync_v2", device, array.ctypes.data, array.nbytes, stream)
        for index, (function, grid, threads, params, _) in enumerate(self._launches):
            if events is not None:
                cuda.call("cuEventRecord", events[index], stream)
            cuda.call("cuLaunchKernel", function, grid, 1, 1, threads, 1, 1, 0, stream,
                      params, None)
        if events is not None:
            cuda.call("cuEventRecord", events[-1], stream)
        outputs = [np.empty(info.shape, info.dtype) for info in self.outputs]
        for device, array in zip(self._out, outputs, strict=True):
            cuda.call("cuMemcpyDtoHAsync_v2", array.ctypes.data, device, array.nbytes, stream)
        error = ctypes.c_uint32()
        cuda.call("cuMemcpyDtoHAsync_v2", ctypes.addressof(error), self._error, 4, stream)
        cuda.call("cuStreamSynchronize", stream)
        return outputs, error

    def _raise_reported(self, error: ctypes.c_uint32) -> None:
        if error.value:
            messages = self.artifact.manifest["messages"]
            text = messages[error.value - 1] if error.value <= len(messages) else (
                f"unknown error code {error.value}")
            raise KilnRuntimeError(f"running the model failed: {text}", abi.Status.RUNTIME)

    def run(self, inputs: Mapping[str, Any]) -> list[np.ndarray]:
        """Run the model on ``{input name: array}``; returns fresh arrays, one per output."""
        outputs, error = self._enqueue(inputs, None)
        self._raise_reported(error)
        return outputs

    def time_kernels(self, inputs: Mapping[str, Any]) -> list[KernelTime]:
        """One run with a CUDA event around each kernel call: the GPU time of each."""
        cuda = self._driver()
        events = [_P() for _ in range(len(self._launches) + 1)]
        for event in events:
            cuda.call("cuEventCreate", ctypes.byref(event), 0)
        try:
            _, error = self._enqueue(inputs, events)
            self._raise_reported(error)
            times = []
            kernels = self.artifact.manifest["kernels"]
            for index, call in enumerate(self.artifact.manifest["calls"]):
                elapsed = ctypes.c_float()
                cuda.call("cuEventElapsedTime", ctypes.byref(elapsed), events[index],
                          events[index + 1])
                kernel = kernels[call["kernel"]]
                times.append(KernelTime(index, kernel["name"], tuple(kernel["source"]),
                                        float(elapsed.value)))
            return times
        finally:
            for event in events:
                if event:
                    cuda.call("cuEventDestroy_v2", event)


def unavailable(device: int = 0) -> str | None:
    """Why CUDA artifacts cannot run here (no driver, no device), or None when they can."""
    try:
        CudaDriver().init_device(device)
    except CudaError as error:
        return str(error)
    return None


def load_cuda(path: str | os.PathLike[str], device: int = 0) -> CudaModel:
    """Load a CUDA artifact onto GPU ``device``; a clear error without a driver or GPU."""
    return CudaModel(read_artifact(path), device)
