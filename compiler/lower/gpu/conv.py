"""GPU schedule of Conv: an implicit GEMM on the tiled product of compiler/lower/gpu/matmul.py.

Per image n and group g: Y[n, g, m, o] = sum over q of W[g, m, q] * X'[n, g, q, o], where m is
an output channel of the group, o an output position (flattened), q = (input channel of the
group, tap) and X' the input patch element (zero in the padding) - read straight from X when
the B tile is loaded into shared memory, never materialized. Strides, padding, dilation, groups
(depthwise included: a product with one row), 1 to 3 spatial axes, and the bias (added when the
result is stored). f32 only (other types: the CPU lowering, bound generically).
"""

from __future__ import annotations

from ...ir.types import DType
from ..kernel_ir import Block, Expr, Kernel, Stmt, unravel
from ..ops.nn_common import all_of
from ..ops.nn_conv import forward_window
from ..registry import LowerContext
from .matmul import Element, Product, product_kernel


def conv_gpu(ctx: LowerContext) -> list[Kernel] | None:
    x, w, out = ctx.input(0), ctx.input(1), ctx.output()
    bias = ctx.input(2) if ctx.has_input(2) else None
    if any(b.dtype is not DType.F32 for b in (x, w, out, *([] if bias is None else [bias]))):
        return None
    if not 1 <= len(x.shape) - 2 <= 3 or out.numel == 0 or w.numel == 0:
        return None
    win = forward_window(ctx, x, w)
    group = int(ctx.attr("group"))
    batch, channels_out = out.shape[:2]
    per_in, per_out = x.shape[1] // group, channels_out // group
    outs, ins = out.shape[2:], x.shape[2:]
    rank = len(outs)
    reduced = (per_in, *win.kernel)
    positions = 1
    for extent in outs:
        positions *= extent
    contraction = 1
    for extent in reduced:
        contraction *= extent

    def a_at(bt: list[Expr], m: Expr, q: Expr) -> Element:
        c, *taps = unravel(q, reduced)
        return w.load(bt[1] * per_out + m, c, *taps), None

    def b_at(bt: list[Expr], q: Expr, j: Expr) -> Element:
        c, *taps = unravel(q, reduced)
        at = unravel(j, outs)
        pos: list[Expr] = []
        checks: list[Expr | None] = []
        for d in range(rank):
            begin = win.pads[d]
            p = at[d] * win.strides[d] + taps[d] * win.dilations[d] - begin
            pos.append(p)
            # only the bounds the padding can cross are checked
            last = (outs[d] - 1) * win.strides[d] + (win.kernel[d] - 1) * win.dilations[d]
            checks += [p >= 0 if begin > 0 else None, p < ins[d] if last - begin >= ins[d]
                       else None]
        return x.load(bt[0], bt[1] * per_in + c, *pos), all_of(checks)

    def finish(bt: list[Expr], m: Expr, j: Expr, value: Expr) -> Stmt:
        channel = bt[1] * per_out + m
        if bias is not None:
            value = value + bias.load(channel)
        return out.store([bt[0], channel, *unravel(j, outs)], value)

    product = Product((batch, group), per_out, positions, contraction, a_at, b_at, finish,
                      DType.F32)
    inputs = [x, w, *([] if bias is None else [bias])]
    return [product_kernel(ctx.kernel(Block(()), inputs=inputs), product)]
