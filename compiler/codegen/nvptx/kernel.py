"""``emit_gpu_kernel``: one kernel in GPU form -> one NVPTX kernel function (``.entry``).

The function is ``void @<kernel.name>(ptr p_0, ..., ptr p_{n-1}, ptr error)``: one global
memory pointer per ``kernel.params`` buffer, then the device error word (a u32 the runtime
zeroes before a run). It is annotated as a kernel with ``maxntidx`` = the block size.

GPU form (compiler/lower/kernel_ir.py): the top ``GPU_BLOCK`` loop's variable is
``blockIdx.x``; statements outside ``GPU_THREAD`` loops are uniform (every thread runs them);
each ``GPU_THREAD`` loop is a phase whose variable is ``threadIdx.x``, followed by a block-wide
barrier (``bar.sync 0``), which separates every two phases in execution order. Other loops
(serial or unrolled, the only kinds the form allows inside a block) are counted loops.
``launch_config`` checks the form (lower/gpu/form.py ``check_gpu_form``) before emission.
``Kernel.shared`` arrays are static ``addrspace(3)`` globals; ``Kernel.thread_local`` arrays
are a private array per thread (an ``alloca``, registers once SROA sees constant indices),
addressed by every index but the first (the thread's own, by the contract).

``BlockReduce``: each warp folds its lanes with ``shfl.sync.down`` (lanes past the block's
end masked out), lane 0 of each warp writes its partial to a shared array, a barrier, then
every thread folds the partials in warp order (the same value in every thread), and a barrier
before the shared array can be reused.

``Report``: the first failing thread's ``cmpxchg`` stores the message's code (1-based index
into the artifact's message table) into the error word; the runtime raises with that message.

A kernel not in GPU form (the plan's output copies) is bound by ``bind_to_gpu`` with the GPU
lowering's generic binder: independent outer loops flattened onto blocks x threads, bounds-
guarded; a kernel it cannot bind as one launch runs on one thread of one block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llvmlite import ir

from ...lower.gpu.bind import bind, serial
from ...lower.gpu.form import check_gpu_form, gpu_kernel, phase
from ...lower.kernel_ir import (
    BlockReduce,
    Buffer,
    Kernel,
    Loop,
    LoopKind,
    Stmt,
)
from ..llvm import math as fmath
from ..llvm.expr import load_value, storage_type, store_value
from ..llvm.kernel import I32, I64, VOID, Env, FunctionEmitter, Local, declare_kernel
from ..target import CodegenError, Target
from .libdevice import LibdeviceMath

SHARED = 3  # NVPTX address space of __shared__ memory
WARP = 32


@dataclass(frozen=True)
class LaunchConfig:
    """How the runtime launches a kernel: ``grid`` blocks of ``threads`` threads (1-D)."""

    grid: int
    threads: int


def is_gpu_form(kernel: Kernel) -> bool:
    body = kernel.body
    return isinstance(body, Loop) and body.kind is LoopKind.GPU_BLOCK


def bind_to_gpu(kernel: Kernel) -> Kernel:
    """``kernel`` in GPU form: unchanged if it already is, else bound by the GPU lowering's
    generic binder (lower/gpu/bind.py), kept as one kernel: a kernel the binder would split
    into several launches runs on one thread instead (the plan calls it once)."""
    if is_gpu_form(kernel):
        return kernel
    bound = bind(kernel)
    if len(bound) == 1:
        return bound[0]
    return gpu_kernel(kernel, 1, phase(1, serial(kernel.body)))


def launch_config(kernel: Kernel) -> LaunchConfig:
    """Grid and block size of a kernel in GPU form; ``GpuFormError`` (naming the kernel and
    the fault) for a kernel that breaks the form's contract."""
    grid, threads = check_gpu_form(kernel)
    return LaunchConfig(grid, threads)


def _intrinsic(module: ir.Module, name: str, ret: ir.Type, args: Sequence[ir.Type]
               ) -> ir.Function:
    return fmath.declare(module, name, ret, args)


class GpuEmitter(LibdeviceMath, FunctionEmitter):
    """Emits a kernel in GPU form; ``ctx`` is the error word, ``messages`` the artifact's
    message table (extended with this kernel's Report texts)."""

    def __init__(self, kernel: Kernel, target: Target, function: ir.Function,
                 buffers: dict[str, ir.Value], error_word: ir.Value, messages: list[str],
                 threads: int) -> None:
        super().__init__(kernel, target, function, buffers, error_word, in_parallel=True)
        self.messages = messages
        self.threads = threads
        entry = self.allocas
        tid = entry.call(_intrinsic(self.module, "llvm.nvvm.read.ptx.sreg.tid.x", I32, []), [])
        self.tid32 = tid
        self.tid = entry.zext(tid, I64, name="tid")
        ctaid = entry.call(_intrinsic(self.module, "llvm.nvvm.read.ptx.sreg.ctaid.x", I32, []),
                           [])
        self.ctaid = entry.zext(ctaid, I64, name="ctaid")
        self.shared: dict[str, ir.Value] = {b.name: self._shared_array(f"shared.{b.name}",
                                                                       storage_type(b.dtype),
                                                                       b.numel)
                                            for b in kernel.shared}
        self.private: dict[str, tuple[ir.Value, Buffer]] = {}
        for buffer in kernel.thread_local:
            if not buffer.shape or buffer.strides is not None:
                raise CodegenError(f"kernel {kernel.name}: thread_local {buffer.name} needs a "
                                   "row-major shape (threads, ...)")
            own = Buffer(buffer.name, buffer.dtype, buffer.shape[1:])
            slot = entry.alloca(storage_type(buffer.dtype), size=I64(max(own.numel, 1)),
                                name=f"local.{buffer.name}")
            self.private[buffer.name] = (slot, own)

    def _shared_array(self, name: str, element: ir.Type, count: int) -> ir.Value:
        """A pointer (to ``element``) to a static shared array of ``count`` elements."""
        existing = self.module.globals.get(name)
        if existing is None:
            array = ir.ArrayType(element, max(count, 1))
            existing = ir.GlobalVariable(self.module, array, name, addrspace=SHARED)
            existing.linkage = "internal"
            existing.initializer = ir.Constant(array, ir.Undefined)
            existing.align = 16
        return existing.bitcast(element.as_pointer(SHARED))

    # -- addressing --------------------------------------------------------------------------

    def address(self, buffer: Buffer, indices: Sequence[ir.Value]) -> ir.Value:
        if buffer.name in self.shared:
            return self.element(self.shared[buffer.name], indices, buffer)
        if buffer.name in self.private:
            slot, own = self.private[buffer.name]
            return self.element(slot, indices[1:], own)
        return super().address(buffer, indices)

    # -- statements --------------------------------------------------------------------------

    def run(self, body: Stmt, env: Env) -> None:
        assert isinstance(body, Loop)  # the GPU_BLOCK loop (checked by launch_config)
        scope = dict(env)
        scope[body.var.name] = self.ctaid
        self.stmt(body.body, scope)
        self.finish()

    def stmt(self, node: Stmt, env: Env) -> None:
        if isinstance(node, BlockReduce):
            self._env = env
            self.block_reduce(node)
        else:
            super().stmt(node, env)

    def _loop(self, node: Loop, env: Env) -> None:
        if node.kind is LoopKind.GPU_THREAD:
            scope = dict(env)
            scope[node.var.name] = self.tid
            self.stmt(node.body, scope)
            self.barrier()
        else:  # serial (or unrolled) loops: the form has no other kind inside a block
            self.counted_loop(node, env, I64(0), self.expr(node.extent))
        self._env = env

    def barrier(self) -> None:
        self.builder.call(_intrinsic(self.module, "llvm.nvvm.barrier0", VOID, []), [])

    def report(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)
        code = I32(self.messages.index(message) + 1)
        # the first failure wins; later ones leave the word as it is
        self.builder.cmpxchg(self.ctx, I32(0), code, "monotonic", "monotonic")

    # -- block reduction ---------------------------------------------------------------------

    def block_reduce(self, node: BlockReduce) -> None:
        b = self.builder
        binding = self.env_lookup(node.var.name)
        assert isinstance(binding, Local)  # a declared uniform local (checked by the form)
        dtype = node.var.dtype
        slot, _ = self.private[node.source.name]
        value = load_value(b, slot, dtype)
        threads = self.threads
        lane = b.and_(self.tid32, I32(WARP - 1))
        warp = b.lshr(self.tid32, I32(5))
        full_warps, rest = divmod(threads, WARP)
        mask: ir.Value = I32(-1)
        lanes: ir.Value = I32(WARP)
        if rest:  # the last warp is partial: only its first `rest` lanes exist
            last = b.icmp_unsigned("==", warp, I32(full_warps))
            mask = b.select(last, I32((1 << rest) - 1), I32(-1))
            lanes = b.select(last, I32(rest), I32(WARP))
        offset = WARP // 2
        while offset:
            if offset < threads:
                other = self._shuffle_down(value, offset, mask)
                combined = self.binary(node.op, value, other, dtype)
                exists = b.icmp_unsigned("<", b.add(lane, I32(offset)), lanes)
                value = b.select(exists, combined, value)
            offset //= 2
        warps = -(-threads // WARP)
        partials = self._shared_array(f"reduce.{dtype.value}", storage_type(dtype), warps)
        with b.if_then(b.icmp_unsigned("==", lane, I32(0))):
            store_value(b, value, b.gep(partials, [warp], source_etype=storage_type(dtype)),
                        dtype)
        self.barrier()
        total = load_value(b, partials, dtype)
        for w in range(1, warps):
            partial = load_value(b, b.gep(partials, [I32(w)], source_etype=storage_type(dtype)),
                                 dtype)
            total = self.binary(node.op, total, partial, dtype)
        self.barrier()  # every thread has read the partials before they can be overwritten
        b.store(total, binding.slot)

    def _shuffle_down(self, value: ir.Value, offset: int, mask: ir.Value) -> ir.Value:
        """``value`` of the lane ``offset`` above (``shfl.sync.down``, 32 bits at a time)."""
        b = self.builder
        shfl = _intrinsic(self.module, "llvm.nvvm.shfl.sync.down.i32", I32,
                          [I32, I32, I32, I32])

        def word(bits: ir.Value) -> ir.Value:
            return b.call(shfl, [mask, bits, I32(offset), I32(WARP - 1)])

        ty = value.type
        width = 64 if isinstance(ty, ir.DoubleType) else (
            32 if isinstance(ty, ir.FloatType) else ty.width)
        if width == 64:
            bits = b.bitcast(value, I64) if isinstance(ty, ir.DoubleType) else value
            low = word(b.trunc(bits, I32))
            high = word(b.trunc(b.lshr(bits, I64(32)), I32))
            joined = b.or_(b.zext(low, I64), b.shl(b.zext(high, I64), I64(32)))
            return b.bitcast(joined, ty) if isinstance(ty, ir.DoubleType) else joined
        if isinstance(ty, ir.FloatType):
            return b.bitcast(word(b.bitcast(value, I32)), ty)
        if width < 32:
            return b.trunc(word(b.zext(value, I32)), ty)
        return word(value)


def emit_gpu_kernel(module: ir.Module, kernel: Kernel, target: Target,
                    messages: list[str]) -> tuple[ir.Function, LaunchConfig]:
    """Define the kernel entry ``@<kernel.name>`` of ``kernel`` (bound with ``bind_to_gpu``
    first) in ``module``; its Report texts are added to ``messages``."""
    if not target.is_gpu:
        raise CodegenError(f"kernel {kernel.name}: {target.name} is not a GPU target")
    kernel = bind_to_gpu(kernel)
    config = launch_config(kernel)
    function, buffers = declare_kernel(module, kernel, "error")
    GpuEmitter(kernel, target, function, buffers, function.args[-1], messages, config.threads).run(
        kernel.body, {})
    for key, value in (("kernel", 1), ("maxntidx", config.threads)):
        module.add_named_metadata("nvvm.annotations",
                                  [function, ir.MetaDataString(module, key), I32(value)])
    return function, config


__all__ = ["GpuEmitter", "LaunchConfig", "bind_to_gpu", "emit_gpu_kernel", "is_gpu_form",
           "launch_config"]
