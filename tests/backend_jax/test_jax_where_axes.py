"""where= and tuple axis for softmaxkit.jax.cross_entropy and kl_div.

Invariances: masking classes equals slicing them out, a tuple of class axes
equals moving them last and flattening, and the JAX kl_div agrees with the
NumPy one.  Derivatives of both are checked against finite differences.
"""

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

from jax.test_util import check_grads  # noqa: E402

import softmaxkit as smk  # noqa: E402
import softmaxkit.jax as smj  # noqa: E402

INF = math.inf
KEEP = np.array([True, False, True, True, False, True])  # classes 1 and 4 left out


def _rng(seed):
    return np.random.default_rng(seed)


# --- cross_entropy: where ----------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{}, {"label_smoothing": 0.2}, {"z_loss": 0.05}, {"weight": np.linspace(0.5, 2.0, 6)}, {"reduction": "none"}, {"reduction": "sum"}],
    ids=["plain", "smoothing", "z_loss", "weight", "none", "sum"],
)
def test_cross_entropy_where_equals_slicing(options):
    with jax.enable_x64(True):
        x = jnp.asarray(_rng(0).normal(size=(5, 6)) * 3)
        labels = jnp.array([0, 3, 5, -100, 2])
        sliced_labels = jnp.array([0, 2, 3, -100, 1])
        opts = dict(options)
        sliced_opts = dict(options)
        if "weight" in opts:
            opts["weight"] = jnp.asarray(opts["weight"])
            sliced_opts["weight"] = opts["weight"][KEEP]

        def masked(a):
            return smj.cross_entropy(a, labels, where=jnp.asarray(KEEP), **opts)

        def sliced(a):
            return smj.cross_entropy(a[:, KEEP], sliced_labels, **sliced_opts)

        np.testing.assert_allclose(masked(x), sliced(x), rtol=1e-14)
        g_masked = jax.jit(jax.jacrev(masked))(x)
        g_sliced = jax.jit(jax.jacrev(sliced))(x)
        np.testing.assert_allclose(g_masked[..., KEEP], g_sliced[..., KEEP], rtol=1e-13, atol=1e-16)
        assert not np.asarray(g_masked[..., ~KEEP]).any()


def test_cross_entropy_where_with_probability_labels_equals_slicing():
    with jax.enable_x64(True):
        rng = _rng(1)
        x = jnp.asarray(rng.normal(size=(4, 6)))
        q = rng.random(size=(4, 6)) * KEEP
        q = jnp.asarray(q / q.sum(-1, keepdims=True))
        masked = smj.cross_entropy(x, q, where=jnp.asarray(KEEP), label_smoothing=0.1, reduction="none")
        sliced = smj.cross_entropy(x[:, KEEP], q[:, KEEP], label_smoothing=0.1, reduction="none")
        np.testing.assert_allclose(masked, sliced, rtol=1e-14)


def test_cross_entropy_where_equals_minus_inf_logits():
    with jax.enable_x64(True):
        rng = _rng(2)
        x = jnp.asarray(rng.normal(size=(6, 5)) * 2)
        where = jnp.asarray(rng.random(size=(6, 5)) < 0.7).at[:, 1].set(True)
        labels = jnp.full((6,), 1)
        got = smj.cross_entropy(x, labels, where=where, label_smoothing=0.3, reduction="none")
        expected = smj.cross_entropy(jnp.where(where, x, -INF), labels, label_smoothing=0.3, reduction="none")
        np.testing.assert_array_equal(got, expected)
        # The reference a jax.nn user would write (no smoothing): lse over the
        # kept classes minus the target logit.
        plain = smj.cross_entropy(x, labels, where=where, reduction="none")
        ref = jax.nn.logsumexp(x, axis=-1, where=where) - x[:, 1]
        np.testing.assert_allclose(plain, ref, rtol=1e-13)


# What broke: nothing (new option); the rule pinned here is that a row with
# no class left takes no part, like an ignored label.
def test_cross_entropy_rows_with_no_class_left_take_no_part():
    x = jnp.asarray(_rng(3).normal(size=(4, 3)).astype(np.float32))
    labels = jnp.array([0, 2, 1, 1])
    rows = jnp.array([True, False, True, False])

    @jax.jit  # one compilation per kind of target (eager, every operation would compile on its own)
    def losses(a, t):
        masked = jax.value_and_grad(lambda b: smj.cross_entropy(b, t, where=rows[:, None]))(a)
        kept = jax.value_and_grad(lambda b: smj.cross_entropy(b, t[rows]))(a[rows])
        return masked, kept, smj.cross_entropy(a, t, where=rows[:, None], reduction="none", z_loss=0.1)

    for target in (labels, jax.nn.one_hot(labels, 3)):
        (loss, grad), (kept_loss, kept_grad), per_row = losses(x, target)
        np.testing.assert_allclose(loss, kept_loss, rtol=1e-6)
        np.testing.assert_allclose(grad[rows], kept_grad, rtol=1e-6)
        assert not grad[~rows].any()
        assert per_row[1] == 0 and per_row[3] == 0
    everything = smj.cross_entropy(x, labels, where=jnp.zeros((4, 3), dtype=bool))
    assert float(everything) == 0.0


def test_cross_entropy_label_on_masked_class_is_infinite():
    x = jnp.array([[1.0, 2.0, 0.5]])
    where = jnp.array([True, False, True])
    assert float(smj.cross_entropy(x, jnp.array([1]), where=where)) == INF
    g = jax.grad(lambda a: smj.cross_entropy(a, jnp.array([1]), where=where))(x)
    assert jnp.isfinite(g).all()


def test_cross_entropy_where_under_jit_vmap_and_forward_mode():
    x = jnp.asarray(_rng(4).normal(size=(3, 4, 6)).astype(np.float32))
    labels = jnp.asarray(_rng(5).integers(0, 6, size=(3, 4))) % 3 * 2  # 0, 2, 4: kept by the mask below
    where = jnp.array([True, False, True, False, True, True])

    def f(a, b):
        return smj.cross_entropy(a, b, where=where, label_smoothing=0.1)

    batched = jax.jit(jax.vmap(f))(x, labels)
    one = jax.jit(f)  # compiled once, called per element
    np.testing.assert_allclose(batched, jnp.stack([one(x[i], labels[i]) for i in range(3)]), rtol=1e-6)
    with jax.enable_x64(True):
        x64 = jnp.asarray(_rng(6).normal(size=(3, 6)))
        check_grads(jax.jit(lambda a: smj.cross_entropy(a, jnp.array([0, 2, 4]), where=where, z_loss=0.01)), (x64,), order=2, modes=["fwd", "rev"])


# --- cross_entropy: tuple axis -----------------------------------------------------


@pytest.mark.parametrize("axes", [(1, 3), (3, 1), (2, 3)])
def test_cross_entropy_tuple_axis_equals_flattened_classes(axes):
    with jax.enable_x64(True):
        rng = _rng(7)
        x = jnp.asarray(rng.normal(size=(2, 3, 4, 5)))
        rest = [i for i in range(4) if i not in axes]
        flat = jnp.transpose(x, rest + list(axes)).reshape(tuple(x.shape[i] for i in rest) + (-1,))
        n = flat.shape[-1]
        idx = rng.integers(0, n, size=flat.shape[:-1])
        labels = jnp.asarray(idx)
        w = jnp.linspace(0.5, 1.5, n)
        got = smj.cross_entropy(x, labels, axis=axes, weight=w.reshape(tuple(x.shape[a] for a in axes)), label_smoothing=0.1, reduction="none")
        expected = smj.cross_entropy(flat, labels, weight=w, label_smoothing=0.1, reduction="none")
        np.testing.assert_allclose(got, expected, rtol=1e-14)
        # Labels are flat indices into the class slice, axes in the order given.
        multi = np.unravel_index(idx, tuple(x.shape[a] for a in axes))
        picked = np.empty(idx.shape)
        host = np.asarray(x)
        for pos in np.ndindex(idx.shape):
            full = [0] * 4
            for r, p in zip(rest, pos):
                full[r] = p
            for a, m in zip(axes, multi):
                full[a] = m[pos]
            picked[pos] = host[tuple(full)]
        lse = smj.logsumexp(x, axis=axes)
        np.testing.assert_allclose(smj.cross_entropy(x, labels, axis=axes, reduction="none"), lse - picked, rtol=1e-13)
        q = smj.softmax(jnp.asarray(rng.normal(size=x.shape)), axis=axes)
        qflat = jnp.transpose(q, rest + list(axes)).reshape(flat.shape)
        np.testing.assert_allclose(smj.cross_entropy(x, q, axis=axes), smj.cross_entropy(flat, qflat), rtol=1e-14)
        # jit: the finite differences call the loss again and again (eager, each runs op by op)
        check_grads(jax.jit(lambda a: smj.cross_entropy(a, labels, axis=axes, z_loss=0.01)), (x,), order=1, modes=["fwd", "rev"])


def test_cross_entropy_axis_none_is_one_distribution():
    x = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(smj.cross_entropy(x, jnp.array(4), axis=None), smj.logsumexp(x) - 4.0, rtol=1e-6)


def test_core_cross_entropy_on_jax_arrays_unchanged():
    x = jnp.asarray(_rng(8).normal(size=(4, 5)).astype(np.float32))
    t = jnp.array([0, 4, -100, 2])
    loss, grad = smk.cross_entropy(x, t, return_grad=True)
    np.testing.assert_allclose(loss, smj.cross_entropy(x, t), rtol=0)
    np.testing.assert_allclose(grad, jax.grad(smj.cross_entropy)(x, t), rtol=0)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda x: smj.cross_entropy(x, jnp.array([0, 1, 2]), where=jnp.ones((3, 4))), TypeError, "boolean"),
        (lambda x: smj.cross_entropy(x, jnp.array([0, 1, 2]), where=jnp.ones((2, 4), dtype=bool)), ValueError, "does not broadcast"),
        (lambda x: smj.cross_entropy(x, jnp.array([0, 1, 2]), where=jnp.ones((5, 3, 4), dtype=bool)), ValueError, "does not broadcast"),
        (lambda x: smj.cross_entropy(x[None], jnp.array([0, 1]), axis=(0, 2)), ValueError, r"must have shape \(3,\)"),
        (lambda x: smj.cross_entropy(x, jnp.array([0, 1, 2]), axis=(1, 1)), ValueError, "repeated"),
        (lambda x: smj.cross_entropy(x[None], jnp.array([0, 1, 2]), axis=(0, 2), weight=jnp.ones(3)), ValueError, "weight"),
        (lambda x: smj.kl_div(x, x[:2]), ValueError, "shape of p"),
        (lambda x: smj.kl_div(x, x, where=jnp.ones(3, dtype=bool)), ValueError, "does not broadcast"),
        (lambda x: smj.kl_div(x, x, log_probs=1), TypeError, "log_probs"),
        (lambda x: smj.softmax(x, where=jnp.ones((2, 3, 4), dtype=bool)), ValueError, "does not broadcast"),
    ],
)
def test_bad_where_and_axes(call, error, match):
    with pytest.raises(error, match=match):
        call(jnp.asarray(_rng(9).normal(size=(3, 4)).astype(np.float32)))


# --- kl_div ----------------------------------------------------------------------


@pytest.mark.parametrize("log_probs", [False, True])
def test_kl_div_matches_numpy_front_end(log_probs):
    with jax.enable_x64(True):
        rng = _rng(10)
        p, q = rng.normal(size=(5, 7)) * 3, rng.normal(size=(5, 7)) * 3
        p[1, 2] = q[2, 3] = q[3, 0] = p[3, 0] = -INF
        if log_probs:
            p, q = smk.log_softmax(p), smk.log_softmax(q)
        expected = smk.kl_div(p, q, log_probs=log_probs)
        got = smj.kl_div(jnp.asarray(p), jnp.asarray(q), log_probs=log_probs)
        np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
        np.testing.assert_allclose(got, expected, rtol=1e-14)
        np.testing.assert_allclose(smj.kl_div(jnp.asarray(p.T), jnp.asarray(q.T), axis=0, log_probs=log_probs), expected, rtol=1e-14)


def test_kl_div_where_and_tuple_axis():
    with jax.enable_x64(True):
        rng = _rng(11)
        p, q = jnp.asarray(rng.normal(size=(3, 6))), jnp.asarray(rng.normal(size=(3, 6)))
        where = jnp.asarray(KEEP)
        np.testing.assert_allclose(smj.kl_div(p, q, where=where), smj.kl_div(p[:, KEEP], q[:, KEEP]), rtol=1e-14)
        x = jnp.asarray(rng.normal(size=(2, 3, 4)))
        y = jnp.asarray(rng.normal(size=(2, 3, 4)))
        flat_x, flat_y = jnp.moveaxis(x, 1, 0).reshape(3, 8), jnp.moveaxis(y, 1, 0).reshape(3, 8)
        np.testing.assert_allclose(smj.kl_div(x, y, axis=(0, 2)), smj.kl_div(flat_x, flat_y), rtol=1e-14)
        assert float(smj.kl_div(x, x, axis=None)) == 0.0
        # A fully masked P row has divergence 0 and no derivative.
        rows = jnp.array([True, False, True])[:, None]
        assert float(smj.kl_div(p, q, where=rows)[1]) == 0.0
        gp, gq = jax.grad(lambda a, b: smj.kl_div(a, b, where=rows).sum(), argnums=(0, 1))(p, q)
        assert not gp[1].any() and not gq[1].any()


@pytest.mark.parametrize("log_probs", [False, True])
def test_kl_div_derivatives_match_finite_differences(log_probs):
    with jax.enable_x64(True):
        rng = _rng(12)
        p, q = jnp.asarray(rng.normal(size=(3, 5))), jnp.asarray(rng.normal(size=(3, 5)))
        if log_probs:
            p, q = smj.log_softmax(p), smj.log_softmax(q)
        where = jnp.array([True, True, False, True, True])
        # jit: the finite differences call the divergence again and again (eager, each runs op by op)
        check_grads(jax.jit(lambda a, b: smj.kl_div(a, b, where=where, log_probs=log_probs)), (p, q), order=2, modes=["fwd", "rev"])


def test_kl_div_gradients_exact_formulas_and_infinite_rows():
    p = jnp.array([[0.0, 1.0, -INF], [0.0, 0.0, 2.0]])
    q = jnp.array([[1.0, 0.0, 3.0], [0.0, -INF, 1.0]])
    kl = smj.kl_div(p, q)
    assert float(kl[1]) == INF and jnp.isfinite(kl[0])
    gp, gq = jax.grad(lambda a, b: smj.kl_div(a, b).sum(), argnums=(0, 1))(p, q)
    P, Q = smj.softmax(p[0]), smj.softmax(q[0])
    d = jnp.where(P > 0, smj.log_softmax(p[0]) - smj.log_softmax(q[0]), 0.0)
    np.testing.assert_allclose(gp[0], P * (d - kl[0]), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gq[0], Q - P, rtol=1e-6)
    assert not gp[1].any() and not gq[1].any()
    _, t = jax.jvp(lambda a: smj.kl_div(a, q), (p,), (jnp.ones_like(p),))
    assert not jnp.isnan(t).any() and float(t[1]) == 0.0


def test_kl_div_dtype_promotion_and_under_jit_vmap():
    with jax.enable_x64(True):
        p = jnp.asarray(_rng(13).normal(size=(4, 5)).astype(np.float32))
        q = jnp.asarray(_rng(14).normal(size=(4, 5)))
        assert smj.kl_div(p, q).dtype == jnp.float64
    p = jnp.asarray(_rng(13).normal(size=(4, 5)).astype(np.float32))
    q = jnp.asarray(_rng(14).normal(size=(4, 5)).astype(np.float32))
    out = jax.jit(jax.vmap(smj.kl_div))(p, q)
    np.testing.assert_allclose(out, smj.kl_div(p, q), rtol=1e-6)
    assert out.dtype == jnp.float32
