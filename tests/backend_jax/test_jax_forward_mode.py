"""Forward-mode AD (jvp, jacfwd, hessian) through softmaxkit.jax.

Tangents are checked against float64 central finite differences, Hessians
against finite differences of the gradient, and the reverse-mode gradients
(which JAX obtains by transposing the tangent rules) keep their exact form on
confident rows.
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
LABELS = np.array([[0, 2], [1, -100], [3, 3]])


def _x64(seed=1, shape=(3, 4, 2), scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale)


FUNCTIONS = {
    "softmax": lambda x: smj.softmax(x, axis=1, temperature=0.8),
    "log_softmax": lambda x: smj.log_softmax(x, axis=(0, 2)),
    "softmax-where": lambda x: smj.softmax(x, axis=1, where=jnp.arange(4)[:, None] != 2),
    "logsumexp": lambda x: smj.logsumexp(x, axis=1),
    "logsumexp-all": lambda x: smj.logsumexp(x, axis=None),
    "ce": lambda x: smj.cross_entropy(x, jnp.asarray(LABELS), axis=1),
    "ce-smooth-zloss": lambda x: smj.cross_entropy(x, jnp.asarray(LABELS), axis=1, label_smoothing=0.1, z_loss=0.01),
    "ce-weight-none": lambda x: smj.cross_entropy(x, jnp.asarray(LABELS), axis=1, weight=jnp.arange(1.0, 5.0), reduction="none"),
    "ce-sum-zloss-weight": lambda x: smj.cross_entropy(
        x, jnp.asarray(LABELS), axis=1, weight=jnp.arange(1.0, 5.0), z_loss=0.05, label_smoothing=0.2, reduction="sum"
    ),
    "ce-probabilities": lambda x: smj.cross_entropy(
        x, jnp.moveaxis(smj.softmax(jnp.ones((3, 2, 4)) * jnp.arange(4.0)), 2, 1), axis=1, label_smoothing=0.3, z_loss=0.02
    ),
}


# What broke: jax.jvp, jax.jacfwd and jax.hessian raised "can't apply
# forward-mode autodiff (jvp) to a custom_vjp function" for every function.
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_forward_and_reverse_modes_match_finite_differences(name):
    with jax.enable_x64(True):
        # jit: the finite differences call the function many times (eager jvp is tested below)
        check_grads(jax.jit(FUNCTIONS[name]), (_x64(),), order=2, modes=["fwd", "rev"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_jvp_agrees_with_grad(name):
    with jax.enable_x64(True):
        x, t = _x64(2), _x64(3)
        fn = FUNCTIONS[name]
        y, dy = jax.jvp(fn, (x,), (t,))
        cot = jnp.asarray(np.random.default_rng(4).normal(size=y.shape))
        (g,) = jax.vjp(fn, x)[1](cot)
        np.testing.assert_allclose(float(jnp.sum(dy * cot)), float(jnp.sum(g * t)), rtol=1e-12)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp-all", "ce-sum-zloss-weight", "ce-probabilities"])
def test_hessian_matches_finite_differences_of_grad(name):
    fn = FUNCTIONS[name]

    def scalar(a):
        return jnp.sum(fn(a) * jnp.linspace(0.5, 1.5, fn(a).size).reshape(fn(a).shape))

    with jax.enable_x64(True):
        x = _x64(5)
        h = jax.jit(jax.hessian(scalar))(x).reshape(x.size, x.size)
        grad = jax.jit(jax.grad(scalar))
        step = 1e-6
        columns = []
        for i in range(x.size):
            e = jnp.zeros(x.size).at[i].set(step).reshape(x.shape)
            columns.append(((grad(x + e) - grad(x - e)) / (2 * step)).reshape(-1))
        np.testing.assert_allclose(h, np.stack(columns, axis=1), atol=1e-7, rtol=1e-6)
        # Forward-over-reverse and reverse-over-reverse agree.
        np.testing.assert_allclose(h, jax.jit(jax.jacrev(jax.grad(scalar)))(x).reshape(x.size, x.size), atol=1e-13, rtol=1e-11)


# On the CPU backend this runs the native custom calls (their derivative rules
# are the same jax.numpy expressions on both paths).
def test_jvp_with_respect_to_probability_labels_and_weight():
    with jax.enable_x64(True):
        rng = np.random.default_rng(6)
        x = jnp.asarray(rng.normal(size=(4, 5)))
        q = jnp.asarray(rng.random(size=(4, 5)))
        w = jnp.linspace(0.5, 1.5, 5)

        def f(a, b, c):
            return smj.cross_entropy(a, b, weight=c, label_smoothing=0.2, z_loss=0.03)

        check_grads(jax.jit(f), (x, q, w), order=2, modes=["fwd", "rev"], atol=1e-6, rtol=1e-6)

        def g(a, c):
            return smj.cross_entropy(a, jnp.array([0, 4, -100, 2]), weight=c, label_smoothing=0.1, z_loss=0.03)

        check_grads(jax.jit(g), (x, w), order=2, modes=["fwd", "rev"], atol=1e-6, rtol=1e-6)


# The gradient at the target of a confident row is -s/(1+s), never p_t - 1
# (0 in float32): reverse mode, which JAX derives by transposing the tangent
# <g, t>, must keep it in every composition.
def test_confident_row_gradient_exact_in_every_mode():
    x = jnp.array([[20.0, 0.0]], dtype=jnp.float32)
    t = jnp.array([0])
    expected = np.array([[-2.0611537e-09, 2.0611537e-09]], dtype=np.float32)

    def f(a):
        return smj.cross_entropy(a, t)

    for g in (
        jax.grad(f)(x),
        jax.value_and_grad(f)(x)[1],
        jax.jit(jax.grad(f))(x),
        jax.jacrev(f)(x),
        jax.jacfwd(f)(x),
        jax.vmap(jax.grad(lambda r, lab: smj.cross_entropy(r[None], lab[None])))(x, t),
    ):
        np.testing.assert_array_equal(np.asarray(g), expected)
    _, tangent = jax.jvp(f, (x,), (jnp.array([[1.0, 0.0]]),))
    assert float(tangent) == float(expected[0, 0])
    # The same through the NumPy-style front end on JAX arrays.
    np.testing.assert_array_equal(np.asarray(smk.cross_entropy(x, t, return_grad=True)[1]), expected)


def test_log_softmax_and_logsumexp_tangents_on_confident_row():
    x = jnp.array([30.0, 0.0], dtype=jnp.float32)
    _, t = jax.jvp(smj.logsumexp, (x,), (jnp.array([0.0, 1.0]),))
    assert float(t) == pytest.approx(9.357623e-14, rel=1e-6)
    _, t = jax.jvp(smj.log_softmax, (x,), (jnp.array([0.0, 1.0]),))
    assert float(t[0]) == pytest.approx(-9.357623e-14, rel=1e-6) and float(t[1]) == 1.0


def test_transformations_compose_with_forward_mode():
    x = jnp.asarray(np.random.default_rng(7).normal(size=(6, 3, 5)).astype(np.float32))
    t = jnp.asarray(np.random.default_rng(8).normal(size=(6, 3, 5)).astype(np.float32))
    lab = jnp.asarray(np.random.default_rng(9).integers(0, 5, size=(6, 3)))

    def f(a, b):
        return smj.cross_entropy(a, b, label_smoothing=0.1, z_loss=1e-3)

    batched = jax.jit(jax.vmap(lambda a, d, b: jax.jvp(lambda u: f(u, b), (a,), (d,))[1]))(x, t, lab)
    one = jax.jit(lambda a, d, b: jax.jvp(lambda u: f(u, b), (a,), (d,))[1])  # compiled once, called per row
    each = jnp.stack([one(x[i], t[i], lab[i]) for i in range(6)])
    np.testing.assert_allclose(batched, each, rtol=1e-5, atol=1e-7)
    hessians = jax.jit(jax.vmap(jax.hessian(lambda r: smj.logsumexp(r))))(x[:, 0])
    p = jax.nn.softmax(x[:, 0])
    expected = jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :]
    np.testing.assert_allclose(hessians, expected, atol=1e-6)
    jac = jax.jit(jax.jacfwd(lambda r: smj.softmax(r, temperature=2.0)))(x[0, 0])
    np.testing.assert_allclose(jac, jax.jacrev(lambda r: smj.softmax(r, temperature=2.0))(x[0, 0]), atol=1e-7)
    lin = jax.linearize(lambda a: smj.log_softmax(a, axis=(1, 2)), x)[1]
    np.testing.assert_allclose(lin(t), jax.jvp(lambda a: smj.log_softmax(a, axis=(1, 2)), (x,), (t,))[1], rtol=1e-6, atol=1e-6)


def test_masked_and_infinite_rows_have_defined_tangents():
    x = jnp.array([[-INF, -INF, -INF], [1.0, -INF, 2.0], [INF, 0.0, INF]])
    t = jnp.array([[1.0, 2.0, 3.0], [1.0, 5.0, -1.0], [1.0, 1.0, 3.0]])
    labels = jnp.array([0, 2, 0])

    # One compilation for every derivative (eager, each runs op by op).
    @jax.jit
    def derivatives(a, u):
        tangents = [jax.jvp(fn, (a,), (u,))[1] for fn in (smj.softmax, smj.log_softmax, lambda b: smj.logsumexp(b, axis=-1))]
        dl = jax.jvp(lambda b: smj.cross_entropy(b, labels, reduction="none", z_loss=0.1), (a,), (u,))[1]
        h = jax.hessian(lambda b: smj.cross_entropy(b, labels, reduction="sum"))(a)
        return tangents, dl, h

    tangents, dl, h = derivatives(x, t)
    for dy in tangents:
        assert not jnp.isnan(dy).any()
        assert (dy[0] == 0).all()
    np.testing.assert_allclose(tangents[0][2], [-0.5, 0.0, 0.5])  # softmax: p = (1/2, 0, 1/2), <p, t> = 2
    assert not jnp.isnan(dl).any() and float(dl[0]) == 0.0
    assert not jnp.isnan(h).any()


def test_core_functions_on_jax_arrays_support_forward_mode():
    x = jnp.asarray(np.random.default_rng(10).normal(size=(3, 4)).astype(np.float32))
    t = jnp.ones_like(x)
    _, dy = jax.jvp(lambda a: smk.softmax(a, axis=0), (x,), (t,))
    np.testing.assert_allclose(dy, 0.0, atol=1e-7)  # a constant shift along the axis
    _, dl = jax.jvp(lambda a: smk.logsumexp(a, axis=1), (x,), (t,))
    np.testing.assert_allclose(dl, 1.0, rtol=1e-6)
