"""Binary logistic regression trained by gradient descent in NumPy."""

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def loss(w, X, y):
    p = 1.0 / (1.0 + np.exp(-(X @ w)))
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))  # expect: SMK203


def log_likelihood(w, X):
    return np.log(sigmoid(X @ w))  # expect: SMK303


def fit(X, y, lr=0.1, steps=100):
    w = np.zeros(X.shape[1])
    for _ in range(steps):
        p = sigmoid(X @ w)
        w -= lr * X.T @ (p - y) / len(y)
    return w
