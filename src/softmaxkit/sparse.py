"""Sparse alternatives to softmax: sparsemax and 1.5-entmax, with their VJPs (see :mod:`softmaxkit.frontend.sparse`)."""

from softmaxkit.frontend.sparse import (
    entmax15,
    entmax15_vjp,
    sparsemax,
    sparsemax_vjp,
)

__all__ = [
    "entmax15",
    "entmax15_vjp",
    "sparsemax",
    "sparsemax_vjp",
]
