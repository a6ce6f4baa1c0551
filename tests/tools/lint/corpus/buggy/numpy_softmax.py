"""Textbook NumPy softmax helpers, written without the max shift."""

import numpy as np


def softmax(x, axis=-1):
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)  # expect: SMK101


def softmax_inline(x):
    return np.exp(x) / np.sum(np.exp(x), axis=1, keepdims=True)  # expect: SMK101


def logsumexp(x, axis=-1):
    return np.log(np.sum(np.exp(x), axis=axis))  # expect: SMK103


def log_partition(scores):
    total = np.exp(scores).sum(axis=0)
    return np.log(total)  # expect: SMK103


def softplus(x):
    return np.log(1 + np.exp(x))  # expect: SMK301


def relative_growth(rate, years):
    return np.exp(rate * years) - 1  # expect: SMK302


def nll(logits, labels):
    probs = softmax(logits)
    n = logits.shape[0]
    return -np.log(probs[np.arange(n), labels]).mean()  # expect: SMK203
