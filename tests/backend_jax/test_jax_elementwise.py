"""Derivatives of sigmoid, softplus, log_sigmoid and BCE-with-logits under JAX.

The NumPy-style functions run their formulas on ``jax.numpy`` when given JAX
arrays, so ``jax.grad`` differentiates the formulas themselves.  Each
derivative is compared with its exact value from mpmath at 0, -0, small and
large ``|x|`` and the infinities, in float64 and float32.
"""

import math

import mpmath as mp
import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

import softmaxkit as smk  # noqa: E402

from tests import reference as ref  # noqa: E402

INF = math.inf
POINTS = [0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 0.5, -0.5, 3.0, -3.0, 30.0, -30.0, 700.0, -700.0, INF, -INF]


def _sigma(x):
    if x == INF:
        return mp.mpf(1)
    if x == -INF:
        return mp.mpf(0)
    return 1 / (1 + mp.exp(-mp.mpf(x)))


# Exact first and second derivatives (functions of the exact sigmoid).
DERIVATIVES = {
    "sigmoid": (smk.sigmoid, lambda s, r: s * r, lambda s, r: s * r * (r - s)),
    "softplus": (smk.softplus, lambda s, r: s, lambda s, r: s * r),
    "log_sigmoid": (smk.log_sigmoid, lambda s, r: r, lambda s, r: -s * r),
}


def _check(actual, exact, dtype, ulps):
    exact = float(exact)
    if exact == 0:
        assert actual == 0, (actual, exact)
    else:
        assert ref.ulp_error([actual], [mp.mpf(exact)], dtype) <= ulps, (actual, exact)


# What broke: jax.grad(softplus)(0.0) gave 0 and jax.grad(log_sigmoid)(0.0)
# gave 0 (a zero-initialised logistic head never trained): max(x, 0) and
# |x| both have a kink at 0, and the two conventions JAX uses there (1/2 for
# the tie of maximum, 1 for abs) do not add up to the true slope.
@pytest.mark.parametrize("name", list(DERIVATIVES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_elementwise_derivative_at_zero_and_everywhere(name, dtype):
    fn, first, second = DERIVATIVES[name]
    with jax.enable_x64(True):
        grad = jax.grad(fn)
        hess = jax.grad(jax.grad(fn))
        for x in POINTS:
            xj = jnp.asarray(x, dtype=dtype)
            s, r = _sigma(float(xj)), _sigma(-float(xj))
            _check(float(grad(xj)), first(s, r), np.dtype(dtype), 4)
            # The second derivative is a difference (e.g. s r (r - s)):
            # bounded in ULP of its largest term, s r.
            scale = float(s * r)
            assert abs(float(hess(xj)) - float(second(s, r))) <= 8 * float(np.spacing(np.asarray(scale, dtype=dtype))), x


def test_elementwise_derivative_at_zero_without_x64():
    for name, (fn, first, _) in DERIVATIVES.items():
        assert float(jax.grad(fn)(0.0)) == float(first(mp.mpf(0.5), mp.mpf(0.5))), name
        g = jax.vmap(jax.grad(fn))(jnp.zeros(3))
        assert g.tolist() == [float(first(mp.mpf(0.5), mp.mpf(0.5)))] * 3, name


# What broke: jax.grad of binary_cross_entropy_with_logits at logit 0 gave 0
# for a positive target (the softplus kink), so training never started.
@pytest.mark.parametrize("y", [0.0, 0.25, 1.0])
@pytest.mark.parametrize("pos_weight", [None, 3.0])
def test_bce_with_logits_derivative_at_zero_and_everywhere(y, pos_weight):
    with jax.enable_x64(True):
        beta = None if pos_weight is None else jnp.asarray(pos_weight)

        def loss(x):
            return smk.binary_cross_entropy_with_logits(x, jnp.asarray(y), pos_weight=beta, reduction="sum")

        b = 1 if pos_weight is None else pos_weight
        for x in POINTS:
            s, r = _sigma(x), _sigma(-x)
            exact = (1 - y) * s - b * y * r
            # An infinite logit on the side the target disagrees with has
            # an infinite loss, but its slope is still the limit.
            actual = float(jax.grad(loss)(jnp.asarray(x)))
            if exact == 0:
                assert actual == 0, (x, actual)
            else:
                assert abs(actual - float(exact)) <= 4 * np.spacing(abs(float(exact))) + 2 * np.spacing(float(b)), (x, actual, exact)
            assert float(jax.grad(jax.grad(loss))(jnp.asarray(x))) == pytest.approx(float((1 - y + b * y) * s * r), rel=1e-14, abs=1e-300)


def test_bce_with_logits_zero_initialised_head_trains():
    x = jnp.zeros(4)
    y = jnp.array([1.0, 0.0, 1.0, 1.0])
    g = jax.grad(lambda a: smk.binary_cross_entropy_with_logits(a, y))(x)
    np.testing.assert_array_equal(np.asarray(g), np.array([-0.125, 0.125, -0.125, -0.125], dtype=np.float32))


# What broke: binary_cross_entropy_with_logits on JAX arrays went through the
# generic path, whose value checks convert traced booleans: it raised
# TracerBoolConversionError under jax.jit.
def test_bce_with_logits_under_jit_and_vmap():
    x = jnp.array([[0.0, -3.0, 40.0], [2.0, 0.0, -40.0]])
    y = jnp.array([[1.0, 0.0, 0.25], [0.0, 1.0, 1.0]])
    w = jnp.array([1.0, 2.0, 0.5])
    beta = jnp.array([3.0])

    def f(a, b):
        return smk.binary_cross_entropy_with_logits(a, b, weight=w, pos_weight=beta)

    loss, grad = jax.jit(jax.value_and_grad(f))(x, y)
    eager_loss, eager_grad = jax.value_and_grad(f)(x, y)
    np.testing.assert_allclose(loss, eager_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, eager_grad, rtol=1e-6)
    rows = jax.jit(jax.vmap(jax.grad(lambda a, b: smk.binary_cross_entropy_with_logits(a, b, reduction="sum"))))(x, y)
    np.testing.assert_allclose(rows, jax.grad(lambda a: smk.binary_cross_entropy_with_logits(a, y, reduction="sum"))(x), rtol=1e-6)


def test_bce_with_logits_on_jax_arrays_matches_numpy_path():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(4, 5)) * 10
        x[0, :3] = [0.0, -0.0, 700.0]
        y = rng.random(size=(4, 5))
        y[1] = [0, 1, 0, 1, 1]
        w = rng.random(size=(5,)) + 0.5
        beta = rng.random(size=(4, 5)) * 3
        reductions = ("mean", "sum", "none")

        # One compilation for the three reductions (eager, every operation
        # would compile on its own).
        @jax.jit
        def on_jax_arrays(a, yj, wj, bj):
            out = {}
            for r in reductions:

                def total(c, r=r):
                    return smk.binary_cross_entropy_with_logits(c, yj, weight=wj, pos_weight=bj, reduction=r).sum()

                got = smk.binary_cross_entropy_with_logits(a, yj, weight=wj, pos_weight=bj, reduction=r, return_grad=True)
                out[r] = got, jax.grad(total)(a)
            return out

        results = on_jax_arrays(*map(jnp.asarray, (x, y, w, beta)))
        for reduction in reductions:
            expected = smk.binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=beta, reduction=reduction, return_grad=True)
            got, auto = results[reduction]
            np.testing.assert_allclose(got[0], expected[0], rtol=1e-14)
            np.testing.assert_allclose(got[1], expected[1], rtol=1e-14, atol=1e-300)
            np.testing.assert_allclose(auto, expected[1], rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"targets": jnp.array([0.5, 1.5])}, ValueError, r"\[0, 1\]"),
        ({"targets": jnp.array([0.5])}, ValueError, "shape of logits"),
        ({"pos_weight": jnp.array([jnp.inf])}, ValueError, "pos_weight must be finite"),
        ({"weight": jnp.ones(3)}, ValueError, "does not broadcast"),
        ({"reduction": "avg"}, ValueError, "reduction"),
        ({"targets": jnp.array([True, False])}, TypeError, "targets"),
    ],
)
def test_bce_with_logits_bad_inputs_on_jax_arrays(kwargs, error, match):
    args = {"targets": jnp.array([0.5, 1.0])} | kwargs
    with pytest.raises(error, match=match):
        smk.binary_cross_entropy_with_logits(jnp.array([0.0, 1.0]), **args)
