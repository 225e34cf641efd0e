"""LLVM module -> verified, optimized module -> object code / assembly for a ``Target``.

Optimization uses LLVM's new pass manager with the default per-module pipeline of the opt level
(0-3); loop and SLP vectorization are on at 2 and above. Every module is verified after parsing
and again after optimization, so a codegen bug surfaces as a ``CodegenError`` naming the module
and LLVM's message rather than as a miscompile.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir

from ..target import CodegenError, Target, initialize_llvm
from .external import link_external


def create_module(name: str, target: Target) -> ir.Module:
    """An empty IR module for ``target`` (triple and data layout set)."""
    module = ir.Module(name=name)
    module.triple = target.triple
    module.data_layout = target.data_layout
    return module


def parse(module: ir.Module | str, target: Target) -> llvm.ModuleRef:
    """Parse and verify ``module`` (IR builder module or LLVM assembly text); the scalar
    functions a builder module's kernels call (``external.py``) are linked in."""
    initialize_llvm()
    text = str(module)
    try:
        ref = llvm.parse_assembly(text)
        if isinstance(module, ir.Module):
            link_external(module, ref)
        ref.verify()
    except RuntimeError as error:
        raise CodegenError(f"LLVM rejected the generated module: {error}") from None
    ref.triple = target.triple
    ref.data_layout = target.data_layout
    return ref


def optimize(module: ir.Module | str, target: Target, opt_level: int = 2) -> llvm.ModuleRef:
    """Parse, verify, optimize at ``opt_level`` (0-3) and verify again."""
    if not 0 <= opt_level <= 3:
        raise CodegenError(f"opt level must be 0, 1, 2 or 3, got {opt_level}")
    ref = parse(module, target)
    if opt_level > 0:
        tuning = llvm.PipelineTuningOptions(speed_level=opt_level)
        tuning.loop_vectorization = opt_level >= 2
        tuning.slp_vectorization = opt_level >= 2
        tuning.loop_unrolling = opt_level >= 2
        tuning.loop_interleaving = opt_level >= 2
        builder = llvm.create_pass_builder(target.target_machine(opt_level), tuning)
        builder.getModulePassManager().run(ref, builder)
        try:
            ref.verify()
        except RuntimeError as error:
            raise CodegenError(f"module invalid after optimization: {error}") from None
    return ref


def optimized_ir(module: ir.Module | str, target: Target, opt_level: int = 2) -> str:
    """The optimized module as LLVM assembly text (for ``--dump``)."""
    return str(optimize(module, target, opt_level))


def emit_object(ref: llvm.ModuleRef, target: Target, opt_level: int = 2) -> bytes:
    """Object code (ELF for the Linux targets) of an optimized module."""
    return bytes(target.target_machine(opt_level).emit_object(ref))


def emit_assembly(ref: llvm.ModuleRef, target: Target, opt_level: int = 2) -> str:
    return str(target.target_machine(opt_level).emit_assembly(ref))


def optimize_and_emit(module: ir.Module | str, target: Target, opt_level: int = 2) -> bytes:
    """Verify, optimize and compile ``module`` to object code for ``target``."""
    return emit_object(optimize(module, target, opt_level), target, opt_level)


def assembly(module: ir.Module | str, target: Target, opt_level: int = 2) -> str:
    """Verify, optimize and compile ``module`` to assembly text for ``target``."""
    return emit_assembly(optimize(module, target, opt_level), target, opt_level)
