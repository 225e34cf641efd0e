"""Carried scalar functions run on numpy arrays in this process: the reference kernel of the
custom elementwise op and the kernel-IR interpreter's ``Call`` both use ``run_external``.

Around the function a small loop ``void run(ptr out, ptr in_0, ..., i64 n)`` (``out[i] =
f(in_0[i], ...)`` on contiguous arrays) is built, linked with the function as compiled kernels
link it (external.py), and compiled by LLVM's MCJIT once per function.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from ...lower.kernel_ir import ExternalFunction
from ..target import Target
from .compile import create_module, optimize
from .expr import load_value, storage_type, store_value, value_type
from .external import declare_external

_PTR = ir.PointerType()
_I64 = ir.IntType(64)


@dataclass(frozen=True)
class _Compiled:
    engine: llvm.ExecutionEngine  # owns the code ``run`` points into
    run: Callable[..., None]


@functools.lru_cache(maxsize=64)
def _compile(function: ExternalFunction) -> _Compiled:
    target = Target.parse("host")
    module = create_module(f"reference.{function.name}", target)
    callee = declare_external(module, function, ir.FunctionType(
        value_type(function.result), [value_type(a) for a in function.args]))
    run = ir.Function(module, ir.FunctionType(ir.VoidType(), [_PTR] * (len(function.args) + 1)
                                              + [_I64]), "run")
    out, *inputs, count = run.args
    entry = run.append_basic_block("entry")
    body = run.append_basic_block("body")
    done = run.append_basic_block("done")
    b = ir.IRBuilder(entry)
    b.cbranch(b.icmp_signed(">", count, _I64(0)), body, done)
    b.position_at_end(body)
    index = b.phi(_I64)
    index.add_incoming(_I64(0), entry)
    args = [load_value(b, b.gep(pointer, [index], source_etype=storage_type(dtype)), dtype)
            for pointer, dtype in zip(inputs, function.args, strict=True)]
    result = b.call(callee, args)
    store_value(b, result, b.gep(out, [index], source_etype=storage_type(function.result)),
                function.result)
    following = b.add(index, _I64(1))
    index.add_incoming(following, body)
    b.cbranch(b.icmp_signed("<", following, count), body, done)
    b.position_at_end(done)
    b.ret_void()
    engine = llvm.create_mcjit_compiler(optimize(module, target, 2), target.target_machine(2))
    engine.finalize_object()
    signature = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * (len(function.args) + 1),
                                 ctypes.c_int64)
    return _Compiled(engine, signature(engine.get_function_address("run")))


def run_external(function: ExternalFunction, operands: Sequence[np.ndarray]) -> np.ndarray:
    """``function`` applied to the numpy-broadcast ``operands`` (each taken as the type the
    function expects)."""
    arrays = [np.asarray(a, dtype=t.numpy, order="C")
              for a, t in zip(np.broadcast_arrays(*operands), function.args, strict=True)]
    shape = arrays[0].shape if arrays else ()
    out = np.empty(shape, function.result.numpy)
    if out.size:
        _compile(function).run(out.ctypes.data, *(a.ctypes.data for a in arrays), out.size)
    return out
