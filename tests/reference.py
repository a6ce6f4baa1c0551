"""Exact references in mpmath, and ULP measurement.

The references are written in the log1p form (shift by the max, leave the
max term out of the sum), so the working precision needed does not grow with
the logit margin.  Inputs are converted exactly (every binary float is an
mpf).  Nothing here calls softmaxkit or another array library's softmax.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np

mp.mp.dps = 60

try:
    import ml_dtypes

    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes comes with the test extra
    BFLOAT16 = None

FLOAT_DTYPES = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)] + ([BFLOAT16] if BFLOAT16 is not None else [])

INF = mp.inf


def to_mp(values) -> list:
    """Exact mpf values of a 1-D array of any float dtype."""
    return [mp.mpf(float(v)) for v in np.asarray(values, dtype=np.float64)]


def _finite_max(xs):
    live = [v for v in xs if v != -INF]
    return max(live) if live else None


def _shifted(xs, weights=None):
    """(a, log1p-part, [x_i - a]) with the max term left out of the sum."""
    if weights is None:
        weights = [1] * len(xs)
    pairs = [(x, w) for x, w in zip(xs, weights) if x != -INF and w != 0]
    if not pairs:
        return None
    a = max(x for x, _ in pairs)
    k = next(i for i, (x, _) in enumerate(pairs) if x == a)
    wk = pairs[k][1]
    s = mp.fsum(w * mp.exp(x - a) for i, (x, w) in enumerate(pairs) if i != k) / wk
    return a, mp.log(wk) + mp.log1p(s)


def lse(xs, weights=None):
    """log(sum_i w_i exp(x_i)) for finite or -inf x and w >= 0, in the log1p form."""
    parts = _shifted(xs, weights)
    return -INF if parts is None else parts[0] + parts[1]


def log_softmax(xs, T=1):
    """(y_i - a) - log1p(s): never ``y_i - lse``, which would need the
    precision to grow with the margin."""
    ys = [x / T for x in xs]
    parts = _shifted(ys)
    if parts is None:
        return [-INF] * len(ys)
    a, L = parts
    return [(y - a) - L if y != -INF else -INF for y in ys]


def softmax(xs, T=1):
    return [mp.exp(v) if v != -INF else mp.mpf(0) for v in log_softmax(xs, T)]


def cross_entropy(xs, coef, z=0, row_weight=1):
    """Loss ``sum c_j (lse - x_j) + z w lse^2`` and gradient ``(C + 2 z w lse) p - c``.

    At the argmax ``C p_k - c_k`` is written ``(C - c_k) + C expm1(log p_k)``:
    ``p_k`` itself may differ from 1 by less than the working precision.
    """
    L = lse(xs)
    lsm = log_softmax(xs)
    loss = mp.fsum(-c * v for c, v in zip(coef, lsm) if c != 0) + z * row_weight * L * L
    p = [mp.exp(v) for v in lsm]
    C = mp.fsum(coef)
    grad = [C * pj - c for pj, c in zip(p, coef)]
    live = [x for x in xs if x != -INF]
    if live:
        k = xs.index(max(live))
        grad[k] = (C - coef[k]) + C * mp.expm1(lsm[k])
    if z:
        grad = [g + 2 * z * row_weight * L * pj for g, pj in zip(grad, p)]
    return loss, grad


def hard_coef(n, t, eps=0.0, weight=None, finite=None):
    """Class coefficients for index target ``t`` with smoothing over finite classes."""
    w = [mp.mpf(1)] * n if weight is None else [mp.mpf(float(v)) for v in weight]
    finite = [True] * n if finite is None else finite
    K = sum(finite)
    c = [mp.mpf(0)] * n
    c[t] += (1 - mp.mpf(eps)) * w[t]
    if eps:
        for j in range(n):
            if finite[j]:
                c[j] += mp.mpf(eps) * w[j] / K
    return c, w[t]


def softplus(x):
    return mp.log1p(mp.exp(x)) if x < 0 else x + mp.log1p(mp.exp(-x))


def sigmoid(x):
    return 1 / (1 + mp.exp(-x))


# --- ULP measurement ----------------------------------------------------------


def _format(dtype):
    """(mantissa bits, min normal exponent) of a float dtype (bfloat16 included)."""
    dtype = np.dtype(dtype)
    if dtype.name == "bfloat16":
        return 7, -126
    fi = np.finfo(dtype)
    return fi.nmant, fi.minexp


def ulp(exact, dtype) -> mp.mpf:
    """The spacing of ``dtype`` at the exact value (subnormal spacing near 0)."""
    nmant, minexp = _format(dtype)
    if exact == 0:
        return mp.ldexp(1, minexp - nmant)
    _, e = mp.frexp(abs(exact))
    return mp.ldexp(1, max(int(e) - 1, minexp) - nmant)


def ulp_error(actual, exact, dtype) -> float:
    """Largest error, in ULPs of ``dtype``, of ``actual`` against ``exact`` values."""
    actual = np.asarray(actual).astype(np.float64).ravel()
    worst = 0.0
    for a, e in zip(actual, exact):
        if mp.isinf(e) or math.isinf(a):
            if not (math.isinf(a) and mp.isinf(e) and (a > 0) == (e > 0)):
                return math.inf
            continue
        if math.isnan(a):
            return math.inf
        worst = max(worst, float(abs(mp.mpf(a) - e) / ulp(e, dtype)))
    return worst


TOL = {"float16": 2.0, "bfloat16": 2.0, "float32": 2.0, "float64": 4.0}


def tolerance(dtype) -> float:
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
