"""softmaxkit: exact, NaN-free softmax, log-softmax, logsumexp and losses.

Every function takes NumPy arrays, anything ``numpy.asarray`` accepts, or any
array-API array (PyTorch, JAX, CuPy, ...) and returns the same kind.  See the
README for the accuracy contract and the table of edge semantics.
"""

from softmaxkit._core import (
    entropy,
    kl_div,
    log_softmax,
    log_softmax_vjp,
    logsumexp,
    logsumexp_vjp,
    softmax,
    softmax_vjp,
)
from softmaxkit._elementwise import log_sigmoid, sigmoid, softplus
from softmaxkit._losses import binary_cross_entropy_with_logits, cross_entropy, nll_loss
from softmaxkit._native import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "entropy",
    "get_num_threads",
    "kl_div",
    "log_sigmoid",
    "log_softmax",
    "log_softmax_vjp",
    "logsumexp",
    "logsumexp_vjp",
    "nll_loss",
    "set_num_threads",
    "sigmoid",
    "softmax",
    "softmax_vjp",
    "softplus",
]
