"""Drawing from softmax distributions: sample, gumbel_max and gumbel_softmax.

All three use the Gumbel-max trick: with ``G_i`` independent standard Gumbel
noise, ``argmax_i (log p_i + G_i)`` is distributed exactly as
``Categorical(p)``, and the log-probabilities need not be normalised.  The
log-probabilities come from :func:`softmaxkit.log_softmax`'s formula, so
``+inf`` logits share their mass and ``-inf`` logits are never drawn.  The
noise is made as described in ``softmaxkit.frontend.random``: it never takes
``log(0)``.
"""

from __future__ import annotations

from typing import Any

from softmaxkit import numerics as num
from softmaxkit.frontend import random as _random
from softmaxkit.frontend import registry
from softmaxkit.frontend import validate
from softmaxkit.frontend.softmax import _prepare
from softmaxkit.frontend.layout import Layout

__all__ = [
    "gumbel_max",
    "gumbel_softmax",
    "sample",
]

_INF = float("inf")
# The largest array NumPy can index, in bytes or entries.
_MAX_ARRAY_BYTES = 2**63 - 1


def _optional_top_k(value: Any) -> int | None:
    return None if value is None else validate.count(value, "top_k", 1, unit=" (or None)")


def _optional_top_p(value: Any) -> float | None:
    if value is None:
        return None
    p = validate.real_number(value, "top_p")
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] or None; got {p!r}")
    return p


def _optional_min_p(value: Any) -> float | None:
    if value is None:
        return None
    return validate.in_unit_interval(value, "min_p")


def _num_samples(value: Any) -> int:
    n = validate.count(value, "num_samples", 1)
    if n > _MAX_ARRAY_BYTES:
        raise ValueError(f"num_samples={n} is too many: an array axis holds at most {_MAX_ARRAY_BYTES} entries")
    return n


def _check_noise_size(n_rows: int, n_draws: int, n_classes: int) -> None:
    """ValueError when the noise for the draws cannot be one array.

    Each draw of each class takes two 32-bit random words.
    """
    nbytes = n_rows * n_draws * n_classes * 8
    if nbytes > _MAX_ARRAY_BYTES:
        raise ValueError(
            f"num_samples={n_draws} is too many for {n_rows} row(s) of {n_classes} classes: their noise "
            f"would take {nbytes} bytes, more than an array can hold ({_MAX_ARRAY_BYTES})"
        )


def _check_computed(xp: Any, values: Any, temperature: float, name: str) -> None:
    """ValueError for a row whose computed log-probabilities (or probabilities) hold NaN.

    The input was checked for NaN, so such a row comes from the computation
    (an extreme temperature); its argmax would be class 0 whatever the noise,
    a draw from no distribution.
    """
    bad = xp.any(xp.isnan(values), axis=-1)
    if bool(xp.any(bad)):
        raise ValueError(
            f"{name} row {list(validate.first_position(bad))} (index without the class axis) gives NaN probabilities at "
            f"temperature={temperature!r} although its logits are not NaN; nothing is drawn from it"
        )


def _check_rows(xp: Any, layout: Layout, xw: Any, name: str) -> None:
    """ValueError for NaN logits and for rows with nothing to draw."""
    nan = xp.isnan(xw)
    if bool(xp.any(nan)):
        pos = validate.first_position(layout.back(nan))
        raise ValueError(f"{name}{list(pos)} is NaN; a distribution to sample from needs real logits (-inf masks a class)")
    # An empty class axis leaves every row with nothing to draw.
    masked = xp.all(xw == -_INF, axis=-1)
    if bool(xp.any(masked)):
        raise ValueError(
            f"{name} row {list(validate.first_position(masked))} (index without the class axis) is fully masked: every entry "
            f"is -inf, so there is nothing to sample; give at least one finite or +inf logit per row"
        )


def _stop_gradient(backend: Any, a: Any) -> Any:
    return a if backend is None or backend.stop_gradient is None else backend.stop_gradient(a)


@validate.quiet
def sample(
    logits: Any,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    num_samples: int = 1,
    axis: int = -1,
    rng: Any = None,
) -> Any:
    r"""Draw class indices from ``softmax(logits / temperature)``, optionally truncated.

    .. math:: i \sim \mathrm{Categorical}(q),\qquad
              q_j \propto \mathrm{softmax}(x / T)_j \,[\,j \in S\,]

    where ``S`` is the set that survives the truncations, applied in this
    order, each to the distribution renormalised after the previous one:

    1. ``top_k``: the ``k`` most probable classes;
    2. ``top_p`` (nucleus): the smallest set of most probable classes whose
       total probability reaches ``top_p``;
    3. ``min_p``: the classes with ``p_j >= min_p * max_i p_i``;

    and the survivors are renormalised.

    Parameters
    ----------
    logits : array_like, numpy.ndarray, torch.Tensor or jax.Array
        Unnormalised log-probabilities, classes along ``axis``; shape
        ``(..., C, ...)``.
    temperature : float, default 1.0
        ``T >= 0``, finite, applied to the logits.  ``T = 0`` is greedy
        decoding: the argmax, with no randomness and no truncation (the
        argmax survives every truncation).
    top_k : int >= 1, optional
        Keep the ``k`` largest probabilities.  Ties at the boundary are all
        kept: every class whose probability equals the ``k``-th largest
        survives, so more than ``k`` classes may remain.  ``k >= C`` keeps all.
    top_p : float in (0, 1], optional
        Nucleus sampling.  Sorted by decreasing probability, a class is kept
        if the mass of the classes ranked before it is below ``top_p``, so the
        most probable class is always kept.  Ties at the boundary are all kept
        (every class whose probability equals the last one kept).  The mass is
        a float64 cumulative sum (float32 for JAX without x64).  ``top_p = 1``
        keeps everything.
    min_p : float in [0, 1], optional
        Keep classes with ``p_j >= min_p * max p`` (ties kept).  The ratio
        ``p_j / max p`` is computed directly as ``exp((x_j - max x) / T)``.
    num_samples : int >= 1, default 1
        Independent draws (with replacement) per row.
    axis : int, default -1
        The class axis.
    rng : optional
        NumPy input: a ``numpy.random.Generator``, an int seed, or None (fresh
        entropy).  PyTorch: a ``torch.Generator``, an int seed, or None
        (torch's global generator, seeded by ``torch.manual_seed``).  JAX: a
        key from ``jax.random.key`` (required).  A seed or key gives
        reproducible draws.

    Returns
    -------
    integer array, of the input's kind and device
        Shape ``logits.shape`` without ``axis`` when ``num_samples == 1``;
        with a trailing axis of length ``num_samples`` otherwise.  The dtype
        is the library's argmax index dtype (int64 for NumPy and PyTorch,
        int32 for JAX without x64).

    Raises
    ------
    ValueError
        For a row whose logits are all ``-inf`` (nothing to draw), a class
        axis of length 0 with rows to fill, a NaN logit, a row whose
        probabilities come out NaN from finite logits (an extreme
        temperature; never drawn as some class), ``num_samples`` too large
        for the noise to fit in one array, or an invalid parameter.
    TypeError
        For an ``rng`` that does not match the array kind, or arrays of other
        libraries.

    Notes
    -----
    The Gumbel-max trick: ``argmax_j (log q_j + G_j)`` with i.i.d. standard
    Gumbel ``G_j`` is exactly ``Categorical(q)``; the truncated classes get
    ``log q_j = -inf``, and the renormalisation is implicit because the argmax
    ignores a common shift.  ``log p`` is :func:`softmaxkit.log_softmax` at
    temperature ``T`` (exact at any margin), computed in float64 for narrower
    inputs.  The noise never takes ``log(0)``; it is exact Gumbel noise
    except that its tails beyond a probability of about ``e**-43`` are cut
    and its uniforms lie on a grid of spacing ``2**-63``, so the draws are
    exact to that level (JAX without x64 adds float32 rounding to
    ``log q_j + G_j``).

    Edge behaviour: ``-inf`` logits are never drawn; a row with ``+inf``
    logits draws uniformly among them (the limit of the softmax); a row of
    equal logits draws uniformly.  Under ``T = 0`` ties go to the first
    index.  The inputs are not modified and carry no gradient.

    References
    ----------
    E. J. Gumbel, "Statistical theory of extreme values", 1954; C. J. Maddison,
    D. Tarlow & T. Minka, "A* Sampling", NeurIPS 2014 (the Gumbel-max trick).
    A. Holtzman et al., "The Curious Case of Neural Text Degeneration", ICLR
    2020 (top-p).  N. N. Minh et al., "Turning Up the Heat: Min-p Sampling for
    Creative and Coherent LLM Outputs", 2024 (min-p).

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> logits = np.array([[2.0, 1.0, -np.inf], [0.0, 5.0, 0.0]])
    >>> smk.sample(logits, temperature=0)
    array([0, 1])
    >>> idx = smk.sample(logits, num_samples=1000, rng=0)
    >>> idx.shape, bool((idx[0] != 2).all())
    ((2, 1000), True)
    >>> smk.sample(logits, top_k=1, num_samples=3, rng=0)
    array([[0, 0, 0],
           [1, 1, 1]])
    """
    T = validate.non_negative(temperature, "temperature")
    top_k = _optional_top_k(top_k)
    top_p = _optional_top_p(top_p)
    min_p = _optional_min_p(min_p)
    n_draws = _num_samples(num_samples)
    xp, layout, xw, _, _, widened = _prepare(logits, axis, name="logits", allow_many=False)
    backend = registry.backend_for(xw)
    gen = _random.generator(backend, xw, rng, "logits")
    xw = _stop_gradient(backend, xw)
    _check_rows(xp, layout, xw, "logits")
    out_shape = layout.rest_shape + ((n_draws,) if n_draws > 1 else ())
    n = xw.shape[-1]
    _check_noise_size(layout.n_rows, n_draws, n)
    if n == 0:
        # No rows and no classes: argmax of an empty axis is undefined, but the
        # answer is an empty array of the usual index dtype.
        return xp.zeros(out_shape, dtype=xp.argmax(xp.zeros((1,)), axis=0).dtype)
    if T == 0:
        idx = xp.argmax(xw, axis=-1)
        return idx[..., None] + xp.zeros(out_shape, dtype=idx.dtype) if n_draws > 1 else idx
    st = num.row_stats(xp, xw, None, T, widened)
    logp = num.log_softmax(xp, st)
    _check_computed(xp, logp, T, "logits")
    keep = logp != -_INF
    if top_k is not None and top_k < n:
        kth = xp.sort(logp, axis=-1, descending=True)[..., top_k - 1 : top_k]
        keep = keep & (logp >= kth)
    if top_p is not None and top_p < 1.0:
        p = num.softmax(xp, num.row_stats(xp, xw, keep, T, widened))
        _check_computed(xp, p, T, "logits")
        ranked = xp.sort(p, axis=-1, descending=True)
        mass = xp.cumulative_sum(ranked, axis=-1)
        n_kept = 1 + xp.sum(xp.astype(mass[..., :-1] < top_p, xp.int32), axis=-1, keepdims=True)
        position = xp.arange(n, dtype=n_kept.dtype)
        last_kept = xp.min(xp.where(position < n_kept, ranked, xp.full_like(ranked, _INF)), axis=-1, keepdims=True)
        keep = keep & (p >= last_kept)
    if min_p:
        # st.e is exp((x_j - max x) / T): exactly the ratio p_j / max p, and it
        # does not change when the truncations above renormalise.
        keep = keep & (st.e >= min_p)
    logq = xp.where(keep, logp, xp.full_like(logp, -_INF))
    if n_draws > 1:
        logq = logq[..., None, :]
    noise = _random.gumbel(xp, backend, gen, out_shape + (n,), logq.dtype, xw)
    return xp.argmax(logq + noise, axis=-1)


@validate.quiet
def gumbel_max(logits: Any, gumbel: Any, *, temperature: float = 1.0, axis: int = -1) -> Any:
    r"""Exact categorical samples from Gumbel noise the caller supplies.

    .. math:: i = \operatorname{argmax}_j\,\bigl(\log\mathrm{softmax}(x/T)_j + G_j\bigr)

    If the ``G_j`` are independent standard Gumbel variables, ``i`` is
    distributed as ``Categorical(softmax(x / T))``.

    Parameters
    ----------
    logits : array_like or array
        Shape ``(..., C, ...)`` with the classes along ``axis``.
    gumbel : array
        Standard Gumbel noise, finite, of ``logits``' shape, optionally with
        extra leading axes (one draw per leading index); same array kind.
        Build it as ``-log(-log(U))`` from uniforms in the open interval
        ``(0, 1)``, or with ``numpy.random.Generator.gumbel``.
    temperature : float, default 1.0
        ``T >= 0``; ``T = 0`` ignores the noise and returns the argmax.
    axis : int, default -1
        The class axis of ``logits``.

    Returns
    -------
    integer array of ``gumbel``'s shape without the class axis.

    Notes
    -----
    Uses :func:`softmaxkit.log_softmax` rather than ``x / T`` so that a row
    with several ``+inf`` logits chooses uniformly among them instead of
    always the first; ``-inf`` logits are never chosen.  Ties (of probability
    0 for continuous noise) go to the first index.  Raises ``ValueError`` for
    NaN logits, fully masked rows, non-finite noise, and rows whose
    log-probabilities come out NaN from finite logits (an extreme
    temperature), which are never turned into an index.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> g = np.random.default_rng(0).gumbel(size=(5, 3))
    >>> smk.gumbel_max(np.array([0.0, 1.0, -np.inf]), g)
    array([1, 0, 1, 1, 1])
    """
    T = validate.non_negative(temperature, "temperature")
    xp, layout, xw, _, _, widened = _prepare(logits, axis, name="logits", allow_many=False)
    g = validate.same_namespace(xp, gumbel, "gumbel")
    _, g, _ = validate.real_array(g, "gumbel")
    lead = g.ndim - len(layout.shape)
    if lead < 0 or tuple(g.shape[lead:]) != layout.shape:
        raise ValueError(
            f"gumbel must have the shape of logits {layout.shape}, optionally with extra leading axes; got {tuple(g.shape)}"
        )
    _check_rows(xp, layout, xw, "logits")
    if T == 0:
        idx = xp.argmax(xw, axis=-1)
        return idx + xp.zeros(tuple(g.shape[:lead]) + layout.rest_shape, dtype=idx.dtype)
    bad = ~xp.isfinite(g)
    if bool(xp.any(bad)):
        pos = validate.first_position(bad)
        raise ValueError(f"gumbel must be finite; got gumbel{list(pos)} = {float(validate.to_numpy(g)[pos])!r}")
    g_layout = Layout(xp, tuple(g.shape), (lead + layout.axes[0],))
    logp = num.log_softmax(xp, num.row_stats(xp, xw, None, T, widened))
    _check_computed(xp, logp, T, "logits")
    return xp.argmax(logp + g_layout.forward(xp.astype(g, logp.dtype)), axis=-1)


@validate.quiet
def gumbel_softmax(logits: Any, *, tau: float = 1.0, hard: bool = False, axis: int = -1, rng: Any = None) -> Any:
    r"""A differentiable relaxation of a categorical sample (Gumbel-softmax).

    .. math:: y = \mathrm{softmax}\bigl((x + G) / \tau\bigr),\qquad G_j \sim \mathrm{Gumbel}(0, 1)

    With ``hard=True`` the forward value is the one-hot vector of
    ``argmax_j y_j`` (an exact sample from ``softmax(x)``) and the gradient is
    the gradient of ``y`` (straight-through):
    ``y_hard + (y_soft - stop_gradient(y_soft))``.

    Parameters
    ----------
    logits : numpy.ndarray, torch.Tensor or jax.Array
        Shape ``(..., C, ...)``, classes along ``axis``.
    tau : float, default 1.0
        Temperature of the relaxation, finite and > 0; smaller is closer to
        one-hot.
    hard : bool, default False
        Return one-hot samples with straight-through gradients.
    axis : int, default -1
        The class axis.
    rng : optional
        As in :func:`sample`.

    Returns
    -------
    array of ``logits``' shape, floating dtype and kind.  Gradients flow to
    ``logits`` under torch autograd and JAX transformations; NumPy gets the
    forward value only.

    Notes
    -----
    The noise is drawn in float64 (float32 for JAX without x64) from random
    words so that it is never ``-log(-log(0))`` (see ``softmaxkit.frontend.random``);
    ``softmax`` is :func:`softmaxkit.softmax`'s formula with temperature
    ``tau``.  The hard forward is exactly one-hot: ``y_soft - y_soft`` is 0.

    Edge behaviour: ``-inf`` logits get 0 (and are never the hard choice); a
    fully masked row gives zeros for both ``hard=False`` and ``hard=True``; a
    NaN makes its row NaN.

    References
    ----------
    E. Jang, S. Gu & B. Poole, "Categorical Reparameterization with
    Gumbel-Softmax", ICLR 2017; C. J. Maddison, A. Mnih & Y. W. Teh, "The
    Concrete Distribution", ICLR 2017.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> y = smk.gumbel_softmax(np.array([1.0, 2.0, -np.inf]), tau=0.5, rng=0)
    >>> float(y.sum()), float(y[2])
    (1.0, 0.0)
    >>> smk.gumbel_softmax(np.array([1.0, 2.0, -np.inf]), hard=True, rng=0)
    array([0., 1., 0.])
    """
    tau = validate.positive_finite(tau, "tau")
    hard = validate.flag(hard, "hard")
    xp, layout, xw, _, out_dtype, widened = _prepare(logits, axis, name="logits", allow_many=False)
    backend = registry.backend_for(xw)
    gen = _random.generator(backend, xw, rng, "logits")
    noise = _random.gumbel(xp, backend, gen, tuple(xw.shape), xw.dtype, xw)
    st = num.row_stats(xp, xw + noise, None, tau, widened)
    y = num.softmax(xp, st)
    if hard:
        n = xw.shape[-1]
        one_hot = xp.arange(n) == xp.argmax(_stop_gradient(backend, y), axis=-1, keepdims=True) if n else xp.zeros(y.shape, dtype=xp.bool)
        one_hot = xp.astype(one_hot & ~st.masked_row, y.dtype)
        y = one_hot + (y - _stop_gradient(backend, y))
    return layout.back(xp.astype(y, out_dtype))
