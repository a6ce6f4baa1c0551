"""mpmath references for the native-kernel tests, in the log1p form.

With a = max(x) at index k and s = sum_{i != k} exp(x_i - a), evaluated at
60 digits: the precision needed does not grow with the margin.
"""

from __future__ import annotations

import mpmath
import numpy as np

DPS = 60


def _row_stats(row, temperature=1.0):
    x = [mpmath.mpf(float(v)) for v in row]
    a = max(x)
    k = x.index(a)
    T = mpmath.mpf(temperature)
    z = [(v - a) / T for v in x]
    s = mpmath.fsum(mpmath.exp(v) for i, v in enumerate(z) if i != k)
    return z, s, a, k


def softmax(x, temperature=1.0):
    """Reference softmax of each row of a 2-d finite array (mpf entries)."""
    with mpmath.workdps(DPS):
        out = []
        for row in np.asarray(x, dtype=np.float64):
            z, s, _, _ = _row_stats(row, temperature)
            out.append([mpmath.exp(v) / (1 + s) for v in z])
        return out


def log_softmax(x, temperature=1.0):
    with mpmath.workdps(DPS):
        out = []
        for row in np.asarray(x, dtype=np.float64):
            z, s, _, _ = _row_stats(row, temperature)
            L = mpmath.log1p(s)
            out.append([v - L for v in z])
        return out


def logsumexp(x):
    with mpmath.workdps(DPS):
        out = []
        for row in np.asarray(x, dtype=np.float64):
            _, s, a, _ = _row_stats(row)
            out.append(a + mpmath.log1p(s))
        return out


def counted_row(values, counts):
    """Stats of a row given as distinct values with multiplicities.

    Returns (softmax of each value, log_softmax of each value, logsumexp),
    so that rows of a million entries with few distinct values stay cheap.
    """
    with mpmath.workdps(DPS):
        v = [mpmath.mpf(float(u)) for u in values]
        a = max(v)
        s = mpmath.fsum(c * mpmath.exp(u - a) for u, c in zip(v, counts)) - 1
        L = mpmath.log1p(s)
        return [mpmath.exp(u - a) / (1 + s) for u in v], [(u - a) - L for u in v], a + L


def ulp_error(got, ref, dtype):
    """Largest |got - ref| in units of the last place of ``dtype`` at ref.

    ``ref`` holds mpf values (any nesting matching ``got``); non-finite
    references must be matched exactly (checked by the caller).
    """
    dtype = np.dtype(dtype)
    got = np.asarray(got, dtype=np.float64).ravel()
    flat = np.asarray(ref, dtype=object).ravel()
    worst = 0.0
    for g, r in zip(got, flat):
        rf = float(r)
        if not np.isfinite(rf):
            continue
        # the largest finite value has the spacing of the values below it
        mag = min(abs(rf), float(np.nextafter(np.finfo(dtype).max, 0, dtype=dtype)))
        ulp = float(np.spacing(np.asarray(mag, dtype=dtype)))
        with mpmath.workdps(DPS):
            err = float(abs(mpmath.mpf(g) - r) / ulp)
        worst = max(worst, err)
    return worst


def cross_entropy(x, targets):
    """Per-row loss (a - x_t) + log1p(s) and gradient p - onehot(t).

    The gradient at the target is formed as -(1 + s - e_t) / (1 + s) (or
    -s / (1 + s) at the argmax), so it keeps its digits on confident rows.
    """
    with mpmath.workdps(DPS):
        losses, grads = [], []
        for row, t in zip(np.asarray(x, dtype=np.float64), targets):
            v = [mpmath.mpf(float(u)) for u in row]
            a = max(v)
            k = v.index(a)
            e = [mpmath.exp(u - a) for u in v]
            s = mpmath.fsum(u for i, u in enumerate(e) if i != k)
            losses.append((a - v[t]) + mpmath.log1p(s))
            g = [u / (1 + s) for u in e]
            g[t] = -s / (1 + s) if t == k else -(1 + s - e[t]) / (1 + s)
            grads.append(g)
        return losses, grads
