"""Kernel-IR transformations for inlining one node's computation into another's kernel.

Fused groups (compiler/lower/ops/fused.py) are lowered by taking the kernel of the group's
anchor and rewriting it:

- ``substitute_loads``: every load of a chosen buffer becomes an expression of its indices
  (an elementwise prologue computed where the anchor reads it);
- ``substitute_stores``: every store to a chosen buffer becomes other statements (the
  elementwise epilogue stored where the anchor writes its result);
- ``accesses``: how often a kernel body stores to / loads from a buffer, which tells whether
  the epilogue substitution is legal (one store and no load of the anchor's output).

Rewrites keep sharing: an expression object reached twice is rewritten once, so the emitter
(which memoizes by object) still computes it once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

from .kernel_ir import (
    Assign,
    Binary,
    Block,
    BlockReduce,
    Buffer,
    Call,
    Cast,
    Compare,
    Declare,
    Expr,
    If,
    Load,
    Loop,
    MatmulTile,
    Report,
    Select,
    Stmt,
    Store,
    Unary,
    Var,
)

LoadRewrite = Callable[[Load], Expr | None]
StoreRewrite = Callable[[Store], Stmt | None]


class Rewriter:
    """Rebuilds statements and expressions, replacing loads and stores through callbacks
    (returning None keeps the access, with its operands rewritten), renaming variables (loop
    indices and locals) through ``on_var`` and the buffers of matmul tiles through
    ``on_buffer``. A tile's memory accesses are not loads and stores: with ``expand_tiles`` each
    tile is first replaced by its scalar loop nest, whose accesses the callbacks then see (for
    rewrites that may turn a buffer into an expression, as control-flow inlining does)."""

    def __init__(self, on_load: LoadRewrite | None = None,
                 on_store: StoreRewrite | None = None,
                 on_var: Callable[[Var], Var] | None = None,
                 on_buffer: Callable[[Buffer], Buffer] | None = None,
                 expand_tiles: bool = False) -> None:
        self.on_load = on_load
        self.on_store = on_store
        self.on_var = on_var
        self.on_buffer = on_buffer
        self.expand_tiles = expand_tiles
        # id -> (expression, rewrite): holding the expression keeps its id from being reused
        # by a temporary (expanded tiles make and drop expressions while rewriting)
        self.memo: dict[int, tuple[Expr, Expr]] = {}

    def var(self, v: Var) -> Var:
        return v if self.on_var is None else self.on_var(v)

    def expr(self, e: Expr) -> Expr:
        found = self.memo.get(id(e))
        if found is None:
            found = self.memo[id(e)] = (e, self._expr(e))
        return found[1]

    def _expr(self, e: Expr) -> Expr:
        if isinstance(e, Load):
            load = Load(e.buffer, tuple(self.expr(i) for i in e.indices))
            replaced = None if self.on_load is None else self.on_load(load)
            return load if replaced is None else replaced
        if isinstance(e, Unary):
            return Unary(e.op, self.expr(e.x))
        if isinstance(e, Binary):
            return Binary(e.op, self.expr(e.a), self.expr(e.b))
        if isinstance(e, Compare):
            return Compare(e.op, self.expr(e.a), self.expr(e.b))
        if isinstance(e, Select):
            return Select(self.expr(e.cond), self.expr(e.a), self.expr(e.b))
        if isinstance(e, Cast):
            return Cast(self.expr(e.x), e.dtype)
        if isinstance(e, Call):
            return Call(e.function, tuple(self.expr(a) for a in e.args))
        if isinstance(e, Var):
            return self.var(e)
        return e  # Const

    def stmt(self, s: Stmt) -> Stmt:
        if isinstance(s, Store):
            store = Store(s.buffer, tuple(self.expr(i) for i in s.indices), self.expr(s.value))
            replaced = None if self.on_store is None else self.on_store(store)
            return store if replaced is None else replaced
        if isinstance(s, Block):
            return Block(tuple(self.stmt(inner) for inner in s.body))
        if isinstance(s, Loop):
            return replace(s, var=self.var(s.var), extent=self.expr(s.extent),
                           body=self.stmt(s.body))
        if isinstance(s, If):
            return If(self.expr(s.cond), self.stmt(s.then),
                      None if s.otherwise is None else self.stmt(s.otherwise))
        if isinstance(s, Declare):
            return Declare(self.var(s.var), self.expr(s.init))
        if isinstance(s, Assign):
            return Assign(self.var(s.var), self.expr(s.value))
        if isinstance(s, MatmulTile):
            if self.expand_tiles:
                return self.stmt(s.expanded())
            c, a, b = (self.expr(e) for e in s.offsets)
            tile = replace(s, c_offset=c, a_offset=a, b_offset=b)
            if self.on_buffer is not None:
                tile = replace(tile, c=self.on_buffer(s.c), a=self.on_buffer(s.a),
                               b=self.on_buffer(s.b))
            return tile
        if isinstance(s, BlockReduce):
            source = s.source if self.on_buffer is None else self.on_buffer(s.source)
            return replace(s, source=source, var=self.var(s.var))
        assert isinstance(s, Report)
        return s


def substitute_loads(body: Stmt, replace_load: LoadRewrite) -> Stmt:
    """``body`` with each load replaced by ``replace_load(load)`` where that is not None."""
    return Rewriter(on_load=replace_load).stmt(body)


def substitute_stores(body: Stmt, replace_store: StoreRewrite) -> Stmt:
    """``body`` with each store replaced by ``replace_store(store)`` where that is not None."""
    return Rewriter(on_store=replace_store).stmt(body)


def walk(body: Stmt | Expr) -> Iterator[Stmt | Expr]:
    """Every statement and expression of ``body`` once (shared parts are visited once)."""
    stack: list[Stmt | Expr] = [body]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, Stmt):
            stack.extend((*own_exprs(node), *child_stmts(node)))
        elif isinstance(node, Load):
            stack.extend(node.indices)
        elif isinstance(node, Unary | Cast):
            stack.append(node.x)
        elif isinstance(node, Binary | Compare):
            stack.extend((node.a, node.b))
        elif isinstance(node, Select):
            stack.extend((node.cond, node.a, node.b))
        elif isinstance(node, Call):
            stack.extend(node.args)


def own_exprs(stmt: Stmt) -> tuple[Expr, ...]:
    """The expressions a statement itself evaluates (not those of nested statements)."""
    if isinstance(stmt, Store):
        return (*stmt.indices, stmt.value)
    if isinstance(stmt, Loop):
        return (stmt.extent,)
    if isinstance(stmt, If):
        return (stmt.cond,)
    if isinstance(stmt, Declare):
        return (stmt.init,)
    if isinstance(stmt, Assign):
        return (stmt.value,)
    if isinstance(stmt, MatmulTile):
        return stmt.offsets
    return ()


def child_stmts(stmt: Stmt) -> tuple[Stmt, ...]:
    """The statements directly nested in ``stmt``."""
    if isinstance(stmt, Block):
        return stmt.body
    if isinstance(stmt, Loop):
        return (stmt.body,)
    if isinstance(stmt, If):
        return (stmt.then,) if stmt.otherwise is None else (stmt.then, stmt.otherwise)
    return ()


def accesses(body: Stmt, buffer_name: str) -> tuple[int, int]:
    """(stores, loads) of the buffer named ``buffer_name`` written in ``body`` (static count:
    a store inside a loop counts once)."""
    stores = loads = 0
    for node in walk(body):
        if isinstance(node, Store) and node.buffer.name == buffer_name:
            stores += 1
        elif isinstance(node, Load) and node.buffer.name == buffer_name:
            loads += 1
        elif isinstance(node, MatmulTile):
            stores += node.c.name == buffer_name
            loads += (node.accumulate and node.c.name == buffer_name) + sum(
                x.name == buffer_name for x in (node.a, node.b))
    return stores, loads
