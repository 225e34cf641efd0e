"""Outlining of PARALLEL loops into closures run by the runtime's thread pool.

``for i in parallel(n): body`` in kernel ``k`` becomes

- ``internal void @k.parallelN.body(ptr noalias buf..., ptr ctx, <captured scalars>, i64 begin,
  i64 end)``: runs ``body`` for ``i`` in ``[begin, end)``; buffer pointers arrive as
  ``noalias`` parameters so the body vectorizes as well as the kernel itself would;
- ``internal void @k.parallelN(ptr closure, i64 begin, i64 end)``: unpacks the closure struct
  ``{ptr buf..., ptr ctx, scalars...}`` and calls the body;
- at the loop's place: the closure struct on the stack, filled with the buffer pointers, the
  context and the values of the enclosing loop indices and locals the body reads, then
  ``call void @kiln__parallel_for(ptr ctx, ptr @k.parallelN, ptr closure, i64 n)``.

Locals of the enclosing code are captured by value: a parallel body may read them but not
assign them (that would be a data race; it is rejected with a clear error). Parallel loops
nested inside a parallel body run serially within the outer loop's chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from llvmlite import ir

from ...lower.kernel_ir import (
    Assign,
    Block,
    Declare,
    Expr,
    If,
    Load,
    Loop,
    MatmulTile,
    Stmt,
    Store,
    Var,
    operands,
)
from ..target import CodegenError
from . import math as fmath
from .expr import value_type

if TYPE_CHECKING:
    from .kernel import Env, FunctionEmitter

PTR = ir.PointerType()
I64 = ir.IntType(64)
VOID = ir.VoidType()


def sub_exprs(node: Expr) -> Iterator[Expr]:
    """``node`` and every expression inside it."""
    yield node
    for child in operands(node):
        yield from sub_exprs(child)


def stmt_exprs(node: Stmt) -> Iterator[Expr]:
    """Every expression (and subexpression) in statement ``node``."""
    roots: tuple[Expr, ...] = ()
    inner: tuple[Stmt, ...] = ()
    if isinstance(node, Store):
        roots = (*node.indices, node.value)
    elif isinstance(node, Block):
        inner = node.body
    elif isinstance(node, Loop):
        roots, inner = (node.extent,), (node.body,)
    elif isinstance(node, If):
        roots = (node.cond,)
        inner = (node.then,) if node.otherwise is None else (node.then, node.otherwise)
    elif isinstance(node, Declare | Assign):
        roots = (node.var, node.value if isinstance(node, Assign) else node.init)
    elif isinstance(node, MatmulTile):
        roots = node.offsets
    for root in roots:
        yield from sub_exprs(root)
    for stmt in inner:
        yield from stmt_exprs(stmt)


def _assigned_outer(node: Stmt, declared: frozenset[str]) -> Iterator[str]:
    """Names assigned in ``node`` that are not locals declared inside it."""
    if isinstance(node, Assign) and node.var.name not in declared:
        yield node.var.name
    elif isinstance(node, Block):
        scope = set(declared)
        for inner in node.body:
            yield from _assigned_outer(inner, frozenset(scope))
            if isinstance(inner, Declare):
                scope.add(inner.var.name)
    elif isinstance(node, Loop):
        yield from _assigned_outer(node.body, declared | {node.var.name})
    elif isinstance(node, If):
        yield from _assigned_outer(node.then, declared)
        if node.otherwise is not None:
            yield from _assigned_outer(node.otherwise, declared)


def outline_parallel(emitter: FunctionEmitter, loop: Loop, env: Env, extent: ir.Value) -> None:
    """Replace ``loop`` at the emitter's position by a ``kiln__parallel_for`` call."""
    from .kernel import Local

    kernel = emitter.kernel
    racy = sorted(set(_assigned_outer(loop.body, frozenset())) & set(env))
    if racy:
        raise CodegenError(
            f"kernel {kernel.name}: parallel loop {loop.var.name} assigns to {', '.join(racy)}, "
            "declared outside it (a data race); declare the local inside the loop"
        )
    used_vars: dict[str, Var] = {}
    used_buffers: set[str] = set()
    for expr in stmt_exprs(loop.body):
        if isinstance(expr, Var) and expr.name in env and expr.name != loop.var.name:
            used_vars.setdefault(expr.name, expr)
        elif isinstance(expr, Load):
            used_buffers.add(expr.buffer.name)
    for stmt in walk_stmts(loop.body):
        if isinstance(stmt, Store):
            used_buffers.add(stmt.buffer.name)
        elif isinstance(stmt, MatmulTile):
            used_buffers.update(x.name for x in (stmt.a, stmt.b, stmt.c))
    buffer_names = [name for name in emitter.buffers if name in used_buffers]
    captured = sorted(used_vars)
    emitter._env = env
    scalar_values = [emitter.variable(used_vars[name]) for name in captured]
    scalar_types = [v.type for v in scalar_values]

    module = emitter.module
    serial = sum(1 for g in module.globals if g.startswith(f"{kernel.name}.parallel"))
    base_name = f"{kernel.name}.parallel{serial // 2}"
    body_type = ir.FunctionType(
        VOID, [PTR] * (len(buffer_names) + 1) + scalar_types + [I64, I64])
    body = ir.Function(module, body_type, name=f"{base_name}.body")
    body.linkage = "internal"
    body.attributes.add("nounwind")
    args = list(body.args)
    buffers: dict[str, ir.Value] = {}
    for argument, name in zip(args, buffer_names, strict=False):
        argument.name = f"p.{name}"
        argument.add_attribute("noalias")
        buffers[name] = argument
    ctx = args[len(buffer_names)]
    begin, end = args[-2], args[-1]
    inner = emitter.spawn(body, buffers, ctx)
    inner_env: Env = {}
    for name, argument in zip(captured, args[len(buffer_names) + 1:-2], strict=True):
        binding = env[name]
        if isinstance(binding, Local):
            slot = inner.alloca(value_type(binding.var.dtype), name=name)
            inner.builder.store(argument, slot)
            inner_env[name] = Local(slot, binding.var)
        else:
            inner_env[name] = argument
    inner.counted_loop(loop, inner_env, begin, end)
    inner.finish()

    closure_type = ir.LiteralStructType([PTR] * (len(buffer_names) + 1) + scalar_types)
    trampoline = ir.Function(module, ir.FunctionType(VOID, [PTR, I64, I64]), name=base_name)
    trampoline.linkage = "internal"
    trampoline.attributes.add("nounwind")
    tb = ir.IRBuilder(trampoline.append_basic_block("entry"))
    closure_arg, chunk_begin, chunk_end = trampoline.args
    fields = [
        tb.load(tb.gep(closure_arg, [ir.IntType(32)(0), ir.IntType(32)(i)], inbounds=True,
                       source_etype=closure_type), typ=ty)
        for i, ty in enumerate(closure_type.elements)
    ]
    tb.call(body, [*fields, chunk_begin, chunk_end])
    tb.ret_void()

    b = emitter.builder
    closure = emitter.alloca(closure_type, name=f"{base_name}.closure")
    values = [emitter.buffers[name] for name in buffer_names] + [emitter.ctx] + scalar_values
    for i, value in enumerate(values):
        # the alloca is a typed pointer in llvmlite, which derives the field type itself
        b.store(value, b.gep(closure, [ir.IntType(32)(0), ir.IntType(32)(i)], inbounds=True))
    parallel_for = fmath.declare(module, "kiln__parallel_for", VOID, [PTR, PTR, PTR, I64])
    b.call(parallel_for, [emitter.ctx, trampoline, closure, extent])


def walk_stmts(node: Stmt) -> Iterator[Stmt]:
    """``node`` and every statement nested in it."""
    yield node
    if isinstance(node, Block):
        for inner in node.body:
            yield from walk_stmts(inner)
    elif isinstance(node, Loop):
        yield from walk_stmts(node.body)
    elif isinstance(node, If):
        yield from walk_stmts(node.then)
        if node.otherwise is not None:
            yield from walk_stmts(node.otherwise)
