"""A JAX classification loss written with jax.numpy only."""

import jax
import jax.numpy as jnp


def cross_entropy(params, x, y):
    logits = x @ params["w"] + params["b"]
    probs = jax.nn.softmax(logits, axis=-1)
    return -jnp.mean(jnp.sum(y * jnp.log(probs), axis=-1))  # expect: SMK203


def log_partition(logits):
    return jnp.log(jnp.sum(jnp.exp(logits), axis=-1))  # expect: SMK103


def naive_softmax(logits):
    e = jnp.exp(logits)
    return e / jnp.sum(e, axis=-1, keepdims=True)  # expect: SMK101


def log_prior(z):
    return jnp.log(jax.nn.sigmoid(z))  # expect: SMK303


def attention(q, k, mask):
    scores = q @ k.T
    scores = jnp.where(mask, scores, -jnp.inf)
    return jax.nn.softmax(scores, axis=-1)  # expect: SMK106
