"""softmaxkit.jax.linear_cross_entropy against exact references, on the native and the formulas path.

The inputs are small integers and powers of two, so the float32 product
``h @ W.T`` is exact and the references (mpmath rows, or
``softmaxkit.cross_entropy`` on the float64 logits) see the very logits the
loss sees.  With ``W`` the identity the hidden-state gradient is the logit
gradient itself, checked in ULP; with a general ``W`` the gradients are
products of it, checked against the normwise bound of a float32 product.

XLA flushes subnormal results to 0 on the CPU (see ``softmaxkit.jax``):
entries whose exact value is subnormal in float32 may come out as 0 and are
compared as 0; the formulas path without x64 computes in float32 and is
given margins that keep its row sums normal.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

import mpmath as mp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import softmaxkit as smk  # noqa: E402
import softmaxkit.jax as smj  # noqa: E402
from softmaxkit.backends.jax import native  # noqa: E402
from softmaxkit.numerics import linear as lin  # noqa: E402
from tests.reference import exact  # noqa: E402
from tests.reference.ulps import BFLOAT16, ulp_error  # noqa: E402

NATIVE = native.active()
# The contract in float32 ULP: 2 on the native path (float64 inside), 4 for
# the compensated float32 formulas without x64 (softmaxkit.jax's docstring).
TOL = {"native": 2.0, "formulas": 4.0}
TINY = float(np.finfo(np.float32).tiny)
# The path of the tests that run on one: the native kernels where they run.
PATH = "native" if NATIVE else "formulas"


def run(h, w, t, *, bias=None, jit=False, **options):
    """``(loss, d_hidden, d_weight, d_bias)`` as NumPy arrays: the loss and the gradients of ``loss.sum()``."""
    args = tuple(jnp.asarray(a) for a in (h, w) + (() if bias is None else (bias,)))
    labels = jnp.asarray(t)

    def total(*a):
        loss = smj.linear_cross_entropy(a[0], a[1], labels, linear_bias=a[2] if len(a) > 2 else None, **options)
        return loss.sum(), loss

    fn = jax.value_and_grad(total, argnums=tuple(range(len(args))), has_aux=True)
    (_, loss), grads = (jax.jit(fn) if jit else fn)(*args)
    out = [np.asarray(loss)] + [np.asarray(g) for g in grads]
    return tuple(out) + ((None,) if bias is None else ())


def flushed(a):
    """``a`` (float64) with the magnitudes below float32's smallest normal set to 0."""
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.abs(a) < TINY, 0.0, a)


def confident_rows(rng, n, v, top_margin=90):
    """Integer logits with margins from 20 to ``top_margin`` between the largest and the rest."""
    x = rng.integers(-4, 5, size=(n, v)).astype(np.float32)
    top = rng.integers(0, v, size=n)
    x[np.arange(n), top] = x.max(axis=1) + np.linspace(20, top_margin, n).round()
    return x, top


def reference_rows(x, t, eps=0.0, z=0.0, class_w=None):
    """Exact per-row losses and logit gradients (mpmath) of logits ``x``; rows at -100 are ignored."""
    losses, grads = [], []
    for row, target in zip(x, t):
        xs = exact.to_mp(row)
        if target == -100:
            losses.append(mp.mpf(0))
            grads.append([mp.mpf(0)] * len(xs))
            continue
        finite = [e != -exact.INF for e in xs]
        coef, row_w = exact.hard_coef(len(xs), int(target), eps, class_w, finite)
        loss, grad = exact.cross_entropy(xs, coef, z, row_w)
        losses.append(loss)
        grads.append(grad)
    return losses, grads


def to_float(rows):
    return np.array([[float(e) for e in row] for row in rows])


def reference(h, w, t, bias=None, **options):
    """``(loss, logit gradient)`` of ``softmaxkit.cross_entropy`` on the float64 logits ``h @ W.T + b``."""
    x = h.astype(np.float64) @ w.T.astype(np.float64)
    if bias is not None:
        x = x + bias
    return smk.cross_entropy(x, np.asarray(t), return_grad=True, **options)


def assert_products(got, g, h, w, bias):
    """``(d_hidden, d_weight, d_bias)`` within the normwise bound of float32 products of the exact logit gradient ``g``."""
    dh, dw, db = got
    n, v = g.shape
    u = np.finfo(np.float32).eps / 2
    pairs = [(dh, g @ w, np.abs(g) @ np.abs(w) * (v + 2) * u), (dw, g.T @ h, np.abs(g.T) @ np.abs(h) * (n + 2) * u)]
    if bias is not None:
        pairs.append((db, g.sum(axis=0), np.abs(g).sum(axis=0) * (n + 2) * u))
    for value, ref, bound in pairs:
        assert value.dtype == np.float32
        assert np.all(np.abs(value - ref) <= bound + TINY)


# --- accuracy -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jax_path", "reduction"),
    [("native", "mean"), ("native", "sum"), ("native", "none"), ("formulas", "none")],
    indirect=["jax_path"],
)
def test_identity_head_meets_the_cross_entropy_contract(jax_path, reduction):
    """With W = I the logits are the hidden states and d_hidden is the logit
    gradient: both in ULP, on confident rows (margins 20 to 90; 70 for the
    float32 formulas, whose sums stop being normal beyond that)."""
    rng = np.random.default_rng(0)
    n, v = 24, 7
    x, top = confident_rows(rng, n, v, 90 if jax_path == "native" else 70)
    t = np.where(rng.random(n) < 0.5, top, rng.integers(0, v, size=n))
    t[3] = -100
    loss, dh, dw, _ = run(x, np.eye(v, dtype=np.float32), t, reduction=reduction)
    losses, grads = reference_rows(x, t)
    count = int(np.sum(t != -100))
    scale = count if reduction == "mean" else 1
    expected = losses if reduction == "none" else mp.fsum(losses) / scale
    assert loss.dtype == np.float32 and loss.shape == ((n,) if reduction == "none" else ())
    assert ulp_error(flushed(loss), flushed(np.array(expected, dtype=object).astype(float)), np.float32) <= TOL[jax_path]
    g = to_float(grads) / scale
    assert ulp_error(flushed(dh), flushed(g), np.float32) <= TOL[jax_path]
    assert np.all(dh[g <= -TINY] < 0)  # every normal target gradient survives, at every margin
    np.testing.assert_allclose(dw, g.T @ x, rtol=1e-5, atol=TINY)


def test_confident_target_gradient_is_not_zero():
    """Regression: p_t - 1 rounds to 0 in float32 once the margin passes about 17."""
    _, dh, dw, _ = run(np.array([[1.0, 0.0]], np.float32), np.array([[40.0, 0.0], [0.0, 1.0]], np.float32), np.array([0]))
    assert dh[0, 0] < 0 and dw[0, 0] < 0


def test_general_head_with_every_option(jax_path):
    """A masked class (-inf bias), an ignored row, class weights, label smoothing and z-loss."""
    rng = np.random.default_rng(1)
    n, v, width = 20, 11, 6
    h = rng.integers(-3, 4, size=(n, width)).astype(np.float32)
    w = rng.integers(-4, 5, size=(v, width)).astype(np.float32)
    b = rng.integers(-8, 9, size=v).astype(np.float32)
    b[2] = -np.inf
    t = rng.integers(0, v, size=n)
    t[t == 2] = 0
    t[5] = -100
    cw = np.array([0.5, 1.0, 2.0, 0.25] * 3, np.float32)[:v]
    options = dict(weight=cw, label_smoothing=0.1, z_loss=1e-3)
    loss, dh, dw, db = run(h, w, t, bias=b, **options)
    ref, g = reference(h, w, t, b, **options)
    assert ulp_error(loss, float(ref), np.float32) <= TOL[jax_path] + 1
    assert_products((dh, dw, db), g, h, w, b)
    assert np.all(dw[2] == 0) and db[2] == 0  # the masked class takes no gradient


def test_probability_labels(jax_path):
    rng = np.random.default_rng(5)
    h = rng.integers(-3, 4, size=(7, 5)).astype(np.float32)
    w = rng.integers(-3, 4, size=(4, 5)).astype(np.float32)
    q = rng.dirichlet(np.ones(4), size=7).astype(np.float32)
    loss, dh, dw, _ = run(h, w, q, reduction="sum", label_smoothing=0.2)
    ref, g = reference(h, w, q.astype(np.float64), reduction="sum", label_smoothing=0.2)
    assert ulp_error(loss, ref, np.float32) <= TOL[jax_path] + 1
    assert_products((dh, dw, None), g, h, w, None)


@pytest.mark.parametrize(("jax_path", "cap"), [("native", 2.0), ("native", 30.0), ("formulas", 2.0)], indirect=["jax_path"])
def test_softcap_with_x64_is_within_the_contract(jax_path, cap):
    """With x64 the float32 logits are capped in float64: the loss and gradient are those of the exact capped logits."""
    rng = np.random.default_rng(3)
    n, v = 10, 6
    x, _ = confident_rows(rng, n, v, 60)
    b = np.zeros(v, dtype=np.float32)
    b[4] = -np.inf
    t = rng.integers(0, 4, size=n)
    with jax.enable_x64(True):
        loss, dh, _, db = run(x, np.eye(v, dtype=np.float32), t, bias=b, softcap=cap, reduction="none")
    losses, grads = [], []
    for row, target in zip(x + b, t):
        xs = [cap * mp.tanh(e / cap) if e != -exact.INF else e for e in exact.to_mp(row)]
        coef, row_w = exact.hard_coef(v, int(target), 0.0, None)
        value, grad = exact.cross_entropy(xs, coef, 0, row_w)
        slope = [1 / mp.cosh(e / cap) ** 2 if e != -exact.INF else 0 for e in exact.to_mp(row)]
        losses.append(value)
        grads.append([gj * sj for gj, sj in zip(grad, slope)])
    assert loss.dtype == np.float32
    assert ulp_error(flushed(loss), flushed([float(e) for e in losses]), np.float32) <= 2
    assert ulp_error(flushed(dh), flushed(to_float(grads)), np.float32) <= 2
    assert np.all(dh[:, 4] == 0) and db[4] == 0


def test_softcap_without_x64_is_capped_in_float32(jax_path):
    """Without x64 the cap is computed in float32: the loss is that of logits within a float32 rounding of the capped ones."""
    rng = np.random.default_rng(4)
    h = rng.integers(-3, 4, size=(12, 5)).astype(np.float32)
    w = rng.integers(-3, 4, size=(9, 5)).astype(np.float32)
    t = rng.integers(0, 9, size=12)
    loss, dh, _, _ = run(h, w, t, softcap=5.0, reduction="none")
    x = h.astype(np.float64) @ w.T.astype(np.float64)
    ref, g = smk.cross_entropy(5.0 * np.tanh(x / 5.0), t, reduction="none", return_grad=True)
    # A logit off by one float32 rounding (|x| <= 5) moves a loss by at most 2 * 5 * 2**-24.
    np.testing.assert_allclose(loss, ref, rtol=4e-7, atol=1e-6)
    np.testing.assert_allclose(dh, (g / np.cosh(x / 5.0) ** 2) @ w, rtol=1e-5, atol=1e-6)


def test_finite_differences_float64():
    """Reverse mode against central differences, with every option and a per-token cotangent ("none")."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(11)
        h = jnp.asarray(rng.standard_normal((6, 3)))
        w = jnp.asarray(rng.standard_normal((5, 3)))
        b = jnp.asarray(rng.standard_normal(5))
        t = jnp.array([0, 4, -100, 2, 2, 1])
        c = jnp.asarray(rng.uniform(0.5, 2.0, size=6))
        for options in ({}, {"reduction": "none", "softcap": 1.5}, {"reduction": "sum", "label_smoothing": 0.2, "z_loss": 0.01}):

            def f(h, w, b, options=options):
                loss = smj.linear_cross_entropy(h, w, t, linear_bias=b, **options)
                return jnp.sum(loss * c) if loss.ndim else loss

            check_grads(f, (h, w, b), order=1, modes=["rev"], atol=1e-7, rtol=1e-7)


def test_per_token_cotangent_of_none_is_folded_into_each_row():
    """Regression (Liger-Kernel's 'none'): the gradient of sum(c * loss) is c times each token's gradient."""
    rng = np.random.default_rng(12)
    h = rng.integers(-3, 4, size=(9, 4)).astype(np.float32)
    w = rng.integers(-3, 4, size=(6, 4)).astype(np.float32)
    t = rng.integers(0, 6, size=9)
    c = np.array([1.0, 2.0, 0.0, 0.5, 4.0, 1.0, 0.25, 8.0, 1.0], np.float32)
    dh, dw = jax.grad(lambda h, w: jnp.sum(c * smj.linear_cross_entropy(h, w, jnp.asarray(t), reduction="none")), argnums=(0, 1))(h, w)
    _, g = reference(h, w, t, reduction="none")
    assert_products((np.asarray(dh), np.asarray(dw), None), g * c[:, None], h, w, None)


# --- edges ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jax_path", "reduction"),
    [("native", "mean"), ("native", "sum"), ("native", "none"), ("formulas", "mean")],
    indirect=["jax_path"],
)
def test_every_target_ignored_gives_zero_and_zero_gradients(jax_path, reduction):
    h, w, b = np.ones((4, 3), np.float32), np.ones((5, 3), np.float32), np.zeros(5, np.float32)
    loss, dh, dw, db = run(h, w, np.full(4, -100), bias=b, reduction=reduction)
    assert not np.any(loss) and not np.any(dh) and not np.any(dw) and not np.any(db)


def test_target_on_a_masked_class_gives_inf_with_finite_gradients():
    h = np.eye(3, dtype=np.float32)
    b = np.array([0.0, -np.inf, 0.0], dtype=np.float32)
    loss, dh, dw, db = run(h, np.eye(3, dtype=np.float32), np.array([1, 0, 2]), bias=b, reduction="none")
    assert loss[0] == np.inf and np.isfinite(loss[1:]).all()
    assert np.isfinite(dh).all() and np.isfinite(dw).all() and np.isfinite(db).all()


def test_ignored_tokens_take_no_part():
    """A NaN in an ignored token's hidden state reaches neither the loss nor the gradients."""
    rng = np.random.default_rng(13)
    h = rng.integers(-3, 4, size=(6, 4)).astype(np.float32)
    w = rng.integers(-3, 4, size=(5, 4)).astype(np.float32)
    t = np.array([0, -100, 2, 3, -100, 1])
    clean = run(h, w, t)
    h[1] = np.nan
    h[4, 0] = np.inf
    dirty = run(h, w, t)
    for a, b in zip(clean[:3], dirty[:3]):
        np.testing.assert_array_equal(a, b)
    assert not np.any(dirty[1][[1, 4]])


def test_normalizer_divides_the_sum():
    rng = np.random.default_rng(4)
    h = rng.integers(-3, 4, size=(9, 4)).astype(np.float32)
    w = rng.integers(-3, 4, size=(6, 4)).astype(np.float32)
    t = rng.integers(0, 6, size=9)
    t[0] = -100
    mean = run(h, w, t)
    normed = run(h, w, t, reduction="sum", normalizer=8)
    for a, b in zip(mean[:3], normed[:3]):
        np.testing.assert_array_equal(a, b)
    zero = run(h, w, t, reduction="sum", normalizer=0)
    assert zero[0] == 0 and not np.any(zero[1]) and not np.any(zero[2])
    # A normaliser computed inside jax.jit (a tracer) gives the same.
    traced = jax.jit(lambda h, k: smj.linear_cross_entropy(h, jnp.asarray(w), jnp.asarray(t), reduction="sum", normalizer=k))
    assert traced(h, jnp.float32(8)) == mean[0]
    assert traced(h, jnp.float32(0)) == 0


def test_empty_batch():
    loss, dh, dw, _ = run(np.zeros((0, 3), np.float32), np.ones((4, 3), np.float32), np.zeros((0,), np.int32))
    assert loss == 0 and dh.shape == (0, 3) and not np.any(dw)


# --- transformations, dtypes, chunks ------------------------------------------------------


def _inputs(seed, n=21, v=13, width=8):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, width)).astype(np.float32)
    w = rng.standard_normal((v, width)).astype(np.float32)
    b = rng.standard_normal(v).astype(np.float32)
    t = rng.integers(0, v, size=n)
    t[::5] = -100
    return h, w, b, t


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_jit_equals_eager(reduction):
    h, w, b, t = _inputs(20)
    options = dict(bias=b, reduction=reduction, label_smoothing=0.1, softcap=4.0)
    for eager, jitted in zip(run(h, w, t, **options), run(h, w, t, jit=True, **options)):
        np.testing.assert_array_equal(eager, jitted)


def test_vmap_over_a_batch_axis():
    rng = np.random.default_rng(21)
    h = rng.standard_normal((3, 10, 8)).astype(np.float32)
    w = jnp.asarray(rng.standard_normal((13, 8)).astype(np.float32))
    t = rng.integers(0, 13, size=(3, 10))
    t[1] = -100  # one element with every target ignored
    t[2, ::3] = -100

    def f(h, t, w):
        return smj.linear_cross_entropy(h, w, t, label_smoothing=0.1)

    loss = jax.vmap(f, in_axes=(0, 0, None))(h, t, w)
    dh, dw = jax.vmap(jax.grad(f, argnums=(0, 2)), in_axes=(0, 0, None))(h, t, w)
    for i in range(3):
        single = f(h[i], t[i], w)
        gh, gw = jax.grad(f, argnums=(0, 2))(h[i], t[i], w)
        np.testing.assert_allclose(loss[i], single, rtol=2e-7)
        np.testing.assert_allclose(dh[i], gh, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(dw[i], gw, rtol=1e-6, atol=1e-9)
    assert loss[1] == 0 and not np.any(dh[1]) and not np.any(dw[1])


@pytest.mark.skipif(BFLOAT16 is None, reason="ml_dtypes is not installed")
def test_bfloat16_is_computed_from_widened_logits():
    rng = np.random.default_rng(10)
    n, v = 16, 9
    x, _ = confident_rows(rng, n, v, 70)
    x = np.clip(x, -128, 128)  # exact in bfloat16
    t = rng.integers(0, v, size=n)
    h, w = jnp.asarray(x, jnp.bfloat16), jnp.eye(v, dtype=jnp.bfloat16)
    loss, (dh, dw) = jax.value_and_grad(lambda h, w: smj.linear_cross_entropy(h, w, jnp.asarray(t), reduction="sum"), argnums=(0, 1))(h, w)
    losses, grads = reference_rows(x, t)
    assert loss.dtype == jnp.bfloat16 and dh.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16
    assert ulp_error(float(loss), mp.fsum(losses), BFLOAT16) <= 2
    assert ulp_error(flushed(np.asarray(dh, np.float32)), flushed(to_float(grads)), BFLOAT16) <= 2
    # A float32 weight promotes: the loss and the weight's gradient are float32, the hidden states' bfloat16.
    loss32, (dh32, dw32) = jax.value_and_grad(
        lambda h, w: smj.linear_cross_entropy(h, w, jnp.asarray(t), reduction="sum"), argnums=(0, 1)
    )(h, w.astype(jnp.float32))
    assert loss32.dtype == jnp.float32 and dh32.dtype == jnp.bfloat16 and dw32.dtype == jnp.float32
    assert ulp_error(float(loss32), mp.fsum(losses), np.float32) <= TOL[PATH]


def test_float64_with_leading_dimensions():
    with jax.enable_x64(True):
        rng = np.random.default_rng(8)
        h = rng.standard_normal((2, 3, 4))
        w = rng.standard_normal((5, 4))
        t = rng.integers(0, 5, size=(2, 3))
        loss, dh, dw, db = run(h, w, t, reduction="none")
    ref, g = smk.cross_entropy(h @ w.T, t, reduction="none", return_grad=True)
    assert loss.dtype == np.float64 and loss.shape == (2, 3) and dh.shape == h.shape and db is None
    np.testing.assert_allclose(loss, ref, rtol=1e-14)
    np.testing.assert_allclose(dh, g @ w, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dw, np.einsum("abv,abh->vh", g, h), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("labels", ["indices", "probabilities"])
def test_chunks_split_the_tokens_unevenly(monkeypatch, labels):
    """Chunks of 9 rows over 101 tokens (the last chunk padded, some tokens
    ignored) give the one-chunk loss and hidden-state gradient bit for bit
    (the logits are exact: each row's loss and gradient do not depend on
    its chunk); the weight and bias gradients differ only by the
    accumulation's rounding.  Padding rows of probability labels carry no
    label-smoothing mass."""
    rng = np.random.default_rng(6)
    n, v, width = 101, 37, 16
    h = rng.integers(-3, 4, size=(n, width)).astype(np.float32)
    w = rng.integers(-3, 4, size=(v, width)).astype(np.float32)
    b = rng.integers(-3, 4, size=v).astype(np.float32)
    if labels == "indices":
        t = rng.integers(0, v, size=n)
        t[::7] = -100
    else:
        t = rng.dirichlet(np.ones(v), size=n).astype(np.float32)
    options = dict(bias=b, label_smoothing=0.1, z_loss=1e-3)
    whole = run(h, w, t, **options)
    monkeypatch.setattr(lin, "chunk_rows", lambda *args: 9)
    chunked = run(h, w, t, **options)
    assert chunked[0] == whole[0]
    np.testing.assert_array_equal(chunked[1], whole[1])
    np.testing.assert_allclose(chunked[2], whole[2], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(chunked[3], whole[3], rtol=1e-5, atol=1e-7)


def test_equals_the_numpy_function():
    """The same float32 inputs through softmaxkit.linear_cross_entropy (NumPy) and softmaxkit.jax."""
    h, w, b, t = _inputs(22, n=40, v=29, width=12)
    for options in ({"bias": b, "label_smoothing": 0.1}, {"reduction": "none", "softcap": 3.0, "z_loss": 1e-3}):
        bias = options.pop("bias", None)
        loss, (dh, dw, db) = smk.linear_cross_entropy(h, w, t, linear_bias=bias, return_grad=True, **options)
        got = run(h, w, t, bias=bias, **options)
        ulps = TOL[PATH] + (64 if "softcap" in options else 1)  # NumPy caps in float64, JAX without x64 in float32
        assert ulp_error(got[0], np.asarray(loss, np.float64), np.float32) <= ulps
        np.testing.assert_allclose(got[1], dh, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[2], dw, rtol=1e-5, atol=1e-6)
        if bias is not None:
            np.testing.assert_allclose(got[3], db, rtol=1e-5, atol=1e-6)


def test_numpy_style_entry_dispatches_jax_arrays():
    h, w, b, t = (jnp.asarray(a) for a in _inputs(23))
    loss, (dh, dw, db) = smk.linear_cross_entropy(h, w, t, linear_bias=b, reduction="none", return_grad=True)
    assert isinstance(loss, jax.Array) and loss.shape == (21,)
    expected = run(h, w, t, bias=b, reduction="none")
    for got, ref in zip((loss, dh, dw, db), expected):
        np.testing.assert_array_equal(got, ref)
    _, (_, _, none) = smk.linear_cross_entropy(h, w, t, return_grad=True)
    assert none is None
    assert smk.linear_cross_entropy(h, w, t) == run(h, w, t)[0]


# --- checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"reduction": "mean", "normalizer": 3}, ValueError, "normalizer"),
        ({"reduction": "sum", "normalizer": -1}, ValueError, "normalizer"),
        ({"softcap": -1.0}, ValueError, "softcap"),
        ({"reduction": "avg"}, ValueError, "reduction"),
        ({"label_smoothing": 2.0}, ValueError, "label_smoothing"),
        ({"weight": jnp.ones(3)}, ValueError, "weight"),
        ({"linear_bias": jnp.ones(3)}, ValueError, "linear_bias"),
    ],
)
def test_bad_options_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        smj.linear_cross_entropy(jnp.ones((2, 3)), jnp.ones((4, 3)), jnp.array([0, 1]), **kwargs)


def test_bad_shapes_and_labels_name_the_argument():
    h, w = jnp.ones((2, 3)), jnp.ones((4, 3))
    with pytest.raises(ValueError, match="hidden size"):
        smj.linear_cross_entropy(h, jnp.ones((4, 2)), jnp.array([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        smj.linear_cross_entropy(h, w, jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match="labels"):
        smj.linear_cross_entropy(h, w, jnp.array([0, 4]))
    with pytest.raises(ValueError, match="labels"):
        smj.linear_cross_entropy(h, w, jnp.full((2, 4), -0.5))
    with pytest.raises(TypeError, match="labels"):
        smj.linear_cross_entropy(h, w, jnp.array([True, False]))
    with pytest.raises(ValueError, match="no classes"):
        smj.linear_cross_entropy(h, jnp.ones((0, 3)), jnp.array([0, 1]))
    with pytest.raises(ValueError, match="normalizer"):
        jax.jit(lambda k: smj.linear_cross_entropy(h, w, jnp.array([0, 1]), reduction="sum", normalizer=k))(jnp.ones(2))


def test_label_values_are_checked_on_concrete_arrays_only():
    """Under jit the labels are tracers: the native kernel still refuses an out-of-range label when it runs."""
    f = jax.jit(lambda t: smj.linear_cross_entropy(jnp.ones((2, 3)), jnp.ones((4, 3)), t))
    assert np.isfinite(f(jnp.array([0, 1])))
    if NATIVE:
        with pytest.raises(Exception, match="labels"):
            f(jnp.array([0, 9])).block_until_ready()


def test_forward_mode_raises():
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda h: smj.linear_cross_entropy(h, jnp.ones((4, 3)), jnp.array([0, 1])), (jnp.ones((2, 3)),), (jnp.ones((2, 3)),))
