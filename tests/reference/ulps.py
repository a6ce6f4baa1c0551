"""Errors in ULPs: of a result against exact values, or between two results.

Each float format is described by its mantissa bits and exponent range, so
bfloat16 (from ml_dtypes) is measured like the NumPy formats.  The spacing at
a value is that of its binade, the subnormal spacing below the smallest
normal, and the largest finite value's spacing beyond the range.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np

try:
    import ml_dtypes

    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes comes with the test extras
    BFLOAT16 = None

FLOAT_DTYPES = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)] + ([BFLOAT16] if BFLOAT16 is not None else [])


def _format(dtype):
    """(mantissa bits, min normal exponent, max exponent) of a float dtype, bfloat16 included."""
    dtype = np.dtype(dtype)
    if dtype.name == "bfloat16":
        return 7, -126, 128
    fi = np.finfo(dtype)
    return fi.nmant, fi.minexp, fi.maxexp


def _mpf(value) -> mp.mpf:
    """An mpf, or a float of any width converted exactly."""
    return value if isinstance(value, mp.mpf) else mp.mpf(float(value))


def ulp(exact, dtype) -> mp.mpf:
    """The spacing of ``dtype`` at the exact (mpf or float) value."""
    nmant, minexp, maxexp = _format(dtype)
    if exact == 0:
        return mp.ldexp(1, minexp - nmant)
    _, e = mp.frexp(abs(_mpf(exact)))
    return mp.ldexp(1, min(max(int(e) - 1, minexp), maxexp - 1) - nmant)


def _overflow(dtype) -> mp.mpf:
    """The smallest magnitude that rounds to infinity in ``dtype`` (max + ulp(max) / 2)."""
    nmant, _, maxexp = _format(dtype)
    return mp.ldexp(1, maxexp) - mp.ldexp(1, maxexp - nmant - 2)


def _spacing(magnitude, dtype):
    """:func:`ulp` of each entry of a float64 array of finite magnitudes."""
    nmant, minexp, maxexp = _format(dtype)
    _, e = np.frexp(magnitude)
    e = np.where(magnitude == 0, minexp, np.clip(e - 1, minexp, maxexp - 1))
    return np.ldexp(1.0, e - nmant)


def _float_distance(a, b, dtype, magnitude):
    """Largest |a - b| over the ULP of ``dtype`` at ``magnitude(a, b)``, for
    float64 arrays; inf where a NaN or an infinity is not matched."""
    finite = np.isfinite(a) & np.isfinite(b)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if not np.all(finite | same):
        return math.inf
    if not finite.any():
        return 0.0
    a, b = a[finite], b[finite]
    return float(np.max(np.abs(a - b) / _spacing(magnitude(a, b), dtype)))


def ulp_error(actual, exact, dtype) -> float:
    """Largest error, in ULPs of ``dtype`` at the exact value, of ``actual`` against ``exact``.

    ``exact`` holds mpf values or floats, in any nesting, one per entry of
    ``actual``; an exact value beyond the range of ``dtype`` stands for the
    infinity it rounds to.  A NaN or an infinity must be matched exactly: the
    error is inf otherwise, and also for a non-finite result where the exact
    value is finite.  +0 and -0 count as equal.
    """
    actual = np.asarray(actual).astype(np.float64).ravel()
    exact = np.asarray(exact)
    assert actual.size == exact.size, f"{actual.size} results against {exact.size} exact values"
    limit = _overflow(dtype)
    if exact.dtype != object:
        exact = exact.astype(np.float64).ravel()
        exact = np.where(np.abs(exact) >= float(limit), np.copysign(np.inf, exact), exact)
        return _float_distance(actual, exact, dtype, lambda _, e: np.abs(e))
    worst = 0.0
    for a, e in zip(actual, exact.ravel()):
        e = _mpf(e)
        if mp.isfinite(e) and abs(e) >= limit:
            e = mp.inf if e > 0 else -mp.inf
        if not (math.isfinite(a) and mp.isfinite(e)):
            if not (a == e or (math.isnan(a) and mp.isnan(e))):
                return math.inf
            continue
        worst = max(worst, float(abs(mp.mpf(a) - e) / ulp(e, dtype)))
    return worst


def ulp_distance(a, b, dtype) -> float:
    """Largest distance, in ULPs of ``dtype`` at the larger magnitude, between two results.

    For two approximations of one value, neither of them exact (two code
    paths, two instruction sets).  The shapes must agree, NaN must sit at the
    same places and infinities must match (the distance is inf otherwise);
    +0 and -0 count as equal.
    """
    a = np.asarray(a).astype(np.float64)
    b = np.asarray(b).astype(np.float64)
    assert a.shape == b.shape, f"shapes {a.shape} and {b.shape}"
    return _float_distance(a, b, dtype, lambda a, b: np.maximum(np.abs(a), np.abs(b)))


TOL = {"float16": 2.0, "bfloat16": 2.0, "float32": 2.0, "float64": 4.0}


def tolerance(dtype) -> float:
    """The accuracy contract in ULPs of ``dtype``."""
    return TOL[np.dtype(dtype).name]


def difference_tolerance(dtype) -> float:
    """Bound, in ULP of max(C p_j, c_j), on a gradient entry C p_j - c_j.

    float64 computes p_j in its own precision: with p_j within about 1.7 ULP
    (the exp, the row sum, the division), the roundings of C, C p_j and the
    difference, and C p_j possibly a binade above p_j, the bound is below
    6.4 ULP; 8 is stated.  The narrower dtypes compute in float64 and round
    once.
    """
    return 8.0 if np.dtype(dtype) == np.float64 else tolerance(dtype)
