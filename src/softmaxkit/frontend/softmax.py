"""softmax, log_softmax, logsumexp, entropy, kl_div and their VJPs.

Public functions validate once, move the reduced axis to the end, convert to
the working dtype, call the shared formulas in ``softmaxkit.numerics`` and round once to
the output dtype.  Every function here on real input (and the losses in
``frontend.losses``) does the last three steps a chunk of whole rows at a time (see
``layout.chunk_rows``), so its peak memory is the output plus a few
chunks, whatever the input's size; complex logsumexp is done whole.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat
import numpy as np

from softmaxkit.frontend import registry
from softmaxkit import numerics as num
from softmaxkit.frontend import validate
from softmaxkit.frontend.layout import Layout, put


def _prepare(x: Any, axis: Any, where: Any = None, name: str = "x", allow_many: bool = True):
    xp, x, out_dtype = validate.real_array(x, name)
    axes = validate.axis(axis, x.ndim, allow_many=allow_many)
    valid = validate.where_mask(xp, where, tuple(x.shape))
    work, widened = num.working_dtype(xp, out_dtype, x)
    layout = Layout(xp, tuple(x.shape), axes)
    xw = layout.forward(xp.astype(x, work))
    valid = None if valid is None else layout.forward(valid)
    return xp, layout, xw, valid, out_dtype, widened


def _prepare_rows(x: Any, axis: Any, where: Any = None, name: str = "x", allow_many: bool = True):
    """``_prepare`` for the functions that go through the rows in chunks.

    Nothing is converted here: the input comes back as ``(rows, n)`` in its
    own dtype (a view where the layout allows one), with the ``where`` mask
    likewise, and each chunk is converted by :func:`_working`.  Returns
    ``(xp, layout, rows, valid_rows, out_dtype, work, widened)``.
    """
    xp, x, out_dtype = validate.real_array(x, name)
    axes = validate.axis(axis, x.ndim, allow_many=allow_many)
    valid = validate.where_mask(xp, where, tuple(x.shape))
    work, widened = num.working_dtype(xp, out_dtype, x)
    layout = Layout(xp, tuple(x.shape), axes)
    valid = None if valid is None else layout.rows(valid)
    return xp, layout, layout.rows(x), valid, out_dtype, work, widened


def _working(xp: Any, rows: Any, part: slice, work: Any) -> Any:
    """Rows ``part`` of a ``(rows, n)`` array, in the working dtype and row order.

    A strided chunk (a column axis, a transposed input) is first copied flat
    in row order, so that every sum along a row meets the same memory order
    whatever the chunk's size: chunking never changes a bit.
    """
    chunk = rows[part, :]
    return xp.reshape(xp.astype(xp.reshape(chunk, (-1,)), work), tuple(chunk.shape))


def _itemsize(xp: Any, dtype: Any) -> int:
    return xp.finfo(dtype).bits // 8


@validate.quiet
def softmax(x: Any, axis: Any = -1, *, temperature: float = 1.0, where: Any = None) -> Any:
    r"""Softmax: probabilities from logits, exact and NaN-free.

    .. math:: \mathrm{softmax}(x)_i = \frac{e^{x_i/T}}{\sum_j e^{x_j/T}}
              = \frac{e^{z_i}}{1 + s},\quad z_i = \frac{x_i - a}{T},\;
              s = \sum_{i \ne k} e^{z_i}

    with ``a = x_k`` the row maximum.

    Parameters
    ----------
    x : array_like or array-API array
        Logits.  Integer input is promoted to float64.
    axis : int, tuple of ints or None, default -1
        Axis (or axes) that each distribution runs along; None means all.
    temperature : float, default 1.0
        ``T > 0``, finite.  ``softmax(x, temperature=T)`` equals
        ``softmax(x / T)``; apply it to logits, never to probabilities.
    where : bool array, optional
        Broadcastable to ``x``; False entries take no part (as if ``-inf``)
        and get probability 0.  A ``numpy.ma.MaskedArray`` ``x`` adds its
        mask: masked entries are treated as False here.

    Returns
    -------
    array of ``x``'s shape and floating dtype, of the same array kind.

    Notes
    -----
    Shift by the max with the max term left out of the sum, and divide
    (Blanchard, Higham & Higham 2021).  Accuracy: within 2 ULP for float16,
    bfloat16 and float32 (computed in float64, rounded once) and 4 ULP for
    float64 (exact shift, compensated sum), at any margin and width, down into
    the subnormal range, for any finite temperature.  On an array-API device
    without float64, float32 is computed in compensated float32: 6 ULP.
    Away from the native kernels the rows are computed a chunk at a time:
    peak memory is the output plus a few tens of MiB.

    Edge behaviour: a fully masked row (all ``-inf`` or ``where=False``)
    gives 0 everywhere; a row with ``+inf`` entries shares its mass equally
    among them; a NaN makes its own row NaN; an empty axis gives an empty
    array.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> smk.softmax(np.array([1000.0, 0.0]))
    array([1., 0.])
    >>> smk.softmax(np.array([[-np.inf, -np.inf], [np.inf, 1.0]]))
    array([[0., 0.],
           [1., 0.]])
    """
    return _softmax_family(x, axis, temperature, where, log=False)


@validate.quiet
def log_softmax(x: Any, axis: Any = -1, *, temperature: float = 1.0, where: Any = None) -> Any:
    r"""Log-softmax: log-probabilities from logits, exact at any margin.

    .. math:: \log\mathrm{softmax}(x)_i = z_i - \operatorname{log1p}(s)

    (notation as in :func:`softmax`).  Both terms are ``<= 0``, so nothing
    cancels, and at the argmax the value is ``-log1p(s)``: exact even when
    the probability rounds to 1, where ``x - logsumexp(x)`` returns 0.

    Parameters
    ----------
    x, axis, temperature, where
        As in :func:`softmax`.

    Returns
    -------
    array of ``x``'s shape and floating dtype.

    Notes
    -----
    Accuracy: 2 ULP (float16, bfloat16, float32), 4 ULP (float64).  Fully
    masked rows and ``where=False`` entries give ``-inf``; a row with ``+inf``
    gives ``-log(count)`` at its ``+inf`` entries and ``-inf`` elsewhere.

    Examples
    --------
    The naive ``x - logsumexp(x)`` gives 0 at the argmax of a confident
    float32 row; the true value is about ``-2.06e-9``:

    >>> import numpy as np, softmaxkit as smk
    >>> x = np.array([20.0, 0.0], dtype=np.float32)
    >>> smk.log_softmax(x)[0]
    np.float32(-2.0611537e-09)
    """
    return _softmax_family(x, axis, temperature, where, log=True)


def _softmax_family(x: Any, axis: Any, temperature: Any, where: Any, log: bool) -> Any:
    backend = registry.backend_for(x)
    if backend is not None:
        entry = backend.log_softmax if log else backend.softmax
        return entry(x, axis, temperature=temperature, where=where)
    T = validate.temperature(temperature)
    x, where = validate.unmask(x, where)
    native = registry.native()
    if native is not None and where is None and native.numpy.eligible(x, axis):
        return (native.numpy.log_softmax if log else native.numpy.softmax)(x, T, validate.axis(axis, x.ndim)[0])
    xp, layout, rows, valid, out_dtype, work, widened = _prepare_rows(x, axis, where)
    # Like the input's memory layout, so that back_rows is a view.
    out = xp.empty_like(rows)
    for part in layout.chunks(_itemsize(xp, work)):
        valid_part = None if valid is None else valid[part, :]
        st = num.row_stats(xp, _working(xp, rows, part, work), valid_part, T, widened)
        if log:
            y = num.log_softmax(xp, st)
            if valid_part is not None:
                y = xp.where(valid_part, y, xp.full_like(y, -float("inf")))
        else:
            y = num.softmax(xp, st)
        out[part, :] = xp.astype(y, out_dtype)
    return layout.back_rows(out)


@validate.quiet
def logsumexp(
    x: Any,
    axis: Any = -1,
    *,
    b: Any = None,
    keepdims: bool = False,
    return_sign: bool = False,
    where: Any = None,
) -> Any:
    r"""Log of the sum of exponentials, as in ``scipy.special.logsumexp``.

    .. math:: \operatorname{lse}(x) = \log\sum_i b_i e^{x_i} = a + \operatorname{log1p}(s)

    Parameters
    ----------
    x : array_like or array-API array
        Input, real or complex.  Integer input is promoted to float64; a
        scalar is a sum of one term.  A ``numpy.ma.MaskedArray``'s masked
        entries take no part (as with ``where=False``).
    axis : int, tuple of ints or None, default -1
        Axes to reduce; None reduces all (SciPy's default).
    b : array_like, optional
        Weights, real or complex, broadcast together with ``x`` (either may
        be the larger); may be negative.  Entries with ``b == 0`` are
        ignored, even where ``x`` is inf or NaN.
    keepdims : bool, default False
        Keep the reduced axes with size 1.
    return_sign : bool, default False
        Return ``(log|sum|, sign)``; the sign is +1, -1, or 0 for a zero sum,
        and for complex input the unit complex number ``sum / |sum|``.
        Without it a negative real sum gives NaN.
    where : bool array, optional
        Broadcastable to ``x``; only True entries are summed.  With a masked
        array, only entries that are True here and not masked.

    Returns
    -------
    array, or ``(array, sign array)`` with ``return_sign``; a NumPy scalar
    instead of a 0-d NumPy array, as SciPy returns.  Complex input gives a
    complex result whose imaginary part (the phase of the sum) lies in
    ``(-pi, pi]``; with ``return_sign`` the first result is real.

    Notes
    -----
    Algorithm 4.1 of Blanchard, Higham & Higham (2021).  With weights, the
    shifted sum ``S = sum b_i e^{x_i - a}`` is kept in nearly twice the
    working precision and its log taken as ``log1p(S - 1)`` near 1.
    Accuracy: 2 ULP (float16, bfloat16, float32) and 4 ULP (float64), except
    that a float64 result near 0 through cancellation may be off by 4 ULP of
    ``max|x|``.  With weights ``b >= 0`` in float64 the bound is 4 ULP of
    ``max(|lse|, max|x|, 1)``: the rounding of each ``e^{x_i - a}`` is
    weighted by ``b_i``.  Mixed-sign weights are as accurate as the
    cancellation in the sum allows.  Real input away from the native kernels
    is reduced a chunk of rows at a time: peak memory is the result plus a
    few tens of MiB (and one copy of ``x`` where the reduced axes are not
    contiguous, or of ``b`` where its broadcast needs one).

    Complex input is shifted by the term of largest real part, ``k``, and
    the rest summed as ``q`` relative to it: the result is
    ``a + log b_k + i Im x_k + log(1 + q)``, with ``Re log(1 + q)`` taken as
    ``log1p(2 Re q + |q|^2) / 2`` near ``|1 + q| = 1``.  complex64 is
    computed in complex128 and rounded once (in compensated complex64 on an
    array-API device without float64: within 6 ULP of the scale below).  Each part of the result is
    within 2 ULP (complex64) or 4 ULP (complex128) of
    ``max(|part|, kappa (1 + max|Im x|))``, where
    ``kappa = sum|b_i e^{x_i}| / |sum b_i e^{x_i}|`` measures the
    cancellation in the sum (1 without it).

    Edge behaviour: a fully masked row or an empty axis gives ``-inf`` (sign
    0); ``+inf`` gives ``+inf``; NaN gives NaN.  Complex rows with an
    infinite real part, or none left, follow C99 complex arithmetic in
    ``log(sum(b * exp(x)))``, as SciPy does.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> float(smk.logsumexp(np.array([1000.0, 1000.0])))
    1000.6931471805599
    >>> smk.logsumexp(np.array([1.0, 2.0]), b=np.array([1.0, -1.0]), return_sign=True)
    (np.float64(1.5413248546129181), np.float64(-1.0))
    >>> smk.logsumexp(np.array([0.0, 1j * np.pi / 2]))  # log(1 + i), the phase pi/4
    np.complex128(0.3465735902799727+0.7853981633974483j)
    """
    backend = registry.backend_for(x)
    if backend is not None and b is None and return_sign is False:
        return backend.logsumexp(x, axis, keepdims=keepdims, where=where)
    keepdims = validate.flag(keepdims, "keepdims")
    return_sign = validate.flag(return_sign, "return_sign")
    x, where = validate.unmask(x, where)
    native = registry.native()
    if native is not None and b is None and where is None and native.numpy.eligible(x, axis):
        return _numpy_scalars(native.numpy.logsumexp(x, keepdims, return_sign, validate.axis(axis, x.ndim)[0]))
    xp, arr, out_dtype = validate.number_array(x, "x")
    if arr.ndim == 0:
        # As in SciPy, a scalar is a sum of one term.
        arr = xp.reshape(arr, (1,))
    if b is not None:
        b = validate.same_namespace(xp, b, "b")
        _, b, b_dtype = validate.number_array(b, "b")
        out_dtype = xp.result_type(out_dtype, b_dtype)
        # b and x broadcast against each other, either one growing, as in SciPy.
        shape = validate.broadcast_shapes(tuple(b.shape), tuple(arr.shape), "b", "x")
        # copy=False: a broadcast view, not a copy, where the dtype already fits.
        arr = xp.broadcast_to(xp.astype(arr, out_dtype, copy=False), shape)
        b = xp.broadcast_to(xp.astype(b, out_dtype, copy=False), shape)
    if validate.is_complex(xp, out_dtype):
        return _numpy_scalars(_logsumexp_complex(xp, arr, b, axis, where, keepdims, return_sign, out_dtype))
    xp, layout, rows, valid, out_dtype, work, widened = _prepare_rows(arr, axis, where)
    b_rows = None if b is None else layout.rows(b)
    device = array_api_compat.device(rows)
    out = xp.empty((layout.n_rows, 1), dtype=out_dtype, device=device)
    sign = xp.empty((layout.n_rows, 1), dtype=out_dtype, device=device) if return_sign else None
    for part in layout.chunks(_itemsize(xp, work)):
        xw = _working(xp, rows, part, work)
        valid_part = None if valid is None else valid[part, :]
        if b_rows is None:
            st = num.row_stats(xp, xw, valid_part, 1.0, widened)
            lse = num.logsumexp(xp, st)
            if return_sign:
                zero_or_one = xp.where(st.masked_row, xp.zeros_like(lse), xp.ones_like(lse))
                sign = put(sign, (part, slice(None)), xp.astype(xp.where(xp.isnan(lse), lse, zero_or_one), out_dtype))
        else:
            bw = _working(xp, b_rows, part, work)
            nonzero = bw != 0
            st = num.row_stats(xp, xw, nonzero if valid_part is None else (valid_part & nonzero), 1.0, widened)
            lse, lse_sign = num.logsumexp_weighted(xp, st, bw)
            if return_sign:
                sign = put(sign, (part, slice(None)), xp.astype(lse_sign, out_dtype))
            else:
                lse = xp.where(lse_sign < 0, xp.full_like(lse, float("nan")), lse)
        out = put(out, (part, slice(None)), xp.astype(lse, out_dtype))
    out = layout.back_reduced(out, keepdims)
    if return_sign:
        return _numpy_scalars((out, layout.back_reduced(sign, keepdims)))
    return _numpy_scalars(out)


def _numpy_scalars(result: Any) -> Any:
    """0-d NumPy results as NumPy scalars, as ``scipy.special.logsumexp`` returns them."""
    if isinstance(result, tuple):
        return tuple(_numpy_scalars(r) for r in result)
    return result[()] if type(result) is np.ndarray and result.ndim == 0 else result


def _wrap_phase(xp: Any, t: Any) -> Any:
    """An angle in radians moved into (-pi, pi]; angles already inside keep every bit."""
    wrapped = -((math.pi - t) % (2 * math.pi) - math.pi)
    return xp.where(xp.abs(t) < math.pi, t, wrapped)


def _logsumexp_complex(xp, arr, b, axis, where, keepdims, return_sign, out_dtype):
    r"""``log(sum_i b_i e^{x_i})`` for complex ``x`` or ``b``, SciPy's definition.

    With ``k`` the term of largest real part ``a = Re x_k`` and
    ``q = sum_{i != k} (b_i / b_k) e^{x_i - a - i Im x_k}``, the result is
    ``a + log b_k + i Im x_k + log(1 + q)``, its imaginary part moved into
    (-pi, pi].  ``Re log(1 + q)`` is ``log1p(2 Re q + |q|^2) / 2`` (the
    squares as exact products, summed with compensation) where ``|1 + q|``
    is near 1, so a small ``q`` keeps its relative accuracy.  Rows this cannot represent (an infinite
    real part, no term left, NaN) take the direct ``log(sum_i b_i e^{x_i})``,
    whose infinities and phases follow C99 as in SciPy.  With
    ``return_sign`` the result is the real ``log|sum|`` and the sign the
    unit complex number ``sum / |sum|``.
    """
    axes = validate.axis(axis, arr.ndim, allow_many=True)
    shape = tuple(arr.shape)
    valid = validate.where_mask(xp, where, shape)
    layout = Layout(xp, shape, axes)
    real_dtype = xp.float32 if out_dtype == xp.complex64 else xp.float64
    work, widened = num.working_dtype(xp, real_dtype, arr)
    cwork = xp.complex128 if work == xp.float64 else xp.complex64
    z = layout.forward(xp.astype(arr, cwork))
    c = xp.ones_like(z) if b is None else layout.forward(xp.astype(b, cwork))
    used = c != 0
    if valid is not None:
        used = used & layout.forward(valid)
    zero = xp.zeros_like(z)
    # Without weights, exp(z) alone: (1 + 0j) * (inf + 0j) would be inf + nan j.
    terms = xp.exp(z) if b is None else c * xp.exp(z)
    total = xp.sum(xp.where(used, terms, zero), axis=-1, keepdims=True)
    re, im = xp.real(z), xp.imag(z)
    st = num.row_stats(xp, re, used, 1.0, widened)
    im_k = xp.sum(xp.where(st.is_k, im, xp.zeros_like(im)), axis=-1, keepdims=True)
    c_k = xp.sum(xp.where(st.is_k, c, zero), axis=-1, keepdims=True)
    turn = im - im_k
    terms = xp.where(st.is_k | (st.e == 0), zero, c * xp.astype(st.e, cwork) * (xp.astype(xp.cos(turn), cwork) + 1j * xp.astype(xp.sin(turn), cwork)))
    # A masked row has no b_k: any nonzero stand-in keeps q finite (the row takes the direct value).
    q = (num.compensated_sum(xp, xp.real(terms), widened) + 1j * num.compensated_sum(xp, xp.imag(terms), widened)) / xp.where(c_k == 0, xp.ones_like(c_k), c_k)
    u, w = xp.real(q), xp.imag(q)
    if widened:
        m2 = 2 * u + u * u + w * w
    else:
        uu, uu_err = num.two_prod(xp, u, u)
        ww, ww_err = num.two_prod(xp, w, w)
        m2 = num.compensated_sum(xp, xp.concat([2 * u, uu, ww, uu_err, ww_err], axis=-1), widened)
    near_one = (m2 > -0.75) & (m2 < 3.0)
    log_mod = xp.where(near_one, 0.5 * xp.log1p(m2), xp.log(xp.hypot(1.0 + u, w)))
    c_k_abs = xp.abs(c_k)
    real = st.a + (xp.log(xp.where(c_k_abs == 0, xp.ones_like(c_k_abs), c_k_abs)) + log_mod)
    phase = _wrap_phase(xp, im_k + (xp.atan2(xp.imag(c_k), xp.real(c_k)) + xp.atan2(w, 1.0 + u)))
    exact = xp.isfinite(real) & xp.isfinite(phase) & ~st.masked_row & ~st.inf_row
    if return_sign:
        out = xp.where(exact, real, xp.log(xp.abs(total)))
        sign = xp.where(exact, xp.cos(phase) + 1j * xp.sin(phase), xp.sign(total))
        return (layout.back_reduced(xp.astype(out, real_dtype), keepdims), layout.back_reduced(xp.astype(sign, out_dtype), keepdims))
    direct = xp.log(total)
    direct = xp.real(direct) + 1j * _wrap_phase(xp, xp.imag(direct))
    out = xp.where(exact, real + 1j * phase, direct)
    return layout.back_reduced(xp.astype(out, out_dtype), keepdims)


@validate.quiet
def entropy(logits: Any, axis: int = -1) -> Any:
    r"""Shannon entropy (nats) of ``softmax(logits)`` along ``axis``.

    .. math:: H = -\sum_j p_j \log p_j = \sum_j p_j\,((a - x_j) + \operatorname{log1p}(s))

    A sum of non-negative terms; classes with ``p_j = 0`` (``-inf`` logits)
    contribute 0.

    Parameters
    ----------
    logits : array_like or array-API array
    axis : int, default -1

    Returns
    -------
    array with ``axis`` removed.

    Notes
    -----
    Accuracy: 2 ULP (float16, bfloat16, float32), 4 ULP (float64).  A
    float64 entropy below the smallest normal number (a row so confident that
    every other probability is subnormal) is within ``4 * max_j(-log p_j)``
    subnormal spacings.  Away from the native kernels the rows are computed
    a chunk at a time: peak memory is the result plus a few tens of MiB.
    A fully masked row has entropy 0; a row with ``c`` entries at ``+inf`` has
    ``log c``; NaN gives NaN.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> float(smk.entropy(np.zeros(4)))  # log 4
    1.3862943611198906
    """
    xp, layout, rows, _, out_dtype, work, widened = _prepare_rows(logits, axis, name="logits", allow_many=False)
    out = xp.empty((layout.n_rows,), dtype=out_dtype, device=array_api_compat.device(rows))
    for part in layout.chunks(_itemsize(xp, work)):
        st = num.row_stats(xp, _working(xp, rows, part, work), None, 1.0, widened)
        out = put(out, part, xp.astype(num.entropy(xp, st), out_dtype))
    return xp.reshape(out, layout.rest_shape)


@validate.quiet
def kl_div(p: Any, q: Any, axis: int = -1, *, log_probs: bool = False) -> Any:
    r"""Kullback-Leibler divergence ``KL(P || Q)`` between two rows of logits.

    .. math:: \mathrm{KL}(P\,\|\,Q) = \sum_j P_j (\log P_j - \log Q_j),
              \quad P = \mathrm{softmax}(p),\; Q = \mathrm{softmax}(q)

    Parameters
    ----------
    p, q : array_like or array-API arrays of the same shape
        Logits (or, with ``log_probs=True``, log-probabilities) of the two
        distributions.
    axis : int, default -1
        The class axis.
    log_probs : bool, default False
        Take ``p`` and ``q`` as normalised log-probabilities (such as
        :func:`log_softmax` output) instead of logits.

    Returns
    -------
    array with ``axis`` removed: one divergence per row.

    Notes
    -----
    Both log-probabilities come from :func:`log_softmax`, so confident rows
    keep their accuracy; the terms are summed with compensation.  The
    divergence of two nearly equal distributions is a difference of nearly
    equal numbers: its absolute error is a few ULP of ``sum_j P_j |log P_j|``.
    Classes where ``P_j = 0`` (a ``-inf`` logit) contribute 0, also where
    ``Q_j = 0``; a class with ``P_j > 0 = Q_j`` gives ``+inf``, even when
    ``P_j`` is too small to represent; a fully masked ``P`` row gives 0.
    The rows are computed a chunk at a time: peak memory is the result plus
    a few tens of MiB.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> float(smk.kl_div(np.array([0.0, 0.0]), np.array([0.0, 0.0])))
    0.0
    >>> float(smk.kl_div(np.array([0.0, 0.0]), np.array([0.0, -np.inf])))
    inf
    """
    log_probs = validate.flag(log_probs, "log_probs")
    xp, layout, p_rows, _, p_dtype, _, _ = _prepare_rows(p, axis, name="p", allow_many=False)
    q = validate.same_namespace(xp, q, "q")
    _, _, q_rows, _, q_dtype, _, _ = _prepare_rows(q, axis, name="q", allow_many=False)
    if tuple(q.shape) != layout.shape:
        raise ValueError(f"q must have the shape of p {layout.shape}; got {tuple(q.shape)}")
    out_dtype = xp.result_type(p_dtype, q_dtype)
    work, widened = num.working_dtype(xp, out_dtype, p_rows)
    out = xp.empty((layout.n_rows,), dtype=out_dtype, device=array_api_compat.device(p_rows))
    for part in layout.chunks(_itemsize(xp, work)):
        pw, qw = _working(xp, p_rows, part, work), _working(xp, q_rows, part, work)
        out = put(out, part, xp.astype(num.kl_rows(xp, pw, qw, log_probs, widened)[..., 0], out_dtype))
    return xp.reshape(out, layout.rest_shape)


def _vjp_inputs(primal: Any, cotangent: Any, axis: Any, primal_name: str, same_shape: bool):
    """``(xp, layout, primal_rows, cotangent_rows, out_dtype, work, widened)``, unconverted, as ``_prepare_rows``."""
    xp, layout, p_rows, _, out_dtype, _, _ = _prepare_rows(primal, axis, name=primal_name, allow_many=False)
    ct = validate.same_namespace(xp, cotangent, "cotangent")
    _, ct, ct_dtype = validate.real_array(ct, "cotangent")
    out_dtype = xp.result_type(out_dtype, ct_dtype)
    work, widened = num.working_dtype(xp, out_dtype, p_rows)
    if same_shape:
        if tuple(ct.shape) != layout.shape:
            raise ValueError(f"cotangent must have the shape of {primal_name} {layout.shape}; got {tuple(ct.shape)}")
        ct_rows = layout.rows(ct)
    else:
        rows = layout.rest_shape
        kept = tuple(1 if i in layout.axes else s for i, s in enumerate(layout.shape))
        if tuple(ct.shape) == kept:
            ct = xp.reshape(ct, rows)
        elif tuple(ct.shape) != rows:
            raise ValueError(f"cotangent must have shape {rows} (or {kept}); got {tuple(ct.shape)}")
        ct_rows = xp.reshape(ct, (layout.n_rows, 1))
    return xp, layout, p_rows, ct_rows, out_dtype, work, widened


def _vjp_by_rows(xp, layout, p_rows, ct_rows, out_dtype, work, compute) -> Any:
    """``compute(primal, cotangent)`` (working-dtype row chunks) written chunk by chunk into one output."""
    out = xp.empty_like(p_rows, dtype=out_dtype)
    for part in layout.chunks(_itemsize(xp, work)):
        y = compute(_working(xp, p_rows, part, work), _working(xp, ct_rows, part, work))
        out = put(out, (part, slice(None)), xp.astype(y, out_dtype))
    return layout.back_rows(out)


@validate.quiet
def softmax_vjp(probs: Any, cotangent: Any, axis: int = -1) -> Any:
    r"""Vector-Jacobian product of softmax, from its output.

    .. math:: \bar x = p \odot (\bar p - \langle p, \bar p \rangle)

    Parameters
    ----------
    probs : array
        ``softmax(x)`` output.
    cotangent : array of the same shape
        Gradient with respect to the probabilities.
    axis : int, default -1

    Returns
    -------
    array of ``probs``' shape: the gradient with respect to ``x``.

    Notes
    -----
    Computed in float64 for narrower inputs, with a compensated dot product
    for float64.  The error of each entry is within 2 ULP (4 for float64) of
    ``p_j (|v_j| + sum_i |p_i v_i|)``: the subtraction's cancellation is the
    data's.  Entries with ``p = 0`` (masked classes, fully masked rows) get
    0, whatever their cotangent.  Away from the native kernels the rows are
    computed a chunk at a time: peak memory is the output plus a few tens
    of MiB (as for :func:`log_softmax_vjp` and :func:`logsumexp_vjp`).

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> p = smk.softmax(np.array([0.0, 0.0]))
    >>> smk.softmax_vjp(p, np.array([1.0, 0.0]))
    array([ 0.25, -0.25])
    """
    native = registry.native()
    if native is not None and native.numpy.eligible_pair(probs, cotangent, axis):
        return native.numpy.softmax_vjp(probs, cotangent, validate.axis(axis, probs.ndim)[0])
    xp, layout, p_rows, g_rows, out_dtype, work, widened = _vjp_inputs(probs, cotangent, axis, "probs", True)
    return _vjp_by_rows(xp, layout, p_rows, g_rows, out_dtype, work, lambda p, g: num.softmax_vjp(xp, p, g, widened))


@validate.quiet
def log_softmax_vjp(log_probs: Any, cotangent: Any, axis: int = -1) -> Any:
    r"""Vector-Jacobian product of log_softmax, from its output.

    .. math:: \bar x_j = \bar y_j - p_j \sum_i \bar y_i,\quad p = e^{y}

    Parameters
    ----------
    log_probs : array
        ``log_softmax(x)`` output.
    cotangent : array of the same shape
        Gradient with respect to the log-probabilities.
    axis : int, default -1

    Returns
    -------
    array of ``log_probs``' shape: the gradient with respect to ``x``.

    Notes
    -----
    The error of each entry is within 2 ULP (4 for float64) of
    ``|v_j| + p_j sum_i |v_i|``.  Entries whose log-probability is ``-inf``
    are masked classes: they get 0 and their cotangent is left out of the
    sum, so fully masked rows give zeros, never NaN.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> y = smk.log_softmax(np.array([0.0, 0.0, -np.inf]))
    >>> smk.log_softmax_vjp(y, np.array([1.0, 0.0, 5.0]))
    array([ 0.5, -0.5,  0. ])
    """
    native = registry.native()
    if native is not None and native.numpy.eligible_pair(log_probs, cotangent, axis):
        return native.numpy.log_softmax_vjp(log_probs, cotangent, validate.axis(axis, log_probs.ndim)[0])
    xp, layout, y_rows, g_rows, out_dtype, work, widened = _vjp_inputs(log_probs, cotangent, axis, "log_probs", True)

    def compute(y, g):
        return num.log_softmax_vjp(xp, xp.exp(y), y != -float("inf"), g, widened)

    return _vjp_by_rows(xp, layout, y_rows, g_rows, out_dtype, work, compute)


@validate.quiet
def logsumexp_vjp(x: Any, cotangent: Any, axis: int = -1) -> Any:
    r"""Vector-Jacobian product of logsumexp: ``cotangent * softmax(x)``.

    Parameters
    ----------
    x : array
        The logsumexp input.
    cotangent : array
        Gradient with respect to ``logsumexp(x, axis)``: ``x``'s shape with
        ``axis`` removed (or kept with size 1).
    axis : int, default -1

    Returns
    -------
    array of ``x``'s shape.

    Notes
    -----
    Fully masked rows give zeros; rows with ``+inf`` share the cotangent
    equally among their ``+inf`` entries.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> smk.logsumexp_vjp(np.array([[0.0, 0.0], [-np.inf, -np.inf]]), np.array([2.0, 1.0]))
    array([[1., 1.],
           [0., 0.]])
    """
    xp, layout, x_rows, g_rows, out_dtype, work, widened = _vjp_inputs(x, cotangent, axis, "x", False)

    def compute(xw, g):
        p = num.softmax(xp, num.row_stats(xp, xw, None, 1.0, widened))
        return num.logsumexp_vjp(xp, p, g)

    return _vjp_by_rows(xp, layout, x_rows, g_rows, out_dtype, work, compute)
