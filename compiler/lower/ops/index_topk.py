"""Lowering of TopK: a selection loop per row, k passes of one scan each.

Elements are ordered by (value, then lower index first), descending values for ``largest``;
NaN counts as larger than every number, as in the reference's stable argsort. That order is
strict and total, so pass ``t`` picks the best element strictly after the one pass ``t - 1``
picked: O(k * n) per row, no scratch, and ties resolve exactly like the reference. The output
is always sorted (ONNX leaves the order free when ``sorted=0``; the reference sorts). A K known
only at run time is read and checked by a first kernel that sizes the outputs.
"""

from __future__ import annotations

from ...ir.op import Op
from ...ir.shapes import normalize_axis
from ..kernel_ir import (
    Assign,
    Declare,
    Expr,
    If,
    Kernel,
    Loop,
    Report,
    Stmt,
    Var,
    as_index,
    binary,
    block,
)
from ..registry import LowerContext, lowering
from .common import const, idx
from .index_common import (
    all_static,
    define_outputs,
    equal,
    greater,
    read_scalar,
    shape_kernel,
)
from .movement_loops import logical, loops, numel


def _before(largest: bool, a: Expr, ai: Expr, b: Expr, bi: Expr) -> Expr:
    """True when (a, index ai) comes before (b, index bi) in the output order."""
    ahead = greater(a, b) if largest else greater(b, a)
    return logical("or", [ahead, logical("and", [equal(a, b), ai < bi])])


@lowering(Op.TOPK)
def lower_topk(ctx: LowerContext) -> list[Kernel]:
    data = ctx.input(0)
    values = ctx.outputs[0]
    indices = ctx.outputs[1] if len(ctx.outputs) > 1 else None
    shape = values.shape if values is not None else indices.shape if indices is not None else None
    if shape is None:
        return []
    axis = normalize_axis(ctx.attr("axis"), len(data.shape))
    n, k = data.shape[axis], shape[axis]
    largest = bool(ctx.attr("largest"))
    outer = [e for a, e in enumerate(data.shape) if a != axis]
    prev_i, prev_v = Var("prev_i"), Var("prev_v", data.dtype)
    best_i, best_v = Var("best_i"), Var("best_v", data.dtype)
    t, j = Var("t"), Var("j")
    kernels: list[Kernel] = []
    if ctx.undefined_dims:
        # K known only at run time: a first kernel checks it and sizes both outputs.
        given, read = read_scalar(ctx, 1, "k")
        bad = If(logical("or", [given < 0, given > n]), Report(
            f"{ctx.node.describe()}: K is outside [0, the extent of axis {axis}]"))
        clamped = binary("max", binary("min", given, as_index(n)), 0)
        kernels.append(shape_kernel(ctx, [read, bad, *define_outputs(ctx, lambda o, a: clamped)],
                                    [ctx.input(1)]))

    def row(v: list[Expr]) -> Stmt:
        def at(position: Expr) -> list[Expr]:
            return [*v[:axis], position, *v[axis:]]

        candidate = Var("cand", data.dtype)
        after_prev = logical("or", [prev_i < 0, _before(largest, prev_v, prev_i, candidate, j)])
        better = logical("or", [best_i < 0, _before(largest, candidate, j, best_v, best_i)])
        scan = Loop(j, as_index(n), block(
            Declare(candidate, data.load(*at(j))),
            If(logical("and", [after_prev, better]),
               block(Assign(best_i, j), Assign(best_v, candidate))),
        ))
        stores: list[Stmt] = []
        if values is not None:
            stores.append(values.store(at(t), best_v))
        if indices is not None:
            stores.append(indices.store(at(t), best_i))
        select_pass = Loop(t, as_index(k), block(
            Declare(best_i, idx(-1)), Declare(best_v, const(0, data.dtype)), scan, stores,
            Assign(prev_i, best_i), Assign(prev_v, best_v),
        ))
        return block(Declare(prev_i, idx(-1)), Declare(prev_v, const(0, data.dtype)),
                      select_pass)

    if isinstance(k, int) and k == 0:
        return [*kernels, ctx.kernel(block())]
    static = isinstance(n, int) and isinstance(k, int)
    work = max(1, n) * k * numel(outer) if static and all_static(outer) else None
    return [*kernels, ctx.kernel(loops(outer, row, "r", work=work, vectorize=False))]
