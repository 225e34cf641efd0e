"""The math a GPU has no instruction for: CUDA's libdevice (``__nv_*``), linked when used.

Kiln's own branch-free exp / log / tanh / erf / sigmoid (codegen/llvm/math.py) are plain LLVM
IR and compile for NVPTX as they are. What the CPU backend leaves to libm (sin, cos, ...,
asinh, pow, atan2, and float remainder, which NVPTX would otherwise expand inexactly) calls
libdevice's f64 functions on the GPU: there is no libm to link a PTX module against.
``LibdeviceMath`` is the expression-emitter mixin that emits those calls; ``link_libdevice``
links ``libdevice.10.bc`` into a parsed module that declares any, with its functions made
internal so that optimization keeps only the ones called. The bitcode ships with the CUDA
toolkit (``$KILN_LIBDEVICE``, ``$CUDA_HOME`` / ``$CUDA_PATH``, or /usr/local/cuda).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import llvmlite.binding as llvm
from llvmlite import ir

from ...ir.types import DType
from ..llvm import math as fmath
from ..llvm.expr import ExprEmitter
from ..target import CodegenError

F32 = ir.FloatType()
F64 = ir.DoubleType()
PREFIX = "__nv_"
_BINARY = {"pow": "pow", "atan2": "atan2", "rem": "fmod"}


def libdevice_path() -> Path | None:
    """Where libdevice's bitcode is, if the CUDA toolkit is installed."""
    explicit = os.environ.get("KILN_LIBDEVICE")
    if explicit:
        return Path(explicit)
    roots = [os.environ.get(v) for v in ("CUDA_HOME", "CUDA_PATH")] + ["/usr/local/cuda"]
    for root in filter(None, roots):
        candidate = Path(root) / "nvvm" / "libdevice" / "libdevice.10.bc"
        if candidate.is_file():
            return candidate
    return None


class LibdeviceMath(ExprEmitter):
    """Routes the libm operations of ``ExprEmitter`` to libdevice's f64 functions."""

    def _libdevice(self, name: str, *args: ir.Value) -> ir.Value:
        fn = fmath.declare(self.builder.module, PREFIX + name, F64, [F64] * len(args))
        return self.builder.call(fn, list(args))

    def _wide(self, x: ir.Value) -> ir.Value:
        return self.builder.fpext(x, F64) if x.type == F32 else x

    def _float_unary(self, op: str, x: ir.Value, dtype: DType) -> ir.Value:
        if op in fmath.LIBM_UNARY:
            return self._narrow(self._libdevice(op, self._wide(x)), dtype)
        return super()._float_unary(op, x, dtype)

    def _float_binary(self, op: str, x: ir.Value, y: ir.Value, dtype: DType) -> ir.Value:
        if op in _BINARY:
            result = self._libdevice(_BINARY[op], self._wide(x), self._wide(y))
            # fmod of f32 operands is exact in f64 and representable in f32
            return self._narrow(result, dtype)
        return super()._float_binary(op, x, y, dtype)


@cache
def _bitcode(path: str) -> bytes:
    return Path(path).read_bytes()


def link_libdevice(ref: llvm.ModuleRef) -> None:
    """Link libdevice into ``ref`` if it declares ``__nv_*`` functions (else nothing)."""
    wanted = sorted(f.name for f in ref.functions
                    if f.is_declaration and f.name.startswith(PREFIX))
    if not wanted:
        return
    path = libdevice_path()
    if path is None or not path.is_file():
        raise CodegenError(
            f"{', '.join(w[len(PREFIX):] for w in wanted)} on the GPU need CUDA's libdevice "
            "(libdevice.10.bc), which was not found: install the CUDA toolkit or set "
            "KILN_LIBDEVICE to the file")
    library = llvm.parse_bitcode(_bitcode(str(path)))
    library.triple, library.data_layout = ref.triple, ref.data_layout
    ref.link_in(library)
    for function in ref.functions:
        if function.name.startswith(PREFIX) and not function.is_declaration:
            function.linkage = "internal"
