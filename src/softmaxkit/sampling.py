"""Sampling from logits: the exact Gumbel-max sampler, its truncation, and the Gumbel tricks (see :mod:`softmaxkit.frontend.sampling`)."""

from softmaxkit.frontend.sampling import (
    gumbel_max,
    gumbel_softmax,
    sample,
    truncate,
)

__all__ = [
    "gumbel_max",
    "gumbel_softmax",
    "sample",
    "truncate",
]
