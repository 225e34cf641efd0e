"""Kiln's compiler: the graph IR, the numpy reference executor, passes, lowering and codegen.

Nothing here imports ONNX or any frontend; frontends produce ``kiln.compiler.ir.graph.Graph``.
``from kiln.compiler import build`` compiles a graph (``build_bundle``: into a static bundle for
a board); they are imported lazily so that using only the IR or the reference executor does not
load LLVM.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("build", "Executable", "build_bundle", "Bundle"):
        from . import driver

        return getattr(driver, name)
    raise AttributeError(f"module 'kiln.compiler' has no attribute {name!r}")
