"""Scalar functions carried as LLVM IR (kernel IR ``Call``, the custom elementwise op): declared
in a module where a kernel calls them, linked into it when the module is parsed (``compile.py``).

A module remembers the functions declared in it; ``link_external`` links each one's IR in once,
however many kernels call it, and makes the definition internal and ``alwaysinline``: LLVM
inlines it into the calling loop, which then vectorizes as if the body had been written there,
and the library exports no new symbol. Two different functions under one symbol are an error
(the DSL names symbols by a digest of their IR, so equal symbols mean equal functions).

Calls of exp, log and tanh in a carried function (libm's or LLVM's intrinsics, as numba emits
them) are redirected to Kiln's own branch-free versions (math.py), linked in the same way: a
libm call would keep the loop around the inlined function scalar (LLVM has no vector libm
here), Kiln's code vectorizes with it. They are as accurate as libm to within 1.5 ulp (math.py).
"""

from __future__ import annotations

import re
import weakref

import llvmlite.binding as llvm
from llvmlite import ir

from ...ir.rules.custom import ScalarFunctionError, check_scalar_function
from ...lower.kernel_ir import ExternalFunction
from ..target import CodegenError
from . import math as fmath

_DECLARED: weakref.WeakKeyDictionary[ir.Module, dict[str, ExternalFunction]] = (
    weakref.WeakKeyDictionary())


def declare_external(module: ir.Module, function: ExternalFunction,
                     signature: ir.FunctionType) -> ir.Function:
    """The declaration of ``function`` (of LLVM type ``signature``) in ``module``, remembered
    for ``link_external``."""
    declared = _DECLARED.setdefault(module, {})
    known = declared.setdefault(function.symbol, function)
    if known != function:
        raise CodegenError(
            f"module {module.name}: two different functions are named {function.symbol!r} "
            f"({known.name} and {function.name})")
    return fmath.declare(module, function.symbol, signature.return_type, signature.args)


# (function, LLVM type) -> the symbols of it a carried function may call
_INLINE_MATH = {
    (name, ty): (f"llvm.{name}.{suffix}", f"{name}{libm_suffix}")
    for name in ("exp", "log", "tanh")
    for ty, suffix, libm_suffix in (("float", "f32", "f"), ("double", "f64", ""))
}
_MATH_BODIES = {"exp": fmath.exp, "log": fmath.log, "tanh": fmath.tanh}


def _inline_math_symbol(name: str, ty: str) -> str:
    return f"kiln.math.{name}.{ty}"


def _redirect_math(llvm_ir: str) -> tuple[str, set[tuple[str, str]]]:
    """``llvm_ir`` with its exp/log/tanh calls renamed to Kiln's versions; the ones used."""
    used: set[tuple[str, str]] = set()
    for (name, ty), symbols in _INLINE_MATH.items():
        pattern = re.compile(r"@(" + "|".join(re.escape(s) for s in symbols) + r")\(")
        llvm_ir, count = pattern.subn(f"@{_inline_math_symbol(name, ty)}(", llvm_ir)
        if count:
            used.add((name, ty))
    return llvm_ir, used


def _math_module(used: set[tuple[str, str]], ref: llvm.ModuleRef) -> llvm.ModuleRef:
    """Definitions of Kiln's versions of the ``used`` math functions (linkonce_odr, so they
    replace the carried functions' declarations of them)."""
    module = ir.Module(name="kiln.math")
    for name, ty in sorted(used):
        value_type = ir.FloatType() if ty == "float" else ir.DoubleType()
        function = ir.Function(module, ir.FunctionType(value_type, [value_type]),
                               _inline_math_symbol(name, ty))
        function.linkage = "linkonce_odr"
        b = ir.IRBuilder(function.append_basic_block("entry"))
        b.ret(_MATH_BODIES[name](b, function.args[0]))
    parsed = llvm.parse_assembly(str(module))
    parsed.triple, parsed.data_layout = ref.triple, ref.data_layout
    return parsed


def link_external(module: ir.Module, ref: llvm.ModuleRef) -> None:
    """Link into ``ref`` (``module`` parsed) the definitions of the functions declared in it."""
    functions = list(_DECLARED.get(module, {}).values())
    carried: list[str] = []
    math_used: set[tuple[str, str]] = set()
    for function in functions:
        try:
            check_scalar_function(function.llvm_ir, function.symbol, function.args,
                                  function.result)
        except ScalarFunctionError as error:
            raise CodegenError(f"custom function {function.name!r}: {error}") from None
        text, used = _redirect_math(function.llvm_ir)
        carried.append(text)
        math_used |= used
    for text in carried:
        parsed = llvm.parse_assembly(text)
        parsed.triple = ref.triple
        parsed.data_layout = ref.data_layout
        ref.link_in(parsed)
    if math_used:  # after the callers: the linker drops linkonce_odr code nothing calls yet
        ref.link_in(_math_module(math_used, ref))
    for symbol in [f.symbol for f in functions] + [_inline_math_symbol(*m) for m in math_used]:
        defined = ref.get_function(symbol)
        defined.linkage = "internal"
        defined.add_function_attribute("alwaysinline")
