"""sigmoid, log_sigmoid and softplus."""

from __future__ import annotations

from typing import Any

from softmaxkit import numerics as num
from softmaxkit.frontend import validate


def _apply(x: Any, formula) -> Any:
    xp, x, out_dtype = validate.real_array(x, "x")
    # Device-aware: float32 where x's device has no float64.
    work, _ = num.working_dtype(xp, out_dtype, x)
    return xp.astype(formula(xp, xp.astype(x, work)), out_dtype)


@validate.quiet
def sigmoid(x: Any) -> Any:
    r"""Logistic sigmoid, without overflow.

    .. math:: \sigma(x) = \frac{1}{1 + e^{-x}} = \frac{e^{x}}{1 + e^{x}}

    The first form is used for ``x >= 0`` and the second for ``x < 0``, so the
    exponential never overflows and small results keep full relative
    accuracy.  Accuracy: 2 ULP (float16, bfloat16, float32), 4 ULP (float64);
    3 ULP for float32 on an array-API device without float64, where it is
    computed in float32.
    Under ``jax.grad`` or PyTorch autograd the derivative is
    ``sigmoid(x) (1 - sigmoid(x))`` everywhere: 1/4 at ``x = 0`` and ``-0``,
    0 at ``±inf``.

    Parameters
    ----------
    x : array_like or array-API array

    Returns
    -------
    array of ``x``'s shape and floating dtype.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> smk.sigmoid(np.array([-800.0, 0.0, 800.0]))
    array([0. , 0.5, 1. ])
    """
    return _apply(x, num.sigmoid)


@validate.quiet
def softplus(x: Any) -> Any:
    r"""Softplus ``log(1 + e^x)``, exact for every ``x``.

    .. math:: \operatorname{softplus}(x) = \max(x, 0) + \operatorname{log1p}(e^{-|x|})

    Both terms are non-negative.  Accuracy: 2 ULP (float16, bfloat16,
    float32), 4 ULP (float64); 3 ULP for float32 on an array-API device
    without float64, where it is computed in float32.  ``softplus(-inf) = 0``, ``softplus(inf) = inf``.
    The branches are selected on ``x >= 0`` (rather than through ``max`` and
    ``abs``, whose kinks at 0 have conventional derivatives), so under
    ``jax.grad`` or PyTorch autograd the derivative is ``sigmoid(x)``
    everywhere: 1/2 at ``x = 0`` and ``-0``, 0 at ``-inf``, 1 at ``inf``.

    Parameters
    ----------
    x : array_like or array-API array

    Returns
    -------
    array of ``x``'s shape and floating dtype.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> smk.softplus(np.array([-50.0, 1000.0]))
    array([1.92874985e-22, 1.00000000e+03])
    """
    return _apply(x, num.softplus)


@validate.quiet
def log_sigmoid(x: Any) -> Any:
    r"""Log of the sigmoid, ``-softplus(-x)``.

    .. math:: \log\sigma(x) = -\max(-x, 0) - \operatorname{log1p}(e^{-|x|})

    ``log(sigmoid(x))`` underflows to ``-inf`` below about ``x = -745``
    (float64); this stays exact: 2 ULP (float16, bfloat16, float32), 4 ULP
    (float64), 3 ULP for float32 on an array-API device without float64.
    Its derivative under ``jax.grad`` or
    PyTorch autograd is ``sigmoid(-x)`` everywhere, 1/2 at 0.

    Parameters
    ----------
    x : array_like or array-API array

    Returns
    -------
    array of ``x``'s shape and floating dtype.

    Examples
    --------
    >>> import numpy as np, softmaxkit as smk
    >>> smk.log_sigmoid(np.array([-1000.0, 40.0]))
    array([-1.00000000e+03, -4.24835426e-18])
    """
    return _apply(x, num.log_sigmoid)
