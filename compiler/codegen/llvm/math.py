"""Vectorizable exp, log, tanh, erf and sigmoid for f32 and f64, plus the libm fallbacks.

The five functions that dominate ML activations are emitted inline as branch-free LLVM IR
(range reduction + polynomial or rational approximation, special cases fixed up with
``select``), so the loop vectorizer turns them into SIMD code with no calls:

- ``exp``: n = roundeven(x / ln 2), r = x - n ln 2 (Cody-Waite split), Taylor polynomial of
  degree 7 (f32) / 13 (f64) on |r| <= ln 2 / 2, scaled by 2^n as two exact power-of-two factors
  so results into the subnormal range round once. Overflow gives inf, underflow 0.
- ``log``: subnormals are scaled up first; x = 2^k m with m in [sqrt(1/2), sqrt(2)),
  s = (m-1)/(m+1), log m = 2 atanh s evaluated with fdlibm's minimax coefficients Lg1..Lg7.
  log(0) = -inf, log(x<0) = NaN, log(inf) = inf.
- ``tanh``: |x| < 0.625: odd polynomial (f32) / rational (f64) approximation (Cephes
  coefficients); otherwise sign(x) (1 - 2 / (exp(2|x|) + 1)).
- ``sigmoid``: e = exp(-|x|), then 1 / (1 + e) for x >= 0 and e / (1 + e) below, so neither
  side overflows and tiny results keep their precision.
- ``erf``: f32: three polynomial pieces and no division (x + x g(x^2) below 0.84375,
  erf(1) + m(|x| - 1) below 1.5, 1 - exp(k(|x|) - x^2) below 3.925 and 1 beyond, k(a) =
  log(erfc(a)) + a^2 being smooth), each a minimax fit found in f64 for this code; f64:
  fdlibm's four-interval scheme (rational approximations on [0, 0.84375), [0.84375, 1.25),
  [1.25, 1/0.35), [1/0.35, 6), and +-1 beyond), every interval computed and the right one
  selected; the erfc tail uses one inline ``exp``.

NaN propagates through all five. Measured maximum error (1M points per function and type:
log-uniform over the whole finite range, both signs, plus subnormals, specials and a dense
sweep of the interesting interval) against an extended-precision reference (numpy longdouble;
scipy f64 for f32 erf, mpmath for f64 erf), in ulps of the result type, and the bound that
tests/codegen/test_math.py asserts:

    function   f32 measured   f64 measured   asserted bound (f32 / f64)
    exp        0.89           0.83           1 / 1
    log        0.78           0.80           1 / 1
    tanh       1.29           1.30           1.5 / 1.5
    sigmoid    2.03           2.14           2.5 / 2.5
    erf        0.81           1.00           1 / 1.5

(ulp: units in the last place of the exact result; in the subnormal range one ulp is the
smallest subnormal.) Other transcendental ops call LLVM intrinsics or libm in f64.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from llvmlite import ir

F64 = ir.DoubleType()
VECTOR_MATH = frozenset({"exp", "log", "tanh", "erf", "sigmoid"})
# ops whose f64 implementation is an LLVM intrinsic (lowered to libm calls by the backend)
_INTRINSIC_UNARY = frozenset({"sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh"})
_LIBM_UNARY = frozenset({"asinh", "acosh", "atanh"})
LIBM_UNARY = _INTRINSIC_UNARY | _LIBM_UNARY

# fdlibm log coefficients: 2 atanh(s) / s - 2 ~ Lg1 s^2 + ... + Lg7 s^14 on |s| < 0.1716
_LG = (6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01,
       2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01,
       1.479819860511658591e-01)
# ln 2 = hi + lo with n * hi exact for every exponent n: (hi, lo) for f32 and f64
_LN2 = {False: (0.693359375, -2.12194440054690583e-4),
        True: (6.93147180369123816490e-01, 1.90821492927058770002e-10)}
# Cephes tanh on |x| < 0.625: f32 x + x z P(z); f64 x + x z P(z) / Q(z), Q monic
_TANH_F32 = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
             -3.33332819422e-1)
_TANH_P = (-9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3)
_TANH_Q = (1.0, 1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3)
# fdlibm erf: constant and rational coefficients per interval (highest degree first)
_ERX = 8.45062911510467529297e-01
_ERF_PP = (-2.37630166566501626084e-05, -5.77027029648944159157e-03,
           -2.84817495755985104766e-02, -3.25042107247001499370e-01,
           1.28379167095512558561e-01)
_ERF_QQ = (-3.96022827877536812320e-06, 1.32494738004321644526e-04, 5.08130628187576562776e-03,
           6.50222499887672944485e-02, 3.97917223959155352819e-01, 1.0)
_ERF_PA = (-2.16637559486879084300e-03, 3.54783043256182359371e-02, -1.10894694282396677476e-01,
           3.18346619901161753674e-01, -3.72207876035701323847e-01, 4.14856118683748331666e-01,
           -2.36211856075265944077e-03)
_ERF_QA = (1.19844998467991074170e-02, 1.36370839120290507362e-02, 1.26171219808761642112e-01,
           7.18286544141962662868e-02, 5.40397917702171048937e-01, 1.06420880400844228286e-01,
           1.0)
_ERF_RA = (-9.81432934416914548592e+00, -8.12874355063065934246e+01,
           -1.84605092906711035994e+02, -1.62396669462573470355e+02,
           -6.23753324503260060396e+01, -1.05586262253232909814e+01,
           -6.93858572707181764372e-01, -9.86494403484714822705e-03)
_ERF_SA = (-6.04244152148580987438e-02, 6.57024977031928170135e+00, 1.08635005541779435134e+02,
           4.29008140027567833386e+02, 6.45387271733267880336e+02, 4.34565877475229228821e+02,
           1.37657754143519042600e+02, 1.96512716674392571292e+01, 1.0)
_ERF_RB = (0.0, -4.83519191608651397019e+02, -1.02509513161107724954e+03,
           -6.37566443368389627722e+02, -1.60636384855821916062e+02,
           -1.77579549177547519889e+01, -7.99283237680523006574e-01,
           -9.86494292470009928597e-03)
_ERF_SB = (0.0, -2.24409524465858183362e+01, 4.74528541206955367215e+02,
           2.55305040643316442583e+03, 3.19985821950859553908e+03, 1.53672958608443695994e+03,
           3.25792512996573918826e+02, 3.03380607434824582924e+01, 1.0)
# f32 erf, division-free (found by a minimax fit in f64, checked by the f32 error sweep of
# tests/codegen/test_math.py); highest degree first:
# |x| < 0.84375: erf = x + x g(x^2)
_ERF32_SMALL = (-0.000635999022051692, 0.005058677401393652, -0.026807021349668503,
                0.11282824724912643, -0.3761258125305176, 0.12837916612625122)
# 0.84375 <= |x| < 1.5: erf = erf(1) + m(|x| - 1)
_ERF32_ONE = 0.8427007794380188
_ERF32_MIDDLE = (0.007361123804003, 0.008186380378901958, -0.069556824862957,
                 0.06906984746456146, 0.13838964700698853, -0.4151065945625305,
                 0.4151073396205902, 1.1727971482855537e-08)
_ERF32_MIDDLE_END = 1.5
# 1.5 <= |x| < 3.925 (beyond, erf rounds to 1): erf = 1 - exp(k(|x| - 2.7125) - x^2), where
# k(a) = log(erfc(a)) + a^2 is smooth
_ERF32_TAIL_CENTRE = 2.7125
_ERF32_TAIL = (-1.0556755114521366e-05, 6.445838516810909e-05, -0.0003332436899654567,
               0.0017624308820813894, -0.009193889796733856, 0.0497339628636837,
               -0.33022746443748474, -1.629326343536377)
_ERF32_TAIL_END = 3.925


def declare(module: ir.Module, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
    """The function ``name`` in ``module``, declared on first use."""
    existing = module.globals.get(name)
    if isinstance(existing, ir.Function):
        return existing
    return ir.Function(module, ir.FunctionType(ret, list(args)), name)


def intrinsic(b: ir.IRBuilder, name: str, *args: ir.Value) -> ir.Value:
    """Call the type-overloaded intrinsic ``llvm.<name>`` on its first argument's type."""
    ty = args[0].type
    suffix = {"float": "f32", "double": "f64"}.get(str(ty), str(ty))
    fn = declare(b.module, f"llvm.{name}.{suffix}", ty, [a.type for a in args])
    return b.call(fn, list(args))


class _Float:
    """Typed helpers for one float type (f32 or f64) at one builder."""

    def __init__(self, b: ir.IRBuilder, ty: ir.Type) -> None:
        self.b = b
        self.ty = ty
        self.double = isinstance(ty, ir.DoubleType)
        self.int = ir.IntType(64 if self.double else 32)
        self.bias, self.mbits = (1023, 52) if self.double else (127, 23)

    def c(self, value: float) -> ir.Constant:
        return ir.Constant(self.ty, value)

    def i(self, value: int) -> ir.Constant:
        return ir.Constant(self.int, value)

    def fma(self, a: ir.Value, x: ir.Value, c: ir.Value) -> ir.Value:
        # fmuladd: fused where the target has FMA, a plain multiply-add elsewhere (never a
        # software fma call on targets without it)
        return intrinsic(self.b, "fmuladd", a, x, c)

    def poly(self, x: ir.Value, coeffs: Sequence[float | ir.Value]) -> ir.Value:
        """Horner evaluation; ``coeffs`` from the highest degree down."""
        acc = self.const_or_value(coeffs[0])
        for coeff in coeffs[1:]:
            acc = self.fma(acc, x, self.const_or_value(coeff))
        return acc

    def const_or_value(self, value: float | ir.Value) -> ir.Value:
        return value if isinstance(value, ir.Value) else self.c(value)

    def lt(self, a: ir.Value, value: float) -> ir.Value:
        return self.b.fcmp_ordered("<", a, self.c(value))

    def is_nan(self, x: ir.Value) -> ir.Value:
        return self.b.fcmp_unordered("uno", x, x)

    def pow2(self, n: ir.Value) -> ir.Value:
        """2^n for an integer n in the normal exponent range, built from its bits."""
        biased = self.b.add(n, self.i(self.bias))
        return self.b.bitcast(self.b.shl(biased, self.i(self.mbits)), self.ty)


def exp(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    f = _Float(b, x.type)
    high, low = (710.0, -746.0) if f.double else (88.8, -104.0)
    nan = f.is_nan(x)
    clamped = b.select(f.b.fcmp_ordered(">", x, f.c(high)), f.c(high), x)
    clamped = b.select(f.lt(clamped, low), f.c(low), clamped)
    clamped = b.select(nan, f.c(0.0), clamped)
    p, ni = _exp_reduced(f, clamped)
    # 2^n split in two factors: n reaches 1025 / -1076 (f64), beyond one exponent field
    half = b.ashr(ni, f.i(1))
    result = b.fmul(b.fmul(p, f.pow2(half)), f.pow2(b.sub(ni, half)))
    return b.select(nan, x, result)


def _exp_reduced(f: _Float, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    """exp(x) = p * 2^n for finite x in exp's clamped range: (p, n as an integer)."""
    b = f.b
    n = intrinsic(b, "roundeven", b.fmul(x, f.c(1.0 / math.log(2.0))))
    ln2_hi, ln2_lo = _LN2[f.double]
    r = f.fma(n, f.c(-ln2_hi), x)
    r = f.fma(n, f.c(-ln2_lo), r)
    degree = 13 if f.double else 7
    p = f.poly(r, [1.0 / math.factorial(k) for k in range(degree, -1, -1)])
    return p, b.fptosi(n, f.int)


def log(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    f = _Float(b, x.type)
    scale_bits = 54 if f.double else 25
    min_normal = 2.0 ** (1 - f.bias)
    subnormal = f.lt(x, min_normal)
    scaled = b.select(subnormal, b.fmul(x, f.c(2.0**scale_bits)), x)
    bits = b.bitcast(scaled, f.int)
    sqrt_half = _bits(math.sqrt(0.5), f.double)
    shifted = b.add(bits, f.i(_bits(1.0, f.double) - sqrt_half))
    k = b.sub(b.lshr(shifted, f.i(f.mbits)), f.i(f.bias))
    k = b.sub(k, b.select(subnormal, f.i(scale_bits), f.i(0)))
    mantissa = b.add(b.and_(shifted, f.i((1 << f.mbits) - 1)), f.i(sqrt_half))
    m_minus_1 = b.fsub(b.bitcast(mantissa, f.ty), f.c(1.0))
    s = b.fdiv(m_minus_1, b.fadd(m_minus_1, f.c(2.0)))
    z = b.fmul(s, s)
    r = b.fmul(z, f.poly(z, list(reversed(_LG))))
    hfsq = b.fmul(b.fmul(f.c(0.5), m_minus_1), m_minus_1)
    dk = b.sitofp(k, f.ty)
    ln2_hi, ln2_lo = _LN2[f.double]
    inner = f.fma(s, b.fadd(hfsq, r), b.fmul(dk, f.c(ln2_lo)))
    result = b.fsub(b.fmul(dk, f.c(ln2_hi)), b.fsub(b.fsub(hfsq, inner), m_minus_1))
    result = b.select(b.fcmp_ordered("==", x, f.c(math.inf)), x, result)
    result = b.select(b.fcmp_ordered("==", x, f.c(0.0)), f.c(-math.inf), result)
    result = b.select(f.lt(x, 0.0), f.c(math.nan), result)
    return b.select(f.is_nan(x), x, result)


def tanh(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    f = _Float(b, x.type)
    a = intrinsic(b, "fabs", x)
    z = b.fmul(x, x)
    if f.double:
        ratio = b.fdiv(f.poly(z, _TANH_P), f.poly(z, _TANH_Q))
    else:
        ratio = f.poly(z, _TANH_F32)
    small = f.fma(b.fmul(a, z), ratio, a)
    e = exp(b, b.fmul(a, f.c(2.0)))
    large = b.fsub(f.c(1.0), b.fdiv(f.c(2.0), b.fadd(e, f.c(1.0))))
    # both sides computed on |x|, the sign restored at the end (keeps tanh(-0) = -0)
    return intrinsic(b, "copysign", b.select(f.lt(a, 0.625), small, large), x)


def sigmoid(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    f = _Float(b, x.type)
    e = exp(b, b.fneg(intrinsic(b, "fabs", x)))
    numerator = b.select(b.fcmp_ordered(">=", x, f.c(0.0)), f.c(1.0), e)
    return b.fdiv(numerator, b.fadd(e, f.c(1.0)))


def erf(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    f = _Float(b, x.type)
    return _erf64(f, x) if f.double else _erf32(f, x)


def _erf32(f: _Float, x: ir.Value) -> ir.Value:
    """Three polynomial pieces and one exp, every piece computed and the right one selected:
    no division, half the work of the f64 scheme at the same accuracy in f32."""
    b = f.b
    a = intrinsic(b, "fabs", x)
    small = f.fma(x, f.poly(b.fmul(x, x), _ERF32_SMALL), x)
    middle = b.fadd(f.c(_ERF32_ONE), f.poly(b.fsub(a, f.c(1.0)), _ERF32_MIDDLE))
    # the tail on |x| clamped into its interval (NaN too), so exp's argument stays in range
    t = b.select(f.lt(a, _ERF32_TAIL_END), a, f.c(_ERF32_TAIL_END))
    t = b.select(f.lt(t, _ERF32_MIDDLE_END), f.c(_ERF32_MIDDLE_END), t)
    exponent = f.fma(b.fneg(t), t, f.poly(b.fsub(t, f.c(_ERF32_TAIL_CENTRE)), _ERF32_TAIL))
    p, n = _exp_reduced(f, exponent)
    tail = b.fsub(f.c(1.0), b.fmul(p, f.pow2(n)))
    result = b.select(f.lt(a, _ERF32_TAIL_END), tail, f.c(1.0))
    result = b.select(f.lt(a, _ERF32_MIDDLE_END), middle, result)
    result = intrinsic(b, "copysign", result, x)
    result = b.select(f.lt(a, 0.84375), small, result)
    return b.select(f.is_nan(x), x, result)


def _erf64(f: _Float, x: ir.Value) -> ir.Value:
    b = f.b
    a = intrinsic(b, "fabs", x)
    z = b.fmul(x, x)
    # |x| < 0.84375: x + x P(z) / Q(z)
    small = f.fma(x, b.fdiv(f.poly(z, _ERF_PP), f.poly(z, _ERF_QQ)), x)
    # 0.84375 <= |x| < 1.25: erx + P(s) / Q(s), s = |x| - 1
    s = b.fsub(a, f.c(1.0))
    middle = b.fadd(f.c(_ERX), b.fdiv(f.poly(s, _ERF_PA), f.poly(s, _ERF_QA)))
    # 1.25 <= |x| < 6: 1 - exp(-x^2 - 0.5625 + R(1/x^2) / S(1/x^2)) / |x|, with the
    # coefficients of the two sub-intervals selected per lane instead of branching
    inv = b.fdiv(f.c(1.0), z)
    near = f.lt(a, 1.0 / 0.35)
    r = f.poly(inv, [b.select(near, f.c(p), f.c(q)) for p, q in zip(_ERF_RA, _ERF_RB,
                                                                     strict=True)])
    q = f.poly(inv, [b.select(near, f.c(p), f.c(q)) for p, q in zip(_ERF_SA, _ERF_SB,
                                                                     strict=True)])
    exponent = b.fadd(b.fsub(b.fneg(z), f.c(0.5625)), b.fdiv(r, q))
    tail = b.fsub(f.c(1.0), b.fdiv(exp(b, exponent), a))
    result = b.select(f.lt(a, 6.0), tail, f.c(1.0))
    result = b.select(f.lt(a, 1.25), middle, result)
    result = intrinsic(b, "copysign", result, x)
    result = b.select(f.lt(a, 0.84375), small, result)
    return b.select(f.is_nan(x), x, result)


APPROXIMATIONS = {"exp": exp, "log": log, "tanh": tanh, "erf": erf, "sigmoid": sigmoid}


def libm_unary(b: ir.IRBuilder, op: str, x: ir.Value) -> ir.Value:
    """``op`` of an f64 value through an LLVM intrinsic or libm."""
    if op in _INTRINSIC_UNARY:
        return intrinsic(b, op, x)
    return b.call(declare(b.module, op, F64, [F64]), [x])


def libm_binary(b: ir.IRBuilder, op: str, x: ir.Value, y: ir.Value) -> ir.Value:
    """``pow`` / ``atan2`` of f64 values through LLVM intrinsics."""
    return intrinsic(b, op, x, y)


def _bits(value: float, double: bool) -> int:
    if double:
        return int(struct.unpack("<q", struct.pack("<d", value))[0])
    return int(struct.unpack("<i", struct.pack("<f", value))[0])
