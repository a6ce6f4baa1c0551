"""Losses over a vocabulary split across the ranks of a ``torch.distributed`` group (tensor parallelism).

:func:`vocab_parallel_cross_entropy` takes each rank's slice of the logits;
:func:`vocab_parallel_linear_cross_entropy` each rank's slice of the output
layer's weight, and never holds the logits.  Both give the loss of
:func:`softmaxkit.torch.cross_entropy` on the whole vocabulary, with its
accuracy, on every rank.  See ``docs/distributed.md``.
"""

from softmaxkit.backends.torch.distributed.cross_entropy import vocab_parallel_cross_entropy
from softmaxkit.backends.torch.distributed.group import RankError
from softmaxkit.backends.torch.distributed.linear import vocab_parallel_linear_cross_entropy

__all__ = [
    "RankError",
    "vocab_parallel_cross_entropy",
    "vocab_parallel_linear_cross_entropy",
]
