"""Forward-mode AD through sparsemax and 1.5-entmax on JAX arrays."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

from jax.test_util import check_grads  # noqa: E402

import softmaxkit.sparse as sps  # noqa: E402

FUNCTIONS = {"sparsemax": sps.sparsemax, "entmax15": sps.entmax15}


# What broke: jax.jvp, jax.jacfwd and jax.hessian raised "can't apply
# forward-mode autodiff (jvp) to a custom_vjp function".
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_sparse_maps_forward_and_reverse_modes(name):
    fn = FUNCTIONS[name]
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 6)) * 2)
        check_grads(jax.jit(fn), (x,), order=2, modes=["fwd", "rev"], eps=1e-6)
        t = jnp.asarray(np.random.default_rng(1).normal(size=(3, 6)))
        cot = jnp.asarray(np.random.default_rng(2).normal(size=(3, 6)))
        # One compilation for the four derivatives: eager ones run op by op
        # (seconds); the eager tangent rules are exercised in the test below.
        @jax.jit
        def derivatives(a, u, c):
            dy = jax.jvp(fn, (a,), (u,))[1]
            (g,) = jax.vjp(fn, a)[1](c)
            return dy, g, jax.jacfwd(fn)(a[0]), jax.jacrev(fn)(a[0])

        dy, g, jac_fwd, jac_rev = derivatives(x, t, cot)
        np.testing.assert_allclose(float(jnp.sum(dy * cot)), float(jnp.sum(g * t)), rtol=1e-12)
        np.testing.assert_allclose(jac_fwd, jac_rev, atol=1e-14)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_sparse_maps_masked_and_nan_rows_under_jvp(name):
    fn = FUNCTIONS[name]
    x = jnp.array([[-jnp.inf, -jnp.inf, -jnp.inf], [1.0, jnp.nan, 0.0], [1.0, -jnp.inf, 0.5]])
    _, dy = jax.jvp(fn, (x,), (jnp.ones_like(x),))
    assert (dy[0] == 0).all()
    assert jnp.isnan(dy[1]).all()
    np.testing.assert_allclose(dy[2], 0.0, atol=1e-7)  # a constant shift of the row
    dyj = jax.jit(jax.vmap(lambda r, u: jax.jvp(fn, (r,), (u,))[1]))(x[2:], jnp.ones_like(x[2:]))
    np.testing.assert_allclose(dyj, dy[2:], atol=1e-7)
