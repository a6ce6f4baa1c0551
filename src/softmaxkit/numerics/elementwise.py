"""Elementwise: softplus, sigmoid, log-sigmoid and binary cross-entropy."""

from __future__ import annotations


def _neg_abs(xp, x):
    """``-|x|`` as a selection between ``-x`` (``x >= 0``) and ``x``.

    Automatic differentiation then takes the slope of the ``x >= 0`` side at
    0 (-1).  ``abs`` and ``maximum`` have kinks at 0 whose conventional
    derivatives (JAX: 1 and 1/2; PyTorch: 0 and 1/2) do not add up to the
    slope of the smooth function built from them: ``softplus'(0)`` came out
    as 0 under ``jax.grad`` and ``sigmoid'(0)`` as 0 under PyTorch autograd.
    """
    return xp.where(x >= 0, -x, x)


def softplus(xp, x):
    """``log(1 + e^x) = max(x, 0) + log1p(e^{-|x|})``: two non-negative terms.

    Written with selections on ``x >= 0`` so that its derivative under
    automatic differentiation is ``sigmoid(x)`` everywhere, 1/2 at 0.
    """
    return xp.where(x >= 0, x, xp.zeros_like(x)) + xp.log1p(xp.exp(_neg_abs(xp, x)))


def log_sigmoid(xp, x):
    """``log(sigmoid(x)) = -softplus(-x)``, exact where the log would underflow."""
    return -softplus(xp, -x)


def sigmoid(xp, x):
    """``1 / (1 + e^{-x})``, written with ``e^{-|x|}`` so nothing overflows.

    The derivative under automatic differentiation is ``s (1 - s)``
    everywhere, 1/4 at 0 (see ``_neg_abs``).
    """
    e = xp.exp(_neg_abs(xp, x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def binary_cross_entropy(xp, x, y, beta, want_grad: bool):
    """``beta y softplus(-x) + (1 - y) softplus(x)`` and its gradient.

    Each term is skipped where its target factor is 0, so an infinite logit
    on the side the target agrees with gives 0, not ``0 * inf``.
    """
    zero = xp.zeros_like(x)
    pos = y if beta is None else beta * y
    neg = 1.0 - y
    loss = xp.where(pos == 0, zero, pos * softplus(xp, -x)) + xp.where(neg == 0, zero, neg * softplus(xp, x))
    if not want_grad:
        return loss, None
    grad = xp.where(neg == 0, zero, neg * sigmoid(xp, x)) - xp.where(pos == 0, zero, pos * sigmoid(xp, -x))
    return loss, grad


def binary_cross_entropy_target_grad(xp, x, beta):
    """The derivative of :func:`binary_cross_entropy` in the target ``y``: ``beta softplus(-x) - softplus(x)``."""
    pos = softplus(xp, -x)
    return (pos if beta is None else beta * pos) - softplus(xp, x)
