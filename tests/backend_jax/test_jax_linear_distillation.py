"""softmaxkit.jax.linear_distillation_loss against the distillation loss of its materialised logits.

The heads hold small integers, so the float32 products ``h @ W.T + b`` are
exact and ``softmaxkit.jax.distillation_loss`` on the materialised logits
sees the very logits the fused pass forms a chunk at a time.  Its losses
agree within 2 float32 ULP (the same row formulas, fused differently by
XLA); the student's gradients are products of its logit gradient, checked
against the normwise bound of a float32 product.  Gradients in float64 are
checked against finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

from jax.test_util import check_grads  # noqa: E402

import softmaxkit as smk  # noqa: E402
import softmaxkit.jax as smj  # noqa: E402
from softmaxkit.numerics import linear as lin  # noqa: E402
from tests.reference.ulps import ulp_error  # noqa: E402

DIVERGENCES = ["forward_kl", "reverse_kl", "jsd"]
# Every option at once: tempered, the T**2 rule, a hard-label term (the
# tests share these and their shapes, so that most calls reuse a compilation).
OPTIONS = dict(beta=0.3, temperature=2.0, scale_by_temperature_squared=True, hard_label_weight=0.5)
U = float(np.finfo(np.float32).eps) / 2


def heads(seed, n=23, v=11, width_s=5, width_t=7):
    """Small-integer heads (exact float32 products) and labels with some ignored tokens."""
    rng = np.random.default_rng(seed)

    def ints(*shape):
        return rng.integers(-3, 4, size=shape).astype(np.float32)

    labels = rng.integers(0, v, size=n)
    labels[::4] = -100
    return dict(hs=ints(n, width_s), ws=ints(v, width_s), ht=ints(n, width_t), wt=ints(v, width_t), bs=ints(v), bt=ints(v), labels=labels)


def run(d, *, jit=False, bias=True, labels=True, **options):
    """``(loss, d_hidden, d_weight, d_bias)`` as NumPy arrays: the loss and the student's gradients of ``loss.sum()``."""
    student = [jnp.asarray(d["hs"]), jnp.asarray(d["ws"])] + ([jnp.asarray(d["bs"])] if bias else [])
    teacher = dict(teacher_bias=jnp.asarray(d["bt"]) if bias else None, labels=jnp.asarray(d["labels"]) if labels else None)

    def total(*a):
        loss = smj.linear_distillation_loss(
            a[0], a[1], jnp.asarray(d["ht"]), jnp.asarray(d["wt"]), student_bias=a[2] if bias else None, **teacher, **options
        )
        return loss.sum(), loss

    fn = jax.value_and_grad(total, argnums=tuple(range(len(student))), has_aux=True)
    (_, loss), grads = (jax.jit(fn) if jit else fn)(*student)
    out = (np.asarray(loss),) + tuple(np.asarray(g) for g in grads)
    return out + (() if bias else (None,))


def materialised(d, bias=True):
    """Both heads' logits, exact in float32."""
    xs = d["hs"].astype(np.float64) @ d["ws"].T.astype(np.float64) + (d["bs"] if bias else 0)
    xt = d["ht"].astype(np.float64) @ d["wt"].T.astype(np.float64) + (d["bt"] if bias else 0)
    return xs.astype(np.float32), xt.astype(np.float32)


def reference(d, *, bias=True, labels=True, **options):
    """``(loss, student logit gradient)`` of ``softmaxkit.jax.distillation_loss`` on the materialised logits."""
    xs, xt = materialised(d, bias)
    y = jnp.asarray(d["labels"]) if labels else None

    def total(x):
        loss = smj.distillation_loss(x, jnp.asarray(xt), labels=y, **options)
        return loss.sum(), loss

    (_, loss), grad = jax.value_and_grad(total, has_aux=True)(jnp.asarray(xs))
    return np.asarray(loss), np.asarray(grad, np.float64)


def assert_products(got, g, d, bias=True, ulps=4):
    """The student's ``(d_hidden, d_weight, d_bias)`` within the float32 bound of products of the logit
    gradient ``g`` (itself within ``ulps`` of the fused pass's)."""
    dh, dw, db = got
    n, v = g.shape
    h, w = d["hs"].astype(np.float64), d["ws"].astype(np.float64)
    pairs = [(dh, g @ w, np.abs(g) @ np.abs(w) * (v + 2 + ulps) * U), (dw, g.T @ h, np.abs(g.T) @ np.abs(h) * (n + 2 + ulps) * U)]
    if bias:
        pairs.append((db, g.sum(axis=0), np.abs(g).sum(axis=0) * (n + 2 + ulps) * U))
    for value, exact, bound in pairs:
        assert value.dtype == np.float32
        assert np.all(np.abs(value.astype(np.float64) - exact) <= bound + 1e-30)


# --- values and gradients -------------------------------------------------------------------


# Each divergence with one reduction, and "none" twice: every pair costs a compilation.
@pytest.mark.parametrize(("divergence", "reduction"), [("forward_kl", "batchmean"), ("reverse_kl", "none"), ("jsd", "batchmean"), ("jsd", "none")])
def test_equals_distillation_loss_of_the_materialised_logits(divergence, reduction):
    """Every divergence, reduced ("sum" differs from "batchmean" by the
    denominator alone; see the NumPy comparison) and per token (whose
    gradients are recomputed in reverse mode), with hard labels (some
    ignored), temperature and the T**2 rule."""
    d = heads(1)
    options = dict(OPTIONS, divergence=divergence, reduction=reduction)
    loss, *grads = run(d, **options)
    ref, g = reference(d, **options)
    assert loss.dtype == np.float32 and loss.shape == ref.shape
    assert np.max(ulp_error(loss, np.asarray(ref, np.float64), np.float32)) <= 2
    assert_products(tuple(grads), g, d)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_without_labels_every_token_counts(divergence):
    d = heads(2)
    loss, *grads = run(d, bias=False, labels=False, divergence=divergence, beta=0.6, temperature=0.5)
    ref, g = reference(d, bias=False, labels=False, divergence=divergence, beta=0.6, temperature=0.5)
    assert ulp_error(loss, np.asarray(ref, np.float64), np.float32) <= 2
    assert_products(tuple(grads), g, d, bias=False)


def test_equals_the_numpy_function():
    """The same float32 inputs through softmaxkit.linear_distillation_loss (NumPy, float64 rows) and softmaxkit.jax."""
    d = heads(3)
    for options in (dict(OPTIONS, divergence="jsd", reduction="sum"), dict(divergence="reverse_kl")):
        loss, (dh, dw, db) = smk.linear_distillation_loss(
            d["hs"], d["ws"], d["ht"], d["wt"], student_bias=d["bs"], teacher_bias=d["bt"], targets=d["labels"], return_grad=True, **options
        )
        got = run(d, **options)
        # JAX without x64 computes the rows in compensated float32: a few ULP,
        # and gradient entries within a few ULP of the largest.
        assert np.max(ulp_error(got[0], np.asarray(loss, np.float64), np.float32)) <= 4
        for a, b in zip(got[1:], (dh, dw, db)):
            assert a.dtype == np.float32 and np.max(np.abs(a - b)) <= 1e-6 * np.max(np.abs(b))


def test_numpy_style_entry_dispatches_jax_arrays():
    d = heads(4)
    args = [jnp.asarray(d[k]) for k in ("hs", "ws", "ht", "wt")]
    loss, (dh, dw, db) = smk.linear_distillation_loss(
        *args, student_bias=jnp.asarray(d["bs"]), teacher_bias=jnp.asarray(d["bt"]), targets=jnp.asarray(d["labels"]),
        divergence="jsd", reduction="none", return_grad=True,
    )
    assert isinstance(loss, jax.Array) and loss.shape == (23,)
    for got, ref in zip((loss, dh, dw, db), run(d, divergence="jsd", reduction="none")):
        np.testing.assert_array_equal(got, ref)
    loss, (_, _, none) = smk.linear_distillation_loss(*args, return_grad=True)
    assert none is None and loss == run(d, bias=False, labels=False)[0]


def test_finite_differences_float64():
    """Reverse mode against central differences, each divergence, with a per-token cotangent for "none"."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        hs, ws, bs = (jnp.asarray(rng.standard_normal(s)) for s in ((6, 3), (5, 3), (5,)))
        ht, wt, bt = (jnp.asarray(rng.standard_normal(s)) for s in ((6, 4), (5, 4), (5,)))
        y = jnp.array([0, 4, -100, 2, 2, 1])
        c = jnp.asarray(rng.uniform(0.5, 2.0, size=6))
        for divergence, reduction in (("forward_kl", "batchmean"), ("reverse_kl", "sum"), ("jsd", "none")):

            def f(hs, ws, bs, divergence=divergence, reduction=reduction):
                loss = smj.linear_distillation_loss(
                    hs, ws, ht, wt, student_bias=bs, teacher_bias=bt, labels=y, divergence=divergence, reduction=reduction, **OPTIONS
                )
                assert loss.dtype == jnp.float64
                return jnp.sum(loss * c) if loss.ndim else loss

            # jit: the finite differences call the loss again and again (eager, each runs op by op)
            check_grads(jax.jit(f), (hs, ws, bs), order=1, modes=["rev"], atol=1e-7, rtol=1e-7)


def test_the_teacher_gets_no_gradient():
    """The teacher's arguments are constants: zero gradients, also where the student and teacher share an array."""
    d = heads(6, width_t=5)
    hs, ws, wt, bt = (jnp.asarray(d[k]) for k in ("hs", "ws", "wt", "bt"))

    def f(h_student, h_teacher, wt, bt):
        return smj.linear_distillation_loss(h_student, ws, h_teacher, wt, teacher_bias=bt, divergence="jsd")

    grads = jax.grad(f, argnums=(1, 2, 3))(hs, hs, wt, bt)
    assert all(not np.any(g) for g in grads)
    shared = jax.grad(lambda h: f(h, h, wt, bt))(hs)
    np.testing.assert_array_equal(shared, jax.grad(f)(hs, hs, wt, bt))


# --- edges --------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["batchmean", "none"])
def test_every_token_ignored_gives_zero_and_zero_gradients(reduction):
    d = heads(7)
    d["labels"][:] = -100
    loss, dh, dw, db = run(d, **dict(OPTIONS, divergence="reverse_kl", reduction=reduction))
    assert not np.any(loss) and not np.any(dh) and not np.any(dw) and not np.any(db)


def test_ignored_tokens_take_no_part():
    """A NaN or inf in an ignored token's hidden states (student's or teacher's) reaches nothing."""
    d = heads(8)
    clean = run(d, **OPTIONS)
    d["hs"][4] = np.nan
    d["ht"][8, 0] = np.inf
    d["ht"][12] = np.nan
    dirty = run(d, **OPTIONS)
    for a, b in zip(clean, dirty):
        np.testing.assert_array_equal(a, b)
    assert not np.any(dirty[1][[4, 8, 12]])


def test_teacher_mass_on_a_class_the_student_masks_is_inf_with_zero_gradients():
    d = heads(9)
    d["bs"][3] = -np.inf
    loss, dh, dw, db = run(d, labels=False, divergence="forward_kl", reduction="none")
    assert np.all(loss == np.inf)
    assert not np.any(dh) and not np.any(dw) and not np.any(db)


# --- transformations, dtypes, chunks ------------------------------------------------------


def test_jit_equals_eager():
    d = heads(10)
    options = dict(OPTIONS, divergence="jsd", reduction="none")
    for eager, jitted in zip(run(d, **options), run(d, jit=True, **options)):
        np.testing.assert_array_equal(eager, jitted)


def test_chunks_split_the_tokens_unevenly(monkeypatch):
    """Chunks of 5 rows over 23 tokens (the last chunk padded, some tokens
    ignored) give the one-chunk loss and hidden-state gradient bit for bit;
    the weight and bias gradients differ only by the accumulation's rounding."""
    d = heads(11)
    options = dict(OPTIONS, divergence="forward_kl")
    whole = run(d, **options)
    monkeypatch.setattr(lin, "chunk_rows", lambda *args: 5)
    chunked = run(d, **options)
    assert chunked[0] == whole[0]
    np.testing.assert_array_equal(chunked[1], whole[1])
    np.testing.assert_allclose(chunked[2], whole[2], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(chunked[3], whole[3], rtol=1e-5, atol=1e-7)


def test_vmap_over_a_batch_axis():
    rng = np.random.default_rng(12)
    hs, ht = (rng.standard_normal((3, 10, k)).astype(np.float32) for k in (8, 6))
    ws, wt = (jnp.asarray(rng.standard_normal((13, k)).astype(np.float32)) for k in (8, 6))
    y = rng.integers(0, 13, size=(3, 10))
    y[1] = -100  # one element with every token ignored
    y[2, ::3] = -100

    def f(hs, ht, y, ws):
        return smj.linear_distillation_loss(hs, ws, ht, wt, labels=y, divergence="reverse_kl", hard_label_weight=0.5)

    loss = jax.jit(jax.vmap(f, in_axes=(0, 0, 0, None)))(hs, ht, y, ws)
    dh, dw = jax.jit(jax.vmap(jax.grad(f, argnums=(0, 3)), in_axes=(0, 0, 0, None)))(hs, ht, y, ws)
    # The unbatched loss and gradient, compiled once for the three elements.
    one = jax.jit(jax.value_and_grad(f, argnums=(0, 3)))
    for i in range(3):
        value, (gh, gw) = one(hs[i], ht[i], y[i], ws)
        np.testing.assert_allclose(loss[i], value, rtol=2e-7)
        np.testing.assert_allclose(dh[i], gh, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(dw[i], gw, rtol=1e-6, atol=1e-9)
    assert loss[1] == 0 and not np.any(dh[1]) and not np.any(dw[1])


def test_leading_dimensions_and_dtypes():
    """Leading dimensions of the tokens; the loss has the student's dtype, and a
    float64 teacher makes the work float64 (the loss rounded once from float64)."""
    d = heads(13, n=12)
    hs, ht = d["hs"].reshape(3, 4, -1), d["ht"].reshape(3, 4, -1)
    loss = smj.linear_distillation_loss(hs, d["ws"], ht, d["wt"], labels=d["labels"].reshape(3, 4), reduction="none")
    flat = smj.linear_distillation_loss(d["hs"], d["ws"], d["ht"], d["wt"], labels=d["labels"], reduction="none")
    assert loss.shape == (3, 4) and loss.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(loss).reshape(-1), flat)
    # The teacher's logits 2**27 + c_j a_i (shifted softmax inputs: the
    # distribution of c_j a_i) survive only in float64, float32's spacing
    # being 16 there.
    a, c = d["ht"][:, 0].astype(np.float64), d["wt"][:, 0].astype(np.float64)
    ht, wt = np.stack([a, np.full_like(a, 2.0**27)], axis=1), np.stack([c, np.ones_like(c)], axis=1)
    with jax.enable_x64(True):
        wide = smj.linear_distillation_loss(d["hs"], d["ws"], ht, wt)
        exact = smk.linear_distillation_loss(d["hs"].astype(np.float64), d["ws"].astype(np.float64), a[:, None], c[:, None])
    assert wide.dtype == jnp.float32
    assert ulp_error(float(wide), float(exact), np.float32) <= 1


# --- checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"divergence": "kl"}, ValueError, "divergence"),
        ({"divergence": "jsd", "beta": 1.0}, ValueError, "beta"),
        ({"reduction": "mean"}, ValueError, "reduction"),
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"hard_label_weight": 1.0}, ValueError, "labels"),
        ({"student_bias": jnp.ones(3)}, ValueError, "student_bias"),
        ({"teacher_bias": jnp.ones(3)}, ValueError, "teacher_bias"),
        ({"labels": jnp.array([0, 1, 2])}, ValueError, "labels"),
        ({"labels": jnp.array([0.0, 1.0])}, ValueError, "labels"),
        ({"labels": jnp.array([0, 4])}, ValueError, "labels"),
    ],
)
def test_bad_options_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        smj.linear_distillation_loss(jnp.ones((2, 3)), jnp.ones((4, 3)), jnp.ones((2, 5)), jnp.ones((4, 5)), **kwargs)


def test_bad_shapes_name_the_argument():
    h, w = jnp.ones((2, 3)), jnp.ones((4, 3))
    with pytest.raises(ValueError, match="teacher_hidden"):
        smj.linear_distillation_loss(h, w, jnp.ones((3, 5)), jnp.ones((4, 5)))
    with pytest.raises(ValueError, match="teacher_weight"):
        smj.linear_distillation_loss(h, w, jnp.ones((2, 5)), jnp.ones((6, 5)))
    with pytest.raises(ValueError, match="hidden size"):
        smj.linear_distillation_loss(h, jnp.ones((4, 2)), jnp.ones((2, 5)), jnp.ones((4, 5)))
    with pytest.raises(TypeError, match="teacher_weight"):
        smj.linear_distillation_loss(h, w, jnp.ones((2, 5)), "weights")


def test_forward_mode_raises():
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda h: smj.linear_distillation_loss(h, jnp.ones((4, 3)), h, jnp.ones((4, 3))), (jnp.ones((2, 3)),), (jnp.ones((2, 3)),))
