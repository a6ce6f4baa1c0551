"""Cross-entropy and KL rows: class coefficients, the loss and its gradient."""

from __future__ import annotations

from softmaxkit.numerics.precision import _INF, compensated_sum
from softmaxkit.numerics.rows import RowStats, row_stats
from softmaxkit.numerics.softmax import log_softmax, logsumexp, neg_log_softmax, softmax


def hot_row_weight(xp, hot, weight=None):
    """Row weight of one-hot class-index targets, axis kept: ``w_t`` (1
    without class weights), 0 on ignored rows (all-zero ``hot``)."""
    return xp.sum(hot if weight is None else hot * weight, axis=-1, keepdims=True)


def class_coefficients(xp, x, eps: float, weight=None, hot=None, probs=None, *, row_weight=None, keep=None, n_finite=None):
    """Class coefficients ``c`` and row weights for :func:`cross_entropy_rows`.

    Give either ``hot`` (one-hot class-index targets in the working dtype,
    all zero on ignored rows) or ``probs`` (probability targets).  With
    class weights ``w`` and smoothing ``eps`` over the ``K`` classes whose
    logit ``x`` is not ``-inf`` (smoothing gives them no mass):

    * class indices: ``c = (1 - eps) w_t hot + eps w / K``, row weight ``w_t``
      (0 on ignored rows);
    * probabilities: ``c = w ((1 - eps) q + eps / K)``, row weight 1.

    Row weights keep their axis (size 1).  Where ``x`` is a slice of the
    classes (:mod:`numerics.vocab_parallel`), the whole row's ``row_weight``
    ``w_t``, ``keep`` (1 where the target is not ignored) and ``K`` are given
    (axis kept); by default they come from ``hot`` and ``x``.
    """
    if hot is not None:
        row_w = hot_row_weight(xp, hot, weight) if row_weight is None else row_weight
        coef = (1.0 - eps) * row_w * hot
        keep = xp.sum(hot, axis=-1, keepdims=True) if keep is None else keep
    else:
        row_w = xp.ones_like(probs[..., :1])
        coef = (1.0 - eps) * (probs if weight is None else probs * weight)
        keep = row_w
    if eps:
        finite = xp.astype(x != -_INF, x.dtype)
        if n_finite is None:
            n_finite = xp.sum(finite, axis=-1, keepdims=True)
        smooth = finite / xp.where(n_finite == 0, xp.ones_like(n_finite), n_finite)
        if weight is not None:
            smooth = smooth * weight
        coef = coef + eps * keep * smooth
    return coef, row_w


def loss_terms(xp, st: RowStats, coef):
    """``sum_j c_j (-log p_j)`` over the row's classes (axis kept): non-negative
    terms with non-negative coefficients, 0 where ``c_j = 0``."""
    terms = xp.where(coef == 0, xp.zeros_like(coef), coef * neg_log_softmax(xp, st))
    return compensated_sum(xp, terms, st.widened)


def z_loss_term(xp, st: RowStats, z_loss: float, row_weight):
    """PaLM's auxiliary loss ``z w lse^2`` (axis kept), 0 on rows of weight 0."""
    lse = logsumexp(xp, st)
    zl = z_loss * row_weight * lse * lse
    return xp.where(row_weight == 0, xp.zeros_like(zl), zl)


def z_loss_slope(xp, st: RowStats, z_loss: float, row_weight):
    """``zg = 2 z w lse`` (axis kept), the z-loss's gradient per unit of ``p``; 0 on masked and ``+inf`` rows."""
    lse = logsumexp(xp, st)
    return 2.0 * z_loss * row_weight * xp.where(st.masked_row | st.inf_row, xp.zeros_like(lse), lse)


def cross_entropy_grad(xp, st: RowStats, coef, c_sum, c_rest, zg=None):
    """The gradient ``(C + zg) p - c`` of a row's loss, at the argmax from the other classes.

    ``c_sum`` is ``C = sum_j c_j`` and ``c_rest`` ``C - c_k`` (the other
    coefficients' sum, used on the entry marked ``is_k``), axis kept;
    ``zg`` is :func:`z_loss_slope` or None.
    """
    zero = xp.zeros_like(coef)
    p = softmax(xp, st)
    grad = c_sum * p - coef
    at_k = c_rest - c_sum * (st.s / (1.0 + st.s))
    if zg is not None:
        grad = grad + zg * p
        at_k = at_k + zg * p
    # The argmax form only helps where p_k > 1/2 and the class has a
    # coefficient (of either sign: class weights may be negative); elsewhere
    # C p_k - c_k has nothing to cancel.
    grad = xp.where(st.is_k & (st.s < 1.0) & (coef != 0), at_k, grad)
    # A fully masked row is constant in its logits: zero gradient.
    return xp.where(st.masked_row, zero, grad)


def cross_entropy_rows(xp, st: RowStats, coef, z_loss: float, row_weight, want_grad: bool):
    """Per-row loss ``sum_j c_j (-log p_j) + z * w * lse**2`` and its gradient.

    ``coef`` (non-negative, working dtype, same shape as the logits) holds the
    class coefficients: a weighted one-hot target, a smoothed target, or
    weighted probabilities.  ``row_weight`` (axis kept) scales the z-loss.
    The gradient is ``(C + 2 z w lse) p - c`` with ``C = sum_j c_j``; at the
    argmax it is assembled from the other classes (see module docstring), so a
    confident row keeps its exact, non-zero target gradient.
    """
    loss = loss_terms(xp, st, coef)
    if z_loss:
        loss = loss + z_loss_term(xp, st, z_loss, row_weight)
    loss = loss[..., 0]
    if not want_grad:
        return loss, None
    c_sum = compensated_sum(xp, coef, st.widened)
    c_rest = compensated_sum(xp, xp.where(st.is_k, xp.zeros_like(coef), coef), st.widened)
    zg = z_loss_slope(xp, st, z_loss, row_weight) if z_loss else None
    return loss, cross_entropy_grad(xp, st, coef, c_sum, c_rest, zg)


def probability_target_grad(xp, st: RowStats, eps: float, weight=None):
    """Gradient of the cross-entropy rows with respect to probability targets: ``(1 - eps) w_j (-log p_j)``."""
    dq = (1.0 - eps) * neg_log_softmax(xp, st)
    return dq if weight is None else dq * weight


def kl_rows(xp, pw, qw, log_probs: bool, widened: bool):
    """``KL(P || Q) = sum_j P_j (log P_j - log Q_j)`` per row, keepdims.

    ``pw`` and ``qw`` are rows of logits (or of log-probabilities with
    ``log_probs``) in the working dtype.
    """
    neg_inf = -float("inf")
    if log_probs:
        log_p, log_q = pw, qw
        prob = xp.exp(log_p)
    else:
        sp = row_stats(xp, pw, None, 1.0, widened)
        log_p, prob = log_softmax(xp, sp), softmax(xp, sp)
        log_q = log_softmax(xp, row_stats(xp, qw, None, 1.0, widened))
    # Support is decided on the log scale: a class whose P_j underflows to 0
    # still has P_j > 0, and Q_j = 0 there makes the divergence infinite.
    terms = xp.where(log_q == neg_inf, xp.full_like(prob, float("inf")), prob * (log_p - log_q))
    terms = xp.where(log_p == neg_inf, xp.zeros_like(prob), terms)
    return compensated_sum(xp, terms, widened)


