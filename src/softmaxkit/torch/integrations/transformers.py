"""Logits processors for Hugging Face ``generate()`` that truncate by :func:`softmaxkit.truncate`.

The implementation and its documentation live in
``softmaxkit.backends.torch.integrations.transformers``; this module is its
public name.  Importing it imports ``transformers``.
"""

from softmaxkit.backends.torch.integrations.transformers import *  # noqa: F403
from softmaxkit.backends.torch.integrations.transformers import __all__  # noqa: F401
