"""The textbook recipes, kept as a foil: softmax, log-softmax and cross-entropy as most code writes them (see :mod:`softmaxkit.tools.naive`)."""

from softmaxkit.tools.naive import cross_entropy, cross_entropy_grad, log_softmax, softmax

__all__ = [
    "cross_entropy",
    "cross_entropy_grad",
    "log_softmax",
    "softmax",
]
