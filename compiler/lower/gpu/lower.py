"""Lowering a graph for the CUDA target: every kernel in GPU form.

``lower_graph_gpu`` lowers the graph as the CPU path does (``lower_graph`` with
``gpu_machine()``: buffers, constants, scratch), then replaces each node's kernels: a node
with a GPU schedule (``SCHEDULES``: elementwise ops and groups, reductions, MatMul/Gemm, Conv,
Softmax/LogSoftmax, Layer-/Instance-/Group-/RMSNormalization) is lowered again by it; any
other node keeps its CPU kernels, bound generically (``bind``). A schedule may decline a node
(returning None), which then is bound too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ...ir.graph import Graph
from ...ir.op import Op
from ...ir.schema import op_def
from ...machine import Machine
from ..from_graph import LoweredGraph, LoweredNode, lower_graph, require_static
from ..kernel_ir import Buffer, Kernel
from ..ops.elementwise import SCALAR
from ..registry import LowerContext
from .bind import bind
from .conv import conv_gpu
from .elementwise import elementwise_gpu
from .form import check_gpu_form
from .fused import fused_gpu
from .matmul import gemm_gpu, matmul_gpu
from .norm import group_norm_gpu, instance_norm_gpu, layer_norm_gpu, rms_norm_gpu, softmax_gpu
from .reduce import arg_reduce_gpu, reduce_gpu

Schedule = Callable[[LowerContext], list[Kernel] | None]

SCHEDULES: dict[Op, Schedule] = {
    **{op: elementwise_gpu for op in SCALAR},
    Op.MATMUL: matmul_gpu,
    Op.GEMM: gemm_gpu,
    Op.CONV: conv_gpu,
    Op.SOFTMAX: softmax_gpu,
    Op.LOG_SOFTMAX: softmax_gpu,
    Op.LAYER_NORMALIZATION: layer_norm_gpu,
    Op.INSTANCE_NORMALIZATION: instance_norm_gpu,
    Op.GROUP_NORMALIZATION: group_norm_gpu,
    Op.RMS_NORMALIZATION: rms_norm_gpu,
    Op.ARGMAX: arg_reduce_gpu,
    Op.ARGMIN: arg_reduce_gpu,
    **{op: reduce_gpu for op in (
        Op.REDUCE_SUM, Op.REDUCE_SUM_SQUARE, Op.REDUCE_L1, Op.REDUCE_L2, Op.REDUCE_LOG_SUM,
        Op.REDUCE_MEAN, Op.REDUCE_MAX, Op.REDUCE_MIN, Op.REDUCE_PROD,
        Op.REDUCE_LOG_SUM_EXP)},
}
SCHEDULES[Op.FUSED] = lambda ctx: fused_gpu(ctx, SCHEDULES)


def gpu_machine() -> Machine:
    """The ``Machine`` lowerings and passes see for the CUDA target: scalar (one f32 lane, so
    no CPU vector schedules), caches of an SM (48 KiB shared memory / L1, 40 MiB L2), no
    channel-blocked layouts (the GPU schedules tile plain NCHW)."""
    return Machine(vector_bits=32, vector_registers=16, l1_bytes=48 * 1024,
                   l2_bytes=40 * 1024 * 1024, blocked_layouts=False)


def lower_graph_gpu(graph: Graph) -> LoweredGraph:
    """Lower every node of a static graph to kernels in GPU form (see the module docstring);
    raises for extents known only at run time (the CUDA target compiles static shapes)."""
    lowered = lower_graph(graph, gpu_machine())
    require_static(lowered.buffers.values(), "a CUDA artifact")
    steps = []
    for position, step in enumerate(lowered.steps):
        kernels, scratch = _scheduled(lowered, step, position)
        for kernel in kernels:
            check_gpu_form(kernel)
        steps.append(LoweredNode(step.node, tuple(kernels), scratch))
    return replace(lowered, steps=tuple(steps))


def _scheduled(lowered: LoweredGraph, step: LoweredNode,
               position: int) -> tuple[list[Kernel], tuple[Buffer, ...]]:
    node = step.node
    schedule = SCHEDULES.get(node.op)
    if schedule is not None:
        ctx = LowerContext(
            node,
            op_def(node.op).with_defaults(node.attrs),
            [None if v is None else lowered.buffers[v.name] for v in node.inputs],
            [None if v is None else lowered.buffers[v.name] for v in node.outputs],
            [None if v is None else lowered.constants.get(v.name) for v in node.inputs],
            f"g{position}_{node.op.value}",
            gpu_machine(),
        )
        kernels = schedule(ctx)
        if kernels is not None:
            # a GPU schedule derives no constants (it reads the graph's own)
            assert not ctx.derived
            return kernels, tuple(ctx.scratch_buffers)
    return [k for kernel in step.kernels for k in bind(kernel)], step.scratch
