"""A loaded Kiln model: ``Model`` (one instance of the C ABI), ``TensorInfo`` and the error type.

A model compiled with profiling (``build(..., profile=True)``, ``kiln compile --profile``) also
answers ``kernel_info``, ``profile``, ``trace_events`` and ``reset_profile`` (see
``kiln.runtime.profile``); ``profiling`` says whether it was, and on one that was not the three
per-instance queries raise ``KilnRuntimeError`` with status ``NOT_PROFILED``.

``Model.run`` checks inputs against the model's signature before any native code sees them:
a missing or unexpected name, a wrong dtype or a wrong shape raises ``KilnRuntimeError``
naming what was expected and what was given. A model compiled with extents known only at run
time (``None`` in ``TensorInfo.shape``: a free batch or sequence axis) takes inputs of any
extents there; the native side checks them (repeated symbols, bounds) and computes the outputs'
shapes, ``infer_shapes`` tells them before running where they do not depend on values.
bf16 tensors are ``ml_dtypes.bfloat16`` arrays when the process has already imported ml_dtypes
(the runtime never imports it itself), and otherwise their raw bits as uint16 arrays; either
form is accepted as input.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import abi

if TYPE_CHECKING:
    from .loader import NativeLibrary
    from .profile import KernelInfo, ProfileCounters, TraceEvent


class KilnRuntimeError(ValueError):
    """A model could not be loaded or run; ``status`` is the C ABI's code when one applies."""

    def __init__(self, message: str, status: abi.Status | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a model."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]  # None: an extent known only at run time

    @property
    def is_static(self) -> bool:
        return None not in self.shape

    @property
    def nbytes(self) -> int:
        if not self.is_static:
            raise ValueError(f"{self.name} has extents known only at run time")
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __str__(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


def bf16_dtype() -> np.dtype:
    """ml_dtypes' bfloat16 when the process already uses ml_dtypes, else uint16 (raw bits)."""
    ml_dtypes = sys.modules.get("ml_dtypes")
    if ml_dtypes is not None:
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(np.uint16)


def numpy_dtype(code: int) -> np.dtype:
    return bf16_dtype() if code == abi.BF16 else abi.storage_dtype(code)


def _expected_dtype(info: TensorInfo, code: int) -> str:
    return "bfloat16 (or its bits as uint16)" if code == abi.BF16 else str(info.dtype)


def _accepts(expected: np.dtype, code: int, given: np.dtype) -> bool:
    if code == abi.BF16:
        # Raw bits and ml_dtypes' bfloat16 both carry the same two bytes per element.
        return given.itemsize == 2 and given.name in ("bfloat16", "uint16")
    return given == expected


class Model:
    """One instance of a compiled model: its arena, thread pool and (external) weights.

    Use ``kiln.runtime.load`` to create one. An instance runs one call at a time; use one Model
    per thread for concurrent inference (``run`` releases the GIL while native code runs).
    """

    def __init__(self, library: NativeLibrary, threads: int | None,
                 weights_path: str | None) -> None:
        self._library = library
        self._handle: ctypes.c_void_p | None = None
        self.path = library.path
        self.inputs: list[TensorInfo] = library.tensors(output=False, dtype_of=numpy_dtype)
        self.outputs: list[TensorInfo] = library.tensors(output=True, dtype_of=numpy_dtype)
        self._input_codes = library.dtype_codes(output=False)
        self._output_codes = library.dtype_codes(output=True)
        # Inputs that already are C-contiguous arrays of the exact dtype and shape skip the
        # conversions, and the pointer array types are made once: a batch-1 run of a small
        # model takes a few microseconds, less than the generic path's Python work.
        self._in_ptrs = ctypes.c_void_p * max(len(self.inputs), 1)
        self._out_ptrs = ctypes.c_void_p * max(len(self.outputs), 1)
        self._exact = [(info.name, np.dtype(info.dtype), info.shape) for info in self.inputs]
        self.is_static = all(info.is_static for info in self.inputs + self.outputs)
        self._shape_ptrs = ctypes.POINTER(ctypes.c_int64) * max(len(self.inputs), 1)
        self._signatures: dict[tuple[tuple[int, ...], ...], _Signature] = {}
        self._last: tuple[object, _Signature | None] = (None, None)  # the last run's shapes
        self._handle = library.create(threads, weights_path)

    def __repr__(self) -> str:
        inputs = ", ".join(map(str, self.inputs))
        outputs = ", ".join(map(str, self.outputs))
        return f"Model({self.path!r}, inputs=[{inputs}], outputs=[{outputs}])"

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Destroy the native instance (its threads stop); further runs raise."""
        handle, self._handle = getattr(self, "_handle", None), None
        if handle is not None:
            self._library.destroy(handle)

    def _open_handle(self) -> ctypes.c_void_p:
        if self._handle is None:
            raise KilnRuntimeError(f"model {self.path} is closed")
        return self._handle

    @property
    def profiling(self) -> bool:
        """Whether the library was compiled with profiling (per-kernel timers)."""
        return self._library.profiling

    def kernel_info(self) -> list[KernelInfo]:
        """The plan's kernel calls in order, with their static FLOPs and bytes ([] when the
        library was compiled without profiling)."""
        return self._library.kernels

    def profile(self) -> ProfileCounters:
        """Per-kernel calls and time, and whole-run totals, since creation or the last reset."""
        return self._library.counters(self._open_handle())

    def trace_events(self) -> list[TraceEvent]:
        """The instance's trace events since creation or the last reset, oldest first; it keeps
        the newest ``abi.PROFILE_TRACE_EVENTS``."""
        return self._library.trace(self._open_handle())

    def reset_profile(self) -> None:
        """Zero the counters and empty the trace."""
        self._library.reset_profile(self._open_handle())

    def run(self, inputs: Mapping[str, Any]) -> list[np.ndarray]:
        """Run the model on ``{input name: array}``; returns fresh arrays, one per output."""
        handle = self._open_handle()
        arrays = self._exact_inputs(inputs)
        if arrays is None:
            arrays = self._check_inputs(inputs)
        if not self.is_static:
            key = tuple([a.shape for a in arrays])
            last, signature = self._last
            if key != last or signature is None:
                signature = self._signature(key)
                self._last = key, signature
            if signature.complete:
                outputs = [np.empty(shape, dtype) for shape, dtype in signature.allocations]
                self._library.run_shaped(handle, self._in_ptrs(*map(_address, arrays)),
                                         signature.pointers,
                                         self._out_ptrs(*map(_address, outputs)))
                return outputs
            return self._run_partial(handle, arrays, signature)
        outputs = [np.empty(info.shape, info.dtype) for info in self.outputs]
        # fresh pointer arrays per call: a concurrent call on this instance (refused as busy by
        # the native side) must not overwrite the pointers of the run in progress
        in_ptrs = self._in_ptrs(*map(_address, arrays))
        out_ptrs = self._out_ptrs(*map(_address, outputs))
        self._library.run(handle, in_ptrs, out_ptrs)
        return outputs

    def infer_shapes(self, shapes: Mapping[str, Any]) -> list[tuple[int | None, ...]]:
        """The output shapes that ``{input name: shape}`` implies, without running; None for
        an extent that depends on input values."""
        key = tuple(tuple(int(d) for d in shape) for shape in self._check_names(shapes))
        self._check_ranks(key)
        return list(self._signature(key).outputs)

    def _signature(self, key: tuple[tuple[int, ...], ...]) -> _Signature:
        """The shape arrays and output shapes of one combination of input shapes (checked by
        the native side once, then cached)."""
        found = self._signatures.get(key)
        if found is None:
            rows = [(ctypes.c_int64 * max(len(shape), 1))(*shape) for shape in key]
            pointers = self._shape_ptrs(*[ctypes.cast(row, ctypes.POINTER(ctypes.c_int64))
                                          for row in rows])
            outputs = self._library.infer_shapes(pointers,
                                                 [len(info.shape) for info in self.outputs])
            if len(self._signatures) >= _SIGNATURES:
                self._signatures.clear()
            allocations = tuple(None if None in shape else (shape, info.dtype)
                                for shape, info in zip(outputs, self.outputs, strict=True))
            found = self._signatures[key] = _Signature(rows, pointers, tuple(outputs),
                                                       allocations)
        return found

    def _run_partial(self, handle: ctypes.c_void_p, arrays: list[np.ndarray],
                     signature: _Signature) -> list[np.ndarray]:
        """A run where some outputs' shapes depend on values: those are copied out of the
        instance after the run, the others go straight to fresh arrays."""
        outputs = [None if alloc is None else np.empty(*alloc) for alloc in signature.allocations]
        in_ptrs = self._in_ptrs(*map(_address, arrays))
        out_ptrs = self._out_ptrs(*[None if out is None else _address(out) for out in outputs])
        self._library.run_shaped(handle, in_ptrs, signature.pointers, out_ptrs)
        results = []
        for index, (info, out) in enumerate(zip(self.outputs, outputs, strict=True)):
            if out is None:
                address, shape = self._library.output(handle, index, len(info.shape))
                out = np.empty(shape, info.dtype)
                if out.nbytes:
                    ctypes.memmove(out.ctypes.data, address, out.nbytes)
            results.append(out)
        return results

    def _exact_inputs(self, inputs: Mapping[str, Any]) -> list[np.ndarray] | None:
        """The inputs as they are when each is a C-contiguous ndarray of the exact dtype and
        shape and no other name is given; None sends the call through the full checks."""
        if len(inputs) != len(self._exact):
            return None
        arrays = []
        for name, dtype, shape in self._exact:
            array = inputs.get(name)
            # run-time extents are checked once per combination of shapes (``_signature``)
            if (type(array) is not np.ndarray or array.dtype != dtype
                    or not array.flags.c_contiguous or (
                        array.shape != shape if self.is_static else array.ndim != len(shape))):
                return None
            arrays.append(array)
        return arrays

    def _check_inputs(self, inputs: Mapping[str, Any]) -> list[np.ndarray]:
        arrays = [np.asarray(value) for value in self._check_names(inputs)]
        for index, (info, code) in enumerate(zip(self.inputs, self._input_codes, strict=True)):
            if not _accepts(info.dtype, code, arrays[index].dtype):
                raise KilnRuntimeError(
                    f"input '{info.name}': expected dtype {_expected_dtype(info, code)}, got "
                    f"{arrays[index].dtype}")
        self._check_ranks([a.shape for a in arrays])
        return [np.ascontiguousarray(a) for a in arrays]

    def _check_names(self, inputs: Mapping[str, Any]) -> list[Any]:
        """The values of ``inputs`` in input order; raises for a missing or unknown name."""
        expected_names = [info.name for info in self.inputs]
        missing = [name for name in expected_names if name not in inputs]
        unexpected = sorted(str(name) for name in inputs if name not in expected_names)
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if unexpected:
                parts.append(f"unexpected {unexpected}")
            raise KilnRuntimeError(
                f"wrong input names: {'; '.join(parts)}; the model takes {expected_names}")
        return [inputs[name] for name in expected_names]

    def _check_ranks(self, shapes: Sequence[tuple[int, ...]]) -> None:
        """Ranks and static extents of the input shapes (the native side checks the run-time
        ones)."""
        for info, shape in zip(self.inputs, shapes, strict=True):
            if len(shape) != len(info.shape) or any(
                    d is not None and d != n for d, n in zip(info.shape, shape, strict=True)):
                expected = tuple("?" if d is None else d for d in info.shape)
                raise KilnRuntimeError(
                    f"input '{info.name}': expected shape "
                    f"({', '.join(map(str, expected))}{',' if len(expected) == 1 else ''}), "
                    f"got {shape}")


# Input shape combinations a Model keeps checked (beyond it the cache starts over).
_SIGNATURES = 256


@dataclass(frozen=True)
class _Signature:
    rows: list[ctypes.Array]  # type: ignore[type-arg]  # the shapes the pointers point to
    pointers: ctypes.Array  # type: ignore[type-arg]
    outputs: tuple[tuple[int | None, ...], ...]  # None: an extent that depends on values
    allocations: tuple[tuple[tuple[int, ...], np.dtype] | None, ...]  # None: read after the run

    @property
    def complete(self) -> bool:
        """Every output's shape follows from the input shapes."""
        return None not in self.allocations


def _address(array: np.ndarray) -> int:
    """The address of a contiguous ``array``'s data: through ``from_buffer`` (a third of
    ``ndarray.ctypes``' cost, which matters at batch 1) where the array is writable, not empty
    and of a numpy-native dtype (the buffer protocol cannot export ml_dtypes' types), else
    ``ndarray.ctypes.data``."""
    if array.flags.writeable and array.nbytes and array.dtype.isbuiltin == 1:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    return array.ctypes.data
