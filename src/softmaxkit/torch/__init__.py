"""softmaxkit for PyTorch: autograd-native, memory-lean, drop-in.

Functions follow ``torch.nn.functional`` (``input``, ``target``, ``dim``,
``reduction``) and modules follow ``torch.nn``, so switching is a change of
import.  Forward and backward passes use the same formulas as the NumPy API
(``softmaxkit.numerics``).  See ``docs/torch.md``.  ``watch`` stops a model
at the first NaN or inf; ``monitor`` records softmax health over a training
run (``docs/monitor.md``).
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("softmaxkit.torch needs PyTorch: pip install 'softmaxkit[torch]'") from exc

from softmaxkit.tools.watch import NonFiniteError, watch
from softmaxkit.tools.monitor import Monitor, monitor
from softmaxkit.backends.torch.functional import (
    binary_cross_entropy_with_logits,
    cross_entropy,
    log_softmax,
    logsumexp,
    nll_loss,
    softmax,
)
from softmaxkit.backends.torch.execution import working_dtype
from softmaxkit.backends.torch.attention import merge_attention_states, scaled_dot_product_attention
from softmaxkit.backends.torch.linear import LinearCrossEntropyLoss, linear_cross_entropy
from softmaxkit.backends.torch.linear_distillation import LinearDistillationLoss, linear_distillation_loss
from softmaxkit.backends.torch.elementwise import logsigmoid, sigmoid, softplus
from softmaxkit.backends.torch.distillation import DistillationLoss, distillation_loss
from softmaxkit.backends.torch.modules import BCEWithLogitsLoss, CrossEntropyLoss, LogSoftmax, NLLLoss, Softmax
from softmaxkit.frontend import registry as _registry

_registry.load_imported()

__all__ = [
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "LinearCrossEntropyLoss",
    "LinearDistillationLoss",
    "DistillationLoss",
    "LogSoftmax",
    "Monitor",
    "NLLLoss",
    "NonFiniteError",
    "Softmax",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "linear_cross_entropy",
    "linear_distillation_loss",
    "distillation_loss",
    "log_softmax",
    "logsigmoid",
    "logsumexp",
    "merge_attention_states",
    "monitor",
    "nll_loss",
    "scaled_dot_product_attention",
    "sigmoid",
    "softmax",
    "softplus",
    "watch",
    "working_dtype",
]
