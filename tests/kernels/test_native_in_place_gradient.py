"""cross_entropy_into with the gradient written over float32 logits equals the out-of-place call, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from softmaxkit import kernels

pytestmark = pytest.mark.skipif(not kernels.available(), reason="the native extension is not built")

CASES = [
    {},
    {"label_smoothing": 0.1},
    {"z_loss": 1e-3, "grad_divisor": 7.0},
    {"weight": "weights"},
    {"targets": "probabilities"},
    {"targets": "probabilities", "label_smoothing": 0.2, "weight": "weights"},
]


def _inputs(rng, n, v, case):
    x = rng.standard_normal((n, v)).astype(np.float32) * 8
    x[0, :] = -np.inf  # a fully masked row
    x[1, 3] = np.inf  # a row with +inf
    x[2, 1:] = -np.inf  # one live class
    x[3, 5] = 200.0  # a confident row
    x[4, 2] = np.nan
    t = rng.integers(0, v, size=n)
    t[5] = -100
    if case.get("targets") == "probabilities":
        t = rng.dirichlet(np.ones(v), size=n).astype(np.float32)
    options = {k: val for k, val in case.items() if k != "targets"}
    if options.get("weight") == "weights":
        options["weight"] = rng.uniform(0.5, 2.0, size=v)
    return x, t, options


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c) or "onehot")
@pytest.mark.parametrize("v", [7, 300, 70000])
@pytest.mark.parametrize("threads", [1, 3])
def test_in_place_gradient_equals_out_of_place(case, v, threads):
    rng = np.random.default_rng(v)
    x, t, options = _inputs(rng, 9, v, case)
    loss_a, grad_a = np.empty(9), np.empty_like(x)
    loss_b = np.empty(9)
    before = kernels.get_num_threads()
    try:
        kernels.set_num_threads(threads)
        kernels.into.cross_entropy_into(x, t, loss_a, grad_a, **options)
        buffer = x.copy()
        kernels.into.cross_entropy_into(buffer, t, loss_b, buffer, **options)
    finally:
        kernels.set_num_threads(before)
    np.testing.assert_array_equal(loss_a, loss_b)
    np.testing.assert_array_equal(grad_a, buffer)


def test_partial_overlap_and_other_dtypes_are_refused():
    x = np.zeros((4, 6), dtype=np.float32)
    t = np.zeros(4, dtype=np.int64)
    with pytest.raises(ValueError, match="grad must not overlap logits"):
        kernels.into.cross_entropy_into(x[:, :3], t, np.empty(4), x[:, 3:])
    x64 = np.zeros((4, 6))
    with pytest.raises(ValueError, match="grad must not overlap logits"):
        kernels.into.cross_entropy_into(x64, t, np.empty(4), x64)


def test_in_place_needs_the_classes_along_the_last_axis():
    x = np.zeros((4, 6), dtype=np.float32)
    with pytest.raises(ValueError, match="grad must not overlap logits"):
        kernels.into.cross_entropy_into(x, np.zeros(6, dtype=np.int64), np.empty(6), x, axis=0)
