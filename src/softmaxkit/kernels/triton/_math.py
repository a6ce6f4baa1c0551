"""Float32 building blocks of the Triton kernels: error-free transformations,
an accurate exp and log, the exact shift and a compensated block sum.

These restate ``softmaxkit.numerics.precision`` for Triton in float32, with
nothing wider available.  They are written from basic operations (bit
manipulation, ``fma``, correctly rounded division) rather than
``libdevice`` or Triton's ``exp``: the generic ``libdevice`` functions do not
run in Triton's interpreter, and on NVIDIA GPUs ``tl.exp`` of a float32 is
``ex2.approx`` after a rounded multiplication by ``log2(e)``, whose relative
error grows with the argument (about ``|x|`` ULP, 80 ULP at ``x = -80``).
The same code therefore runs, with the same roundings, on a GPU and in the
interpreter.
"""

from __future__ import annotations

# launch first: it needs torch, which tells a test collector the optional
# library that is missing
# isort: off
from softmaxkit.kernels.triton.launch import helper

import triton.language as tl

# isort: on

_LOG2E = tl.constexpr(1.4426950408889634)
# ln 2 = _LN2_HI + _LN2_LO; _LN2_HI is float32(ln 2), and k * _LN2_HI is
# subtracted with one fma, so the reduced argument is rounded once.
_LN2_HI = tl.constexpr(0.693147182464599609375)
_LN2_LO = tl.constexpr(-1.904654323148236e-09)
# musl's logf (from FreeBSD's e_logf.c): ln 2 split so that k * ln2_hi is exact.
_LOG_LN2_HI = tl.constexpr(6.9313812256e-01)
_LOG_LN2_LO = tl.constexpr(9.0580006145e-06)
_LG1 = tl.constexpr(0.66666662693)
_LG2 = tl.constexpr(0.40000972152)
_LG3 = tl.constexpr(0.28498786688)
_LG4 = tl.constexpr(0.24279078841)


@helper
def two_sum(a, b):
    """``(s, e)`` with ``s + e == a + b`` exactly (Knuth's TwoSum); ``e = 0`` where ``s`` is not finite."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, tl.where(tl.abs(s) < float("inf"), e, 0.0)


@helper
def shift(x, a, t_hi, t_lo, HALVE: tl.constexpr, TEMPERED: tl.constexpr):
    """``(hi, lo)``: ``(x - a) / T`` as a float32 pair (``numerics.rows._shifted``).

    The difference is exact (TwoSum); with a temperature, ``hi`` is the
    correctly rounded quotient by ``t_hi`` and ``lo`` the remainder (exact
    from one ``fma``) divided by ``t_hi``, with the temperature's own rounding ``t_lo`` carried
    (``numerics.precision.divide_pair``).  With ``HALVE`` (temperatures above
    1, given as ``T / 2``) both operands are halved first, so that a row
    spanning more than the largest float32 still gives finite quotients.
    A quotient too large to carry a remainder keeps ``lo = 0``; its exp is 0.
    """
    if HALVE:
        x = x * 0.5
        a = a * 0.5
    hi, lo = two_sum(x, -a)
    if TEMPERED:
        q = tl.math.div_rn(hi, t_hi)
        # hi - q * t_hi is exact for a correctly rounded quotient: one fma
        # gives it, whatever the compiler contracts.
        num = (tl.fma(-q, t_hi, hi) + lo) - q * t_lo
        rem = tl.math.div_rn(num, t_hi)
        hi = q
        lo = tl.where(tl.abs(q) < 1.0e30, rem, 0.0)
    return hi, lo


@helper
def _pow2(k):
    """``2**k`` for an int32 ``k`` in [-126, 127]."""
    return ((k + 127) << 23).to(tl.float32, bitcast=True)


@helper
def exp(hi, lo):
    """``exp(hi + lo)`` within about 0.7 ULP, for ``|lo| <= ulp(hi)``.

    Cody-Waite reduction ``hi + lo = k ln 2 + r`` with ``|r| <= ln 2 / 2``
    (``lo`` folded into ``r``), a degree-7 Taylor polynomial (truncation
    below 0.1 ULP), and ``2**k`` applied in two exact halves so that
    subnormal results are rounded once.  Arguments below -110 (and ``-inf``)
    give 0, above 90 ``inf``.
    """
    # Beyond these the result is 0 or inf whatever the low part.
    hi = tl.minimum(tl.maximum(hi, -110.0), 90.0)
    kf = tl.floor(hi * _LOG2E + 0.5)
    r = tl.fma(-kf, _LN2_HI, hi)
    r = tl.fma(-kf, _LN2_LO, r) + lo
    poly = 1.0 / 5040.0
    poly = poly * r + 1.0 / 720.0
    poly = poly * r + 1.0 / 120.0
    poly = poly * r + 1.0 / 24.0
    poly = poly * r + 1.0 / 6.0
    poly = poly * r + 0.5
    y = 1.0 + (r + (r * r) * poly)
    k = kf.to(tl.int32)
    k1 = k // 2
    y = (y * _pow2(k1)) * _pow2(k - k1)
    return tl.where(hi == float("-inf"), 0.0, y)


@helper
def log(u):
    """``log(u)`` for finite ``u >= 1`` within 1 ULP (musl's ``logf``).

    ``u = 2**k * m`` with ``m`` in ``[sqrt(2)/2, sqrt(2))``, ``f = m - 1``
    exact, ``log(1 + f)`` from ``s = f / (2 + f)`` and a degree-8
    polynomial in ``s``, and ``k ln 2`` added in two parts.
    """
    ix = u.to(tl.int32, bitcast=True)
    ix = ix + (0x3F800000 - 0x3F3504F3)
    k = (ix >> 23) - 0x7F
    ix = (ix & 0x007FFFFF) + 0x3F3504F3
    f = ix.to(tl.float32, bitcast=True) - 1.0
    s = tl.math.div_rn(f, 2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * _LG4)
    t2 = z * (_LG1 + w * _LG3)
    big_r = t2 + t1
    hfsq = 0.5 * f * f
    dk = k.to(tl.float32)
    return s * (hfsq + big_r) + dk * _LOG_LN2_LO - hfsq + f + dk * _LOG_LN2_HI


@helper
def log1p(s_hi, s_lo):
    """``log1p(s_hi + s_lo)`` for ``s_hi >= 0``: ``log(u) + c / u`` with
    ``u + c = 1 + s_hi + s_lo`` (TwoSum), so the rounding of ``1 + s`` does not
    reach the result (small ``s`` gives ``s`` itself)."""
    u, c = two_sum(1.0, s_hi)
    c = c + s_lo
    return log(u) + tl.math.div_rn(c, u)


@helper
def scale_pair(hi, lo, f):
    """``(hi + lo) * f`` as a pair: the product's rounding error from ``fma``."""
    p = hi * f
    return p, tl.fma(hi, f, -p) + lo * f


@helper
def block_sum(v, B_LOG2: tl.constexpr):
    """The sum of a block of at most ``2**B_LOG2`` float32 values as a pair ``(hi, lo)``.

    Two extractions in the manner of Rump, Ogita and Oishi (SIAM J. Sci.
    Comput. 31, 2008, ExtractVector): with ``sigma`` a power of two at
    least ``n max|v|``, ``q = (sigma + v) - sigma`` and ``v - q`` are exact
    and the ``q`` add up exactly in any order; the second extraction does the
    same on the remainders, and only remainders below ``2**(3 B_LOG2 - 44)``
    times ``max|v|`` meet a rounded sum.  The result is within a rounding of
    the exact sum, independent of the reduction order.  A block holding
    ``inf`` or NaN gives its plain sum.
    """
    big = tl.max(tl.abs(v), 0)
    finite = big < float("inf")
    ebits = (big.to(tl.int32, bitcast=True) >> 23) & 0xFF
    e1 = tl.minimum(tl.maximum(ebits, 1) + B_LOG2 + 2, 254)
    e2 = tl.maximum(e1 + B_LOG2 - 23, 1)
    sigma1 = (e1 << 23).to(tl.float32, bitcast=True)
    sigma2 = (e2 << 23).to(tl.float32, bitcast=True)
    q1 = (sigma1 + v) - sigma1
    r1 = v - q1
    q2 = (sigma2 + r1) - sigma2
    r2 = r1 - q2
    hi, lo = two_sum(tl.sum(q1, 0), tl.sum(q2, 0))
    lo = lo + tl.sum(r2, 0)
    plain = tl.sum(v, 0)
    return tl.where(finite, hi, plain), tl.where(finite, lo, 0.0)


@helper
def add_pair(hi, lo, b_hi, b_lo):
    """``(hi + lo) + (b_hi + b_lo)`` as a pair (TwoSum of the high parts)."""
    s, e = two_sum(hi, b_hi)
    return s, lo + (e + b_lo)


@helper
def load(ptr, offsets, mask, other):
    """Values at ``ptr + offsets`` as float32 (``other`` where ``mask`` is False); bfloat16
    is widened from its bits (``bits << 16``, exact)."""
    if ptr.dtype.element_ty == tl.bfloat16:
        bits = tl.load(ptr.to(tl.pointer_type(tl.int16)) + offsets, mask=mask, other=0)
        x = (bits.to(tl.int32) << 16).to(tl.float32, bitcast=True)
        return tl.where(mask, x, other)
    return tl.load(ptr + offsets, mask=mask, other=other).to(tl.float32)


@helper
def store(ptr, offsets, value, mask):
    """Store float32 ``value`` rounded once to ``ptr``'s type (to nearest, ties to even).

    bfloat16 is rounded on the bits: Triton's interpreter truncates float32
    to bfloat16 and mangles subnormals; this gives the GPU's rounding
    everywhere (NaN stays NaN, overflow gives inf).
    """
    if ptr.dtype.element_ty == tl.bfloat16:
        bits = value.to(tl.int32, bitcast=True)
        rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
        # NaN, the one value unequal to itself, stores the quiet NaN
        rounded = tl.where(value != value, 0x7FC0, rounded)  # noqa: PLR0124
        tl.store(ptr.to(tl.pointer_type(tl.int16)) + offsets, rounded.to(tl.int16), mask=mask)
    else:
        tl.store(ptr + offsets, value.to(ptr.dtype.element_ty), mask=mask)
