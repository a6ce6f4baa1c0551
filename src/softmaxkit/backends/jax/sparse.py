"""``jax.custom_jvp`` wrappers for sparsemax and 1.5-entmax.

The primal is the formula in ``_sparse_numerics`` on ``jax.numpy`` (last axis,
working dtype).  Both Jacobians are symmetric (``diag(s) - s s^T / |S|`` and
``diag(q) - q q^T / sum q``), so one tangent rule serves forward mode and,
transposed by JAX, reverse mode; it needs only the output, which comes from
the wrapped function itself, so higher derivatives use the same rules.
Importing this module imports jax, so ``softmaxkit.sparse`` imports it only
when it meets a JAX array.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from softmaxkit import numerics as num
from softmaxkit.numerics import sparse as sn

# The tangent rules must be linear in ``t`` with no selection that depends on
# it (JAX transposes them), so their sums over ``t`` are plain; entries
# outside the support select ``p`` or ``q``, which are 0 there (NaN in a NaN
# row), rather than a separate zero array that reverse mode would keep.


def _sparsemax_tangent(p, t, widened):
    s = p > 0
    size = jnp.sum(s.astype(p.dtype), axis=-1, keepdims=True)
    mean = jnp.sum(jnp.where(s, t, p), axis=-1, keepdims=True) / jnp.where(size == 0, 1.0, size)
    return jnp.where(s, t - mean, p)


def _entmax15_tangent(p, t, widened):
    # sqrt has an infinite slope at 0: the entries outside the support take
    # the square root of 1 instead, so second derivatives see 0 there, not
    # inf * 0.
    support = p > 0
    q = jnp.where(support, jnp.sqrt(jnp.where(support, p, 1.0)), p)
    qt = jnp.where(support, q * t, q)
    q_sum = num.compensated_sum(jnp, q, widened)
    return qt - q * (jnp.sum(qt, axis=-1, keepdims=True) / jnp.where(q_sum == 0, 1.0, q_sum))


def _with_jvp(forward, tangent):
    @functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
    def op(x, widened):
        return forward(jnp, x, widened)

    @op.defjvp
    def op_jvp(widened, primals, tangents):
        (x,), (t,) = primals, tangents
        p = op(x, widened)
        return p, tangent(p, t, widened)

    return op


sparsemax = _with_jvp(sn.sparsemax, _sparsemax_tangent)
entmax15 = _with_jvp(sn.entmax15, _entmax15_tangent)
