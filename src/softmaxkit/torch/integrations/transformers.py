"""Hugging Face ``transformers`` integration: logits processors for ``generate()`` that truncate by
:func:`softmaxkit.truncate`, and :func:`use_fused_loss`, a causal language model's training loss by
:func:`softmaxkit.torch.linear_cross_entropy` without its logits.

The implementation and its documentation live in
``softmaxkit.backends.torch.integrations.transformers``; this module is its
public name.  Importing it imports ``transformers``.
"""

from softmaxkit.backends.torch.integrations.transformers import *
from softmaxkit.backends.torch.integrations.transformers import __all__  # noqa: F401
