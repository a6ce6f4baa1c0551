"""A NaN stays in its own row, also where the row has a single class."""

from __future__ import annotations

import numpy as np
import pytest

import softmaxkit as smk


# What broke: the generic path left the argmax out of the row sum, so a
# one-class row holding NaN had s = 0 and a target gradient of 0 instead of
# NaN (the native kernels gave NaN).
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_class_nan_row_gives_nan_gradient(numeric_path, dtype):
    x = np.array([[np.nan], [2.0]], dtype=dtype)
    loss, grad = smk.cross_entropy(x, np.array([0, 0]), reduction="none", return_grad=True)
    assert np.isnan(loss[0]) and loss[1] == 0
    assert np.isnan(grad[0, 0]) and grad[1, 0] == 0


def test_one_class_nan_row_family(numeric_path):
    x = np.array([[np.nan], [-3.0]])
    for fn in (smk.softmax, smk.log_softmax):
        out = fn(x)
        assert np.isnan(out[0, 0]) and not np.isnan(out[1, 0])
    lse = smk.logsumexp(x)
    assert np.isnan(lse[0]) and lse[1] == -3.0
