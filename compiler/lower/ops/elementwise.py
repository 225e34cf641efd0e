"""Lowerings of the elementwise ops (filled in by its owner)."""

from __future__ import annotations

from ...ir.op import Op
from ..kernel_ir import Binary, Stmt, Var
from ..registry import LowerContext, lowering
from .common import broadcast_index, over


@lowering(Op.ADD)
def lower_add(ctx: LowerContext) -> list:  # type: ignore[type-arg]
    a, b, out = ctx.input(0), ctx.input(1), ctx.output()

    def body(idx: list[Var]) -> Stmt:
        return out.store(idx, Binary("add", a.load(*broadcast_index(idx, a)),
                                     b.load(*broadcast_index(idx, b))))

    return [ctx.kernel(over(out.shape, body, parallel_outer=True))]
