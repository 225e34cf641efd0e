"""Loop structure shared by the reduce lowerings: a nest over the slices of the data (the
positions of the axes not reduced), loops along a slice's axes, and folds into scalar locals."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..kernel_ir import Assign, Declare, Expr, Loop, LoopKind, Stmt, Var, as_index
from ..registry import LowerContext
from .common import Extent, product
from .elementwise_scalar import loop_over

# The position of a slice in the data: an index per kept axis, None for the axes it spans.
Position = Sequence[Expr | None]


def over_slices(shape: Sequence[Extent], spanned: Sequence[int],
                make: Callable[[Position], Stmt]) -> Stmt:
    """A loop nest over every slice spanning the axes ``spanned`` of ``shape`` (parallel when
    the data is large); ``make`` builds the statements of one slice."""
    kept = [axis for axis in range(len(shape)) if axis not in spanned]
    work = product(shape)

    def body(index: list[Expr]) -> Stmt:
        position: list[Expr | None] = [None] * len(shape)
        for axis, var in zip(kept, index, strict=True):
            position[axis] = var
        return make(position)

    return loop_over([shape[axis] for axis in kept], body, "o", work, vectorize=False)


def along(name: str, shape: Sequence[Extent], position: Position,
          make: Callable[[list[Expr]], Stmt], vectorize: bool = False) -> Stmt:
    """Loops over the spanned axes of one slice; ``make`` gets the full data index. The
    innermost loop is VECTORIZE when ``vectorize`` (no dependence between positions)."""
    spanned = [axis for axis, p in enumerate(position) if p is None]
    loop_vars = {axis: Var(f"{name}{axis}") for axis in spanned}
    index: list[Expr] = [loop_vars[a] if p is None else p for a, p in enumerate(position)]
    body = make(index)
    for axis in reversed(spanned):
        kind = LoopKind.VECTORIZE if vectorize and axis == spanned[-1] else LoopKind.SERIAL
        body = Loop(loop_vars[axis], as_index(shape[axis]), body, kind)
    return body


def accumulate(name: str, shape: Sequence[Extent], position: Position, init: Expr,
               step: Callable[[Expr, list[Expr]], Expr]) -> tuple[list[Stmt], Var]:
    """Statements folding one slice into a local ``name`` (starting at ``init``, updated to
    ``step(acc, data index)`` at each position), and that local."""
    acc = Var(name, init.dtype)
    return [Declare(acc, init),
            along(name, shape, position, lambda index: Assign(acc, step(acc, index)))], acc


def at(position: Position, axis: int, index: Expr | int) -> list[Expr | int]:
    """``position`` with ``index`` on ``axis`` (the slice's one spanned axis)."""
    return [index if a == axis else p for a, p in enumerate(position)]  # type: ignore[misc]


def normalized_axis(ctx: LowerContext, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ctx.fail(f"axis {axis} is out of range for rank {rank}")
    return axis % rank
