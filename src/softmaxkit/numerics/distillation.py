"""Knowledge-distillation rows: a divergence between the student's and the
teacher's tempered softmax, plus a hard-label cross-entropy, and their gradients.

With ``p = softmax(student / T)`` and ``q = softmax(teacher / T)`` along the
last axis (working dtype, compensated where the working dtype is not wider):

* ``"forward_kl"``: ``KL(q || p) = sum_j q_j (log q_j - log p_j)``;
* ``"reverse_kl"``: ``KL(p || q)``;
* ``"jsd"``: ``beta KL(q || m) + (1 - beta) KL(p || m)`` with
  ``m = beta q + (1 - beta) p`` (the generalised Jensen-Shannon divergence of
  TRL's GKD trainer).

Log-probabilities come from the exact log-softmax (``row_stats``), so
confident rows keep their accuracy; ``log m - log p`` and ``log m - log q``
are formed as ``logaddexp(log(1 - beta), log beta + (log q - log p))`` (and
its mirror), which never forms ``m`` itself and stays accurate for ``beta``
near 0 and 1.  Support is decided on the log scale: a class whose
probability underflows still has mass.

Gradients, in the raw logits (the chain rule's ``1/T`` included), with
``l = log q - log p``:

* forward KL: student ``(p - q)/T`` (the cross-entropy gradient assembly with
  probability targets, so the argmax entry never cancels), teacher
  ``q (l - KL)/T``;
* reverse KL: student ``p (-l - KL)/T``, teacher ``(q - p)/T`` (same assembly);
* JSD: student ``(1 - beta) p (r - R)/T`` with ``r = log p - log m`` and
  ``R = sum_j p_j r_j``, teacher ``beta q (d - D)/T`` with ``d = log q - log m``
  and ``D = sum_j q_j d_j``.

Edges: a class where the weighting distribution has no mass contributes 0
(``0 log 0 = 0``, also where the other has none); a class with mass in the
weighting distribution and none in the other makes a KL ``+inf``, and such a
row has zero divergence gradients (it is ``+inf`` under every finite change
of the finite logits); JSD is always finite.  A row whose logits are all
``-inf`` has all-zero probabilities: both sides fully masked give 0 with
zero gradients.  NaN stays in its row.
"""

from __future__ import annotations

import math

from softmaxkit.numerics.cross_entropy import class_coefficients, cross_entropy_rows
from softmaxkit.numerics.precision import _INF, compensated_sum
from softmaxkit.numerics.rows import row_stats
from softmaxkit.numerics.softmax import log_softmax, softmax

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


def _kl(xp, lw, w, lo, widened):
    """``KL(W || O)`` per row (axis kept) and ``lw - lo``; ``W`` weights the terms."""
    ell = lw - lo
    terms = xp.where(lo == -_INF, xp.full_like(w, _INF), w * ell)
    terms = xp.where(lw == -_INF, xp.zeros_like(w), terms)
    return compensated_sum(xp, terms, widened), ell


def _centred(xp, weight, ell, total):
    """``weight * (ell - total)``, 0 where ``weight`` is 0 (``ell`` may be infinite there)."""
    return xp.where(weight == 0, xp.zeros_like(weight), weight * (ell - total))


def _logaddexp(xp, a, b):
    """``log(e^a + e^b)`` for a finite scalar ``a`` and an array ``b`` (``-inf`` and ``+inf`` allowed)."""
    hi = xp.maximum(b, xp.full_like(b, a))
    lo = xp.minimum(b, xp.full_like(b, a))
    return hi + xp.log1p(xp.exp(lo - hi))


def _jsd(xp, lp, p, lq, q, beta, widened):
    """``(JSD, grad in u, grad in v)`` per row for the scaled logits ``u``, ``v`` (loss axis kept)."""
    zero = xp.zeros_like(p)
    log_b, log_1mb = math.log(beta), math.log1p(-beta)
    p_on, q_on = lp != -_INF, lq != -_INF
    # delta = log q - log p where both have mass (0 elsewhere, never inf - inf);
    # NaN passes through and stays in its row.
    delta = xp.where(p_on & q_on, lq - lp, zero)
    # r = log p - log m = -logaddexp(log(1 - b), log b + delta), d its mirror;
    # a class missing from one side has the limit -log(1 - b) or -log b.
    r = xp.where(q_on, -_logaddexp(xp, log_1mb, log_b + delta), xp.full_like(p, -log_1mb))
    d = xp.where(p_on, -_logaddexp(xp, log_b, log_1mb - delta), xp.full_like(q, -log_b))
    pr = xp.where(p_on, p * r, zero)
    qd = xp.where(q_on, q * d, zero)
    R = compensated_sum(xp, pr, widened)
    D = compensated_sum(xp, qd, widened)
    loss = beta * D + (1.0 - beta) * R
    gu = (1.0 - beta) * _centred(xp, xp.where(p_on, p, zero), r, R)
    gv = beta * _centred(xp, xp.where(q_on, q, zero), d, D)
    return loss, gu, gv


def distillation_rows(xp, student, teacher, hot, *, divergence, beta, temperature, scale_t2, hard_label_weight, widened, want_grad):
    r"""Per-row distillation loss and its gradients in the raw logits.

    .. math:: \ell = f \cdot \mathrm{Div}\big(\mathrm{softmax}(x_s/T),
              \mathrm{softmax}(x_t/T)\big) + w_h\, \mathrm{CE}(x_s, y)

    with ``f = T**2`` when ``scale_t2`` else 1 and the divergence of the
    module docstring.

    ``student`` and ``teacher`` are rows of raw logits (working dtype, shape
    ``(n, K)``), not yet divided by ``temperature``.  ``hot`` holds one-hot
    hard targets (working dtype, all zero on ignored rows), or None; rows
    whose ``hot`` row is all zero contribute nothing at all (loss 0, zero
    gradients).  ``hard_label_weight`` (``w_h``) adds ``w_h`` times the
    cross-entropy of the student's raw logits at temperature 1 and needs
    ``hot``.  ``beta`` is read by ``"jsd"`` only and must lie in (0, 1).

    Returns ``(loss, grad_student, grad_teacher)``: ``loss`` of shape
    ``(n,)``; the gradients of each row's loss in the raw logits, shape
    ``(n, K)``, or None without ``want_grad``.  Every temperature factor is
    applied here: ``1/T`` from the chain rule, times ``T**2`` with
    ``scale_t2`` (so the gradients carry ``T``).

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit.numerics.distillation import distillation_rows
    >>> s, t = np.array([[0.0, 0.0]]), np.array([[0.0, -np.inf]])
    >>> loss, gs, gt = distillation_rows(
    ...     np, s, t, None, divergence="forward_kl", beta=0.5, temperature=1.0, scale_t2=False,
    ...     hard_label_weight=0.0, widened=False, want_grad=True)
    >>> loss, gs  # KL = log 2; the student's gradient p - q
    (array([0.69314718]), array([[-0.5,  0.5]]))
    """
    st_s = row_stats(xp, student, None, temperature, widened)
    st_t = row_stats(xp, teacher, None, temperature, widened)
    lp, p = log_softmax(xp, st_s), softmax(xp, st_s)
    lq, q = log_softmax(xp, st_t), softmax(xp, st_t)
    zero = xp.zeros_like(p)
    gs = gt = None
    if divergence == "jsd":
        loss, gs, gt = _jsd(xp, lp, p, lq, q, beta, widened)
    elif divergence == "forward_kl":
        loss, ell = _kl(xp, lq, q, lp, widened)
        if want_grad:
            _, gs = cross_entropy_rows(xp, st_s, q, 0.0, None, True)
            gt = _centred(xp, xp.where(lq == -_INF, zero, q), ell, loss)
    else:
        loss, ell = _kl(xp, lp, p, lq, widened)
        if want_grad:
            gs = _centred(xp, xp.where(lp == -_INF, zero, p), ell, loss)
            _, gt = cross_entropy_rows(xp, st_t, p, 0.0, None, True)
    if want_grad:
        infinite = loss == _INF
        factor = temperature if scale_t2 else 1.0 / temperature
        gs = xp.where(infinite, zero, gs * factor)
        gt = xp.where(infinite, zero, gt * factor)
    if scale_t2:
        loss = loss * (temperature * temperature)
    loss = loss[..., 0]
    if hard_label_weight:
        st_1 = st_s if temperature == 1.0 else row_stats(xp, student, None, 1.0, widened)
        coef, row_w = class_coefficients(xp, student, 0.0, hot=hot)
        ce, g_ce = cross_entropy_rows(xp, st_1, coef, 0.0, row_w, want_grad)
        loss = loss + hard_label_weight * ce
        if want_grad:
            gs = gs + hard_label_weight * g_ce
    if hot is not None:
        # Selected, not multiplied: an ignored row's NaN or inf must not leak.
        keep = xp.sum(hot, axis=-1, keepdims=True) != 0
        loss = xp.where(keep[..., 0], loss, xp.zeros_like(loss))
        if want_grad:
            gs = xp.where(keep, gs, zero)
            gt = xp.where(keep, gt, zero)
    return loss, gs, gt
