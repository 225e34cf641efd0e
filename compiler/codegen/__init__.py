"""Code generation: ``Target`` descriptions and the LLVM backend for CPU targets.

``from kiln.compiler.codegen import Target, emit_kernel, optimize_and_emit``.
"""

from .llvm import (
    assembly,
    create_module,
    emit_assembly,
    emit_kernel,
    emit_object,
    optimize,
    optimize_and_emit,
    optimized_ir,
    parse,
)
from .target import CodegenError, Target

__all__ = [
    "CodegenError",
    "Target",
    "assembly",
    "create_module",
    "emit_assembly",
    "emit_kernel",
    "emit_object",
    "optimize",
    "optimize_and_emit",
    "optimized_ir",
    "parse",
]
