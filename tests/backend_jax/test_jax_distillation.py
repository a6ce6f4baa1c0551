"""softmaxkit.jax.distillation_loss: jit, grad, vmap, and equality with the NumPy path."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import softmaxkit as smk  # noqa: E402
import softmaxkit.jax as smj  # noqa: E402

DIVERGENCES = ["forward_kl", "reverse_kl", "jsd"]


def _pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * 3).astype(np.float32), (rng.normal(size=shape) * 3).astype(np.float32)


def _close(got, want):
    """JAX without x64 computes float32 in compensated float32 (within a few ULP), NumPy in float64."""
    want = np.asarray(want, dtype=np.float64)
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=1e-5, atol=1e-6 * float(np.max(np.abs(want)) + 1e-30))


# Each divergence once, each reduction once: every pair costs a compilation.
@pytest.mark.parametrize(("divergence", "reduction"), [("forward_kl", "batchmean"), ("reverse_kl", "sum"), ("jsd", "none")])
def test_jit_grad_equal_the_numpy_path(divergence, reduction):
    s, t = _pair((3, 4, 6), seed=1)
    y = np.array([[0, 5, -100, 2], [1, 1, 1, -100], [3, 4, 5, 0]])
    kw = dict(divergence=divergence, beta=0.4, temperature=2.0, scale_by_temperature_squared=True, hard_label_weight=0.5, reduction=reduction)

    @jax.jit
    def f(a, b):
        return smj.distillation_loss(a, b, labels=jnp.asarray(y), axis=-1, **kw).sum()

    loss = f(s, t)
    gs, gt = jax.grad(f, argnums=(0, 1))(jnp.asarray(s), jnp.asarray(t))
    nl, (ns, nt) = smk.distillation_loss(s, t, targets=y, return_grad=True, **kw)
    assert gs.dtype == jnp.float32 and gt.dtype == jnp.float32
    _close(loss, np.sum(nl))
    _close(gs, ns)
    _close(gt, nt)


def test_vmap_over_rows_equals_reduction_none():
    s, t = _pair((5, 7), seed=2)
    per_row = jax.jit(jax.vmap(lambda a, b: smj.distillation_loss(a, b, divergence="jsd", beta=0.2)))(s, t)
    _close(per_row, smk.distillation_loss(s, t, divergence="jsd", beta=0.2, reduction="none"))
    grads = jax.jit(jax.vmap(jax.grad(lambda a, b: smj.distillation_loss(a, b, temperature=3.0))))(s, t)
    _, (ns, _) = smk.distillation_loss(s, t, temperature=3.0, reduction="sum", return_grad=True)
    _close(grads, ns)


def test_grad_matches_finite_differences_float64():
    jax.config.update("jax_enable_x64", True)
    try:
        s, t = (a.astype(np.float64) for a in _pair((3, 5), seed=3))
        for divergence in DIVERGENCES:
            f = jax.jit(lambda a, b, d=divergence: smj.distillation_loss(a, b, divergence=d, beta=0.3, temperature=1.5))
            gs, gt = jax.grad(f, argnums=(0, 1))(jnp.asarray(s), jnp.asarray(t))
            h = 1e-6
            for grad, which in ((gs, 0), (gt, 1)):
                fd = np.zeros_like(s)
                for i in np.ndindex(s.shape):
                    e = np.zeros_like(s)
                    e[i] = h
                    plus, minus = [s, t], [s, t]
                    plus[which], minus[which] = plus[which] + e, minus[which] - e
                    fd[i] = (float(f(*plus)) - float(f(*minus))) / (2 * h)
                np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-6, atol=1e-9)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_cotangent_scales_the_gradients():
    s, t = _pair((3, 4), seed=5)
    w = jnp.array([0.5, -2.0, 3.0])
    g = jax.jit(jax.grad(lambda a: jnp.sum(w * smj.distillation_loss(a, t, divergence="jsd", reduction="none"))))(s)
    _, (ns, _) = smk.distillation_loss(s, t, divergence="jsd", reduction="none", return_grad=True)
    _close(g, np.asarray(ns) * np.asarray(w)[:, None])


def test_confident_row_and_edges():
    s = jnp.array([[30.0, 0.0, 0.0], [-jnp.inf, -jnp.inf, -jnp.inf]])
    t = jnp.array([[0.0, -jnp.inf, -jnp.inf], [-jnp.inf, -jnp.inf, -jnp.inf]])

    @jax.jit  # one compilation (eager, every operation would compile on its own)
    def edges(a, b):
        loss = smj.distillation_loss(a, b, reduction="none")
        g = jax.grad(lambda c: smj.distillation_loss(c, b, reduction="sum"))(a)
        return loss, g, smj.distillation_loss(jnp.array([0.0, -jnp.inf]), jnp.array([0.0, 0.0]))

    loss, g, inf_loss = edges(s, t)
    assert float(loss[1]) == 0 and bool(jnp.all(g[1] == 0))
    assert float(g[0, 0]) < 0  # p - q at the argmax, where jax.nn.softmax(s) - q gives 0
    assert float(inf_loss) == np.inf


def test_ignored_labels_and_dispatch():
    s, t = _pair((4, 5), seed=4)
    y = jnp.array([1, -100, -100, 4])
    keep = np.array([True, False, False, True])

    @jax.jit  # one compilation for both losses (eager, every operation would compile on its own)
    def losses(a, b, lab):
        kept = smj.distillation_loss(a[keep], b[keep], labels=lab[keep], hard_label_weight=0.5)
        return smj.distillation_loss(a, b, labels=lab, hard_label_weight=0.5), kept

    loss, kept = losses(s, t, y)
    _close(loss, kept)
    out, (gs, gt) = smk.distillation_loss(jnp.asarray(s), jnp.asarray(t), divergence="reverse_kl", return_grad=True)
    assert isinstance(out, jax.Array) and gs.shape == s.shape
    _close(gt, smk.distillation_loss(s, t, divergence="reverse_kl", return_grad=True)[1][1])
    with pytest.raises(ValueError, match=r"beta must be in \(0, 1\) for divergence='jsd'; got 0.0"):
        smj.distillation_loss(s, t, divergence="jsd", beta=0.0)
    with pytest.raises(ValueError, match=r"labels\[0\] = 9 is not a class index"):
        smj.distillation_loss(s, t, labels=jnp.array([9, 0, 0, 0]))
