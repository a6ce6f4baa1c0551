r"""Split conformal prediction sets for classifiers: LAC, APS and RAPS.

Calibrate on ``n`` held-out logits and labels, then predict for each new row
a set of classes that holds its true label with probability at least
``1 - alpha``, whatever the model, provided the held-out rows and the new
row are exchangeable (for example, drawn independently from one
distribution):

.. math:: 1 - \alpha \;\le\; P\bigl(Y_{n+1} \in C(X_{n+1})\bigr)
          \;<\; 1 - \alpha + \frac{1}{n+1}

(the upper bound when the scores of different rows are almost surely
distinct).  The probability is over the calibration rows and the new row
together: it is a *marginal* guarantee, not one per row or per class.

Each score is computed from softmaxkit's exact softmax in float64 and
compared in a form where the rounding of ``1 - p`` never merges distinct
probabilities (see :func:`calibrate`).  Inputs of any array kind the rest of
softmaxkit accepts (NumPy, anything ``numpy.asarray`` takes, PyTorch, JAX)
are copied to float64 NumPy arrays; every result is NumPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from softmaxkit.frontend import random, validate
from softmaxkit.frontend.softmax import softmax
from softmaxkit.tools.calibration import _labels, _refuse_nan, _require_samples, _rows

__all__ = [
    "SCORES",
    "ConformalCalibration",
    "calibrate",
    "coverage",
    "set_sizes",
]

SCORES = ("lac", "aps", "raps")
_RNG_ALLOWED = "a numpy.random.Generator, an int seed or None"


@dataclass(frozen=True)
class ConformalCalibration:
    r"""The result of :func:`calibrate`: a threshold and the settings it holds for.

    Attributes
    ----------
    score : {"lac", "aps", "raps"}
    alpha : float
        The miscoverage level; sets cover with probability at least ``1 - alpha``.
    randomized : bool
        Whether the APS/RAPS scores draw one uniform ``U`` per row.
    lam, k_reg : float, int or None
        The RAPS penalty per rank and the number of ranks without penalty;
        None for the other scores.
    temperature : float
        Probabilities are ``softmax(logits / temperature)``.
    n_samples : int
        ``n``, the number of calibration rows.
    n_classes : int
        ``C``; :meth:`predict_sets` refuses logits with another class count.
    rank : int
        ``k = ceil((n + 1)(1 - alpha))``, in ``[1, n + 1]``.
    conformity_cutoff : float
        ``c*``, the ``k``-th largest calibration conformity ``c = 1 - s``
        (``-inf`` when ``k = n + 1``, or when the labels of at least
        ``n + 1 - k`` rows lie on ``-inf`` logits): a class is in a set when
        its conformity is ``>= c*``.
    """

    score: str
    alpha: float
    randomized: bool
    lam: float | None
    k_reg: int | None
    temperature: float
    n_samples: int
    n_classes: int
    rank: int
    conformity_cutoff: float

    @property
    def threshold(self) -> float:
        r"""``q = 1 - c*``: the ``k``-th smallest calibration score, ``inf`` when ``k > n``.

        A class is in a set when its score is ``<= q``.  This is ``c*``
        rounded once to a score: sets are decided on ``c*`` itself.
        """
        return 1.0 - self.conformity_cutoff

    @property
    def quantile_level(self) -> float:
        """``k / n``, the corrected level ``ceil((n + 1)(1 - alpha)) / n``; above 1 when ``k > n``."""
        return self.rank / self.n_samples

    def predict_sets(self, logits: Any, rng: Any = None, *, axis: int = -1) -> np.ndarray:
        r"""Prediction sets for new rows: a boolean mask, True for the classes in each set.

        .. math:: C(x) = \{\, y : s(x, y) \le q \,\} = \{\, y : c(x, y) \ge c^\ast \,\}

        Parameters
        ----------
        logits : array of shape (..., C, ...)
            New logits, classes along ``axis``, ``C`` as at calibration; the
            same array kinds as :func:`calibrate`.
        rng : numpy.random.Generator, int or None
            With ``randomized=True``: the generator of the uniforms, one per
            row, ``U = rng.random(rows)`` in row order (rows flattened in C
            order); an int seeds a new generator, None draws fresh entropy.
            Ignored otherwise.
        axis : int, default -1
            The class axis.

        Returns
        -------
        numpy.ndarray of bool, ``logits``' shape
            ``mask[..., y, ...]`` is True when class ``y`` is in the row's set.

        Notes
        -----
        A set may be empty, and holds every class when ``q = inf``; a class
        whose logit is ``-inf`` is in a set only then (see :func:`calibrate`).  Raises ``ValueError``
        for NaN logits and for a class count other than the calibration's.

        Examples
        --------
        >>> import numpy as np
        >>> from softmaxkit import conformal
        >>> cal = conformal.calibrate(np.array([[2.0, 0.0, 0.0]] * 9), np.array([0] * 8 + [1]), alpha=0.2, score="lac")
        >>> cal.rank, round(cal.threshold, 4)      # k = ceil(10 * 0.8); q = 1 - softmax([2, 0, 0])[0]
        (8, 0.213)
        >>> cal.predict_sets(np.array([[0.0, 3.0, -np.inf], [1.0, 1.0, 1.0]]))
        array([[False,  True, False],
               [False, False, False]])
        """
        x, rest = _rows(logits, axis, "logits")
        (ax,) = validate.axis(axis, len(rest) + 1)
        if x.shape[-1] != self.n_classes:
            raise ValueError(
                f"logits has {x.shape[-1]} classes along axis {axis}; the calibration had {self.n_classes}"
            )
        _refuse_nan(x, "logits")
        u = _uniforms(rng, x.shape[0]) if self.randomized else None
        c = _conformity(x, self.score, self.temperature, self.lam, self.k_reg, u)
        return np.moveaxis((c >= self.conformity_cutoff).reshape(rest + (self.n_classes,)), -1, ax)


def calibrate(
    logits: Any,
    labels: Any,
    alpha: float = 0.1,
    *,
    score: str = "aps",
    randomized: bool = False,
    lam: float | None = None,
    k_reg: int | None = None,
    temperature: float = 1.0,
    rng: Any = None,
    axis: int = -1,
) -> ConformalCalibration:
    r"""Calibrate a conformal set predictor on held-out logits and labels (split conformal).

    With ``p = softmax(x / T)`` and the classes of a row ordered by
    decreasing probability, ties broken by class index (the lower index
    first), let ``o(y)`` be the 1-based rank of class ``y``,
    ``B(y) = sum of p over the classes ranked before y`` and
    ``A(y) = sum of p over the classes ranked after y``.  The scores are

    .. math::

        s_\mathrm{LAC}(x, y) &= 1 - p_y \\
        s_\mathrm{APS}(x, y) &= B(y) + U p_y \\
        s_\mathrm{RAPS}(x, y) &= B(y) + U p_y + \lambda\,(o(y) - k_\mathrm{reg})^+

    with ``U = 1`` when not randomised and ``U ~ Uniform[0, 1)``, one per row,
    when randomised.  Over the ``n`` calibration rows, with
    ``k = ceil((n + 1)(1 - alpha))``, the threshold ``q`` is the ``k``-th
    smallest score (the empirical quantile at the corrected level
    ``k / n``), and a new row's set is ``{y : s(x, y) <= q}``.

    Parameters
    ----------
    logits : array of shape (..., C, ...)
        Held-out logits, classes along ``axis``: NumPy, anything
        ``numpy.asarray`` accepts, PyTorch or JAX (copied to float64 NumPy).
        NaN is refused; ``-inf`` marks an impossible class.
    labels : integer array
        ``logits``' shape without the class axis; values in ``[0, C)``.
    alpha : float in (0, 1), default 0.1
        The miscoverage level.
    score : {"lac", "aps", "raps"}, default "aps"
        LAC (least ambiguous set-valued classifier, the threshold on
        ``1 - p_y``), APS (adaptive prediction sets) or RAPS (regularised APS).
    randomized : bool, default False
        Draw ``U`` for APS and RAPS; LAC has no randomised form here, so
        ``randomized=True`` with ``score="lac"`` raises ``ValueError``.
    lam : float >= 0, finite
        RAPS only, and required there: the penalty per rank beyond ``k_reg``.
    k_reg : int >= 0
        RAPS only, and required there: the number of top ranks without
        penalty.  (Angelopoulos et al. tune both on held-out data; their
        ImageNet example uses ``lam=0.01, k_reg=5``.)  ``lam=0`` gives APS.
    temperature : float > 0, finite, default 1.0
        Probabilities are ``softmax(logits, temperature=T)``.  The guarantee
        holds for any ``T`` chosen without the calibration rows.
    rng : numpy.random.Generator, int or None
        With ``randomized=True``, the generator of the calibration uniforms,
        ``U = rng.random(n)`` in row order (rows flattened in C order); an
        int seeds a new generator, None draws fresh entropy.  Ignored
        otherwise.
    axis : int, default -1
        The class axis.

    Returns
    -------
    ConformalCalibration
        Frozen: ``threshold`` (``q``), ``rank`` (``k``), the settings, and
        :meth:`ConformalCalibration.predict_sets`.

    Notes
    -----
    **Guarantee.**  If the calibration rows and a new row are exchangeable,
    ``P(y in C(x)) >= k / (n + 1) >= 1 - alpha`` for every score, randomised
    or not, because the new row's score is at most the ``k``-th smallest of
    all ``n + 1`` scores with probability at least ``k / (n + 1)``.  When
    the scores of different rows are almost surely distinct (continuous
    probabilities; the randomised scores also separate rows with equal
    probabilities) the coverage is exactly ``k / (n + 1)``, below
    ``1 - alpha + 1/(n + 1)``.  Ties can only raise it; the non-randomised
    APS and RAPS give every label ranked last the same score (1, plus its
    penalty), which matters only when ``q`` reaches it.  A non-randomised
    APS or RAPS set is empty for a row whose top probability exceeds ``q``,
    since that class's score is its probability; randomisation includes the
    class that crosses ``q`` with the probability that makes the coverage
    exact, which usually gives smaller sets (the example below: 3.91
    classes on average against 4.12).

    **The level.**  ``k`` is computed exactly in rational arithmetic from the
    shortest decimal that reads back as ``alpha`` (``repr(alpha)``): with
    ``n = 9`` and ``alpha = 0.7``, ``k = ceil(10 * 0.3) = 3``, where the
    float product ``10 * (1 - 0.7)`` is ``3.0000000000000004`` and its
    ceiling 4.  When ``k > n`` (``alpha < 1/(n + 1)``, the corrected level
    above 1) no calibration score is large enough: ``q = inf`` and every
    set holds every class, ``-inf`` classes included.

    **Exactness.**  Scores are evaluated as ``s = 1 - c`` with a
    *conformity* ``c`` that is never formed as ``1 - (something near 1)``:
    ``c = p_y`` (LAC), ``c = A(y) + (1 - U) p_y`` (APS; ``A(y)`` summed from
    the smallest probability up) and the APS value minus the penalty (RAPS).
    Calibration keeps ``c*``, the ``k``-th largest calibration conformity,
    and sets are ``{y : c >= c*}``: the same sets as ``s <= q`` in exact
    arithmetic, without the rounding of ``1 - p`` that would merge every
    probability below ``2**-54`` into a score of 1.  Probabilities come from
    :func:`softmaxkit.softmax`, exact on confident rows.  Sets are nested in
    the rank for APS and RAPS (one ``U`` per row); a class tied in
    probability with another is ranked after it when its index is higher.

    **Edges.**  A class whose logit is ``-inf`` has conformity ``-inf``
    (score ``+inf``): it is in a set only when ``q = inf``, that is when
    ``k > n`` or when at least ``n + 1 - k`` calibration labels lie on
    ``-inf`` logits.  A finite logit whose probability underflows to 0 is
    not masked: its score is that of a probability-0 class.  ``+inf``
    logits share the mass as in :func:`softmaxkit.softmax`.  One class:
    every ``p`` is 1.  ``n = 1`` works: ``k = 1`` for ``alpha >= 1/2``,
    otherwise every class is in every set.  Sets may be empty (above, or
    with a large ``alpha``); none are filled in, which would raise the
    coverage above ``k / (n + 1)``.  Errors: ``ValueError`` for ``alpha`` outside
    ``(0, 1)``, an unknown ``score``, labels out of range, mismatched
    shapes, an empty batch, NaN logits, and ``lam``/``k_reg`` missing for
    RAPS or given for another score; ``TypeError`` for the wrong kind of
    argument.

    References
    ----------
    V. Vovk, A. Gammerman & G. Shafer, *Algorithmic Learning in a Random
    World*, Springer 2005 (split conformal prediction); M. Sadinle, J. Lei &
    L. Wasserman, "Least Ambiguous Set-Valued Classifiers with Bounded Error
    Levels", JASA 2019 (LAC); Y. Romano, M. Sesia & E. Candès,
    "Classification with Valid and Adaptive Coverage", NeurIPS 2020 (APS);
    A. Angelopoulos, S. Bates, J. Malik & M. Jordan, "Uncertainty Sets for
    Image Classifiers using Conformal Prediction", ICLR 2021 (RAPS).

    Examples
    --------
    Labels drawn from known probabilities; half the rows calibrate, the
    other half are predicted:

    >>> import numpy as np, softmaxkit as smk
    >>> from softmaxkit import conformal
    >>> rng = np.random.default_rng(0)
    >>> z = 2.0 * rng.normal(size=(4000, 10))
    >>> y = smk.sample(z, rng=rng)
    >>> cal = conformal.calibrate(z[:2000], y[:2000], alpha=0.1, score="aps", randomized=True, rng=1)
    >>> cal.rank, round(cal.threshold, 4)
    (1801, 0.9131)
    >>> sets = cal.predict_sets(z[2000:], rng=2)
    >>> round(conformal.coverage(sets, y[2000:]), 3), round(float(conformal.set_sizes(sets).mean()), 2)
    (0.914, 3.91)
    """
    alpha = _alpha(alpha)
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(map(repr, SCORES))}; got {validate.describe(score)}")
    randomized = validate.flag(randomized, "randomized")
    if randomized and score == "lac":
        raise ValueError("randomized=True applies to score='aps' and 'raps'; the LAC score 1 - p_y has no randomised form")
    lam, k_reg = _penalty(score, lam, k_reg)
    temperature = validate.temperature(temperature)
    x, rest = _rows(logits, axis, "logits")
    _require_samples(x, rest, "logits")
    y = _labels(labels, rest, x.shape[-1])
    _refuse_nan(x, "logits")
    n = x.shape[0]
    u = _uniforms(rng, n) if randomized else None
    c = _conformity(x, score, temperature, lam, k_reg, u)[np.arange(n), y]
    k = _rank(alpha, n)
    # The k-th largest conformity is the k-th smallest score.
    cutoff = -math.inf if k > n else float(np.partition(c, n - k)[n - k])
    return ConformalCalibration(
        score=score,
        alpha=alpha,
        randomized=randomized,
        lam=lam,
        k_reg=k_reg,
        temperature=temperature,
        n_samples=n,
        n_classes=int(x.shape[-1]),
        rank=k,
        conformity_cutoff=cutoff,
    )


def coverage(sets: Any, labels: Any, *, axis: int = -1) -> float:
    r"""The fraction of rows whose label is in their set.

    .. math:: \mathrm{coverage} = \frac{1}{N} \sum_{i=1}^{N} \mathbf{1}[y_i \in C_i]

    Parameters
    ----------
    sets : boolean array of shape (..., C, ...)
        Set masks, classes along ``axis``, as :meth:`ConformalCalibration.predict_sets` returns.
    labels : integer array
        ``sets``' shape without the class axis; values in ``[0, C)``.
    axis : int, default -1

    Returns
    -------
    float in [0, 1].  Raises ``ValueError`` for an empty batch.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import conformal
    >>> sets = np.array([[True, True, False], [False, False, True], [False, False, False]])
    >>> conformal.coverage(sets, np.array([1, 0, 2]))
    0.3333333333333333
    """
    s, rest = _sets(sets, axis)
    _require_samples(s, rest, "sets")
    y = _labels(labels, rest, s.shape[-1])
    return float(np.mean(s[np.arange(s.shape[0]), y]))


def set_sizes(sets: Any, *, axis: int = -1) -> np.ndarray:
    """The number of classes in each set.

    Parameters
    ----------
    sets : boolean array of shape (..., C, ...)
        Set masks, classes along ``axis``.
    axis : int, default -1

    Returns
    -------
    numpy.ndarray of int64, ``sets``' shape without the class axis.

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import conformal
    >>> conformal.set_sizes(np.array([[True, True, False], [False, False, False]]))
    array([2, 0])
    """
    s, rest = _sets(sets, axis)
    return np.count_nonzero(s, axis=-1).astype(np.int64).reshape(rest)


def _alpha(value: Any, name: str = "alpha") -> float:
    """The miscoverage level: a real number strictly between 0 and 1."""
    a = validate.real_number(value, name)
    if not 0.0 < a < 1.0:
        raise ValueError(f"{name} must be in (0, 1), exclusive; got {a!r}")
    return a


def _rank(alpha: float, n: int) -> int:
    """``ceil((n + 1)(1 - alpha))`` exactly, for the decimal ``repr(alpha)``."""
    level = 1 - Fraction(repr(alpha))
    return -(-(n + 1) * level.numerator // level.denominator)


def _penalty(score: str, lam: Any, k_reg: Any) -> tuple[float | None, int | None]:
    if score != "raps":
        for name, value in (("lam", lam), ("k_reg", k_reg)):
            if value is not None:
                raise ValueError(f"{name} applies only to score='raps'; got {name}={validate.describe(value)} with score={score!r}")
        return None, None
    if lam is None or k_reg is None:
        missing = " and ".join(name for name, value in (("lam", lam), ("k_reg", k_reg)) if value is None)
        raise ValueError(
            f"score='raps' needs {missing}: lam >= 0, the penalty per rank, and k_reg >= 0, the ranks without "
            f"penalty (Angelopoulos et al.'s ImageNet example uses lam=0.01, k_reg=5)"
        )
    return validate.non_negative(lam, "lam"), validate.count(k_reg, "k_reg", 0)


def _uniforms(rng: Any, rows: int) -> np.ndarray:
    if rng is None:
        return np.random.default_rng().random(rows)
    if isinstance(rng, np.random.Generator):
        return rng.random(rows)
    return np.random.default_rng(random.seed(rng, _RNG_ALLOWED, "NumPy")).random(rows)


def _conformity(x: np.ndarray, score: str, temperature: float, lam: float | None, k_reg: int | None, u: np.ndarray | None) -> np.ndarray:
    """``c(x, y) = 1 - s(x, y)`` for every row and class of the (N, C) float64 logits ``x``."""
    p = softmax(x, temperature=temperature)
    if score == "lac":
        c = p
    else:
        # Descending probability, ties to the lower class index.
        order = np.argsort(-p, axis=-1, kind="stable")
        ranked = np.take_along_axis(p, order, axis=-1)
        # The mass after each rank, summed from the smallest probability up:
        # exact where 1 - (mass up to the rank) would round to 0.
        after = np.zeros_like(ranked)
        after[:, :-1] = np.cumsum(ranked[:, :0:-1], axis=-1)[:, ::-1]
        c_ranked = after if u is None else after + (1.0 - u)[:, None] * ranked
        if score == "raps":
            c_ranked = c_ranked - lam * np.maximum(np.arange(1, x.shape[-1] + 1) - k_reg, 0)
        c = np.empty_like(c_ranked)
        np.put_along_axis(c, order, c_ranked, axis=-1)
    return np.where(np.isneginf(x), -np.inf, c)


def _sets(sets: Any, axis: Any) -> tuple[np.ndarray, tuple[int, ...]]:
    """``sets`` as a (rows, C) bool NumPy array, and the shape of its rows."""
    _, arr = validate.namespace_of(sets, "sets")
    host = np.asarray(validate.to_numpy(arr))
    if host.dtype != np.bool_:
        raise TypeError(f"sets must be a boolean mask (True for the classes in each set); got dtype {host.dtype}")
    if host.ndim == 0:
        raise ValueError("sets must have a class axis; got a 0-d array")
    (ax,) = validate.axis(axis, host.ndim)
    host = np.moveaxis(host, ax, -1)
    rest = tuple(host.shape[:-1])
    return host.reshape(math.prod(rest), host.shape[-1]), rest
