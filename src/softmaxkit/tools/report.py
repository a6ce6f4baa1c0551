"""diagnose: what a batch of logits would do to a naive softmax, in one report;
diagnose_attention: the same for the rows of attention scores.

The figures are computed on a float64 host copy of the logits, except the
two float32 ones (softmax collapse and the zero target gradient), which are
defined by float32 arithmetic and computed in it.

The rules behind those two figures and the margin (:func:`float32_terms`,
:func:`collapsed`, :func:`zero_target_grad`, :func:`top2_margins`) and the
entropy of attention rows (:func:`attention_logits`,
:func:`attention_entropy`) take the arrays of any array-API namespace
(NumPy, torch), so that ``softmaxkit.torch.monitor`` applies the same rules
to tensors on their device.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from softmaxkit.frontend import validate
from softmaxkit.frontend.softmax import entropy
from softmaxkit.numerics import attention as att
from softmaxkit.tools.stats import array_stats, host_float64

_COLLAPSE_DEFINITION = "float32 sum of exp(x - max) == 1 (Prieto et al. 2025)"
_ZERO_GRAD_DEFINITION = "float32 p_t - 1 == 0"


@dataclass(frozen=True)
class LogitReport:
    """What a batch of logits would do to a naive softmax.

    Rows are the distributions along the class axis.  A *regular* row has at
    least one finite logit and neither NaN nor ``+inf``; the float32 figures
    are taken over regular rows only, because the others have no finite
    softmax to collapse.

    Attributes
    ----------
    shape : tuple of int
        Shape of the logits.
    dtype : str
        Their dtype (integer logits are analysed as float64, as the rest of
        softmaxkit computes them).
    axis : int
        The class axis, non-negative.
    rows, classes : int
        Number of rows and the size of the class axis.
    min, max, abs_max : float or None
        Range and largest magnitude of the finite logits; None when no logit
        is finite.
    nan_count, posinf_count, neginf_count : int
        Entries that are NaN, ``+inf`` and ``-inf``.
    masked_rows : int
        Rows whose every logit is ``-inf`` (fully masked).
    overflow_count : int
        Finite logits ``x > overflow_threshold = log(max float)`` of the
        dtype: ``exp(x)`` exceeds the largest finite value, so a naive softmax
        gives ``inf / inf = NaN`` in that row.
    underflow_rows : int
        Regular rows whose largest logit is below ``underflow_threshold``, the
        log of half the smallest positive (subnormal) value of the dtype:
        every ``exp(x)`` rounds to 0 and a naive softmax gives ``0 / 0 = NaN``.
    overflow_threshold, underflow_threshold : float
        The two bounds for the dtype.
    regular_rows : int
        Rows the collapse fraction is taken over.
    collapsed_rows : int
        Regular rows whose float32 ``sum(exp(x - max))`` is exactly 1, the
        softmax-collapse measure of Prieto et al. (2025): the float32 softmax
        of such a row is exactly one-hot.
    target_rows, zero_grad_rows : int or None
        With targets: the regular rows whose target is not ``ignore_index``,
        and those among them whose naive float32 target gradient
        ``p_t - 1`` (``p_t = exp(x_t - max) / sum``) is exactly 0.  None
        without targets.
    max_margin : float or None
        Largest ``top-1 - top-2`` gap over rows with at least two finite
        logits; None when there is no such row.
    """

    shape: tuple[int, ...]
    dtype: str
    axis: int
    rows: int
    classes: int
    min: float | None
    max: float | None
    abs_max: float | None
    nan_count: int
    posinf_count: int
    neginf_count: int
    masked_rows: int
    overflow_count: int
    underflow_rows: int
    overflow_threshold: float
    underflow_threshold: float
    regular_rows: int
    collapsed_rows: int
    target_rows: int | None
    zero_grad_rows: int | None
    max_margin: float | None

    @property
    def naive_overflow(self) -> bool:
        """Whether some ``exp(x)`` overflows in the logits' dtype."""
        return self.overflow_count > 0

    @property
    def naive_underflow(self) -> bool:
        """Whether some row's ``exp(x)`` all round to 0 in the logits' dtype."""
        return self.underflow_rows > 0

    @property
    def collapse_fraction(self) -> float | None:
        """``collapsed_rows / regular_rows``; None without regular rows."""
        return _fraction(self.collapsed_rows, self.regular_rows)

    @property
    def zero_grad_fraction(self) -> float | None:
        """``zero_grad_rows / target_rows``; None without targets or rows."""
        if self.target_rows is None:
            return None
        return _fraction(self.zero_grad_rows, self.target_rows)

    def to_dict(self) -> dict[str, Any]:
        """The fields and the derived figures as JSON-ready Python values."""
        out = dataclasses.asdict(self)
        out["shape"] = list(self.shape)
        for name in ("naive_overflow", "naive_underflow", "collapse_fraction", "zero_grad_fraction"):
            out[name] = getattr(self, name)
        return out

    def __str__(self) -> str:
        lines = [
            (
                "logits",
                f"shape {self.shape} {self.dtype}: {self.rows} rows of {self.classes} classes along axis {self.axis}",
            ),
            (
                "range (finite)",
                "no finite logits"
                if self.min is None
                else f"min {_num(self.min)}   max {_num(self.max)}   abs-max {_num(self.abs_max)}",
            ),
            ("non-finite", f"NaN {self.nan_count}   +inf {self.posinf_count}   -inf {self.neginf_count}"),
            ("masked rows", f"{self.masked_rows} (every logit -inf)"),
            (
                "naive overflow",
                f"{_yes(self.naive_overflow)}: {self.overflow_count} logits > "
                f"{_num(self.overflow_threshold)} = log(max {self.dtype})",
            ),
            (
                "naive underflow",
                f"{_yes(self.naive_underflow)}: {self.underflow_rows} rows with every logit < "
                f"{_num(self.underflow_threshold)}",
            ),
            ("softmax collapse", f"{_share(self.collapsed_rows, self.regular_rows)}: {_COLLAPSE_DEFINITION}"),
        ]
        if self.target_rows is not None:
            zero_grad = f"{_share(self.zero_grad_rows, self.target_rows)}: {_ZERO_GRAD_DEFINITION}"
            lines.append(("zero target grad", zero_grad))
        if self.max_margin is None:
            lines.append(("largest margin", "no row with two finite logits"))
        else:
            lines.append(("largest margin", f"{_num(self.max_margin)} (top-1 minus top-2)"))
        width = max(len(label) for label, _ in lines)
        return "\n".join(f"{label:<{width}}  {text}" for label, text in lines)


def _fraction(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def _num(x: float) -> str:
    return f"{x:.6g}"


def _yes(flag: bool) -> str:
    return "YES" if flag else "no"


def _share(part: int, whole: int) -> str:
    if whole == 0:
        return "no rows to measure"
    return f"{part} of {whole} rows ({100 * part / whole:.3g}%)"


def _dtype_limits(dtype: Any) -> tuple[str, float, float]:
    """Name, largest finite value and smallest positive (subnormal) value."""
    if type(dtype).__module__ == "torch":
        import torch

        info = torch.finfo(dtype)
        name = str(dtype).removeprefix("torch.")
    else:
        name = np.dtype(dtype).name
        if np.dtype(dtype).itemsize > 8:
            # The figures are Python floats computed on a float64 copy, which
            # cannot hold long double's range (its smallest subnormal even
            # converts to 0.0).
            raise TypeError(
                f"logits dtype {name} (long double) is not supported by diagnose: its figures are computed "
                f"in float64, which cannot hold its range; convert with logits.astype(numpy.float64) if the "
                f"values fit"
            )
        try:
            info = np.finfo(dtype)
        except ValueError:
            # bfloat16 and the other ml_dtypes types have their own finfo.
            import ml_dtypes

            info = ml_dtypes.finfo(dtype)
    return name, float(info.max), float(info.tiny) * float(info.eps)


def _host_targets(targets: Any, row_shape: tuple[int, ...], n_classes: int, ignore_index: int) -> np.ndarray:
    if isinstance(targets, np.ma.MaskedArray):
        # asarray would drop the mask; ignore_index is how a target is left out
        raise TypeError(
            "targets is a numpy.ma.MaskedArray, and diagnose cannot honour its mask; pass "
            "targets.filled(ignore_index) to leave the masked rows out"
        )
    t = np.asarray(targets.detach().cpu() if hasattr(targets, "detach") else targets)
    if t.dtype.kind not in "iu":
        raise TypeError(f"targets must hold integer class indices; got dtype {t.dtype}")
    if t.shape != row_shape:
        raise ValueError(
            f"targets must have the logits' shape without the class axis, {row_shape}; got {t.shape}"
        )
    bad = validate.not_a_class(t, n_classes, ignore_index)
    if bad.any():
        pos = validate.first_position(bad)
        raise ValueError(validate.not_a_class_message(f"targets{list(pos)} = {int(t[pos])}", n_classes, ignore_index))
    return t.reshape(-1)


@validate.quiet
def diagnose(logits: Any, targets: Any = None, *, axis: int = -1, ignore_index: int = -100) -> LogitReport:
    """Report what a batch of logits would do to a naive softmax.

    Parameters
    ----------
    logits : array_like, torch.Tensor or array-API array
        Unnormalised scores with the classes along ``axis``; at least one
        dimension.  Nothing is written back, and a tensor that requires grad
        is detached first.
    targets : integer array, optional
        Class indices with ``logits``' shape minus ``axis``.  Enables the
        zero-target-gradient figure.
    axis : int, default -1
        The class axis.
    ignore_index : int, default -100
        Targets equal to it are left out of the target figures, as in
        :func:`softmaxkit.cross_entropy`.

    Returns
    -------
    LogitReport
        A frozen dataclass; ``print(report)`` gives an aligned text block and
        ``report.to_dict()`` the figures as plain Python values.  See
        :class:`LogitReport` for the exact definition of each figure.

    Raises
    ------
    TypeError
        For logits that are not real numbers, and for long double
        (``numpy.longdouble`` wider than float64), whose range the float64
        figures cannot hold.
    ValueError
        For 0-d logits, a bad ``axis`` and targets of the wrong shape or out
        of range.

    Notes
    -----
    Softmax collapse follows Prieto et al. (2025): a row collapses when its
    float32 ``sum(exp(x - max))`` equals 1 exactly, i.e. every other term
    is below half a float32 ULP of 1 (summed with NumPy's pairwise sum).
    Such a row's float32 softmax is exactly one-hot, and a naive float32
    cross-entropy gradient ``p_t - 1`` at its argmax is exactly 0, so the
    row stops learning; :func:`softmaxkit.cross_entropy` keeps that gradient.

    References
    ----------
    L. Prieto, M. Barsbey, P. A. M. Mediano, T. Birdal, "Grokking at the
    edge of numerical stability", ICLR 2025.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> r = smk.diagnose(np.array([[30.0, 0.0], [1.0, 0.0]], dtype=np.float32), [0, 0])
    >>> r.collapsed_rows, r.zero_grad_rows, r.max_margin
    (1, 1, 30.0)
    """
    _, x, dtype = validate.real_array(logits, "logits")
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension (the class axis); got a 0-d array")
    ax = validate.axis(axis, x.ndim)[0]
    ignore = validate.integer(ignore_index, "ignore_index")
    name, largest, smallest = _dtype_limits(dtype)
    host = np.moveaxis(host_float64(x), ax, -1)
    row_shape = host.shape[:-1]
    n_classes = host.shape[-1]
    rows = host.reshape(math.prod(row_shape), n_classes)

    finite = np.isfinite(rows)
    nan = np.isnan(rows)
    posinf = rows == math.inf
    neginf = rows == -math.inf
    has_finite = finite.any(axis=-1)
    regular = has_finite & ~(nan | posinf).any(axis=-1)

    overflow_threshold = math.log(largest)
    underflow_threshold = math.log(smallest) - math.log(2.0)
    # -inf stands for "no finite logit" so that row maxima are defined everywhere.
    finite_or_ninf = np.where(finite, rows, -math.inf)
    row_max = finite_or_ninf.max(axis=-1) if n_classes else np.full(rows.shape[0], -math.inf)

    t = None if targets is None else _host_targets(targets, row_shape, n_classes, ignore)[regular]
    collapsed, target_rows, zero_grad = _float32_figures(rows[regular], row_max[regular], t, ignore)

    two_finite = finite.sum(axis=-1) >= 2
    if two_finite.any():
        max_margin = float(top2_margins(finite_or_ninf[two_finite]).max())
    else:
        max_margin = None

    return LogitReport(
        shape=tuple(int(s) for s in x.shape),
        dtype=name,
        axis=ax,
        rows=rows.shape[0],
        classes=n_classes,
        **dataclasses.asdict(array_stats(rows)),
        masked_rows=int((neginf.all(axis=-1) & (n_classes > 0)).sum()),
        overflow_count=int((finite & (rows > overflow_threshold)).sum()),
        underflow_rows=int((regular & (row_max < underflow_threshold)).sum()),
        overflow_threshold=overflow_threshold,
        underflow_threshold=underflow_threshold,
        regular_rows=int(regular.sum()),
        collapsed_rows=collapsed,
        target_rows=target_rows,
        zero_grad_rows=zero_grad,
        max_margin=max_margin,
    )


def _float32_figures(rows, row_max, t, ignore):
    """Collapsed rows, and the target-row and zero-gradient counts (or None).

    ``rows`` are the regular rows, ``row_max`` their maxima and ``t`` their
    targets (or None).
    """
    # x - max is formed in float64 and rounded once, which equals the float32
    # subtraction wherever the logits fit in float32 and cannot overflow where
    # they do not.
    _, e, total = float32_terms(rows, row_max)
    n_collapsed = int(collapsed(total).sum())
    if t is None:
        return n_collapsed, None, None
    keep = t != ignore
    idx = np.nonzero(keep)[0]
    zero = int(zero_target_grad(e[idx, t[keep]], total[idx]).sum())
    return n_collapsed, int(keep.sum()), zero


def float32_terms(rows: Any, row_max: Any) -> tuple[Any, Any, Any]:
    """The float32 shifted logits ``z = float32(x - max)``, their ``e = exp(z)`` and the float32 row sums of ``e``.

    Parameters
    ----------
    rows : array of shape (R, C)
        Real logits (NumPy, torch or another array-API namespace), float32
        or wider; ``x - max`` is formed in their dtype and rounded once to
        float32, which is exactly the float32 subtraction for float32
        logits.
    row_max : array of shape (R,)
        Each row's largest logit.

    Returns
    -------
    z, e : float32 arrays of shape (R, C)
    total : float32 array of shape (R,)
        ``sum(e)`` along the row, summed in float32 by the namespace's own
        reduction (NumPy's is pairwise).  Rows with NaN, ``+inf`` or no
        finite logit give NaN totals.

    Examples
    --------
    >>> import numpy as np
    >>> z, e, total = float32_terms(np.array([[0.0, -20.0], [0.0, -1.0]]), np.array([0.0, 0.0]))
    >>> total.tolist()
    [1.0, 1.3678793907165527]
    """
    xp = array_api_compat.array_namespace(rows)
    z = xp.astype(rows - row_max[:, None], xp.float32, copy=False)
    e = xp.exp(z)
    return z, e, xp.sum(e, axis=-1, dtype=xp.float32)


def collapsed(total: Any) -> Any:
    """Softmax collapse (Prieto et al. 2025): a row's float32 ``sum(exp(x - max)) == 1``.

    ``total`` comes from :func:`float32_terms`.  Every other term is then
    below half a float32 ULP of 1, the row's float32 softmax is exactly
    one-hot, and a naive cross-entropy gradient at its argmax is 0.  NaN
    totals (rows that are not regular) are not collapsed.

    Examples
    --------
    >>> import numpy as np
    >>> collapsed(np.array([1.0, 1.25], dtype=np.float32)).tolist()
    [True, False]
    """
    return total == 1


def zero_target_grad(e_t: Any, total: Any) -> Any:
    """Rows whose naive float32 target gradient ``p_t - 1``, with ``p_t = e_t / total``, is exactly 0.

    ``e_t`` is the target's term and ``total`` the row's sum, both from
    :func:`float32_terms`.  Such a row stops learning under a naive
    cross-entropy; :func:`softmaxkit.cross_entropy` keeps its gradient.

    Examples
    --------
    >>> import numpy as np
    >>> one = np.float32(1)
    >>> zero_target_grad(np.array([one, one]), np.array([one, np.float32(1.5)])).tolist()
    [True, False]
    """
    return e_t / total - 1 == 0


def top2_margins(rows: Any) -> Any:
    """``top-1 - top-2`` of each row of ``rows`` (shape (R, C), C >= 2).

    Non-finite logits should be replaced by ``-inf`` first; a row with fewer
    than two finite logits then gives a meaningless value, and is left out
    by the caller.  A tie for the largest value gives 0.

    Examples
    --------
    >>> import numpy as np
    >>> top2_margins(np.array([[3.0, 1.0, 2.0], [5.0, 5.0, 0.0]])).tolist()
    [1.0, 0.0]
    """
    xp = array_api_compat.array_namespace(rows)
    top1 = xp.max(rows, axis=-1)
    is_top = rows == top1[:, None]
    # The largest value below the maximum, unless the maximum is there twice
    # (no argmax: on CPU torch's costs twenty times a max).
    below = xp.max(xp.where(is_top, -math.inf, rows), axis=-1)
    return xp.where(xp.count_nonzero(is_top, axis=-1) > 1, 0.0, top1 - below)


# --- attention scores ---------------------------------------------------------------------

CAUSAL = ("top_left", "bottom_right")
_SATURATED_DEFINITION = "float32 sum of exp(s - max) over the attended keys and the sink == 1"
# Scores per chunk of query rows: the float64 scores and their masks of a
# (4, 16, 1024, 1024) batch take a few chunk-sized buffers, not copies of it.
_CHUNK_SCORES = 1 << 22


def attention_logits(scores: Any, attend: Any, sinks: Any = None) -> Any:
    """The rows a row of attention normalises over: the attended scores, ``-inf`` elsewhere, and the sink.

    Parameters
    ----------
    scores : array (..., S)
        Scores after the scale, the soft cap and an additive mask, in any
        array-API namespace.
    attend : bool array broadcastable to ``scores``
        The keys each row attends to; the others are replaced by ``-inf``
        (selected, never read: a NaN there does not reach the result).
    sinks : array broadcastable to ``scores.shape[:-1]``, optional
        Each row's sink logit, appended as one more entry.

    Returns
    -------
    array (..., S) or (..., S + 1) with a sink

    Examples
    --------
    >>> import numpy as np
    >>> attention_logits(np.array([[1.0, np.nan]]), np.array([True, False]), np.array([0.5])).tolist()
    [[1.0, -inf, 0.5]]
    """
    xp = array_api_compat.array_namespace(scores)
    rows = xp.where(attend, scores, -math.inf)
    if sinks is None:
        return rows
    sink = xp.broadcast_to(xp.astype(sinks, rows.dtype)[..., None], rows.shape[:-1] + (1,))
    return xp.concat([rows, sink], axis=-1)


def attention_entropy(scores: Any, attend: Any, sinks: Any = None) -> Any:
    r"""Entropy (nats) of each attention row's weights, the sink's weight included.

    .. math:: H_i = -\sum_{j \in A_i} P_{ij} \log P_{ij} - P_\sigma \log P_\sigma
              = \mathrm{lse}_i - \sum_{j \in A_i} P_{ij} s_{ij} - P_\sigma \sigma

    with ``A_i`` the attended keys and ``P`` the softmax of
    :func:`attention_logits`; computed by :func:`softmaxkit.entropy`
    (2 ULP in float32, 4 in float64).  A row with no attended key and no
    sink has entropy 0; a NaN attended score gives NaN; ``c`` attended
    ``+inf`` scores give ``log c``.

    Parameters
    ----------
    scores, attend, sinks
        As for :func:`attention_logits`.

    Returns
    -------
    array ``scores.shape[:-1]``

    Examples
    --------
    >>> import numpy as np
    >>> attention_entropy(np.zeros((1, 4)), np.array([True, True, True, False])).round(6).tolist()  # log 3
    [1.098612]
    """
    return entropy(attention_logits(scores, attend, sinks), axis=-1)


@dataclass(frozen=True)
class AttentionReport:
    """What the rows of attention scores would do to a naive softmax.

    A row is one query row of one head; its keys are the last axis of the
    scores.  A key is *attended* when the boolean mask and the causal mask
    keep it and its score (with an additive mask) is not ``-inf``.

    Attributes
    ----------
    shape : tuple of int
        Shape of the scores, (..., H, L, S).
    dtype : str
        Their dtype (the query's and key's when the scores were formed from them).
    heads, rows, keys : int
        Number of heads H, of rows (every leading index, head and query row)
        and of keys S.
    empty_rows : int
        Rows with no attended key: a naive softmax gives NaN there
        (``0 / 0``), unless a sink is in the normaliser; softmaxkit gives 0.
    nan_rows : int
        Rows with a NaN attended score: their output is NaN.
    regular_rows : int
        Rows with an attended key, no NaN or ``+inf`` attended score, and
        at least two entries in the normaliser (attended keys and the sink):
        the rows the saturation is taken over.
    saturated_rows : int
        Regular rows whose float32 ``sum(exp(s - max))`` over the attended
        keys and the sink is exactly 1 (the softmax-collapse rule of
        :func:`softmaxkit.diagnose`, Prieto et al. 2025): their largest
        weight rounds to 1 and every other to below half a float32 ULP of
        1, so a float32 kernel gives a one-hot row and a zero gradient to
        its scores.
    entropy_mean, entropy_min : tuple of (float or None)
        Per head, the mean and the smallest entropy (nats, the sink's weight
        included; :func:`attention_entropy`) over the rows with an attended
        key and no NaN; None for a head without such rows.  A row of ``n``
        keys with equal scores has ``log n``; a saturated row about 0.
    """

    shape: tuple[int, ...]
    dtype: str
    heads: int
    rows: int
    keys: int
    empty_rows: int
    nan_rows: int
    regular_rows: int
    saturated_rows: int
    entropy_mean: tuple[float | None, ...]
    entropy_min: tuple[float | None, ...]

    @property
    def saturated_fraction(self) -> float | None:
        """``saturated_rows / regular_rows``; None without regular rows."""
        return _fraction(self.saturated_rows, self.regular_rows)

    def to_dict(self) -> dict[str, Any]:
        """The fields and the derived figure as JSON-ready Python values."""
        out = dataclasses.asdict(self)
        out["shape"] = list(self.shape)
        out["entropy_mean"] = list(self.entropy_mean)
        out["entropy_min"] = list(self.entropy_min)
        out["saturated_fraction"] = self.saturated_fraction
        return out

    def __str__(self) -> str:
        lines = [
            (
                "scores",
                f"shape {self.shape} {self.dtype}: {self.rows} rows of {self.keys} keys, {self.heads} heads",
            ),
            ("empty rows", f"{_share(self.empty_rows, self.rows)}: no key to attend to (naive softmax: NaN)"),
            ("NaN rows", f"{_share(self.nan_rows, self.rows)}: a NaN attended score"),
            ("saturated rows", f"{_share(self.saturated_rows, self.regular_rows)}: {_SATURATED_DEFINITION}"),
            ("entropy mean", _per_head(self.entropy_mean)),
            ("entropy min", _per_head(self.entropy_min)),
        ]
        width = max(len(label) for label, _ in lines)
        return "\n".join(f"{label:<{width}}  {text}" for label, text in lines)


def _per_head(values: tuple[float | None, ...]) -> str:
    cells = ["-" if v is None else f"{v:.4g}" for v in values]
    return "per head (nats): " + " ".join(cells)


def _host_mask(mask: Any, shape: tuple[int, ...]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(attend, bias)`` on the host, broadcast to ``shape``: one of them is None."""
    if mask is None:
        return None, None
    m = mask.detach().cpu() if hasattr(mask, "detach") else mask
    name = str(m.dtype).removeprefix("torch.") if hasattr(m, "dtype") else np.asarray(m).dtype.name
    if name == "bool":
        host = np.asarray(m, dtype=bool)
    elif name.startswith(("float", "bfloat")):
        host = host_float64(m)
    else:
        raise TypeError(f"mask must be a boolean array (True attends) or a floating array (added to the scores); got dtype {name}")
    try:
        host = np.broadcast_to(host, shape)
    except ValueError:
        raise ValueError(f"mask of shape {host.shape} does not broadcast to the scores (..., H, L, S) of shape {shape}") from None
    return (host, None) if host.dtype == bool else (None, host)


def _host_sinks(sinks: Any, heads: int) -> np.ndarray | None:
    if sinks is None:
        return None
    _, sk, _ = validate.real_array(sinks, "sinks")
    host = host_float64(sk)
    if host.shape != (heads,):
        raise ValueError(f"sinks must have shape ({heads},), one logit per head; got {host.shape}")
    return host


def _score_source(scores, query, key, scale, softcap):
    """``(shape, dtype name, chunk(l0, l1) -> float64 scores (..., H, l1 - l0, S))``."""
    if (scores is None) == (query is None and key is None):
        raise TypeError("diagnose_attention takes scores, or query and key (keywords); got " + ("both" if scores is not None else "neither"))
    if scores is not None:
        if scale is not None or softcap is not None:
            raise TypeError("scale and softcap apply to query and key; scores are taken as they are (scale them first)")
        _, x, dtype = validate.real_array(scores, "scores")
        if x.ndim < 3:
            raise ValueError(f"scores must have at least 3 dimensions (..., H, L, S); got shape {tuple(x.shape)}")
        host = host_float64(x)
        return host.shape, _dtype_limits(dtype)[0], lambda l0, l1: host[..., l0:l1, :]
    if query is None or key is None:
        raise TypeError(f"diagnose_attention needs both query and key; got only {'query' if key is None else 'key'}")
    _, q, q_dtype = validate.real_array(query, "query")
    _, k, _ = validate.real_array(key, "key")
    if q.ndim < 3 or k.ndim < 3:
        raise ValueError(f"query (..., Hq, L, D) and key (..., Hkv, S, D) must have at least 3 dimensions; got shapes {tuple(q.shape)} and {tuple(k.shape)}")
    *batch, heads, n_rows, depth = q.shape
    *k_batch, kv_heads, n_keys, k_depth = k.shape
    if tuple(k_batch) != tuple(batch) or k_depth != depth:
        raise ValueError(f"key must have shape (..., Hkv, S, {depth}) with query's leading dimensions {tuple(batch)}; got {tuple(k.shape)}")
    group = validate.grouped_heads(heads, kv_heads)
    tau = validate.attention_scale(scale, depth)
    cap = None if softcap is None else validate.positive_finite(softcap, "softcap")
    # Query head h reads key head h // group, as in softmaxkit.attention.
    qg = host_float64(q).reshape(tuple(batch) + (kv_heads, group, n_rows, depth))
    kg = host_float64(k).reshape(tuple(batch) + (kv_heads, 1, n_keys, depth))
    shape = tuple(batch) + (heads, n_rows, n_keys)

    def chunk(l0, l1):
        blocks = [
            att.block_scores(
                np, qg[..., l0:l1, :], kg[..., j0 : j0 + att.BLOCK, :], j0, j0 + att.BLOCK,
                scale=tau, softcap=cap, widened=True,
                attend_block=lambda j0, j1: None, bias_block=lambda j0, j1: None,
            )[0]
            for j0 in range(0, n_keys, att.BLOCK)
        ]
        s = np.concatenate(blocks, axis=-1) if blocks else np.zeros(qg.shape[:-2] + (l1 - l0, 0))
        return s.reshape(tuple(batch) + (heads, l1 - l0, n_keys))

    return shape, _dtype_limits(q_dtype)[0], chunk


@validate.quiet
def diagnose_attention(
    scores: Any = None,
    *,
    query: Any = None,
    key: Any = None,
    mask: Any = None,
    causal: Any = None,
    scale: Any = None,
    softcap: Any = None,
    sinks: Any = None,
) -> AttentionReport:
    r"""Report what attention scores would do to a naive softmax: empty rows, saturated rows, entropy per head.

    For query row ``i`` of head ``h``, with ``A_i`` its attended keys (the
    boolean mask, the causal mask, and neither a ``-inf`` score nor a
    ``-inf`` additive mask) and ``s_ij`` its scores (plus the additive mask):

    .. math:: P_{ij} = \frac{e^{s_{ij}}}{\sum_{j' \in A_i} e^{s_{ij'}} + e^{\sigma_h}},\quad
              H_i = -\sum_{j \in A_i} P_{ij} \log P_{ij} - P_\sigma \log P_\sigma

    A row is *empty* when ``A_i`` is empty and *saturated* when its float32
    ``sum(exp(s - max))`` is exactly 1 (:class:`AttentionReport` defines
    every figure).

    Parameters
    ----------
    scores : array (..., H, L, S), optional
        Attention scores (NumPy, torch or another array-API namespace),
        after the scale and any soft cap.  Or, instead:
    query : array (..., Hq, L, D), optional
    key : array (..., Hkv, S, D), optional
        The scores are formed as :func:`softmaxkit.attention` forms them
        (``cap(scale q.k)``, grouped-query heads), in float64.
    mask : bool or float array, optional
        Broadcastable to (..., H, L, S).  Boolean: True attends.  Float:
        added to the scores; ``-inf`` masks.
    causal : {None, "top_left", "bottom_right"}
        Row ``i`` attends to keys ``j <= i`` or ``j <= i + S - L``.
    scale : float, optional
        With ``query`` and ``key``: finite and > 0, default ``1 / sqrt(D)``.
    softcap : float, optional
        With ``query`` and ``key``: ``c tanh(s / c)`` after the scale.
    sinks : array (H,), optional
        One logit per head in every row's normaliser (gpt-oss).

    Returns
    -------
    AttentionReport
        ``print(report)`` gives an aligned text block and
        ``report.to_dict()`` the figures as plain Python values.

    Raises
    ------
    TypeError
        For both or neither of ``scores`` and ``query``/``key``, non-real
        inputs, a mask that is neither boolean nor floating, and ``scale`` or
        ``softcap`` given with ``scores``.
    ValueError
        For fewer than 3 dimensions, shapes that do not match or broadcast,
        a bad ``causal``, ``scale`` or ``softcap``, and ``sinks`` not of
        shape (H,).

    Notes
    -----
    The figures are computed on float64 host copies of the scores, a chunk
    of query rows at a time (a few buffers of about 4M scores), except the
    saturation, which is defined by float32 arithmetic and computed in it.
    Nothing is written back into the inputs.

    Examples
    --------
    Head 0 attends uniformly; head 1's first row sees no key, its second
    is saturated by a margin of 30:

    >>> import numpy as np, softmaxkit as smk
    >>> s = np.array([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], [[5.0, 1.0, 2.0], [30.0, 0.0, 0.0]]])
    >>> mask = np.array([[[True, True, True], [True, True, True]], [[False, False, False], [True, True, True]]])
    >>> r = smk.diagnose_attention(s, mask=mask)
    >>> r.empty_rows, r.saturated_rows, [round(h, 4) for h in r.entropy_mean]
    (1, 1, [1.0986, 0.0])
    """
    shape, dtype_name, chunk = _score_source(scores, query, key, scale, softcap)
    if causal is not None and causal not in CAUSAL:
        raise ValueError(f"causal must be None, 'top_left' or 'bottom_right'; got {validate.describe(causal)}")
    *lead, heads, n_rows, n_keys = shape
    attend_all, bias_all = _host_mask(mask, shape)
    sink = _host_sinks(sinks, heads)
    sink_rows = None if sink is None else sink[:, None]

    empty = nan_rows = regular_rows = saturated = 0
    sums, counts = np.zeros(heads), np.zeros(heads, dtype=np.int64)
    mins = np.full(heads, math.inf)
    step = max(1, _CHUNK_SCORES // max(1, math.prod(lead) * heads * n_keys))
    for l0 in range(0, n_rows, step):
        l1 = min(n_rows, l0 + step)
        s = chunk(l0, l1)
        if bias_all is not None:
            s = s + bias_all[..., l0:l1, :]
        attend = s != -math.inf
        if attend_all is not None:
            attend = attend & attend_all[..., l0:l1, :]
        if causal is not None:
            attend = attend & att.causal_keep(np.arange(l0, l1), np.arange(n_keys), n_rows, n_keys, causal)
        has_key = attend.any(axis=-1)
        nan_row = (attend & np.isnan(s)).any(axis=-1)
        empty += int((~has_key).sum())
        nan_rows += int(nan_row.sum())

        measured = has_key & ~nan_row
        h = np.moveaxis(attention_entropy(s, attend, sink_rows), -2, 0).reshape(heads, -1)
        kept = np.moveaxis(measured, -2, 0).reshape(heads, -1)
        sums += np.where(kept, h, 0.0).sum(axis=-1)
        counts += kept.sum(axis=-1)
        mins = np.minimum(mins, np.where(kept, h, math.inf).min(axis=-1, initial=math.inf))

        entries = attend.sum(axis=-1) + (sink is not None)
        regular = measured & ~(attend & (s == math.inf)).any(axis=-1) & (entries >= 2)
        logits = attention_logits(s, attend, sink_rows)[regular]
        if logits.shape[0]:
            regular_rows += logits.shape[0]
            _, _, total = float32_terms(logits, logits.max(axis=-1))
            saturated += int(collapsed(total).sum())

    return AttentionReport(
        shape=tuple(int(n) for n in shape),
        dtype=dtype_name,
        heads=heads,
        rows=math.prod(lead) * heads * n_rows,
        keys=n_keys,
        empty_rows=empty,
        nan_rows=nan_rows,
        regular_rows=regular_rows,
        saturated_rows=saturated,
        entropy_mean=tuple(None if n == 0 else float(t / n) for t, n in zip(sums, counts)),
        entropy_min=tuple(None if n == 0 else float(m) for m, n in zip(mins, counts)),
    )
