"""The sparse formulas: sparsemax and 1.5-entmax, with their VJPs.

The counterpart of ``_numerics`` for the sparse maps: one statement of each
formula, written against an array namespace ``xp``, along the **last axis**
of arrays in the working dtype (float64 where the namespace has it).  The
public layer (``sparse``), the torch autograd Functions (``_sparse_torch``)
and the JAX ``custom_vjp`` wrappers (``_sparse_jax``) all call these.

Both maps are thresholded: ``p_i = [z_i - tau]_+`` (sparsemax) and
``p_i = [z_i / 2 - tau]_+ ** 2`` (1.5-entmax), with ``tau`` the unique value
that makes ``sum p = 1``.  Sorting ``z`` in decreasing order, the support is
a prefix of the sorted row and ``tau`` has a closed form for each candidate
prefix length ``k``; the support size is the number of ``k`` whose candidate
threshold lies below the ``k``-th largest entry.  Once the support is known,
``tau`` is recomputed from it with a compensated sum (and, for entmax, a
two-pass variance), so its error is a few roundings of numbers of size 1.
"""

from __future__ import annotations

from typing import Any

from softmaxkit import numerics as num

_INF = float("inf")


def _standardise(xp: Any, x: Any, floor: float):
    """Rows shifted to max 0 and clamped below at ``floor``, with row flags.

    Both maps are shift invariant and give 0 to every entry more than 1
    (sparsemax) or 2 (entmax) below the row max, so clamping at ``floor``
    leaves the output unchanged while keeping ``inf - inf`` and overflowing
    squares out of the cumulative sums.  A row with ``+inf`` entries becomes
    0 there and ``floor`` elsewhere (its mass is shared equally among them,
    the limit of the softmax); a fully masked row becomes zeros and is
    zeroed again by the caller.
    """
    a = xp.max(x, axis=-1, keepdims=True)
    masked_row = a == -_INF
    inf_row = a == _INF
    nan_row = xp.isnan(a)
    floor_ = xp.full_like(x, floor)
    zero = xp.zeros_like(x)
    z = xp.where(inf_row, xp.where(x == _INF, zero, floor_), x - a)
    z = xp.where(masked_row, zero, z)
    z = xp.where(nan_row, xp.full_like(x, xp.nan), xp.maximum(z, floor_))
    return z, masked_row, nan_row


def _positions(xp: Any, z: Any):
    return xp.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=num.device(z))


def _finish(xp: Any, p: Any, masked_row: Any, nan_row: Any):
    p = xp.where(masked_row, xp.zeros_like(p), p)
    return xp.where(nan_row, xp.full_like(p, xp.nan), p)


def sparsemax(xp: Any, x: Any, widened: bool):
    """``[z - tau]_+`` with ``tau = (sum_{j <= k} z_(j) - 1) / k``.

    ``k = max{k : 1 + k z_(k) > sum_{j <= k} z_(j)}`` over the decreasingly
    sorted ``z_(j)`` (Martins & Astudillo 2016, Prop. 1).
    """
    z, masked_row, nan_row = _standardise(xp, x, -2.0)
    zs = xp.sort(z, axis=-1, descending=True)
    k = _positions(xp, z)
    in_support = 1.0 + k * zs > xp.cumulative_sum(zs, axis=-1)
    k_star = xp.sum(xp.astype(in_support, z.dtype), axis=-1, keepdims=True)
    k_safe = xp.where(k_star == 0, xp.ones_like(k_star), k_star)
    top = xp.where(k <= k_star, zs, xp.zeros_like(zs))
    tau = (num.compensated_sum(xp, top, widened) - 1.0) / k_safe
    p = xp.maximum(z - tau, xp.zeros_like(z))
    return _finish(xp, p, masked_row, nan_row)


def entmax15(xp: Any, x: Any, widened: bool):
    """``[z/2 - tau]_+ ** 2`` with ``sum_{j <= k} (z_(j)/2 - tau)**2 = 1``.

    For each prefix length ``k`` of ``u = sort(z/2)`` (decreasing) with mean
    ``m_k`` and sum of squared deviations ``S_k``, the threshold is
    ``tau_k = m_k - sqrt((1 - S_k) / k)``; the support size is the number of
    ``k`` with ``tau_k <= u_(k)`` (Peters, Niculae & Martins 2019, Alg. 2).
    """
    z, masked_row, nan_row = _standardise(xp, x, -4.0)
    u = z / 2.0
    us = xp.sort(u, axis=-1, descending=True)
    k = _positions(xp, u)
    mean = xp.cumulative_sum(us, axis=-1) / k
    mean_sq = xp.cumulative_sum(us * us, axis=-1) / k
    spread = k * (mean_sq - mean * mean)
    tau_k = mean - xp.sqrt(xp.maximum((1.0 - spread) / k, xp.zeros_like(spread)))
    k_star = xp.sum(xp.astype(tau_k <= us, u.dtype), axis=-1, keepdims=True)
    k_safe = xp.where(k_star == 0, xp.ones_like(k_star), k_star)
    in_support = k <= k_star
    zero = xp.zeros_like(us)
    m = num.compensated_sum(xp, xp.where(in_support, us, zero), widened) / k_safe
    dev = us - m
    spread = num.compensated_sum(xp, xp.where(in_support, dev * dev, zero), widened)
    tau = m - xp.sqrt(xp.maximum((1.0 - spread) / k_safe, xp.zeros_like(spread)))
    r = xp.maximum(u - tau, xp.zeros_like(u))
    return _finish(xp, r * r, masked_row, nan_row)


def sparsemax_vjp(xp: Any, p: Any, g: Any, widened: bool):
    """``s * (g - mean_S g)`` with ``s`` the support indicator ``p > 0``.

    The Jacobian is ``diag(s) - s s^T / |S|`` (Martins & Astudillo 2016,
    Sec. 2.5).  Rows with no support (fully masked) give zeros; NaN rows NaN.
    """
    s = p > 0
    zero = xp.zeros_like(g)
    size = xp.sum(xp.astype(s, g.dtype), axis=-1, keepdims=True)
    total = num.compensated_sum(xp, xp.where(s, g, zero), widened)
    mean = total / xp.where(size == 0, xp.ones_like(size), size)
    out = xp.where(s, g - mean, zero)
    nan_row = xp.any(xp.isnan(p), axis=-1, keepdims=True)
    return xp.where(nan_row, xp.full_like(out, xp.nan), out)


def entmax15_vjp(xp: Any, p: Any, g: Any, widened: bool):
    """``q * g - q <q, g> / sum q`` with ``q = sqrt(p)``.

    From ``p_i = (z_i/2 - tau)**2``: ``dp = q * dz - q <q, dz> / sum q``, a
    symmetric Jacobian ``diag(q) - q q^T / sum q`` (Peters et al. 2019,
    Prop. 1 for alpha = 1.5).  Rows with no support give zeros.
    """
    q = xp.sqrt(p)
    zero = xp.zeros_like(g)
    qg = xp.where(q == 0, zero, q * g)
    q_sum = num.compensated_sum(xp, q, widened)
    ratio = num.compensated_sum(xp, qg, widened) / xp.where(q_sum == 0, xp.ones_like(q_sum), q_sum)
    return qg - q * ratio
