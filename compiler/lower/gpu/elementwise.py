"""GPU schedule of elementwise ops: one thread per output element over a flat index
(``flat_body``), operands read with numpy broadcasting."""

from __future__ import annotations

from ..kernel_ir import Expr, Kernel, Stmt, unravel
from ..ops.elementwise import elementwise_store
from ..registry import LowerContext
from .bind import flat_body


def elementwise_gpu(ctx: LowerContext) -> list[Kernel]:
    """An elementwise op: out[i] = op(operands at i, broadcast)."""
    out, store = ctx.output(), elementwise_store(ctx)

    def make(flat: Expr) -> Stmt:
        return store(unravel(flat, out.shape))

    return [ctx.kernel(flat_body(out.numel, make))]
