"""Numpy kernel of FUSED: run the body graph (the fused group's original ops) as it is."""

from __future__ import annotations

import numpy as np

from ...ir.graph import Graph
from ...ir.op import Op
from .registry import KernelContext, kernel


@kernel(Op.FUSED)
def fused(ctx: KernelContext, *inputs: np.ndarray) -> tuple[np.ndarray, ...]:
    body: Graph = ctx.attr("body")
    return tuple(ctx.run_subgraph(body, list(inputs)))
