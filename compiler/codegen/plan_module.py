"""The whole-model LLVM module: every kernel, the plan function and the model descriptor.

``kiln__plan_run(ctx, inputs, outputs, arena, weights, dims)`` calls the kernels in plan order
with pointers into the caller's inputs and outputs, the weights blob and the arena; after a
kernel that may report a data error it asks the runtime (``kiln__failed``) and stops with status
1. ``kiln__model`` is the ``kiln_model_desc`` of runtime/include/kiln_internal.h, through which
the C runtime implements the public ABI of kiln.h.

A plan with extents known only at run time also gets ``kiln__bind(input_shapes, dims, info)``,
which reads the input symbols into ``dims`` and checks every input extent (static, repeated
symbol, polynomial, bounds; ``info`` says which failed), and ``kiln__shapes(dims, before_run,
out)``, which writes every output's extents (-1 before the run for one that depends on values).
Its plan function first sizes the arena for the run (``kiln__arena``, offsets computed from
``dims``) and allocates each dynamic buffer (``kiln__dynamic``) right before its first call;
either returning NULL stops the run with status 2 (out of memory). Such a model may carry
*specialized* plans: static plans of the same model at given input shapes (their kernels
prefixed ``sN_``, the weights blob shared), which the runtime runs instead of the general plan
when the input shapes match.

A profiling build (``profile=True``) brackets each kernel call ``i`` of the plan with
``kiln__profile_begin(ctx, i)`` / ``kiln__profile_end(ctx, i)`` and points the descriptor at a
``kiln_profile_desc``: per call, the kernel's name, its source ops (the graph nodes it
implements, comma-separated) and its static FLOPs and bytes (analysis/kernel_cost.py). Without
it the module has neither: no timer call, no table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from llvmlite import ir

from kiln.runtime.abi import (
    ABI_VERSION,
    ARENA_SYMBOL,
    BIND_FAILURES,
    DTYPE_CODES,
    DYNAMIC_SYMBOL,
    FAILED_SYMBOL,
    MODEL_SYMBOL,
    PROFILE_BEGIN_SYMBOL,
    PROFILE_END_SYMBOL,
    REPORT_ERROR_SYMBOL,
    SOURCE_OPS_SEPARATOR,
    WEIGHTS_SYMBOL,
)

from ..analysis.kernel_cost import KernelCost, kernel_cost
from ..lower.from_graph import defined_slots
from ..lower.kernel_ir import (
    DIMS,
    Binary,
    Buffer,
    Cast,
    Compare,
    Const,
    Expr,
    Load,
    Select,
)
from ..plan.plan import Place, Plan, dims_read
from .llvm import create_module, emit_kernel
from .target import Target

_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_PTR = ir.PointerType(_I8)
_TENSOR_INFO = ir.LiteralStructType([_PTR, _I32, _I32, _PTR])
_RUN_TYPE = ir.FunctionType(_I32, [_PTR, _PTR, _PTR, _PTR, _PTR, _PTR])
_BIND_TYPE = ir.FunctionType(_I32, [_PTR, _PTR, _PTR])
_SHAPES_TYPE = ir.FunctionType(ir.VoidType(), [_PTR, _I32, _PTR])
_MODEL_DESC = ir.LiteralStructType(
    [_I32, _I32, _I32, _I32, _PTR, _PTR, _I64, _I64, _PTR, _I64, _RUN_TYPE.as_pointer(), _PTR,
     _I32, _I32, _BIND_TYPE.as_pointer(), _SHAPES_TYPE.as_pointer(), _PTR, _I32, _PTR]
)
_KERNEL_INFO = ir.LiteralStructType([_PTR, _PTR, _I64, _I64])
_SPECIALIZED = ir.LiteralStructType([_PTR, _RUN_TYPE.as_pointer(), _I64])
_PROFILE_DESC = ir.LiteralStructType([_I32, _PTR])
_PROFILE_HOOK = ir.FunctionType(ir.VoidType(), [_PTR, _I32])


def build_module(
    plan: Plan,
    target: Target,
    names: tuple[list[str], list[str]],
    weights_external: bool,
    weights_checksum: int,
    profile: bool = False,
    specialized: Sequence[Plan] = (),
) -> ir.Module:
    """The LLVM module of a planned model; ``names`` are the input and output tensor names;
    ``profile`` compiles in the per-kernel timers and the kernel table; ``specialized`` are
    static plans of the same model (same weights blob) for some input shapes."""
    module = create_module("kiln_model", target)
    run = _plan_function(module, plan, _kernels(module, plan, target, ""), profile,
                         "kiln__plan_run")
    entries = []
    for number, static in enumerate(specialized):
        prefix = f"s{number}_"
        function = _plan_function(module, static, _kernels(module, static, target, prefix),
                                  False, f"kiln__plan_run_{prefix}")
        extents = [int(d) for b in static.inputs for d in b.shape]
        shapes = _constant(module, f"kiln__specialized.{number}", ir.ArrayType(
            _I64, max(len(extents), 1)), [ir.Constant(_I64, d) for d in extents or [0]])
        entries.append(ir.Constant(_SPECIALIZED, [shapes, function,
                                                  ir.Constant(_I64, static.arena_bytes)]))
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
        ir.Constant(_I32, len(plan.dims.names)),
        ir.Constant(_I32, len(plan.dynamic)),
        *_shape_functions(module, plan),
        ir.Constant(_I32, len(entries)),
        _constant(module, "kiln__specialized", ir.ArrayType(_SPECIALIZED, len(entries)), entries)
        if entries else ir.Constant(_PTR, None),
    ])
    return module


def _kernels(module: ir.Module, plan: Plan, target: Target, prefix: str
             ) -> dict[str, ir.Function]:
    """Each distinct kernel of ``plan`` emitted (named ``prefix`` + its name), by its name."""
    functions: dict[str, ir.Function] = {}
    for call in plan.calls:
        if call.kernel.name not in functions:
            kernel = replace(call.kernel, name=prefix + call.kernel.name)
            functions[call.kernel.name] = emit_kernel(module, kernel, target)
            if not plan.is_static:
                # inlined into the plan function, a kernel's loops over run-time extents lose
                # the noalias parameters they vectorize with (LLVM leaves them scalar)
                functions[call.kernel.name].attributes.add("noinline")
    return functions


def _declared(module: ir.Module, name: str, type_: ir.FunctionType) -> ir.Function:
    """The runtime service ``name``, declared once per module."""
    found = module.globals.get(name)
    return found if found is not None else ir.Function(module, type_, name)


def _plan_function(module: ir.Module, plan: Plan, functions: dict[str, ir.Function],
                   profile: bool, name: str) -> ir.Function:
    failed = _declared(module, FAILED_SYMBOL, ir.FunctionType(_I32, [_PTR]))
    if profile:
        begin = ir.Function(module, _PROFILE_HOOK, PROFILE_BEGIN_SYMBOL)
        end = ir.Function(module, _PROFILE_HOOK, PROFILE_END_SYMBOL)
    run = ir.Function(module, _RUN_TYPE, name)
    ctx, inputs, outputs, arena, weights, dims_arg = run.args
    builder = ir.IRBuilder(run.append_basic_block("entry"))
    dims = _Extents(builder, dims_arg)
    slots = {
        Place.INPUT: builder.bitcast(inputs, _PTR.as_pointer()),
        Place.OUTPUT: builder.bitcast(outputs, _PTR.as_pointer()),
    }
    if plan.arena_extent is not None:
        grow = _declared(module, ARENA_SYMBOL, ir.FunctionType(_PTR, [_PTR, _I64]))
        arena = _allocated(builder, builder.call(grow, [ctx, dims.value(plan.arena_extent)]))
    bases = {Place.ARENA: arena, Place.WEIGHT: weights}
    dynamic_fn = _declared(module, DYNAMIC_SYMBOL, ir.FunctionType(_PTR, [_PTR, _I32, _I64]))
    dynamic: dict[int, ir.Value] = {}
    for index, call in enumerate(plan.calls):
        for number, buffer in enumerate(plan.dynamic):
            if buffer.first_call == index:
                size = dims.value(buffer.nbytes)
                dynamic[number] = _allocated(builder, builder.call(
                    dynamic_fn, [ctx, ir.Constant(_I32, number), size]))
        args = []
        for location in call.args:
            if location.place in slots:
                slot = builder.gep(slots[location.place], [ir.Constant(_I64, location.at)])
                args.append(builder.load(slot))
            elif location.place is Place.DIMS:
                args.append(dims_arg)
            elif location.place is Place.DYNAMIC:
                args.append(dynamic[int(location.at)])  # type: ignore[arg-type]
            else:
                args.append(builder.gep(bases[location.place], [dims.value(location.at)]))
        if profile:
            builder.call(begin, [ctx, ir.Constant(_I32, index)])
        builder.call(functions[call.kernel.name], [*args, ctx])
        if profile:
            builder.call(end, [ctx, ir.Constant(_I32, index)])
        if call.may_report:
            status = builder.call(failed, [ctx])
            with builder.if_then(builder.icmp_signed("!=", status, ir.Constant(_I32, 0))):
                builder.ret(ir.Constant(_I32, 1))
        for slot in sorted(defined_slots(call.kernel)):
            _check_not_negative(module, builder, ctx, dims, slot, plan.dims.names[slot], index)
    builder.ret(ir.Constant(_I32, 0))
    return run


def _check_not_negative(module: ir.Module, builder: ir.IRBuilder, ctx: ir.Value,
                        dims: _Extents, slot: int, name: str, call: int) -> None:
    """Stop the run with a reported error when a kernel set extent ``slot`` negative (a value
    the lowering should have rejected; never a buffer of negative size)."""
    report = _declared(module, REPORT_ERROR_SYMBOL,
                       ir.FunctionType(ir.VoidType(), [_PTR, _PTR]))
    value = builder.load(builder.gep(dims.dims, [ir.Constant(_I64, slot)]))
    with builder.if_then(builder.icmp_signed("<", value, ir.Constant(_I64, 0)), likely=False):
        message = _cstring(module, f"kiln__negative.{call}.{slot}",
                           f"the run computed a negative extent for {name}")
        builder.call(report, [ctx, message])
        builder.ret(ir.Constant(_I32, 1))


def _allocated(builder: ir.IRBuilder, pointer: ir.Value) -> ir.Value:
    """``pointer``, after returning status 2 (out of memory) from the plan when it is NULL."""
    with builder.if_then(builder.icmp_unsigned("==", pointer, ir.Constant(_PTR, None)),
                         likely=False):
        builder.ret(ir.Constant(_I32, 2))
    return pointer


class _Extents:
    """Emits run-time extent expressions (i64 arithmetic over ``DIMS`` loads), each once."""

    _BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "sdiv", "rem": "srem"}

    def __init__(self, builder: ir.IRBuilder, dims: ir.Value) -> None:
        self.builder = builder
        self.dims = builder.bitcast(dims, _I64.as_pointer())
        self._done: dict[int, ir.Value] = {}

    def value(self, extent: int | Expr) -> ir.Value:
        if isinstance(extent, int):
            return ir.Constant(_I64, extent)
        if id(extent) not in self._done:
            self._done[id(extent)] = self._emit(extent)
        return self._done[id(extent)]

    def _emit(self, node: Expr) -> ir.Value:
        b = self.builder
        if isinstance(node, Const):
            return ir.Constant(_I64 if node.dtype.is_int else ir.IntType(1), int(node.value))
        if isinstance(node, Load) and node.buffer == DIMS:
            return b.load(b.gep(self.dims, [self.value(node.indices[0])]))
        if isinstance(node, Binary) and node.op in self._BINARY:
            return getattr(b, self._BINARY[node.op])(self.value(node.a), self.value(node.b))
        if isinstance(node, Binary) and node.op in ("min", "max"):
            a, c = self.value(node.a), self.value(node.b)
            return b.select(b.icmp_signed("<" if node.op == "min" else ">", a, c), a, c)
        if isinstance(node, Compare):
            return b.icmp_signed(_COMPARISONS[node.op], self.value(node.a), self.value(node.b))
        if isinstance(node, Select):
            return b.select(self.value(node.cond), self.value(node.a), self.value(node.b))
        if isinstance(node, Cast) and node.dtype.is_int and node.x.dtype.is_int:
            return self.value(node.x)
        raise ValueError(f"a run-time extent cannot be computed from {node}")


_COMPARISONS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _shape_functions(module: ir.Module, plan: Plan) -> list[ir.Constant]:
    """``kiln__bind``, ``kiln__shapes`` and the output table of dynamic buffers, or three null
    pointers for a static plan."""
    if plan.is_static:
        return [ir.Constant(_BIND_TYPE.as_pointer(), None),
                ir.Constant(_SHAPES_TYPE.as_pointer(), None), ir.Constant(_PTR, None)]
    table = _constant(module, "kiln__output_dynamic", ir.ArrayType(_I32, len(plan.outputs)),
                      [ir.Constant(_I32, k) for k in plan.output_dynamic])
    return [_bind_function(module, plan), _shapes_function(module, plan), table]


def _bind_function(module: ir.Module, plan: Plan) -> ir.Function:
    """``int32 kiln__bind(const int64_t *const *shapes, int64_t *dims, int64_t *info)``: 0, or
    a ``BIND_FAILURES`` code with ``info`` = input, axis, extent given, expected (or smallest),
    largest."""
    function = ir.Function(module, _BIND_TYPE, "kiln__bind")
    function.linkage = "internal"
    shapes_arg, dims_arg, info_arg = function.args
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    dims = _Extents(builder, dims_arg)
    shapes = builder.bitcast(shapes_arg, _I64.as_pointer().as_pointer())
    info = builder.bitcast(info_arg, _I64.as_pointer())

    def extent(index: int, axis: int) -> ir.Value:
        row = builder.load(builder.gep(shapes, [ir.Constant(_I64, index)]))
        return builder.load(builder.gep(row, [ir.Constant(_I64, axis)]))

    def check(ok: ir.Value, code: str, index: int, axis: int, given: ir.Value,
              expected: ir.Value, largest: ir.Value | None = None) -> None:
        with builder.if_then(builder.not_(ok), likely=False):
            values = [ir.Constant(_I64, index), ir.Constant(_I64, axis), given, expected,
                      largest if largest is not None else ir.Constant(_I64, -1)]
            for position, value in enumerate(values):
                builder.store(value, builder.gep(info, [ir.Constant(_I64, position)]))
            builder.ret(ir.Constant(_I32, BIND_FAILURES[code]))

    bound_slots = {(b.input, b.axis): b.slot for b in plan.dims.input_dims}
    symbol_of = {slot: name for name, slot in plan.dims.symbols.items()}
    for index, buffer in enumerate(plan.inputs):
        for axis, size in enumerate(buffer.shape):
            given = extent(index, axis)
            if (index, axis) in bound_slots:
                slot = bound_slots[index, axis]
                builder.store(given, builder.gep(dims.dims, [ir.Constant(_I64, slot)]))
                if symbol_of[slot] in plan.bounds:
                    low, high = plan.bounds[symbol_of[slot]]
                    ok = builder.and_(builder.icmp_signed(">=", given, ir.Constant(_I64, low)),
                                      builder.icmp_signed("<=", given, ir.Constant(_I64, high)))
                    check(ok, "bounds", index, axis, given, ir.Constant(_I64, low),
                          ir.Constant(_I64, high))
                else:  # the type rules assume every symbol is at least 1 (x[:, 1:] is seq-1)
                    check(builder.icmp_signed(">=", given, ir.Constant(_I64, 1)), "empty",
                          index, axis, given, ir.Constant(_I64, 1))
            elif isinstance(size, int):
                check(builder.icmp_signed("==", given, ir.Constant(_I64, size)), "extent",
                      index, axis, given, ir.Constant(_I64, size))
    for checked in plan.dims.input_checks:
        given = extent(checked.input, checked.axis)
        expected = dims.value(checked.extent)
        check(builder.icmp_signed("==", given, expected), "extent", checked.input,
              checked.axis, given, expected)
    builder.ret(ir.Constant(_I32, 0))
    return function


def _shapes_function(module: ir.Module, plan: Plan) -> ir.Function:
    """``void kiln__shapes(const int64_t *dims, int32 before_run, int64_t *out)``: every
    output's extents in order; before the run, -1 for one that depends on values."""
    function = ir.Function(module, _SHAPES_TYPE, "kiln__shapes")
    function.linkage = "internal"
    dims_arg, before_run, out_arg = function.args
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    out = builder.bitcast(out_arg, _I64.as_pointer())
    known = {b.slot for b in plan.dims.input_dims}
    position = 0
    for buffer in plan.outputs:
        for size in buffer.shape:
            target = builder.gep(out, [ir.Constant(_I64, position)])
            position += 1
            if isinstance(size, int) or dims_read(size) <= known:
                builder.store(_Extents(builder, dims_arg).value(size), target)
                continue
            with builder.if_else(builder.icmp_signed("!=", before_run, ir.Constant(_I32, 0))
                                 ) as (before, after):
                with before:
                    builder.store(ir.Constant(_I64, -1), target)
                with after:
                    builder.store(_Extents(builder, dims_arg).value(size), target)
    builder.ret_void()
    return function


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
                          [ir.Constant(_I64, d if isinstance(d, int) else -1)
                           for d in buffer.shape])
        entries.append(ir.Constant(_TENSOR_INFO, [
            _cstring(module, f"{symbol}.name.{index}", name),
            ir.Constant(_I32, DTYPE_CODES[buffer.dtype.value]),
            ir.Constant(_I32, len(buffer.shape)),
            shape,
        ]))
    return _constant(module, symbol, ir.ArrayType(_TENSOR_INFO, len(entries)), entries)
