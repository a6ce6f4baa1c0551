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


def block_scores(xp, q, k, j0: int, j1: int, *, scale, softcap, widened, attend_block, bias_block):
    """The scores of query rows ``q`` against keys ``k`` (the block ``j0:j1``) as a pair ``(hi, lo)``,
    soft-capped and with the additive mask added; the keys they attend
    (None: every key); and, under a soft cap, ``tanh(s / c)`` for the
    backward's chain rule (else None).

    A ``-inf`` bias masks: its key is never read, even where the score is NaN.
    """
    hi, lo = scores(xp, q, k, scale, widened)
    tanh = None
    if softcap is not None:
        hi, lo = soft_cap(xp, hi, lo, softcap)
        tanh = hi / softcap
    attend = attend_block(j0, j1)
    bias = bias_block(j0, j1)
    if bias is not None:
        no_inf = bias != -_INF
        attend = no_inf if attend is None else (attend & no_inf)
        hi, lo = add_bias(xp, hi, lo, bias)
    return hi, lo, attend, tanh


def empty_state(xp, shape, depth: int, dtype, dev):
    """The state of no keys, ``(-inf, 0, 0)``, for rows of ``shape`` and values of ``depth``."""
    m = xp.full(shape, -_INF, dtype=dtype, device=dev)
    s = xp.zeros(shape, dtype=dtype, device=dev)
    acc = xp.zeros(shape + (depth,), dtype=dtype, device=dev)
    return m, s, acc


def absorb_block(xp, state, q, k, v, j0, j1, *, scale, softcap, widened, attend_block, bias_block, p_dtype=None):
    """``state`` merged (:func:`combine`) with the :func:`block_state` of
    keys ``k`` (..., B, D) and values ``v`` (..., B, Dv), the keys
    ``j0:j1``; ``attend_block`` and ``bias_block`` as in
    :func:`attention_rows`.  ``j0`` and ``j1`` are only passed on to them
    (they may be traced values)."""
    m, s, acc = state
    hi, lo, attend, _ = block_scores(
        xp, q, k, j0, j1, scale=scale, softcap=softcap, widened=widened, attend_block=attend_block, bias_block=bias_block,
    )
    if attend is None:
        attend = xp.ones(hi.shape, dtype=xp.bool, device=device(q))
    bm, bs, bacc = block_state(xp, hi, lo, attend, v, widened, p_dtype)
    return combine(xp, xp.stack([m, bm]), xp.stack([s, bs]), xp.stack([acc, bacc]), widened)


def absorb_sink(xp, state, sink, widened):
    """``state`` merged with the sink's state ``(sink, 0, 0)`` (``sink`` broadcastable to its rows)."""
    m, s, acc = state
    sm = xp.broadcast_to(sink, m.shape)
    return combine(xp, xp.stack([m, sm]), xp.stack([s, xp.zeros_like(s)]), xp.stack([acc, xp.zeros_like(acc)]), widened)


def attention_rows(xp, q, k, v, *, scale, softcap, widened, attend_block, bias_block, sink, p_dtype=None):
    """Attention of query rows ``q`` (..., L, D) over keys ``k`` (..., S, D)
    and values ``v`` (..., S, Dv): the running state ``(m, s, acc)``.

    ``attend_block(j0, j1)`` gives the boolean selection of keys ``j0:j1``
    (broadcastable to (..., L, j1 - j0)) or None; ``bias_block(j0, j1)``
    the additive mask or None.  ``sink`` (broadcastable to (..., L)) or
    None joins as one more state ``(sink, 0, 0)``: it counts in the
    normaliser and adds nothing to the output.  Keys go in blocks of
    :data:`BLOCK`; each block is one :func:`absorb_block`.
    """
    state = empty_state(xp, tuple(q.shape[:-1]), v.shape[-1], q.dtype, device(q))
    n_keys = k.shape[-2]
    for j0 in range(0, n_keys, BLOCK):
        j1 = min(j0 + BLOCK, n_keys)
        state = absorb_block(
            xp, state, q, k[..., j0:j1, :], v[..., j0:j1, :], j0, j1, scale=scale, softcap=softcap, widened=widened,
            attend_block=attend_block, bias_block=bias_block, p_dtype=p_dtype,
        )
    if sink is not None:
        state = absorb_sink(xp, state, sink, widened)
    return state


# --- gradients ----------------------------------------------------------------
# FlashAttention-2's backward (Dao 2023, Algorithm 2): the weights are
# recomputed a block at a time from the forward's log-sum-exp,
# P_ij = exp(s_ij - lse_i), and with D_i = dO_i . O_i,
#
#     dS_ij = P_ij (dO_i . v_j - D_i + dlse_i),
#
# then the soft cap's and the scale's chain rules.  Every gradient term is a
# selection on the keys a row reads, so a masked key, value or score (NaN or
# inf there included) is never multiplied.


def _weights(xp, hi, lo, lse, read, widened: bool):
    """``exp(s - lse)`` where ``read``, 0 elsewhere (the stand-in ``s = lse``
    keeps unread entries out of the arithmetic).  float64: the exact
    difference ``hi - lse`` with the score's remainder, as in the forward."""
    lse = xp.broadcast_to(lse[..., None], hi.shape)
    x = xp.where(read, hi, lse)
    if widened:
        p = xp.exp(x - lse)
    else:
        zh, zl = two_diff(xp, x, lse)
        p = xp.exp(zh) * (1.0 + zl + xp.where(read, lo, xp.zeros_like(lo)))
    return xp.where(read, p, xp.zeros_like(p))


def attention_vjp_rows(xp, q, k, v, o, lse, do, dlse, *, scale, softcap, widened, attend_block, bias_block, sink, want_bias=False):
    """The gradients of :func:`attention_rows` for query rows ``q`` (..., L, D).

    ``k`` (..., S, D) and ``v`` (..., S, Dv) broadcast against ``q``'s
    leading dimensions (grouped-query heads share a key head); ``o`` and
    ``do`` (..., L, Dv) are the output and its cotangent, ``lse`` (..., L)
    the forward's log-sum-exp and ``dlse`` its cotangent or None;
    ``attend_block``, ``bias_block`` and ``sink`` are those of the forward.
    Returns ``(dq, dk, dv, dsink, dbias)``: ``dk`` and ``dv`` with ``q``'s
    leading dimensions (the caller sums a group's heads), ``dsink`` per row
    (..., L) or None, ``dbias`` (..., L, S) when ``want_bias`` or None.

    With ``g_i = dlse_i - dO_i . O_i`` and ``P_ij = exp(s_ij - lse_i)``:
    ``dS_ij = P_ij (dO_i . v_j + g_i)``; ``dbias = dS``; through the soft cap
    ``dT = dS (1 - (s/c)^2)`` (``s`` the capped score); ``dq_i = scale
    sum_j dT_ij k_j``, ``dk_j = scale sum_i dT_ij q_i``, ``dv_j = sum_i
    P_ij dO_i``; and the sink's ``dsink_i = P_sink,i g_i``.

    Edge rows: an empty row (``lse = -inf``) has ``P = 0`` and zero
    gradients; a row with an attended ``+inf`` score (``lse = +inf``) takes
    zero gradients too (the limit is constant in the finite scores); a NaN
    ``lse`` makes the row's gradients NaN.
    """
    dev = device(q)
    live = ~xp.isinf(lse)
    g = -xp.sum(xp.where(live[..., None], do * o, xp.zeros_like(o)), axis=-1)
    if dlse is not None:
        g = g + dlse
    g = xp.where(live, g, xp.zeros_like(g))
    dq = xp.zeros(q.shape, dtype=q.dtype, device=dev)
    lead = tuple(q.shape[:-2])
    dks, dvs, dbiases = [], [], []
    n_keys = k.shape[-2]
    for j0 in range(0, n_keys, BLOCK):
        j1 = min(j0 + BLOCK, n_keys)
        kb, vb = k[..., j0:j1, :], v[..., j0:j1, :]
        hi, lo, attend, tanh = block_scores(
            xp, q, kb, j0, j1, scale=scale, softcap=softcap, widened=widened,
            attend_block=attend_block, bias_block=bias_block,
        )
        read = (hi != -_INF) & live[..., None]
        if attend is not None:
            read = read & attend
        p = _weights(xp, hi, lo, lse, read, widened)
        dp = xp.sum(do[..., :, None, :] * vb[..., None, :, :], axis=-1)
        ds = xp.where(read, p * (dp + g[..., None]), xp.zeros_like(p))
        if want_bias:
            dbiases.append(xp.broadcast_to(ds, lead + tuple(ds.shape[-2:])))
        dt = ds if tanh is None else ds * (1.0 - tanh * tanh)
        r = read[..., :, :, None]
        zero = xp.zeros_like(dt[..., :, :, None])
        dq = dq + scale * xp.sum(xp.where(r, dt[..., :, :, None] * kb[..., None, :, :], zero), axis=-2)
        dk = scale * xp.sum(xp.where(r, dt[..., :, :, None] * q[..., :, None, :], zero), axis=-3)
        dv = xp.sum(xp.where(r, p[..., :, :, None] * do[..., :, None, :], zero), axis=-3)
        dks.append(xp.broadcast_to(dk, lead + tuple(dk.shape[-2:])))
        dvs.append(xp.broadcast_to(dv, lead + tuple(dv.shape[-2:])))
    if n_keys:
        dk, dv = xp.concat(dks, axis=-2), xp.concat(dvs, axis=-2)
    else:
        dk = xp.zeros(lead + (0, k.shape[-1]), dtype=q.dtype, device=dev)
        dv = xp.zeros(lead + (0, v.shape[-1]), dtype=q.dtype, device=dev)
    dsink = None
    if sink is not None:
        sk = xp.broadcast_to(sink, lse.shape)
        ok = live & (sk != -_INF)
        psink = xp.exp(xp.where(ok, sk - xp.where(ok, lse, sk), xp.zeros_like(sk)))
        dsink = xp.where(ok, psink * g, xp.zeros_like(g))
    dbias = None
    if want_bias:
        dbias = xp.concat(dbiases, axis=-1) if n_keys else xp.zeros(lead + (q.shape[-2], 0), dtype=q.dtype, device=dev)
    return dq, dk, dv, dsink, dbias


def merge_vjp(xp, m, acc, lse, out, dout, dlse, base2: bool = False):
    """The gradients of the merge (:func:`combine` then :func:`finish`) with
    respect to the states' log-sum-exps ``m`` (k, ...) and outputs ``acc``
    (k, ..., Dv), given the merged ``lse`` (...) and ``out`` (..., Dv) and
    their cotangents (``dlse`` may be None).

    With ``pi_i = exp(m_i - lse)`` (``2**(m_i - lse)`` with ``base2``), the
    share of state ``i`` in the union: ``d acc_i = pi_i dout`` and
    ``d m_i = pi_i (dlse + c dout . (acc_i - out))`` with ``c = 1`` (``ln 2``
    with ``base2``).  An empty state (``m = -inf``) gets zero gradients and
    its output is never read; when the merged lse is ``+inf`` the ``+inf``
    states share it equally and the gradient in ``m`` is 0.
    """
    empty = m == -_INF
    top_inf = xp.broadcast_to(lse[None, ...] == _INF, m.shape)
    on_top = m == _INF
    n_top = xp.sum(xp.astype(on_top, m.dtype), axis=0, keepdims=True)
    live = ~empty & ~top_inf
    lse_b = xp.broadcast_to(lse[None, ...], m.shape)
    d = xp.where(live, m - xp.where(live, lse_b, m), xp.zeros_like(m))
    pi = xp.exp(d * _LN2) if base2 else xp.exp(d)
    pi = xp.where(live, pi, xp.zeros_like(pi))
    pi = xp.where(top_inf & on_top, 1.0 / xp.where(n_top > 0, n_top, xp.ones_like(n_top)), pi)
    read = (live | (top_inf & on_top))[..., None]
    zero = xp.zeros_like(acc)
    d_acc = xp.where(read, pi[..., None] * dout[None, ...], zero)
    spread = xp.sum(xp.where(read, dout[None, ...] * (acc - out[None, ...]), zero), axis=-1)
    if base2:
        spread = spread * _LN2
    dm = spread if dlse is None else spread + dlse[None, ...]
    dm = xp.where(live, pi * dm, xp.zeros_like(dm))
    return dm, d_acc


def attention_vjp(xp, q, k, v, o, lse, do, dlse, *, attend, bias, causal, scale, softcap, sinks, widened, want_bias=False, rows_per_chunk=None):
    """The gradients of attention over heads: ``(dq, dk, dv, dsinks, dbias)``.

    ``q`` (..., Hq, L, D), ``k`` (..., Hkv, S, D), ``v`` (..., Hkv, S, Dv),
    ``o``/``do`` (..., Hq, L, Dv), ``lse``/``dlse`` (..., Hq, L) (``dlse``
    may be None), all in the working dtype and checked by the caller.
    ``attend`` (boolean) or ``bias`` (additive), broadcastable to
    (..., Hq, L, S), or None; ``causal`` None, ``"top_left"`` or
    ``"bottom_right"``; ``sinks`` (Hq,) or None.  A group's query heads
    share key head ``h // (Hq // Hkv)``, so its ``dk``/``dv`` sum over the
    group; ``dsinks`` (Hq,) sums over the batch and the rows; ``dbias`` is
    (..., Hq, L, S) when ``want_bias``.  Query rows go ``rows_per_chunk``
    at a time (all at once when None); see :func:`attention_vjp_rows`.
    """
    *batch, n_q, n_rows, depth = q.shape
    n_kv, n_keys, dv_depth = k.shape[-3], k.shape[-2], v.shape[-1]
    batch = tuple(batch)
    group = n_q // n_kv
    lead = batch + (n_kv, group)
    dev = device(q)
    qg = xp.reshape(q, lead + (n_rows, depth))
    kg = xp.reshape(k, batch + (n_kv, 1, n_keys, depth))
    vg = xp.reshape(v, batch + (n_kv, 1, n_keys, dv_depth))
    og = xp.reshape(o, lead + (n_rows, dv_depth))
    dog = xp.reshape(do, lead + (n_rows, dv_depth))
    lg = xp.reshape(lse, lead + (n_rows,))
    dlg = None if dlse is None else xp.reshape(dlse, lead + (n_rows,))
    full = batch + (n_q, n_rows, n_keys)
    attend = None if attend is None else xp.reshape(xp.broadcast_to(attend, full), lead + (n_rows, n_keys))
    bias = None if bias is None else xp.reshape(xp.broadcast_to(bias, full), lead + (n_rows, n_keys))
    sink = None if sinks is None else xp.reshape(sinks, (n_kv, group, 1))
    step = n_rows if rows_per_chunk is None else max(1, rows_per_chunk)
    dq_parts, db_parts = [], []
    dk = xp.zeros(lead + (n_keys, depth), dtype=q.dtype, device=dev)
    dv = xp.zeros(lead + (n_keys, dv_depth), dtype=q.dtype, device=dev)
    dsink = xp.zeros(lead + (1,), dtype=q.dtype, device=dev)
    for l0 in range(0, max(n_rows, 1), step):
        l1 = min(l0 + step, n_rows)

        def attend_block(j0, j1, l0=l0, l1=l1):
            keep = None if attend is None else attend[..., l0:l1, j0:j1]
            if causal is not None:
                c = causal_keep(xp.arange(l0, l1, device=dev), xp.arange(j0, j1, device=dev), n_rows, n_keys, causal)
                keep = c if keep is None else (keep & c)
            return keep

        def bias_block(j0, j1, l0=l0, l1=l1):
            return None if bias is None else bias[..., l0:l1, j0:j1]

        part = attention_vjp_rows(
            xp, qg[..., l0:l1, :], kg, vg, og[..., l0:l1, :], lg[..., l0:l1], dog[..., l0:l1, :],
            None if dlg is None else dlg[..., l0:l1], scale=scale, softcap=softcap, widened=widened,
            attend_block=attend_block, bias_block=bias_block, sink=sink, want_bias=want_bias,
        )
        dq_parts.append(part[0])
        dk, dv = dk + part[1], dv + part[2]
        if part[3] is not None:
            dsink = dsink + xp.sum(part[3], axis=-1, keepdims=True)
        if want_bias:
            db_parts.append(part[4])
    dq = xp.reshape(xp.concat(dq_parts, axis=-2), q.shape)
    dk = xp.reshape(xp.sum(dk, axis=-3), k.shape)
    dv = xp.reshape(xp.sum(dv, axis=-3), v.shape)
    dsinks = None
    if sinks is not None:
        dsinks = xp.reshape(dsink, (-1, n_q))
        dsinks = xp.sum(dsinks, axis=0)
    dbias = xp.reshape(xp.concat(db_parts, axis=-2), full) if want_bias else None
    return dq, dk, dv, dsinks, dbias
