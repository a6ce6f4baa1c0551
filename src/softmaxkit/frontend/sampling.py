"""Drawing from softmax distributions: sample, truncate, gumbel_max and gumbel_softmax.

All of them use the Gumbel-max trick: with ``G_j`` independent standard
Gumbel noise, ``argmax_j (log p_j + G_j)`` is distributed exactly as
``Categorical(p)``, and the log-probabilities need not be normalised.  For
``log p_j`` they use the shifted, scaled logits ``z_j = (x_j - max x) / T``,
which differ from it by a constant per row, with
:func:`softmaxkit.log_softmax`'s limits: ``+inf`` logits share their mass
and ``-inf`` logits are never drawn.  The noise is made as described in
``softmaxkit.frontend.random``: it never takes ``log(0)``.

The truncation rule, stated once (:func:`_rules`).  The classes of a row
are ranked by decreasing logit, ties by increasing index.  ``top_k``,
``top_p`` and ``min_p`` each keep a prefix of that ranking, so the classes
kept form a prefix too: every class ranked before the last one kept is
kept.  :func:`truncate` returns it and :func:`sample` draws from it.

Candidates.  Where a truncation is asked for, the ``K`` largest logits of
each row are selected first (one partial selection: ``torch.topk``,
``jax.lax.top_k``; ``K = top_k + 1``, or :data:`_CANDIDATES` for
``top_p`` and ``min_p`` alone), and the rule runs on them in the working
precision.  When the last candidate of every row is dropped, the
candidates hold every class kept and the draw is made from them alone;
otherwise (ties beyond ``top_k``, a nucleus wider than the candidates) the
call works on whole rows.  That choice is a branch on a 0-d boolean: the
backend's ``cond`` (``jax.lax.cond``, ``torch.cond`` under
``torch.compile``; on CPU in eager code a read of the boolean).

Whole rows draw in two steps.  Split a row into blocks of ``B`` classes
(``B`` about the square root of the row's length): a block is drawn by
Gumbel-max over the logarithms of the blocks' masses ``sum exp(z_j)``,
then a class by Gumbel-max within the block.  The product of the two is
``exp(z_j) / sum exp(z)``: exactly the categorical draw, with noise for
about ``2 sqrt(C)`` entries instead of ``C``.  The masses are sums in
the working precision (float64; float32 for JAX without x64 and for torch
tensors on accelerators, the torch backend's rule), so a block's
probability is as exact as its classes'.  Whole rows go through in chunks
of rows (:func:`_by_rows`) so that their temporaries are reused.

Exact sums.  ``top_p`` compares the mass ranked before a class with
``top_p`` times the row's mass, and ``return_logprobs`` needs the
normaliser: both come from :func:`_split`, which writes each weight as a
part on a grid coarse enough that any sum of those parts is exact in any
order, plus a remainder below the grid's step.  The comparison with
``top_p`` is then made exactly (:func:`_below_share`), so the boundary
class is decided by the weights alone and not by the summation.

Values and tracing.  Settings given as Python numbers are checked at once.
Checks that read array values (NaN logits, fully masked rows, per-row
settings out of range, non-finite noise) raise ``ValueError`` on concrete
arrays and are skipped under tracing (``jax.jit``, ``jax.vmap``,
``torch.compile``), where no value can be read (``validate.ValueChecks``);
there a draw from such a row is the class index -1, which no class has.
``return_valid=True`` flags those rows instead of raising.  Nothing
branches in Python on a traced value, so the functions run inside
``jax.jit`` and ``torch.compile(fullgraph=True)``.

Settings per row.  ``temperature``, ``top_k``, ``top_p`` and ``min_p`` are
each one number or an array broadcastable to the logits' shape without the
class axis.  Numbers and arrays go through the same arithmetic, so a row
drawn with an array of settings equals the same row drawn with its own
settings as numbers (same noise) wherever both take the same path.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from softmaxkit import numerics as num
from softmaxkit.frontend import random as _random
from softmaxkit.frontend import registry, validate
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
# top_p or min_p without top_k: the candidates tried before whole rows.
_CANDIDATES = 1024
# Rows of at most this many classes draw in one step, noise for every class.
_ONE_STEP = 64
# Working-precision bytes of a chunk of whole rows (:func:`_by_rows`): few
# enough chunks that the per-call work stays a few dozen array operations,
# small enough that a chunk's temporaries are reused rather than mapped
# afresh from the operating system each time.
_CHUNK_BYTES = 1 << 23
_TIES = ("keep", "index")


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


def _ties(value: Any) -> str:
    if not isinstance(value, str) or value not in _TIES:
        raise ValueError(f"top_k_ties must be one of {', '.join(map(repr, _TIES))}; got {validate.describe(value)}")
    return value


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
    shape ``(rows, 1)`` in the working dtype (``top_k``: the index dtype,
    clipped to ``[1, C]``).

    ``greedy`` marks the rows of an array temperature that are 0 (their
    ``temperature`` entry is replaced by 1); ``invalid`` the rows whose
    settings are out of range, of shape ``(rows,)`` (only under tracing,
    where they are not refused).  Both are None where there are none to
    mark.  ``top_k_bound`` is the largest ``top_k`` of an array whose
    values can be read, else None.  Numbers that truncate nothing
    (``top_k >= C``, ``top_p = 1``, ``min_p = 0``) are None.
    """

    temperature: Any
    top_k: Any
    top_p: Any
    min_p: Any
    greedy: Any
    invalid: Any
    top_k_bound: int | None

    @property
    def scalar_greedy(self) -> bool:
        return self.greedy is None and isinstance(self.temperature, (int, float)) and self.temperature == 0


def _row_setting(xp: Any, backend: Any, layout: Layout, work: Any, dev: Any, value: Any, name: str, rule: _Rule) -> tuple[Any, Any]:
    """A per-row setting as ``(array of shape (rows, 1), rows out of range of shape (rows,))``.

    A number (or None) passes through, with None.  The array is of the
    logits' kind (NumPy arrays and lists are converted), in the working
    dtype (``top_k``: the index dtype, clipped to ``[1, C]``).  Concrete
    values out of range raise ``ValueError`` naming the first one and its
    index in the array as given; under tracing their rows are returned.
    """
    if value is None or not _per_row(value):
        return value, None
    v = value if backend is not None and registry.backend_for(value) is backend else validate.same_namespace(xp, value, name)
    if not rule.integer:
        v = xp.astype(validate.as_float(xp, v, name), work)
    elif not xp.isdtype(v.dtype, "integral"):
        raise TypeError(f"{name} must be an int >= 1, an integer array or None; got an array of dtype {v.dtype}")
    bad = rule.out_of_range(v)
    _CHECKS.require_none(xp, bad, _first_bad(name, v, rule.message))
    if rule.integer:
        index = xp.astype(v, _index_dtype(xp))
        one, top = xp.ones_like(index), xp.full_like(index, max(layout.n, 1))
        v = xp.where(index < 1, one, xp.where(index > top, top, index))
    shape = layout.rest_shape
    v = validate.broadcast_to(xp, v, shape, name, "the logits without the class axis")
    rows = (layout.n_rows,)
    return xp.asarray(xp.reshape(v, rows + (1,)), device=dev), xp.asarray(xp.reshape(xp.broadcast_to(bad, shape), rows), device=dev)


def _settings(xp: Any, backend: Any, layout: Layout, work: Any, dev: Any, temperature: Any, top_k: Any, top_p: Any, min_p: Any) -> _Settings:
    T, bad_t = _row_setting(xp, backend, layout, work, dev, temperature, "temperature", _TEMPERATURE)
    k, bad_k = _row_setting(xp, backend, layout, work, dev, top_k, "top_k", _TOP_K)
    p, bad_p = _row_setting(xp, backend, layout, work, dev, top_p, "top_p", _TOP_P)
    m, bad_m = _row_setting(xp, backend, layout, work, dev, min_p, "min_p", _MIN_P)
    greedy = None
    if bad_t is not None:
        greedy = T == 0
        T = xp.where(greedy, xp.ones_like(T), T)
    invalid = None
    for bad in (bad_t, bad_k, bad_p, bad_m):
        if bad is not None:
            invalid = bad if invalid is None else invalid | bad
    bound = None
    if bad_k is not None and _concrete(k):
        # Reading the largest top_k sizes the candidates (a host read, as the check above).
        bound = int(xp.max(k)) if layout.n_rows else 1
    elif isinstance(k, int):
        k, bound = (None, None) if k >= layout.n else (k, k)
    if isinstance(p, float) and p >= 1.0:
        p = None
    if isinstance(m, float) and m <= 0.0:
        m = None
    return _Settings(T, k, p, m, greedy, invalid, bound)


def _num_samples(value: Any) -> int:
    n = validate.count(value, "num_samples", 1)
    if n > _MAX_ARRAY_BYTES:
        raise ValueError(f"num_samples={n} is too many: an array axis holds at most {_MAX_ARRAY_BYTES} entries")
    return n


def _index_dtype(xp: Any) -> Any:
    """The dtype of the namespace's argmax (int64, or int32 for JAX without x64).

    Read off a one-element argmax each call: a cache would be state that
    torch.compile guards on, and recompiles for once it is filled.
    """
    return xp.argmax(xp.zeros((1,)), axis=0).dtype


# --- rows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rows:
    """One call's logits as ``(rows, C)`` in their own floating dtype (no
    copy where the class axis is last), with what the steps below share."""

    xp: Any
    backend: Any
    layout: Layout
    x: Any
    work: Any
    widened: bool
    out_dtype: Any
    s: _Settings
    ties: str
    index: Any

    @property
    def n(self) -> int:
        return self.x.shape[-1]

    @property
    def n_rows(self) -> int:
        return self.x.shape[0]

    @property
    def device(self) -> Any:
        return num.device(self.x)

    def scalar(self, value: float) -> Any:
        """``value`` as a 0-d array of the working dtype."""
        return self.xp.asarray(value, dtype=self.work, device=self.device)

    def part(self, rows: slice) -> _Rows:
        """These rows alone, with their settings."""
        s = self.s
        cut = [v[rows] if hasattr(v, "shape") else v for v in (s.temperature, s.top_k, s.top_p, s.min_p, s.greedy, s.invalid)]
        settings = _Settings(*cut, s.top_k_bound)
        return _Rows(self.xp, self.backend, self.layout, self.x[rows], self.work, self.widened, self.out_dtype, settings, self.ties, self.index)


def _by_rows(r: _Rows, step: Callable[[_Rows, slice], tuple[Any, ...]]) -> tuple[Any, ...]:
    """``step(rows, their slice)`` over chunks of whole rows, the results joined along the rows.

    Concrete arrays go in chunks of about :data:`_CHUNK_BYTES` of the
    working dtype, so that the temporaries of whole rows are reused; traced
    ones in one piece (the compiler fuses them).
    """
    per = max(1, _CHUNK_BYTES // max(1, r.n * (r.xp.finfo(r.work).bits // 8))) if _concrete(r.x) else r.n_rows
    if per >= r.n_rows:
        return step(r, slice(None))
    parts = [step(r.part(slice(i, i + per)), slice(i, i + per)) for i in range(0, r.n_rows, per)]
    return tuple(r.xp.concat([p[j] for p in parts], axis=0) for j in range(len(parts[0])))


def _rows(logits: Any, axis: Any, temperature: Any, top_k: Any, top_p: Any, min_p: Any, ties: str = "keep") -> _Rows:
    temperature, top_k, top_p, min_p = _temperature(temperature), _top_k(top_k), _top_p(top_p), _min_p(min_p)
    backend = registry.backend_for(logits)
    if backend is not None and backend.namespace is not None:
        # No namespace lookup: torch.compile would trace it.
        xp = backend.namespace
        x = validate.as_float(xp, logits, "logits")
        out_dtype = x.dtype
    else:
        xp, x, out_dtype = validate.real_array(logits, "logits")
        backend = registry.backend_for(x)
    (ax,) = validate.axis(axis, x.ndim, allow_many=False)
    if backend is not None and backend.working_dtype is not None:
        work, widened = backend.working_dtype(out_dtype, num.device(x))
    else:
        work, widened = num.working_dtype(xp, out_dtype, x)
    layout = Layout(xp, tuple(x.shape), (ax,))
    x = _stop_gradient(backend, layout.rows(x))
    s = _settings(xp, backend, layout, work, num.device(x), temperature, top_k, top_p, min_p)
    return _Rows(xp, backend, layout, x, work, widened, out_dtype, s, ties, _index_dtype(xp))


def _check_rows(r: _Rows, empty: Any) -> None:
    """ValueError for a NaN logit and for a row with every logit ``-inf`` (nothing to draw), on concrete arrays.

    ``empty`` marks the rows whose largest logit is NaN or ``-inf``; one
    read of ``any(empty)`` decides, and the messages are made only when
    raising.  Under tracing nothing is checked.
    """
    xp = r.xp
    if not _CHECKS.readable(empty) or not bool(xp.any(empty)):
        return
    nan = r.layout.back_rows(xp.isnan(r.x))
    if bool(xp.any(nan)):
        pos = validate.first_position(nan)
        raise ValueError(f"logits{list(pos)} is NaN; a distribution to sample from needs real logits (-inf masks a class)")
    pos = validate.first_position(xp.reshape(empty, r.layout.rest_shape)) if r.layout.rest_shape else ()
    raise ValueError(
        f"logits row {list(pos)} (index without the class axis) is fully masked: every entry is -inf, so there "
        f"is nothing to sample; give at least one finite or +inf logit per row"
    )


def _z(r: _Rows, v: Any, a: Any) -> Any:
    """``z = (v - a) / T`` in the working dtype, ``a`` the rows' largest logits (shape ``(rows, 1)``).

    Entries equal to ``a`` get 0, which gives ``log_softmax``'s limits: in a
    row holding ``+inf``, 0 at its ``+inf`` entries and ``-inf`` elsewhere.
    ``z`` is never NaN for a row without NaN and a finite ``T > 0``.
    Logits narrower than float64 are widened to it, where the difference is
    exact and cannot overflow, and the quotient is rounded once.  Otherwise
    the halves of ``v`` and ``a`` are subtracted and the quotient doubled,
    so that a row spanning more than the largest finite number does not
    overflow where ``(v - a) / T`` need not; the halving and doubling are
    exact (subnormal logits aside), and the difference is rounded once.
    """
    xp, T = r.xp, r.s.temperature
    vw, aw = xp.astype(v, r.work, copy=False), xp.astype(a, r.work, copy=False)
    if r.widened and r.work == xp.float64:
        z = vw - aw
        if not (isinstance(T, float) and T == 1.0):
            z = z / T
    else:
        z = ((vw * 0.5 - aw * 0.5) / T) * 2.0
    return xp.where(v == a, r.scalar(0.0), z)


def _exp(r: _Rows, z: Any) -> Any:
    """The weights ``exp(z)``: ``p_j / max p``, in ``[0, 1]``."""
    return r.xp.exp(z)


# --- exact sums -----------------------------------------------------------------------------


def _split(r: _Rows, w: Any) -> tuple[Any, Any]:
    """``w = hi + lo`` exactly, for weights in ``[0, 1]`` along the last axis.

    ``hi`` lies on the grid of step ``2**(ceil(log2 m) - p + 2)``, ``m`` the
    row length and ``p`` the working precision's significand bits, so any
    sum of a row's ``hi`` is a whole number of steps below ``2**p``: exact,
    in any order (no summation order needs to be known, nor compensated).
    ``|lo|`` is at most half a step, so the rounding of sums of ``lo`` is
    ``2**-p`` times smaller again: about ``m 2**-2p`` of the row's mass in
    all (float64).
    """
    xp = r.xp
    bits = 1 - round(math.log2(float(xp.finfo(r.work).eps)))
    step = 2.0 ** (math.ceil(math.log2(max(w.shape[-1], 1))) - bits + 2)
    # Scaling by a power of two is exact: multiply by the reciprocal.
    hi = xp.round(w * (1.0 / step)) * step
    return hi, w - hi


def _mass(r: _Rows, w: Any) -> tuple[Any, Any]:
    """Each row's sum of ``w`` as an exact part and a small remainder, of shape ``(rows, 1)``."""
    hi, lo = _split(r, w)
    return r.xp.sum(hi, axis=-1, keepdims=True), r.xp.sum(lo, axis=-1, keepdims=True)


def _two_product_error(r: _Rows, a: Any, b: Any, ab: Any) -> Any:
    """``a * b - ab`` exactly, for ``ab = fl(a * b)`` (Dekker's product with Veltkamp's split)."""
    factor = 2.0**27 + 1.0 if r.work == r.xp.float64 else 2.0**12 + 1.0

    def halves(u: Any) -> tuple[Any, Any]:
        c = u * factor
        high = c - (c - u)
        return high, u - high

    a_hi, a_lo = halves(a)
    b_hi, b_lo = halves(b)
    return ((a_hi * b_hi - ab) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo


def _below_share(r: _Rows, before: tuple[Any, Any], share: Any, total: tuple[Any, Any]) -> Any:
    """Whether ``before < share * total``, for sums given as (exact part, remainder).

    ``share * total_hi`` is split into its rounded value and its exact
    error, so the test is ``(share*total_hi - before_hi) + (error +
    share*total_lo - before_lo) > 0``: the first difference is rounded
    relative to itself (its sign is exact), the second is ``2**-p`` times
    smaller.  Only a difference below about ``2**-2p`` of the mass can be
    misjudged.
    """
    (b_hi, b_lo), (t_hi, t_lo) = before, total
    scaled = share * t_hi
    error = _two_product_error(r, share, t_hi, scaled)
    return (scaled - b_hi) + ((error + share * t_lo) - b_lo) > 0


# --- the truncation rule --------------------------------------------------------------------


def _rules(r: _Rows, v: Any, z: Any, e: Any, total: tuple[Any, Any] | None) -> Any:
    """The classes kept, for rows ranked by decreasing logit, ties by increasing index.

    ``v`` holds the logits so ranked (whole rows or their first entries),
    ``z`` and ``e`` their scaled logits and weights; ``total`` is the
    row's mass (exact part and remainder) where ``v`` holds part of a row
    and ``top_p`` needs the rest, else None.  In this order:

    1. ``top_k``: the classes whose logit is at least the ``k``-th largest
       (``ties="keep"``), or the first ``k`` (``ties="index"``);
    2. ``top_p`` on the classes kept so far: a class is kept when the mass
       of the classes kept with a larger logit is below ``top_p`` times the
       mass kept, so that ties are kept together and the largest logit
       always is; ``top_p = 1`` keeps every class, however light;
    3. ``min_p``: the classes with ``e_j = p_j / max p >= min_p``.

    ``-inf`` logits are never kept.  Each step keeps a prefix of the
    ranking, so the result is one too.
    """
    xp, s = r.xp, r.s
    keep = z > -_INF
    m = v.shape[-1]
    k = s.top_k
    if k is not None:
        if r.ties == "index":
            keep = keep & (xp.arange(m, device=r.device) < k)
        elif isinstance(k, int):
            keep = keep & (v >= v[:, min(k, m) - 1 : min(k, m)])
        else:
            keep = keep & (v >= xp.take_along_axis(v, k - 1, axis=-1))
    p = s.top_p
    if p is not None:
        w = xp.where(keep, e, r.scalar(0.0))
        hi, lo = _split(r, w)
        c_hi, c_lo = xp.cumulative_sum(hi, axis=-1), xp.cumulative_sum(lo, axis=-1)
        kept_mass = (c_hi[:, -1:], c_lo[:, -1:]) if total is None else total
        # The mass ranked before each class: its inclusive sum less itself (exact for the grid part).
        below = _below_share(r, (c_hi - hi, c_lo - lo), p if _per_row(p) else r.scalar(p), kept_mass)
        n_kept = xp.sum(xp.astype(below, xp.int32), axis=-1, keepdims=True)
        last = xp.take_along_axis(v, _last_index(r, n_kept), axis=-1)
        nucleus = v >= last
        if _per_row(p):
            nucleus = nucleus | (p >= 1)
        keep = keep & nucleus
    if s.min_p is not None:
        keep = keep & (e >= s.min_p)
    return keep


def _last_index(r: _Rows, count: Any) -> Any:
    """The position of the last of ``count`` entries kept, in the index dtype: ``count - 1``, or 0 where none is."""
    xp = r.xp
    index = xp.astype(count, r.index)
    return xp.where(index > 0, index - 1, xp.zeros_like(index))


def _candidate_count(r: _Rows) -> int | None:
    """How many of each row's largest logits to try first, or None for whole rows at once.

    For ``top_k`` that is ``k + 1``, so that a tie across the boundary
    shows; logits of 16 bits or less tie often (bfloat16 has 8 significant
    bits), and get room for ``k / 4 + 8`` more.
    """
    s, n = r.s, r.n
    if s.top_k is not None:
        if s.top_k_bound is None:
            return None
        k = s.top_k_bound
        narrow = r.xp.finfo(r.x.dtype).bits <= 16
        return min(n, k + 1 + (k // 4 + 8 if narrow else 0))
    if s.top_p is not None or s.min_p is not None:
        return min(n, _CANDIDATES)
    return None


def _largest(r: _Rows, k: int) -> tuple[Any, Any]:
    """The ``k`` largest entries of each row in decreasing order, ties in
    index order, and their indices; NaN first (as larger than ``+inf``)."""
    xp, x = r.xp, r.x
    if r.backend is not None and r.backend.top_k is not None:
        return r.backend.top_k(x, k)
    order = xp.argsort(x, axis=-1, descending=True, stable=True)
    if k < x.shape[-1]:
        order = order[:, :k]
    return xp.take_along_axis(x, order, axis=-1), order


def _either(r: _Rows, pred: Any, if_true: Callable[[], Any], if_false: Callable[[], Any]) -> Any:
    """``if_true()`` where the 0-d boolean ``pred`` holds, else ``if_false()``: the backend's ``cond``."""
    if r.backend is not None and r.backend.cond is not None:
        return r.backend.cond(pred, if_true, if_false)
    return if_true() if bool(pred) else if_false()


class _Candidates(NamedTuple):
    """The truncation on the candidates: logits ``v`` (ranked), classes, scaled logits ``z``, weights ``e``, ``keep``."""

    v: Any
    classes: Any
    z: Any
    e: Any
    keep: Any


def _run(r: _Rows, a: Any, candidates: tuple[Any, Any] | None, on_candidates: Callable, on_rows: Callable) -> Any:
    """Apply the truncation: ``on_candidates(_Candidates)`` where the candidates hold every class kept, else
    ``on_rows(rows, their slice, z)`` with ``z`` the scaled logits of whole rows, ``-inf`` where dropped,
    over chunks of rows (:func:`_by_rows`).  Both return tuples of arrays with a leading rows axis.

    ``candidates`` are ``(values, classes)`` from :func:`_largest`, or None.
    """
    xp, s = r.xp, r.s

    def whole(kth: Any) -> tuple[Any, ...]:
        return _by_rows(r, lambda rp, rows: _whole(rp, a[rows], None if kth is None else kth[rows], lambda z: on_rows(rp, rows, z)))

    if candidates is None:
        return whole(None)
    v, classes = candidates
    K = v.shape[-1]
    z = _z(r, v, a)
    e = _exp(r, z)
    total = None
    if s.top_p is not None and s.top_k is None and K < r.n:
        total = _by_rows(r, lambda rp, rows: _mass(rp, _exp(rp, _z(rp, rp.x, a[rows]))))
    keep = _rules(r, v, z, e, total)
    found = _Candidates(v, classes, z, e, keep)
    if K == r.n:
        return on_candidates(found)
    # The candidates hold every class kept when the last one is dropped
    # (the kept classes are a prefix of the ranking) ...
    enough = ~keep[:, -1]
    if s.top_k is not None and r.ties == "index":
        # ... and, for exactly k by index, when the classes tied with the
        # k-th largest end before the last candidate: the selection holds
        # all of them, in index order, and not some other tied classes.
        k = s.top_k
        kth = v[:, k - 1] if isinstance(k, int) else xp.take_along_axis(v, k - 1, axis=-1)[:, 0]
        enough = enough & ((v[:, -1] < kth) | (kth == -_INF))
    # The k-th largest logit is taken inside the branch: torch.cond refuses
    # branches that capture views of the tensors they capture.
    kth = (lambda: v[:, s.top_k - 1 : s.top_k]) if isinstance(s.top_k, int) else (lambda: None)
    return _either(r, xp.all(enough), lambda: on_candidates(found), lambda: whole(kth()))


def _whole(r: _Rows, a: Any, kth: Any, on_rows: Callable) -> Any:
    """``on_rows(z)`` for whole rows: ``z`` where :func:`_rules` keeps a class, ``-inf`` elsewhere.

    Without ``top_p``, with ``top_k`` given as a number (``kth``, its
    ``k``-th largest logit, from the candidates) and ties kept, each rule
    is a test of one class; otherwise whole rows are sorted and the rule
    runs on them, giving the last class kept, ``(v*, i*)``: a class is kept
    when its logit exceeds ``v*``, or equals it with an index at most
    ``i*``.
    """
    xp, s, x = r.xp, r.s, r.x
    z = _z(r, x, a)
    sort = s.top_p is not None or (s.top_k is not None and (kth is None or r.ties == "index"))
    if not sort:
        if kth is None and s.min_p is None:
            return on_rows(z)
        keep = z > -_INF
        if kth is not None:
            keep = keep & (x >= kth)
        if s.min_p is not None:
            keep = keep & (_exp(r, z) >= s.min_p)
        return on_rows(xp.where(keep, z, r.scalar(-_INF)))
    order = xp.argsort(x, axis=-1, descending=True, stable=True)
    v = xp.take_along_axis(x, order, axis=-1)
    zs = _z(r, v, a)
    keep = _rules(r, v, zs, _exp(r, zs), None)
    last = _last_index(r, xp.sum(xp.astype(keep, xp.int32), axis=-1, keepdims=True))
    v_last, i_last = xp.take_along_axis(v, last, axis=-1), xp.take_along_axis(order, last, axis=-1)
    position = xp.arange(r.n, device=r.device)
    kept = (z > -_INF) & ((x > v_last) | ((x == v_last) & (position <= i_last)))
    return on_rows(xp.where(kept, z, r.scalar(-_INF)))


def _prefix_mask(r: _Rows, c: _Candidates) -> Any:
    """The classes of whole rows that the candidates keep (see :func:`_whole` for ``(v*, i*)``)."""
    xp, x = r.xp, r.x
    last = _last_index(r, xp.sum(xp.astype(c.keep, xp.int32), axis=-1, keepdims=True))
    v_last, i_last = xp.take_along_axis(c.v, last, axis=-1), xp.take_along_axis(c.classes, last, axis=-1)
    return (x > v_last) | ((x == v_last) & (xp.arange(r.n, device=r.device) <= i_last))


# --- greedy ---------------------------------------------------------------------------------


def _first_argmax(xp: Any, x: Any) -> tuple[Any, Any]:
    """``(index, value)`` of each row's largest entry (last axis), the first among ties, of shape ``(rows,)``.

    The maxima of blocks of the row come from one vectorised reduction; the
    first block holding the row's maximum is the argmax of those few, and
    the index the first place in that block equal to it: far cheaper than a
    plain ``argmax`` over long rows.  A row holding NaN has value NaN.
    """
    rows, n = x.shape
    width = _block_width(n)
    blocks = n // width
    if blocks < 2:
        i = xp.argmax(x, axis=-1)
        return i, xp.take_along_axis(x, i[:, None], axis=-1)[:, 0]
    block_max = xp.max(xp.reshape(x[:, : blocks * width], (rows, blocks, width)), axis=-1)
    if n > blocks * width:
        block_max = xp.concat([block_max, xp.max(x[:, blocks * width :], axis=-1, keepdims=True)], axis=-1)
    b = xp.argmax(block_max, axis=-1)
    top = xp.take_along_axis(block_max, b[:, None], axis=-1)
    at = xp.minimum(b[:, None] * width + xp.arange(width, device=num.device(x)), xp.asarray(n - 1, dtype=b.dtype))
    within = xp.argmax(xp.astype(xp.take_along_axis(x, at, axis=-1) == top, xp.int8), axis=-1)
    return b * width + within, top[:, 0]


# --- drawing --------------------------------------------------------------------------------


def _block_width(n: int) -> int:
    """Classes per block for rows of ``n`` classes: a power of two near ``sqrt(n)``, at least 16."""
    return 1 << max(4, (max(n, 1).bit_length() + 1) // 2)


def _row_noise_shapes(n: int) -> tuple[int, ...]:
    """The noise per draw of a whole row: one entry per class, or per block and per class of a block."""
    if n <= _ONE_STEP:
        return (n,)
    width = _block_width(n)
    return (-(-n // width), width)


def _check_noise_size(n_rows: int, n_draws: int, n_classes: int, per_draw: int) -> None:
    """ValueError when the noise for the draws cannot be one array (two 32-bit words per entry)."""
    nbytes = n_rows * n_draws * per_draw * 8
    if nbytes > _MAX_ARRAY_BYTES:
        raise ValueError(
            f"num_samples={n_draws} is too many for {n_rows} row(s) of {n_classes} classes: their noise "
            f"would take {nbytes} bytes, more than an array can hold ({_MAX_ARRAY_BYTES})"
        )


def _log_normaliser(r: _Rows, w: Any) -> Any:
    """``log sum w`` for weights whose largest is 1, as ``log1p`` of the others' exact sum (shape ``(rows, 1)``)."""
    hi, lo = _mass(r, w)
    return r.xp.log1p((hi - 1.0) + lo)


def _draw_ranked(r: _Rows, z: Any, noise: Any, logprobs: bool) -> tuple[Any, ...]:
    """Gumbel-max over the last axis of ``z`` (``-inf`` where dropped) with
    ``noise`` of shape ``(rows, draws, m)``: the positions drawn, of shape
    ``(rows, draws)``, and their log-probabilities."""
    xp = r.xp
    at = xp.argmax(z[:, None, :] + noise, axis=-1)
    if not logprobs:
        return (at,)
    return at, xp.take_along_axis(z, at, axis=-1) - _log_normaliser(r, _exp(r, z))


def _draw_blocks(r: _Rows, z: Any, blocks: Any, within: Any, logprobs: bool) -> tuple[Any, ...]:
    """The two-step draw over whole rows (module docstring): a block by
    Gumbel-max over ``log`` of the blocks' masses with ``blocks`` noise of
    shape ``(rows, draws, n_blocks)``, then a class within it with
    ``within`` noise of shape ``(rows, draws, width)``."""
    xp = r.xp
    rows, n = z.shape
    draws, width = within.shape[1], within.shape[2]
    e = _exp(r, z)
    full = n // width
    mass = xp.sum(xp.reshape(e[:, : full * width], (rows, full, width)), axis=-1)
    if n > full * width:
        mass = xp.concat([mass, xp.sum(e[:, full * width :], axis=-1, keepdims=True)], axis=-1)
    block = xp.argmax(xp.log(mass)[:, None, :] + blocks, axis=-1)
    at = block[:, :, None] * width + xp.arange(width, device=r.device)
    inside = at < n
    at = xp.where(inside, at, xp.zeros_like(at))
    zb = xp.reshape(xp.take_along_axis(z, xp.reshape(at, (rows, draws * width)), axis=-1), (rows, draws, width))
    zb = xp.where(inside, zb, r.scalar(-_INF))
    pick = xp.argmax(zb + within, axis=-1)
    drawn = block * width + pick
    if not logprobs:
        return (drawn,)
    zd = xp.take_along_axis(zb, pick[:, :, None], axis=-1)[:, :, 0]
    return drawn, zd - _log_normaliser(r, e)


def _stop_gradient(backend: Any, a: Any) -> Any:
    return a if backend is None or backend.stop_gradient is None else backend.stop_gradient(a)


def _greedy_rows(r: _Rows) -> tuple[Any, Any]:
    """``(first argmax, rows with nothing to draw)`` of shape ``(rows,)``."""
    i, top = _first_argmax(r.xp, r.x)
    return i, ~(top > -_INF)


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
    top_k_ties: str = "keep",
    return_logprobs: bool = False,
    return_valid: bool = False,
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

    and the survivors are renormalised.  ``S`` is exactly the set that
    :func:`truncate` keeps.  Every setting is one number for all rows, or an
    array with one value per row.

    Parameters
    ----------
    logits : array_like, numpy.ndarray, torch.Tensor or jax.Array
        Unnormalised log-probabilities, classes along ``axis``; shape
        ``(..., C, ...)``.
    temperature : float or array, default 1.0
        ``T >= 0``, finite, applied to the logits.  ``T = 0`` is greedy
        decoding: the argmax (the first, among ties), with no randomness and
        no truncation (the argmax survives every truncation).
    top_k : int >= 1, integer array or None, optional
        Keep the ``k`` largest probabilities.  ``k >= C`` keeps all.  Ties
        at the boundary follow ``top_k_ties``.
    top_p : float in (0, 1], array or None, optional
        Nucleus sampling.  Ranked by decreasing probability, a class is kept
        if the mass of the classes ranked before it is below ``top_p`` of the
        mass kept by ``top_k``, so the most probable class is always kept.
        Ties at the boundary are all kept (every class whose logit equals
        the last one kept).  The masses are exact sums of the float64
        weights ``exp(z_j)`` (float32 for JAX without x64), and the
        comparison with ``top_p`` is exact, so only the rounding of the
        weights themselves decides.  ``top_p = 1`` keeps everything.
    min_p : float in [0, 1], array or None, optional
        Keep classes with ``p_j >= min_p * max p`` (ties kept).  The ratio
        ``p_j / max p`` is computed directly as ``exp((x_j - max x) / T)``.
    num_samples : int >= 1, default 1
        Independent draws (with replacement) per row.
    axis : int, default -1
        The class axis.
    rng : optional
        NumPy input: a ``numpy.random.Generator``, an int seed, or None (fresh
        entropy).  PyTorch: a ``torch.Generator`` (on the logits' device or
        the CPU), an int seed, or None (torch's global generator, seeded by
        ``torch.manual_seed``).  JAX: a key from ``jax.random.key``
        (required; it may be traced).  A seed, key or freshly seeded
        generator gives reproducible draws.
    top_k_ties : {"keep", "index"}, default "keep"
        ``"keep"`` keeps every class whose logit equals the ``k``-th largest,
        so more than ``k`` classes may remain and the result does not depend
        on the order of the classes.  ``"index"`` keeps exactly ``k``:
        ranked by decreasing logit, ties by increasing index.
    return_logprobs : bool, default False
        Also return the log-probability of each drawn class under the
        truncated, renormalised distribution ``q``: ``z_i - log sum_{j in S}
        exp(z_j)``, computed as ``log_softmax`` is (the largest term kept
        out of the sum, ``log1p``, an exact sum of the others).  0 for
        greedy rows.
    return_valid : bool, default False
        Also return a boolean per row, False where the row has nothing to
        draw from (a NaN logit, every logit ``-inf``, or, under tracing, a
        setting out of range); those rows draw ``-1`` (log-probability NaN)
        instead of raising.

    Each of ``temperature``, ``top_k``, ``top_p`` and ``min_p`` may be an
    array (or a list) broadcastable to the logits' shape without ``axis``:
    one value per row, of the logits' array kind (or NumPy).  Rows with
    ``temperature`` 0 take their argmax; ``top_k`` above ``C``, ``top_p``
    of 1 and ``min_p`` of 0 leave a row untruncated.

    Returns
    -------
    samples : integer array, of the input's kind and device
        Shape ``logits.shape`` without ``axis`` when ``num_samples == 1``;
        with a trailing axis of length ``num_samples`` otherwise.  The dtype
        is the library's argmax index dtype (int64 for NumPy and PyTorch,
        int32 for JAX without x64).  Under tracing (``jax.jit``,
        ``jax.vmap``, ``torch.compile``), a row with a NaN logit, with every
        logit ``-inf``, or with a setting out of range draws ``-1``, which is
        no class.
    logprobs : floating array of ``samples``' shape, only with ``return_logprobs``
        In the logits' floating dtype (float64 for integer logits).
    valid : bool array of the rows' shape, only with ``return_valid``

    With either option the result is the tuple ``(samples, logprobs,
    valid)`` without the parts not asked for.

    Raises
    ------
    ValueError
        For a row whose logits are all ``-inf`` (nothing to draw), a class
        axis of length 0 with rows to fill, a NaN logit (these three unless
        ``return_valid``), a setting out of range (for an array: its first
        such value and where it is), a setting array that does not
        broadcast to the rows, ``num_samples`` too large for the noise to
        fit in one array, an unknown ``top_k_ties``.  Checks of array values
        run on concrete arrays and are skipped under tracing (see Returns).
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
    is exact and the quotient is rounded once); float64 inputs, JAX
    without x64 and torch tensors on accelerators (which work in float32)
    round the difference too.  The noise never takes
    ``log(0)``; it is exact Gumbel noise except that its tails beyond a
    probability of about ``e**-43`` are cut and its uniforms lie on a grid
    of spacing ``2**-63``.

    How the work is done (``softmaxkit.frontend.sampling`` has the
    details).  With a truncation, the ``K`` largest logits of each row are
    selected without sorting whole rows (``K = top_k + 1``, or 1024 for
    ``top_p`` and ``min_p`` alone): when the truncation drops the last of
    them in every row, the draw is made from them alone, noise included.
    Otherwise (ties beyond ``top_k``, a nucleus wider than 1024 classes,
    an array ``top_k`` under tracing) the call works on whole rows, sorting
    them where ``top_p`` or ``top_k_ties="index"`` needs a ranking.  Whole
    rows draw a block of about ``sqrt(C)`` classes by the blocks' masses,
    then a class within it: exact, with noise for about ``2 sqrt(C)``
    entries per draw.  Both ways draw from the same distribution, spending
    the noise differently.  Greedy rows use a blocked maximum, not
    ``argmax`` over whole rows.

    Reproducibility.  Draws depend on the seed (or generator state, or key)
    and on the whole call: the noise is drawn for the batch at once, in an
    amount that depends on the shape and the settings, so a row drawn alone
    differs from the same row drawn in a batch with the same seed.  Draw
    one row per call, each with its own generator, for draws that do not
    depend on the batch.  A torch generator gives the same draws in eager
    code and under ``torch.compile``; torch's global generator does not
    (compiled code has its own random stream).

    Under ``jax.jit`` the settings may be Python numbers (static) or
    arrays (traced, one value per row or a 0-d array); ``num_samples``,
    ``axis``, ``top_k_ties`` and the two flags are static.  ``jax.vmap``
    over the logits and keys works too, but where it maps the logits, JAX
    turns the branch between candidates and whole rows into a select that
    runs both: pass the rows as one batch instead.
    ``torch.compile(fullgraph=True)`` traces a call with or without a
    ``torch.Generator``; the branch is a ``torch.cond``.

    Synchronisation (PyTorch).  The value checks read the device once:
    ``any`` over the rows' largest logits (NaN or ``-inf``), plus one read
    per array setting (its range, and for ``top_k`` its largest value,
    which sizes the candidates).  ``return_valid=True`` with settings given
    as numbers reads nothing.  The branch between candidates and whole
    rows reads its boolean on the CPU; on other devices both are computed
    and one is selected, so nothing waits for the device.

    Edge behaviour: ``-inf`` logits are never drawn; a row with ``+inf``
    logits draws uniformly among them (the limit of the softmax); a row of
    equal logits draws uniformly.  The inputs are not modified and carry no
    gradient.

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

    Exactly one class of the tied pair with ``top_k_ties="index"``, and the
    log-probability of each draw:

    >>> smk.sample(np.array([1.0, 1.0, 0.0]), top_k=1, top_k_ties="index", num_samples=4, rng=0)
    array([0, 0, 0, 0])
    >>> idx, logq = smk.sample(np.log([0.5, 0.25, 0.25]), top_k=2, top_k_ties="index", rng=1, return_logprobs=True)
    >>> int(idx), round(float(np.exp(logq)), 6)
    (0, 0.666667)

    One setting per row: the first row greedy, the second sampled; a fully
    masked row flagged instead of raising.

    >>> smk.sample(logits, temperature=np.array([0.0, 1.0]), num_samples=4, rng=0)[0]
    array([0, 0, 0, 0])
    >>> smk.sample(np.array([[0.0, 1.0], [-np.inf, -np.inf]]), rng=0, return_valid=True)[1]
    array([ True, False])
    >>> smk.sample(logits, temperature=[1.0, -1.0], rng=0)
    Traceback (most recent call last):
    ...
    ValueError: temperature must be finite and >= 0; got temperature[1] = -1.0
    """
    n_draws = _num_samples(num_samples)
    ties = _ties(top_k_ties)
    want_logprobs = validate.flag(return_logprobs, "return_logprobs")
    want_valid = validate.flag(return_valid, "return_valid")
    r = _rows(logits, axis, temperature, top_k, top_p, min_p, ties)
    xp, s = r.xp, r.s
    gen = _random.generator(r.backend, r.x, rng, "logits")
    index = r.index
    rows, n = r.n_rows, r.n
    K = None if s.scalar_greedy else _candidate_count(r)
    # Short rows draw noise for every class, and the candidates take theirs:
    # every way of drawing then gives the same class for the same seed.
    per_class = n <= _ONE_STEP
    candidate_noise = (K,) if K is not None and not per_class else ()
    whole_noise = () if s.scalar_greedy or (K == n and not per_class) else _row_noise_shapes(n)
    _check_noise_size(rows, n_draws, n, sum(candidate_noise) + sum(whole_noise))
    if rows == 0 or n == 0:
        empty = xp.ones((rows,), dtype=xp.bool, device=r.device)
        if not want_valid:
            _check_rows(r, empty)
        drawn = xp.full((rows, n_draws), _UNDEFINED, dtype=index, device=r.device)
        logq = xp.full((rows, n_draws), float("nan"), dtype=r.work, device=r.device)
        return _outputs(r, drawn, logq, empty, n_draws, want_logprobs, want_valid)
    if s.scalar_greedy:
        first, empty = _greedy_rows(r)
        if not want_valid:
            _check_rows(r, empty)
        drawn = xp.broadcast_to(first[:, None], (rows, n_draws))
        logq = xp.zeros((rows, n_draws), dtype=r.work, device=r.device)
    else:
        candidates = _largest(r, K) if K is not None else None
        a = xp.max(candidates[0] if candidates is not None else r.x, axis=-1, keepdims=True)
        empty = ~(a[:, 0] > -_INF)
        if not want_valid:
            _check_rows(r, empty)
        # All the noise is drawn before the branch, so that neither way
        # draws inside it and the generator advances the same either way.
        # One draw of noise for every use, split afterwards: one call of the
        # generator, so compiled code cannot reorder or drop a part of it.
        widths = candidate_noise + whole_noise
        g_all = _random.gumbel(xp, r.backend, gen, (rows, n_draws, sum(widths)), r.work, r.x)
        ends = [sum(widths[: i + 1]) for i in range(len(widths))]

        def noise(i: int) -> Any:
            # Sliced inside the branches: torch.cond refuses branches that
            # capture views of the tensors they capture.
            return g_all[:, :, ends[i] - widths[i] : ends[i]]

        def on_candidates(c: _Candidates) -> tuple[Any, ...]:
            if per_class:
                g = xp.take_along_axis(noise(0), xp.broadcast_to(c.classes[:, None, :], (rows, n_draws, K)), axis=-1)
            else:
                g = noise(0)
            out = _draw_ranked(r, xp.where(c.keep, c.z, r.scalar(-_INF)), g, want_logprobs)
            return (xp.astype(xp.take_along_axis(c.classes, out[0], axis=-1), index),) + out[1:]

        def on_rows(rp: _Rows, rows: slice, z: Any) -> tuple[Any, ...]:
            row_noise = [noise(i)[rows] for i in range(len(candidate_noise), len(widths))]
            if len(row_noise) == 1:
                out = _draw_ranked(rp, z, row_noise[0], want_logprobs)
            else:
                out = _draw_blocks(rp, z, row_noise[0], row_noise[1], want_logprobs)
            return (xp.astype(out[0], index),) + out[1:]

        out = _run(r, a, candidates, on_candidates, on_rows)
        drawn = out[0]
        logq = out[1] if want_logprobs else None
        if s.greedy is not None:
            first, _ = _greedy_rows(r)
            drawn = xp.where(s.greedy, first[:, None], drawn)
            if logq is not None:
                logq = xp.where(s.greedy, r.scalar(0.0), logq)
    return _outputs(r, drawn, logq, empty, n_draws, want_logprobs, want_valid)


def _outputs(r: _Rows, drawn: Any, logq: Any, empty: Any, n_draws: int, want_logprobs: bool, want_valid: bool) -> Any:
    """The result of :func:`sample`: rows with nothing to draw set to -1 (NaN), reshaped to the logits' rows."""
    xp = r.xp
    undefined = empty if r.s.invalid is None else empty | r.s.invalid
    drawn = xp.where(undefined[:, None], xp.asarray(_UNDEFINED, dtype=drawn.dtype, device=r.device), drawn)
    shape = r.layout.rest_shape + ((n_draws,) if n_draws > 1 else ())
    result = [xp.reshape(drawn, shape)]
    if want_logprobs:
        logq = xp.where(undefined[:, None], r.scalar(float("nan")), logq)
        result.append(xp.reshape(xp.astype(logq, r.out_dtype), shape))
    if want_valid:
        result.append(xp.reshape(~undefined, r.layout.rest_shape))
    return result[0] if len(result) == 1 else tuple(result)


@validate.quiet
def truncate(
    logits: Any,
    *,
    temperature: Any = 1.0,
    top_k: Any = None,
    top_p: Any = None,
    min_p: Any = None,
    axis: int = -1,
    top_k_ties: str = "keep",
) -> Any:
    r"""The scaled logits that :func:`sample` draws from, with every class it would not draw set to ``-inf``.

    .. math:: \operatorname{truncate}(x)_j = \begin{cases} (x_j - \max x) / T & j \in S \\ -\infty & j \notin S \end{cases}

    where ``S`` is the set of classes that survive ``top_k``, ``top_p`` and
    ``min_p`` (see :func:`sample`, which runs this same truncation).  The
    result is ``log q_j`` up to a constant per row, ``q`` being the
    truncated, renormalised distribution: ``softmax(truncate(x))`` is ``q``,
    and ``argmax(truncate(x) + G)`` with Gumbel noise ``G`` draws as
    ``sample`` does.  The largest entry of each row is 0.

    Parameters
    ----------
    logits : array_like, numpy.ndarray, torch.Tensor or jax.Array
        Unnormalised log-probabilities, classes along ``axis``.
    temperature, top_k, top_p, min_p, top_k_ties
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
    Under tracing (``jax.jit``, ``torch.compile``), rows with nothing to
    draw from (a NaN logit, every logit ``-inf``, a setting out of range)
    are ``-inf`` throughout.  The result carries no gradient.

    Raises
    ------
    ValueError, TypeError
        As :func:`sample`, for the same logits and settings.

    Notes
    -----
    The rule is stated once and shared with :func:`sample`: rank a row's
    classes by decreasing logit, ties by increasing index; ``top_k``,
    ``top_p`` and ``min_p`` each keep a prefix of that ranking (ties at the
    boundary kept, except ``top_k`` with ``top_k_ties="index"``), so the
    kept classes are a prefix too.  The work is :func:`sample`'s: the
    largest logits as candidates where they suffice, whole rows otherwise.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> x = np.array([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 3.0, 1.0]])
    >>> smk.truncate(x, top_k=2)
    array([[  0.,  -1., -inf, -inf],
           [-inf,   0.,   0., -inf]])
    >>> smk.truncate(x, top_k=1, top_k_ties="index")
    array([[  0., -inf, -inf, -inf],
           [-inf,   0., -inf, -inf]])
    >>> smk.truncate(x, temperature=[0.5, 0.0])
    array([[  0.,  -2.,  -4.,  -6.],
           [-inf,   0., -inf, -inf]])
    """
    ties = _ties(top_k_ties)
    r = _rows(logits, axis, temperature, top_k, top_p, min_p, ties)
    xp, s = r.xp, r.s
    rows, n = r.n_rows, r.n
    minus_inf = r.scalar(-_INF)
    if rows == 0 or n == 0:
        if rows:
            _check_rows(r, xp.ones((rows,), dtype=xp.bool, device=r.device))
        return r.layout.back_rows(xp.astype(r.x, r.out_dtype))
    position = xp.arange(n, device=r.device)
    if s.scalar_greedy:
        first, empty = _greedy_rows(r)
        _check_rows(r, empty)
        z = xp.where(position == first[:, None], r.scalar(0.0), minus_inf)
    else:
        K = _candidate_count(r)
        candidates = _largest(r, K) if K is not None else None
        a = xp.max(candidates[0] if candidates is not None else r.x, axis=-1, keepdims=True)
        empty = ~(a[:, 0] > -_INF)
        _check_rows(r, empty)

        def on_candidates(c: _Candidates) -> tuple[Any]:
            z = _z(r, r.x, a)
            return (xp.where(_prefix_mask(r, c) & (z > -_INF), z, minus_inf),)

        (z,) = _run(r, a, candidates, on_candidates, lambda rp, rows, z: (z,))
        if s.greedy is not None:
            first, _ = _greedy_rows(r)
            z = xp.where(s.greedy, xp.where(position == first[:, None], r.scalar(0.0), minus_inf), z)
    undefined = empty if s.invalid is None else empty | s.invalid
    z = xp.where(undefined[:, None], minus_inf, z)
    return r.layout.back_rows(xp.astype(z, r.out_dtype))


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
    r = _rows(logits, axis, temperature, None, None, None)
    xp, s, layout = r.xp, r.s, r.layout
    g = validate.same_namespace(xp, gumbel, "gumbel")
    _, g, _ = validate.real_array(g, "gumbel")
    lead = g.ndim - len(layout.shape)
    if lead < 0 or tuple(g.shape[lead:]) != layout.shape:
        raise ValueError(
            f"gumbel must have the shape of logits {layout.shape}, optionally with extra leading axes; got {tuple(g.shape)}"
        )
    out_shape = tuple(g.shape[:lead]) + layout.rest_shape
    index = r.index
    if r.n == 0 or r.n_rows == 0:
        if r.n_rows:
            _check_rows(r, xp.ones((r.n_rows,), dtype=xp.bool, device=r.device))
        return xp.full(out_shape, _UNDEFINED, dtype=index, device=r.device)
    first, empty = _greedy_rows(r)
    _check_rows(r, empty)
    invalid = empty if s.invalid is None else empty | s.invalid
    if s.scalar_greedy:
        drawn = xp.where(invalid, xp.asarray(_UNDEFINED, dtype=first.dtype, device=r.device), first)
        return xp.astype(xp.broadcast_to(xp.reshape(drawn, layout.rest_shape), out_shape), index)
    _CHECKS.require_none(xp, ~xp.isfinite(g), _first_bad("gumbel", g, "gumbel must be finite"))
    gw = Layout(xp, tuple(g.shape), (lead + layout.axes[0],)).forward(xp.astype(g, r.work))
    gw = xp.reshape(gw, tuple(g.shape[:lead]) + (r.n_rows, r.n))
    z = _z(r, r.x, xp.max(r.x, axis=-1, keepdims=True))
    drawn = xp.argmax(z + gw, axis=-1)
    noisy = xp.any(~xp.isfinite(gw), axis=-1)
    if s.greedy is not None:
        drawn = xp.where(s.greedy[:, 0], first, drawn)
        noisy = noisy & ~s.greedy[:, 0]
    drawn = xp.where(invalid | noisy, xp.asarray(_UNDEFINED, dtype=drawn.dtype, device=r.device), drawn)
    return xp.reshape(xp.astype(drawn, index), out_shape)


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
