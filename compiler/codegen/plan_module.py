"""The whole-model LLVM module: every kernel, the plan function and the model descriptor.

``kiln__plan_run(ctx, inputs, outputs, arena, weights)`` calls the kernels in plan order with
pointers into the caller's inputs and outputs, the weights blob and the arena; after a kernel
that may report a data error it asks the runtime (``kiln__failed``) and stops with status 1.
``kiln__model`` is the ``kiln_model_desc`` of runtime/include/kiln_internal.h, through which the
C runtime implements the public ABI of kiln.h.

A profiling build (``profile=True``) brackets each kernel call ``i`` of the plan with
``kiln__profile_begin(ctx, i)`` / ``kiln__profile_end(ctx, i)`` and points the descriptor at a
``kiln_profile_desc``: per call, the kernel's name, its source ops (the graph nodes it
implements, comma-separated) and its static FLOPs and bytes (analysis/kernel_cost.py). Without
it the module has neither: no timer call, no table.
"""

from __future__ import annotations

from llvmlite import ir

from kiln.runtime.abi import (
    ABI_VERSION,
    DTYPE_CODES,
    FAILED_SYMBOL,
    MODEL_SYMBOL,
    PROFILE_BEGIN_SYMBOL,
    PROFILE_END_SYMBOL,
    SOURCE_OPS_SEPARATOR,
    WEIGHTS_SYMBOL,
)

from ..analysis.kernel_cost import KernelCost, kernel_cost
from ..lower.kernel_ir import Buffer
from ..plan.plan import Place, Plan
from .llvm import create_module, emit_kernel
from .target import Target

_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_PTR = ir.PointerType(_I8)
_TENSOR_INFO = ir.LiteralStructType([_PTR, _I32, _I32, _PTR])
_RUN_TYPE = ir.FunctionType(_I32, [_PTR, _PTR, _PTR, _PTR, _PTR])
_MODEL_DESC = ir.LiteralStructType(
    [_I32, _I32, _I32, _I32, _PTR, _PTR, _I64, _I64, _PTR, _I64, _RUN_TYPE.as_pointer(), _PTR]
)
_KERNEL_INFO = ir.LiteralStructType([_PTR, _PTR, _I64, _I64])
_PROFILE_DESC = ir.LiteralStructType([_I32, _PTR])
_PROFILE_HOOK = ir.FunctionType(ir.VoidType(), [_PTR, _I32])


def build_module(
    plan: Plan,
    target: Target,
    names: tuple[list[str], list[str]],
    weights_external: bool,
    weights_checksum: int,
    profile: bool = False,
) -> ir.Module:
    """The LLVM module of a planned model; ``names`` are the input and output tensor names;
    ``profile`` compiles in the per-kernel timers and the kernel table."""
    module = create_module("kiln_model", target)
    functions: dict[str, ir.Function] = {}
    for call in plan.calls:
        if call.kernel.name not in functions:
            functions[call.kernel.name] = emit_kernel(module, call.kernel, target)
    run = _plan_function(module, plan, functions, profile)
    input_names, output_names = names
    inputs = _tensor_table(module, "kiln__inputs", plan.inputs, input_names)
    outputs = _tensor_table(module, "kiln__outputs", plan.outputs, output_names)
    if weights_external or not plan.weights:
        weights_ptr: ir.Constant = ir.Constant(_PTR, None)
    else:
        blob = ir.GlobalVariable(module, ir.ArrayType(_I8, len(plan.weights)), WEIGHTS_SYMBOL)
        blob.linkage = "external"
        weights_ptr = blob.bitcast(_PTR)
    desc = ir.GlobalVariable(module, _MODEL_DESC, MODEL_SYMBOL)
    desc.global_constant = True
    desc.initializer = ir.Constant(_MODEL_DESC, [
        ir.Constant(_I32, ABI_VERSION),
        ir.Constant(_I32, len(plan.inputs)),
        ir.Constant(_I32, len(plan.outputs)),
        ir.Constant(_I32, int(weights_external)),
        inputs,
        outputs,
        ir.Constant(_I64, plan.arena_bytes),
        ir.Constant(_I64, len(plan.weights)),
        weights_ptr,
        ir.Constant(_I64, weights_checksum),
        run,
        _profile_table(module, plan) if profile else ir.Constant(_PTR, None),
    ])
    return module


def _plan_function(module: ir.Module, plan: Plan, functions: dict[str, ir.Function],
                   profile: bool) -> ir.Function:
    failed = ir.Function(module, ir.FunctionType(_I32, [_PTR]), FAILED_SYMBOL)
    if profile:
        begin = ir.Function(module, _PROFILE_HOOK, PROFILE_BEGIN_SYMBOL)
        end = ir.Function(module, _PROFILE_HOOK, PROFILE_END_SYMBOL)
    run = ir.Function(module, _RUN_TYPE, "kiln__plan_run")
    ctx, inputs, outputs, arena, weights = run.args
    builder = ir.IRBuilder(run.append_basic_block("entry"))
    slots = {
        Place.INPUT: builder.bitcast(inputs, _PTR.as_pointer()),
        Place.OUTPUT: builder.bitcast(outputs, _PTR.as_pointer()),
    }
    bases = {Place.ARENA: arena, Place.WEIGHT: weights}
    for index, call in enumerate(plan.calls):
        args = []
        for location in call.args:
            if location.place in slots:
                slot = builder.gep(slots[location.place], [ir.Constant(_I64, location.at)])
                args.append(builder.load(slot))
            else:
                args.append(builder.gep(bases[location.place], [ir.Constant(_I64, location.at)]))
        if profile:
            builder.call(begin, [ctx, ir.Constant(_I32, index)])
        builder.call(functions[call.kernel.name], [*args, ctx])
        if profile:
            builder.call(end, [ctx, ir.Constant(_I32, index)])
        if call.may_report:
            status = builder.call(failed, [ctx])
            with builder.if_then(builder.icmp_signed("!=", status, ir.Constant(_I32, 0))):
                builder.ret(ir.Constant(_I32, 1))
    builder.ret(ir.Constant(_I32, 0))
    return run


def _profile_table(module: ir.Module, plan: Plan) -> ir.Constant:
    """The ``kiln_profile_desc`` of the plan's kernel calls."""
    costs: dict[str, KernelCost] = {}
    entries = []
    for index, call in enumerate(plan.calls):
        kernel = call.kernel
        if kernel.name not in costs:
            costs[kernel.name] = kernel_cost(kernel)
        ops = SOURCE_OPS_SEPARATOR.join(kernel.source)
        entries.append(ir.Constant(_KERNEL_INFO, [
            _cstring(module, f"kiln__profile.name.{index}", kernel.name),
            _cstring(module, f"kiln__profile.ops.{index}", ops),
            ir.Constant(_I64, costs[kernel.name].flops),
            ir.Constant(_I64, costs[kernel.name].bytes),
        ]))
    table = _constant(module, "kiln__profile.kernels", ir.ArrayType(_KERNEL_INFO, len(entries)),
                      entries)
    return _constant(module, "kiln__profile", _PROFILE_DESC,
                     [ir.Constant(_I32, len(entries)), table])


def _constant(module: ir.Module, name: str, type_: ir.Type, value: object) -> ir.Constant:
    """A private constant global initialized to ``value``, as an ``i8*``."""
    var = ir.GlobalVariable(module, type_, name)
    var.global_constant = True
    var.linkage = "private"
    var.initializer = ir.Constant(type_, value)
    return var.bitcast(_PTR)


def _cstring(module: ir.Module, name: str, text: str) -> ir.Constant:
    data = bytearray(text.encode("utf-8") + b"\0")
    return _constant(module, name, ir.ArrayType(_I8, len(data)), data)


def _tensor_table(
    module: ir.Module, symbol: str, buffers: tuple[Buffer, ...], names: list[str]
) -> ir.Constant:
    entries = []
    for index, (buffer, name) in enumerate(zip(buffers, names, strict=True)):
        shape = _constant(module, f"{symbol}.shape.{index}", ir.ArrayType(_I64, len(buffer.shape)),
                          [ir.Constant(_I64, d) for d in buffer.shape])
        entries.append(ir.Constant(_TENSOR_INFO, [
            _cstring(module, f"{symbol}.name.{index}", name),
            ir.Constant(_I32, DTYPE_CODES[buffer.dtype.value]),
            ir.Constant(_I32, len(buffer.shape)),
            shape,
        ]))
    return _constant(module, symbol, ir.ArrayType(_TENSOR_INFO, len(entries)), entries)
