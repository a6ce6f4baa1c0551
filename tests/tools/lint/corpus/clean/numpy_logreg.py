"""Binary logistic regression trained by gradient descent in NumPy."""

import numpy as np


def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def loss(w, X, y):
    z = X @ w
    # log(1 + exp(-z)) and log(1 + exp(z)) without overflow.
    return np.mean(y * np.logaddexp(0.0, -z) + (1 - y) * np.logaddexp(0.0, z))


def fit(X, y, lr=0.1, steps=100):
    w = np.zeros(X.shape[1])
    for _ in range(steps):
        p = sigmoid(X @ w)
        w -= lr * X.T @ (p - y) / len(y)
    return w


def predict_proba(w, X):
    return sigmoid(X @ w)


def clipped_log_loss(w, X, y, eps=1e-12):
    p = np.clip(predict_proba(w, X), eps, 1 - eps)
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
