"""softmax, log_softmax, logsumexp, entropy and their VJPs, from :class:`RowStats`."""

from __future__ import annotations

from softmaxkit.numerics.precision import _INF, compensated_sum, compensated_sum_pair
from softmaxkit.numerics.rows import RowStats


def softmax(xp, st: RowStats):
    p = st.e / (1.0 + st.s)
    return xp.where(st.masked_row, xp.zeros_like(p), p)


def log_softmax(xp, st: RowStats):
    out = st.hi - st.L
    if st.lo is not None:
        out = out + st.lo
    return xp.where(st.masked_row, xp.full_like(out, -_INF), out)


def neg_log_softmax(xp, st: RowStats):
    """``-log_softmax``, >= 0: ``(-z) + log1p(s)`` with no cancellation."""
    out = st.L - st.hi
    if st.lo is not None:
        out = out - st.lo
    return xp.where(st.masked_row, xp.full_like(out, _INF), out)


def logsumexp(xp, st: RowStats):
    """``a + log1p(s)`` with the limits of masked and ``+inf`` rows (axis kept)."""
    out = xp.where(st.masked_row | st.inf_row, st.a, st.a + st.L)
    return out


def logsumexp_weighted(xp, st: RowStats, b):
    """``log|sum_i b_i exp(x_i)|`` and its sign, axis kept.

    ``row_stats`` must have been given ``valid`` that excludes ``b == 0``.
    The shifted sum ``S = sum_i b_i e_i`` is formed as ``hi + lo`` in nearly
    twice the working precision; ``log S`` is ``log1p((hi - 1) + lo)`` near
    ``S = 1`` (``hi - 1`` is exact there) and ``log|hi| + lo / hi`` elsewhere,
    so no rounding of ``S`` itself reaches the result.
    """
    zero = xp.zeros_like(b)
    # The pair even where the working dtype is wider than the input's: near
    # S = 1 the result is about S - 1, and a float64 rounding of S is up to
    # 10 float32 ULP of a result near 2e-10 (for example x = [0, -21],
    # b = [1, 0.25] in float32).
    hi, lo = compensated_sum_pair(xp, xp.where(st.e == 0, zero, b * st.e), False)
    if lo is None:
        lo = xp.zeros_like(hi)
    near_one = xp.abs(hi - 1.0) < 0.5
    d = xp.where(near_one, (hi - 1.0) + lo, xp.zeros_like(hi))
    safe_hi = xp.where(hi == 0, xp.ones_like(hi), hi)
    log_abs = xp.where(near_one, xp.log1p(d), xp.log(xp.abs(safe_hi)) + lo / safe_hi)
    sign = xp.sign(hi)
    out = xp.where(sign == 0, xp.full_like(hi, -_INF), st.a + log_abs)
    out = xp.where(st.inf_row, xp.where(sign == 0, xp.full_like(out, xp.nan), xp.full_like(out, _INF)), out)
    out = xp.where(st.masked_row, xp.full_like(out, -_INF), out)
    sign = xp.where(st.masked_row, xp.zeros_like(sign), sign)
    sign = xp.where(xp.isnan(out), xp.full_like(sign, xp.nan), sign)
    return out, sign


def softmax_vjp(xp, p, g, widened: bool):
    """``p * (g - <p, g>)``; entries with ``p = 0`` get 0 whatever ``g`` is."""
    zero = xp.zeros_like(p)
    dot = compensated_sum(xp, xp.where(p == 0, zero, p * g), widened)
    return xp.where(p == 0, zero, p * (g - dot))


def log_softmax_jvp(xp, p, live, t, widened: bool):
    """``t - <p, t>`` over the ``live`` entries (log-probability not ``-inf``), 0 elsewhere: a constant there."""
    zero = xp.zeros_like(t)
    dot = compensated_sum(xp, logsumexp_vjp(xp, p, t), widened)
    return xp.where(live, t - dot, zero)


def log_softmax_vjp(xp, p, live, g, widened: bool):
    """``g - p * sum(g)`` over the ``live`` entries (log-probability not ``-inf``).

    Masked entries get 0 and their cotangent is left out of the sum, so a
    fully masked row gives zeros, never NaN.
    """
    zero = xp.zeros_like(g)
    total = compensated_sum(xp, xp.where(live, g, zero), widened)
    return xp.where(live, g - p * total, zero)


def logsumexp_vjp(xp, p, g):
    """``g * p`` with ``p`` the softmax; entries with ``p = 0`` get 0 whatever ``g`` is (so ``g = inf`` never makes NaN).

    The zeros are ``p``'s own: no separate zero array is made, which under
    JAX's reverse mode would be kept as a residual as large as the input.
    """
    return xp.where(p == 0, p, g * p)


def entropy(xp, st: RowStats):
    """``sum_j p_j * (-log p_j)``: non-negative terms, 0 where ``p_j = 0``."""
    p = softmax(xp, st)
    nlp = neg_log_softmax(xp, st)
    terms = xp.where(p == 0, xp.zeros_like(p), p * nlp)
    return compensated_sum(xp, terms, st.widened)[..., 0]


