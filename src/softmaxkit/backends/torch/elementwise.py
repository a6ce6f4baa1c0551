"""sigmoid, logsigmoid and softplus with torch.nn.functional's names.

Plain torch operations over the shared formulas (``softmaxkit.numerics``)
in the working precision: autograd differentiates the formulas themselves,
which are written with branch selections (``where``) rather than ``|x|`` or
``max(x, 0)``, so every derivative, at 0 included, is the true one, to any
order, in reverse and forward mode, under ``vmap`` and ``torch.compile``.
"""

from __future__ import annotations

import torch

from softmaxkit import numerics as num
from softmaxkit.backends.torch.execution import as_float, working_dtype, xp


def _apply(input: torch.Tensor, formula) -> torch.Tensor:
    x = as_float(input, "input")
    work, _ = working_dtype(x.dtype, x.device)
    return formula(xp, x.to(work)).to(x.dtype)


def sigmoid(input: torch.Tensor) -> torch.Tensor:
    r"""Logistic sigmoid, drop-in for ``torch.sigmoid``.

    .. math:: \sigma(x) = \frac{1}{1 + e^{-x}} \;(x \ge 0), \qquad \frac{e^{x}}{1 + e^{x}} \;(x < 0)

    Parameters
    ----------
    input : torch.Tensor
        Integer tensors are promoted to float64.

    Returns
    -------
    torch.Tensor of ``input``'s shape and dtype.

    Notes
    -----
    Nothing overflows, and small results keep full relative accuracy: within
    1 ULP for float32 and narrower on CPU (computed in float64).  The
    derivative ``sigma(x) sigma(-x)`` is 1/4 at 0 and keeps full relative
    accuracy in both tails.

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> x = torch.zeros(1, requires_grad=True)
    >>> smt.sigmoid(x).backward()
    >>> x.grad
    tensor([0.2500])
    """
    return _apply(input, num.sigmoid)


def softplus(input: torch.Tensor) -> torch.Tensor:
    r"""``log(1 + e^x)``, exact for every ``x``; ``torch.nn.functional.softplus`` with its defaults.

    .. math:: \operatorname{softplus}(x) = x + \operatorname{log1p}(e^{-x}) \;(x \ge 0), \qquad \operatorname{log1p}(e^{x}) \;(x < 0)

    Parameters
    ----------
    input : torch.Tensor

    Returns
    -------
    torch.Tensor of ``input``'s shape and dtype.

    Notes
    -----
    Both terms are non-negative, so nothing cancels.  torch's ``beta`` and
    ``threshold`` are not offered: torch's threshold replaces the function by
    ``x`` above 20, an approximation this function does not need.  The
    derivative is ``sigmoid(x)`` everywhere, 1/2 at 0.

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> smt.softplus(torch.tensor([-50.0, 0.0, 1000.0], dtype=torch.float64))
    tensor([1.9287e-22, 6.9315e-01, 1.0000e+03], dtype=torch.float64)
    """
    return _apply(input, num.softplus)


def logsigmoid(input: torch.Tensor) -> torch.Tensor:
    r"""``log(sigmoid(x)) = -softplus(-x)``, drop-in for ``torch.nn.functional.logsigmoid``.

    Parameters
    ----------
    input : torch.Tensor

    Returns
    -------
    torch.Tensor of ``input``'s shape and dtype.

    Notes
    -----
    Exact where ``log(sigmoid(x))`` underflows to ``-inf`` (below about
    -745 in float64).  The derivative is ``sigmoid(-x)``, 1/2 at 0.

    Examples
    --------
    >>> import torch, softmaxkit.torch as smt
    >>> smt.logsigmoid(torch.tensor([-1000.0, 40.0], dtype=torch.float64))
    tensor([-1.0000e+03, -4.2484e-18], dtype=torch.float64)
    """
    return _apply(input, num.log_sigmoid)
