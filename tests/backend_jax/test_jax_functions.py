"""softmaxkit.jax: jit/vmap/grad, gradients, accuracy, edges, errors, dispatch."""

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

from jax.test_util import check_grads  # noqa: E402

import softmaxkit as smk  # noqa: E402
import softmaxkit.jax as smj  # noqa: E402

from tests import reference as ref  # noqa: E402

INF = math.inf


def _rand(*shape, seed=0, scale=3.0, dtype=np.float32):
    return jnp.asarray((np.random.default_rng(seed).normal(size=shape) * scale).astype(dtype))


def _confident_rows(margins=(5, 10, 17, 25, 40, 60, 80), n=8, seed=0):
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(len(margins), n)).astype(np.float32)
    for i, m in enumerate(margins):
        rows[i, 2] = rows[i].max() + m
    return rows


# --- gradients (float64 via x64) --------------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: smj.softmax(x, axis=1, temperature=0.8),
        lambda x: smj.log_softmax(x, axis=(0, 2)),
        lambda x: smj.logsumexp(x, axis=1),
        lambda x: smj.cross_entropy(x, jnp.array([[0, 2], [1, -100], [3, 3]]), axis=1, label_smoothing=0.1, z_loss=0.01),
        lambda x: smj.cross_entropy(x, jnp.array([[0, 2], [1, 1], [3, 3]]), axis=1, weight=jnp.arange(1.0, 5.0), reduction="none"),
    ],
    ids=["softmax", "log_softmax", "logsumexp", "ce-smooth-zloss", "ce-weight-none"],
)
def test_gradients_match_finite_differences(fn, request):
    order = 2 if "softmax" in request.node.callspec.id else 1
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4, 2)))
        check_grads(fn, (x,), order=order, modes=["rev"])


def test_cross_entropy_probability_targets_gradients():
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        x, q = jnp.asarray(rng.normal(size=(4, 5))), jnp.asarray(rng.random(size=(4, 5)))
        # jit: the finite differences call the loss again and again (eager, each runs op by op)
        loss = jax.jit(lambda a, b: smj.cross_entropy(a, b, weight=jnp.linspace(0.5, 1.5, 5), label_smoothing=0.2))
        check_grads(loss, (x, q), order=1, modes=["rev"])


def test_values_and_gradients_match_numpy_core():
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        x = rng.normal(size=(5, 6)) * 4
        t = np.array([0, 5, 2, -100, 1])
        w = rng.random(6) + 0.1
        loss, grad = smk.cross_entropy(x, t, weight=w, label_smoothing=0.1, z_loss=1e-3, return_grad=True)
        f = lambda a: smj.cross_entropy(a, jnp.asarray(t), weight=jnp.asarray(w), label_smoothing=0.1, z_loss=1e-3)  # noqa: E731
        np.testing.assert_allclose(f(jnp.asarray(x)), loss, rtol=1e-14)
        np.testing.assert_allclose(jax.grad(f)(jnp.asarray(x)), grad, rtol=1e-13, atol=1e-16)
        np.testing.assert_allclose(smj.softmax(jnp.asarray(x), axis=0), smk.softmax(x, axis=0), rtol=1e-14)
        np.testing.assert_allclose(smj.logsumexp(jnp.asarray(x), axis=1, keepdims=True), smk.logsumexp(x, axis=1, keepdims=True), rtol=1e-14)


# --- transformations ---------------------------------------------------------------


def test_jit_vmap_grad_compose():
    x = _rand(4, 3, 5, seed=4)
    t = jnp.asarray(np.random.default_rng(5).integers(0, 5, size=(4, 3)))
    per_batch = jax.jit(jax.vmap(lambda a, b: smj.cross_entropy(a, b, label_smoothing=0.1)))(x, t)
    one = jax.jit(lambda a, b: smj.cross_entropy(a, b, label_smoothing=0.1))  # compiled once, called per element
    expected = jnp.stack([one(x[i], t[i]) for i in range(4)])
    np.testing.assert_allclose(per_batch, expected, rtol=1e-6)
    grads = jax.jit(jax.vmap(jax.grad(smj.cross_entropy)))(x, t)
    full = jax.jit(jax.grad(lambda a: smj.cross_entropy(a.reshape(12, 5), t.reshape(12), reduction="sum")))(x)
    np.testing.assert_allclose(grads * 3, full, rtol=1e-6, atol=1e-9)
    p = jax.jit(jax.vmap(smj.softmax))(x)
    np.testing.assert_allclose(p, jax.nn.softmax(x), rtol=1e-5, atol=1e-8)
    lse_grad = jax.jit(jax.grad(lambda a: smj.logsumexp(a, axis=None)))(x)
    np.testing.assert_allclose(lse_grad, jax.nn.softmax(x.reshape(-1)).reshape(x.shape), rtol=1e-5, atol=1e-9)


def test_masked_rows_under_jit_give_zero_gradients():
    """jax.nn gives NaN gradients on fully masked rows."""
    x = jnp.array([[-INF, -INF, -INF], [1.0, -INF, 2.0]])
    where = jnp.array([[True, True, True], [True, True, False]])
    cot = jnp.array([1.0, 2.0, 3.0])
    for fn in (
        lambda a: jnp.sum(smj.softmax(a) * cot),
        lambda a: jnp.sum(jnp.where(jnp.isfinite(smj.log_softmax(a)), smj.log_softmax(a), 0.0) * cot),
        lambda a: jnp.sum(jnp.where(jnp.isfinite(smj.logsumexp(a, axis=-1)), smj.logsumexp(a, axis=-1), 0.0)),
        lambda a: jnp.sum(smj.softmax(a, where=where) * cot),
        lambda a: smj.cross_entropy(a, jnp.array([0, 2]), reduction="sum"),
    ):
        g = jax.jit(jax.grad(fn))(x)
        assert not jnp.isnan(g).any() and (g[0] == 0).all()
    assert (smj.softmax(x)[0] == 0).all() and (smj.log_softmax(x)[0] == -INF).all()
    assert smj.logsumexp(x, axis=-1)[0] == -INF
    assert smj.softmax(x, where=where)[1].tolist() == [1.0, 0.0, 0.0]


def test_loss_edges():
    x = _rand(3, 4, seed=6)
    t = jnp.full((3,), -100)
    loss, grad = jax.value_and_grad(smj.cross_entropy)(x, t)
    assert float(loss) == 0.0 and not grad.any()
    masked = jnp.array([[1.0, -INF, 0.5, 2.0]])
    smooth = smj.cross_entropy(masked, jnp.array([0]), label_smoothing=0.3)
    sliced = smj.cross_entropy(masked[:, [0, 2, 3]], jnp.array([0]), label_smoothing=0.3)
    np.testing.assert_allclose(smooth, sliced, rtol=1e-6)
    g = jax.grad(smj.cross_entropy)(masked, jnp.array([1]))
    assert float(smj.cross_entropy(masked, jnp.array([1]))) == INF and jnp.isfinite(g).all()
    assert smj.softmax(jnp.zeros((2, 0))).shape == (2, 0)
    assert smj.logsumexp(jnp.zeros((2, 0)), axis=1).tolist() == [-INF, -INF]
    inf_row = smj.softmax(jnp.array([INF, 0.0, INF]))
    assert inf_row.tolist() == [0.5, 0.0, 0.5]
    nan_rows = smj.log_softmax(jnp.array([[math.nan, 0.0], [1.0, 0.0]]))
    assert jnp.isnan(nan_rows[0]).all() and not jnp.isnan(nan_rows[1]).any()


# --- accuracy ------------------------------------------------------------------------


def test_float32_without_x64_uses_compensated_path_within_2_ulp():
    """Margins up to 80: the results stay normal floats (XLA flushes subnormals)."""
    rows = _confident_rows()
    x = jnp.asarray(rows)
    t = jnp.array([2, 0, 2, 1, 2, 2, 3])
    losses = smj.cross_entropy(x, t, reduction="none")
    grads = jax.grad(lambda a: smj.cross_entropy(a, t, reduction="sum"))(x)
    y, p = smj.log_softmax(x), smj.softmax(x)
    assert losses.dtype == grads.dtype == y.dtype == jnp.float32
    for i, r in enumerate(rows):
        xs = ref.to_mp(r)
        exact_loss, exact_grad = ref.cross_entropy(xs, ref.hard_coef(r.size, int(t[i]))[0])
        assert ref.ulp_error([float(losses[i])], [exact_loss], np.float32) <= 2
        assert ref.ulp_error(np.asarray(grads[i]), exact_grad, np.float32) <= 2
        assert ref.ulp_error(np.asarray(y[i]), ref.log_softmax(xs), np.float32) <= 2
        assert ref.ulp_error(np.asarray(p[i]), ref.softmax(xs), np.float32) <= 2


def test_float32_with_x64_computes_in_float64():
    rows = _confident_rows(margins=(20, 50, 80))
    with jax.enable_x64(True):
        x = jnp.asarray(rows)
        y = smj.log_softmax(x)
        assert y.dtype == jnp.float32
        for i, r in enumerate(rows):
            assert ref.ulp_error(np.asarray(y[i]), ref.log_softmax(ref.to_mp(r)), np.float32) <= 2


def test_bfloat16_rounded_once():
    rows = _confident_rows(margins=(1, 3, 5, 8))
    x = jnp.asarray(rows).astype(jnp.bfloat16)
    p = smj.softmax(x)
    assert p.dtype == jnp.bfloat16
    bf16 = np.dtype(jnp.bfloat16)
    for i, r in enumerate(np.asarray(x.astype(jnp.float32))):
        assert ref.ulp_error(np.asarray(p[i].astype(jnp.float32)), ref.softmax(ref.to_mp(r)), bf16) <= 2


# --- errors and dispatch ----------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda x: smj.cross_entropy(x, jnp.array([0, 9, 1])), ValueError, r"labels\[1\] = 9 is not a class index: allowed 0 to 3"),
        (lambda x: smj.cross_entropy(x, jnp.array([0, 1])), ValueError, "must have shape"),
        (lambda x: smj.cross_entropy(x, -jnp.ones((3, 4))), ValueError, "non-negative"),
        (lambda x: smj.cross_entropy(x, jnp.array([True, False, True])), TypeError, "labels must hold"),
        (lambda x: smj.cross_entropy(x, jnp.array([0, 1, 2]), weight=jnp.full(4, jnp.nan)), ValueError, "weight must be finite"),
        (lambda x: smj.cross_entropy(x, jnp.array([0, 1, 2]), reduction="avg"), ValueError, "reduction"),
        (lambda x: smj.cross_entropy(x, jnp.array([0, 1, 2]), label_smoothing=2.0), ValueError, "label_smoothing"),
        (lambda x: smj.cross_entropy(jnp.zeros((3, 0)), jnp.array([0, 1, 2])), ValueError, "empty class"),
        (lambda x: smj.softmax(x, axis=3), ValueError, "out of range"),
        (lambda x: smj.softmax(x, temperature=-1.0), ValueError, "temperature"),
        (lambda x: smj.softmax(x > 0), TypeError, "real floating"),
        (lambda x: smj.softmax(x, where=jnp.ones((3, 4))), TypeError, "boolean"),
    ],
)
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call(_rand(3, 4))


def test_value_checks_are_skipped_under_jit():
    out = jax.jit(smj.cross_entropy)(_rand(3, 4), jnp.array([0, 1, 2]))
    assert out.shape == ()


def test_core_functions_dispatch_jax_arrays():
    x = _rand(4, 6, seed=7)
    t = jnp.array([0, 5, -100, 2])
    assert isinstance(smk.softmax(x, axis=0), jax.Array)
    np.testing.assert_allclose(smk.log_softmax(x), smj.log_softmax(x), rtol=0)
    loss, grad = smk.cross_entropy(x.T, t, axis=0, label_smoothing=0.1, return_grad=True)
    expected = jax.grad(lambda a: smj.cross_entropy(a, t, label_smoothing=0.1))(x)
    np.testing.assert_allclose(grad, expected.T, rtol=1e-6)
    g = jax.jit(jax.grad(lambda a: smk.logsumexp(a, axis=1).sum()))(x)
    np.testing.assert_allclose(g, jax.nn.softmax(x, axis=1), rtol=1e-5)
