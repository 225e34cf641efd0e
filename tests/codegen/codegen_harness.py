"""Compile kernels to a host shared library and run them through ctypes.

``compile_kernels(kernels)`` emits every kernel into one module (exported), verifies and
optimizes it, writes the object file, links it with ``test_runtime.c`` (a threaded stand-in for
the Kiln runtime: parallel_for really splits ranges across threads) and loads the library.
``CompiledKernels.run(kernel, arrays)`` then runs one kernel like ``interpret.run_kernel``.
"""

from __future__ import annotations

import ctypes
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import ml_dtypes
import numpy as np

from kiln.compiler.codegen import Target, create_module, emit_kernel, optimize, parse
from kiln.compiler.codegen.llvm import emit_object
from kiln.compiler.errors import ExecutionError
from kiln.compiler.ir.types import DType
from kiln.compiler.lower.kernel_ir import Buffer, Kernel

HERE = Path(__file__).parent
_WORK = Path(tempfile.mkdtemp(prefix="kiln-codegen-tests-"))


@cache
def host() -> Target:
    return Target.parse("host")


@cache
def _runtime_object() -> Path:
    out = _WORK / "test_runtime.o"
    subprocess.run(["cc", "-O2", "-fPIC", "-c", str(HERE / "test_runtime.c"), "-o", str(out)],
                   check=True)
    return out


class CompiledKernels:
    """A loaded library of compiled kernels."""

    def __init__(self, library: ctypes.CDLL, ir_text: str) -> None:
        self.library = library
        self.ir_text = ir_text
        library.kiln_test_ctx_size.restype = ctypes.c_int64

    def run(self, kernel: Kernel, arrays: Mapping[str, np.ndarray], chunks: int = 3,
            ) -> dict[str, np.ndarray]:
        """Run ``kernel`` on ``arrays`` (inputs by buffer name); outputs by name. A reported
        error raises ExecutionError with the kernel's message, like ``run_kernel``."""
        memory: dict[str, np.ndarray] = {}
        views: dict[str, np.ndarray] = {}
        for buffer in kernel.params:
            if buffer.name not in memory:
                memory[buffer.name], views[buffer.name] = _allocate(buffer)
        for buffer in kernel.inputs:
            views[buffer.name][...] = np.asarray(arrays[buffer.name], buffer.dtype.numpy)
        ctx = ctypes.create_string_buffer(int(self.library.kiln_test_ctx_size()))
        self.library.kiln_test_ctx_init(ctx, ctypes.c_int32(chunks))
        pointers = [ctypes.c_void_p(memory[b.name].ctypes.data) for b in kernel.params]
        getattr(self.library, kernel.name)(*pointers, ctx)
        failed = int(self.library.kiln__failed(ctx))
        if failed:
            message = ctx.raw[16:16 + 256].split(b"\0", 1)[0].decode()
            raise ExecutionError(f"kernel {kernel.name}: {message}")
        return {b.name: views[b.name].copy() for b in kernel.outputs}

    def parallel_calls(self, kernel: Kernel, arrays: Mapping[str, np.ndarray]) -> int:
        """How many kiln__parallel_for calls one run of ``kernel`` makes."""
        ctx = ctypes.create_string_buffer(int(self.library.kiln_test_ctx_size()))
        self.library.kiln_test_ctx_init(ctx, ctypes.c_int32(2))
        memory = {b.name: np.ascontiguousarray(arrays.get(b.name, np.zeros(b.shape,
                                               b.dtype.numpy)), dtype=b.dtype.numpy).copy()
                  for b in kernel.params}
        getattr(self.library, kernel.name)(*[ctypes.c_void_p(memory[b.name].ctypes.data)
                                             for b in kernel.params], ctx)
        return int.from_bytes(ctx.raw[8:16], "little")


def _allocate(buffer: Buffer) -> tuple[np.ndarray, np.ndarray]:
    """Flat memory for ``buffer`` and the logical view of it its element strides define."""
    strides = buffer.element_strides
    span = 1 + sum((n - 1) * s for n, s in zip(buffer.shape, strides, strict=True)) if all(
        buffer.shape) else 0
    flat = np.zeros(max(span, 1), buffer.dtype.numpy)
    view = np.lib.stride_tricks.as_strided(
        flat, buffer.shape, tuple(s * flat.itemsize for s in strides))
    return flat, view


_counter = [0]


def compile_kernels(kernels: Sequence[Kernel], opt_level: int = 2,
                    target: Target | None = None) -> CompiledKernels:
    """Emit, verify, optimize and link ``kernels`` into one host library."""
    target = target or host()
    module = create_module("kernels", target)
    for kernel in kernels:
        emit_kernel(module, kernel, target, export=True)
    parse(module, target)  # verified before optimization as well
    ref = optimize(module, target, opt_level)
    _counter[0] += 1
    stem = _WORK / f"kernels{_counter[0]}"
    stem.with_suffix(".o").write_bytes(emit_object(ref, target, opt_level))
    library = stem.with_suffix(".so")
    subprocess.run(["cc", "-shared", "-o", str(library), str(stem.with_suffix(".o")),
                    str(_runtime_object()), "-lm", "-lpthread"], check=True)
    return CompiledKernels(ctypes.CDLL(str(library)), str(ref))


def ulp_error(got: np.ndarray, exact: np.ndarray, dtype: DType) -> np.ndarray:
    """|got - exact| in ulps of ``dtype`` at ``exact`` (non-finite results must match)."""
    info = ml_dtypes.finfo(dtype.numpy)
    exact = np.asarray(exact, np.longdouble)
    got = np.asarray(got).astype(np.float64).astype(np.longdouble)
    finite = np.isfinite(exact) & (np.abs(exact) <= float(info.max))
    with np.errstate(over="ignore"):
        rounded = exact.astype(np.float64).astype(dtype.numpy).astype(np.longdouble)
    error = np.zeros(got.shape)
    mismatch = ~finite & ~((np.isnan(exact) & np.isnan(got)) | (rounded == got))
    error[mismatch] = np.inf
    with np.errstate(all="ignore"):
        exponent = np.floor(np.log2(np.abs(exact[finite])))
    exponent = np.maximum(exponent, info.minexp)
    spacing = np.exp2(exponent - info.nmant).astype(np.longdouble)
    error[finite] = np.asarray(np.abs(got[finite] - exact[finite]) / spacing, np.float64)
    return error
