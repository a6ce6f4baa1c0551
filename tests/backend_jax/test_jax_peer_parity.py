"""The cases JAX's own tests pin for jax.nn's softmax family, run on softmaxkit.

JAX's test modules are not shipped in its wheel, so the cases are restated
here: empty inputs, where= masks (all False, slicing, the gradient of a masked
huge entry), axis tuples, infinities, gradients to second order, the
elementwise softplus/sigmoid checks, and how much reverse mode keeps.  Where
softmaxkit deliberately answers differently, the case states what jax.nn does
and is a strict xfail naming softmaxkit's documented semantics, so a change
on either side is noticed.
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
X = jnp.array([5.5, 1.3, -4.2, 0.9])
MASK = jnp.array([True, False, True, True])
FAMILY = {"softmax": (smj.softmax, jax.nn.softmax), "log_softmax": (smj.log_softmax, jax.nn.log_softmax)}


@pytest.mark.parametrize("name", list(FAMILY))
def test_empty_input_gives_empty_output(name):
    fn, _ = FAMILY[name]
    x = jnp.array([], dtype=jnp.float32)
    out = fn(x)
    assert out.shape == (0,) and out.dtype == x.dtype


@pytest.mark.parametrize("name", list(FAMILY))
def test_where_all_false(name):
    fn, peer = FAMILY[name]
    none = jnp.zeros_like(X, dtype=bool)
    expected = jnp.full_like(X, 0.0 if name == "softmax" else -INF)
    np.testing.assert_array_equal(fn(X, where=none), expected)
    np.testing.assert_array_equal(peer(X, where=none), expected)


@pytest.mark.parametrize("name", list(FAMILY))
def test_where_equals_slicing_and_normalises(name):
    fn, peer = FAMILY[name]
    out = fn(X, where=MASK)
    np.testing.assert_allclose(out[MASK], fn(X[MASK]), rtol=1e-6)
    np.testing.assert_allclose(out[MASK], peer(X, where=MASK)[MASK], rtol=1e-6)
    probs = out if name == "softmax" else jnp.exp(out)
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)
    # JAX checks this only for softmax (its log_softmax has no custom rule).
    kept = jnp.array([0, 2, 3])
    with jax.enable_x64(True):
        check_grads(lambda a: jnp.take(fn(a, where=MASK), kept), (X.astype(jnp.float64),), order=2)


# jax-ml/jax#19490: a masked entry far above the others used to give NaN
# gradients through the where= mask.
@pytest.mark.parametrize("name", list(FAMILY))
def test_gradient_ignores_masked_huge_entry(name):
    fn, _ = FAMILY[name]
    x = jnp.array([36.0, 10000.0])
    g = jax.grad(lambda a: fn(a, where=a < 1000)[0])(x)
    np.testing.assert_array_equal(g, jnp.zeros_like(x))


def test_softmax_gradients_to_second_order():
    with jax.enable_x64(True):
        check_grads(smj.softmax, (X.astype(jnp.float64),), order=2)
        check_grads(smj.log_softmax, (X.astype(jnp.float64),), order=2)


def test_reverse_mode_keeps_one_input_sized_float_array():
    # jax.nn.softmax's custom rule keeps only its output for reverse mode;
    # softmaxkit keeps its output and the boolean mask of p = 0 entries.
    saved_residuals = pytest.importorskip("jax._src.ad_checkpoint").saved_residuals
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32))
    for fn in (smj.softmax, smj.log_softmax, lambda a: smj.logsumexp(a, axis=-1)):
        saved = [a for a, _ in saved_residuals(fn, x)]
        floats = sum(a.size for a in saved if jnp.issubdtype(a.dtype, jnp.floating))
        assert floats == x.size


@pytest.mark.parametrize("axis", [(0, 2), (2, 0), (1,), None, -1])
@pytest.mark.parametrize("name", list(FAMILY))
def test_axis_tuples_match_jax_nn(name, axis):
    fn, peer = FAMILY[name]
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 4)).astype(np.float32))
    np.testing.assert_allclose(fn(x, axis=axis), peer(x, axis=axis), rtol=1e-5, atol=1e-6)
    where = jnp.asarray(np.random.default_rng(2).random(size=(3, 4)) < 0.6)
    got, expected = fn(x, axis=axis, where=where), peer(x, axis=axis, where=where)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis", [None, 0, (0, 2), -1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_matches_jax_nn(axis, keepdims):
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 3, 4)).astype(np.float32))
    where = jnp.asarray(np.random.default_rng(4).random(size=(2, 3, 4)) < 0.7)
    for w in (None, where):
        np.testing.assert_allclose(
            smj.logsumexp(x, axis=axis, keepdims=keepdims, where=w), jax.nn.logsumexp(x, axis=axis, keepdims=keepdims, where=w), rtol=1e-6
        )


def test_logsumexp_infinities_and_empty():
    assert float(smj.logsumexp(jnp.array([INF, -INF]))) == INF
    assert float(smj.logsumexp(jnp.array([-INF, -INF]))) == -INF
    assert float(smj.logsumexp(jnp.array([0.0, 1.0, INF, 9.0]))) == INF
    assert float(smj.logsumexp(jnp.zeros((0,)))) == -INF
    assert math.isnan(float(smj.logsumexp(jnp.array([1.0, math.nan]))))


def test_logsumexp_weights_and_sign_through_the_core_function():
    # jax.nn.logsumexp takes b= and return_sign=; softmaxkit's NumPy-style
    # logsumexp accepts JAX arrays with both.
    x = jnp.array([1.0, 2.0, 3.0])
    b = jnp.array([1.0, -1.0, 0.5])
    got = smk.logsumexp(x, b=b, return_sign=True)
    expected = jax.nn.logsumexp(x, b=b, return_sign=True)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-6)
    assert float(got[1]) == float(expected[1])


# --- deliberate differences ----------------------------------------------------------


def test_peer_behaviour_behind_the_differences():
    # What the strict xfails below expect of softmaxkit is what jax.nn does.
    assert jnp.isnan(jax.nn.softmax(jnp.array([-INF, -INF]))).all()
    assert jnp.isnan(jax.nn.softmax(jnp.array([INF, 0.0, INF]))).all()
    g = jax.grad(lambda a: jnp.sum(jax.nn.softmax(a) * jnp.array([1.0, 2.0])))(jnp.array([-INF, -INF]))
    assert jnp.isnan(g).all()
    assert float(jax.nn.log_softmax(jnp.array([20.0, 0.0], dtype=jnp.float32))[0]) == 0.0
    assert jnp.isfinite(_optax_style(jnp.array([[1.0, 2.0, 0.5]]), jnp.array([1]), jnp.array([[True, False, True]]))).all()


@pytest.mark.xfail(
    strict=True, raises=TypeError, reason="softmaxkit.jax.logsumexp takes no b= or return_sign=: softmaxkit.logsumexp accepts JAX arrays with both"
)
def test_jax_logsumexp_takes_b_and_return_sign():
    smj.logsumexp(jnp.array([1.0, 2.0]), b=jnp.array([1.0, 1.0]), return_sign=True)


@pytest.mark.xfail(strict=True, raises=TypeError, reason="no initial=: JAX removed it from jax.nn.softmax; where= covers its use")
def test_jax_softmax_initial_argument():
    smj.softmax(X, where=MASK, initial=-INF)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="documented: a fully masked row (all -inf) gives probability 0, where jax.nn gives NaN")
def test_jax_softmax_of_all_minus_inf_row_is_nan():
    assert jnp.isnan(smj.softmax(jnp.array([-INF, -INF]))).all()


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="documented: +inf entries share the mass equally, where jax.nn gives NaN")
def test_jax_softmax_with_plus_inf_is_nan():
    assert jnp.isnan(smj.softmax(jnp.array([INF, 0.0, INF]))).all()


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="documented: fully masked rows have zero gradients, where jax.nn gives NaN")
def test_jax_gradient_of_fully_masked_row_is_nan():
    g = jax.grad(lambda a: jnp.sum(smj.softmax(a) * jnp.array([1.0, 2.0])))(jnp.array([-INF, -INF]))
    assert jnp.isnan(g).all()


@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="documented: log_softmax at the argmax is -log1p(s), exact on confident rows, where jax.nn rounds to 0"
)
def test_jax_log_softmax_of_confident_row_rounds_to_zero():
    assert float(smj.log_softmax(jnp.array([20.0, 0.0], dtype=jnp.float32))[0]) == 0.0


# optax's softmax_cross_entropy_with_integer_labels(logits, labels, axis, where)
# defines the loss as logsumexp over the kept classes minus the label's logit,
# and accepts a where of the labels' shape (one flag per row).


def _optax_style(logits, labels, where):
    lse = jax.nn.logsumexp(logits, axis=-1, where=where)
    picked = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    return jnp.where(jnp.any(where, axis=-1), lse - picked, 0.0)


def test_cross_entropy_where_matches_optax_definition():
    x = jnp.asarray(np.random.default_rng(5).normal(size=(4, 5)).astype(np.float32))
    where = jnp.array([[True, True, False, True, True]] * 3 + [[False] * 5])
    labels = jnp.array([0, 1, 4, 2])
    got = smj.cross_entropy(x, labels, where=where, reduction="none")
    np.testing.assert_allclose(got, _optax_style(x, labels, where), rtol=1e-6)


@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="documented: a label on a masked class gives +inf (as on a -inf logit); optax's definition gives a finite loss"
)
def test_optax_label_on_masked_class_is_finite():
    x = jnp.array([[1.0, 2.0, 0.5]])
    where = jnp.array([[True, False, True]])
    assert jnp.isfinite(smj.cross_entropy(x, jnp.array([1]), where=where, reduction="none")).all()


@pytest.mark.xfail(strict=True, raises=ValueError, reason="documented: where= broadcasts to the logits' shape; leave rows out with where[..., None]")
def test_optax_row_shaped_where():
    x = jnp.asarray(np.random.default_rng(6).normal(size=(3, 4)).astype(np.float32))
    rows = jnp.array([True, False, True])
    smj.cross_entropy(x, jnp.array([0, 1, 2]), where=rows, reduction="none")


# --- elementwise functions (jax.nn.softplus and sigmoid cases) --------------------------


def test_softplus_gradients_like_jax_nn():
    check_grads(smk.softplus, (1e-8,), order=2)
    check_grads(smk.softplus, (0.0,), order=1)
    check_grads(smk.softplus, (-INF,), order=1)
    check_grads(smk.softplus, (math.nan,), order=1)
    assert float(jax.grad(smk.softplus)(INF)) == 1.0
    assert float(jax.grad(smk.softplus)(0.0)) == float(jax.grad(jax.nn.softplus)(0.0)) == 0.5


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_softplus_and_sigmoid_values_and_dtypes(dtype):
    zero = jnp.zeros((), dtype=dtype)
    assert smk.softplus(zero) == jnp.log(dtype(2))
    for fn in (smk.softplus, smk.sigmoid, smk.log_sigmoid):
        assert fn(zero).dtype == dtype
    assert float(smk.softplus(jnp.array(89.0, dtype=jnp.float32))) == 89.0
