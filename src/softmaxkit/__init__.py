"""softmaxkit: exact, NaN-free softmax, log-softmax, logsumexp and losses.

Every function takes NumPy arrays, anything ``numpy.asarray`` accepts, or any
array-API array (PyTorch, JAX, CuPy, ...) and returns the same kind.  See the
README for the accuracy contract and the table of edge semantics.
"""

from softmaxkit.frontend import registry as _registry
from softmaxkit.frontend.softmax import (
    entropy,
    kl_div,
    log_softmax,
    log_softmax_vjp,
    logsumexp,
    logsumexp_vjp,
    softmax,
    softmax_vjp,
)
from softmaxkit.frontend.attention import attention, merge_attention_states
from softmaxkit.frontend.elementwise import log_sigmoid, sigmoid, softplus
from softmaxkit.frontend.losses import binary_cross_entropy_with_logits, cross_entropy, nll_loss
from softmaxkit.frontend.distillation import distillation_loss
from softmaxkit.frontend.linear import linear_cross_entropy
from softmaxkit.frontend.linear_distillation import linear_distillation_loss
from softmaxkit.kernels import get_num_threads, get_output_cache, set_num_threads, set_output_cache
from softmaxkit.calibration import expected_calibration_error, fit_temperature, reliability_diagram
from softmaxkit.tools.cli import version as _version
from softmaxkit.tools.report import diagnose, diagnose_attention
from softmaxkit.sampling import gumbel_max, gumbel_softmax, sample, truncate
from softmaxkit.sparse import entmax15, entmax15_vjp, sparsemax, sparsemax_vjp

__version__ = _version()

# Arrays of these libraries go to their backends, imported on first use.
_registry.register("torch", "Tensor", "softmaxkit.backends.torch.entry:BACKEND")
_registry.register("jax", "Array", "softmaxkit.backends.jax.entry:BACKEND")
_registry.load_imported()

__all__ = [
    "attention",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "diagnose",
    "diagnose_attention",
    "distillation_loss",
    "entmax15",
    "entmax15_vjp",
    "entropy",
    "expected_calibration_error",
    "fit_temperature",
    "get_num_threads",
    "get_output_cache",
    "gumbel_max",
    "gumbel_softmax",
    "kl_div",
    "linear_cross_entropy",
    "linear_distillation_loss",
    "log_sigmoid",
    "log_softmax",
    "log_softmax_vjp",
    "logsumexp",
    "logsumexp_vjp",
    "merge_attention_states",
    "nll_loss",
    "reliability_diagram",
    "sample",
    "set_num_threads",
    "set_output_cache",
    "sigmoid",
    "softmax",
    "softmax_vjp",
    "softplus",
    "sparsemax",
    "sparsemax_vjp",
    "truncate",
]
