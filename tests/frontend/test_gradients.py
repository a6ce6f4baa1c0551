"""Gradients and VJPs against float64 central finite differences."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import softmaxkit as smk

pytestmark = pytest.mark.usefixtures("numeric_path")

H = 1e-6


def numerical_grad(f, x):
    """Central differences of the scalar function ``f`` at ``x`` (float64)."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += H
        down[idx] -= H
        g[idx] = (f(up) - f(down)) / (2 * H)
    return g


# The accuracy of a central difference with step H, not of the code under test.
FD_TOL = {"rtol": 1e-5, "atol": 1e-7}


logits = arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(2, 6)), elements=st.floats(-5, 5))

OPTIONS = [
    {},
    {"weight": np.array([0.5, 2.0, 1.0, 1.5, 0.7, 1.2])},
    {"label_smoothing": 0.2},
    {"z_loss": 0.01},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"weight": np.array([0.5, 2.0, 1.0, 1.5, 0.7, 1.2]), "label_smoothing": 0.1, "z_loss": 1e-3},
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "plain")
@given(x=logits, data=st.data())
def test_cross_entropy_gradient_with_class_targets(options, x, data):
    n = x.shape[1]
    opts = dict(options)
    if "weight" in opts:
        opts["weight"] = opts["weight"][:n]
    t = np.array([data.draw(st.integers(0, n - 1)) for _ in range(len(x))])
    t[0] = data.draw(st.sampled_from([t[0], -100]))

    def f(z):
        return float(np.sum(smk.cross_entropy(z, t, **opts)))

    _, grad = smk.cross_entropy(x, t, return_grad=True, **opts)
    np.testing.assert_allclose(grad, numerical_grad(f, x), **FD_TOL)


@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.3}, {"weight": np.array([2.0, 1.0, 0.5, 1.0, 3.0, 1.0])}], ids=lambda o: ",".join(o) or "plain")
@given(x=logits, data=st.data())
def test_cross_entropy_gradient_with_probability_targets(options, x, data):
    n = x.shape[1]
    opts = dict(options)
    if "weight" in opts:
        opts["weight"] = opts["weight"][:n]
    q = data.draw(arrays(np.float64, x.shape, elements=st.floats(0, 1)))

    def f(z):
        return float(smk.cross_entropy(z, q, **opts))

    _, grad = smk.cross_entropy(x, q, return_grad=True, **opts)
    np.testing.assert_allclose(grad, numerical_grad(f, x), **FD_TOL)


@given(x=logits, data=st.data())
def test_nll_loss_gradient(x, data):
    y = smk.log_softmax(x)
    t = np.array([data.draw(st.integers(0, x.shape[1] - 1)) for _ in range(len(x))])
    w = np.linspace(0.5, 2.0, x.shape[1])
    _, grad = smk.nll_loss(y, t, weight=w, return_grad=True)
    np.testing.assert_allclose(grad, numerical_grad(lambda z: float(smk.nll_loss(z, t, weight=w)), y), **FD_TOL)


@pytest.mark.parametrize("options", [{}, {"weight": np.array([1.0, 2.0, 0.5])}, {"pos_weight": np.array([3.0, 0.5, 1.0])}, {"reduction": "sum"}], ids=lambda o: ",".join(o) or "plain")
@given(x=arrays(np.float64, (2, 3), elements=st.floats(-8, 8)), y=arrays(np.float64, (2, 3), elements=st.floats(0, 1)))
def test_binary_cross_entropy_gradient(options, x, y):
    _, grad = smk.binary_cross_entropy_with_logits(x, y, return_grad=True, **options)
    np.testing.assert_allclose(grad, numerical_grad(lambda z: float(smk.binary_cross_entropy_with_logits(z, y, **options)), x), **FD_TOL)


@given(x=logits, data=st.data())
def test_softmax_vjp(x, data):
    v = data.draw(arrays(np.float64, x.shape, elements=st.floats(-3, 3)))
    got = smk.softmax_vjp(smk.softmax(x), v)
    np.testing.assert_allclose(got, numerical_grad(lambda z: float(np.sum(smk.softmax(z) * v)), x), **FD_TOL)


@given(x=logits, data=st.data())
def test_log_softmax_vjp(x, data):
    v = data.draw(arrays(np.float64, x.shape, elements=st.floats(-3, 3)))
    got = smk.log_softmax_vjp(smk.log_softmax(x), v)
    np.testing.assert_allclose(got, numerical_grad(lambda z: float(np.sum(smk.log_softmax(z) * v)), x), **FD_TOL)


@given(x=logits, data=st.data())
def test_logsumexp_vjp(x, data):
    v = data.draw(arrays(np.float64, (x.shape[0],), elements=st.floats(-3, 3)))
    got = smk.logsumexp_vjp(x, v)
    np.testing.assert_allclose(got, numerical_grad(lambda z: float(np.sum(smk.logsumexp(z) * v)), x), **FD_TOL)
    np.testing.assert_allclose(smk.logsumexp_vjp(x, v[:, None]), got, **FD_TOL)


def test_vjps_along_another_axis():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 2))
    v = rng.standard_normal(x.shape)
    moved = np.moveaxis(smk.softmax_vjp(np.moveaxis(smk.softmax(x, axis=1), 1, -1), np.moveaxis(v, 1, -1)), -1, 1)
    np.testing.assert_allclose(smk.softmax_vjp(smk.softmax(x, axis=1), v, axis=1), moved, rtol=1e-15)
    np.testing.assert_allclose(smk.log_softmax_vjp(smk.log_softmax(x, axis=0), v, axis=0), numerical_grad(lambda z: float(np.sum(smk.log_softmax(z, axis=0) * v)), x), **FD_TOL)


def test_masked_classes_have_zero_vjp_whatever_the_cotangent():
    x = np.array([[0.0, -np.inf, 1.0]])
    v = np.array([[1.0, np.inf, -2.0]])
    assert smk.softmax_vjp(smk.softmax(x), v)[0, 1] == 0
    assert smk.log_softmax_vjp(smk.log_softmax(x), v)[0, 1] == 0
    assert np.all(np.isfinite(smk.log_softmax_vjp(smk.log_softmax(x), v)))
