"""GPU lowering of FUSED nodes (see compiler/lower/ops/fused.py for the CPU one).

- elementwise groups: one thread per output element (``flat_body``) storing every output of
  the group, each the composition of its nodes' scalar expressions.
- groups with an anchor that has a GPU schedule: the anchor's GPU kernel, rewritten as the CPU
  path rewrites its anchor: loads of prologue values become their expressions (inside the
  phase that loads them), and the anchor's single store of its result becomes the stores of
  the epilogue outputs (inside the phase that stores). Where that is not possible (the anchor
  stores its result twice or reads it back, or has no GPU schedule) the group is declined
  (None) and its CPU kernels are bound generically.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np

from ...ir.op import Op
from ..inline import Rewriter, accesses
from ..kernel_ir import (
    Block,
    Expr,
    Kernel,
    Load,
    Stmt,
    Store,
    unravel,
)
from ..ops.fused import FusedGroup
from ..registry import LowerContext
from .bind import flat_body

Schedule = Callable[[LowerContext], list[Kernel] | None]


def fused_gpu(ctx: LowerContext, schedules: Mapping[Op, Schedule]) -> list[Kernel] | None:
    group = FusedGroup.of(ctx)
    kernels = _elementwise(group) if group.anchor is None else _anchored(group, schedules)
    return None if kernels is None else group.with_sources(kernels)


def _elementwise(group: FusedGroup) -> list[Kernel]:
    names = [v.name for v in group.body.outputs]
    shape = group.output_shape()

    def make(flat: Expr) -> Stmt:
        return Block(tuple(group.store_all(names, unravel(flat, shape))))

    return [group.ctx.kernel(flat_body(int(np.prod(shape)), make))]


def _anchored(group: FusedGroup, schedules: Mapping[Op, Schedule]) -> list[Kernel] | None:
    ctx, anchor = group.ctx, group.anchor
    assert anchor is not None
    schedule = schedules.get(anchor.op)
    present = [v for v in anchor.outputs if v is not None]
    if schedule is None or len(present) != 1:
        return None
    result = present[0]
    actx, out = group.anchor_context(result)
    kernels = schedule(actx)
    if kernels is None or actx.scratch_buffers:
        return None
    epilogue = group.downstream_outputs()
    counts = [accesses(k.body, out.name) for k in kernels]
    if epilogue and (sum(s for s, _ in counts) != 1 or sum(n for _, n in counts)):
        return None

    def prologue(load: Load) -> Expr | None:
        return group.prologue(load, result.name)

    def store(s: Store) -> Stmt | None:
        if not epilogue or s.buffer.name != out.name:
            return None
        kept = [s] if result.name in group.outputs else []
        return Block((*kept, *group.store_all(epilogue, s.indices, s.value)))

    rewriter = Rewriter(on_load=prologue, on_store=store)
    outputs = [b for b in ctx.outputs if b is not None]
    made = []
    for kernel in kernels:
        made.append(replace(ctx.kernel(rewriter.stmt(kernel.body), outputs=outputs),
                            shared=kernel.shared, thread_local=kernel.thread_local))
    return made
