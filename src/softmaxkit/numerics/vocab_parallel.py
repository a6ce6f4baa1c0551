"""Cross-entropy with each row's classes split across ranks (vocabulary parallelism).

Each rank holds a contiguous slice ``[start, start + width)`` of the classes
of every row; the targets are global class indices, the same on every rank.
Every backend runs the same four steps, with these functions in between its
collectives:

1. :func:`target_slice`, :func:`slice_max` and :func:`picked`: each row's maximum on this slice and
   the target's class weight where this slice holds the target (``-inf``
   elsewhere).  One all-reduce MAX gives the row maximum ``a`` and the
   target's weight ``w_t`` everywhere (a maximum is exact).
2. :func:`shares`: shifted by ``a``, this slice's share of
   ``s = sum_{i != k} exp(x_i - a)``, the argmax term left out by the slice
   that holds it (``numerics.rows.shard_stats``), and, with label smoothing,
   the count of classes that are not ``-inf`` and their weights.  One
   all-reduce SUM, in float64 for float32 and narrower logits, gives the
   row's totals; :func:`row_totals` turns them into the row's ``s``.
3. :func:`slice_loss`: this slice's part of each row's loss, summed over the
   ranks (per row, or as each rank's partial total).
4. :func:`slice_grad`: this slice's columns of the gradient, from the row's
   totals alone; no communication.

The loss is ``sum_j c_j ((a - x_j) + log1p(s)) + z w lse^2`` exactly as on one
device (``numerics.cross_entropy``); only the sums over the classes are split.
Label smoothing counts the whole row's classes ``K``; the target's gradient
at the argmax is ``(C - c_k) - C s / (1 + s)``, never ``p_k - 1``.
"""

from __future__ import annotations

from typing import Any

from softmaxkit.numerics.cross_entropy import (
    class_coefficients,
    cross_entropy_grad,
    loss_terms,
    z_loss_slope,
    z_loss_term,
)
from softmaxkit.numerics.precision import _INF, compensated_sum, device
from softmaxkit.numerics.rows import RowStats, row_max, shard_stats, untied, with_row_sum


def target_slice(xp: Any, t: Any, start: int, width: int, ignore_index: int) -> tuple[Any, Any, Any]:
    """``(local, on_slice, keep)`` of global class indices ``t`` (``(n,)``) for the slice ``[start, start + width)``.

    ``local`` is the target's index in the slice, clipped into it (read only
    where ``on_slice``); ``on_slice`` (bool) says the slice holds the target
    and ``keep`` (bool) that it is not ignored.  All keep their axis.
    """
    keep = (t != ignore_index)[:, None]
    local = t[:, None] - start
    on_slice = keep & (local >= 0) & (local < width)
    return xp.clip(local, 0, max(width - 1, 0)), on_slice, keep


def slice_hot(xp: Any, local: Any, on_slice: Any, width: int, dtype: Any) -> Any:
    """One-hot rows ``(n, width)`` of the targets this slice holds (zero elsewhere), in ``dtype``."""
    classes = xp.arange(width, dtype=local.dtype, device=device(local))
    return xp.astype((classes == local) & on_slice, dtype)


def slice_max(xp: Any, x: Any) -> Any:
    """Each row's maximum on this slice (axis kept; ``-inf`` for an empty slice), NaN counted as ``+inf``.

    A maximum over ranks need not carry NaN through (gloo's all-reduce
    does not: its result then depends on the order of the ranks); a row
    with NaN gets ``a = +inf`` instead, and the NaN reaches every rank
    through the slice's share of ``s`` (``rows.shard_stats``).
    """
    m = row_max(xp, x)
    return xp.where(xp.isnan(m), xp.full_like(m, _INF), m)


def picked(xp: Any, weight: Any, local: Any, on_slice: Any) -> Any:
    """The target's class weight where this slice holds the target, ``-inf`` elsewhere (axis kept)."""
    if weight.shape[0] == 0:
        return xp.full(local.shape, -_INF, dtype=weight.dtype, device=device(weight))
    w = xp.reshape(xp.take(weight, xp.reshape(local, (-1,)), axis=0), local.shape)
    return xp.where(on_slice, w, xp.full_like(w, -_INF))


def row_weight(xp: Any, keep: Any, picked_max: Any, dtype: Any) -> Any:
    """``w_t`` in ``dtype`` from the MAX of :func:`picked` (1 without class weights: pass None); 0 on ignored rows."""
    ones = xp.astype(keep, dtype)
    if picked_max is None:
        return ones
    return xp.where(keep, xp.astype(picked_max, dtype), xp.zeros_like(ones))


def shares(xp: Any, x: Any, a: Any, eps: float, weight: Any, widened: bool) -> tuple[list, RowStats]:
    """This slice's columns of the row totals (each ``(n, 1)``), and its stats.

    The columns, in order: the share of ``s``; 1 where this slice holds the
    row's maximum (``holds``); with smoothing, the number of classes whose
    logit is not ``-inf``, and with class weights their weights' sum.
    ``x`` (working dtype) and ``a`` (the row maximum, axis kept) as in
    ``shard_stats``.
    """
    st, holds = shard_stats(xp, x, a, widened)
    cols = [st.s, xp.astype(holds, x.dtype)]
    if eps:
        finite = x != -_INF
        cols.append(xp.sum(xp.astype(finite, x.dtype), axis=-1, keepdims=True))
        if weight is not None:
            cols.append(compensated_sum(xp, xp.where(finite, weight, xp.zeros_like(x)), widened))
    return cols, st


def row_totals(xp: Any, totals: list) -> dict:
    """The row's ``s``, ``K`` and finite weight sum from the summed :func:`shares` columns."""
    s = untied(xp, totals[0], totals[1])
    out = {"s": s, "n_finite": None, "finite_weight": None}
    if len(totals) > 2:
        out["n_finite"] = totals[2]
        out["finite_weight"] = totals[3] if len(totals) > 3 else totals[2]
    return out


def coefficients(xp: Any, x: Any, hot: Any, eps: float, weight: Any, w_t: Any, keep: Any, totals: dict) -> tuple[Any, Any]:
    """``(c, C)``: this slice's class coefficients and the row's total ``C = sum_j c_j`` (axis kept).

    ``keep`` is 1 where the target is not ignored (working dtype).
    ``C = (1 - eps) w_t + eps keep W / K`` with ``K`` the row's classes that
    are not ``-inf`` and ``W`` their weights' sum (``K`` without weights);
    the smoothing term is 0 where ``K = 0``.
    """
    n_finite = totals["n_finite"]
    coef, _ = class_coefficients(xp, x, eps, weight, hot=hot, row_weight=w_t, keep=keep, n_finite=n_finite)
    total = (1.0 - eps) * w_t
    if eps:
        safe = xp.where(n_finite == 0, xp.ones_like(n_finite), n_finite)
        total = total + xp.where(n_finite == 0, xp.zeros_like(safe), eps * keep * totals["finite_weight"] / safe)
    return coef, total


def slice_loss(xp: Any, st: RowStats, coef: Any, z_loss: float, w_t: Any, on_slice: Any) -> Any:
    """This slice's part of each row's loss ``(n,)``: its classes' terms, and
    the z-loss on the slice that holds the target.  Summed over the slices,
    the row's loss."""
    loss = loss_terms(xp, st, coef)
    if z_loss:
        zl = z_loss_term(xp, st, z_loss, w_t)
        loss = loss + xp.where(on_slice, zl, xp.zeros_like(zl))
    return loss[..., 0]


def slice_grad(xp: Any, st: RowStats, coef: Any, c_sum: Any, z_loss: float, w_t: Any) -> Any:
    """This slice's columns of the gradient ``(C + zg) p - c`` of each row's loss.

    ``C - c_k``, the other coefficients' sum at the argmax, is read where
    this slice holds the argmax (``is_k``); with several slices holding the
    maximum ``s >= 1`` and the plain form is used.
    """
    c_rest = c_sum - xp.sum(xp.where(st.is_k, coef, xp.zeros_like(coef)), axis=-1, keepdims=True)
    zg = z_loss_slope(xp, st, z_loss, w_t) if z_loss else None
    return cross_entropy_grad(xp, st, coef, c_sum, c_rest, zg)


def row_stats_of_slice(xp: Any, x: Any, a: Any, s: Any, widened: bool) -> RowStats:
    """The stats of this slice with the row's ``s``: ``shard_stats`` with :func:`row_totals`' ``s`` in place."""
    st, _ = shard_stats(xp, x, a, widened)
    return with_row_sum(st, xp, s)
