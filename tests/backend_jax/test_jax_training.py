"""A training loop with optax: softmaxkit.jax's loss gives optax's loss curve.

A two-layer MLP learns a random teacher's classes for 300 Adam steps, once
with ``optax.softmax_cross_entropy_with_integer_labels(...).mean()`` and once
with ``softmaxkit.jax.cross_entropy``, from the same initial weights and
batches.  The two losses agree to float32 rounding at every step, so the
curves stay together (their speed is compared in benchmarks/bench_jax.py).
"""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jnp = jax.numpy

import softmaxkit.jax as smj  # noqa: E402

STEPS, BATCH, FEATURES, HIDDEN, CLASSES = 300, 64, 16, 64, 40


def _data():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(FEATURES, CLASSES)).astype(np.float32)
    x = rng.normal(size=(STEPS, BATCH, FEATURES)).astype(np.float32)
    y = np.argmax(x @ teacher + rng.gumbel(size=(STEPS, BATCH, CLASSES)), axis=-1).astype(np.int32)
    return jnp.asarray(x), jnp.asarray(y)


def _init():
    k1, k2 = jax.random.split(jax.random.key(1))
    return {
        "w1": jax.random.normal(k1, (FEATURES, HIDDEN)) / np.sqrt(FEATURES),
        "b1": jnp.zeros(HIDDEN),
        "w2": jax.random.normal(k2, (HIDDEN, CLASSES)) / np.sqrt(HIDDEN),
        "b2": jnp.zeros(CLASSES),
    }


def _logits(params, x):
    h = jax.nn.gelu(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def _train(loss_fn):
    optimizer = optax.adam(3e-3)

    @jax.jit
    def step(carry, batch):
        params, state = carry
        x, y = batch
        loss, grads = jax.value_and_grad(lambda p: loss_fn(_logits(p, x), y))(params)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    params = _init()
    _, losses = jax.lax.scan(step, (params, optimizer.init(params)), _data())
    return np.asarray(losses)


def test_softmaxkit_loss_gives_optax_loss_curve():
    ours = _train(smj.cross_entropy)
    theirs = _train(lambda z, y: optax.softmax_cross_entropy_with_integer_labels(z, y).mean())
    assert ours.shape == (STEPS,)
    assert ours[-20:].mean() < 0.6 * ours[:20].mean()  # it learned
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
