"""``emit_kernel``: one kernel IR ``Kernel`` -> one LLVM function.

The function is ``void @<kernel.name>(ptr p_0, ..., ptr p_{n-1}, ptr ctx)``: one pointer per
``kernel.params`` buffer (inputs, outputs, scratch; ``noalias`` unless a buffer is passed twice)
and the runtime context. Scalar locals live in entry-block allocas (promoted to registers by
the optimizer), loops are emitted in canonical form with their schedule as ``llvm.loop``
metadata, parallel loops are outlined (``parallel.py``), and ``Report`` calls
``kiln__report_error(ctx, message)``.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from llvmlite import ir

from ...lower.inline import accesses
from ...lower.kernel_ir import (
    DIMS,
    Assign,
    Binary,
    Block,
    Buffer,
    Declare,
    Expr,
    If,
    Kernel,
    Loop,
    LoopKind,
    MatmulTile,
    Report,
    Stmt,
    Store,
    Unary,
    Var,
)
from ..target import CodegenError, Target
from . import math as fmath
from .expr import ExprEmitter, constant, load_value, storage_type, store_value, value_type
from .matmul_tile import emit_matmul_tile
from .parallel import outline_parallel, stmt_exprs, walk_stmts

PTR = ir.PointerType()
I1 = ir.IntType(1)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
VOID = ir.VoidType()
_FULL_UNROLL_LIMIT = 256


@dataclass(frozen=True)
class Local:
    """A scalar local: its stack slot and element type."""

    slot: ir.Value
    var: Var


Binding: TypeAlias = ir.Value | Local
Env: TypeAlias = dict[str, Binding]


class _LoopID(ir.values.MDValue):
    """A distinct, self-referential loop ID (``!0 = distinct !{!0, ...}``) as LLVM requires;
    compared by identity so llvmlite's metadata cache never hashes the cycle."""

    def __init__(self, module: ir.Module, properties: Sequence[ir.values.MDValue]) -> None:
        super().__init__(module, [], name=str(len(module.metadata)))
        self.operands = (self, *properties)

    def descr(self, buf: list[str]) -> None:
        buf.append("distinct ")
        super().descr(buf)

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other


class FunctionEmitter(ExprEmitter):
    """Emits statements into one LLVM function (a kernel or an outlined parallel body)."""

    def __init__(self, kernel: Kernel, target: Target, function: ir.Function,
                 buffers: dict[str, ir.Value], ctx: ir.Value, in_parallel: bool) -> None:
        self.kernel = kernel
        self.target = target
        self.function = function
        self.module: ir.Module = function.module
        self.buffers = buffers
        self.ctx = ctx
        self.in_parallel = in_parallel
        self.entry = function.append_basic_block("entry")
        self.allocas = ir.IRBuilder(self.entry)
        self.builder = ir.IRBuilder(function.append_basic_block("start"))

    def load(self, buffer: Buffer, pointer: ir.Value) -> ir.Value:
        value = load_value(self.builder, pointer, buffer.dtype)
        if buffer == DIMS and not self._writes_dims:
            # the run's extents never change inside a kernel that does not set them: marked
            # invariant, their loads hoist out of loops and leave them vectorizable
            value.set_metadata("invariant.load", self.module.add_metadata([]))
        return value

    @functools.cached_property
    def _writes_dims(self) -> bool:
        return accesses(self.kernel.body, DIMS.name)[0] > 0

    def spawn(self, function: ir.Function, buffers: dict[str, ir.Value],
              ctx: ir.Value) -> FunctionEmitter:
        """An emitter for an outlined parallel body of this kernel."""
        return FunctionEmitter(self.kernel, self.target, function, buffers, ctx, True)

    def finish(self) -> None:
        self.allocas.branch(self.function.blocks[1])
        self.builder.ret_void()

    def alloca(self, ty: ir.Type, name: str = "") -> ir.Value:
        return self.allocas.alloca(ty, name=name)

    # -- expressions -----------------------------------------------------------------------

    def variable(self, var: Var) -> ir.Value:
        binding = self.env_lookup(var.name)
        if isinstance(binding, Local):
            return self.builder.load(binding.slot, typ=value_type(binding.var.dtype))
        return binding

    def env_lookup(self, name: str) -> Binding:
        try:
            return self._env[name]
        except KeyError:
            raise CodegenError(
                f"kernel {self.kernel.name}: variable {name} is used outside its scope"
            ) from None

    def address(self, buffer: Buffer, indices: Sequence[ir.Value]) -> ir.Value:
        base = self.buffers.get(buffer.name)
        if base is None:
            raise CodegenError(
                f"kernel {self.kernel.name}: buffer {buffer.name} is not one of its parameters"
            )
        return self.element(base, indices, buffer)

    def element(self, base: ir.Value, indices: Sequence[ir.Value], buffer: Buffer
                ) -> ir.Value:
        """The address of ``buffer``'s element at ``indices``, ``buffer`` starting at ``base``."""
        offset: ir.Value | None = None
        for index, stride in zip(indices, buffer.element_strides, strict=True):
            if isinstance(stride, int):
                if stride == 0:
                    continue
                term = index if stride == 1 else self.builder.mul(index, I64(stride))
            else:  # an extent known only at run time
                term = self.builder.mul(index, self.expr(stride))
            offset = term if offset is None else self.builder.add(offset, term)
        if offset is None:
            return base
        return self.builder.gep(base, [offset], inbounds=True,
                                source_etype=storage_type(buffer.dtype))

    # -- statements ------------------------------------------------------------------------

    def run(self, body: Stmt, env: Env) -> None:
        self.stmt(body, env)
        self.finish()

    def stmt(self, node: Stmt, env: Env) -> None:
        self._env = env
        b = self.builder
        if isinstance(node, Block):
            scope = dict(env)
            for inner in node.body:
                self.stmt(inner, scope)
            self._env = env
        elif isinstance(node, Store):
            value = self.expr(node.value)
            indices = [self.expr(i) for i in node.indices]
            store_value(b, value, self.address(node.buffer, indices), node.buffer.dtype)
        elif isinstance(node, Declare):
            slot = self.alloca(value_type(node.var.dtype), name=node.var.name)
            b.store(self.expr(node.init), slot)
            env[node.var.name] = Local(slot, node.var)
        elif isinstance(node, Assign):
            binding = self.env_lookup(node.var.name)
            if not isinstance(binding, Local):
                raise CodegenError(
                    f"kernel {self.kernel.name}: assignment to {node.var.name}, which is not a "
                    "declared local"
                )
            b.store(self.expr(node.value), binding.slot)
        elif isinstance(node, If):
            self._if(node, env)
        elif isinstance(node, Loop):
            self._loop(node, env)
        elif isinstance(node, Report):
            self.report(node.message)
        elif isinstance(node, MatmulTile):
            emit_matmul_tile(self, node, env)
        else:
            raise CodegenError(f"kernel {self.kernel.name}: cannot compile {type(node).__name__}")

    def _if(self, node: If, env: Env) -> None:
        b = self.builder
        cond = self.expr(node.cond)
        if node.otherwise is None:
            with b.if_then(cond):
                self.stmt(node.then, dict(env))
        else:
            with b.if_else(cond) as (then, otherwise):
                with then:
                    self.stmt(node.then, dict(env))
                with otherwise:
                    self.stmt(node.otherwise, dict(env))
        self._env = env

    def _loop(self, node: Loop, env: Env) -> None:
        if node.kind in (LoopKind.GPU_BLOCK, LoopKind.GPU_THREAD):
            raise CodegenError(
                f"kernel {self.kernel.name}: loop {node.var.name} is bound to "
                f"{node.kind.value}, which CPU target {self.target.name} cannot run; "
                "schedule it for the CPU first"
            )
        extent = self.expr(node.extent)
        if node.kind is LoopKind.PARALLEL and not self.in_parallel:
            outline_parallel(self, node, env, extent)
        else:
            # a parallel loop nested in a parallel body runs serially inside its chunk
            self.counted_loop(node, env, I64(0), extent)
        self._env = env

    def counted_loop(self, node: Loop, env: Env, begin: ir.Value, end: ir.Value) -> None:
        """``for var in [begin, end): body`` with ``node``'s schedule metadata."""
        b = self.builder
        preheader = b.block
        header = self.function.append_basic_block(f"{node.var.name}.header")
        body = self.function.append_basic_block(f"{node.var.name}.body")
        exit_block = self.function.append_basic_block(f"{node.var.name}.exit")
        b.branch(header)
        b.position_at_end(header)
        index = b.phi(I64, name=node.var.name)
        index.add_incoming(begin, preheader)
        b.cbranch(b.icmp_signed("<", index, end), body, exit_block)
        b.position_at_end(body)
        scope = dict(env)
        scope[node.var.name] = index
        self.stmt(node.body, scope)
        b = self.builder
        following = b.add(index, I64(1), name=f"{node.var.name}.next")
        backedge = b.branch(header)
        index.add_incoming(following, b.block)
        properties = self._loop_properties(node)
        if properties:
            backedge.set_metadata("llvm.loop", _LoopID(self.module, properties))
        b.position_at_end(exit_block)

    def _loop_properties(self, node: Loop) -> list[ir.values.MDValue]:
        def prop(name: str, *values: ir.Value) -> ir.values.MDValue:
            return self.module.add_metadata([ir.MetaDataString(self.module, name), *values])

        if node.kind is LoopKind.VECTORIZE:
            # Without a width LLVM's loop vectorizer (on at -O2) decides by its cost model; an
            # explicit width from a schedule is forced, where LLVM can honour it (forcing a loop
            # it cannot vectorize only makes it print a remark).
            if node.vector_width <= 0 or not vectorizable(node.body):
                return []
            # Unrolling first would let LLVM fully unroll a short loop (a channel block's lanes)
            # and vectorize the loop around it with gathers and scatters instead.
            return [prop("llvm.loop.vectorize.enable", I1(1)),
                    prop("llvm.loop.vectorize.width", I32(node.vector_width)),
                    prop("llvm.loop.unroll.disable")]
        if node.kind is LoopKind.UNROLL:
            extent = _constant_extent(node.extent)
            if extent is not None and extent <= _FULL_UNROLL_LIMIT:
                return [prop("llvm.loop.unroll.full")]
            return [prop("llvm.loop.unroll.enable")]
        return []

    def report(self, message: str) -> None:
        fn = fmath.declare(self.module, "kiln__report_error", VOID, [PTR, PTR])
        self.builder.call(fn, [self.ctx, message_constant(self.module, message)])


def vectorizable(body: Stmt) -> bool:
    """False when ``body`` holds what the loop vectorizer cannot handle: inner loops, calls
    (Report, libm functions), integer powers (a loop), or an accumulation into a local declared
    outside the loop (a float reduction, which must keep its order)."""
    statements = list(walk_stmts(body))
    if any(isinstance(s, Loop | Report | MatmulTile) for s in statements):
        return False
    declared = {s.var.name for s in statements if isinstance(s, Declare)}
    if any(isinstance(s, Assign) and s.var.name not in declared for s in statements):
        return False
    for expr in stmt_exprs(body):
        if isinstance(expr, Unary) and expr.op in fmath.LIBM_UNARY:
            return False
        if isinstance(expr, Binary) and (expr.op in ("pow", "atan2") or (
                expr.op == "rem" and expr.dtype.is_float)):
            return False
    return True


def _constant_extent(extent: Expr) -> int | None:
    value = getattr(extent, "value", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def message_constant(module: ir.Module, message: str) -> ir.GlobalVariable:
    """A private NUL-terminated C string constant holding ``message`` (one per text)."""
    data = message.encode("utf-8") + b"\0"
    name = f".kiln.message.{len(data)}.{_fnv1a(data):016x}"
    existing = module.globals.get(name)
    if isinstance(existing, ir.GlobalVariable):
        return existing
    array_type = ir.ArrayType(ir.IntType(8), len(data))
    variable = ir.GlobalVariable(module, array_type, name=name)
    variable.linkage = "private"
    variable.global_constant = True
    variable.unnamed_addr = True
    variable.initializer = ir.Constant(array_type, bytearray(data))
    return variable


def _fnv1a(data: bytes) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def declare_kernel(module: ir.Module, kernel: Kernel, last: str
                   ) -> tuple[ir.Function, dict[str, ir.Value]]:
    """``void @<kernel.name>(ptr p_0, ..., ptr p_{n-1}, ptr <last>)`` (nounwind, each pointer
    ``noalias`` unless its buffer is passed twice) and its pointer argument per buffer name."""
    params = kernel.params
    function = ir.Function(module, ir.FunctionType(VOID, [PTR] * (len(params) + 1)),
                           name=kernel.name)
    function.attributes.add("nounwind")
    uses = Counter(buffer.name for buffer in params)
    buffers: dict[str, ir.Value] = {}
    for argument, buffer in zip(function.args, params, strict=False):
        argument.name = f"p.{buffer.name}"
        if uses[buffer.name] == 1:
            argument.add_attribute("noalias")
        buffers.setdefault(buffer.name, argument)
    function.args[-1].name = last
    return function, buffers


def emit_kernel(module: ir.Module, kernel: Kernel, target: Target,
                export: bool = False) -> ir.Function:
    """Define ``void @<kernel.name>(ptr p_0, ..., ptr p_{n-1}, ptr ctx)`` in ``module``.

    Internal linkage unless ``export`` (tests call exported kernels directly)."""
    if target.is_gpu:
        raise CodegenError(f"kernel {kernel.name}: {target.name} is not a CPU target")
    if kernel.name in module.globals:
        raise CodegenError(f"kernel {kernel.name} is already defined in module {module.name}")
    function, buffers = declare_kernel(module, kernel, "ctx")
    function.linkage = "external" if export else "internal"
    ctx = function.args[-1]
    FunctionEmitter(kernel, target, function, buffers, ctx, in_parallel=False).run(
        kernel.body, {})
    return function


__all__ = ["declare_kernel", "emit_kernel", "FunctionEmitter", "Local", "constant",
           "message_constant"]
