"""The mpmath reference of scaled dot-product attention, at 60 digits.

Scores are exact products of the (exactly converted) inputs, times the
scale, soft-capped and biased in mpmath; the normaliser is written in the
log1p form (shift by the largest term, leave it out of the sum), so the
precision needed does not grow with the margin.  Keys that are not
attended, or score ``-inf``, take no part.  Nothing here calls softmaxkit.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np

from .exact import INF, to_mp

mp.mp.dps = 60


def exact_scores(q_row, keys, scale, softcap=None, bias=None) -> list:
    """``cap(scale * q . k_j) + bias_j`` for each key row, exactly (60 digits)."""
    q = to_mp(q_row)
    tau = mp.mpf(float(scale))
    out = []
    for j, k_row in enumerate(np.asarray(keys)):
        s = tau * mp.fsum(a * b for a, b in zip(q, to_mp(k_row)))
        if softcap is not None:
            c = mp.mpf(float(softcap))
            s = c * mp.tanh(s / c)
        if bias is not None:
            s = s + mp.mpf(float(bias[j]))
        out.append(s)
    return out


def attention_row(scores, attend, values, sink=None):
    """``(P, out, lse, bound)`` of one query row.

    ``scores`` exact (mpf, ``-inf`` or ``+inf`` allowed), ``attend`` a bool
    per key, ``values`` (S, Dv), ``sink`` a float or None.  ``bound[d]`` is
    ``sum_j P_j |v_jd|``, the scale of the output's mixed error bound.  No
    attended key (and no sink): P = 0, out = 0, lse = -inf.  ``+inf`` scores
    share the mass equally (lse = +inf).
    """
    values = np.asarray(values, dtype=np.float64)
    n, dv = values.shape
    live = [j for j in range(n) if attend[j] and scores[j] != -INF]
    P = [mp.mpf(0)] * n
    if any(scores[j] == INF for j in live):
        top = [j for j in live if scores[j] == INF]
        for j in top:
            P[j] = mp.mpf(1) / len(top)
        lse = INF
    else:
        terms = [(scores[j], j) for j in live]
        if sink is not None:
            terms.append((mp.mpf(float(sink)), None))
        if not terms:
            return P, [mp.mpf(0)] * dv, -INF, [mp.mpf(0)] * dv
        M = max(t for t, _ in terms)
        first = next(i for i, (t, _) in enumerate(terms) if t == M)
        rest = mp.fsum(mp.exp(t - M) for i, (t, _) in enumerate(terms) if i != first)
        lse = M + mp.log1p(rest)
        for t, j in terms:
            if j is not None:
                P[j] = mp.exp(t - M) / (1 + rest)
    cols = [to_mp(values[:, d]) for d in range(dv)]
    out = [mp.fsum(P[j] * col[j] for j in range(n) if P[j]) for col in cols]
    bound = [mp.fsum(P[j] * abs(col[j]) for j in range(n) if P[j]) for col in cols]
    return P, out, lse, bound


def unit_roundoff(dtype) -> float:
    """``u = 2**-p`` for a format of ``p`` significant bits (bfloat16 included)."""
    dtype = np.dtype(dtype)
    bits = 8 if dtype.name == "bfloat16" else np.finfo(dtype).nmant + 1
    return 2.0**-bits


def underflow(dtype) -> mp.mpf:
    """Half the smallest subnormal of ``dtype``: the most that rounding a
    result into the subnormal range adds beyond its relative error."""
    dtype = np.dtype(dtype)
    if dtype.name == "bfloat16":
        return mp.ldexp(1, -134)
    fi = np.finfo(dtype)
    return mp.ldexp(1, fi.minexp - fi.nmant - 1)


def mixed_error(actual, exact, bound, dtype) -> float:
    """Largest ``(|actual - exact| - eta) / (u * bound)`` over the entries, ``u``
    the unit roundoff of ``dtype`` and ``eta`` its :func:`underflow`; 0 where
    the error is within ``eta``, inf for a non-finite result.  A zero bound
    with a larger error counts as inf."""
    u = mp.mpf(unit_roundoff(dtype))
    eta = underflow(dtype)
    worst = 0.0
    for a, e, b in zip(np.asarray(actual).astype(np.float64).ravel(), exact, bound):
        if not np.isfinite(a):
            return float("inf")
        err = abs(mp.mpf(float(a)) - e) - eta
        if err <= 0:
            continue
        if b == 0:
            return float("inf")
        worst = max(worst, float(err / (u * b)))
    return worst


def attention_scores(q, k, v=None, mask=None, causal=None, scale=None, softcap=None, sinks=None):
    """Float64 approximations of the scores (..., Hq, L, S) before any mask:
    their magnitudes, for error bounds stated relative to them."""
    q, k = (np.asarray(a).astype(np.float64) for a in (q, k))
    k = np.repeat(k, q.shape[-3] // k.shape[-3], axis=-3)
    s = q @ np.swapaxes(k, -1, -2) * (1.0 / np.sqrt(max(q.shape[-1], 1)) if scale is None else scale)
    return s if softcap is None else softcap * np.tanh(s / softcap)


def attention(q, k, v, mask=None, causal=None, scale=None, softcap=None, sinks=None):
    """The reference over whole arrays in softmaxkit's layout (see
    ``softmaxkit.attention``): object arrays ``(P, out, lse, bound)`` of
    shapes (..., Hq, L, S), (..., Hq, L, Dv), (..., Hq, L), (..., Hq, L, Dv)."""
    q, k, v = (np.asarray(a).astype(np.float64) for a in (q, k, v))
    *batch, hq, L, D = q.shape
    hkv, S, dv = k.shape[-3], k.shape[-2], v.shape[-1]
    group = hq // hkv
    scale = 1.0 / np.sqrt(max(D, 1)) if scale is None else scale
    attend = np.ones(tuple(batch) + (hq, L, S), dtype=bool)
    bias = None
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == bool:
            attend = attend & np.broadcast_to(mask, attend.shape)
        else:
            bias = np.broadcast_to(mask.astype(np.float64), attend.shape)
    if causal is not None:
        offset = 0 if causal == "top_left" else S - L
        attend = attend & (np.arange(S)[None, :] <= np.arange(L)[:, None] + offset)
    P = np.empty(attend.shape, dtype=object)
    out = np.empty(tuple(batch) + (hq, L, dv), dtype=object)
    bound = np.empty(out.shape, dtype=object)
    lse = np.empty(tuple(batch) + (hq, L), dtype=object)
    for idx in np.ndindex(*batch, hq, L):
        *b, h, _ = idx
        kh = tuple(b) + (h // group,)
        s = exact_scores(q[idx], k[kh], scale, softcap, None if bias is None else bias[idx])
        sink = None if sinks is None else float(np.asarray(sinks, dtype=np.float64)[h])
        P[idx], out[idx], lse[idx], bound[idx] = attention_row(s, attend[idx], v[kh], sink)
    return P, out, lse, bound
