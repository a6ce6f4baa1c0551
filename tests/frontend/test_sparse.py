"""sparsemax and entmax15: values against their definitions, VJPs against finite differences."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import softmaxkit as smk

mpmath.mp.dps = 50


def threshold_map(row, power):
    """``p_i = [z_i/d - tau]_+ ** power`` with ``sum p = 1``, ``tau`` found by bisection in mpmath.

    ``power = 1, d = 1`` is sparsemax (the Euclidean projection onto the
    simplex); ``power = 2, d = 2`` is 1.5-entmax.  The mass is decreasing in
    ``tau``, so bisection needs no sorting and shares nothing with the library.
    """
    d = 1 if power == 1 else 2
    z = [mpmath.mpf(float(v)) / d for v in row]

    def mass(tau):
        return mpmath.fsum(max(v - tau, 0) ** power for v in z)

    lo, hi = max(z) - 1, max(z)
    for _ in range(200):
        mid = (lo + hi) / 2
        if mass(mid) > 1:
            lo = mid
        else:
            hi = mid
    return np.array([float(max(v - lo, 0) ** power) for v in z])


MAPS = {"sparsemax": (smk.sparsemax, smk.sparsemax_vjp, 1), "entmax15": (smk.entmax15, smk.entmax15_vjp, 2)}
rows = arrays(np.float64, st.integers(1, 9), elements=st.floats(-5, 5, allow_nan=False, allow_subnormal=False))


@pytest.mark.parametrize("name", MAPS)
class TestValues:
    @settings(max_examples=40, deadline=None)
    @given(x=rows, scale=st.sampled_from([1.0, 0.1, 10.0, 1e4]))
    def test_against_bisection_float64(self, name, x, scale):
        fn, _, power = MAPS[name]
        x = x * scale
        p = fn(x)
        assert p.dtype == np.float64
        np.testing.assert_allclose(p, threshold_map(x, power), rtol=0, atol=4e-16 * max(1.0, np.abs(x).max() / 1e2))

    @settings(max_examples=25, deadline=None)
    @given(x=rows)
    def test_float32_is_rounded_once(self, name, x):
        fn, _, power = MAPS[name]
        x32 = x.astype(np.float32)
        p = fn(x32)
        assert p.dtype == np.float32
        ref = threshold_map(x32.astype(np.float64), power)
        # Computed in float64, rounded once: within 1 float32 ULP of the reference (0.5 plus float64 noise).
        ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
        assert (np.abs(p.astype(np.float64) - ref) <= ulp).all()

    def test_kkt_conditions(self, name):
        # sparsemax: z_i - p_i = tau on the support, z_i <= tau off it.
        # entmax15:  z_i/2 - sqrt(p_i) = tau on the support, z_i/2 <= tau off it.
        fn, _, power = MAPS[name]
        x = np.random.default_rng(0).normal(size=(50, 12)) * 2
        p = fn(x)
        u = x if power == 1 else x / 2
        r = p if power == 1 else np.sqrt(p)
        for ui, ri, pi in zip(u, r, p):
            s = pi > 0
            tau = ui[s] - ri[s]
            np.testing.assert_allclose(tau, tau[0], atol=1e-14)
            assert (ui[~s] <= tau[0] + 1e-14).all()
            assert pi.sum() == pytest.approx(1.0, abs=1e-15)

    def test_shift_invariance_and_axis(self, name):
        fn = MAPS[name][0]
        x = np.random.default_rng(1).normal(size=(4, 6, 3))
        np.testing.assert_allclose(fn(x + 1000.0, axis=1), fn(x, axis=1), atol=1e-12)
        np.testing.assert_array_equal(fn(x, axis=1), np.moveaxis(fn(np.moveaxis(x, 1, -1)), -1, 1))

    def test_edge_rows(self, name):
        fn = MAPS[name][0]
        inf = np.inf
        x = np.array(
            [
                [0.0, -inf, 1.0, -inf],
                [-inf, -inf, -inf, -inf],
                [inf, 5.0, inf, -inf],
                [np.nan, 0.0, 1.0, 2.0],
                [1e308, -1e308, 1e308, 0.0],
            ]
        )
        p = fn(x)
        assert p[0, 1] == 0 and p[0, 3] == 0 and p[0].sum() == pytest.approx(1.0)
        np.testing.assert_array_equal(p[1], 0.0)
        # entmax's (u - tau)**2 with tau = -sqrt(1/2) is within 1 ULP of 1/2.
        np.testing.assert_allclose(p[2], [0.5, 0.0, 0.5, 0.0], rtol=2.3e-16, atol=0)
        assert np.isnan(p[3]).all() and not np.isnan(p[[0, 1, 2, 4]]).any()
        np.testing.assert_allclose(p[4], [0.5, 0.0, 0.5, 0.0], rtol=2.3e-16, atol=0)
        np.testing.assert_array_equal(p[0], fn(np.array([0.0, 1.0]))[[0, 0, 1, 1]] * [1, 0, 1, 0])

    def test_empty_axis_and_no_write_back(self, name):
        fn = MAPS[name][0]
        assert fn(np.zeros((3, 0))).shape == (3, 0)
        x = np.array([3.0, 1.0, -np.inf])
        fn(x)
        np.testing.assert_array_equal(x, [3.0, 1.0, -np.inf])

    def test_sparsity(self, name):
        fn = MAPS[name][0]
        p = fn(np.array([3.0, 1.0, -1.0]))
        np.testing.assert_array_equal(p, [1.0, 0.0, 0.0])

    def test_errors(self, name):
        fn = MAPS[name][0]
        with pytest.raises(TypeError, match="x must be a real floating or integer array"):
            fn(np.array(["a"]))
        with pytest.raises(ValueError, match="axis=2 is out of range"):
            fn(np.zeros((2, 2)), axis=2)
        with pytest.raises(TypeError, match="axis must be an int"):
            fn(np.zeros((2, 2)), axis=(0, 1))


def finite_difference_vjp(fn, x, g, h=1e-6):
    out = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        out[i] = np.sum(g * (fn(x + e) - fn(x - e))) / (2 * h)
    return out


@pytest.mark.parametrize("name", MAPS)
class TestVjp:
    def test_against_finite_differences(self, name):
        fn, vjp, _ = MAPS[name]
        rng = np.random.default_rng(2)
        x = rng.normal(size=(6, 7)) * 1.5
        g = rng.normal(size=(6, 7))
        p = fn(x)
        assert ((p > 0).sum(-1) > 1).any(), "test design: want rows with several support entries"
        np.testing.assert_allclose(vjp(p, g), finite_difference_vjp(fn, x, g), atol=1e-8)

    def test_axis_and_masked_rows(self, name):
        fn, vjp, _ = MAPS[name]
        x = np.array([[0.0, -np.inf], [0.5, -np.inf], [0.2, -np.inf]])
        g = np.array([[1.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
        out = vjp(fn(x, axis=0), g, axis=0)
        np.testing.assert_array_equal(out[:, 1], 0.0)
        np.testing.assert_allclose(out[:, 0], finite_difference_vjp(lambda y: fn(y, axis=0), x[:, :1], g[:, :1])[:, 0], atol=1e-8)

    def test_errors(self, name):
        vjp = MAPS[name][1]
        with pytest.raises(ValueError, match=r"cotangent must have the shape of output \(3,\); got \(2,\)"):
            vjp(np.ones(3) / 3, np.ones(2))


class TestTorch:
    torch = pytest.importorskip("torch")

    @pytest.mark.parametrize("name", MAPS)
    def test_autograd_matches_vjp_and_gradcheck(self, name):
        torch = self.torch
        fn, vjp, _ = MAPS[name]
        rng = np.random.default_rng(3)
        x_np, g_np = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
        x = torch.tensor(x_np, requires_grad=True)
        p = fn(x, axis=0)
        assert isinstance(p, torch.Tensor) and p.dtype == torch.float64
        np.testing.assert_array_equal(p.detach().numpy(), fn(x_np, axis=0))
        (grad,) = torch.autograd.grad(p, x, torch.tensor(g_np))
        np.testing.assert_allclose(grad.numpy(), vjp(fn(x_np, axis=0), g_np, axis=0), rtol=1e-15, atol=1e-15)
        assert torch.autograd.gradcheck(lambda t: fn(t), (x,))

    def test_float32_and_masked(self):
        torch = self.torch
        x = torch.tensor([[0.0, -float("inf"), 1.0], [-float("inf")] * 3], requires_grad=True)
        p = smk.sparsemax(x)
        assert p.dtype == torch.float32
        p.sum().backward()
        assert torch.equal(x.grad, torch.zeros_like(x))


class TestJax:
    jax = pytest.importorskip("jax")

    @pytest.mark.parametrize("name", MAPS)
    def test_grad_matches_vjp(self, name):
        jax, jnp = self.jax, self.jax.numpy
        fn, vjp, _ = MAPS[name]
        rng = np.random.default_rng(4)
        x_np = rng.normal(size=(3, 5)).astype(np.float32)
        w = rng.normal(size=(3, 5)).astype(np.float32)
        grad = jax.jit(jax.grad(lambda x: jnp.sum(fn(x) * w)))(jnp.asarray(x_np))
        np.testing.assert_allclose(np.asarray(grad), vjp(fn(x_np), w), atol=1e-6)
        np.testing.assert_allclose(np.asarray(fn(jnp.asarray(x_np))), fn(x_np), atol=1e-7)
