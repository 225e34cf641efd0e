"""Kernel IR expressions -> LLVM values, with the exact semantics of ``kernel_ir``.

Value representation: f32 / f64 as float / double; f16 and bf16 as f32 holding a value exactly
representable in the half type (rounded after every inexact operation); integers as iN (LLVM
integers are signless, the dtype says how to compare, divide, shift and extend); bool as i1
in registers and i8 0 / 1 in memory.

Undefined behaviour in LLVM never leaks through: integer division / remainder by zero give 0
and INT_MIN / -1 wraps, shifts by >= the width give 0, float -> int casts saturate (NaN -> 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from llvmlite import ir

from ...ir.types import DType
from ...lower.kernel_ir import (
    Binary,
    Buffer,
    Call,
    Cast,
    Compare,
    Const,
    Expr,
    Load,
    Select,
    Unary,
    Var,
)
from ..target import CodegenError
from . import math as fmath
from .external import declare_external
from .half import F32, F64, float_to_half, half_to_float, round_to_half

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I16 = ir.IntType(16)
HALVES = (DType.F16, DType.BF16)


def value_type(dtype: DType) -> ir.Type:
    """The register type of ``dtype`` values."""
    if dtype is DType.F64:
        return F64
    if dtype.is_float:
        return F32
    if dtype is DType.BOOL:
        return I1
    return ir.IntType(dtype.itemsize * 8)


def storage_type(dtype: DType) -> ir.Type:
    """The in-memory element type of ``dtype`` buffers."""
    if dtype in HALVES:
        return I16
    if dtype is DType.BOOL:
        return I8
    return value_type(dtype)


def constant(dtype: DType, value: int | float | bool) -> ir.Constant:
    if dtype is DType.BOOL:
        return ir.Constant(I1, int(bool(value)))
    if dtype.is_float:
        # round like numpy would when the constant is materialized in dtype
        return ir.Constant(value_type(dtype), float(np.array(value).astype(dtype.numpy)))
    bits = dtype.itemsize * 8
    wrapped = int(value) & ((1 << bits) - 1)
    if wrapped >= 1 << (bits - 1):
        wrapped -= 1 << bits
    return ir.Constant(value_type(dtype), wrapped)


def load_value(b: ir.IRBuilder, pointer: ir.Value, dtype: DType) -> ir.Value:
    raw = b.load(pointer, typ=storage_type(dtype))
    if dtype in HALVES:
        return half_to_float(b, raw, dtype)
    if dtype is DType.BOOL:
        return b.icmp_unsigned("!=", raw, ir.Constant(I8, 0))
    return raw


def store_value(b: ir.IRBuilder, value: ir.Value, pointer: ir.Value, dtype: DType) -> None:
    if dtype in HALVES:
        value = float_to_half(b, value, dtype)
    elif dtype is DType.BOOL:
        value = b.zext(value, I8)
    b.store(value, pointer)


def convert(b: ir.IRBuilder, value: ir.Value, source: DType, target: DType) -> ir.Value:
    """Cast a ``source`` value to ``target`` (kernel_ir semantics)."""
    if source == target:
        return value
    if target is DType.BOOL:
        if source.is_float:
            return b.fcmp_unordered("!=", value, ir.Constant(value.type, 0.0))
        return b.icmp_unsigned("!=", value, ir.Constant(value.type, 0))
    if not source.is_float:  # integer or bool source
        signed = source.is_signed and source is not DType.BOOL
        if target.is_float:
            wide = value_type(target)
            result = b.sitofp(value, wide) if signed else b.uitofp(value, wide)
            return round_to_half(b, result, target) if target in HALVES else result
        width, source_width = value_type(target).width, value.type.width
        if width < source_width:
            return b.trunc(value, value_type(target))
        if width > source_width:
            return (b.sext if signed else b.zext)(value, value_type(target))
        return value
    if not target.is_float:  # float -> int: saturating, NaN -> 0
        name = "fptosi.sat" if target.is_signed else "fptoui.sat"
        int_type = value_type(target)
        fn = fmath.declare(b.module, f"llvm.{name}.i{int_type.width}.{_fsuffix(value.type)}",
                           int_type, [value.type])
        return b.call(fn, [value])
    if target is DType.F64:
        return b.fpext(value, F64) if source is not DType.F64 else value
    if target is DType.F32:
        return b.fptrunc(value, F32) if source is DType.F64 else value
    return round_to_half(b, value, target)


def _fsuffix(ty: ir.Type) -> str:
    return "f64" if isinstance(ty, ir.DoubleType) else "f32"


_EXACT_FLOAT_UNARY = frozenset({"neg", "abs", "floor", "ceil", "round", "trunc", "sign"})
_FLOAT_INTRINSIC = {"floor": "floor", "ceil": "ceil", "round": "roundeven", "trunc": "trunc",
                    "abs": "fabs", "sqrt": "sqrt"}
_INEXACT_FLOAT_BINARY = frozenset({"add", "sub", "mul", "div", "pow", "atan2"})
_FLOAT_ONLY_UNARY = fmath.VECTOR_MATH | fmath.LIBM_UNARY | {"sqrt", "rsqrt"}


class ExprEmitter:
    """Emits expressions at ``self.builder``; subclasses resolve variables and addresses."""

    builder: ir.IRBuilder

    def variable(self, var: Var) -> ir.Value:
        raise NotImplementedError

    def address(self, buffer: Buffer, indices: Sequence[ir.Value]) -> ir.Value:
        raise NotImplementedError

    def load(self, buffer: Buffer, pointer: ir.Value) -> ir.Value:
        return load_value(self.builder, pointer, buffer.dtype)

    def expr(self, node: Expr) -> ir.Value:
        """The value of ``node``; shared subexpressions are emitted once per call."""
        return self._expr(node, {})

    def _expr(self, node: Expr, memo: dict[int, ir.Value]) -> ir.Value:
        found = memo.get(id(node))
        if found is None:
            found = memo[id(node)] = self._emit(node, memo)
        return found

    def _emit(self, node: Expr, memo: dict[int, ir.Value]) -> ir.Value:
        b = self.builder
        if isinstance(node, Const):
            return constant(node.dtype, node.value)
        if isinstance(node, Var):
            return self.variable(node)
        if isinstance(node, Load):
            indices = [self._expr(i, memo) for i in node.indices]
            return self.load(node.buffer, self.address(node.buffer, indices))
        if isinstance(node, Unary):
            return self.unary(node.op, self._expr(node.x, memo), node.x.dtype)
        if isinstance(node, Binary):
            return self.binary(node.op, self._expr(node.a, memo), self._expr(node.b, memo),
                               node.a.dtype)
        if isinstance(node, Compare):
            return self.compare(node.op, self._expr(node.a, memo), self._expr(node.b, memo),
                                node.a.dtype)
        if isinstance(node, Select):
            return b.select(self._expr(node.cond, memo), self._expr(node.a, memo),
                            self._expr(node.b, memo))
        if isinstance(node, Cast):
            return convert(b, self._expr(node.x, memo), node.x.dtype, node.dtype)
        if isinstance(node, Call):
            signature = ir.FunctionType(value_type(node.dtype),
                                        [value_type(a) for a in node.function.args])
            callee = declare_external(b.module, node.function, signature)
            return b.call(callee, [self._expr(a, memo) for a in node.args])
        raise CodegenError(f"cannot compile expression {type(node).__name__}")

    # -- unary -----------------------------------------------------------------------------

    def unary(self, op: str, x: ir.Value, dtype: DType) -> ir.Value:
        b = self.builder
        if op == "isnan":
            return b.fcmp_unordered("uno", x, x) if dtype.is_float else ir.Constant(I1, 0)
        if op == "isinf":
            if not dtype.is_float:
                return ir.Constant(I1, 0)
            magnitude = fmath.intrinsic(b, "fabs", x)
            return b.fcmp_ordered("==", magnitude, ir.Constant(x.type, float("inf")))
        if not dtype.is_float:
            if op in _FLOAT_ONLY_UNARY:  # e.g. sqrt of an int: computed in f64, cast back
                wide = convert(b, x, dtype, DType.F64)
                return convert(b, self.unary(op, wide, DType.F64), DType.F64, dtype)
            return self._int_unary(op, x, dtype)
        result = self._float_unary(op, x, dtype)
        if dtype in HALVES and op not in _EXACT_FLOAT_UNARY:
            result = round_to_half(b, result, dtype)
        return result

    def _float_unary(self, op: str, x: ir.Value, dtype: DType) -> ir.Value:
        b = self.builder
        if op == "neg":
            return b.fneg(x)
        if op in _FLOAT_INTRINSIC:
            return fmath.intrinsic(b, _FLOAT_INTRINSIC[op], x)
        if op == "rsqrt":
            return b.fdiv(ir.Constant(x.type, 1.0), fmath.intrinsic(b, "sqrt", x))
        if op in fmath.APPROXIMATIONS:
            return fmath.APPROXIMATIONS[op](b, x)
        if op in fmath.LIBM_UNARY:
            wide = b.fpext(x, F64) if x.type == F32 else x
            return self._narrow(fmath.libm_unary(b, op, wide), dtype)
        if op == "sign":
            zero = ir.Constant(x.type, 0.0)
            negative = b.select(b.fcmp_ordered("<", x, zero), ir.Constant(x.type, -1.0), x)
            return b.select(b.fcmp_ordered(">", x, zero), ir.Constant(x.type, 1.0), negative)
        raise CodegenError(f"unary {op} is not defined on {dtype.value}")

    def _narrow(self, wide: ir.Value, dtype: DType) -> ir.Value:
        """An f64 result as a ``dtype`` value (f16 rounds once, directly from f64)."""
        b = self.builder
        if dtype is DType.F64:
            return wide
        if dtype is DType.F16:
            return half_to_float(b, float_to_half(b, wide, dtype), dtype)
        return b.fptrunc(wide, F32)

    def _int_unary(self, op: str, x: ir.Value, dtype: DType) -> ir.Value:
        b = self.builder
        zero = ir.Constant(x.type, 0)
        signed = dtype.is_signed and dtype is not DType.BOOL
        if op in ("floor", "ceil", "round", "trunc") or (op == "abs" and not signed):
            return x
        if op == "not":
            return b.not_(x)
        if op == "sign":
            if dtype is DType.BOOL:
                return x
            positive = b.zext(b.icmp_signed(">" if signed else "!=", x, zero), x.type)
            if not signed:
                return positive
            return b.sub(positive, b.zext(b.icmp_signed("<", x, zero), x.type))
        if dtype is not DType.BOOL:
            if op == "neg":
                return b.neg(x)
            if op == "abs":
                return b.select(b.icmp_signed("<", x, zero), b.neg(x), x)
        raise CodegenError(f"unary {op} is not defined on {dtype.value}")

    # -- binary ----------------------------------------------------------------------------

    def binary(self, op: str, x: ir.Value, y: ir.Value, dtype: DType) -> ir.Value:
        b = self.builder
        if dtype is DType.BOOL:
            bool_ops = {"and": b.and_, "mul": b.and_, "min": b.and_, "or": b.or_, "add": b.or_,
                        "max": b.or_, "xor": b.xor}
            if op not in bool_ops:
                raise CodegenError(f"binary {op} is not defined on bool")
            return bool_ops[op](x, y)
        if dtype.is_float:
            result = self._float_binary(op, x, y, dtype)
            if dtype in HALVES and op in _INEXACT_FLOAT_BINARY:
                result = round_to_half(b, result, dtype)
            return result
        if op == "atan2":  # float-only op on integers: computed in f64, cast back
            wide_x, wide_y = (convert(b, v, dtype, DType.F64) for v in (x, y))
            return convert(b, self._float_binary(op, wide_x, wide_y, DType.F64), DType.F64,
                           dtype)
        return self._int_binary(op, x, y, dtype)

    def _float_binary(self, op: str, x: ir.Value, y: ir.Value, dtype: DType) -> ir.Value:
        b = self.builder
        simple = {"add": b.fadd, "sub": b.fsub, "mul": b.fmul, "div": b.fdiv, "rem": b.frem}
        if op in simple:
            return simple[op](x, y)
        if op in ("min", "max"):
            # NaN-propagating: either operand NaN gives NaN (x + y is NaN then)
            first = b.fcmp_ordered("<" if op == "min" else ">", x, y)
            chosen = b.select(first, x, y)
            return b.select(b.fcmp_unordered("uno", x, y), b.fadd(x, y), chosen)
        if op in ("pow", "atan2"):
            if x.type == F32:
                x, y = b.fpext(x, F64), b.fpext(y, F64)
            return self._narrow(fmath.libm_binary(b, op, x, y), dtype)
        raise CodegenError(f"binary {op} is not defined on {dtype.value}")

    def _int_binary(self, op: str, x: ir.Value, y: ir.Value, dtype: DType) -> ir.Value:
        b = self.builder
        signed = dtype.is_signed
        simple = {"add": b.add, "sub": b.sub, "mul": b.mul, "and": b.and_, "or": b.or_,
                  "xor": b.xor}
        if op in simple:
            return simple[op](x, y)
        if op in ("div", "rem"):
            return self._int_divide(op, x, y, signed)
        if op in ("min", "max"):
            compare = b.icmp_signed if signed else b.icmp_unsigned
            return b.select(compare("<" if op == "min" else ">", x, y), x, y)
        if op in ("shl", "shr"):
            width = x.type.width
            shifted = b.shl(x, y) if op == "shl" else (b.ashr if signed else b.lshr)(x, y)
            # counts >= width (negative ones too, seen unsigned) give 0, not poison
            in_range = b.icmp_unsigned("<", y, ir.Constant(x.type, width))
            return b.select(in_range, shifted, ir.Constant(x.type, 0))
        if op == "pow":
            return self._int_pow(x, y, signed)
        raise CodegenError(f"binary {op} is not defined on {dtype.value}")

    def _int_divide(self, op: str, x: ir.Value, y: ir.Value, signed: bool) -> ir.Value:
        b = self.builder
        zero, one = ir.Constant(x.type, 0), ir.Constant(x.type, 1)
        by_zero = b.icmp_unsigned("==", y, zero)
        if not signed:
            safe = b.select(by_zero, one, y)
            result = b.udiv(x, safe) if op == "div" else b.urem(x, safe)
            return b.select(by_zero, zero, result)
        # INT_MIN / -1 overflows (UB in LLVM): divide by -1 is a (wrapping) negation instead
        by_minus_one = b.icmp_signed("==", y, ir.Constant(x.type, -1))
        special = b.or_(by_zero, by_minus_one)
        safe = b.select(special, one, y)
        if op == "rem":
            return b.select(special, zero, b.srem(x, safe))
        quotient = b.select(by_minus_one, b.neg(x), b.sdiv(x, safe))
        return b.select(by_zero, zero, quotient)

    def _int_pow(self, x: ir.Value, y: ir.Value, signed: bool) -> ir.Value:
        """x ** y by square-and-multiply (wrapping), a loop over the exponent's bits;
        negative exponents give trunc(1 / x ** -y): 1 for x = 1, +-1 for x = -1, else 0."""
        b = self.builder
        one, zero = ir.Constant(x.type, 1), ir.Constant(x.type, 0)
        before = b.block
        loop = b.append_basic_block("pow.loop")
        done = b.append_basic_block("pow.done")
        b.branch(loop)
        b.position_at_end(loop)
        result, base, exponent = (b.phi(x.type) for _ in range(3))
        bit = b.trunc(exponent, I1)
        next_result = b.select(bit, b.mul(result, base), result)
        next_base = b.mul(base, base)
        next_exponent = b.lshr(exponent, one)
        for phi, start, following in ((result, one, next_result), (base, x, next_base),
                                      (exponent, y, next_exponent)):
            phi.add_incoming(start, before)
            phi.add_incoming(following, loop)
        b.cbranch(b.icmp_unsigned("!=", next_exponent, zero), loop, done)
        b.position_at_end(done)
        if not signed:
            return next_result
        minus_one = ir.Constant(x.type, -1)
        odd = b.trunc(y, I1)
        unit = b.select(b.icmp_signed("==", x, one), one, zero)
        unit = b.select(b.icmp_signed("==", x, minus_one), b.select(odd, minus_one, one), unit)
        return b.select(b.icmp_signed("<", y, zero), unit, next_result)

    # -- comparisons -----------------------------------------------------------------------

    def compare(self, op: str, x: ir.Value, y: ir.Value, dtype: DType) -> ir.Value:
        b = self.builder
        symbol = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}[op]
        if dtype.is_float:
            # ordered comparisons are false on NaN; "ne" is true on NaN
            if op == "ne":
                return b.fcmp_unordered(symbol, x, y)
            return b.fcmp_ordered(symbol, x, y)
        if dtype.is_signed and dtype is not DType.BOOL:
            return b.icmp_signed(symbol, x, y)
        return b.icmp_unsigned(symbol, x, y)
