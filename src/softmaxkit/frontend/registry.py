"""Array kind -> backend.

Torch tensors and JAX arrays passed to the core functions go to the
autograd-aware implementations in ``softmaxkit.torch`` and
``softmaxkit.jax``.  Neither library is imported here: an array of a kind
can only exist once its library has been imported.
"""

from __future__ import annotations

import sys
from typing import Any


def backend(x: Any) -> Any:
    """The module with the ``_core_*`` entry points for ``x``, or None (NumPy path)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        from softmaxkit.backends.torch import entry as _core_api

        return _core_api
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, jax.Array):
        from softmaxkit.backends.jax import functions as jax_backend

        return jax_backend
    return None
