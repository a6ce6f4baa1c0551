"""The gradient divisor of the native cross-entropy binding: always given by
the caller (negative where a "mean" is over negative class weights), and
refused when it is not finite or is 0."""

import math

import numpy as np
import pytest

from softmaxkit import kernels as _native

pytestmark = pytest.mark.skipif(not _native.available(), reason="native kernels not built")


def _grad(divisor, dtype=np.float64):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 9)).astype(dtype)
    t = np.array([0, 3, -100, 8, 4], dtype=np.int64)
    w = rng.standard_normal(9)
    loss, grad = np.empty(5), np.empty_like(x)
    _native._kernels.cross_entropy(x, t, None, w, loss, grad, -100, 0.1, 1e-3, divisor)
    return loss, grad


@pytest.mark.parametrize("divisor", [0.0, -0.0, math.nan, math.inf, -math.inf])
def test_a_divisor_not_finite_or_zero_is_refused(native, divisor):
    with pytest.raises(ValueError, match=rf"^grad_divisor must be finite and not 0; got {divisor!r}$"):
        _grad(divisor)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("divisor", [-1.0, -4.0, 0.5])
def test_the_gradient_is_divided_by_the_divisor_as_given(native, dtype, divisor):
    loss_1, grad_1 = _grad(1.0, dtype)
    loss_d, grad_d = _grad(divisor, dtype)
    np.testing.assert_array_equal(loss_d, loss_1)
    # powers of two: dividing is exact, in the kernel and here
    np.testing.assert_array_equal(grad_d, (grad_1.astype(np.float64) / divisor).astype(dtype))
