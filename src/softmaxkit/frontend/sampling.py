"""Drawing from softmax distributions: sample, gumbel_max and gumbel_softmax.

All three use the Gumbel-max trick: with ``G_j`` independent standard Gumbel
noise, ``argmax_j (log p_j + G_j)`` is distributed exactly as
``Categorical(p)``, and the log-probabilities need not be normalised.
``sample`` and ``gumbel_max`` add the noise to the shifted, scaled logits
``z_j = (x_j - max x) / T``, which differ from ``log p_j`` by a constant per
row, with :func:`softmaxkit.log_softmax`'s limits: ``+inf`` logits share
their mass and ``-inf`` logits are never drawn.  The noise is made as
described in ``softmaxkit.frontend.random``: it never takes ``log(0)``.

Values and tracing.  Settings given as Python numbers are checked at once.
Checks that read array values (NaN logits, fully masked rows, per-row
settings out of range, non-finite noise) raise ``ValueError`` on concrete
arrays and are skipped under tracing (``jax.jit``, ``jax.vmap``), where no
value can be read (``validate.ValueChecks``); there a draw from such a row
is the class index -1, which no class has.  Nothing branches in Python on a
traced value, so the three functions run inside ``jax.jit``.

Settings per row.  ``temperature``, ``top_k``, ``top_p`` and ``min_p`` are
each one number or an array broadcastable to the logits' shape without the
class axis.  Numbers and arrays go through the same arithmetic, so a row
drawn with an array of settings equals the same row drawn with its own
settings as numbers (same noise), except that an int ``top_k`` takes the
candidate path below and an array ``top_k`` the full one.

Candidates.  With an int ``top_k`` below the number of classes, ``sample``
selects the ``top_k`` largest logits of each row (one partial selection:
``jax.lax.top_k`` for JAX) and does everything else, noise included, on
those alone.  Where more classes tie with the ``top_k``-th largest than the
candidates hold, the call takes the full path instead, which sorts whole
rows and keeps every tie; under tracing that choice is a ``jax.lax.cond``.
Both paths draw exactly from the same distribution; they spend the noise
differently, so for a given key their draws differ.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple


from softmaxkit import numerics as num
from softmaxkit.frontend import random as _random
from softmaxkit.frontend import registry
from softmaxkit.frontend import validate
from softmaxkit.frontend.layout import Layout
from softmaxkit.frontend.softmax import _prepare

__all__ = [
    "gumbel_max",
    "gumbel_softmax",
    "sample",
    "truncate",
]

_INF = float("inf")
# The largest array NumPy can index, in bytes or entries.
_MAX_ARRAY_BYTES = 2**63 - 1
# The class index drawn, under tracing, from a row with nothing to draw from.
_UNDEFINED = -1


def _concrete(a: Any) -> bool:
    """Whether the values of ``a`` can be read now (not traced: see ``registry.Backend.traced``)."""
    backend = registry.backend_for(a)
    return backend is None or backend.traced is None or not backend.traced(a)


# Value checks raise on concrete arrays and are skipped under tracing.
_CHECKS = validate.ValueChecks(readable=_concrete)


# --- settings: one number or one value per row ---------------------------------------------


def _per_row(value: Any) -> bool:
    """Whether a setting is given as an array (or a list) rather than as one number."""
    return not isinstance(value, numbers.Number) and (hasattr(value, "shape") or isinstance(value, (list, tuple)))


def _temperature(value: Any) -> Any:
    return value if _per_row(value) else validate.non_negative(value, "temperature")


def _top_k(value: Any) -> Any:
    if value is None or _per_row(value):
        return value
    return validate.count(value, "top_k", 1, unit=" (or None)")


def _top_p(value: Any) -> Any:
    if value is None or _per_row(value):
        return value
    p = validate.real_number(value, "top_p")
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] or None; got {p!r}")
    return p


def _min_p(value: Any) -> Any:
    if value is None or _per_row(value):
        return value
    return validate.in_unit_interval(value, "min_p")


class _Rule(NamedTuple):
    """What a per-row setting must be: ``out_of_range(v)`` marks the bad
    values, ``message`` says what is allowed (as for a number), ``integer``
    asks for an integer array."""

    out_of_range: Callable[[Any], Any]
    message: str
    integer: bool = False


_TEMPERATURE = _Rule(lambda v: ~((v >= 0) & (v < _INF)), "temperature must be finite and >= 0")
_TOP_K = _Rule(lambda v: v < 1, "top_k must be an int >= 1 (or None)", integer=True)
_TOP_P = _Rule(lambda v: ~((v > 0) & (v <= 1)), "top_p must be in (0, 1] or None")
_MIN_P = _Rule(lambda v: ~((v >= 0) & (v <= 1)), "min_p must be in [0, 1]")


def _first_bad(name: str, v: Any, message: str) -> Callable[[tuple | None], str]:
    """``describe`` for :meth:`validate.ValueChecks.require_none`: the message, then the first bad value and where it is."""

    def describe(pos: tuple | None) -> str:
        if pos is None:
            return message
        value = validate.to_numpy(v)[pos]
        shown = repr(float(value)) if value.dtype.kind == "f" else repr(int(value))
        return f"{message}; got {name}{list(pos)} = {shown}" if pos else f"{message}; got {shown}"

    return describe


@dataclass(frozen=True)
class _Settings:
    """The settings of one call, each None, a Python number, or an array of
    shape ``rest + (1,)`` (the logits' shape without the class axis, then 1)
    in the working dtype (``top_k``: the index dtype).

    ``greedy`` marks the rows of an array temperature that are 0 (their
    ``temperature`` entry is replaced by 1); ``invalid`` the rows whose
    settings are out of range, of shape ``rest`` (only under tracing, where
    they are not refused).  Both are None where there are none to mark.
    """

    temperature: Any
    top_k: Any
    top_p: Any
    min_p: Any
    greedy: Any
    invalid: Any

    @property
    def scalar_greedy(self) -> bool:
        return self.greedy is None and self.temperature == 0


def _row_setting(xp: Any, layout: Layout, xw: Any, value: Any, name: str, rule: _Rule) -> tuple[Any, Any]:
    """A per-row setting as ``(array of shape rest + (1,), rows out of range of shape rest)``.

    A number (or None) passes through, with None.  The array is of
    ``xw``'s kind (NumPy arrays and lists are converted), in ``xw``'s dtype
    (``top_k``: the index dtype, capped at the number of classes).  Concrete
    values out of range raise ``ValueError`` naming the first one and its
    index in the array as given; under tracing their rows are returned.
    """
    if value is None or not _per_row(value):
        return value, None
    v = validate.same_namespace(xp, value, name)
    if not rule.integer:
        v = xp.astype(validate.as_float(xp, v, name), xw.dtype)
    elif not xp.isdtype(v.dtype, "integral"):
        raise TypeError(f"{name} must be an int >= 1, an integer array or None; got an array of dtype {v.dtype}")
    bad = rule.out_of_range(v)
    _CHECKS.require_none(xp, bad, _first_bad(name, v, rule.message))
    if rule.integer:
        v = xp.astype(xp.clip(v, max=layout.n), _index_dtype(xp))
    shape = layout.rest_shape
    v = validate.broadcast_to(xp, v, shape, name, "the logits without the class axis")
    dev = num.device(xw)
    return xp.asarray(xp.reshape(v, shape + (1,)), device=dev), xp.asarray(xp.broadcast_to(bad, shape), device=dev)


def _settings(xp: Any, layout: Layout, xw: Any, temperature: Any, top_k: Any, top_p: Any, min_p: Any) -> _Settings:
    T, bad_t = _row_setting(xp, layout, xw, temperature, "temperature", _TEMPERATURE)
    k, bad_k = _row_setting(xp, layout, xw, top_k, "top_k", _TOP_K)
    p, bad_p = _row_setting(xp, layout, xw, top_p, "top_p", _TOP_P)
    m, bad_m = _row_setting(xp, layout, xw, min_p, "min_p", _MIN_P)
    greedy = None
    if bad_t is not None:
        greedy = T == 0
        T = xp.where(greedy, xp.ones_like(T), T)
    invalid = None
    for bad in (bad_t, bad_k, bad_p, bad_m):
        if bad is not None:
            invalid = bad if invalid is None else invalid | bad
    return _Settings(T, k, p, m, greedy, invalid)


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


# --- rows --------------------------------------------------------------------------------


def _check_rows(xp: Any, layout: Layout, xw: Any, name: str) -> None:
    """ValueError for a NaN logit and for a row with every logit ``-inf`` (nothing to draw), on concrete arrays.

    Under tracing nothing is checked, and the draws from those rows are -1.
    """
    _CHECKS.require_none(
        xp,
        layout.back(xp.isnan(xw)),
        lambda pos: f"{name}{list(pos or [])} is NaN; a distribution to sample from needs real logits (-inf masks a class)",
    )
    # An empty class axis leaves every row with nothing to draw.
    _CHECKS.require_none(
        xp,
        xp.all(xw == -_INF, axis=-1),
        lambda pos: (
            f"{name} row {list(pos or [])} (index without the class axis) is fully masked: every entry is -inf, so there "
            f"is nothing to sample; give at least one finite or +inf logit per row"
        ),
    )


def _empty(largest: Any) -> Any:
    """The rows with nothing to draw from, from each row's largest logit: NaN (a NaN logit) or ``-inf``."""
    return ~(largest > -_INF)


def _index_dtype(xp: Any) -> Any:
    """The dtype of the namespace's argmax (int64, or int32 for JAX without x64)."""
    return xp.argmax(xp.zeros((1,)), axis=0).dtype


def _scaled(xp: Any, x: Any, temperature: Any, widened: bool) -> tuple[Any, Any]:
    """``(z, empty)``: ``z = (x - max x) / T`` along the last axis, with
    ``log_softmax``'s limits, and the rows with nothing to draw from.

    A row holding ``+inf`` gets 0 at its ``+inf`` entries and ``-inf``
    elsewhere; ``-inf`` entries get ``-inf``; ``z`` is never NaN for non-NaN
    ``x`` and finite ``T > 0``.  The halves of ``x`` and of its max are
    subtracted and the quotient doubled, so that a row spanning more than
    the largest finite number does not overflow where ``(x - max x) / T``
    need not; the halving and doubling are exact (subnormal logits aside),
    so elsewhere this is ``(x - max x) / T`` with the difference rounded
    once (exact for inputs narrower than the working dtype) and the
    quotient rounded once.  ``T`` is a number or one value per row.
    """
    st = num.row_stats(xp, x * 0.5, None, 1.0, widened)
    return (st.hi / temperature) * 2.0, _empty(st.a[..., 0])


def _nucleus_floor(xp: Any, ranked: Any, top_p: Any) -> Any:
    """The smallest weight that ``top_p`` keeps, from each row's weights ``exp(z)`` in decreasing order.

    A class is kept when the mass ranked before it is below ``top_p`` of
    the row's total; the mass is a cumulative sum of the unnormalised
    weights, compared with ``top_p`` times the last one.  The caller keeps
    every class of at least this weight, so ties with the last one kept are
    kept too.  ``top_p = 1`` keeps every weight, however small.
    """
    mass = xp.cumulative_sum(ranked, axis=-1)
    below = mass[..., :-1] < top_p * mass[..., -1:]
    n_kept = 1 + xp.sum(xp.astype(below, xp.int32), axis=-1, keepdims=True)
    position = xp.arange(ranked.shape[-1], dtype=n_kept.dtype, device=num.device(ranked))
    floor = xp.min(xp.where(position < n_kept, ranked, xp.full_like(ranked, _INF)), axis=-1, keepdims=True)
    # A number top_p is below 1 here (1 keeps every class without this step).
    return floor if isinstance(top_p, float) else xp.where(top_p < 1, floor, xp.zeros_like(floor))


def _truncated(xp: Any, v: Any, s: _Settings, widened: bool, ranked: bool) -> tuple[Any, Any]:
    """``(log q, empty)``: ``log q`` up to a constant per row, ``z`` where a
    class survives the truncations and ``-inf`` elsewhere, and the rows with
    nothing to draw from.

    ``v`` holds logits along the last axis: whole rows, or (``ranked``) each
    row's candidates, the ``top_k`` largest in decreasing order, which then
    are exactly the classes that ``top_k`` keeps.
    """
    z, empty = _scaled(xp, v, s.temperature, widened)
    keep = z != -_INF
    n = v.shape[-1]
    if not ranked and s.top_k is not None and (not isinstance(s.top_k, int) or s.top_k < n):
        # Ranked by the logits themselves: the ties kept are ties of the logits.
        xs = xp.sort(v, axis=-1, descending=True)
        if isinstance(s.top_k, int):
            kth = xs[..., s.top_k - 1 : s.top_k]
        else:
            kth = xp.take_along_axis(xs, xp.clip(s.top_k, 1, n) - 1, axis=-1)
        keep = keep & (v >= kth)
    top_p = s.top_p is not None and (not isinstance(s.top_p, float) or s.top_p < 1.0)
    min_p = s.min_p is not None and (not isinstance(s.min_p, float) or s.min_p > 0.0)
    if top_p or min_p:
        # exp(z_j) is p_j / max p: the probabilities up to a factor per row,
        # before and after the renormalisations.
        e = xp.where(keep, xp.exp(z), xp.zeros_like(z))
        if top_p:
            keep = keep & (e >= _nucleus_floor(xp, e if ranked else xp.sort(e, axis=-1, descending=True), s.top_p))
        if min_p:
            keep = keep & (e >= s.min_p)
    return xp.where(keep, z, xp.full_like(z, -_INF)), empty


def _draw(xp: Any, backend: Any, gen: Any, logq: Any, n_draws: int, like: Any) -> Any:
    """Gumbel-max: the index along the last axis of ``logq + G``, ``n_draws`` times (a trailing axis if more than one)."""
    if n_draws > 1:
        logq = logq[..., None, :]
    shape = tuple(logq.shape[:-2]) + (n_draws, logq.shape[-1]) if n_draws > 1 else tuple(logq.shape)
    noise = _random.gumbel(xp, backend, gen, shape, logq.dtype, like)
    return xp.argmax(logq + noise, axis=-1)


def _largest(xp: Any, x: Any, k: int) -> tuple[Any, Any]:
    """The ``k`` largest entries of each row (last axis) in decreasing order, and their indices.

    Ties come in index order, and NaN first (as larger than ``+inf``).
    """
    backend = registry.backend_for(x)
    if backend is not None and backend.top_k is not None:
        return backend.top_k(x, k)
    order = xp.argsort(x, axis=-1, descending=True, stable=True)[..., :k]
    return xp.take_along_axis(x, order, axis=-1), order


def _either(pred: Any, if_true: Callable[[], Any], if_false: Callable[[], Any]) -> Any:
    """``if_true()`` where the 0-d boolean ``pred`` holds, else ``if_false()``; the backend's ``cond`` under tracing."""
    if _concrete(pred):
        return if_true() if bool(pred) else if_false()
    return registry.backend_for(pred).cond(pred, if_true, if_false)


def _greedy(xp: Any, idx: Any, s: _Settings, first: Callable[[], Any], n_draws: int, index: Any) -> Any:
    """``idx`` in the index dtype, with the rows whose temperature is 0 set to ``first()`` (their argmax)."""
    if s.greedy is not None:
        f = first()
        idx = xp.where(s.greedy if n_draws > 1 else s.greedy[..., 0], f[..., None] if n_draws > 1 else f, idx)
    return xp.astype(idx, index)


def _undefined(xp: Any, idx: Any, undefined: Any, s: _Settings, n_draws: int) -> Any:
    """``idx`` with -1 in the rows that have nothing to draw from or settings out of range."""
    if s.invalid is not None:
        undefined = undefined | s.invalid
    return xp.where(undefined[..., None] if n_draws > 1 else undefined, xp.full_like(idx, _UNDEFINED), idx)


def _stop_gradient(backend: Any, a: Any) -> Any:
    return a if backend is None or backend.stop_gradient is None else backend.stop_gradient(a)


@validate.quiet
def sample(
    logits: Any,
    *,
    temperature: Any = 1.0,
    top_k: Any = None,
    top_p: Any = None,
    min_p: Any = None,
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

    and the survivors are renormalised.  Every setting is one number for all
    rows, or an array with one value per row.

    Parameters
    ----------
    logits : array_like, numpy.ndarray, torch.Tensor or jax.Array
        Unnormalised log-probabilities, classes along ``axis``; shape
        ``(..., C, ...)``.
    temperature : float or array, default 1.0
        ``T >= 0``, finite, applied to the logits.  ``T = 0`` is greedy
        decoding: the argmax, with no randomness and no truncation (the
        argmax survives every truncation).
    top_k : int >= 1, integer array or None, optional
        Keep the ``k`` largest probabilities.  Ties at the boundary are all
        kept: every class whose logit equals the ``k``-th largest survives,
        so more than ``k`` classes may remain.  ``k >= C`` keeps all.
    top_p : float in (0, 1], array or None, optional
        Nucleus sampling.  Sorted by decreasing probability, a class is kept
        if the mass of the classes ranked before it is below ``top_p``, so the
        most probable class is always kept.  Ties at the boundary are all kept
        (every class whose probability equals the last one kept).  The mass is
        a float64 cumulative sum (float32 for JAX without x64).  ``top_p = 1``
        keeps everything.
    min_p : float in [0, 1], array or None, optional
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
        key from ``jax.random.key`` (required; it may be traced).  A seed or
        key gives reproducible draws.

    Each of ``temperature``, ``top_k``, ``top_p`` and ``min_p`` may be an
    array (or a list) broadcastable to the logits' shape without ``axis``:
    one value per row, of the logits' array kind (or NumPy).  Rows with
    ``temperature`` 0 take their argmax; ``top_k`` above ``C``, ``top_p``
    of 1 and ``min_p`` of 0 leave a row untruncated.

    Returns
    -------
    integer array, of the input's kind and device
        Shape ``logits.shape`` without ``axis`` when ``num_samples == 1``;
        with a trailing axis of length ``num_samples`` otherwise.  The dtype
        is the library's argmax index dtype (int64 for NumPy and PyTorch,
        int32 for JAX without x64).  Under tracing (``jax.jit``,
        ``jax.vmap``), a row with a NaN logit, with every logit ``-inf``,
        or with a setting out of range draws ``-1``, which is no class.

    Raises
    ------
    ValueError
        For a row whose logits are all ``-inf`` (nothing to draw), a class
        axis of length 0 with rows to fill, a NaN logit, a setting out of
        range (for an array: its first such value and where it is), a
        setting array that does not broadcast to the rows, ``num_samples``
        too large for the noise to fit in one array.  Checks of array
        values run on concrete arrays and are skipped under tracing (see
        Returns).
    TypeError
        For an ``rng`` that does not match the array kind, a setting of the
        wrong kind (an array ``top_k`` must hold integers), or arrays of
        other libraries.

    Notes
    -----
    The Gumbel-max trick: ``argmax_j (log q_j + G_j)`` with i.i.d. standard
    Gumbel ``G_j`` is exactly ``Categorical(q)``; the truncated classes get
    ``log q_j = -inf``, and the renormalisation is implicit because the
    argmax ignores a common shift.  For ``log q_j`` it uses
    ``z_j = (x_j - max x) / T``, which is ``log_softmax(x / T)_j`` up to a
    constant per row, in float64 for narrower inputs (where ``x_j - max x``
    is exact and the quotient is rounded once); float64 inputs, and JAX
    without x64, round the difference too.  The noise never takes
    ``log(0)``; it is exact Gumbel noise except that its tails beyond a
    probability of about ``e**-43`` are cut and its uniforms lie on a grid
    of spacing ``2**-63``, so the draws are exact to that level and to the
    rounding of ``z_j + G_j`` in the working dtype (float32 for JAX without
    x64).

    With an int ``top_k`` below ``C`` only the ``top_k`` largest logits of
    each row are candidates, selected without sorting whole rows
    (``jax.lax.top_k`` for JAX), and noise is drawn for them alone.  Where
    more classes tie with the ``top_k``-th largest logit than that, the
    call sorts whole rows instead; under ``jax.jit`` this is a
    ``jax.lax.cond``.  Both give the same distribution, with different
    noise: for a given key, an int ``top_k`` and an array ``top_k`` of the
    same value draw differently.  An array ``top_k``, or ``top_p`` without
    ``top_k``, sorts whole rows.

    Under ``jax.jit`` the settings may be Python numbers (static) or
    arrays (traced, one value per row or a 0-d array); ``num_samples`` and
    ``axis`` are static.  ``jax.vmap`` over the logits and keys works too,
    but where it maps the logits, JAX turns the ``lax.cond`` above into a
    select that runs both paths: pass the rows as one batch instead.

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

    One setting per row: the first row greedy, the second sampled.

    >>> smk.sample(logits, temperature=np.array([0.0, 1.0]), num_samples=4, rng=0)[0]
    array([0, 0, 0, 0])
    >>> smk.sample(logits, temperature=[1.0, -1.0], rng=0)
    Traceback (most recent call last):
    ...
    ValueError: temperature must be finite and >= 0; got temperature[1] = -1.0
    """
    temperature = _temperature(temperature)
    top_k = _top_k(top_k)
    top_p = _top_p(top_p)
    min_p = _min_p(min_p)
    n_draws = _num_samples(num_samples)
    xp, layout, xw, _, _, widened = _prepare(logits, axis, name="logits", allow_many=False)
    backend = registry.backend_for(xw)
    gen = _random.generator(backend, xw, rng, "logits")
    xw = _stop_gradient(backend, xw)
    s = _settings(xp, layout, xw, temperature, top_k, top_p, min_p)
    _check_rows(xp, layout, xw, "logits")
    out_shape = layout.rest_shape + ((n_draws,) if n_draws > 1 else ())
    n = xw.shape[-1]
    _check_noise_size(layout.n_rows, n_draws, n)
    index = _index_dtype(xp)
    if n == 0:
        # Every row there is has nothing to draw from.
        return xp.full(out_shape, _UNDEFINED, dtype=index, device=num.device(xw))
    if s.scalar_greedy:
        first = xp.argmax(xw, axis=-1)
        idx = xp.broadcast_to(first[..., None], out_shape) if n_draws > 1 else first
        empty = _empty(xp.take_along_axis(xw, first[..., None], axis=-1)[..., 0])
        return _undefined(xp, xp.astype(idx, index), empty, s, n_draws)

    def whole_rows() -> tuple[Any, Any]:
        logq, empty = _truncated(xp, xw, s, widened, ranked=False)
        idx = _draw(xp, backend, gen, logq, n_draws, xw)
        return _greedy(xp, idx, s, lambda: xp.argmax(xw, axis=-1), n_draws, index), empty

    k = s.top_k
    if not isinstance(k, int) or k >= n:
        return _undefined(xp, *whole_rows(), s, n_draws)
    values, classes = _largest(xp, xw, k + 1)
    # More classes tie with the k-th largest logit than the k candidates
    # hold; ties at -inf do not count, as those classes are never drawn.
    overflow = xp.any((values[..., k] == values[..., k - 1]) & (values[..., k - 1] > -_INF))
    values, classes = values[..., :k], classes[..., :k]

    def candidates() -> tuple[Any, Any]:
        logq, empty = _truncated(xp, values, s, widened, ranked=True)
        rank = _draw(xp, backend, gen, logq, n_draws, xw)
        picked = xp.take_along_axis(classes, rank if n_draws > 1 else rank[..., None], axis=-1)
        return _greedy(xp, picked if n_draws > 1 else picked[..., 0], s, lambda: classes[..., 0], n_draws, index), empty

    return _undefined(xp, *_either(overflow, whole_rows, candidates), s, n_draws)


@validate.quiet
def truncate(
    logits: Any,
    *,
    temperature: Any = 1.0,
    top_k: Any = None,
    top_p: Any = None,
    min_p: Any = None,
    axis: int = -1,
) -> Any:
    r"""The scaled logits that :func:`sample` draws from, with every class it would not draw set to ``-inf``.

    .. math:: \operatorname{truncate}(x)_j = \begin{cases} (x_j - \max x) / T & j \in S \\ -\infty & j \notin S \end{cases}

    where ``S`` is the set of classes that survive ``top_k``, ``top_p`` and
    ``min_p`` (see :func:`sample`, which calls this same truncation).  The
    result is ``log q_j`` up to a constant per row, ``q`` being the
    truncated, renormalised distribution: ``softmax(truncate(x))`` is ``q``
    and ``argmax(truncate(x) + G)`` with Gumbel noise ``G`` is a draw of
    ``sample``.  The largest kept entry of each row is 0.

    Parameters
    ----------
    logits : array_like, numpy.ndarray, torch.Tensor or jax.Array
        Unnormalised log-probabilities, classes along ``axis``.
    temperature, top_k, top_p, min_p
        As in :func:`sample`: one number or one value per row.  Rows of
        temperature 0 (greedy) keep their argmax alone (the first, among
        ties), with the value 0.
    axis : int, default -1
        The class axis.

    Returns
    -------
    array of the logits' shape, floating dtype (float64 for integer input)
    and kind.  ``(x - max x) / T`` is computed as in :func:`sample` (in
    float64 for narrower inputs) and rounded once to the output dtype.
    Under tracing (``jax.jit``), rows with nothing to draw from (a NaN
    logit, every logit ``-inf``, a setting out of range) are ``-inf``
    throughout.  The result carries no gradient.

    Raises
    ------
    ValueError, TypeError
        As :func:`sample`, for the same logits and settings.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> x = np.array([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 3.0, 1.0]])
    >>> smk.truncate(x, top_k=2)
    array([[  0.,  -1., -inf, -inf],
           [-inf,   0.,   0., -inf]])
    >>> smk.truncate(x, temperature=[0.5, 0.0])
    array([[  0.,  -2.,  -4.,  -6.],
           [-inf,   0., -inf, -inf]])
    """
    temperature = _temperature(temperature)
    top_k = _top_k(top_k)
    top_p = _top_p(top_p)
    min_p = _min_p(min_p)
    xp, layout, xw, _, out_dtype, widened = _prepare(logits, axis, name="logits", allow_many=False)
    backend = registry.backend_for(xw)
    xw = _stop_gradient(backend, xw)
    s = _settings(xp, layout, xw, temperature, top_k, top_p, min_p)
    _check_rows(xp, layout, xw, "logits")
    n = xw.shape[-1]
    if n == 0:
        return layout.back(xp.astype(xw, out_dtype))
    minus_inf = xp.full_like(xw, -_INF)
    first = xp.arange(n, device=num.device(xw)) == xp.argmax(xw, axis=-1, keepdims=True)
    one_hot = xp.where(first, xp.zeros_like(xw), minus_inf)
    if s.scalar_greedy:
        logq, empty = one_hot, _empty(xp.max(xw, axis=-1))
    else:
        logq, empty = _truncated(xp, xw, s, widened, ranked=False)
        if s.greedy is not None:
            logq = xp.where(s.greedy, one_hot, logq)
    if s.invalid is not None:
        empty = empty | s.invalid
    logq = xp.where(empty[..., None], minus_inf, logq)
    return layout.back(xp.astype(logq, out_dtype))


@validate.quiet
def gumbel_max(logits: Any, gumbel: Any, *, temperature: Any = 1.0, axis: int = -1) -> Any:
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
    temperature : float or array, default 1.0
        ``T >= 0``, one number or one per row (an array broadcastable to the
        logits' shape without ``axis``); ``T = 0`` ignores the noise and
        returns the argmax.
    axis : int, default -1
        The class axis of ``logits``.

    Returns
    -------
    integer array of ``gumbel``'s shape without the class axis.  Under
    tracing (``jax.jit``, ``jax.vmap``), a draw from a row with a NaN logit,
    with every logit ``-inf`` or with a temperature out of range, or whose
    noise is not finite, is ``-1``, which is no class.

    Notes
    -----
    Adds the noise to ``z_j = (x_j - max x) / T`` (see :func:`sample`),
    which is ``log_softmax(x / T)_j`` up to a constant per row and takes its
    limits: a row with several ``+inf`` logits chooses uniformly among them
    instead of always the first, and ``-inf`` logits are never chosen.  Ties
    (of probability 0 for continuous noise) go to the first index.  Raises
    ``ValueError`` for NaN logits, fully masked rows, a temperature out of
    range and non-finite noise in concrete arrays; these checks are skipped
    under tracing (see Returns).

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> g = np.random.default_rng(0).gumbel(size=(5, 3))
    >>> smk.gumbel_max(np.array([0.0, 1.0, -np.inf]), g)
    array([1, 0, 1, 1, 1])
    >>> smk.gumbel_max(np.array([[0.0, 1.0, -np.inf], [2.0, 0.0, 0.0]]), g[:2], temperature=[1.0, 0.0])
    array([1, 0])
    """
    temperature = _temperature(temperature)
    xp, layout, xw, _, _, widened = _prepare(logits, axis, name="logits", allow_many=False)
    g = validate.same_namespace(xp, gumbel, "gumbel")
    _, g, _ = validate.real_array(g, "gumbel")
    lead = g.ndim - len(layout.shape)
    if lead < 0 or tuple(g.shape[lead:]) != layout.shape:
        raise ValueError(
            f"gumbel must have the shape of logits {layout.shape}, optionally with extra leading axes; got {tuple(g.shape)}"
        )
    s = _settings(xp, layout, xw, temperature, None, None, None)
    _check_rows(xp, layout, xw, "logits")
    out_shape = tuple(g.shape[:lead]) + layout.rest_shape
    index = _index_dtype(xp)
    if xw.shape[-1] == 0:
        return xp.full(out_shape, _UNDEFINED, dtype=index, device=num.device(xw))
    first = xp.argmax(xw, axis=-1)
    if s.scalar_greedy:
        empty = _empty(xp.take_along_axis(xw, first[..., None], axis=-1)[..., 0])
        return _undefined(xp, xp.astype(xp.broadcast_to(first, out_shape), index), empty, s, 1)
    _CHECKS.require_none(xp, ~xp.isfinite(g), _first_bad("gumbel", g, "gumbel must be finite"))
    gw = Layout(xp, tuple(g.shape), (lead + layout.axes[0],)).forward(xp.astype(g, xw.dtype))
    z, empty = _scaled(xp, xw, s.temperature, widened)
    idx = xp.argmax(z + gw, axis=-1)
    noisy = xp.any(~xp.isfinite(gw), axis=-1)
    if s.greedy is not None:
        idx = xp.where(s.greedy[..., 0], first, idx)
        noisy = noisy & ~s.greedy[..., 0]
    return _undefined(xp, xp.astype(idx, index), empty | noisy, s, 1)


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
    NaN makes its row NaN.  Nothing here reads values, so the same holds
    under ``jax.jit`` and ``jax.vmap`` (with ``tau`` and ``hard`` static and
    the key traced or not), and gradients go through ``jax.grad`` there.

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
