"""The JAX backend's entry points for the public functions (``softmaxkit.softmax(jax_array)`` and friends)."""

from __future__ import annotations

import math

import jax
import jax.extend.random
import jax.numpy as jnp
import numpy as np

from softmaxkit import numerics as num
from softmaxkit.backends.jax import distillation, linear, linear_distillation, sparse
from softmaxkit.backends.jax.functions import _CHECKS, _as_float, _work, traced, cross_entropy as _cross_entropy
from softmaxkit.backends.jax.functions import log_softmax as _log_softmax, logsumexp as _logsumexp, softmax as _softmax
from softmaxkit.frontend import registry
from softmaxkit.frontend import validate


def softmax(x, axis, *, temperature, where):
    return _softmax(x, axis, where, temperature=temperature)


def log_softmax(x, axis, *, temperature, where):
    return _log_softmax(x, axis, where, temperature=temperature)


def logsumexp(x, axis, *, keepdims, where):
    return _logsumexp(x, axis, keepdims, where)


def cross_entropy(logits, targets, *, axis, weight, ignore_index, label_smoothing, reduction, z_loss, return_grad):
    def loss_fn(x):
        return _cross_entropy(
            x, targets, axis, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss, reduction=reduction
        )

    if not return_grad:
        return loss_fn(logits)
    loss, vjp = jax.vjp(loss_fn, logits)
    (grad,) = vjp(jnp.ones_like(loss))
    return loss, grad


def binary_cross_entropy_with_logits(logits, targets, *, weight, pos_weight, reduction, return_grad):
    # The NumPy-style function's rules and formula, with the value checks
    # skipped on tracers so that it works under jit and vmap.  Plain JAX code:
    # jax.grad differentiates the formula, whose branches are selected on
    # x >= 0 so that its slope at 0 is right.
    return_grad = validate.flag(return_grad, "return_grad")
    reduction = validate.reduction(reduction)
    x = _as_float(logits, "logits")
    y = _as_float(targets, "targets")
    if tuple(y.shape) != tuple(x.shape):
        raise ValueError(f"targets must have the shape of logits {tuple(x.shape)}; got {tuple(y.shape)}")
    dtype = jnp.result_type(x.dtype, y.dtype)
    work, widened = _work(dtype)
    yw = y.astype(work)
    validate.binary_targets(jnp, yw, "targets", _CHECKS)

    def factor(value, name):
        if value is None:
            return None
        f = _as_float(value, name)
        try:
            return jnp.broadcast_to(f.astype(work), x.shape)
        except ValueError as exc:
            raise ValueError(f"{name} of shape {tuple(f.shape)} does not broadcast to logits of shape {tuple(x.shape)}") from exc

    w = factor(weight, "weight")
    beta = factor(pos_weight, "pos_weight")
    if beta is not None:
        validate.pos_weights(jnp, beta, _CHECKS)
    loss, grad = num.binary_cross_entropy(jnp, x.astype(work), yw, beta, return_grad)
    if w is not None:
        loss = w * loss
        grad = None if grad is None else w * grad
    denominator = num.elementwise_denominator(jnp, x, work)
    loss, grad = num.reduce(jnp, loss, grad, denominator, reduction, widened)
    if not return_grad:
        return loss.astype(dtype)
    return loss.astype(dtype), grad.astype(dtype)


def check_rng(rng):
    """A ``jax.random`` key, required: JAX has no global generator."""
    typed = getattr(rng, "dtype", None) is not None and jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
    raw = isinstance(rng, jax.Array) and rng.dtype == np.uint32 and tuple(rng.shape) == (2,)
    if not (typed or raw):
        raise TypeError(f"rng must be a jax.random key (jax.random.key(seed)) for JAX arrays; got {validate.describe(rng)}")
    return rng


def random_words(key, shape, like):
    """Uniform 32-bit words of ``shape`` from ``key``.

    For a Threefry key (JAX's default) these are the words that
    ``jax.random.bits`` gives with ``jax_threefry_partitionable`` off:
    Threefry-2x32 of the key on the counters 0, 1, 2, ..., one hash for two
    words, where the partitionable scheme (the default, whose words do not
    depend on how an array is sharded) hashes once per word.  The noise for
    every class of a row costs half as much.  Other keys, and 2**32 words or
    more, go through ``jax.random.bits``.
    """
    size = math.prod(shape)
    if str(jax.random.key_impl(key)) == "threefry2x32" and 0 < size < 2**32:
        count = jax.lax.iota(np.uint32, size)
        return jax.extend.random.threefry_2x32(jax.random.key_data(key), count).reshape(shape)
    return jax.random.bits(key, shape, dtype=np.uint32)


def top_k(x, k):
    # The barrier keeps XLA from rewriting the selection by its uses: a
    # single entry sliced from the result made it a sort of whole rows.
    return jax.lax.optimization_barrier(jax.lax.top_k(x, k))


BACKEND = registry.Backend(
    name="jax",
    softmax=softmax,
    log_softmax=log_softmax,
    logsumexp=logsumexp,
    cross_entropy=cross_entropy,
    binary_cross_entropy_with_logits=binary_cross_entropy_with_logits,
    sparsemax=sparse.sparsemax,
    entmax15=sparse.entmax15,
    check_rng=check_rng,
    random_words=random_words,
    stop_gradient=jax.lax.stop_gradient,
    traced=traced,
    top_k=top_k,
    cond=jax.lax.cond,
    namespace=jnp,
    distillation_loss=distillation.entry,
    linear_cross_entropy=linear.entry,
    linear_distillation_loss=linear_distillation.entry,
)
