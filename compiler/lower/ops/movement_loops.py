"""Loop-building blocks shared by the movement, shape and index lowerings.

- ``loops``: a nest over a shape whose outermost non-trivial loop runs in parallel when the
  work is large and whose innermost loop is marked for vectorization; unit axes get no loop.
- ``copy_reshaped``: the copy behind Reshape / Flatten / Squeeze / Unsqueeze: both sides are
  row-major with the same element order, so the loops walk the finest common refinement of
  the two shapes and neither side needs a division (except where no refinement exists, e.g.
  [2,3] -> [3,2], where that segment decomposes a flat index).
- ``checked_index``: an index read from data, wrapped once when negative (ONNX) and clamped
  into range after a ``Report`` when outside ``[-extent, extent)``, so a bad index never
  touches memory out of bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ...ir.types import DType
from ..kernel_ir import (
    Assign,
    Binary,
    Block,
    Buffer,
    Declare,
    Expr,
    If,
    Loop,
    LoopKind,
    Report,
    Stmt,
    Var,
    select,
)
from .common import PARALLEL_WORK, affine, idx


def numel(shape: Sequence[int]) -> int:
    total = 1
    for extent in shape:
        total *= int(extent)
    return total




def logical(op: str, conds: Sequence[Expr]) -> Expr:
    """``and`` / ``or`` of boolean expressions (at least one)."""
    result = conds[0]
    for cond in conds[1:]:
        result = Binary(op, result, cond)
    return result


def loops(
    extents: Sequence[int],
    make_body: Callable[[list[Expr]], Stmt],
    prefix: str,
    *,
    work: int | None = None,
    vectorize: bool = True,
    parallel: bool = True,
) -> Stmt:
    """A loop nest over ``extents``; ``make_body`` gets one index per axis (the constant 0 for
    unit axes, which get no loop). The outermost real loop is PARALLEL when ``work`` (default:
    the element count) is large, the innermost VECTORIZE when asked."""
    indices: list[Expr] = [idx(0) if e == 1 else Var(f"{prefix}{a}")
                           for a, e in enumerate(extents)]
    body = make_body(indices)
    real = [a for a, e in enumerate(extents) if e != 1]
    total = numel(extents) if work is None else work
    outer = real[0] if real and parallel and total >= PARALLEL_WORK else None
    for axis in reversed(real):
        kind = LoopKind.SERIAL
        if axis == outer:
            kind = LoopKind.PARALLEL
        elif axis == real[-1] and vectorize:
            kind = LoopKind.VECTORIZE
        var = indices[axis]
        assert isinstance(var, Var)
        body = Loop(var, idx(extents[axis]), body, kind)
    return body


def fill(out: Buffer, value: Expr, prefix: str = "f") -> Stmt:
    """Every element of ``out`` set to ``value``."""
    return loops(out.shape, lambda i: out.store(i, value), prefix)


def copy_reshaped(src: Buffer, dst: Buffer, prefix: str = "c") -> Stmt:
    """Copy ``src`` into ``dst`` element by element in row-major order (same element count)."""
    a, b = [int(d) for d in src.shape], [int(d) for d in dst.shape]
    if numel(a) != numel(b):
        raise ValueError(f"cannot copy {a} into {b}: element counts differ")
    if numel(a) == 0:
        return Block(())
    pa, pb = _prefix_products(a), _prefix_products(b)
    bounds = sorted(set(pa) & set(pb))
    extents: list[int] = []
    # Per loop axis, its contribution to each src / dst dim: (dim, coefficient).
    src_terms: list[list[tuple[int, int]]] = []
    dst_terms: list[list[tuple[int, int]]] = []
    decomposed: list[tuple[int, int, list[int]]] = []  # (lo, hi, loop axes) of flat segments
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        cuts = sorted({p for p in pa + pb if lo <= p <= hi})
        if all(q % p == 0 for p, q in zip(cuts, cuts[1:], strict=False)):
            for p, q in zip(cuts, cuts[1:], strict=False):
                extents.append(q // p)
                src_terms.append(_digit_terms(pa, p, q))
                dst_terms.append(_digit_terms(pb, p, q))
        else:
            axes = []
            for j in range(len(b)):
                if b[j] > 1 and lo <= pb[j] and pb[j + 1] <= hi:
                    axes.append(len(extents))
                    extents.append(b[j])
                    src_terms.append([])
                    dst_terms.append([(j, 1)])
            decomposed.append((lo, hi, axes))

    def body(loop_vars: list[Expr]) -> Stmt:
        src_index = _gather_terms(len(a), src_terms, loop_vars)
        for lo, hi, axes in decomposed:
            # Position within the segment, outermost digit first, then each src dim's digit.
            flat = affine([(loop_vars[ax], hi // pb[dst_terms[ax][0][0] + 1]) for ax in axes])
            for j in range(len(a)):
                if a[j] > 1 and lo <= pa[j] and pa[j + 1] <= hi:
                    digit = flat if pa[j + 1] == hi else flat // (hi // pa[j + 1])
                    src_index[j] = digit if pa[j] == lo else digit % a[j]
        return dst.store(_gather_terms(len(b), dst_terms, loop_vars),
                         src.load(*src_index))

    return loops(extents, body, prefix)


def _prefix_products(shape: list[int]) -> list[int]:
    out = [1]
    for extent in shape:
        out.append(out[-1] * extent)
    return out


def _digit_terms(prefix: list[int], lo: int, hi: int) -> list[tuple[int, int]]:
    """The dim whose prefix range covers the refined digit [lo, hi), with its weight."""
    for j in range(len(prefix) - 1):
        if prefix[j] <= lo and hi <= prefix[j + 1] and prefix[j] < prefix[j + 1]:
            return [(j, prefix[j + 1] // hi)]
    raise AssertionError("refinement digit outside every dim")


def _gather_terms(rank: int, terms: list[list[tuple[int, int]]],
                  loop_vars: list[Expr]) -> list[Expr]:
    per_dim: list[list[tuple[Expr, int]]] = [[] for _ in range(rank)]
    for var, contributions in zip(loop_vars, terms, strict=True):
        for dim, coef in contributions:
            per_dim[dim].append((var, coef))
    return [affine(t) for t in per_dim]


def checked_index(raw: Expr, extent: int, name: str, message: str) -> tuple[list[Stmt], Var]:
    """Statements declaring local ``name``: ``raw`` as i64, plus ``extent`` when negative, and
    clamped into [0, extent) after reporting ``message`` when outside [-extent, extent).
    ``extent`` must be positive (callers handle empty axes)."""
    var = Var(name)
    outside = logical("or", [var < 0, var >= extent])
    return [
        Declare(var, raw.cast(DType.I64)),
        Assign(var, select(var < 0, var + extent, var)),
        If(outside, Block((Report(message),
                           Assign(var, select(var < 0, idx(0), idx(extent - 1)))))),
    ], var
