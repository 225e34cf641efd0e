"""The LLVM backend for CPU targets: kernel IR -> LLVM IR (llvmlite IRBuilder) -> object code.

- ``emit_kernel(module, kernel, target)`` defines one kernel function (``kernel.py``), with
  expressions in ``expr.py``, vectorizable math in ``math.py``, f16 / bf16 conversions in
  ``half.py``, parallel-loop outlining in ``parallel.py`` and the scalar functions carried as
  LLVM IR (custom elementwise ops) in ``external.py``.
- ``compile.py`` verifies, optimizes and emits object code or assembly.
"""

from .compile import (
    assembly,
    create_module,
    emit_assembly,
    emit_object,
    optimize,
    optimize_and_emit,
    optimized_ir,
    parse,
)
from .kernel import emit_kernel, message_constant

__all__ = [
    "assembly",
    "create_module",
    "emit_assembly",
    "emit_kernel",
    "emit_object",
    "message_constant",
    "optimize",
    "optimize_and_emit",
    "optimized_ir",
    "parse",
]
