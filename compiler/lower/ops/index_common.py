"""Helpers shared by the index lowerings: index checks, the value order of sorting ops, and the
definition of value-dependent output extents.

Extents may be known only at run time (an ``Expr`` over the run's ``DIMS``). Where an indexed
axis may then be empty, the whole nest is guarded (``guard_empty``) so that a reported bad index
never touches memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ...ir.types import DType
from ..kernel_ir import (
    Block,
    Buffer,
    Const,
    Declare,
    Expr,
    ExprLike,
    If,
    Kernel,
    Report,
    Stmt,
    Unary,
    Var,
    as_index,
    binary,
    block,
    define_dim,
)
from ..registry import LowerContext
from .common import idx
from .movement_loops import checked_index, logical, numel

Extent = int | Expr


def out_of_range(ctx: LowerContext, extent: Extent, what: str = "index") -> str:
    if isinstance(extent, int):
        return f"{ctx.node.describe()}: an {what} is out of range [-{extent}, {extent})"
    return (f"{ctx.node.describe()}: an {what} is out of range [-extent, extent) of the indexed "
            "axis (an extent known at run time)")


def empty_axis_kernel(ctx: LowerContext, extent: int, what: str = "index") -> list[Kernel]:
    """Indices into an empty axis are all out of range: the kernel only reports."""
    return [ctx.kernel(Report(out_of_range(ctx, extent, what)))]


def all_static(extents: Sequence[Extent]) -> bool:
    return all(isinstance(e, int) for e in extents)


def smaller(a: Extent, b: Extent) -> Extent:
    """min(a, b) of two extents."""
    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    return binary("min", as_index(a), as_index(b))


def guard_empty(ctx: LowerContext, extents: Sequence[Extent], items: Extent, nest: Stmt,
                what: str = "index") -> Stmt:
    """``nest`` (which indexes axes of ``extents``), run only when none of them is empty; when
    one is and there are ``items`` indices to look up, every index is out of range: report."""
    dynamic = [e for e in extents if not isinstance(e, int)]
    if any(isinstance(e, int) and e == 0 for e in extents):
        nonempty: Expr = Const(False, DType.BOOL)
    elif not dynamic:
        return nest
    else:
        nonempty = logical("and", [e > 0 for e in dynamic])
    report: Stmt = Report(f"{ctx.node.describe()}: an {what} is out of range (the indexed "
                          "axis is empty)")
    if not isinstance(items, int):
        report = If(items > 0, report)
    elif items == 0:
        report = Block(())
    return If(nonempty, nest, report)


def check_extents(ctx: LowerContext, data: Buffer, indices: Buffer, axis: int) -> list[Expr]:
    """GatherElements / ScatterElements indices may not exceed data off the axis: raises for
    static extents, returns the conditions (true when violated) to check at run time."""
    violations: list[Expr] = []
    for d, (i, s) in enumerate(zip(indices.shape, data.shape, strict=True)):
        if d == axis or i is s:
            continue
        if isinstance(i, int) and isinstance(s, int):
            if i > s:
                raise ctx.fail(f"indices {list(indices.shape)} exceed data "
                               f"{list(data.shape)} along axis {d}")
        else:
            violations.append(as_index(i) > s)
    return violations


def within_extents(ctx: LowerContext, violations: list[Expr], nest: Stmt) -> Stmt:
    """``nest``, or a report instead when a run-time extent check of ``check_extents`` fails."""
    if not violations:
        return nest
    return If(logical("or", violations),
              Report(f"{ctx.node.describe()}: the indices' shape exceeds the data's shape off "
                     "the indexed axis"), nest)


def nd_positions(ctx: LowerContext, data: Buffer, indices: Buffer, head: list[Expr],
                 batch_dims: int) -> tuple[list[Stmt], list[Expr]]:
    """Checked data indices of the k-tuple ``indices[*head, :]`` (after ``batch_dims``)."""
    k = indices.shape[-1]
    assert isinstance(k, int)
    stmts: list[Stmt] = []
    positions: list[Expr] = []
    for j in range(k):
        extent = data.shape[batch_dims + j]
        check, pos = checked_index(indices.load(*head, idx(j)), extent, f"pos{j}",
                                   out_of_range(ctx, extent, f"index (position {j})"))
        stmts += check
        positions.append(pos)
    return stmts, positions


def nd_empty(data: Buffer, indices: Buffer, batch_dims: int) -> bool:
    """True when some index tuple exists but an indexed axis of data is empty (static)."""
    k = indices.shape[-1]
    assert isinstance(k, int)
    return numel(indices.shape[:-1]) > 0 and 0 in data.shape[batch_dims:batch_dims + k]


def nd_guard(ctx: LowerContext, data: Buffer, indices: Buffer, batch_dims: int,
             nest: Stmt) -> Stmt:
    """``nest`` guarded against run-time empty indexed axes (``guard_empty``)."""
    k = indices.shape[-1]
    assert isinstance(k, int)
    return guard_empty(ctx, data.shape[batch_dims:batch_dims + k],
                       numel(indices.shape[:-1]), nest)


def greater(a: Expr, b: Expr) -> Expr:
    """a > b with NaN above every number."""
    if not a.dtype.is_float:
        return a > b
    return logical("or", [a > b, logical("and", [Unary("isnan", a),
                                                 Unary("not", Unary("isnan", b))])])


def equal(a: Expr, b: Expr) -> Expr:
    """a == b with NaN equal to NaN."""
    if not a.dtype.is_float:
        return a.eq(b)
    return logical("or", [a.eq(b), logical("and", [Unary("isnan", a), Unary("isnan", b)])])


def define_outputs(ctx: LowerContext, value: Callable[[int, int], ExprLike]) -> list[Stmt]:
    """Stores defining the node's value-dependent output extents: axis ``a`` of output ``i``
    gets ``value(i, a)`` (only extents in ``ctx.undefined_dims`` are stored)."""
    stores: list[Stmt] = []
    for i, out in enumerate(ctx.outputs):
        if out is None:
            continue
        for a, extent in enumerate(out.shape):
            if isinstance(extent, Expr) and any(extent is u for u in ctx.undefined_dims):
                stores.append(define_dim(extent, value(i, a)))
    return stores


def read_scalar(ctx: LowerContext, index: int, name: str) -> tuple[Var, Stmt]:
    """Local ``name``: the single element of input ``index`` as i64 (floats truncate)."""
    buffer = ctx.input(index)
    var = Var(name)
    return var, Declare(var, buffer.load(*([idx(0)] * len(buffer.shape))).cast(DType.I64))


def shape_kernel(ctx: LowerContext, stmts: list[Stmt], inputs: Sequence[Buffer],
                 scratch: Sequence[Buffer] = ()) -> Kernel:
    """The first kernel of a node with value-dependent output extents: reads ``inputs``,
    writes scratch and ``DIMS`` only (never an output, whose size it is still computing)."""
    return ctx.kernel(block(stmts), inputs=list(inputs), outputs=[], scratch=list(scratch))
