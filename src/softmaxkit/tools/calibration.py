"""Post-hoc calibration: temperature scaling, expected calibration error, reliability diagrams.

Calibration works on held-out logits and labels copied to the host as
float64 NumPy arrays (torch and JAX arrays are accepted and copied); the
results are Python floats and a matplotlib Figure.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from softmaxkit.frontend import validate
from softmaxkit.frontend.softmax import log_softmax, softmax
from softmaxkit.frontend.losses import nll_loss

__all__ = [
    "TemperatureFit",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_diagram",
    "temperature_scaling_diagram",
]

_NORMS = ("l1", "max")
# More bins than this hold a sample or two each; the bin arrays would only
# cost memory (2**63 bins cannot even be allocated).
_MAX_BINS = 1_000_000
# 1/phi: each golden-section step keeps this fraction of the bracket.
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class TemperatureFit:
    """The result of :func:`fit_temperature`.

    Attributes
    ----------
    temperature : float
        The fitted ``T``; use it as ``softmax(logits, temperature=T)``.
    nll_before, nll_after : float
        Mean negative log-likelihood (nats) at ``T = 1`` and at the fitted ``T``.
    ece_before, ece_after : float
        Expected calibration error (equal-width bins) at ``T = 1`` and at ``T``.
    n_bins : int
        Number of bins used for the ECE.
    n_samples, n_classes : int
        Size of the data the temperature was fitted on.
    """

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    n_bins: int
    n_samples: int
    n_classes: int

    def __str__(self) -> str:
        ece = f"ECE ({self.n_bins} bins)"
        width = max(len(ece), len("NLL"))
        return "\n".join(
            [
                f"temperature  T = {self.temperature:.6g}  ({self.n_samples} samples, {self.n_classes} classes)",
                f"{'':{width}}  {'before':>10}  {'after':>10}",
                f"{'NLL':{width}}  {self.nll_before:>10.6f}  {self.nll_after:>10.6f}",
                f"{ece:{width}}  {self.ece_before:>10.6f}  {self.ece_after:>10.6f}",
            ]
        )


def _rows(a: Any, axis: Any, name: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """``a`` as a float64 host array of shape (N, C), and the shape of its rows."""
    _, arr, _ = validate.real_array(a, name)
    if arr.ndim == 0:
        raise ValueError(f"{name} must have a class axis; got a 0-d array")
    (ax,) = validate.axis(axis, arr.ndim)
    if hasattr(arr, "detach"):
        # torch bfloat16 and float8 have no NumPy counterpart; float64 holds every value.
        arr = arr.detach().cpu().double()
    host = np.moveaxis(np.asarray(validate.to_numpy(arr), dtype=np.float64), ax, -1)
    rest = tuple(host.shape[:-1])
    # Not reshape(-1, C): with C = 0 the -1 is ambiguous.
    return host.reshape(math.prod(rest), host.shape[-1]), rest


def _require_samples(rows: np.ndarray, rest: tuple[int, ...], name: str) -> None:
    if rows.shape[0] == 0 or rows.shape[-1] == 0:
        shape = rest + (rows.shape[-1],)
        raise ValueError(f"{name} must hold at least one sample and one class; got shape {shape} with the class axis last")


def _labels(labels: Any, rest_shape: tuple[int, ...], n_classes: int, name: str = "labels") -> np.ndarray:
    _, t = validate.namespace_of(labels, name)
    t = np.asarray(validate.to_numpy(t))
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class indices; got dtype {t.dtype}")
    if t.shape != rest_shape:
        raise ValueError(f"{name} must have shape {rest_shape} (the logits' shape without the class axis); got {t.shape}")
    t = t.reshape(-1)
    # Checked before the cast to int64, which would wrap uint64 values >= 2**63.
    bad = (t < 0) | (t >= n_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{i}] (flattened) = {int(t[i])} is not a class index: allowed 0 to {n_classes - 1}")
    return t.astype(np.int64)


def _refuse_nan(x: np.ndarray, name: str) -> None:
    if np.isnan(x).any():
        i, j = np.argwhere(np.isnan(x))[0]
        raise ValueError(f"{name} must not be NaN; got NaN in row {i}, class {j} (rows flattened)")


def _n_bins(value: Any) -> int:
    return validate.count(value, "n_bins", 1, _MAX_BINS)


def _check_probs(p: np.ndarray, name: str) -> None:
    bad = ~(np.isfinite(p) & (p >= 0) & (p <= 1))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"{name} must be probabilities in [0, 1]; got {float(p[i, j])!r} in row {i}, class {j} (rows flattened)")


def _bin_stats(probs: np.ndarray, labels: np.ndarray, n_bins: int):
    """Per-bin counts, mean confidence and accuracy over equal-width bins.

    Bin ``i`` is ``(edges[i], edges[i+1]]`` with ``edges = linspace(0, 1, n_bins + 1)``;
    a confidence of exactly 0 (an all-zero row) goes into the first bin.
    """
    conf = probs.max(axis=-1)
    correct = (probs.argmax(axis=-1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(np.float64)
    seen = np.where(count == 0, 1.0, count)
    mean_conf = np.bincount(which, weights=conf, minlength=n_bins) / seen
    accuracy = np.bincount(which, weights=correct, minlength=n_bins) / seen
    return edges, count, mean_conf, accuracy


def _ece(probs: np.ndarray, labels: np.ndarray, n_bins: int, norm: str) -> float:
    _, count, mean_conf, accuracy = _bin_stats(probs, labels, n_bins)
    gap = np.abs(accuracy - mean_conf)
    if norm == "max":
        return float(gap[count > 0].max())
    return float(np.sum(count * gap) / np.sum(count))


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15, norm: str = "l1", *, axis: int = -1) -> float:
    r"""Expected (or maximum) calibration error of predicted probabilities.

    .. math:: \mathrm{ECE} = \sum_{b=1}^{B} \frac{n_b}{N}\,\bigl|\mathrm{acc}_b - \mathrm{conf}_b\bigr|,
              \qquad \mathrm{MCE} = \max_{b:\,n_b > 0} \bigl|\mathrm{acc}_b - \mathrm{conf}_b\bigr|

    where each sample's confidence is its largest probability, it is correct
    when the argmax equals the label, and bin ``b`` (of ``B`` equal-width
    bins) holds the samples with confidence in ``((b-1)/B, b/B]``.

    Parameters
    ----------
    probs : array of shape (..., C, ...)
        Predicted probabilities, classes along ``axis``; each entry in [0, 1].
        Rows are not renormalised.
    labels : integer array
        ``probs``' shape without the class axis; values in ``[0, C)``.
    n_bins : int, default 15
        Number of bins, from 1 to 1,000,000.
    norm : {"l1", "max"}, default "l1"
        "l1" is the ECE (bin gaps weighted by bin counts); "max" is the
        maximum calibration error over non-empty bins.
    axis : int, default -1
        The class axis.

    Returns
    -------
    float in [0, 1].

    Notes
    -----
    The bin edges are ``numpy.linspace(0, 1, n_bins + 1)`` and each bin is
    closed on the right; a confidence of exactly 0 (possible only for an
    all-zero row) counts in the first bin.  Argmax ties go to the first
    class.  Raises ``ValueError`` for an empty batch.

    References
    ----------
    M. P. Naeini, G. F. Cooper & M. Hauskrecht, "Obtaining Well Calibrated
    Probabilities Using Bayesian Binning", AAAI 2015; C. Guo, G. Pleiss,
    Y. Sun & K. Q. Weinberger, "On Calibration of Modern Neural Networks",
    ICML 2017.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    >>> smk.expected_calibration_error(probs, np.array([0, 1, 0, 1]), n_bins=10)
    0.375
    """
    n_bins = _n_bins(n_bins)
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {', '.join(map(repr, _NORMS))}; got {validate.describe(norm)}")
    p, rest = _rows(probs, axis, "probs")
    _require_samples(p, rest, "probs")
    t = _labels(labels, rest, p.shape[-1])
    _check_probs(p, "probs")
    return _ece(p, t, n_bins, norm)


def _mean_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    return float(nll_loss(log_softmax(logits, temperature=temperature), labels))


def fit_temperature(
    logits: Any,
    labels: Any,
    *,
    axis: int = -1,
    bounds: tuple[float, float] = (1e-3, 1e3),
    n_bins: int = 15,
    tol: float = 1e-6,
) -> TemperatureFit:
    r"""Fit a softmax temperature to held-out data (temperature scaling).

    .. math:: T^\ast = \operatorname{argmin}_{T > 0}\; \frac{1}{N}\sum_{n=1}^{N}
              -\log \mathrm{softmax}(x_n / T)_{y_n}

    Parameters
    ----------
    logits : array of shape (..., C, ...)
        Held-out logits, classes along ``axis`` (NumPy, torch or JAX; copied
        to a float64 host array).
    labels : integer array
        ``logits``' shape without the class axis; values in ``[0, C)``.
    axis : int, default -1
        The class axis.
    bounds : (float, float), default (1e-3, 1e3)
        The range searched for ``T``, ``0 < low < high``, finite.
    n_bins : int, default 15
        Bins for the reported ECE, from 1 to 1,000,000 (see
        :func:`expected_calibration_error`).
    tol : float > 0, default 1e-6
        Width of the final bracket on ``log T``.  The search also stops when
        the bracket can no longer shrink in float64 (a few units in the last
        place of ``log T``, about ``1e-16`` relative), so any ``tol`` below
        that gives the most precise fit float64 allows and still returns.

    Returns
    -------
    TemperatureFit
        ``temperature``, ``nll_before``, ``nll_after``, ``ece_before``,
        ``ece_after`` (and ``n_bins``, ``n_samples``, ``n_classes``); its
        ``str`` is a small table.

    Notes
    -----
    The mean NLL is :func:`softmaxkit.nll_loss` of
    :func:`softmaxkit.log_softmax` at temperature ``T``, i.e.
    :func:`softmaxkit.cross_entropy` of ``x / T``, exact at any margin.  It
    is convex in ``1/T`` (a log-sum-exp of linear functions minus a linear
    function), hence unimodal in ``log T``, so a golden-section search on
    ``log T`` over ``bounds`` converges to the minimiser deterministically,
    without derivatives: about 35 evaluations for the default ``bounds`` and
    ``tol``.  If the NLL still decreases at a bound (for example when every
    training label is the argmax, so sharper is always better), that bound is
    returned with a ``RuntimeWarning``.

    Raises ``ValueError`` for NaN logits, for labels whose probability is 0
    at every temperature (a ``-inf`` logit, or ``+inf`` on another class), for
    an empty batch, and for invalid parameters.

    References
    ----------
    C. Guo, G. Pleiss, Y. Sun & K. Q. Weinberger, "On Calibration of Modern
    Neural Networks", ICML 2017.

    Examples
    --------
    Logits three times too confident are scaled back by ``T`` close to 3:

    >>> import numpy as np, softmaxkit as smk
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(20000, 5))
    >>> labels = smk.sample(z, rng=rng)
    >>> fit = smk.fit_temperature(3.0 * z, labels)
    >>> round(fit.temperature, 1), fit.nll_after < fit.nll_before
    (3.0, True)
    """
    n_bins = _n_bins(n_bins)
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise TypeError(f"bounds must be a pair (low, high) of temperatures; got {validate.describe(bounds)}")
    low, high = (validate.real_number(b, "bounds") for b in bounds)
    if not (0 < low < high < math.inf):
        raise ValueError(f"bounds must satisfy 0 < low < high < inf; got {validate.describe(tuple(bounds))}")
    tol = validate.positive_finite(tol, "tol")
    x, rest = _rows(logits, axis, "logits")
    _require_samples(x, rest, "logits")
    y = _labels(labels, rest, x.shape[-1])
    _refuse_nan(x, "logits")
    nll_before = _mean_nll(x, y, 1.0)
    if not math.isfinite(nll_before):
        row = int(np.argmax(~np.isfinite(log_softmax(x)[np.arange(len(y)), y])))
        raise ValueError(
            f"labels[{row}] = {int(y[row])} has probability 0 at every temperature "
            f"(its logit is -inf, or another class is +inf); the likelihood cannot be fitted"
        )

    def nll(t: float) -> float:
        return _mean_nll(x, y, math.exp(t))

    a, b = math.log(low), math.log(high)
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = nll(c), nll(d)
    width = b - a
    while width > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = nll(d)
        # A bracket a few float64 spacings wide stops shrinking, since its
        # interior points round onto its ends: stop there rather than loop on
        # a tol below that spacing.  The width falls strictly otherwise, so
        # the loop always ends.
        if not b - a < width:
            break
        width = b - a
    t = c if fc <= fd else d
    T = math.exp(t)
    near = 2.0 * tol
    if t - math.log(low) < near or math.log(high) - t < near:
        T = low if t - math.log(low) < near else high
        warnings.warn(
            f"the NLL is still decreasing at the bound temperature={T!r}; the fit returns the bound "
            f"(widen bounds, or check that the held-out data is not separable)",
            RuntimeWarning,
            stacklevel=2,
        )
    return TemperatureFit(
        temperature=T,
        nll_before=nll_before,
        nll_after=_mean_nll(x, y, T),
        ece_before=_ece(softmax(x), y, n_bins, "l1"),
        ece_after=_ece(softmax(x, temperature=T), y, n_bins, "l1"),
        n_bins=n_bins,
        n_samples=int(x.shape[0]),
        n_classes=int(x.shape[-1]),
    )


def reliability_diagram(
    probs: Any,
    labels: Any,
    n_bins: int = 15,
    *,
    axis: int = -1,
    title: str | None = None,
) -> Any:
    """A reliability diagram: accuracy against confidence, per bin.

    Parameters
    ----------
    probs : array of shape (..., C, ...)
        Predicted probabilities, classes along ``axis``.
    labels : integer array
        ``probs``' shape without the class axis.
    n_bins : int, default 15
        Equal-width confidence bins, from 1 to 1,000,000, as in
        :func:`expected_calibration_error`.
    axis : int, default -1
    title : str, optional
        Title of the figure.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels: the bin accuracies as bars against the diagonal of perfect
        calibration, with the gap to each bin's mean confidence shaded and the
        ECE in the legend; below, the number of samples per bin.  Save it with
        ``fig.savefig("out.png")``; no pyplot state is touched.

    Notes
    -----
    Needs matplotlib, the optional extra ``plot``
    (``pip install 'softmaxkit[plot]'``), imported only when called.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> probs = smk.softmax(np.random.default_rng(0).normal(size=(500, 4)) * 3)
    >>> fig = smk.reliability_diagram(probs, np.zeros(500, dtype=int))
    >>> len(fig.axes)
    2
    """
    Figure = _figure_class("reliability_diagram")
    n_bins = _n_bins(n_bins)
    p, rest = _rows(probs, axis, "probs")
    _require_samples(p, rest, "probs")
    t = _labels(labels, rest, p.shape[-1])
    _check_probs(p, "probs")
    fig = Figure(figsize=(5.0, 6.0), layout="constrained")
    _draw_reliability(fig, p, t, n_bins, title)
    return fig


def temperature_scaling_diagram(
    logits: Any,
    labels: Any,
    temperature: float,
    n_bins: int = 15,
    *,
    axis: int = -1,
) -> Any:
    """Reliability diagrams before and after temperature scaling, side by side.

    The left half is :func:`reliability_diagram` of ``softmax(logits)``, the
    right half of ``softmax(logits, temperature=T)``; each is titled with its
    temperature and carries its ECE in the legend, and both use the same bins.

    Parameters
    ----------
    logits : array of shape (..., C, ...)
        Held-out logits, classes along ``axis`` (NumPy, torch or JAX).
    labels : integer array
        ``logits``' shape without the class axis; values in ``[0, C)``.
    temperature : float
        ``T > 0``, finite, typically :attr:`TemperatureFit.temperature`.
    n_bins : int, default 15
        Equal-width confidence bins, from 1 to 1,000,000.
    axis : int, default -1
        The class axis.

    Returns
    -------
    matplotlib.figure.Figure
        Two subfigures of two panels each (four axes: accuracy and counts
        before, then after).  No pyplot state is touched.

    Notes
    -----
    Needs matplotlib, the optional extra ``plot``
    (``pip install 'softmaxkit[plot]'``), imported only when called.
    Raises ``ValueError`` for NaN logits and the errors of
    :func:`reliability_diagram`.

    Examples
    --------
    Logits three times too confident, and labels drawn from ``softmax(z)``:

    >>> import numpy as np, softmaxkit as smk
    >>> from softmaxkit.tools.calibration import temperature_scaling_diagram
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(5000, 5))
    >>> labels = smk.sample(z, rng=rng)
    >>> fit = smk.fit_temperature(3.0 * z, labels)
    >>> fig = temperature_scaling_diagram(3.0 * z, labels, fit.temperature)
    >>> [ax.get_title() for ax in fig.axes[::2]]
    ['before temperature scaling: T = 1', 'after temperature scaling: T = 2.99']
    """
    Figure = _figure_class("temperature_scaling_diagram")
    n_bins = _n_bins(n_bins)
    temperature = validate.temperature(temperature)
    x, rest = _rows(logits, axis, "logits")
    _require_samples(x, rest, "logits")
    t = _labels(labels, rest, x.shape[-1])
    _refuse_nan(x, "logits")
    fig = Figure(figsize=(10.0, 6.0), layout="constrained")
    before, after = fig.subfigures(1, 2)
    _draw_reliability(before, softmax(x), t, n_bins, "before temperature scaling: T = 1")
    _draw_reliability(after, softmax(x, temperature=temperature), t, n_bins, f"after temperature scaling: T = {temperature:.4g}")
    return fig


def _figure_class(caller: str) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(f"{caller} needs matplotlib: pip install 'softmaxkit[plot]'") from None
    return Figure


def _draw_reliability(panel: Any, p: np.ndarray, t: np.ndarray, n_bins: int, title: str | None) -> None:
    """The bin accuracies over the diagonal and the counts below, on a Figure or SubFigure."""
    edges, count, mean_conf, accuracy = _bin_stats(p, t, n_bins)
    ece = _ece(p, t, n_bins, "l1")
    width = np.diff(edges)
    seen = count > 0
    top, bottom = panel.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(edges[:-1][seen], accuracy[seen], width=width[seen], align="edge", color="#4878d0", edgecolor="black", linewidth=0.5, label="accuracy")
    top.bar(
        edges[:-1][seen],
        (mean_conf - accuracy)[seen],
        bottom=accuracy[seen],
        width=width[seen],
        align="edge",
        color="#ee854a",
        alpha=0.5,
        hatch="//",
        edgecolor="#c44e52",
        linewidth=0.5,
        label=f"gap to confidence (ECE = {ece:.4f})",
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize="small")
    if title:
        top.set_title(title)
    bottom.bar(edges[:-1], count, width=width, align="edge", color="gray", edgecolor="black", linewidth=0.5)
    bottom.set_xlabel("confidence (max probability)")
    bottom.set_ylabel("samples")
