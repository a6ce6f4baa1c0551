"""Textbook softmax code, kept deliberately unstable.

These functions are what tutorials write and what ``softmaxkit lint`` flags.
They exist to demonstrate and measure failures: overflow to ``inf``, ``nan``
from ``inf / inf``, ``log(0) = -inf``, and ``p - 1`` rounding to 0 on
confident rows.  Do not use them for real work.  Floating-point warnings are
silenced so that the failures show as values.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "softmax",
    "log_softmax",
    "cross_entropy",
    "cross_entropy_grad",
]


def softmax(x, axis=-1):
    """``exp(x) / sum(exp(x))``: overflows for logits above about 709 (float64)."""
    with np.errstate(all="ignore"):
        e = np.exp(np.asarray(x))
        return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """``log(softmax(x))``: ``-inf`` wherever the probability underflows."""
    with np.errstate(all="ignore"):
        return np.log(softmax(x, axis))


def cross_entropy(logits, targets):
    """Mean of ``-log(softmax(logits)[target])`` over rows (class axis last)."""
    p = softmax(logits)
    rows = np.arange(p.shape[0])
    with np.errstate(all="ignore"):
        return float(np.mean(-np.log(p[rows, targets])))


def cross_entropy_grad(logits, targets):
    """``(softmax(logits) - onehot(targets)) / N``: ``p_t - 1`` collapses to 0."""
    p = softmax(logits)
    g = p.copy()
    rows = np.arange(p.shape[0])
    with np.errstate(all="ignore"):
        g[rows, targets] -= 1.0
        return g / p.shape[0]
