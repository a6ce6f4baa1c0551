"""Sparse alternatives to softmax: sparsemax and 1.5-entmax, with their VJPs.

Both map logits to probabilities that can be exactly 0.  NumPy inputs (and
other array-API arrays) run the formulas directly; torch tensors go through
a ``torch.autograd.Function`` and JAX arrays through a ``jax.custom_vjp``, so
gradients use the exact Jacobians below.  The formulas live in
``softmaxkit.numerics.sparse``.
"""

from __future__ import annotations

from typing import Any


from softmaxkit.numerics import sparse as sn
from softmaxkit.frontend import registry
from softmaxkit.frontend import validate
from softmaxkit.frontend.softmax import _prepare, _vjp_by_rows, _vjp_inputs

__all__ = [
    "entmax15",
    "entmax15_vjp",
    "sparsemax",
    "sparsemax_vjp",
]


def _apply(name: str, x: Any, axis: Any) -> Any:
    xp, layout, xw, _, out_dtype, widened = _prepare(x, axis, name="x", allow_many=False)
    if layout.n == 0:
        return layout.back(xp.astype(xw, out_dtype))
    backend = registry.backend_for(xw)
    entry = None if backend is None else getattr(backend, name)
    p = getattr(sn, name)(xp, xw, widened) if entry is None else entry(xw, widened)
    return layout.back(xp.astype(p, out_dtype))


@validate.quiet
def sparsemax(x: Any, axis: int = -1) -> Any:
    r"""Sparsemax: the Euclidean projection of the logits onto the simplex.

    .. math:: \mathrm{sparsemax}(x) = \operatorname{argmin}_{p \in \Delta} \|p - x\|^2,
              \qquad p_i = [x_i - \tau]_+,\quad \sum_i p_i = 1

    Parameters
    ----------
    x : array_like, numpy.ndarray, torch.Tensor or jax.Array
        Logits of shape ``(..., C, ...)`` with the classes along ``axis``.
        Integer input is promoted to float64.
    axis : int, default -1
        The class axis.

    Returns
    -------
    array of ``x``'s shape, floating dtype and kind: probabilities, some
    exactly 0.

    Notes
    -----
    Algorithm (Martins & Astudillo 2016, Prop. 1): sort ``z = x - max x`` in
    decreasing order; the support size is
    ``k = max{k : 1 + k z_(k) > sum_{j<=k} z_(j)}`` and
    ``tau = (sum_{j<=k} z_(j) - 1) / k``.  The threshold is exact up to a few
    roundings (computed in float64 for narrower inputs, with a compensated sum
    for float64), so every entry has an absolute error of a few units of
    2**-53 before the final rounding to the input dtype.  ``O(C log C)`` per
    row.

    Gradients: under torch autograd and JAX the Jacobian
    ``diag(s) - s s^T / |S|`` (``s`` the support indicator) is applied, as in
    :func:`sparsemax_vjp`.

    Edge behaviour: ``-inf`` entries get 0; a fully masked row (all ``-inf``)
    gives zeros, as softmax does; a row with ``+inf`` entries shares the mass
    equally among them (0 elsewhere); a NaN makes its row NaN; an empty axis
    gives an empty array.  The map is shift invariant but, unlike softmax,
    not scale invariant in its sparsity: large logits give sparse outputs.

    References
    ----------
    A. F. T. Martins & R. F. Astudillo, "From Softmax to Sparsemax: A Sparse
    Model of Attention and Multi-Label Classification", ICML 2016.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> smk.sparsemax(np.array([1.0, 0.5, -1.0]))
    array([0.75, 0.25, 0.  ])
    >>> smk.sparsemax(np.array([[-np.inf, -np.inf], [np.inf, np.inf]]))
    array([[0. , 0. ],
           [0.5, 0.5]])
    """
    return _apply("sparsemax", x, axis)


@validate.quiet
def entmax15(x: Any, axis: int = -1) -> Any:
    r"""1.5-entmax: a sparse map between softmax and sparsemax.

    .. math:: \mathrm{entmax}_{1.5}(x) = \operatorname{argmax}_{p \in \Delta}
              \; p^\top x + \tfrac{4}{3}\bigl(1 - \textstyle\sum_i p_i^{3/2}\bigr),
              \qquad p_i = [x_i/2 - \tau]_+^2,\quad \sum_i p_i = 1

    Parameters
    ----------
    x : array_like, numpy.ndarray, torch.Tensor or jax.Array
        Logits of shape ``(..., C, ...)`` with the classes along ``axis``.
    axis : int, default -1
        The class axis.

    Returns
    -------
    array of ``x``'s shape, floating dtype and kind.

    Notes
    -----
    Exact sort-based threshold (Peters, Niculae & Martins 2019, Alg. 2): with
    ``u`` the decreasingly sorted ``(x - max x) / 2`` and, for each prefix
    length ``k``, its mean ``m_k`` and sum of squared deviations ``S_k``, the
    candidate threshold is ``tau_k = m_k - sqrt((1 - S_k) / k)``; the support
    size is the number of ``k`` with ``tau_k <= u_(k)``.  ``tau`` is then
    recomputed on the support with a two-pass variance and compensated sums,
    so it is exact up to a few roundings (float64 for narrower inputs).

    Gradients: the Jacobian ``diag(q) - q q^T / sum(q)`` with ``q = sqrt(p)``
    (:func:`entmax15_vjp`) under torch autograd and JAX.

    Edge behaviour: as :func:`sparsemax`: ``-inf`` gives 0, fully masked rows
    give zeros, ``+inf`` entries share the mass equally, NaN rows are NaN.

    References
    ----------
    B. Peters, V. Niculae & A. F. T. Martins, "Sparse Sequence-to-Sequence
    Models", ACL 2019.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> smk.entmax15(np.array([0.0, 0.0]))
    array([0.5, 0.5])
    >>> smk.entmax15(np.array([3.0, 1.0, -1.0]))
    array([1., 0., 0.])
    >>> smk.entmax15(np.array([1.0, 0.5, -1.0])).round(4)
    array([0.674, 0.326, 0.   ])
    """
    return _apply("entmax15", x, axis)


@validate.quiet
def sparsemax_vjp(output: Any, cotangent: Any, axis: int = -1) -> Any:
    r"""Vector-Jacobian product of sparsemax, from its output.

    .. math:: \bar x_i = s_i\,\bigl(\bar p_i - \tfrac{1}{|S|}\textstyle\sum_{j \in S} \bar p_j\bigr),
              \qquad s_i = [p_i > 0]

    Parameters
    ----------
    output : array
        ``sparsemax(x)``.
    cotangent : array of the same shape
        Gradient with respect to the output.
    axis : int, default -1

    Returns
    -------
    array of ``output``'s shape: the gradient with respect to ``x``.

    Notes
    -----
    The Jacobian is ``diag(s) - s s^T / |S|``, symmetric, so the VJP equals
    the JVP.  Entries outside the support get 0 whatever their cotangent; a
    fully masked row (no support) gives zeros; a NaN row gives NaN.  The
    support is read from the output, so pass the output unrounded (a float32
    output is fine: rounding never turns a positive entry into 0).

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> p = smk.sparsemax(np.array([1.0, 0.5, -1.0]))
    >>> smk.sparsemax_vjp(p, np.array([1.0, 0.0, 7.0]))
    array([ 0.5, -0.5,  0. ])
    """
    xp, layout, p_rows, g_rows, out_dtype, work, widened = _vjp_inputs(output, cotangent, axis, "output", True)
    return _vjp_by_rows(xp, layout, p_rows, g_rows, out_dtype, work, lambda p, g: sn.sparsemax_vjp(xp, p, g, widened))


@validate.quiet
def entmax15_vjp(output: Any, cotangent: Any, axis: int = -1) -> Any:
    r"""Vector-Jacobian product of 1.5-entmax, from its output.

    .. math:: \bar x = q \odot \bar p - q\,\frac{\langle q, \bar p\rangle}{\sum_j q_j},
              \qquad q = \sqrt{p}

    Parameters
    ----------
    output : array
        ``entmax15(x)``.
    cotangent : array of the same shape
        Gradient with respect to the output.
    axis : int, default -1

    Returns
    -------
    array of ``output``'s shape: the gradient with respect to ``x``.

    Notes
    -----
    From ``p_i = (x_i/2 - tau)^2`` on the support and ``sum p = 1``; the
    Jacobian ``diag(q) - q q^T / sum q`` is symmetric.  Entries with
    ``p = 0`` get 0; a fully masked row gives zeros; a NaN row gives NaN.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> p = smk.entmax15(np.array([0.0, 0.0, -5.0]))
    >>> smk.entmax15_vjp(p, np.array([1.0, 0.0, 3.0])).round(6)
    array([ 0.353553, -0.353553,  0.      ])
    """
    xp, layout, p_rows, g_rows, out_dtype, work, widened = _vjp_inputs(output, cotangent, axis, "output", True)
    return _vjp_by_rows(xp, layout, p_rows, g_rows, out_dtype, work, lambda p, g: sn.entmax15_vjp(xp, p, g, widened))
