"""``jax.custom_vjp`` wrappers for sparsemax and 1.5-entmax.

The primal and the VJP are the formulas in ``_sparse_numerics`` on
``jax.numpy`` (last axis, working dtype); the VJP needs only the output.
Importing this module imports jax, so ``softmaxkit.sparse`` imports it only
when it meets a JAX array.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from softmaxkit import _sparse_numerics as sn


def _with_vjp(forward, vjp):
    @functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
    def op(x, extra):
        return forward(jnp, x, extra)

    def op_fwd(x, extra):
        p = forward(jnp, x, extra)
        return p, p

    def op_bwd(extra, p, g):
        return (vjp(jnp, p, g, extra),)

    op.defvjp(op_fwd, op_bwd)
    return op


sparsemax = _with_vjp(sn.sparsemax, sn.sparsemax_vjp)
entmax15 = _with_vjp(sn.entmax15, sn.entmax15_vjp)
