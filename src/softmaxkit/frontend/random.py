"""Random numbers for sampling: generators per array kind and Gumbel noise.

Every backend supplies raw 32-bit words; one formula turns them into Gumbel
noise, so NumPy, PyTorch and JAX draw from the same distribution.

Gumbel noise is ``G = -log(E)`` with ``E = -log(U)`` exponential and ``U``
uniform.  The textbook ``-log(-log(U))`` with ``U`` from a ``[0, 1)``
generator takes ``log(0)`` when ``U`` is 0 (``G = -inf``) and, in float32,
cannot produce ``G`` above about 16.6 because ``U`` has no values closer to 1
than ``2**-24``: tokens 17 nats below the best could then never be drawn.
Instead one bit chooses the half of ``(0, 1)`` and 62 more bits give
``V`` in ``(0, 1/2]``, resolved down to ``2**-63`` in either precision:
``E = -log(V)`` in the lower half and ``E = -log1p(-V)`` (that is,
``-log(1 - V)``) in the upper half.  So ``E`` lies in ``(0, 43.7]`` and is
never 0, ``G`` is finite, and only the Gumbel tails beyond a probability of
about ``e**-43`` are cut off.
"""

from __future__ import annotations

import numbers
from typing import Any

import array_api_compat
import numpy as np

from softmaxkit.frontend import validate as v


def array_kind(x: Any, name: str) -> str:
    """'numpy', 'torch' or 'jax'; TypeError for other array libraries."""
    if array_api_compat.is_numpy_array(x):
        return "numpy"
    if array_api_compat.is_torch_array(x):
        return "torch"
    if array_api_compat.is_jax_array(x):
        return "jax"
    raise TypeError(f"{name} is a {type(x).__module__}.{type(x).__name__}; random sampling supports NumPy, PyTorch and JAX arrays")


def check_rng(kind: str, rng: Any) -> Any:
    """The generator to draw from, checked against the array kind.

    NumPy: a ``numpy.random.Generator``, an int seed, or None (fresh OS
    entropy).  PyTorch: a ``torch.Generator``, an int seed, or None (torch's
    global generator).  JAX: a ``jax.random`` key, required.
    """
    if kind == "jax":
        import jax

        typed = getattr(rng, "dtype", None) is not None and jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
        raw = isinstance(rng, jax.Array) and rng.dtype == np.uint32 and tuple(rng.shape) == (2,)
        if not (typed or raw):
            raise TypeError(f"rng must be a jax.random key (jax.random.key(seed)) for JAX arrays; got {v._describe(rng)}")
        return rng
    if rng is None:
        return np.random.default_rng() if kind == "numpy" else None
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"rng as a seed must be >= 0; got {rng!r}")
        if kind == "numpy":
            return np.random.default_rng(int(rng))
        import torch

        return torch.Generator().manual_seed(int(rng))
    if kind == "numpy" and isinstance(rng, np.random.Generator):
        return rng
    if kind == "torch":
        import torch

        if isinstance(rng, torch.Generator):
            return rng
    allowed = {
        "numpy": "a numpy.random.Generator, an int seed or None",
        "torch": "a torch.Generator, an int seed or None",
    }[kind]
    raise TypeError(f"rng must be {allowed} for {kind} arrays; got {v._describe(rng)}")


def _words(kind: str, rng: Any, shape: tuple[int, ...], like: Any) -> Any:
    """Independent uniform integers in ``[0, 2**32)``, of shape ``shape + (2,)``."""
    full = tuple(shape) + (2,)
    if kind == "numpy":
        return rng.integers(0, 2**32, size=full, dtype=np.uint32)
    if kind == "torch":
        import torch

        device = rng.device if rng is not None else like.device
        return torch.randint(0, 2**32, full, generator=rng, dtype=torch.int64, device=device).to(like.device)
    import jax

    return jax.random.bits(rng, full, dtype=np.uint32)


def gumbel(xp: Any, kind: str, rng: Any, shape: tuple[int, ...], dtype: Any, like: Any) -> Any:
    """Standard Gumbel noise of ``shape`` and floating ``dtype`` (see module docstring)."""
    w = _words(kind, rng, shape, like)
    hi, lo = w[..., 0], w[..., 1]
    # The bound as an array of the words' dtype: JAX reads a bare 2**31 as int32.
    lower_half = hi >= xp.asarray(2**31, dtype=hi.dtype)
    v_ = xp.astype(hi % 2**30, dtype) * 2.0**-31 + (xp.astype(lo, dtype) + 1.0) * 2.0**-63
    e = xp.where(lower_half, -xp.log(v_), -xp.log1p(-v_))
    return -xp.log(e)
