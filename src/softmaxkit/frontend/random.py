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

from softmaxkit.frontend import validate


def generator(backend: Any, x: Any, rng: Any, name: str) -> Any:
    """The generator to draw from for ``x``, checked against its kind.

    NumPy: a ``numpy.random.Generator``, an int seed, or None (fresh OS
    entropy).  torch and JAX arrays: their backend's ``check_rng``.  Arrays
    of other libraries raise ``TypeError``.
    """
    if backend is not None and backend.check_rng is not None:
        return backend.check_rng(rng)
    if not array_api_compat.is_numpy_array(x):
        raise TypeError(f"{name} is a {type(x).__module__}.{type(x).__name__}; random sampling supports NumPy, PyTorch and JAX arrays")
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(seed(rng, "a numpy.random.Generator, an int seed or None", "NumPy"))


def seed(rng: Any, allowed: str, kind: str) -> int:
    """``rng`` as a seed (an int >= 0); ``TypeError`` naming ``allowed`` for anything else."""
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"rng as a seed must be >= 0; got {rng!r}")
        return int(rng)
    raise TypeError(f"rng must be {allowed} for {kind} arrays; got {validate.describe(rng)}")


def _words(backend: Any, gen: Any, shape: tuple[int, ...], like: Any) -> Any:
    """Independent uniform integers in ``[0, 2**32)``, of shape ``shape + (2,)``."""
    full = tuple(shape) + (2,)
    if backend is not None and backend.random_words is not None:
        return backend.random_words(gen, full, like)
    return gen.integers(0, 2**32, size=full, dtype=np.uint32)


def gumbel(xp: Any, backend: Any, gen: Any, shape: tuple[int, ...], dtype: Any, like: Any) -> Any:
    """Standard Gumbel noise of ``shape`` and floating ``dtype`` (see module docstring)."""
    w = _words(backend, gen, shape, like)
    hi, lo = w[..., 0], w[..., 1]
    # The bound as an array of the words' dtype: JAX reads a bare 2**31 as int32.
    lower_half = hi >= xp.asarray(2**31, dtype=hi.dtype)
    v_ = xp.astype(hi % 2**30, dtype) * 2.0**-31 + (xp.astype(lo, dtype) + 1.0) * 2.0**-63
    e = xp.where(lower_half, -xp.log(v_), -xp.log1p(-v_))
    return -xp.log(e)
