"""The shared row statistics of the softmax family: max, argmax, the
exact shift, and ``s`` (the sum without the max term)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from softmaxkit.numerics.precision import _INF, compensated_sum, device, divide_pair, two_diff


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
    widened: bool


# Below this, a float64 row's s is summed again from scaled terms (_tiny_sum).
_TINY = 2.0**-1000


def _tiny_sum(xp, hi, lo, is_k, s):
    """``s`` of the rows whose other terms all lie below 2^-1000, summed again.

    There each term ``exp(z)`` may be a subnormal, rounded on its own to
    the subnormal spacing: a sum of them is off by up to half a spacing per
    term, many ULPs of a subnormal ``s`` and of ``-log1p(s)``, the
    log-probability at the maximum.  Here ``exp(z) = exp(z/2)^2`` is formed
    scaled by 2^512 and the sum rounded once.  Terms below 2^-2100 cannot
    reach its last place and are left out.  Branch-free: every row is
    recomputed and the rescued ones selected (float64 outputs only).
    """
    tiny = (s > 0) & (s < _TINY)
    take = tiny & ~is_k & (hi > -1500.0)
    h = xp.where(take, hi, xp.zeros_like(hi))
    u = xp.exp(0.5 * h) * 2.0**256
    terms = xp.where(take, u * u * (1.0 + xp.where(take, lo, xp.zeros_like(lo))), xp.zeros_like(h))
    return xp.where(tiny, compensated_sum(xp, terms, False) * 2.0**-512, s)


def _stand_ins(xp, x, a):
    """``(x, shift, masked_row, inf_row)`` with the stand-ins of the limits.

    ``a`` is the row maximum (axis kept).  A row holding ``+inf`` becomes 0 at
    the ``+inf`` entries and ``-inf`` elsewhere, so the mass is shared
    equally among them; a fully masked row becomes zeros (its flag says what
    it was).  Such rows are shifted by 0.
    """
    masked_row = a == -_INF
    inf_row = a == _INF
    zero = xp.zeros_like(x)
    x = xp.where(inf_row, xp.where(x == _INF, zero, xp.full_like(x, -_INF)), x)
    x = xp.where(masked_row, zero, x)
    shift = xp.where(masked_row | inf_row, xp.zeros_like(a), a)
    return x, shift, masked_row, inf_row


def _shifted(xp, x, shift, temperature: float, widened: bool):
    """``(hi, lo, e)``: ``z = (x - shift) / T`` as ``hi + lo`` (``lo`` None when
    ``widened``) and ``e = exp(z)``."""
    if widened:
        hi = x - shift
        if temperature != 1.0:
            hi = hi / temperature
        return hi, None, xp.exp(hi)
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
    return hi, lo, xp.exp(hi) * (1.0 + lo)


def _first_max(xp, x, eligible=None):
    """The first maximum of each row; only where ``eligible`` (axis kept), if given."""
    n = x.shape[-1]
    dev = device(x)
    if not n:
        return xp.zeros(x.shape, dtype=xp.bool, device=dev)
    k = xp.argmax(x, axis=-1, keepdims=True)
    is_k = xp.arange(n, dtype=k.dtype, device=dev) == k
    return is_k if eligible is None else is_k & eligible


def _rest_sum(xp, hi, lo, e, is_k, widened):
    """``s``: the sum of the terms other than ``is_k``, rescued where tiny (float64 only: no
    float32 sum reaches 2^-1000)."""
    s = compensated_sum(xp, xp.where(is_k, xp.zeros_like(e), e), widened)
    return s if widened or e.dtype != xp.float64 else _tiny_sum(xp, hi, lo, is_k, s)


def row_max(xp, x):
    """Each row's maximum, axis kept; ``-inf`` for rows of no entries."""
    dev = device(x)
    return xp.max(x, axis=-1, keepdims=True) if x.shape[-1] else xp.full(x.shape[:-1] + (1,), -_INF, dtype=x.dtype, device=dev)


def row_stats(xp, x, valid=None, temperature: float = 1.0, widened: bool = True) -> RowStats:
    """Shift, exponentiate and sum each row of ``x`` (working dtype).

    Entries where ``valid`` is False are treated as ``-inf``.  Rows that are
    fully masked (every entry ``-inf`` or invalid) and rows holding ``+inf``
    are replaced by stand-ins whose formulas give the limits (see
    :func:`_stand_ins`).  NaN propagates through the max.
    """
    # Allocations name the input's device: a GPU array must not meet a host one.
    if valid is not None:
        x = xp.where(valid, x, xp.asarray(-_INF, dtype=x.dtype, device=device(x)))
    a = row_max(xp, x)
    x, shift, masked_row, inf_row = _stand_ins(xp, x, a)
    hi, lo, e = _shifted(xp, x, shift, temperature, widened)
    is_k = _first_max(xp, x)
    s = _rest_sum(xp, hi, lo, e, is_k, widened)
    # The argmax term is left out of s, so a row whose only entry is NaN
    # would have s = 0 and lose its NaN in the argmax forms; NaN stays in
    # its row.
    s = xp.where(xp.isnan(a), a, s)
    return RowStats(hi, lo, e, is_k, s, xp.log1p(s), a, masked_row, inf_row, widened)


def shard_stats(xp, x, a, widened: bool = True) -> tuple[RowStats, Any]:
    """:func:`row_stats` of one slice of each row's classes, shifted by the
    whole row's maximum ``a`` (axis kept, from the other slices too).

    Returns the stats and ``holds`` (axis kept): whether this slice holds an
    entry equal to the row's maximum (after the stand-ins of
    :func:`_stand_ins`; never on a fully masked row).  Where it does, its
    first such entry is ``is_k`` and is left out of ``s``, which is then this
    slice's share of the row's ``s``; elsewhere ``s`` sums every term of the
    slice.  Summed over the slices, with one added per slice beyond the first
    that holds the maximum (:func:`untied`), these shares give the whole
    row's ``s``: the split leaves the ``log1p(s)`` form intact.  ``L`` here is
    the slice's; :func:`with_row_sum` puts in the row's.  A slice holding NaN
    has ``s`` NaN (whatever ``a`` is: see ``numerics.vocab_parallel.slice_max``).
    """
    nan = xp.isnan(row_max(xp, x))
    x, shift, masked_row, inf_row = _stand_ins(xp, x, a)
    hi, lo, e = _shifted(xp, x, shift, 1.0, widened)
    m = row_max(xp, x)
    holds = (m == shift) & ~masked_row & ~nan
    is_k = _first_max(xp, x, holds)
    s = _rest_sum(xp, hi, lo, e, is_k, widened)
    s = xp.where(nan, xp.full_like(s, xp.nan), s)
    return RowStats(hi, lo, e, is_k, s, xp.log1p(s), a, masked_row, inf_row, widened), holds


def untied(xp, s, holders):
    """The row's ``s`` from the sum of the slices' shares and the number of
    slices that left a maximum out: each beyond the first left out a term
    equal to 1."""
    return xp.where(holders > 1, s + (holders - 1), s)


def with_row_sum(st: RowStats, xp, s) -> RowStats:
    """``st`` with the whole row's ``s`` (and its ``log1p``) in place of the slice's."""
    return replace(st, s=s, L=xp.log1p(s))
