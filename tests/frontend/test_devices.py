"""Every public function keeps its result on the input's device.

array-api-strict has devices of its own and refuses to mix arrays of two
devices, so a constant made without ``device=`` (which on a GPU is a CPU
tensor next to CUDA ones) fails here on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

import softmaxkit as smk

xp = pytest.importorskip("array_api_strict")
DEVICE = xp.Device("device1")


def _on_device(a):
    return xp.asarray(np.asarray(a), device=DEVICE)


X = np.array([[1.0, 2.0, 0.5, -np.inf], [0.0, -1.0, 3.0, 2.0]])
T = np.array([0, 2])

CALLS = {
    "softmax": lambda x: smk.softmax(x),
    "log_softmax": lambda x: smk.log_softmax(x, temperature=0.5),
    "softmax where": lambda x: smk.softmax(x, where=x > 0),
    "logsumexp": lambda x: smk.logsumexp(x, axis=-1),
    "logsumexp b": lambda x: smk.logsumexp(x, b=_on_device(np.ones(X.shape))),
    "entropy": lambda x: smk.entropy(x),
    "kl_div": lambda x: smk.kl_div(smk.softmax(x), smk.softmax(x)),
    "softmax_vjp": lambda x: smk.softmax_vjp(smk.softmax(x), _on_device(np.ones(X.shape))),
    "log_softmax_vjp": lambda x: smk.log_softmax_vjp(smk.log_softmax(x), _on_device(np.ones(X.shape))),
    "logsumexp_vjp": lambda x: smk.logsumexp_vjp(x, _on_device(np.ones(2))),
    "sparsemax": lambda x: smk.sparsemax(x),
    "entmax15": lambda x: smk.entmax15(x),
    "sparsemax_vjp": lambda x: smk.sparsemax_vjp(smk.sparsemax(x), _on_device(np.ones(X.shape))),
    "entmax15_vjp": lambda x: smk.entmax15_vjp(smk.entmax15(x), _on_device(np.ones(X.shape))),
    "cross_entropy": lambda x: smk.cross_entropy(x, _on_device(T), label_smoothing=0.1, return_grad=True)[1],
    "cross_entropy weight": lambda x: smk.cross_entropy(x, _on_device(T), weight=_on_device(np.arange(1.0, 5.0))),
    "cross_entropy probabilities": lambda x: smk.cross_entropy(x, smk.softmax(x), return_grad=True)[1],
    "nll_loss": lambda x: smk.nll_loss(smk.log_softmax(x), _on_device(T), return_grad=True)[1],
    "binary_cross_entropy_with_logits": lambda x: smk.binary_cross_entropy_with_logits(
        xp.where(x == -np.inf, _on_device(0.0), x), _on_device(np.full(X.shape, 0.5)), return_grad=True
    )[1],
    "sigmoid": lambda x: smk.sigmoid(x),
    "softplus": lambda x: smk.softplus(x),
    "log_sigmoid": lambda x: smk.log_sigmoid(x),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_results_stay_on_the_input_device(name):
    out = CALLS[name](_on_device(X))
    assert out.device == DEVICE
