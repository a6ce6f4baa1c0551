"""Stable NumPy softmax helpers and ordinary uses of log and exp."""

import math

import numpy as np


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_shift_variable(x):
    m = np.max(x, axis=1, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=1, keepdims=True)


def softmax_shifted_name(x):
    z = x - np.max(x)
    return np.exp(z) / np.exp(z).sum()


def logsumexp(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def log_softmax(x, axis=-1):
    return x - logsumexp(x, axis)[..., None]


def nll(logits, labels):
    logp = log_softmax(logits)
    return -logp[np.arange(len(labels)), labels].mean()


def tf_idf(counts, documents):
    return np.log(counts) * np.log(documents / counts)


def decay(rate, t):
    return math.exp(-rate * t)


def scalar_sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def entropy_bits(p):
    return -(p * np.log2(p)).sum()


def softplus(x):
    return np.logaddexp(0.0, x)


def log_ratio(a, b):
    return np.log(a / b)


def exp_plus_one(x):
    return np.exp(x) + 1
