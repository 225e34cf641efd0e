"""The custom elementwise op: a user's scalar function, carried as LLVM IR, applied to broadcast
operands (the DSL's ``elementwise`` decorator compiles the Python function with numba).

Attributes: ``name`` (the function's name, for messages), ``symbol`` (the function in
``llvm_ir``), ``llvm_ir`` (a self-contained LLVM module without target triple that may call LLVM
intrinsics and the C math library and nothing else) and ``dtype`` (the result's element type).
The type rule checks the carried function against the operands: ``symbol`` is defined and takes
one argument per operand, of that operand's type, returns ``dtype`` and needs no other symbol; a
graph that verifies therefore compiles and links. Arguments and results are passed as LLVM
register values: ``float``, ``double``, ``i1`` for bool, ``iN`` for the integer types.
"""

from __future__ import annotations

import functools

from ...errors import KilnError
from ..op import Group, Op
from ..schema import DTYPE_ATTR, REQUIRED, STRING, InferContext, define
from ..shapes import broadcast
from ..types import DType, TensorType

# Element types a carried function can take and return, as LLVM spells their register type.
LLVM_TYPES: dict[DType, str] = {
    DType.F32: "float", DType.F64: "double", DType.BOOL: "i1",
    **{t: f"i{t.itemsize * 8}" for t in DType if t.is_int},
}
_MATH = (
    "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "cbrt", "ceil", "copysign", "cos",
    "cosh", "erf", "erfc", "exp", "exp2", "expm1", "fabs", "fdim", "floor", "fma", "fmax", "fmin",
    "fmod", "hypot", "ldexp", "lgamma", "llrint", "llround", "log", "log10", "log1p", "log2",
    "logb", "lrint", "lround", "nearbyint", "nextafter", "pow", "remainder", "rint", "round",
    "sin", "sinh", "sqrt", "tan", "tanh", "tgamma", "trunc",
)
# The C math library, double and float variants: what every Kiln library links against.
LIBM = frozenset(name for base in _MATH for name in (base, base + "f"))


class ScalarFunctionError(KilnError):
    """Carried LLVM IR that is not a usable scalar function (bad text, signature or symbols)."""


def is_linkable(symbol: str) -> bool:
    """Whether a compiled kernel may call ``symbol``: an LLVM intrinsic or a libm function."""
    return symbol.startswith("llvm.") or symbol in LIBM


def llvm_signature(args: tuple[DType, ...], result: DType) -> str:
    """The LLVM function type of a scalar function, e.g. ``float (float, i1)``."""
    for dtype in (*args, result):
        if dtype not in LLVM_TYPES:
            supported = ", ".join(t.value for t in LLVM_TYPES)
            raise ScalarFunctionError(
                f"element type {dtype.value} is not supported by custom elementwise functions "
                f"(supported: {supported})")
    return f"{LLVM_TYPES[result]} ({', '.join(LLVM_TYPES[a] for a in args)})"


@functools.lru_cache(maxsize=256)
def check_scalar_function(llvm_ir: str, symbol: str, args: tuple[DType, ...],
                          result: DType) -> None:
    """Raise ScalarFunctionError saying what is wrong unless ``llvm_ir`` parses, verifies and
    defines ``symbol`` of type ``result (args)`` using no symbol outside ``is_linkable``."""
    import llvmlite.binding as llvm  # LLVM is loaded only for graphs holding the op

    expected = llvm_signature(args, result)
    try:
        module = llvm.parse_assembly(llvm_ir)
        module.verify()
    except RuntimeError as error:
        raise ScalarFunctionError(f"its LLVM IR is invalid: {error}") from None
    try:
        function = module.get_function(symbol)
    except NameError:
        raise ScalarFunctionError(f"its LLVM IR does not define {symbol!r}") from None
    if function.is_declaration:
        raise ScalarFunctionError(f"its LLVM IR declares {symbol!r} without defining it")
    found = str(function.global_value_type)
    if found != expected:
        raise ScalarFunctionError(
            f"{symbol!r} has type {found}, but the operands and result need {expected}")
    unresolved = sorted(
        [f.name for f in module.functions if f.is_declaration and not is_linkable(f.name)]
        + [g.name for g in module.global_variables if g.is_declaration])
    if unresolved:
        raise ScalarFunctionError(
            f"its LLVM IR needs {', '.join(unresolved)}, which compiled kernels cannot link "
            "(only LLVM intrinsics and the C math library are available)")


@define(Op.CUSTOM_ELEMENTWISE, ["inputs*"], ["Y"],
        {"name": STRING(REQUIRED), "symbol": STRING(REQUIRED), "llvm_ir": STRING(REQUIRED),
         "dtype": DTYPE_ATTR(REQUIRED)},
        Group.ELEMENTWISE)
def _custom_elementwise(ctx: InferContext) -> list[TensorType]:
    """``dtype`` values of the carried function applied to the (numpy-broadcast) operands,
    which may have different element types."""
    if not ctx.inputs:
        raise ctx.fail("needs at least one operand")
    operands = [ctx.input(i) for i in range(len(ctx.inputs))]
    try:
        check_scalar_function(ctx.attr("llvm_ir"), ctx.attr("symbol"),
                              tuple(t.dtype for t in operands), ctx.attr("dtype"))
    except ScalarFunctionError as error:
        raise ctx.fail(f"function {ctx.attr('name')!r}: {error}") from None
    return [TensorType(ctx.attr("dtype"), broadcast(*(t.shape for t in operands)))]
