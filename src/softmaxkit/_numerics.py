"""The formulas: one statement of each, written against an array namespace ``xp``.

Every function here works along the **last axis** of arrays that are already in
the *working dtype* (see :func:`working_dtype`); the public layer moves the
class axis to the end, validates, and rounds the result once to the output
dtype.  Backends (NumPy, PyTorch, JAX, the native kernels) share these
formulas rather than copying them.

Techniques
----------
For a row ``x`` with maximum ``a`` at index ``k`` let ``z_i = x_i - a`` (or
``(x_i - a)/T`` with a temperature) and ``s = sum_{i != k} exp(z_i)``; the
max term, exactly 1, is left out of ``s``.

* logsumexp ``= a + log1p(s)`` (Blanchard, Higham & Higham, "Accurately
  computing the log-sum-exp and softmax functions", IMA J. Numer. Anal. 41,
  2021, Algorithm 4.1).  ``log1p`` keeps full relative accuracy when ``s`` is
  tiny, i.e. on confident rows.
* log_softmax ``= (z_i - log1p(s))``: both terms are <= 0, so nothing cancels,
  and at ``i = k`` it is ``-log1p(s)``, exact even when ``p_k`` rounds to 1.
* softmax ``= exp(z_i) / (1 + s)``: dividing is more accurate than
  ``exp(x_i - logsumexp)`` (Blanchard et al., Thm 3.4 vs 4.3).
* cross-entropy with class coefficients ``c`` (a one-hot target, a smoothed
  target, class weights or probabilities) is ``sum_j c_j * (-log_softmax_j)``,
  a sum of non-negative terms.  Its gradient ``C p - c`` (``C = sum c``) is
  never formed as ``p_t - 1`` at the argmax, which in float32 rounds to 0 once
  the margin exceeds about 17 ("softmax collapse", Prieto et al. 2025).  Where
  ``p_k > 1/2`` (``s < 1``) it is ``(C - c_k) - C * s / (1 + s)``, with
  ``C - c_k`` summed from the other coefficients.

Precision
---------
* float16, bfloat16 and float32 inputs are computed in float64 and rounded
  once: the difference of two float32 numbers is exact in float64, and the
  float64 rounding errors are far below half a float32 ULP.
* float64 inputs (and float32 inputs where float64 is not available: JAX
  without x64, an array-API device without it) use compensated arithmetic:
  ``x_i - a`` is formed exactly as ``hi + lo`` (TwoSum, Knuth/Møller) and
  ``exp(hi + lo)`` as ``exp(hi) * (1 + lo)``, which removes the
  ``|x_i - a| * u`` error of the plain shift; with a temperature the
  quotient's remainder is recovered with Dekker's TwoProduct (Veltkamp
  splitting), on a power-of-two-scaled temperature so that no temperature
  from the smallest subnormal to the largest finite number overflows it.
  Sums use a TwoSum halving tree whose rounding errors are added back
  (cascaded summation), so they are accurate to about one rounding whatever
  the width.  Compensated float32 is within 6 ULP (the float32 ``exp``'s
  own error is part of it).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import array_api_compat

_INF = float("inf")


def working_dtype(xp: Any, dtype: Any, like: Any = None) -> tuple[Any, bool]:
    """The dtype to compute in, and whether it is wider than ``dtype``.

    float64 is used for every floating input; when it is narrower than
    float64 the result is "extra precise" and the compensations below are
    skipped.  Where float64 is not available (JAX without x64, or the device
    of ``like``, an array where the work will run, lacks it) the work is
    done in float32 with the compensations for float32 input, and plainly
    (float32 being wider) for float16 and bfloat16.
    """
    if dtype == xp.float64:
        return xp.float64, False
    if _has_float64(xp, like):
        return xp.float64, True
    return xp.float32, dtype != xp.float32


def _has_float64(xp: Any, like: Any) -> bool:
    if xp.__name__.startswith("jax"):
        import jax

        return bool(jax.config.read("jax_enable_x64"))
    if like is None or array_api_compat.is_numpy_namespace(xp):
        return True
    # Array-API devices list their dtypes (some GPUs and test devices have no float64).
    info = getattr(xp, "__array_namespace_info__", None)
    if info is None:
        return True
    return "float64" in info().dtypes(device=array_api_compat.device(like), kind="real floating")


# --- error-free transformations ---------------------------------------------


def two_diff(xp, x, a):
    """``hi + lo == x - a`` exactly (TwoSum of ``x`` and ``-a``)."""
    hi = x - a
    bb = hi - x
    lo = (x - (hi - bb)) - (a + bb)
    # x = -inf gives hi = -inf and a NaN remainder; the remainder of an
    # infinite difference is 0.
    return hi, xp.where(xp.isfinite(hi), lo, xp.zeros_like(lo))


def _split_factor(xp, dtype) -> float:
    return 134217729.0 if dtype == xp.float64 else 4097.0


def _split(xp, v):
    # Veltkamp splitting: v == high + low with each half fitting in half the
    # significand, so products of halves are exact.
    c = _split_factor(xp, v.dtype) * v
    high = c - (c - v)
    return high, v - high


def two_prod(xp, u, v):
    """``p + e == u * v`` exactly (Dekker's TwoProduct).

    Exact while ``factor * |u|`` and ``factor * |v|`` (the Veltkamp splits)
    stay finite and the partial products stay normal; see
    :func:`divide_pair` for how its callers keep them there.
    """
    p = u * v
    uh, ul = _split(xp, u)
    vh, vl = _split(xp, v)
    e = ((uh * vh - p) + uh * vl + ul * vh) + ul * vl
    return p, e


def _scale(v, k: int):
    """``v * 2**k`` in two exact steps: ``2**k`` alone may not be representable."""
    half = k // 2
    return (v * 2.0**half) * 2.0 ** (k - half)


def divide_pair(xp, hi, lo, temperature: float):
    """``(q, r)`` with ``q + r`` within a rounding of ``(hi + lo) / temperature``.

    ``q`` is the rounded quotient and ``r`` its remainder divided by the
    temperature, recovered with :func:`two_prod`.  The temperature is the
    caller's (float64) number even where the working dtype is narrower: its
    own rounding error is carried into ``r``.

    Dekker's product splits ``q`` and the temperature with Veltkamp's
    constant, which overflows (to NaN) beyond about ``max / factor``, and
    loses exactness where its partial products underflow.  So a temperature
    far from 1 is written ``m * 2**k`` with ``m`` in ``[0.5, 1)`` and ``hi``
    and ``lo`` are scaled by ``2**-k`` instead (exact), and the remainder is
    left out (0) where ``|q|`` is too large to split: there ``exp(q)`` is 0
    and ``q`` alone is within half an ULP of the quotient.
    """
    dtype = hi.dtype
    device = array_api_compat.device(hi)
    fi = xp.finfo(dtype)
    emax = math.frexp(float(fi.max))[1]
    m, k = math.frexp(temperature)
    if abs(k) <= emax // 4:
        m, k = temperature, 0
    else:
        hi, lo = _scale(hi, -k), _scale(lo, -k)
    # The rounding of m to the working dtype, done on the host: a device
    # round trip would stall an accelerator's queue.
    m_hi = m if dtype == xp.float64 else float(struct.unpack("f", struct.pack("f", m))[0])
    t_hi = xp.asarray(m_hi, dtype=dtype, device=device)
    t_lo = m - m_hi
    q = hi / t_hi
    p, perr = two_prod(xp, q, t_hi)
    num = ((hi - p) - perr) + lo
    if t_lo:
        num = num - q * t_lo
    rem = num / t_hi
    splittable = xp.abs(q) <= float(fi.max) / (2.0 * _split_factor(xp, dtype))
    return q, xp.where(splittable, rem, xp.zeros_like(rem))


def compensated_sum_pair(xp, v, extra: bool):
    """Sum over the last axis as ``hi + lo`` (axis kept), ``lo`` a correction.

    With ``extra`` the inputs carry spare precision and a plain (pairwise)
    sum suffices (``lo`` is None).  Otherwise a halving tree of TwoSums is
    summed exactly and its rounding errors are collected in ``lo``: ``hi + lo``
    is within about one rounding of the exact sum for any width, and
    ``hi + lo`` itself carries nearly twice the working precision.
    """
    if extra or v.shape[-1] <= 1:
        return xp.sum(v, axis=-1, keepdims=True), None
    hi = v
    err = xp.zeros_like(v[..., :1])
    while hi.shape[-1] > 1:
        n = hi.shape[-1]
        h = n // 2
        u, w = hi[..., :h], hi[..., h : 2 * h]
        t = u + w
        bb = t - u
        e = (u - (t - bb)) + (w - bb)
        # inf + x gives a NaN remainder; an infinite sum has nothing to add.
        e = xp.where(xp.isfinite(t), e, xp.zeros_like(e))
        err = err + xp.sum(e, axis=-1, keepdims=True)
        hi = t if n == 2 * h else xp.concat([t, hi[..., 2 * h :]], axis=-1)
    return hi, err


def compensated_sum(xp, v, extra: bool):
    """Sum over the last axis, keeping the axis (see ``compensated_sum_pair``)."""
    hi, lo = compensated_sum_pair(xp, v, extra)
    return hi if lo is None else hi + lo


# --- the shared row statistics ----------------------------------------------


@dataclass
class RowStats:
    """Everything the softmax family needs about each row (last axis).

    ``hi + lo`` is the shifted (and scaled) logit ``z``; ``e = exp(z)``;
    ``is_k`` marks the one argmax left out of ``s``; ``L = log1p(s)``.
    Row flags keep their axis (size 1).
    """

    hi: Any
    lo: Any
    e: Any
    is_k: Any
    s: Any
    L: Any
    a: Any
    masked_row: Any
    inf_row: Any
    extra: bool


def row_stats(xp, x, valid=None, temperature: float = 1.0, extra: bool = True) -> RowStats:
    """Shift, exponentiate and sum each row of ``x`` (working dtype).

    Entries where ``valid`` is False are treated as ``-inf``.  Rows that are
    fully masked (every entry ``-inf`` or invalid) and rows holding ``+inf``
    are replaced by stand-ins whose formulas give the limits: a row with
    ``+inf`` becomes 0 at the ``+inf`` entries and ``-inf`` elsewhere, so the
    mass is shared equally among them.  NaN propagates through the max.
    """
    # Allocations name the input's device: a GPU array must not meet a host one.
    device = array_api_compat.device(x)
    if valid is not None:
        x = xp.where(valid, x, xp.asarray(-_INF, dtype=x.dtype, device=device))
    a = xp.max(x, axis=-1, keepdims=True) if x.shape[-1] else xp.full(x.shape[:-1] + (1,), -_INF, dtype=x.dtype, device=device)
    masked_row = a == -_INF
    inf_row = a == _INF
    zero = xp.zeros_like(x)
    x = xp.where(inf_row, xp.where(x == _INF, zero, xp.full_like(x, -_INF)), x)
    x = xp.where(masked_row, zero, x)
    shift = xp.where(masked_row | inf_row, xp.zeros_like(a), a)
    if extra:
        hi = x - shift
        if temperature != 1.0:
            hi = hi / temperature
        lo = None
        e = xp.exp(hi)
    else:
        if temperature > 1.0:
            # x - a overflows for a row spanning more than the largest finite
            # number where (x - a) / T need not; the halves' difference
            # cannot, and halving both it and T leaves the quotient and its
            # remainder unchanged (up to subnormal bits far below the
            # results' ULPs).
            hi, lo = divide_pair(xp, *two_diff(xp, x * 0.5, shift * 0.5), temperature * 0.5)
        else:
            hi, lo = two_diff(xp, x, shift)
            if temperature != 1.0:
                hi, lo = divide_pair(xp, hi, lo, temperature)
        e = xp.exp(hi) * (1.0 + lo)
    n = x.shape[-1]
    if n:
        k = xp.argmax(x, axis=-1, keepdims=True)
        is_k = xp.arange(n, dtype=k.dtype, device=device) == k
    else:
        is_k = xp.zeros(x.shape, dtype=xp.bool, device=device)
    s = compensated_sum(xp, xp.where(is_k, zero, e), extra)
    # The argmax term is left out of s, so a row whose only entry is NaN
    # would have s = 0 and lose its NaN in the argmax forms; NaN stays in
    # its row.
    s = xp.where(xp.isnan(a), a, s)
    return RowStats(hi, lo, e, is_k, s, xp.log1p(s), a, masked_row, inf_row, extra)


# --- the softmax family -----------------------------------------------------


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
    # 10 float32 ULP of a result near 2e-10 (regression: x = [0, -21],
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


def softmax_vjp(xp, p, g, extra: bool):
    """``p * (g - <p, g>)``; entries with ``p = 0`` get 0 whatever ``g`` is."""
    zero = xp.zeros_like(p)
    dot = compensated_sum(xp, xp.where(p == 0, zero, p * g), extra)
    return xp.where(p == 0, zero, p * (g - dot))


def log_softmax_vjp(xp, p, live, g, extra: bool):
    """``g - p * sum(g)`` over the ``live`` entries (log-probability not ``-inf``).

    Masked entries get 0 and their cotangent is left out of the sum, so a
    fully masked row gives zeros, never NaN.
    """
    zero = xp.zeros_like(g)
    total = compensated_sum(xp, xp.where(live, g, zero), extra)
    return xp.where(live, g - p * total, zero)


def entropy(xp, st: RowStats):
    """``sum_j p_j * (-log p_j)``: non-negative terms, 0 where ``p_j = 0``."""
    p = softmax(xp, st)
    nlp = neg_log_softmax(xp, st)
    terms = xp.where(p == 0, xp.zeros_like(p), p * nlp)
    return compensated_sum(xp, terms, st.extra)[..., 0]


# --- cross-entropy ------------------------------------------------------------


def hot_row_weight(xp, hot, weight=None):
    """Row weight of one-hot class-index targets, axis kept: ``w_t`` (1
    without class weights), 0 on ignored rows (all-zero ``hot``)."""
    return xp.sum(hot if weight is None else hot * weight, axis=-1, keepdims=True)


def class_coefficients(xp, x, eps: float, weight=None, hot=None, probs=None):
    """Class coefficients ``c`` and row weights for :func:`cross_entropy_rows`.

    Give either ``hot`` (one-hot class-index targets in the working dtype,
    all zero on ignored rows) or ``probs`` (probability targets).  With
    class weights ``w`` and smoothing ``eps`` over the ``K`` classes whose
    logit ``x`` is not ``-inf`` (smoothing gives them no mass):

    * class indices: ``c = (1 - eps) w_t hot + eps w / K``, row weight ``w_t``
      (0 on ignored rows);
    * probabilities: ``c = w ((1 - eps) q + eps / K)``, row weight 1.

    Row weights keep their axis (size 1).
    """
    if hot is not None:
        row_w = hot_row_weight(xp, hot, weight)
        coef = (1.0 - eps) * row_w * hot
        keep = xp.sum(hot, axis=-1, keepdims=True)
    else:
        row_w = xp.ones_like(probs[..., :1])
        coef = (1.0 - eps) * (probs if weight is None else probs * weight)
        keep = row_w
    if eps:
        finite = xp.astype(x != -_INF, x.dtype)
        n_finite = xp.sum(finite, axis=-1, keepdims=True)
        smooth = finite / xp.where(n_finite == 0, xp.ones_like(n_finite), n_finite)
        if weight is not None:
            smooth = smooth * weight
        coef = coef + eps * keep * smooth
    return coef, row_w


def cross_entropy_rows(xp, st: RowStats, coef, z_loss: float, row_weight, want_grad: bool):
    """Per-row loss ``sum_j c_j (-log p_j) + z * w * lse**2`` and its gradient.

    ``coef`` (non-negative, working dtype, same shape as the logits) holds the
    class coefficients: a weighted one-hot target, a smoothed target, or
    weighted probabilities.  ``row_weight`` (axis kept) scales the z-loss.
    The gradient is ``(C + 2 z w lse) p - c`` with ``C = sum_j c_j``; at the
    argmax it is assembled from the other classes (see module docstring), so a
    confident row keeps its exact, non-zero target gradient.
    """
    zero = xp.zeros_like(coef)
    nlp = neg_log_softmax(xp, st)
    terms = xp.where(coef == 0, zero, coef * nlp)
    loss = compensated_sum(xp, terms, st.extra)
    lse = logsumexp(xp, st)
    if z_loss:
        zl = z_loss * row_weight * lse * lse
        loss = loss + xp.where(row_weight == 0, xp.zeros_like(zl), zl)
    loss = loss[..., 0]
    if not want_grad:
        return loss, None
    p = softmax(xp, st)
    c_sum = compensated_sum(xp, coef, st.extra)
    c_rest = compensated_sum(xp, xp.where(st.is_k, zero, coef), st.extra)
    grad = c_sum * p - coef
    at_k = c_rest - c_sum * (st.s / (1.0 + st.s))
    if z_loss:
        zg = 2.0 * z_loss * row_weight * xp.where(st.masked_row | st.inf_row, xp.zeros_like(lse), lse)
        grad = grad + zg * p
        at_k = at_k + zg * p
    # The argmax form only helps where p_k > 1/2 and the class has a
    # coefficient (of either sign: class weights may be negative); elsewhere
    # C p_k - c_k has nothing to cancel.
    grad = xp.where(st.is_k & (st.s < 1.0) & (coef != 0), at_k, grad)
    # A fully masked row is constant in its logits: zero gradient.
    grad = xp.where(st.masked_row, zero, grad)
    return loss, grad


def kl_rows(xp, pw, qw, log_probs: bool, extra: bool):
    """``KL(P || Q) = sum_j P_j (log P_j - log Q_j)`` per row, keepdims.

    ``pw`` and ``qw`` are rows of logits (or of log-probabilities with
    ``log_probs``) in the working dtype.
    """
    neg_inf = -float("inf")
    if log_probs:
        log_p, log_q = pw, qw
        prob = xp.exp(log_p)
    else:
        sp = row_stats(xp, pw, None, 1.0, extra)
        log_p, prob = log_softmax(xp, sp), softmax(xp, sp)
        log_q = log_softmax(xp, row_stats(xp, qw, None, 1.0, extra))
    # Support is decided on the log scale: a class whose P_j underflows to 0
    # still has P_j > 0, and Q_j = 0 there makes the divergence infinite.
    terms = xp.where(log_q == neg_inf, xp.full_like(prob, float("inf")), prob * (log_p - log_q))
    terms = xp.where(log_p == neg_inf, xp.zeros_like(prob), terms)
    return compensated_sum(xp, terms, extra)


# --- elementwise: sigmoid, softplus, binary cross-entropy ---------------------


def _neg_abs(xp, x):
    """``-|x|`` as a selection between ``-x`` (``x >= 0``) and ``x``.

    Automatic differentiation then takes the slope of the ``x >= 0`` side at
    0 (-1).  ``abs`` and ``maximum`` have kinks at 0 whose conventional
    derivatives (JAX: 1 and 1/2; PyTorch: 0 and 1/2) do not add up to the
    slope of the smooth function built from them: ``softplus'(0)`` came out
    as 0 under ``jax.grad`` and ``sigmoid'(0)`` as 0 under PyTorch autograd.
    """
    return xp.where(x >= 0, -x, x)


def softplus(xp, x):
    """``log(1 + e^x) = max(x, 0) + log1p(e^{-|x|})``: two non-negative terms.

    Written with selections on ``x >= 0`` so that its derivative under
    automatic differentiation is ``sigmoid(x)`` everywhere, 1/2 at 0.
    """
    return xp.where(x >= 0, x, xp.zeros_like(x)) + xp.log1p(xp.exp(_neg_abs(xp, x)))


def log_sigmoid(xp, x):
    """``log(sigmoid(x)) = -softplus(-x)``, exact where the log would underflow."""
    return -softplus(xp, -x)


def sigmoid(xp, x):
    """``1 / (1 + e^{-x})``, written with ``e^{-|x|}`` so nothing overflows.

    The derivative under automatic differentiation is ``s (1 - s)``
    everywhere, 1/4 at 0 (see ``_neg_abs``).
    """
    e = xp.exp(_neg_abs(xp, x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def binary_cross_entropy(xp, x, y, beta, want_grad: bool):
    """``beta y softplus(-x) + (1 - y) softplus(x)`` and its gradient.

    Each term is skipped where its target factor is 0, so an infinite logit
    on the side the target agrees with gives 0, not ``0 * inf``.
    """
    zero = xp.zeros_like(x)
    pos = y if beta is None else beta * y
    neg = 1.0 - y
    loss = xp.where(pos == 0, zero, pos * softplus(xp, -x)) + xp.where(neg == 0, zero, neg * softplus(xp, x))
    if not want_grad:
        return loss, None
    grad = xp.where(neg == 0, zero, neg * sigmoid(xp, x)) - xp.where(pos == 0, zero, pos * sigmoid(xp, -x))
    return loss, grad
