"""The mpmath references, at 60 digits.

They are written in the log1p form (shift by the max, leave the max term out
of the sum), so the working precision needed does not grow with the logit
margin.  Inputs are converted exactly (every binary float is an mpf).
"""

from __future__ import annotations

import mpmath as mp
import numpy as np

mp.mp.dps = 60

INF = mp.inf


def to_mp(values) -> list:
    """Exact mpf values of a 1-D array of any float dtype."""
    return [mp.mpf(float(v)) for v in np.asarray(values, dtype=np.float64)]


def rows(fn, x, *args, **kwargs) -> list:
    """``fn(row, *args, **kwargs)`` for each row of the 2-D array ``x``, as exact mpf values."""
    return [fn(to_mp(row), *args, **kwargs) for row in np.asarray(x)]


def _shifted(xs, weights=None):
    """(a, log1p-part) of log(sum_i w_i exp(x_i)) with the max term left out of the sum."""
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


def log_softmax(xs, T=1, weights=None):
    """(y_i - a) - log1p(s) with y = x / T: never ``y_i - lse``, which would
    need the precision to grow with the margin.

    With ``weights`` each x_i counts w_i times in the normaliser, so that a
    row of a million entries with few distinct values stays cheap.
    """
    ys = [x / T for x in xs]
    parts = _shifted(ys, weights)
    if parts is None:
        return [-INF] * len(ys)
    a, L = parts
    return [(y - a) - L if y != -INF else -INF for y in ys]


def softmax(xs, T=1, weights=None):
    """exp of :func:`log_softmax` (same arguments)."""
    return [mp.exp(v) if v != -INF else mp.mpf(0) for v in log_softmax(xs, T, weights)]


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
