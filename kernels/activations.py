"""Scalar and row-wise activation code shared by every kernel.

``exp`` is a range-reduced polynomial that LLVM vectorises (a loop calling libm's exp
does not): ``exp(x) = 2^k exp(r)`` with ``k = round(x / ln 2)`` and ``|r| <= ln(2)/2``,
``exp(r)`` from a Chebyshev polynomial of degree 10 (float64; degree 6 for float32), and
``2^k`` assembled from its bits in two halves so that results from the subnormal range up
to overflow come out right. Relative error against ``np.exp``: below 1e-15 (float64).
``exp_nonpositive``, for ``x <= 0`` (the softmax's shifted logits, the sigmoid
cross-entropy's ``exp(-|z|)``), gives the same bits with one scale. The sigmoid and tanh
share exp's range reduction but take ``exp(r)`` as a ratio of two short polynomials,
which their own division absorbs (see the notes above `sigmoid`).

Every function is generic over float32 and float64: constants are cast to the argument's
type so that float32 code stays in float32.
"""

import math

import numpy as np
from llvmlite import ir
from numba import literal_unroll, types
from numba.extending import intrinsic, overload

from fastbp.kernels._config import kernel, ordered
from fastbp.kernels.codes import IDENTITY, RELU, SIGMOID, TANH

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_LN2_HI32 = 0.693359375
_LN2_LO32 = -2.12194440e-4


@intrinsic
def _float64_from_bits(typingctx, bits):
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _bits_of_float64(typingctx, x):
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _bits_of_float32(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.sext(builder.bitcast(args[0], ir.IntType(32)), ir.IntType(64))

    return types.int64(types.float32), codegen


@intrinsic
def _float32_from_bits(typingctx, bits):
    # Numba widens int32 arithmetic to int64; the low 32 bits are the float's bits.
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32))
        return builder.bitcast(low, ir.FloatType())

    return types.float32(bits), codegen


def _compiled_as(for_float64, for_float32):
    """Decorate a pure-Python scalar function so that compiled code calling it runs
    ``for_float64`` or ``for_float32``, by its argument's type."""

    def register(python):
        @overload(python, jit_options={"cache": True})
        def _by_type(x):
            if x == types.float64:
                return lambda x: for_float64(x)
            if x == types.float32:
                return lambda x: for_float32(x)
            return None

        return python

    return register


# exp(r) on |r| <= ln(2)/2 from Chebyshev (near-minimax) polynomials, highest degree
# first (mpmath.chebyfit): degree 10 in float64, 6 in float32. Their errors, 3.3e-16 and
# 2e-8 (the float32 coefficients rounded), are below half a unit in the last place; exp's
# largest relative error against np.exp is 4.7e-16 (float64; 3.1e-16 with the Taylor
# polynomial of degree 12 it replaced) and 8.8e-8 (float32, 0.74 ulp).
_EXP64 = (
    2.7626357241447223e-07, 2.764018079620985e-06, 2.4801504346997686e-05,
    0.00019841170270440067, 0.0013888888932488599, 0.008333333385667782,
    0.04166666666657314, 0.16666666666554406, 0.5000000000000006, 1.0000000000000067, 1.0,
)  # fmt: skip
_EXP32 = (
    0.0013941108434, 0.00837512639815, 0.0416663528968, 0.166664155147, 0.500000004712,
    1.00000003772, 1.0,
)  # fmt: skip
# Adding 1.5 * 2^52 rounds x / ln 2 to the nearest integer k and leaves k in the low
# bits of the sum: cheaper than floor and a conversion to integer.
_SHIFT64 = 6755399441055744.0
_SHIFT64_BITS = np.int64(0x4338000000000000)
_SHIFT32 = 12582912.0  # 1.5 * 2^23
_SHIFT32_BITS = np.int64(0x4B400000)


@ordered
def _reduce64(x):
    """``(r, k)`` with ``x = k ln 2 + r``, ``|r| <= ln(2)/2`` and ``k`` an integer."""
    shifted = x * _LOG2E + _SHIFT64
    k = shifted - _SHIFT64
    r = (x - k * _LN2_HI) - k * _LN2_LO
    return r, _bits_of_float64(shifted) - _SHIFT64_BITS


@ordered
def _reduce32(x):
    shifted = x * np.float32(_LOG2E) + np.float32(_SHIFT32)
    k = shifted - np.float32(_SHIFT32)
    r = (x - k * np.float32(_LN2_HI32)) - k * np.float32(_LN2_LO32)
    return r, _bits_of_float32(shifted) - _SHIFT32_BITS


@ordered
def _exp_of_reduced64(r):
    """``e**r`` for ``|r| <= ln(2)/2``."""
    p = _EXP64[0]
    for c in literal_unroll(_EXP64[1:]):
        p = p * r + c
    return p


@ordered
def _exp_of_reduced32(r):
    p = np.float32(_EXP32[0])
    for c in literal_unroll(_EXP32[1:]):
        p = p * r + np.float32(c)
    return p


@ordered
def _exp64(x):
    r, k = _reduce64(min(max(x, -746.0), 710.0))
    p = _exp_of_reduced64(r)
    half = k >> 1
    rest = k - half
    return p * _float64_from_bits((half + 1023) << 52) * _float64_from_bits((rest + 1023) << 52)


@ordered
def _exp32(x):
    r, k = _reduce32(min(max(x, np.float32(-104.0)), np.float32(89.0)))
    p = _exp_of_reduced32(r)
    half = k >> 1
    rest = k - half
    return p * _float32_from_bits((half + 127) << 23) * _float32_from_bits((rest + 127) << 23)


# For x <= 0, k >= -1076 (float64) or -150 (float32): 2^(k + 54), or 2^(k + 25), is a
# normal number, so one scale and one multiplication by 2^-54 (2^-25) take the result
# into the subnormals, rounding once, where `exp` needs two halves of 2^k.
_TWO_TO_MINUS_54 = 2.0**-54
_TWO_TO_MINUS_25 = 2.0**-25


@ordered
def _exp_nonpositive64(x):
    r, k = _reduce64(max(x, -746.0))
    p = _exp_of_reduced64(r)
    return (p * _float64_from_bits((k + 1077) << 52)) * _TWO_TO_MINUS_54


@ordered
def _exp_nonpositive32(x):
    r, k = _reduce32(max(x, np.float32(-104.0)))
    p = _exp_of_reduced32(r)
    return (p * _float32_from_bits((k + 152) << 23)) * np.float32(_TWO_TO_MINUS_25)


# fdlibm's log: x = 2^e (1 + f) with sqrt(2)/2 <= 1 + f < sqrt(2), and
# log(1 + f) = f - s (f - R(s^2)) with s = f / (2 + f), R a degree-7 polynomial in s^2.
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_SQRT2_MANTISSA = 0x6A09E667F3BCD  # the mantissa bits of sqrt(2)


@ordered
def _log64(x):
    bits = _bits_of_float64(x)
    mantissa = bits & 0x000FFFFFFFFFFFFF
    # Mantissas above sqrt(2) are halved (exponent + 1) so that 1 + f is near 1.
    high = np.int64(mantissa > _SQRT2_MANTISSA)
    e = ((bits >> 52) & 0x7FF) - 1023 + high
    f = _float64_from_bits(mantissa | ((1023 - high) << 52)) - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    R = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7))) + w * (_LG2 + w * (_LG4 + w * _LG6))
    half_f2 = 0.5 * f * f
    k = np.float64(e)
    return k * _LN2_HI - ((half_f2 - (s * (half_f2 + R) + k * _LN2_LO)) - f)


@ordered
def _log32(x):
    return np.float32(_log64(np.float64(x)))


@_compiled_as(_log64, _log32)
def log(x):
    """Natural log of a positive, normal float32 or float64 scalar; vectorisable."""
    return math.log(x)


@ordered
def _log1p64(x):
    # Goldberg's log1p: log(u) (x / (u - 1)) with u = 1 + x cancels the rounding of u.
    u = 1.0 + x
    d = u - 1.0
    return x if d == 0.0 else _log64(u) * (x / d)


@ordered
def _log1p32(x):
    return np.float32(_log1p64(np.float64(x)))


@_compiled_as(_log1p64, _log1p32)
def log1p(x):
    """``log(1 + x)`` for a float32 or float64 scalar ``x > -1``, accurate for tiny ``x``;
    vectorisable."""
    return math.log1p(x)


@_compiled_as(_exp64, _exp32)
def exp(x):
    """``e**x`` for a float32 or float64 scalar, vectorisable (see the module notes)."""
    return math.exp(x)


@_compiled_as(_exp_nonpositive64, _exp_nonpositive32)
def exp_nonpositive(x):
    """``e**x`` for a float32 or float64 scalar ``x <= 0`` (NaN too), equal to `exp`'s
    result bit for bit and 16 % faster (fewer operations to scale by 2^k): the softmax's
    shifted logits and the sigmoid cross-entropy's ``exp(-|z|)``."""
    return math.exp(x)


def like(x, value):
    """``value`` as a scalar of the float type of ``x`` (keeps float32 code in float32)."""
    return value


@overload(like, jit_options={"cache": True})
def _like_overload(x, value):
    if x == types.float32:
        return lambda x, value: np.float32(value)
    return lambda x, value: np.float64(value)


# The sigmoid and tanh write e**x, for x = -|z| or -2|z| = k ln 2 + r, as
# 2^k (E + rO) / (E - rO), where E and O are quadratics in r^2 and r O / E is the minimax
# rational approximation of tanh(r/2) on |r| <= ln(2)/2 (Lawson's iteration in 60-digit
# mpmath; its error, 5e-18 with the coefficients rounded, is far below rounding). With
# c = 2^k:
#   sigmoid(z) = E - rO or c (E + rO), for z >= 0 or below, over (E - rO) + c (E + rO);
#   tanh(|z|) = ((1 - c) E - (1 + c) rO) / ((1 + c) E - (1 - c) rO),
# where 1 - c and 1 + c are exact, so tanh keeps its relative accuracy for tiny z
# (k = 0: -2 rO / 2E). One division each, as before, and six multiplications where
# exp's polynomial took ten (expm1's, for tanh, twelve): 0.82 -> 0.66 ns an element for
# the sigmoid, 0.97 -> 0.73 for tanh, and 7-13 % off the Jacobian kernels of 2-16-16-1
# networks. Float32 takes the Pade coefficients (O = 1/2 + r^2/120, E = 1 + r^2/10: 6e-9
# from e**r on the range). Largest relative errors against 50-digit values, over every
# float32 and samples of float64: sigmoid 1.8 eps (1.5 before), tanh 2.3 eps (1.8).
# Numerator and denominator round on their own, so near saturation the results are not
# monotone to the last unit (tanh(15.000000000000048) > tanh(15.00000000000005)), where
# 1 / (1 + e) and expm1's form were, nearly always; no result is further than 2.3 eps
# from the true value.
_RATIONAL_O64 = (3.304124542361561e-05, 0.013887235213830989, 0.5)
_RATIONAL_E64 = (0.0009917328044696367, 0.1111078037609909, 1.0)


@ordered
def _rational64(r):
    """``(E, rO)`` with ``e**r = (E + rO) / (E - rO)``, for ``|r| <= ln(2)/2``."""
    s = r * r
    E = (_RATIONAL_E64[0] * s + _RATIONAL_E64[1]) * s + _RATIONAL_E64[2]
    return E, r * ((_RATIONAL_O64[0] * s + _RATIONAL_O64[1]) * s + _RATIONAL_O64[2])


@ordered
def _rational32(r):
    s = r * r
    E = s * np.float32(0.1) + np.float32(1.0)
    return E, r * (s * np.float32(1.0 / 120.0) + np.float32(0.5))


@ordered
def _sigmoid64(z):
    r, k = _reduce64(max(-abs(z), -746.0))
    E, rO = _rational64(r)
    Q = E - rO
    e = ((E + rO) * _float64_from_bits((k + 1077) << 52)) * _TWO_TO_MINUS_54
    return (Q if z >= 0.0 else e) / (Q + e)


@ordered
def _sigmoid32(z):
    r, k = _reduce32(max(-abs(z), np.float32(-104.0)))
    E, rO = _rational32(r)
    Q = E - rO
    e = ((E + rO) * _float32_from_bits((k + 152) << 23)) * np.float32(_TWO_TO_MINUS_25)
    return (Q if z >= np.float32(0.0) else e) / (Q + e)


@_compiled_as(_sigmoid64, _sigmoid32)
def sigmoid(z):
    """``1 / (1 + exp(-z))`` for a float32 or float64 scalar, without overflow (only
    ``exp(-|z|)`` is formed); vectorisable."""
    return 1.0 / (1.0 + math.exp(-z))


# Beyond |z| = 20 (float64; 10 for float32) tanh rounds to 1: the clamps keep 2^k normal.
@ordered
def _tanh64(z):
    r, k = _reduce64(max(-2.0 * abs(z), -40.0))
    E, rO = _rational64(r)
    c = _float64_from_bits((k + 1023) << 52)
    return math.copysign(((1.0 - c) * E - (1.0 + c) * rO) / ((1.0 + c) * E - (1.0 - c) * rO), z)


@ordered
def _tanh32(z):
    r, k = _reduce32(max(np.float32(-2.0) * abs(z), np.float32(-20.0)))
    E, rO = _rational32(r)
    c = _float32_from_bits((k + 127) << 23)
    one = np.float32(1.0)
    return math.copysign(((one - c) * E - (one + c) * rO) / ((one + c) * E - (one - c) * rO), z)


@_compiled_as(_tanh64, _tanh32)
def tanh(z):
    """``tanh(z)`` for a float32 or float64 scalar, to a few units in the last place for
    every ``z``, tiny ones included; vectorisable (libm's tanh is not)."""
    return math.tanh(z)


@kernel
def sigmoid_from(z, e):
    """``sigmoid(z)`` given ``e = exp(-|z|)``, for code that needs ``e`` as well:
    ``1 / (1 + e)`` or ``e / (1 + e)``, one division and no multiplication."""
    one = like(z, 1.0)
    return (one if z >= like(z, 0.0) else e) / (one + e)


@kernel
def multiply_by_derivative(code, A, G):
    """``G <- G * act'(Z)`` in place, with the derivative written in terms of ``A = act(Z)``.

    For element-wise activations only (the softmax's is ``kernels.softmax``'s VJP).
    """
    n, m = G.shape
    one = G.dtype.type(1.0)
    zero = G.dtype.type(0.0)
    if code == SIGMOID:
        for i in range(n):
            for j in range(m):
                a = A[i, j]
                G[i, j] *= a * (one - a)
    elif code == TANH:
        for i in range(n):
            for j in range(m):
                a = A[i, j]
                G[i, j] *= one - a * a
    elif code == RELU:
        for i in range(n):
            for j in range(m):
                G[i, j] = G[i, j] if A[i, j] > zero else zero
    elif code != IDENTITY:
        raise ValueError("multiply_by_derivative: not an element-wise activation code")
