"""The cross-entropy row program in Triton: per-row losses and the gradient, in one kernel.

One program per row restates ``numerics.cross_entropy`` (the structure of
the native kernel ``kernels/csrc/ce.c``) in float32 working precision with
compensation.  For a row of logits ``x`` with maximum ``a`` at its first
index ``k``, class coefficients ``c`` (``numerics.class_coefficients``:
a weighted one-hot target, smoothing over the classes whose logit is not
``-inf``, or weighted probabilities), ``C = sum_j c_j`` and
``s = sum_{j != k} exp(x_j - a)``:

* ``loss = sum_j c_j ((log1p(s) - hi_j) - lo_j) + z w lse^2`` with the exact
  shift ``x_j - a = hi_j + lo_j``, ``lse = a + log1p(s)``;
* ``grad_j = ((C p_j - c_j) + zg p_j) / divisor * scale``, ``p_j = exp(hi_j +
  lo_j) / (1 + s)``, ``zg = 2 z w lse``; at the argmax, where ``s < 1`` and
  ``c_k != 0``, ``C p_k - c_k`` is ``(C - c_k) - C s / (1 + s)``: the target
  gradient of a confident row is ``-s / (1 + s)``, never ``p_t - 1``;
* with a soft cap (the fused linear loss's ``softcap``), the same on the
  capped logits ``cap(x) = softcap tanh(x / softcap)``, computed in float64 with a
  float64 exp written here: the shift ``cap(x_j) - cap(a)`` is formed in
  float64 and carried as a float32 pair ``hi + lo``, so that the cap adds a
  float64 rounding, not a float32 one, to each shift; the gradient in ``x``
  is ``grad_j sech^2(x_j / softcap)``, the product taken in float64.

Pass 1 reads the row once for its statistics with the softmax kernels'
online step (:func:`.softmax._absorb`: a running maximum kept out of a
compensated sum that is rescaled rarely), plus the first argmax ``k``, the
number of classes that are not ``-inf`` and their weights (for smoothing),
and the probability targets' weighted mass.  Pass 2 reads the row again
for the loss terms (where the coefficients are not a single class's) and
writes the gradients.  A row of one block is loaded once.  A one-hot target
without smoothing needs no second pass for its loss: its logit is read
alone.  With a soft cap, one more pass between them sums the capped row
(its maximum and argmax are those of the row: the cap is increasing).  The
float32 arithmetic (exact shift, exp, log1p, compensated block sums) is
:mod:`._math`'s.

Edge rows follow the README's table: a fully masked row has loss ``+inf``
where a coefficient is not 0 (0 otherwise) and zero gradient; a row with
``+inf`` shares the mass among its ``+inf`` entries; NaN stays in its row
(loss NaN unless every coefficient is 0); an ignored row has loss 0 and
zero gradient.  The reduction, its denominator and the all-ignored rule stay
in ``numerics.reduction``: the caller reduces the per-row losses and passes
the divisor.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import triton
import triton.language as tl

from softmaxkit.kernels.triton import _math as m
from softmaxkit.kernels.triton import launch
from softmaxkit.kernels.triton.launch import helper
from softmaxkit.kernels.triton.softmax import (
    _RESCALE_AT,
    _absorb,
    _empty_row,
    _finish,
    _finite_part,
)


@helper
def _load(ptr, base, idx, n, inner, other):
    return m.load(ptr + base, idx.to(tl.int64) * inner, idx < n, other)


@helper
def _block(X, T, W, base, idx, n, inner, PROBS: tl.constexpr, HAS_W: tl.constexpr):
    """A block of the row: ``(x, live, w, q)``, its logits (``-inf`` past the
    row), which lanes hold classes, the class weights (0 past the row) and
    the probability targets (0 past the row, or without them)."""
    live = idx < n
    x = _load(X, base, idx, n, inner, float("-inf"))
    if HAS_W:
        w = tl.load(W + idx, mask=live, other=0.0)
    else:
        w = tl.where(live, 1.0, 0.0)
    q = tl.zeros_like(x)
    if PROBS:
        q = _load(T, base, idx, n, inner, 0.0)
    return x, live, w, q


@helper
def _stats(xr, lanes, start, mx, ref, s_hi, s_lo, n_inf, n_nan, k_fin, k_inf, rescale_at, B_LOG2: tl.constexpr):
    """The softmax kernels' online step (``softmax._absorb``) and the row's
    first argmax: of the finite entries, and of the ``+inf`` ones apart."""
    xf, _, is_inf = _finite_part(xr)
    mb = tl.max(xf, 0)
    k_fin = tl.where(mb > mx, start + tl.argmax(xf, 0), k_fin)
    k_inf = tl.minimum(k_inf, tl.min(tl.where(is_inf, start + lanes, 2147483647), 0))
    mx, ref, s_hi, s_lo, n_inf, n_nan = _absorb(xr, lanes, mx, ref, s_hi, s_lo, n_inf, n_nan, 1.0, 0.0, rescale_at,
                                                B_LOG2, False, False)
    return mx, ref, s_hi, s_lo, n_inf, n_nan, k_fin, k_inf


@helper
def _side_sums(xr, live, w, q, n_fin, wf_hi, wf_lo, q_hi, q_lo,
               PROBS: tl.constexpr, SMOOTH: tl.constexpr, B_LOG2: tl.constexpr):
    """What the coefficients' sum needs: the number of classes not ``-inf``
    and their weights (smoothing), ``sum_j q_j w_j`` (probability targets)."""
    if SMOOTH:
        fin = live & (xr != float("-inf"))
        n_fin += tl.sum(fin.to(tl.float32), 0)
        b_hi, b_lo = m.block_sum(tl.where(fin, w, 0.0), B_LOG2)
        wf_hi, wf_lo = m.add_pair(wf_hi, wf_lo, b_hi, b_lo)
    if PROBS:
        b_hi, b_lo = m.block_sum(q * w, B_LOG2)
        q_hi, q_lo = m.add_pair(q_hi, q_lo, b_hi, b_lo)
    return n_fin, wf_hi, wf_lo, q_hi, q_lo


@helper
def _coefficients(idx, live, x, w, q, t, target_coef, smooth_unit, PROBS: tl.constexpr, SMOOTH: tl.constexpr):
    """The class coefficients of a block (``numerics.class_coefficients``)."""
    if PROBS:
        c = q * w * target_coef
    else:
        c = tl.where(idx == t, target_coef, 0.0)
    if SMOOTH:
        c += tl.where(live & (x != float("-inf")), smooth_unit * w, 0.0)
    return tl.where(live, c, 0.0)


@helper
def _shifted(x, mx, n_inf):
    """``x - a`` as an exact pair with the stand-ins of ``numerics.rows._stand_ins``:
    in a row holding ``+inf`` its ``+inf`` entries are 0 and the rest ``-inf``."""
    has_inf = n_inf > 0
    shift = tl.where(has_inf | (mx == float("-inf")), 0.0, mx)
    x = tl.where(has_inf, tl.where(x == float("inf"), 0.0, float("-inf")), x)
    return m.shift(x, shift, 1.0, 0.0, False, False)


# exp in float64 for the soft cap: ln 2 in two parts (fdlibm's), the head of
# 32 significant bits, so that k * _LN2_HI64 is exact for every k used here.
_LOG2E64 = tl.constexpr(1.4426950408889634)
_LN2_HI64 = tl.constexpr(6.93147180369123816490e-01)
_LN2_LO64 = tl.constexpr(1.90821492927058770002e-10)


@helper
def _exp_neg64(t):
    """``exp(t)`` for float64 ``t <= 0`` within a few float64 roundings (0 below -708).

    ``t = k ln 2 + r`` with ``|r| <= ln 2 / 2`` (the head's product exact),
    a degree-13 Taylor polynomial (truncation below ``2**-58``), and ``2**k``
    from the bits.
    """
    tc = tl.maximum(t, -708.0)
    kf = tl.floor(tc * _LOG2E64 + 0.5)
    r = (tc - kf * _LN2_HI64) - kf * _LN2_LO64
    p = r * (1.0 / 6227020800.0) + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    y = 1.0 + (r + (r * r) * p)
    scale = ((kf.to(tl.int64) + 1023) << 52).to(tl.float64, bitcast=True)
    return tl.where(t < -708.0, 0.0, y * scale)


@helper
def _cap64(x, c):
    """``(c tanh(x / c), sech(x / c)^2)`` in float64 for float32 ``x`` and float64 ``c``
    (``numerics.linear.softcap``): ``tanh|y| = (1 - e) / (1 + e)`` and
    ``sech^2 y = 4 e / (1 + e)^2`` with ``e = exp(-2|y|)``, each within a
    few float64 roundings of ``c`` and of 1.  Infinite ``x`` keeps its value
    with slope 0, NaN stays NaN."""
    x64 = x.to(tl.float64)
    y = x64 / c
    finite = tl.abs(y) < float("inf")
    ay = tl.where(finite, tl.abs(y), 0.0)
    e = _exp_neg64(-2.0 * ay)
    t = (1.0 - e) / (1.0 + e)
    capped = tl.where(finite, c * tl.where(y < 0.0, -t, t), x64)
    slope = tl.where(finite, (4.0 * e) / ((1.0 + e) * (1.0 + e)), 0.0)
    return capped, slope


@helper
def _capped_pair(x, a, c):
    """``cap(x) - cap(a)`` as a float32 pair ``(hi, lo)``: the float64 difference and its rounding."""
    z, _ = _cap64(x, c)
    za, _ = _cap64(a, c)
    d = z - za
    hi = d.to(tl.float32)
    return hi, tl.where(tl.abs(hi) < float("inf"), (d - hi.to(tl.float64)).to(tl.float32), 0.0)


@helper
def _capped_shift(x, mx, n_inf, c):
    """:func:`_shifted` for the capped logits: ``cap(x) - cap(a)`` as a pair, with the same
    stand-ins (the cap is increasing: ``cap(a)`` is the capped row's maximum)."""
    has_inf = n_inf > 0
    hi, lo = _capped_pair(x, tl.where(has_inf | (mx == float("-inf")), 0.0, mx), c)
    hi = tl.where(has_inf, tl.where(x == float("inf"), 0.0, float("-inf")), hi)
    return hi, tl.where(has_inf, 0.0, lo)


@helper
def _capped_sum(xr, idx, mx, k, c, B_LOG2: tl.constexpr):
    """A block's share of the capped row's ``s = sum_{j != k} exp(cap(x_j) - cap(a))`` as a pair."""
    xf, _, _ = _finite_part(xr)
    hi, lo = _capped_pair(xf, tl.where(mx == float("-inf"), 0.0, mx), c)
    terms = tl.where((xf == float("-inf")) | (idx == k), 0.0, m.exp(hi, lo))
    return m.block_sum(terms, B_LOG2)


@helper
def _neg_log_p(x, mx, n_inf, masked, big_l, cap, SOFTCAP: tl.constexpr):
    """``(-log p_j, hi_j, lo_j)``: ``log1p(s) - (hi_j + lo_j)`` with the exact shift
    ``x_j - a = hi_j + lo_j`` (of the capped logits with ``SOFTCAP``); ``+inf`` on a
    fully masked row."""
    if SOFTCAP:
        hi, lo = _capped_shift(x, mx, n_inf, cap)
    else:
        hi, lo = _shifted(x, mx, n_inf)
    return tl.where(masked, float("inf"), (big_l - hi) - lo), hi, lo


@helper
def _class_terms(x, live, idx, w, q, t, mx, n_inf, masked, nan_row, big_l, d_hi, d_lo, s, k, target_coef,
                 smooth_unit, coef_sum, coef_rest, zg, divisor, row_scale, eps, cap,
                 PROBS: tl.constexpr, SMOOTH: tl.constexpr, SOFTCAP: tl.constexpr):
    """Pass 2 over one block: ``(c_j (-log p_j), grad_j, target grad_j)``;
    with ``SOFTCAP`` of the capped logits, the gradient in the logits before the cap."""
    c = _coefficients(idx, live, x, w, q, t, target_coef, smooth_unit, PROBS, SMOOTH)
    nlp, hi, lo = _neg_log_p(x, mx, n_inf, masked, big_l, cap, SOFTCAP)
    terms = tl.where(c == 0.0, 0.0, c * nlp)
    p = tl.math.div_rn(m.exp(hi, lo), d_hi)
    p = p - p * tl.math.div_rn(d_lo, d_hi)
    g = (coef_sum * p - c) + zg * p
    # the argmax form where p_k > 1/2 and the class has a coefficient: never C p_k - c_k
    at_k = (coef_rest - coef_sum * tl.math.div_rn(s, d_hi)) + zg * p
    g = tl.where(tl.where(s < 1.0, (idx == k) & (c != 0.0), False), at_k, g)
    g = tl.where(masked, 0.0, tl.math.div_rn(g, divisor) * row_scale)
    if SOFTCAP:
        _, slope = _cap64(x, cap)
        g = (g.to(tl.float64) * slope).to(tl.float32)
    dq = tl.math.div_rn((1.0 - eps) * nlp * w, divisor) * row_scale
    return terms, tl.where(nan_row, float("nan"), g), tl.where(nan_row, float("nan"), dq)


@triton.jit
def _ce_kernel(
    X, T, W, LOSS, G, DQ, SCALE, DIV,
    ignore_index, eps, z, cap_hi, cap_lo, rescale_at, n, inner,
    PROBS: tl.constexpr, HAS_W: tl.constexpr, SMOOTH: tl.constexpr, HAS_Z: tl.constexpr,
    GRAD: tl.constexpr, GRAD_T: tl.constexpr, HAS_SCALE: tl.constexpr, SOFTCAP: tl.constexpr,
    BLOCK: tl.constexpr, ONE_PASS: tl.constexpr, B_LOG2: tl.constexpr,
):
    r = tl.program_id(0).to(tl.int64)
    base = (r // inner) * n * inner + r % inner
    lanes = tl.arange(0, BLOCK)

    # the row's target: its class (-1 where ignored, or for probabilities) and weight
    if PROBS:
        t = -1
        keep = 1.0
        row_w = 1.0
    else:
        t_raw = tl.load(T + r)
        kept = t_raw != ignore_index
        t = tl.where(kept, t_raw, -1).to(tl.int32)
        keep = tl.where(kept, 1.0, 0.0)
        if HAS_W:
            row_w = tl.where(kept, tl.load(W + tl.where(kept, t_raw, 0)), 0.0)
        else:
            row_w = keep

    # pass 1: the statistics
    mx, ref, s_hi, s_lo, n_inf, n_nan = _empty_row()
    k_fin = 0
    k_inf = 2147483647
    n_fin = 0.0
    wf_hi = 0.0
    wf_lo = 0.0
    q_hi = 0.0
    q_lo = 0.0
    if ONE_PASS:
        x0, live0, w0, q0 = _block(X, T, W, base, lanes, n, inner, PROBS, HAS_W)
        mx, ref, s_hi, s_lo, n_inf, n_nan, k_fin, k_inf = _stats(x0, lanes, 0, mx, ref, s_hi, s_lo, n_inf, n_nan,
                                                                 k_fin, k_inf, rescale_at, B_LOG2)
        n_fin, wf_hi, wf_lo, q_hi, q_lo = _side_sums(x0, live0, w0, q0, n_fin, wf_hi, wf_lo, q_hi, q_lo,
                                                     PROBS, SMOOTH, B_LOG2)
    else:
        for start in range(0, n, BLOCK):
            xb, live, wb, qb = _block(X, T, W, base, start + lanes, n, inner, PROBS, HAS_W)
            mx, ref, s_hi, s_lo, n_inf, n_nan, k_fin, k_inf = _stats(xb, lanes, start, mx, ref, s_hi, s_lo, n_inf,
                                                                     n_nan, k_fin, k_inf, rescale_at, B_LOG2)
            n_fin, wf_hi, wf_lo, q_hi, q_lo = _side_sums(xb, live, wb, qb, n_fin, wf_hi, wf_lo, q_hi, q_lo,
                                                         PROBS, SMOOTH, B_LOG2)
    cap = 0.0
    if SOFTCAP:
        # The capped row has the same maximum and argmax (the cap is
        # increasing); its sum is read again, relative to cap(a), without
        # rescaling (every term is at most 1).
        cap = tl.cast(cap_hi, tl.float64) + tl.cast(cap_lo, tl.float64)
        s_hi = 0.0
        s_lo = 0.0
        if ONE_PASS:
            s_hi, s_lo = _capped_sum(x0, lanes, mx, k_fin, cap, B_LOG2)
        else:
            for start in range(0, n, BLOCK):
                xb = _load(X, base, start + lanes, n, inner, float("-inf"))
                b_hi, b_lo = _capped_sum(xb, start + lanes, mx, k_fin, cap, B_LOG2)
                s_hi, s_lo = m.add_pair(s_hi, s_lo, b_hi, b_lo)
        ref = mx
    s_hi, s_lo, big_l = _finish(mx, ref, s_hi, s_lo, n_inf, 1.0, 0.0, False, False)
    nan_row = n_nan > 0
    masked = (mx == float("-inf")) & (n_inf == 0)
    special = masked | (n_inf > 0)
    k = tl.where(n_inf > 0, k_inf, k_fin)
    s = tl.where(nan_row, float("nan"), s_hi + s_lo)
    big_l = tl.where(nan_row, float("nan"), big_l)
    top = mx + big_l
    if SOFTCAP:
        top64, _ = _cap64(mx, cap)
        top = (top64 + big_l.to(tl.float64)).to(tl.float32)
    lse = tl.where(nan_row, float("nan"), tl.where(n_inf > 0, float("inf"), tl.where(masked, mx, top)))
    d_hi, d_lo = m.two_sum(1.0, s_hi)
    d_lo = d_lo + s_lo

    # the coefficients' sums: C, and C - c_k (the other classes')
    if PROBS:
        target_coef = 1.0 - eps
    else:
        target_coef = (1.0 - eps) * row_w
    smooth_unit = 0.0
    if SMOOTH:
        smooth_unit = tl.math.div_rn(eps * keep, tl.where(n_fin == 0.0, 1.0, n_fin))
    c_hi = 0.0
    c_lo = 0.0
    if PROBS:
        c_hi, c_lo = m.scale_pair(q_hi, q_lo, target_coef)
    else:
        c_hi = target_coef
    if SMOOTH:
        u_hi, u_lo = m.scale_pair(wf_hi, wf_lo, smooth_unit)
        c_hi, c_lo = m.add_pair(c_hi, c_lo, u_hi, u_lo)
    coef_sum = c_hi + c_lo
    if HAS_W:
        w_k = tl.load(W + k)
    else:
        w_k = 1.0
    q_k = 0.0
    if PROBS:
        q_k = _load(T, base, k, n, inner, 0.0)
    x_k = _load(X, base, k, n, inner, float("-inf"))
    c_k = _coefficients(k, k < n, x_k, w_k, q_k, t, target_coef, smooth_unit, PROBS, SMOOTH)
    coef_rest = (c_hi - c_k) + c_lo
    zg = 0.0
    if HAS_Z:
        zg = 2.0 * z * row_w * tl.where(special, 0.0, lse)
    divisor = tl.load(DIV)
    row_scale = 1.0
    if HAS_SCALE:
        row_scale = tl.load(SCALE + r)

    # the loss: a one-hot target's own term, or the compensated sum of the terms
    GENERAL: tl.constexpr = PROBS or SMOOTH
    loss = 0.0
    if not GENERAL:
        x_t = _load(X, base, tl.maximum(t, 0), n, inner, float("-inf"))
        nlp, _, _ = _neg_log_p(x_t, mx, n_inf, masked, big_l, cap, SOFTCAP)
        loss = tl.where(target_coef == 0.0, 0.0, target_coef * nlp)

    # pass 2: the loss terms and the gradients.  The gradient may be written
    # over the logits (the fused linear loss's chunks): every warp has read
    # the target's and the argmax's logits before any writes.
    if GRAD:
        tl.debug_barrier()
    if GENERAL or GRAD or GRAD_T:
        l_hi = 0.0
        l_lo = 0.0
        if ONE_PASS:
            terms, g, dq = _class_terms(x0, live0, lanes, w0, q0, t, mx, n_inf, masked, nan_row, big_l, d_hi, d_lo,
                                        s, k, target_coef, smooth_unit, coef_sum, coef_rest, zg, divisor, row_scale,
                                        eps, cap, PROBS, SMOOTH, SOFTCAP)
            l_hi, l_lo = m.block_sum(terms, B_LOG2)
            if GRAD:
                m.store(G + base, lanes.to(tl.int64) * inner, g, live0)
            if GRAD_T:
                m.store(DQ + base, lanes.to(tl.int64) * inner, dq, live0)
        else:
            for start in range(0, n, BLOCK):
                idx = start + lanes
                xb, live, wb, qb = _block(X, T, W, base, idx, n, inner, PROBS, HAS_W)
                terms, g, dq = _class_terms(xb, live, idx, wb, qb, t, mx, n_inf, masked, nan_row, big_l, d_hi,
                                            d_lo, s, k, target_coef, smooth_unit, coef_sum, coef_rest, zg, divisor,
                                            row_scale, eps, cap, PROBS, SMOOTH, SOFTCAP)
                b_hi, b_lo = m.block_sum(terms, B_LOG2)
                l_hi, l_lo = m.add_pair(l_hi, l_lo, b_hi, b_lo)
                if GRAD:
                    m.store(G + base, idx.to(tl.int64) * inner, g, live)
                if GRAD_T:
                    m.store(DQ + base, idx.to(tl.int64) * inner, dq, live)
        if GENERAL:
            loss = l_hi + l_lo
    if HAS_Z:
        loss += tl.where(row_w == 0.0, 0.0, z * row_w * lse * lse)
    tl.store(LOSS + r, loss)


# --- launching ----------------------------------------------------------------


def _launch(geometry, *args, **meta) -> None:
    # Triton's interpreter (CPU tensors) evaluates both sides of every
    # select with NumPy, which warns on the infinite rows' inf - inf; the
    # kernel selects the limits explicitly.
    with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        launch.launch(_ce_kernel, geometry, *args, **meta)


def cross_entropy_rows(
    x: torch.Tensor,
    target: torch.Tensor,
    cdim: int,
    weight: torch.Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    *,
    want_grad: bool = False,
    want_target_grad: bool = False,
    divisor: float | torch.Tensor = 1.0,
    scale: torch.Tensor | None = None,
    grad_out: torch.Tensor | None = None,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    r"""Per-row cross-entropy of logits with classes along ``cdim``, and its gradients, in one kernel.

    .. math:: \ell_r = \sum_j c_j \bigl(\log(1 + s) - (x_j - a)\bigr) + z\,w\,\mathrm{lse}^2,
              \qquad g_{rj} = \frac{\operatorname{scale}_r}{\operatorname{divisor}}
              \bigl((C + 2 z w\,\mathrm{lse})\,p_j - c_j\bigr)

    with ``c`` the class coefficients of ``numerics.class_coefficients``.

    Parameters
    ----------
    x : torch.Tensor
        Logits, float32, bfloat16 or float16, classes along ``cdim``.
    target : torch.Tensor
        Class indices (any integer dtype) of ``x``'s shape without ``cdim``,
        or probabilities of ``x``'s shape and dtype.
    cdim : int
        The class dimension (non-negative).
    weight : torch.Tensor of shape (C,), optional
        Class weights (float32).
    ignore_index, label_smoothing, z_loss
        As in ``softmaxkit.torch.cross_entropy``.
    want_grad, want_target_grad : bool
        Also write the gradient in ``x`` (``x``'s dtype) and in probability
        targets (``target``'s dtype).
    divisor : float or 0-d tensor
        Every gradient entry is divided by it: a reduced loss's, from
        ``numerics.gradient_divisor``, or on the device, from
        ``numerics.gradient_divisor_array`` (``+inf`` gives zero gradients),
        read by the kernel without a host round trip.
    scale : torch.Tensor of shape (rows,), optional
        A float32 factor per row (the cotangents of per-row losses).
    grad_out : torch.Tensor, optional
        Where to write the gradient (with ``want_grad``): a contiguous tensor
        of ``x``'s shape and dtype, for a contiguous ``x``; it may be ``x``
        itself (each entry is read before it is written).
    softcap : float > 0, optional
        Cap the logits with ``c tanh(x / c)`` first (``numerics.linear.softcap``:
        infinite logits keep their value); the gradient is in the uncapped
        logits, through the slope ``sech^2(x / c)``.

    Returns
    -------
    ``(loss, grad, target_grad)``: float32 losses, one per row in the C order
    of ``x``'s shape without ``cdim``, and the gradients (None where not asked).

    Notes
    -----
    float32 statistics with an exact shift, an accurate exp and log1p and
    compensated sums: float32 within 6 ULP, 16-bit within 2 ULP of the exact
    values (with a soft cap, of the values at the exactly capped logits: the
    cap is computed in float64).  Edge rows as in the module docstring.

    Examples
    --------
    >>> import os, torch
    >>> if os.environ.get("TRITON_INTERPRET") == "1":
    ...     x = torch.tensor([[30.0, 0.0, -1.0]])
    ...     loss, grad, _ = cross_entropy_rows(x, torch.tensor([0]), 1, None, -100, 0.0, 0.0, want_grad=True)
    ...     assert grad[0, 0] < 0  # -s / (1 + s), where p_t - 1 rounds to 0
    ...     capped, _, _ = cross_entropy_rows(x, torch.tensor([0]), 1, None, -100, 0.0, 0.0, softcap=10.0)
    ...     assert 0 < capped[0] < 1e-3  # the leading logit capped to 10 tanh(3)
    """
    hard = not target.is_floating_point()
    if hard:
        order, _, (c,), geometry = launch.prepare(cdim, x)
        t = target.reshape(-1).contiguous()
        tc = None
    else:
        order, _, (c, tc), geometry = launch.prepare(cdim, x, target)
        t = tc
    n_rows = geometry.n_rows
    loss = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    grad = None
    if want_grad:
        grad = torch.empty_like(c) if grad_out is None else grad_out
    dq = torch.empty_like(tc) if want_target_grad and tc is not None else None
    w = None if weight is None else weight.to(device=x.device, dtype=torch.float32).contiguous()
    sc = None if scale is None else scale.to(device=x.device, dtype=torch.float32).reshape(-1).contiguous()
    div = torch.as_tensor(divisor, dtype=torch.float32, device=x.device).reshape(1)
    cap = 1.0 if softcap is None else float(softcap)
    cap_hi = float(np.float32(cap))
    if n_rows and geometry.n:
        _launch(
            geometry, c, t, c if w is None else w, loss, c if grad is None else grad, c if dq is None else dq,
            loss if sc is None else sc, div, int(ignore_index), float(label_smoothing), float(z_loss),
            cap_hi, cap - cap_hi, _RESCALE_AT,
            PROBS=not hard, HAS_W=w is not None, SMOOTH=label_smoothing != 0.0, HAS_Z=z_loss != 0.0,
            GRAD=grad is not None, GRAD_T=dq is not None, HAS_SCALE=sc is not None, SOFTCAP=softcap is not None,
            B_LOG2=geometry.block.bit_length() - 1,
        )
    return (
        loss,
        None if grad is None else launch.restore(grad, order),
        None if dq is None else launch.restore(dq, order),
    )
