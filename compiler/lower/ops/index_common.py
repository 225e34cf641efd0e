"""Index checks shared by the gather and scatter lowerings."""

from __future__ import annotations

from ..kernel_ir import Buffer, Expr, Kernel, Report, Stmt
from ..registry import LowerContext
from .common import idx
from .movement_loops import checked_index, numel


def out_of_range(ctx: LowerContext, extent: int, what: str = "index") -> str:
    return f"{ctx.node.describe()}: an {what} is out of range [-{extent}, {extent})"


def empty_axis_kernel(ctx: LowerContext, extent: int, what: str = "index") -> list[Kernel]:
    """Indices into an empty axis are all out of range: the kernel only reports."""
    return [ctx.kernel(Report(out_of_range(ctx, extent, what)))]


def check_extents(ctx: LowerContext, data: Buffer, indices: Buffer, axis: int) -> None:
    """GatherElements / ScatterElements indices may not exceed data off the axis."""
    for d, (i, s) in enumerate(zip(indices.shape, data.shape, strict=True)):
        if d != axis and i > s:
            raise ctx.fail(f"indices {list(indices.shape)} exceed data {list(data.shape)} "
                           f"along axis {d}")


def nd_positions(ctx: LowerContext, data: Buffer, indices: Buffer, head: list[Expr],
                 batch_dims: int) -> tuple[list[Stmt], list[Expr]]:
    """Checked data indices of the k-tuple ``indices[*head, :]`` (after ``batch_dims``)."""
    k = indices.shape[-1]
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
    """True when some index tuple exists but an indexed axis of data is empty."""
    k = indices.shape[-1]
    return numel(indices.shape[:-1]) > 0 and 0 in data.shape[batch_dims:batch_dims + k]
