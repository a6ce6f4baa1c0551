"""The loss rules around the formulas: targets, the "mean" denominator and the reduction.

Every front end and backend (NumPy, torch, JAX, the native kernels' adapter)
calls these, so that a rule changes in one place:

* class-index targets become one-hot rows, all zero where the target is
  ``ignore_index`` (:func:`one_hot`);
* "mean" divides by the summed weights of the rows' target classes (1 each
  without class weights, 0 on ignored rows), or by the number of rows for
  probability targets (:func:`mean_denominator`);
* a "mean" over a total weight of 0 (every target ignored, or weights that
  cancel) is 0 with a zero gradient, where PyTorch divides by 0
  (:func:`reduce`, :func:`reduce_grad`);
* totals are compensated sums, so a reduced loss does not depend on the
  number of rows' rounding errors.
"""

from __future__ import annotations

import math
from typing import Any

from softmaxkit.numerics.precision import compensated_sum, device


def one_hot(xp: Any, t: Any, n_classes: int, ignore_index: int, dtype: Any) -> Any:
    """One-hot rows of ``dtype`` for checked class indices ``t``; ignored rows are all 0."""
    classes = xp.arange(n_classes, dtype=t.dtype, device=device(t))
    hot = (classes == t[..., None]) & (t != ignore_index)[..., None]
    return xp.astype(hot, dtype)


def mean_denominator(
    xp: Any, t: Any, weight: Any, ignore_index: int, dtype: Any, probabilities: bool, live: Any = None
) -> Any:
    """What "mean" divides by, as a 0-d array of ``dtype``.

    ``t`` holds one target per row: class indices (checked before, when
    ``weight`` is indexed by them), or, with ``probabilities``, any array
    whose first axis counts the rows.  Class indices give the sum of
    ``weight[t]`` over the rows whose target is not ``ignore_index`` (their
    count without class weights);
    probability targets give the number of rows, or of ``live`` rows (a
    boolean per row: rows left without a class by a mask weigh 0; class-index
    targets mark those rows ignored instead).  The cost is one pass over the
    targets, never over the logits.  A plain sum: the weights are the
    caller's numbers, mostly 0 and 1, and the count is exact below 2**24 rows
    in float32.
    """
    dev = device(t)
    if probabilities and live is not None:
        return xp.sum(xp.astype(live, dtype))
    if probabilities:
        return xp.asarray(float(t.shape[0]), dtype=dtype, device=dev)
    keep = t != ignore_index
    if weight is None:
        row_w = xp.astype(keep, dtype)
    else:
        safe = xp.where(keep, t, xp.zeros_like(t))
        picked = xp.take(weight, xp.reshape(safe, (-1,)), axis=0)
        row_w = xp.where(xp.reshape(keep, (-1,)), picked, xp.zeros_like(picked))
    return xp.sum(row_w)


def elementwise_denominator(xp: Any, like: Any, dtype: Any) -> Any:
    """What "mean" divides by for an elementwise loss (binary cross-entropy): the number of entries of ``like``."""
    return xp.asarray(float(math.prod(tuple(like.shape))), dtype=dtype, device=device(like))


def reduce(xp: Any, loss: Any, grad: Any, denominator: Any, reduction: str, widened: bool):
    """``(reduced loss, gradient of the reduced loss)`` from per-row losses and gradients.

    ``denominator`` is :func:`mean_denominator`'s (read for "mean" only);
    ``grad`` may be None.
    """
    if reduction == "none":
        return loss, grad
    flat = xp.reshape(loss, (1, -1))
    total = compensated_sum(xp, flat, widened)[0, 0]
    if reduction == "sum":
        return total, grad
    empty = denominator == 0
    mean = xp.where(empty, 0.0, total / xp.where(empty, 1.0, denominator))
    return mean, reduce_grad(xp, grad, denominator, reduction)


def reduce_grad(xp: Any, grad: Any, denominator: Any, reduction: str) -> Any:
    """The gradient of the reduced loss from that of the per-row losses (any rows of them)."""
    if grad is None or reduction != "mean":
        return grad
    # An all-ignored (or all-zero-weight) batch has mean 0 and gradient 0.
    empty = denominator == 0
    return xp.where(empty, 0.0, grad / xp.where(empty, 1.0, denominator))


def gradient_divisor(denominator: float, reduction: str) -> float | None:
    """:func:`reduce_grad`'s rule for a host-side kernel that divides as it writes.

    What the per-row gradients are divided by: the denominator for "mean",
    1 otherwise; None where the gradient is 0 (a "mean" over a total weight
    of 0).
    """
    if reduction != "mean":
        return 1.0
    d = float(denominator)
    return None if d == 0 else d


def gradient_divisor_array(xp: Any, denominator: Any, reduction: str) -> Any:
    """:func:`gradient_divisor`'s rule as a 0-d array, for a kernel called where
    the denominator is not on the host (inside ``jax.jit``): the denominator
    for "mean", ``+inf`` in place of 0 (the kernel, dividing finite gradients
    by it, then writes the zero gradient :func:`reduce_grad` gives), 1
    otherwise."""
    if reduction != "mean":
        return xp.ones_like(denominator)
    return xp.where(denominator == 0, xp.asarray(float("inf"), dtype=denominator.dtype), denominator)
