"""Index helpers shared by the lowerings: broadcasting and loop nests over a shape."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from ...ir.types import DType
from ..kernel_ir import Buffer, Const, Expr, Loop, LoopKind, Stmt, Var, loop_nest


def broadcast_index(out_vars: Sequence[Expr], source: Buffer) -> list[Expr]:
    """Indices into ``source`` for the output position ``out_vars`` under numpy broadcasting:
    trailing axes align, an axis of extent 1 is read at 0."""
    offset = len(out_vars) - len(source.shape)
    return [
        Const(0, DType.I64) if extent == 1 else out_vars[offset + axis]
        for axis, extent in enumerate(source.shape)
    ]


def over(
    shape: Sequence[int],
    make_body: Callable[[list[Var]], Stmt],
    prefix: str = "i",
    parallel_outer: bool = False,
) -> Stmt:
    """A loop nest over every position of ``shape`` (the outermost loop parallel if asked)."""
    nest = loop_nest([f"{prefix}{axis}" for axis in range(len(shape))], shape, make_body)
    if parallel_outer and isinstance(nest, Loop):
        nest = replace(nest, kind=LoopKind.PARALLEL)
    return nest
