"""Triton kernels of the softmax family: softmax, log_softmax (with a
temperature) and logsumexp forward, and the VJPs.

One program reduces one row (see :mod:`.launch` for the geometry).  For a row
``x`` with maximum ``a`` at its first index ``k``, ``z = (x - a) / T`` as an
exact pair ``hi + lo`` and ``s = sum_{i != k} exp(z_i)`` (the compensated
pair of :func:`._math.block_sum`):

* softmax ``exp(z_i) / (1 + s)``;
* log_softmax ``(hi_i - log1p(s)) + lo_i``;
* logsumexp ``a + log1p(s)``;
* the softmax VJP from its output ``p``: ``p (g - <p, g>)``, 0 where ``p = 0``;
* the log_softmax VJP from its output ``y``: ``g - exp(y) sum g`` over the
  entries with ``y > -inf``, 0 elsewhere;
* the logsumexp VJP: ``softmax(x) g`` per row, 0 where the softmax is 0.

These are ``numerics.softmax`` and ``numerics.rows`` in float32 (see the
package docstring).  A row of at most one block is loaded once (``ONE_PASS``).
A wider row is read in blocks with the online rule: the running maximum ``m``
is kept out of the sum, which is held relative to a reference ``r <= m``
and rescaled only when ``m`` rises more than ``64 T`` above it (never on
most rows), so that rescaling roundings do not pile up; when a block brings
a new maximum, the old maximum's term ``exp((m - r) / T)`` joins the sum
(one rounding).  At the end ``s`` is the sum times ``exp((r - m) / T)``
(exactly 1 when ``r = m``), and a second pass writes the outputs.

Edge rows (README table): a fully masked row gives 0, ``-inf``, ``-inf``
and zero gradients; a row holding ``+inf`` shares the mass equally among its
``+inf`` entries (``s`` is their count less one) and has logsumexp ``+inf``;
a NaN makes its whole row NaN.  NaN and ``+inf`` are counted apart from the
finite entries, so that every comparison and reduction sees finite values or
``-inf`` only, on a GPU and in the interpreter alike.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from softmaxkit.kernels.triton import _math as m
from softmaxkit.kernels.triton import launch
from softmaxkit.kernels.triton.launch import helper

_SOFTMAX, _LOG_SOFTMAX, _LOGSUMEXP, _SCALED_SOFTMAX = 0, 1, 2, 3
# How far (in units of z) the running maximum may rise above the sum's
# reference before the sum is rescaled: terms stay below e**64, and a row of
# 2**31 of them below the largest float32.
_RESCALE_AT = 64.0


@helper
def _load(ptr, base, idx, n, inner, other):
    return m.load(ptr, base + idx.to(tl.int64) * inner, idx < n, other)


@helper
def _finite_part(xr):
    """``x`` with NaN and ``+inf`` as ``-inf``, the NaN count and the ``+inf`` mask."""
    is_nan = xr != xr
    is_inf = xr == float("inf")
    return tl.where(is_nan | is_inf, float("-inf"), xr), tl.sum(is_nan.to(tl.int32), 0), is_inf


@helper
def _empty_row():
    """The online state of a row before its first block, ``(mx, ref, s_hi, s_lo, n_inf, n_nan)``:
    no maximum and no reference (``-inf``), an empty sum, no ``+inf`` and no NaN."""
    return float("-inf"), float("-inf"), 0.0, 0.0, 0, 0


@helper
def _absorb(xr, lanes, mx, ref, s_hi, s_lo, n_inf, n_nan, t_hi, t_lo, rescale_at,
            B_LOG2: tl.constexpr, HALVE: tl.constexpr, TEMPERED: tl.constexpr):
    """The row state after one more block ``xr`` (online softmax, argmax term left out)."""
    xf, nans, is_inf = _finite_part(xr)
    n_nan = n_nan + nans
    n_inf = n_inf + tl.sum(is_inf.to(tl.int32), 0)
    mb = tl.max(xf, 0)
    kb = tl.argmax(xf, 0)
    m_new = tl.maximum(mx, mb)
    rising = (m_new - ref) > rescale_at
    new_ref = tl.where(rising, m_new, ref)
    fh, fl = m.shift(ref, new_ref, t_hi, t_lo, HALVE, TEMPERED)
    factor = tl.where(rising, m.exp(fh, fl), 1.0)
    s_hi, s_lo = m.scale_pair(s_hi, s_lo, factor)
    # This block's first maximum is left out when it is the row's new one;
    # the old maximum's term then joins the sum (0 when there was none).
    takes_max = mb > mx
    oh, ol = m.shift(mx, new_ref, t_hi, t_lo, HALVE, TEMPERED)
    old = tl.where(takes_max & (mx > float("-inf")), m.exp(oh, ol), 0.0)
    zh, zl = m.shift(xf, new_ref, t_hi, t_lo, HALVE, TEMPERED)
    terms = tl.where(xf == float("-inf"), 0.0, m.exp(zh, zl))
    # (a lane index of -1 matches none; the interpreter cannot combine a
    # scalar and a block with & or |)
    terms = tl.where(lanes == tl.where(takes_max, kb, -1), 0.0, terms)
    b_hi, b_lo = m.block_sum(terms, B_LOG2)
    s_hi, s_lo = m.add_pair(s_hi, s_lo, old, 0.0)
    s_hi, s_lo = m.add_pair(s_hi, s_lo, b_hi, b_lo)
    return m_new, new_ref, s_hi, s_lo, n_inf, n_nan


@helper
def _finish(mx, ref, s_hi, s_lo, n_inf, t_hi, t_lo, HALVE: tl.constexpr, TEMPERED: tl.constexpr):
    """``(s_hi, s_lo, log1p(s))`` of the row: the sum moved from the reference to the maximum,
    ``n_inf - 1`` for a row holding ``+inf``, 0 for a fully masked row."""
    ch, cl = m.shift(ref, mx, t_hi, t_lo, HALVE, TEMPERED)
    s_hi, s_lo = m.scale_pair(s_hi, s_lo, m.exp(ch, cl))
    has_inf = n_inf > 0
    live = mx > float("-inf")
    s_hi = tl.where(has_inf, (n_inf - 1).to(tl.float32), tl.where(live, s_hi, 0.0))
    s_lo = tl.where(has_inf | ~live, 0.0, s_lo)
    return s_hi, s_lo, m.log1p(s_hi, s_lo)


@helper
def _outputs(xr, mx, s_hi, s_lo, big_l, n_inf, n_nan, g, t_hi, t_lo,
             MODE: tl.constexpr, HALVE: tl.constexpr, TEMPERED: tl.constexpr):
    """One block of softmax, log_softmax or the cotangent-scaled softmax from the row's statistics."""
    xf, _, is_inf = _finite_part(xr)
    zh, zl = m.shift(xf, mx, t_hi, t_lo, HALVE, TEMPERED)
    has_inf = n_inf > 0
    zh = tl.where(has_inf, tl.where(is_inf, 0.0, float("-inf")), zh)
    zl = tl.where(zh == float("-inf"), 0.0, tl.where(has_inf, 0.0, zl))
    masked = (mx == float("-inf")) & ~has_inf
    if MODE == 1:
        out = tl.where(masked, float("-inf"), (zh - big_l) + zl)
    else:
        d_hi, d_lo = m.two_sum(1.0, s_hi)
        d_lo = d_lo + s_lo
        p = tl.math.div_rn(m.exp(zh, zl), d_hi)
        p = p - p * tl.math.div_rn(d_lo, d_hi)
        out = tl.where(masked, 0.0, p)
        if MODE == 3:
            out = tl.where(out == 0.0, out, g * out)
    return tl.where(n_nan > 0, float("nan"), out)


@triton.jit
def _softmax_kernel(x_ptr, out_ptr, g_ptr, t_hi, t_lo, rescale_at, n, inner,
                    BLOCK: tl.constexpr, ONE_PASS: tl.constexpr, MODE: tl.constexpr,
                    B_LOG2: tl.constexpr, HALVE: tl.constexpr, TEMPERED: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = (row // inner) * n * inner + row % inner
    lanes = tl.arange(0, BLOCK)
    mx, ref, s_hi, s_lo, n_inf, n_nan = _empty_row()
    if ONE_PASS:
        xr = _load(x_ptr, base, lanes, n, inner, float("-inf"))
        mx, ref, s_hi, s_lo, n_inf, n_nan = _absorb(xr, lanes, mx, ref, s_hi, s_lo, n_inf, n_nan, t_hi, t_lo,
                                                    rescale_at, B_LOG2, HALVE, TEMPERED)
    else:
        for start in range(0, n, BLOCK):
            xr = _load(x_ptr, base, start + lanes, n, inner, float("-inf"))
            mx, ref, s_hi, s_lo, n_inf, n_nan = _absorb(xr, lanes, mx, ref, s_hi, s_lo, n_inf, n_nan, t_hi, t_lo,
                                                        rescale_at, B_LOG2, HALVE, TEMPERED)
    s_hi, s_lo, big_l = _finish(mx, ref, s_hi, s_lo, n_inf, t_hi, t_lo, HALVE, TEMPERED)
    if MODE == 2:
        lse = tl.where(n_inf > 0, float("inf"), mx + big_l)
        lse = tl.where(n_nan > 0, float("nan"), lse)
        m.store(out_ptr, row, lse, True)
    else:
        g = 0.0
        if MODE == 3:
            g = m.load(g_ptr, row, True, 0.0)
        if ONE_PASS:
            out = _outputs(xr, mx, s_hi, s_lo, big_l, n_inf, n_nan, g, t_hi, t_lo, MODE, HALVE, TEMPERED)
            m.store(out_ptr, base + lanes.to(tl.int64) * inner, out, lanes < n)
        else:
            for start in range(0, n, BLOCK):
                idx = start + lanes
                xr = _load(x_ptr, base, idx, n, inner, float("-inf"))
                out = _outputs(xr, mx, s_hi, s_lo, big_l, n_inf, n_nan, g, t_hi, t_lo, MODE, HALVE, TEMPERED)
                m.store(out_ptr, base + idx.to(tl.int64) * inner, out, idx < n)


@helper
def _vjp_terms(y, g, LOG: tl.constexpr, B_LOG2: tl.constexpr):
    """The block's share of ``sum g`` (log_softmax, live entries) or ``<p, g>`` (softmax, ``p > 0``) as a pair."""
    if LOG:
        return m.block_sum(tl.where(y == float("-inf"), 0.0, g), B_LOG2)
    pg = y * g
    hi, lo = m.block_sum(tl.where(y == 0.0, 0.0, pg), B_LOG2)
    err = tl.where((y == 0.0) | ~(tl.abs(pg) < float("inf")), 0.0, tl.fma(y, g, -pg))
    return hi, lo + tl.sum(err, 0)


@helper
def _vjp_outputs(y, g, dot, t, LOG: tl.constexpr, TEMPERED: tl.constexpr):
    if LOG:
        out = tl.where(y == float("-inf"), 0.0, g - m.exp(y, 0.0) * dot)
    else:
        out = tl.where(y == 0.0, 0.0, y * (g - dot))
    if TEMPERED:
        out = tl.math.div_rn(out, t)
    return out


@triton.jit
def _softmax_vjp_kernel(y_ptr, g_ptr, out_ptr, t, n, inner,
                        BLOCK: tl.constexpr, ONE_PASS: tl.constexpr, LOG: tl.constexpr,
                        B_LOG2: tl.constexpr, TEMPERED: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = (row // inner) * n * inner + row % inner
    lanes = tl.arange(0, BLOCK)
    absent = float("-inf") if LOG else 0.0
    if ONE_PASS:
        y = _load(y_ptr, base, lanes, n, inner, absent)
        g = _load(g_ptr, base, lanes, n, inner, 0.0)
        d_hi, d_lo = _vjp_terms(y, g, LOG, B_LOG2)
        out = _vjp_outputs(y, g, d_hi + d_lo, t, LOG, TEMPERED)
        m.store(out_ptr, base + lanes.to(tl.int64) * inner, out, lanes < n)
    else:
        d_hi = 0.0
        d_lo = 0.0
        for start in range(0, n, BLOCK):
            y = _load(y_ptr, base, start + lanes, n, inner, absent)
            g = _load(g_ptr, base, start + lanes, n, inner, 0.0)
            b_hi, b_lo = _vjp_terms(y, g, LOG, B_LOG2)
            d_hi, d_lo = m.add_pair(d_hi, d_lo, b_hi, b_lo)
        dot = d_hi + d_lo
        for start in range(0, n, BLOCK):
            idx = start + lanes
            y = _load(y_ptr, base, idx, n, inner, absent)
            g = _load(g_ptr, base, idx, n, inner, 0.0)
            out = _vjp_outputs(y, g, dot, t, LOG, TEMPERED)
            m.store(out_ptr, base + idx.to(tl.int64) * inner, out, idx < n)


# --- launches -------------------------------------------------------------------


def _temperature(temperature: float) -> dict:
    """The kernels' temperature arguments: ``T`` (halved above 1) as a float32
    and its rounding error, and the rescaling threshold in units of ``x``."""
    halve = temperature > 1.0
    t = temperature * 0.5 if halve else temperature
    t_hi = float(np.float32(t))
    return {
        "t_hi": t_hi,
        "t_lo": t - t_hi,
        "rescale_at": min(_RESCALE_AT * temperature, 3.0e38),
        "HALVE": halve,
        "TEMPERED": temperature != 1.0,
    }


def _run_softmax(x: torch.Tensor, dim: int, mode: int, temperature: float, g: torch.Tensor | None = None):
    order, axis, (c,), rows = launch.prepare(dim, x)
    reduced = mode == _LOGSUMEXP
    out = torch.empty(c.shape[:axis] + c.shape[axis + 1 :] if reduced else c.shape, dtype=x.dtype, device=x.device)
    if rows.n == 0:
        return out.fill_(-float("inf")) if reduced else out, order, axis
    if g is not None:
        g = g.permute([d - (d > dim) for d in order if d != dim]).contiguous()
    t = _temperature(temperature)
    launch.launch(
        _softmax_kernel, rows, c, out, out if g is None else g, t.pop("t_hi"), t.pop("t_lo"), t.pop("rescale_at"),
        MODE=mode, B_LOG2=rows.block.bit_length() - 1, **t,
    )
    return out, order, axis


def softmax(x: torch.Tensor, dim: int, temperature: float = 1.0, log: bool = False) -> torch.Tensor:
    """softmax (or log_softmax) of ``x / temperature`` along ``dim``, in ``x``'s dtype.

    ``softmax_i = exp(z_i) / (1 + s)`` and ``log_softmax_i = z_i - log1p(s)``
    with ``z = (x - max) / T`` exact and ``s`` the compensated sum of the
    other terms (module docstring); float32 within 6 ULP, float16 and
    bfloat16 within 2 ULP; masked rows 0 (``-inf``), ``+inf`` entries share
    the mass, NaN stays in its row.

    Example
    -------
    >>> import torch, softmaxkit.kernels.triton as kt
    >>> from softmaxkit.kernels.triton import softmax as ks
    >>> x = torch.tensor([[0.0, -100.0]])
    >>> bool(ks.softmax(x, 1, log=True)[0, 0] == -torch.exp(torch.tensor(-100.0))) if kt.on_cpu else True
    True
    """
    out, order, _ = _run_softmax(x, dim, _LOG_SOFTMAX if log else _SOFTMAX, temperature)
    return launch.restore(out, order)


def logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``log sum_i exp(x_i) = max + log1p(s)`` along ``dim`` (removed), in ``x``'s dtype.

    Fully masked rows and empty rows give ``-inf``, rows holding ``+inf``
    give ``+inf``, NaN gives NaN; float32 within 6 ULP.

    Example
    -------
    >>> import torch, softmaxkit.kernels.triton as kt
    >>> from softmaxkit.kernels.triton import softmax as ks
    >>> x = torch.tensor([[0.0, float("-inf")]])
    >>> ks.logsumexp(x, 1).tolist() if kt.on_cpu else [0.0]
    [0.0]
    """
    out, order, _ = _run_softmax(x, dim, _LOGSUMEXP, 1.0)
    return launch.restore(out, [d - (d > dim) for d in order if d != dim])


def logsumexp_vjp(x: torch.Tensor, grad: torch.Tensor, dim: int) -> torch.Tensor:
    """``softmax(x) * grad`` along ``dim`` (``grad`` of ``x``'s shape without
    ``dim``), 0 where the softmax is 0 whatever ``grad`` is; rounded once.

    Example
    -------
    >>> import torch, softmaxkit.kernels.triton as kt
    >>> from softmaxkit.kernels.triton import softmax as ks
    >>> x = torch.tensor([[0.0, float("-inf")]])
    >>> ks.logsumexp_vjp(x, torch.tensor([float("inf")]), 1).tolist() if kt.on_cpu else [[float("inf"), 0.0]]
    [[inf, 0.0]]
    """
    out, order, _ = _run_softmax(x, dim, _SCALED_SOFTMAX, 1.0, grad)
    return launch.restore(out, order)


def softmax_vjp(y: torch.Tensor, grad: torch.Tensor, dim: int, temperature: float = 1.0, log: bool = False) -> torch.Tensor:
    """The VJP of :func:`softmax` from its output ``y``, divided by the temperature.

    softmax: ``p (g - <p, g>)``, 0 where ``p = 0``; log_softmax:
    ``g - exp(y) sum g`` over the entries with ``y > -inf``, 0 elsewhere (a
    fully masked row gives zeros).  The sums are compensated; the result is
    in ``y``'s dtype.

    Example
    -------
    >>> import torch, softmaxkit.kernels.triton as kt
    >>> from softmaxkit.kernels.triton import softmax as ks
    >>> y = torch.tensor([[float("-inf"), float("-inf")]])
    >>> ks.softmax_vjp(y, torch.ones(1, 2), 1, log=True).tolist() if kt.on_cpu else [[0.0, 0.0]]
    [[0.0, 0.0]]
    """
    order, _, (c, g), rows = launch.prepare(dim, y, grad)
    out = torch.empty_like(c)
    launch.launch(
        _softmax_vjp_kernel, rows, c, g, out, float(np.float32(temperature)),
        LOG=log, B_LOG2=rows.block.bit_length() - 1, TEMPERED=temperature != 1.0,
    )
    return launch.restore(out, order)
