"""Static cost of a kernel: ``kernel_cost(kernel) -> KernelCost(flops, bytes)``.

The profiler divides these by measured time to report achieved GFLOP/s and GB/s.

FLOPs count the float arithmetic the kernel IR executes, one per evaluation of a ``Unary``,
``Binary`` or ``Call`` whose result is a float (add, sub, mul, div, min, max, exp, neg...;
comparisons, selects, casts, loads and integer index arithmetic count nothing), times the trip
counts of the loops around it. Both operands of a ``Select`` count (backends evaluate both). A
``MatmulTile`` counts ``2 * rows * cols * contraction`` (one multiply and one add per step),
as does its scalar expansion, so ``MatMul`` M x K by K x N gives ``2 * M * N * K``. A ``Call``
(a custom op's function) counts one, whatever its body. The count is what the kernel executes,
not the textbook count of its op: a padded 3x3 Conv computed over padded-width rows (the
"wide" rows of lower/ops/nn_conv.py) counts about ``(W + pads) / W`` times the textbook
``2 * outputs * C_in * 9``.

Trip counts are exact wherever they follow from loop indices: loop extents and ``If``
conditions are evaluated on the indices (and on integer locals declared from them), and a loop
whose body's cost depends on its index (a tail tile, a bounds guard) is walked iteration by
iteration, with results memoized per statement and relevant index values. Beyond that the count
is an upper bound, and documented as such:

- an ``If`` whose condition reads data (a load, an assigned local) counts its costlier branch;
- a loop extent that reads data counts the known side of a ``min`` (``min(n, data)`` <= n), and
  otherwise one iteration (a data-dependent trip count, e.g. a Loop op's, is unknown here);
- once a kernel's walk exceeds ``WALK_BUDGET`` iterations, remaining loops whose bodies depend
  on their index count their widest iteration (the body cost at index 0 and at the last index,
  the larger) times the extent, so compile time stays bounded.

Extents known only at run time (loads of ``DIMS``) count as 1: the cost of a kernel with free
extents is its cost per unit of each of them.

Bytes are the sizes of the distinct buffers (by name) the kernel loads from or stores to, each
counted once whatever its number of accesses: the traffic of a kernel that streams each operand
through the cache once. Scratch buffers the body touches count too; a buffer read only in part
(a slice) counts whole.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..ir.types import FLOATS, DType
from ..lower.inline import child_stmts, own_exprs, walk
from ..lower.interpret import concrete_shape
from ..lower.kernel_ir import (
    DIMS,
    Assign,
    Binary,
    Block,
    Call,
    Cast,
    Compare,
    Const,
    Declare,
    Expr,
    If,
    Kernel,
    Load,
    Loop,
    MatmulTile,
    Select,
    Stmt,
    Store,
    Unary,
    Var,
    operands,
)

# Loop iterations walked one by one per kernel before the walk switches to bounds.
WALK_BUDGET = 200_000

Env = Mapping[str, int]
# The value of an index expression under an environment of known indices (None: unknown).
Evaluator = Callable[[Env], int | None]


@dataclass(frozen=True)
class KernelCost:
    """Static FLOPs and bytes moved of one execution of a kernel."""

    flops: int
    bytes: int


def kernel_cost(kernel: Kernel) -> KernelCost:
    """The FLOPs and bytes of one execution of ``kernel`` (see the module docstring)."""
    return KernelCost(_Counter(kernel.body).cost(kernel.body, {}), _bytes_moved(kernel))


def _bytes_moved(kernel: Kernel) -> int:
    touched: dict[str, int] = {}
    for node in walk(kernel.body):
        if isinstance(node, Load | Store):
            touched.setdefault(node.buffer.name, node.buffer.nbytes)
        elif isinstance(node, MatmulTile):
            for buffer in (node.a, node.b, node.c):
                touched.setdefault(buffer.name, buffer.nbytes)
    # a flat view of a parameter names the same memory: the parameter's size is the truth
    sizes = {b.name: b.nbytes for b in kernel.params}
    return sum(_unit_size(sizes.get(name, nbytes)) for name, nbytes in touched.items())


@functools.cache
def _unit_dims() -> np.ndarray:
    return np.ones(DIMS.shape[0], np.int64)  # type: ignore[arg-type]


def _unit_size(nbytes: int | Expr) -> int:
    """A buffer's bytes, with every run-time extent at 1."""
    if isinstance(nbytes, int):
        return nbytes
    return int(concrete_shape((nbytes,), _unit_dims())[0])


def _expr_flops(expr: Expr) -> int:
    own = int(isinstance(expr, Unary | Binary | Call) and expr.dtype in FLOATS)
    return own + sum(_expr_flops(child) for child in operands(expr))


def _vars(expr: Expr) -> set[str]:
    if isinstance(expr, Var):
        return {expr.name}
    return set().union(*(_vars(child) for child in operands(expr)))


class _Counter:
    """Counts the FLOPs of one kernel body, memoizing per statement and relevant indices."""

    def __init__(self, body: Stmt) -> None:
        stmts = [node for node in walk(body) if isinstance(node, Stmt)]
        # A local that is ever reassigned has no static value; one declared once from indices
        # does (a padded coordinate, a tile's row count), when control flow reads it.
        assigned = {s.var.name for s in stmts if isinstance(s, Assign)}
        control = set()
        for stmt in stmts:
            if isinstance(stmt, Loop | If):
                control |= _vars(stmt.extent if isinstance(stmt, Loop) else stmt.cond)
        self.tracked = {s.var.name for s in stmts if isinstance(s, Declare)
                        and s.var.name in control and s.var.name not in assigned
                        and s.var.dtype not in FLOATS}
        self.free: dict[int, tuple[str, ...]] = {}
        self._free_vars(body)
        self.memo: dict[tuple[int, tuple[int | None, ...]], int] = {}
        self.own: dict[int, int] = {}
        self.compiled: dict[int, Evaluator] = {}
        self.walked = 0

    def value(self, expr: Expr) -> Evaluator:
        """The (cached) evaluator of ``expr``."""
        found = self.compiled.get(id(expr))
        if found is None:
            found = self.compiled[id(expr)] = _compile(expr, self.value)
        return found

    def _free_vars(self, stmt: Stmt) -> set[str]:
        """Variables bound outside ``stmt`` on which its cost depends (recorded per stmt)."""
        found: set[str] = set()
        if isinstance(stmt, Loop):
            found = _vars(stmt.extent) | (self._free_vars(stmt.body) - {stmt.var.name})
        elif isinstance(stmt, If):
            found = _vars(stmt.cond)
            for child in child_stmts(stmt):
                found |= self._free_vars(child)
        elif isinstance(stmt, Block):
            bound: set[str] = set()
            for child in stmt.body:
                found |= self._free_vars(child) - bound
                if isinstance(child, Declare):
                    bound.add(child.var.name)
        elif isinstance(stmt, Declare) and stmt.var.name in self.tracked:
            found = _vars(stmt.init)
        self.free[id(stmt)] = tuple(sorted(found))
        return found

    def cost(self, stmt: Stmt, env: Env) -> int:
        key = (id(stmt), tuple(env.get(name) for name in self.free[id(stmt)]))
        if key not in self.memo:
            self.memo[key] = self._cost(stmt, env)
        return self.memo[key]

    def _cost(self, stmt: Stmt, env: Env) -> int:
        own = self.own.get(id(stmt))
        if own is None:
            own = self.own[id(stmt)] = sum(_expr_flops(e) for e in own_exprs(stmt))
        if isinstance(stmt, MatmulTile):
            steps = 1
            for axis in stmt.axes:
                steps *= axis.extent
            return own + 2 * stmt.rows * stmt.cols * steps
        if isinstance(stmt, Block):
            scope = dict(env)
            total = own
            for child in stmt.body:
                total += self.cost(child, scope)
                if isinstance(child, Declare) and child.var.name in self.tracked:
                    value = self.value(child.init)(scope)
                    if value is not None:
                        scope[child.var.name] = value
            return total
        if isinstance(stmt, If):
            taken = self.value(stmt.cond)(env)
            if taken is None:
                branches = [self.cost(child, env) for child in child_stmts(stmt)]
                return own + max(branches, default=0)
            branch = stmt.then if taken else stmt.otherwise
            return own + (0 if branch is None else self.cost(branch, env))
        if isinstance(stmt, Loop):
            return own + self._loop(stmt, env)
        return own

    def _loop(self, loop: Loop, env: Env) -> int:
        extent = _extent(loop.extent, self.value, env)
        if extent <= 0:
            return 0
        name = loop.var.name
        if name not in self.free[id(loop.body)]:
            return extent * self.cost(loop.body, env)
        if self.walked + extent > WALK_BUDGET:
            ends = (self.cost(loop.body, {**env, name: index}) for index in (0, extent - 1))
            return extent * max(ends)
        self.walked += extent
        return sum(self.cost(loop.body, {**env, name: index}) for index in range(extent))


def _extent(expr: Expr, value: Callable[[Expr], Evaluator], env: Env) -> int:
    known = value(expr)(env)
    if known is not None:
        return known
    if isinstance(expr, Binary) and expr.op == "min":
        bounds = [v for v in (value(expr.a)(env), value(expr.b)(env)) if v is not None]
        if bounds:
            return min(bounds)
    return 1


def _unknown(env: Env) -> None:
    return None


def _compile(expr: Expr, value: Callable[[Expr], Evaluator]) -> Evaluator:
    """A function computing the value of an integer or bool expression from loop indices, or
    None when it reads data (loads, floats, unknown locals); ``value`` compiles operands."""
    if expr.dtype in FLOATS:
        return _unknown
    if isinstance(expr, Const):
        constant = int(expr.value)
        return lambda env: constant
    if isinstance(expr, Load) and expr.buffer == DIMS:
        return lambda env: 1
    if isinstance(expr, Var):
        name = expr.name
        return lambda env: env.get(name)
    if isinstance(expr, Cast):
        inner = value(expr.x)
        if expr.dtype is DType.BOOL:
            return lambda env: None if (x := inner(env)) is None else int(x != 0)
        return inner
    if isinstance(expr, Unary) and expr.op in _INTEGER_UNARY:
        unary = _logical_not if expr.op == "not" and expr.dtype is DType.BOOL \
            else _INTEGER_UNARY[expr.op]
        operand = value(expr.x)
        return lambda env: None if (x := operand(env)) is None else unary(x)
    if isinstance(expr, Select):
        cond, a, b = value(expr.cond), value(expr.a), value(expr.b)

        def select(env: Env) -> int | None:
            taken = cond(env)
            return None if taken is None else (a if taken else b)(env)
        return select
    if isinstance(expr, Binary | Compare) and expr.op in _INTEGER_BINARY:
        function, a, b = _INTEGER_BINARY[expr.op], value(expr.a), value(expr.b)

        def binary(env: Env) -> int | None:
            x, y = a(env), b(env)
            return None if x is None or y is None else function(x, y)
        return binary
    return _unknown


def _div(a: int, b: int) -> int:
    # kernel IR division truncates toward zero and gives 0 for a zero divisor
    if b == 0:
        return 0
    quotient = abs(a) // abs(b)
    return quotient if (a < 0) == (b < 0) else -quotient


def _rem(a: int, b: int) -> int:
    return 0 if b == 0 else a - b * _div(a, b)


def _logical_not(x: int) -> int:
    return int(not x)


_INTEGER_UNARY: dict[str, Callable[[int], int]] = {
    "neg": operator.neg, "abs": abs, "not": operator.invert,
}
_INTEGER_BINARY: dict[str, Callable[[int, int], int]] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": _div, "rem": _rem,
    "min": min, "max": max, "and": operator.and_, "or": operator.or_, "xor": operator.xor,
    "eq": lambda a, b: int(a == b), "ne": lambda a, b: int(a != b),
    "lt": lambda a, b: int(a < b), "le": lambda a, b: int(a <= b),
    "gt": lambda a, b: int(a > b), "ge": lambda a, b: int(a >= b),
}
