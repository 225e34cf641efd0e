"""Scalar building blocks shared by the elementwise and reduce lowerings.

- Compute types: float16/bfloat16 arithmetic is done in float32 and rounded once at the store
  (``wide``), as the reference kernels do.
- Compositions of kernel-IR operations for the functions the IR lacks (expm1, log1p, softplus,
  integer division and remainder that are defined for every operand).
- ``loop_over``: the loop nest over an output shape with the schedule every lowering of these
  families uses (innermost loop vectorized, outermost non-trivial loop parallel when the work is
  large; a lone long axis is split into parallel chunks of vectorized loops), after merging
  the axes every access walks together into one (``collapse_axes``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ...ir.types import DType
from ..inline import Rewriter, walk
from ..kernel_ir import (
    Assign,
    Binary,
    Block,
    Buffer,
    Const,
    Declare,
    Expr,
    ExprLike,
    If,
    Load,
    Loop,
    LoopKind,
    Report,
    Stmt,
    Store,
    Unary,
    Var,
    as_index,
    binary,
    operands,
    select,
)
from .common import PARALLEL_WORK, Extent, const, product, same_extent, work_estimate

NARROW_FLOATS = frozenset({DType.F16, DType.BF16})
# Below this many elements of work a kernel runs on one thread (thread hand-off costs more).
# Chunk of a lone parallel axis handed to one task; a multiple of every vector width.
CHUNK = 4096


def wide(dtype: DType) -> DType:
    """The type arithmetic on ``dtype`` is computed in: float32 for float16/bfloat16."""
    return DType.F32 if dtype in NARROW_FLOATS else dtype


def to_float(dtype: DType) -> DType:
    """The compute type of a float-valued map: ``wide`` for floats, float64 for integers."""
    return wide(dtype) if dtype.is_float else DType.F64




def lowest(dtype: DType) -> Const:
    """The identity of max: -inf, the smallest integer, or false."""
    if dtype.is_float:
        return const(-math.inf, dtype)
    if dtype is DType.BOOL:
        return const(False, dtype)
    return const(-(1 << (dtype.itemsize * 8 - 1)) if dtype.is_signed else 0, dtype)


def highest(dtype: DType) -> Const:
    """The identity of min: +inf, the largest integer, or true."""
    if dtype.is_float:
        return const(math.inf, dtype)
    if dtype is DType.BOOL:
        return const(True, dtype)
    bits = dtype.itemsize * 8 - (1 if dtype.is_signed else 0)
    return const((1 << bits) - 1, dtype)


def fmax(a: ExprLike, b: ExprLike) -> Binary:
    """NaN-propagating maximum (booleans: or)."""
    return binary("or" if _dtype_of(a, b) is DType.BOOL else "max", a, b)


def fmin(a: ExprLike, b: ExprLike) -> Binary:
    """NaN-propagating minimum (booleans: and)."""
    return binary("and" if _dtype_of(a, b) is DType.BOOL else "min", a, b)


def _dtype_of(a: ExprLike, b: ExprLike) -> DType:
    return (a if isinstance(a, Expr) else b).dtype  # type: ignore[union-attr]


def add(a: Expr, b: Expr) -> Expr:
    """a + b, as a function (the combine of sum folds)."""
    return a + b


def both(a: Expr, b: Expr) -> Binary:
    return Binary("and", a, b)


def either(a: Expr, b: Expr) -> Binary:
    return Binary("or", a, b)


def negate(cond: Expr) -> Unary:
    return Unary("not", cond)


def fabs(x: Expr) -> Unary:
    return Unary("abs", x)


def exp(x: Expr) -> Unary:
    return Unary("exp", x)


def log(x: Expr) -> Unary:
    return Unary("log", x)


def sigmoid(x: Expr) -> Unary:
    return Unary("sigmoid", x)


def divide(a: ExprLike, b: ExprLike) -> Binary:
    return binary("div", a, b)


def is_finite(x: Expr) -> Unary:
    return negate(either(Unary("isinf", x), Unary("isnan", x)))


def expm1(x: Expr) -> Expr:
    """exp(x) - 1 without the cancellation near 0: Kahan's (u - 1) * x / log(u), u = exp(x),
    for |x| < 0.5 (u then lies in (0.6, 1.7), so log(u) is 0 only where u == 1, which gives x);
    plain u - 1 elsewhere, where it has no cancellation."""
    u = exp(x)
    near_zero = select(u.eq(1), x, divide((u - 1) * x, log(u)))
    return select(fabs(x) < 0.5, near_zero, u - 1)


def log1p(y: Expr) -> Expr:
    """log(1 + y) for y >= 0, accurate for small y (Kahan: log(u) * y / (u - 1), u = 1 + y)."""
    u = 1 + y
    return select(u.eq(1), y, divide(log(u) * y, u - 1))


def softplus(x: Expr) -> Expr:
    """log(1 + exp(x)) as numpy's logaddexp(0, x): max(x, 0) + log1p(exp(-|x|)), which neither
    overflows nor loses the small values of either tail; NaN propagates through the max."""
    return fmax(x, 0) + log1p(exp(-fabs(x)))


def int_divisor(b: Expr) -> Expr:
    """``b`` where integer division by it is defined in C, else 1: b == 0 would trap, and
    INT_MIN / -1 overflows for signed types."""
    bad: Expr = b.eq(0)
    if b.dtype.is_signed:
        bad = either(bad, b.eq(-1))
    return select(bad, 1, b)


def int_div(a: Expr, b: Expr) -> Expr:
    """Integer division truncating toward zero; x / 0 is 0 (numpy's result) and x / -1 wraps."""
    quotient: Expr = Binary("div", a, int_divisor(b))
    if b.dtype.is_signed:
        quotient = select(b.eq(-1), 0 - a, quotient)
    return select(b.eq(0), 0, quotient)


def int_rem(a: Expr, b: Expr) -> Expr:
    """C remainder (sign of the dividend); x % 0 is 0 (numpy's result), as is x % -1."""
    return Binary("rem", a, int_divisor(b))


def floor_mod(a: Expr, b: Expr) -> Expr:
    """numpy's ``mod``: the remainder of the floored quotient, with the divisor's sign. For
    floats a zero result takes b's sign and x mod 0 is NaN, as numpy's divmod gives."""
    if a.dtype.is_float:
        remainder: Expr = Binary("rem", a, b)
        signed_zero: Expr = select(b < 0, const(-0.0, a.dtype), 0.0)
    else:
        remainder = int_rem(a, b)
        signed_zero = const(0, a.dtype)
    wrong_sign = both(remainder.ne(0), Binary("xor", remainder < 0, b < 0))
    return select(wrong_sign, remainder + b, select(remainder.eq(0), signed_zero, remainder))


def loop_over(
    shape: Sequence[Extent],
    make_body: Callable[[list[Expr]], Stmt],
    prefix: str,
    work: Extent,
    vectorize: bool,
    collapse: bool = True,
) -> Stmt:
    """Loops over every position of ``shape``, calling ``make_body`` with the index expressions.

    The innermost loop is VECTORIZE when ``vectorize`` (the body must then carry no dependence
    across positions); a vectorized nest first merges adjacent axes that every access walks
    together (``collapse_axes``, unless ``collapse`` is False), so [1,64,56,56] + [1,64,1,1]
    runs as 64 rows of 3136, not as 3584 rows of 56. When ``work`` (the elements the whole
    nest touches) reaches PARALLEL_WORK, the outermost loop of extent > 1 is PARALLEL; if that
    is the innermost loop of a vectorized nest, it is split into parallel chunks of CHUNK
    vectorized positions. Run-time extents are loops of run-time length (counted as
    RUNTIME_EXTENT_GUESS in ``work``, see common.py), merged like static ones."""
    variables = [Var(f"{prefix}{axis}") for axis in range(len(shape))]
    indices: list[Expr] = [const(0, DType.I64) if _unit(n) else v
                           for n, v in zip(shape, variables, strict=True)]
    body = make_body(indices)
    shape = list(shape)
    large = work_estimate(work) >= PARALLEL_WORK
    if vectorize and collapse:
        # a lone parallel axis would be split into chunks, whose digits LLVM cannot fold
        shape, variables, body = collapse_axes(shape, variables, body, keep_first=large)
    rank = len(shape)
    parallel = None
    if large:
        parallel = next((axis for axis, n in enumerate(shape) if _looped(n)), None)
    split = vectorize and parallel == rank - 1 and not (
        isinstance(shape[-1], int) and shape[-1] <= CHUNK)
    if split:
        chunk = Var(f"{prefix}_chunk")
        inner = variables[-1]
        body = substitute_var(body, inner, chunk * CHUNK + inner)
    for axis in reversed(range(rank)):
        kind = LoopKind.SERIAL
        extent: Expr = as_index(shape[axis])
        if axis == rank - 1 and vectorize:
            kind = LoopKind.VECTORIZE
        elif axis == parallel:
            kind = LoopKind.PARALLEL
        if split and axis == rank - 1:
            extent = binary("min", Const(CHUNK, DType.I64), extent - chunk * CHUNK)
        body = Loop(variables[axis], extent, body, kind)
        if split and axis == rank - 1:
            chunks = (shape[axis] + (CHUNK - 1)) // CHUNK if isinstance(
                shape[axis], Expr) else Const(-(-shape[axis] // CHUNK), DType.I64)
            body = Loop(chunk, chunks, body, LoopKind.PARALLEL)
    return body


def _unit(extent: Extent) -> bool:
    """A static extent of 1 (a run-time extent may be 1 but is looped over)."""
    return isinstance(extent, int) and extent == 1


def _looped(extent: Extent) -> bool:
    """An axis the loop nest iterates: a static extent > 1, or a run-time one."""
    return not isinstance(extent, int) or extent > 1


def substitute_var(body: Stmt, var: Var, value: Expr) -> Stmt:
    """``body`` with every use of ``var`` replaced by ``value``."""
    return Rewriter(on_var=lambda v: value if v is var else v).stmt(body)  # type: ignore[arg-type, return-value]


def collapse_axes(shape: Sequence[Extent], variables: Sequence[Var], body: Stmt,
                  keep_first: bool = False) -> tuple[list[Extent], list[Var], Stmt]:
    """Merge adjacent loop axes that every buffer access of ``body`` walks together.

    Axes a < b (consecutive among the axes of extent > 1) merge when each loop index is used
    only as a whole index of a load or store, and every access either indexes with neither,
    or with both at positions of its (row-major) buffer that are adjacent but for unit
    extents, of the loop's extents. A merged group loops one index over the product of its
    extents, and each access reads a view of its buffer (same name, same memory, another
    shape: kernel_ir's views) with the group's axes made one. (Digits of the merged index on
    the original axes would need LLVM to fold the divisions back into a linear address,
    which it does not reliably: vector divisions and gathers.) With ``keep_first`` the first
    looped axis stays on its own (the parallel axis)."""
    unchanged = list(shape), list(variables), body
    looped = [a for a, n in enumerate(shape) if _looped(n)]
    if len(looped) < 2 + keep_first:
        return unchanged
    loop_vars = {id(variables[a]): a for a in looped}
    accesses: list[Load | Store] = []
    for node in walk(body):
        if isinstance(node, Stmt) and not isinstance(node, _PLAIN_STMTS):
            return unchanged  # e.g. a matmul tile: left alone
        if isinstance(node, Load | Store):
            accesses.append(node)
            if node.buffer.strides is not None:
                return unchanged
            direct = node.indices
        else:
            direct = ()
        for child in _children(node):
            if id(child) in loop_vars and not any(child is i for i in direct):
                return unchanged  # used in arithmetic
    # per access: loop axis -> position in the buffer (absent: the access ignores the axis)
    positions: list[dict[int, int]] = []
    for access in accesses:
        found: dict[int, int] = {}
        for position, index in enumerate(access.indices):
            axis = loop_vars.get(id(index))
            if axis is not None:
                if axis in found:
                    return unchanged  # one index at two positions
                found[axis] = position
        positions.append(found)

    def mergeable(a: int, b: int) -> bool:
        for access, found in zip(accesses, positions, strict=True):
            if (a in found) != (b in found):
                return False
            if a in found:
                p, q = found[a], found[b]
                extents = access.buffer.shape
                if q <= p or not same_extent(extents[p], shape[a]) or not same_extent(
                        extents[q], shape[b]) or any(
                        not _unit(extents[r]) for r in range(p + 1, q)):
                    return False
        return True

    groups: list[list[int]] = [[looped[0]]]
    for axis in looped[1:]:
        if mergeable(groups[-1][-1], axis) and not (keep_first and groups[-1][0] == looped[0]):
            groups[-1].append(axis)
        else:
            groups.append([axis])
    if len(groups) == len(looped):
        return unchanged
    first_of = {id(variables[g[0]]): g for g in groups}

    def view(access: Load | Store) -> tuple[Buffer, tuple[Expr, ...]]:
        """The access through a view of its buffer with each merged group's positions (and
        the unit extents between them) made one axis, indexed by the group's loop index."""
        extents, indices = access.buffer.shape, access.indices
        new_extents: list[Extent] = []
        new_indices: list[Expr] = []
        position = 0
        while position < len(indices):
            index = indices[position]
            group = first_of.get(id(index))
            end = position if group is None else next(
                p for p, i in enumerate(indices) if i is variables[group[-1]])
            new_extents.append(product(extents[position:end + 1]))
            new_indices.append(index)
            position = end + 1
        buffer = access.buffer
        return Buffer(buffer.name, buffer.dtype, tuple(new_extents)), tuple(new_indices)

    def on_load(load: Load) -> Expr:
        return Load(*view(load))

    def on_store(store: Store) -> Stmt:
        return Store(*view(store), store.value)

    # the rewriter hands the callbacks accesses whose indices are the original Var objects
    merged = Rewriter(on_load=on_load, on_store=on_store).stmt(body)
    return ([product([shape[a] for a in g]) for g in groups], [variables[g[0]] for g in groups],
            merged)


_PLAIN_STMTS = (Store, Block, Loop, If, Declare, Assign, Report)


def _children(node: Stmt | Expr) -> tuple[Stmt | Expr, ...]:
    """The expressions and statements directly inside ``node``."""
    if isinstance(node, Expr):
        return operands(node)
    if isinstance(node, Store):
        return (*node.indices, node.value)
    if isinstance(node, Block):
        return node.body
    if isinstance(node, Loop):
        return (node.extent, node.body)
    if isinstance(node, If):
        return (node.cond, node.then) + (() if node.otherwise is None else (node.otherwise,))
    if isinstance(node, Declare):
        return (node.init,)
    if isinstance(node, Assign):
        return (node.value,)
    return ()
