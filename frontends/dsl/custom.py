"""Custom elementwise ops: plain Python functions on scalars, compiled by numba, run by Kiln
as one more elementwise op (fused with its neighbours, vectorized after inlining).

    @dsl.elementwise
    def swish(x, beta):
        return x / (1.0 + math.exp(-beta * x))

    y = swish(t, 1.5)   # in a traced function: a custom_elementwise node; t and 1.5 broadcast

Called with at least one ``dsl.Tensor``, the function is compiled by numba for the operands'
element types (``error_model="numpy"``: a float division by zero gives inf, as in numpy) and a
``custom_elementwise`` node carrying the LLVM IR is added to the trace. Called with no tensor it
is the plain Python function. Python scalars become constants of the first tensor's element type
(bools stay bool; a float next to integer tensors, or an int too large for them, becomes
f64/i64). The result type is ``dtype`` when the decorator gives one (``@dsl.elementwise(dtype=
dsl.f32)``); otherwise numba's inferred type, narrowed to the widest tensor operand of the same
kind, so that literals do not widen: ``x * 2.0`` of an f32 ``x`` is f32, as numpy computes it.

The carried module is made self-contained here: numba's function behind a plain C signature
(``float (float, float)``; bool as ``i1``), everything inlined into it and its helpers removed,
named ``kiln_custom.<name>.<digest of the IR>`` (equal functions share a symbol and are linked
once), without target triple. It may call only LLVM intrinsics and libm; numba runtime functions
(``math.gamma`` is one) and code that can raise a Python exception (an explicit ``raise``, an
integer power with a negative exponent...) are refused with a message saying so.
``custom_node`` adds the node to a ``GraphBuilder`` directly (the path tracing uses too).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from llvmlite import ir

from kiln.compiler.ir.builder import GraphBuilder
from kiln.compiler.ir.graph import Value
from kiln.compiler.ir.op import Op
from kiln.compiler.ir.rules.custom import LLVM_TYPES, is_linkable
from kiln.compiler.ir.types import DType

from .errors import dsl_error
from .spec import as_dtype
from .tensor import Tensor
from .tracing import current_trace

if TYPE_CHECKING:
    import llvmlite.binding as llvm

# Names inside the module before it gets its symbol; the raise marker is called where numba's
# function reports an exception, so it survives optimization only if one is possible.
_ENTRY, _INNER, _RAISES = "kiln.entry", "kiln.inner", "kiln.raises"


@dataclass(frozen=True)
class CompiledFunction:
    """A custom function compiled for one signature: the ``custom_elementwise`` attributes."""

    name: str
    symbol: str
    llvm_ir: str
    args: tuple[DType, ...]
    result: DType

    @property
    def attrs(self) -> dict[str, Any]:
        return {"name": self.name, "symbol": self.symbol, "llvm_ir": self.llvm_ir,
                "dtype": self.result}


class CustomFunction:
    """A Python scalar function usable on DSL tensors (what ``elementwise`` returns)."""

    def __init__(self, fn: Callable[..., Any], dtype: DType | None = None) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.dtype = dtype
        self.name = re.sub(r"\W", "_", fn.__name__)
        self._compiled: dict[tuple[tuple[DType, ...], DType], CompiledFunction] = {}
        self._inferred: dict[tuple[DType, ...], DType] = {}

    def __call__(self, *args: Any) -> Any:
        tensors = [a for a in args if isinstance(a, Tensor)]
        if not tensors:
            return self.fn(*args)
        trace = current_trace(f"{self.name}(...)")
        operands = [a if isinstance(a, Tensor) else trace.constant(_lift(a, tensors[0].dtype))
                    for a in args]
        what = f"{self.name}({', '.join(str(t.type) for t in operands)})"
        dtypes = tuple(t.dtype for t in operands)
        compiled = self.compile(dtypes, [isinstance(a, Tensor) for a in args], what)
        return trace.emit1(Op.CUSTOM_ELEMENTWISE, operands, compiled.attrs, what=what)

    def compile(self, args: tuple[DType, ...], strong: Sequence[bool] | None = None,
                what: str = "") -> CompiledFunction:
        """The function compiled for operands of types ``args``; ``strong`` marks the operands
        whose type the result may follow (tensors, not lifted Python scalars; default all)."""
        what = what or f"{self.name}({', '.join(t.value for t in args)})"
        for dtype in args:
            if dtype not in LLVM_TYPES:
                raise dsl_error(what, f"custom elementwise functions take no {dtype.value} "
                                      "operands (cast them to f32 first)")
        result = self.dtype or self._result_type(args, strong or [True] * len(args), what)
        if result not in LLVM_TYPES:
            raise dsl_error(what, f"custom elementwise functions return no {result.value} "
                                  "values (return f32 and cast the result)")
        key = (args, result)
        if key not in self._compiled:
            self._compiled[key] = self._compile(args, result, what)
        return self._compiled[key]

    def _result_type(self, args: tuple[DType, ...], strong: Sequence[bool], what: str) -> DType:
        if args not in self._inferred:
            inferred = _numba_compile(self.fn, args, None, what).signature.return_type
            found = {t: d for d, t in _numba_types().items()}.get(inferred)
            if found is None:
                raise dsl_error(what, f"custom function {self.name!r} returns {inferred}; it "
                                      "must return a number or a bool")
            self._inferred[args] = found
        inferred = self._inferred[args]
        alike = [t for t, s in zip(args, strong, strict=True)
                 if s and (t.is_float, t.is_int) == (inferred.is_float, inferred.is_int)]
        return max(alike, key=lambda t: t.itemsize, default=inferred)

    def _compile(self, args: tuple[DType, ...], result: DType, what: str) -> CompiledFunction:
        module = _self_contained(_numba_compile(self.fn, args, result, what), what, self.name)
        digest = hashlib.sha256(str(module).encode()).hexdigest()[:16]
        symbol = f"kiln_custom.{self.name}.{digest}"
        module.get_function(_ENTRY).name = symbol
        return CompiledFunction(self.name, symbol, str(module), args, result)


def elementwise(fn: Callable[..., Any] | None = None, /, *,
                dtype: Any = None) -> Any:
    """Decorator making a Python scalar function a custom elementwise op (see the module
    docstring); ``dtype`` fixes the result's element type."""
    result = None if dtype is None else as_dtype(dtype)
    if fn is not None:
        return CustomFunction(fn, result)
    return lambda f: CustomFunction(f, result)


def custom_node(builder: GraphBuilder, fn: CustomFunction | Callable[..., Any],
                inputs: Sequence[Value], name: str = "") -> Value:
    """Add ``fn`` applied to ``inputs`` to ``builder``: a ``custom_elementwise`` node (the
    result type follows every input, as no input is a weak Python scalar here)."""
    custom = fn if isinstance(fn, CustomFunction) else CustomFunction(fn)
    compiled = custom.compile(tuple(v.type.dtype for v in inputs))
    return builder.add1(Op.CUSTOM_ELEMENTWISE, list(inputs), compiled.attrs, name=name)


def _lift(value: Any, like: DType) -> np.ndarray:
    """A Python or numpy scalar (or numpy array) as constant data (see the module docstring)."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (bool, np.bool_)):
        return np.asarray(value, np.bool_)
    if isinstance(value, (int, np.integer)):
        dtype = like if like is not DType.BOOL else DType.I64
        if dtype.is_int and not np.iinfo(dtype.numpy).min <= value <= np.iinfo(dtype.numpy).max:
            dtype = DType.I64
        return np.asarray(value, dtype.numpy)
    if isinstance(value, (float, np.floating)):
        return np.asarray(value, (like if like.is_float else DType.F64).numpy)
    raise dsl_error(f"argument {value!r}", "a custom elementwise function takes tensors and "
                                           "Python numbers")


@functools.cache
def _numba_types() -> dict[DType, Any]:
    """numba's type of each element type (numba is imported on first use: it is slow to)."""
    from numba.core import types

    return {DType.F32: types.float32, DType.F64: types.float64, DType.BOOL: types.boolean,
            **{t: getattr(types, f"{'' if t.is_signed else 'u'}int{t.itemsize * 8}")
               for t in DType if t.is_int}}


def _numba_compile(fn: Callable[..., Any], args: tuple[DType, ...], result: DType | None,
                   what: str) -> Any:
    """numba's compile result for ``fn`` on ``args`` (returning ``result`` when given)."""
    import numba
    from numba.core.errors import NumbaError

    types = _numba_types()
    argtypes = tuple(types[t] for t in args)
    signature = argtypes if result is None else types[result](*argtypes)
    try:
        dispatcher = numba.njit(signature, error_model="numpy", cache=False)(fn)
    except NumbaError as error:
        reason = _first_lines(str(error))
        raise dsl_error(what, f"numba cannot compile custom function {fn.__name__!r} for "
                              f"({', '.join(t.value for t in args)}): {reason}") from None
    return dispatcher.overloads[argtypes]


def _first_lines(message: str, limit: int = 6) -> str:
    """numba's message without ANSI colours and blank lines, cut to its first ``limit``."""
    lines = [line.rstrip() for line in re.sub(r"\x1b\[[0-9;]*m", "", message).splitlines()]
    kept = [line for line in lines if line.strip()][:limit]
    return "\n".join(kept)


def _self_contained(compiled: Any, what: str, name: str) -> llvm.ModuleRef:
    """One module defining ``_ENTRY``, a plain scalar function with numba's function inlined
    into it, with nothing else defined and no symbol outside ``is_linkable`` used."""
    import llvmlite.binding as llvm  # loaded with numba, when a custom op is first compiled

    context, fndesc = compiled.target_context, compiled.fndesc
    library = llvm.parse_assembly(compiled.library.get_llvm_str())
    # numba's names carry a process-wide counter; fixed ones keep the IR text deterministic.
    library.get_function(fndesc.llvm_func_name).name = _INNER
    for number, function in enumerate(f for f in library.functions
                                      if not f.is_declaration and f.name != _INNER):
        function.name = f"kiln.helper.{number}"
    for number, variable in enumerate(v for v in library.global_variables
                                      if not v.is_declaration):
        variable.name = f"kiln.global.{number}"
    wrapper = ir.Module("kiln_custom")
    wrapper.triple, wrapper.data_layout = library.triple, library.data_layout
    inner = ir.Function(wrapper, context.call_conv.get_function_type(
        fndesc.restype, fndesc.argtypes), _INNER)
    entry = ir.Function(wrapper, ir.FunctionType(
        context.get_value_type(fndesc.restype),
        [context.get_value_type(t) for t in fndesc.argtypes]), _ENTRY)
    raises = ir.Function(wrapper, ir.FunctionType(ir.VoidType(), []), _RAISES)
    builder = ir.IRBuilder(entry.append_basic_block("entry"))
    status, value = context.call_conv.call_function(builder, inner, fndesc.restype,
                                                    fndesc.argtypes, entry.args)
    with builder.if_then(status.is_error, likely=False):
        builder.call(raises, [])
    builder.ret(value)
    module = llvm.parse_assembly(str(wrapper))
    module.link_in(library)
    for function in module.functions:
        if not function.is_declaration and function.name != _ENTRY:
            function.linkage = "internal"
    for variable in module.global_variables:
        if not variable.is_declaration:
            variable.linkage = "internal"
    _optimize(module)
    used = {f.name for f in module.functions if f.is_declaration}
    if _RAISES in used:
        raise dsl_error(what, f"custom function {name!r} may raise a Python exception (an "
                              "explicit raise or assert, an integer power with a negative "
                              "exponent...); it must return a value for every input")
    unlinkable = sorted(s for s in used if not is_linkable(s))
    if unlinkable:
        raise dsl_error(what, f"custom function {name!r} compiles to calls of "
                              f"{', '.join(unlinkable)}, which compiled models cannot link "
                              "(only LLVM intrinsics and the C math library); numba implements "
                              "some math functions (math.gamma...) in its own runtime")
    module.triple = ""
    module.data_layout = ""
    return module


def _optimize(module: llvm.ModuleRef) -> None:
    """LLVM's -O2 pipeline for a generic CPU: inlines everything into the entry function and
    removes the rest (what is left does not depend on the machine numba ran on)."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    machine = llvm.Target.from_triple(module.triple).create_target_machine()
    tuning = llvm.PipelineTuningOptions(speed_level=2)
    passes = llvm.create_pass_builder(machine, tuning)
    passes.getModulePassManager().run(module, passes)


__all__ = ["CompiledFunction", "CustomFunction", "custom_node", "elementwise"]
