"""Scaled dot-product attention and the merge of partial attention states,
as formulas on ``xp`` arrays in the working dtype.

An attention *state* over a set of keys is ``(m, s, acc)`` per query row:
``m`` the largest score (``-inf`` for no key), ``s`` the sum of
``exp(score - m)`` over every key but one that scores ``m`` (the argmax term,
exactly 1, is left out, as in :mod:`numerics.rows`), and ``acc`` the sum of
``exp(score - m) * v`` over every key.  The output is ``acc / (1 + s)`` and
the log-sum-exp ``m + log1p(s)``.  A state made from a finished
``(output, lse)`` pair is ``(lse, 0, output)``.

:func:`combine` merges states over disjoint key sets; it is the only
statement of the merge.  :func:`attention_rows` runs the online softmax over
fixed blocks of keys (Milakov & Gimelshein 2018): each block's state is
formed by :func:`block_state` and merged into the running one by
:func:`combine`, so the block merge and the public merge of partial
attention states are one formula.

Precision: with ``widened`` (float32 and narrower inputs computed in
float64) products of two inputs are exact and sums carry 29 spare bits.
Without it (float64 input) the scores are a Dot2 pair ``hi + lo``
(TwoProduct of each term, a compensated sum; Ogita, Rump & Oishi 2005),
carried into the exact shift ``exp(hi - m) * (1 + lo')``.
"""

from __future__ import annotations

import math
from typing import Any

from softmaxkit.numerics.precision import (
    _INF,
    compensated_sum,
    compensated_sum_pair,
    device,
    divide_pair,
    two_diff,
    two_prod,
)
from softmaxkit.numerics.rows import _first_max, _rest_sum, _stand_ins, row_max

# Keys per block of the online softmax.  Fixed (never derived from the
# number of rows), so that a row's result does not depend on the batch.
BLOCK = 128

_LN2 = math.log(2.0)
# ln 2 as float64 hi + lo (the low part from 60 digits of ln 2).
_LN2_HI = _LN2
_LN2_LO = 2.3190468138462996e-17


def scores(xp, q, k, scale: float, widened: bool):
    """``(hi, lo)``: ``scale * q @ k^T`` over the last axis of ``q`` (..., L, D)
    and ``k`` (..., B, D), shape (..., L, B).

    Widened inputs: each product is exact and the sum of ``D`` of them is
    within ``D`` float64 roundings (``lo`` is None).  float64: each product
    is split exactly (TwoProduct), the products summed with compensation and
    their errors added: within about one rounding of the exact dot product
    (for ``|q|, |k|`` below about ``1e150``, where the splits stay finite).
    """
    if widened:
        return xp.sum(q[..., :, None, :] * k[..., None, :, :], axis=-1) * scale, None
    p, e = two_prod(xp, q[..., :, None, :], k[..., None, :, :])
    hi, lo = compensated_sum_pair(xp, p, False)
    lo = (lo if lo is not None else xp.zeros_like(hi)) + xp.sum(e, axis=-1, keepdims=True)
    hi, lo = hi[..., 0], lo[..., 0]
    sh, se = two_prod(xp, hi, xp.asarray(scale, dtype=hi.dtype, device=device(hi)))
    lo = se + lo * scale
    return sh, xp.where(xp.isfinite(sh), lo, xp.zeros_like(lo))


def soft_cap(xp, hi, lo, cap: float):
    """``cap * tanh(s / cap)`` of ``s = hi + lo``.

    As a pair: the quotient exactly (:func:`divide_pair`), its remainder
    carried through ``tanh' = 1 - tanh^2``, and the product by ``cap``
    exactly (:func:`two_prod`); what remains is ``tanh``'s own rounding.
    """
    if lo is None:
        return cap * xp.tanh(hi / cap), None
    qh, ql = divide_pair(xp, hi, lo, cap)
    t = xp.tanh(qh)
    out, err = two_prod(xp, t, xp.asarray(cap, dtype=t.dtype, device=device(t)))
    return out, err + cap * ((1.0 - t * t) * ql)


# Below this magnitude the rounding of score + bias is kept in the pair; above
# it the sum is rounded (a bias such as finfo.min swamps the scores), so that
# the remainder stays far below 1 and exp(hi) * (1 + lo) stays exact.
_BIAS_EXACT = 2.0**20


def add_bias(xp, hi, lo, bias):
    """``hi + lo + bias`` as a pair: the rounding of ``hi + bias`` is kept in
    ``lo`` where the sum is below 2**20 in magnitude, and dropped above."""
    if lo is None:
        return hi + bias, None
    h, e = two_diff(xp, hi, -bias)
    return h, lo + xp.where(xp.abs(h) <= _BIAS_EXACT, e, xp.zeros_like(e))


def block_state(xp, hi, lo, attend, v, widened: bool, p_dtype: Any = None):
    """The state ``(m, s, acc)`` of one block of keys.

    ``hi``/``lo`` are the scores (..., L, B), ``attend`` (broadcastable to
    them) says which keys each row may attend to, ``v`` (..., B, Dv) the
    values.  Masking is a selection: a key not attended, or scoring
    ``-inf``, is never read (its score, key and value may be NaN or inf).
    A row holding ``+inf`` scores shares its mass among them (``m = +inf``);
    a NaN score makes ``s`` NaN.  With ``p_dtype`` the weights are rounded
    to that dtype before they multiply ``v`` (the sum ``s`` keeps them
    unrounded), as low-precision kernels do.
    """
    x = xp.where(attend, hi, xp.full_like(hi, -_INF))
    a = row_max(xp, x)
    x, shift, masked_row, inf_row = _stand_ins(xp, x, a)
    if widened:
        zh, zl = x - shift, None
        e = xp.exp(zh)
    else:
        zh, zl = two_diff(xp, x, shift)
        # The score's own remainder, except where the stand-ins replaced it.
        zl = zl + xp.where(xp.isfinite(hi) & ~inf_row, lo, xp.zeros_like(lo))
        e = xp.exp(zh) * (1.0 + zl)
    is_k = _first_max(xp, x)
    s = _rest_sum(xp, zh, zl, e, is_k, widened)
    if not widened:
        # The shift is the largest score's hi part, so the argmax term is
        # exp(lo_k) = 1 + lo_k, not 1: its excess joins s (which may then be
        # slightly negative; 1 + s stays the normaliser).
        s = s + xp.sum(xp.where(is_k, zl, xp.zeros_like(zl)), axis=-1, keepdims=True)
    s = xp.where(masked_row, xp.zeros_like(s), xp.where(xp.isnan(a), a, s))
    read = (x != -_INF) & ~masked_row
    if p_dtype is not None:
        e = xp.astype(xp.astype(e, p_dtype), e.dtype)
    # Products laid out (..., L, Dv, B) and summed over the keys (the last,
    # contiguous axis): the same order for every row, whatever the batch.
    vt = xp.moveaxis(v, -1, -2)[..., None, :, :]
    terms = xp.where(read[..., :, None, :], e[..., :, None, :] * vt, xp.zeros_like(e[..., :, None, :]))
    acc = compensated_sum(xp, terms, widened)[..., 0]
    return a[..., 0], s[..., 0], acc


def combine(xp, m, s, acc, widened: bool, base2: bool = False):
    """Merge states over disjoint key sets, stacked along axis 0.

    ``m``, ``s`` (k, ...) and ``acc`` (k, ..., Dv).  The states are ordered
    by decreasing ``m`` (ties kept in index order); with ``M`` the first
    one's ``m`` and ``w_i = exp(m_i - M)`` (``2**(m_i - M)`` with
    ``base2``),

        s' = s_0 + sum_{i>0} w_i (1 + s_i),   acc' = sum_i w_i acc_i,

    ``w_0 = 1`` exactly, so the largest state's own ``1`` stays out of
    ``s'``.  Empty states (``m = -inf``) are selected out, never multiplied:
    their ``acc`` is not read, and all-empty gives ``(-inf, 0, 0)``.  Ties
    (``+inf`` included) have ``w = 1``.  A NaN ``m`` or ``s`` makes the
    merged row NaN.  The result depends on the order of the states only
    among states of equal ``m``.
    """
    nan = xp.any(xp.isnan(m) | xp.isnan(s), axis=0)
    order = xp.argsort(-m, axis=0, stable=True)
    m = xp.take_along_axis(m, order, axis=0)
    s = xp.take_along_axis(s, order, axis=0)
    acc = xp.take_along_axis(acc, order[..., None], axis=0)
    top = m[:1, ...]
    empty = m == -_INF
    tie = m == top
    dh, dl = two_diff(xp, m, xp.where(xp.isfinite(top), top, xp.zeros_like(top)))
    if base2:
        # 2**d = exp(d ln 2), with d ln 2 as a pair where the precision is not widened.
        if widened:
            dh = dh * _LN2
        else:
            d = dh
            dh, err = two_prod(xp, d, xp.asarray(_LN2_HI, dtype=d.dtype, device=device(d)))
            dl = xp.where(xp.isfinite(dh), err + dl * _LN2_HI + d * _LN2_LO, xp.zeros_like(dl))
    w = xp.exp(dh) if widened else xp.exp(dh) * (1.0 + dl)
    # Below a +inf top (or an empty one) the weight is 0; ties weigh 1.
    w = xp.where(empty | (top == _INF), xp.zeros_like(w), w)
    w = xp.where(tie, xp.ones_like(w), w)
    first = xp.arange(m.shape[0], dtype=order.dtype, device=device(m)) == 0
    first = xp.reshape(first, (m.shape[0],) + (1,) * (m.ndim - 1))
    zero = xp.zeros_like(s)
    terms = xp.where(empty, zero, xp.where(first, s, w * (1.0 + s)))
    s_out = compensated_sum(xp, xp.moveaxis(terms, 0, -1), widened)[..., 0]
    wa = xp.where(empty[..., None], xp.zeros_like(acc), w[..., None] * acc)
    acc_out = compensated_sum(xp, xp.moveaxis(wa, 0, -1), widened)[..., 0]
    nan_value = xp.full_like(s_out, xp.nan)
    s_out = xp.where(nan, nan_value, s_out)
    m_out = xp.where(nan, nan_value, top[0, ...])
    acc_out = xp.where(nan[..., None], xp.full_like(acc_out, xp.nan), acc_out)
    return m_out, s_out, acc_out


def finish(xp, m, s, acc, base2: bool = False):
    """``(output, lse)`` of a state: ``acc / (1 + s)`` and ``m + log1p(s)``
    (``log1p(s) / ln 2`` with ``base2``); an infinite ``m`` is the lse itself."""
    out = acc / (1.0 + s)[..., None]
    L = xp.log1p(s)
    if base2:
        L = L / _LN2
    lse = xp.where(xp.isinf(m), m, m + L)
    return out, lse


def causal_keep(rows, keys, length_q: int, length_k: int, align: str):
    """``j <= i + offset`` for query rows ``rows`` and keys ``keys`` (1-D
    integer ranges): ``offset = 0`` (``"top_left"``) or ``S - L``
    (``"bottom_right"``), shape (rows, keys)."""
    offset = 0 if align == "top_left" else length_k - length_q
    return keys[None, :] <= rows[:, None] + offset


def attention_rows(xp, q, k, v, *, scale, softcap, widened, attend_block, bias_block, sink, p_dtype=None):
    """Attention of query rows ``q`` (..., L, D) over keys ``k`` (..., S, D)
    and values ``v`` (..., S, Dv): the running state ``(m, s, acc)``.

    ``attend_block(j0, j1)`` gives the boolean selection of keys ``j0:j1``
    (broadcastable to (..., L, j1 - j0)) or None; ``bias_block(j0, j1)``
    the additive mask or None.  ``sink`` (broadcastable to (..., L)) or
    None joins as one more state ``(sink, 0, 0)``: it counts in the
    normaliser and adds nothing to the output.  Keys go in blocks of
    :data:`BLOCK`; each block is one :func:`block_state` merged by
    :func:`combine`.
    """
    shape = tuple(q.shape[:-1])
    dev = device(q)
    m = xp.full(shape, -_INF, dtype=q.dtype, device=dev)
    s = xp.zeros(shape, dtype=q.dtype, device=dev)
    acc = xp.zeros(shape + (v.shape[-1],), dtype=q.dtype, device=dev)
    n_keys = k.shape[-2]
    for j0 in range(0, n_keys, BLOCK):
        j1 = min(j0 + BLOCK, n_keys)
        hi, lo = scores(xp, q, k[..., j0:j1, :], scale, widened)
        if softcap is not None:
            hi, lo = soft_cap(xp, hi, lo, softcap)
        attend = attend_block(j0, j1)
        bias = bias_block(j0, j1)
        if bias is not None:
            # A -inf bias masks: its key is never read, even where the score is NaN.
            no_inf = bias != -_INF
            attend = no_inf if attend is None else (attend & no_inf)
            hi, lo = add_bias(xp, hi, lo, bias)
        if attend is None:
            attend = xp.ones(hi.shape, dtype=xp.bool, device=dev)
        bm, bs, bacc = block_state(xp, hi, lo, attend, v[..., j0:j1, :], widened, p_dtype)
        m, s, acc = combine(xp, xp.stack([m, bm]), xp.stack([s, bs]), xp.stack([acc, bacc]), widened)
    if sink is not None:
        sm = xp.broadcast_to(sink, shape)
        m, s, acc = combine(xp, xp.stack([m, sm]), xp.stack([s, xp.zeros_like(s)]), xp.stack([acc, xp.zeros_like(acc)]), widened)
    return m, s, acc
