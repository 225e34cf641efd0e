"""f16 / bf16 conversions built from integer operations (no libgcc helpers on any target).

Kiln computes half-precision values in f32 registers and rounds after every operation, as numpy
does. The conversions here are exact (widening) or round to nearest even (narrowing), handle
zeros, subnormals, infinities and NaN, and are branch-free so loops over them vectorize.

- ``half_to_float``: f16 / bf16 bits (i16) -> f32 (exact).
- ``float_to_half``: f32 or f64 -> f16 / bf16 bits. f64 -> f16 rounds once, directly (numpy's
  ``astype(float16)`` does too); f64 -> bf16 goes through f32 like ml_dtypes does.
"""

from __future__ import annotations

from llvmlite import ir

from ...ir.types import DType

I16 = ir.IntType(16)
I32 = ir.IntType(32)
F32 = ir.FloatType()
F64 = ir.DoubleType()

# (exponent bias, mantissa bits) of the source float formats
_FORMATS = {"float": (127, 23), "double": (1023, 52)}


def half_to_float(b: ir.IRBuilder, bits: ir.Value, dtype: DType) -> ir.Value:
    """Widen f16 / bf16 ``bits`` (i16) to an f32 value, exactly."""
    wide = b.zext(bits, I32)
    if dtype is DType.BF16:
        return b.bitcast(b.shl(wide, I32(16)), F32)
    # f16: move exponent and mantissa into f32 position and rebias; infinities / NaN get the
    # all-ones exponent, subnormals are renormalized by an exact float subtraction.
    magnitude = b.shl(b.and_(wide, I32(0x7FFF)), I32(13))
    exponent = b.and_(magnitude, I32(0x7C00 << 13))
    rebiased = b.add(magnitude, I32((127 - 15) << 23))
    special = b.add(rebiased, I32((128 - 16) << 23))
    subnormal = b.fsub(b.bitcast(b.add(rebiased, I32(1 << 23)), F32),
                       b.bitcast(I32(113 << 23), F32))
    result = b.select(b.icmp_unsigned("==", exponent, I32(0x7C00 << 13)), special, rebiased)
    result = b.select(b.icmp_unsigned("==", exponent, I32(0)), b.bitcast(subnormal, I32), result)
    sign = b.shl(b.and_(wide, I32(0x8000)), I32(16))
    return b.bitcast(b.or_(result, sign), F32)


def float_to_half(b: ir.IRBuilder, value: ir.Value, dtype: DType) -> ir.Value:
    """Round an f32 / f64 ``value`` to f16 / bf16 bits (i16), to nearest even."""
    if dtype is DType.BF16:
        if isinstance(value.type, ir.DoubleType):
            value = b.fptrunc(value, F32)
        return _float_to_bf16(b, value)
    return _narrow_to_f16(b, value)


def _float_to_bf16(b: ir.IRBuilder, value: ir.Value) -> ir.Value:
    bits = b.bitcast(value, I32)
    odd = b.and_(b.lshr(bits, I32(16)), I32(1))
    rounded = b.lshr(b.add(b.add(bits, I32(0x7FFF)), odd), I32(16))
    quiet_nan = b.or_(b.lshr(bits, I32(16)), I32(0x40))
    is_nan = b.fcmp_unordered("uno", value, value)
    return b.trunc(b.select(is_nan, quiet_nan, rounded), I16)


def _narrow_to_f16(b: ir.IRBuilder, value: ir.Value) -> ir.Value:
    """f32 / f64 -> f16 (after F. Giesen's branch-free rounding, generalized to any source)."""
    bias, mbits = _FORMATS[str(value.type)]
    width = 32 if mbits == 23 else 64
    int_type = ir.IntType(width)
    shift = mbits - 10

    def k(x: int) -> ir.Constant:
        return ir.Constant(int_type, x & ((1 << width) - 1))

    bits = b.bitcast(value, int_type)
    sign = b.and_(bits, k(1 << (width - 1)))
    magnitude = b.xor(bits, sign)
    # |x| >= 2^16 (after rounding always inf) or inf / NaN
    too_big = b.icmp_unsigned(">=", magnitude, k((bias + 16) << mbits))
    is_nan = b.icmp_unsigned(">", magnitude, k(((1 << (width - mbits - 1)) - 1) << mbits))
    big = b.select(is_nan, k(0x7E00), k(0x7C00))
    # |x| < 2^-14: f16 subnormal; adding a magic power of two rounds at the subnormal ulp
    tiny = b.icmp_unsigned("<", magnitude, k((bias - 14) << mbits))
    magic = k(((bias - 15) + shift + 1) << mbits)
    summed = b.fadd(b.bitcast(magnitude, value.type), b.bitcast(magic, value.type))
    small = b.sub(b.bitcast(summed, int_type), magic)
    # normal: rebias the exponent, then round to nearest even on the dropped mantissa bits
    odd = b.and_(b.lshr(magnitude, k(shift)), k(1))
    normal = b.add(magnitude, k(((15 - bias) << mbits) + (1 << (shift - 1)) - 1))
    normal = b.lshr(b.add(normal, odd), k(shift))
    result = b.select(too_big, big, b.select(tiny, small, normal))
    result = b.or_(result, b.lshr(sign, k(width - 16)))
    return b.trunc(result, I16)


def round_to_half(b: ir.IRBuilder, value: ir.Value, dtype: DType) -> ir.Value:
    """``value`` (f32 / f64) rounded to ``dtype``'s precision, as an f32 value."""
    return half_to_float(b, float_to_half(b, value, dtype), dtype)
