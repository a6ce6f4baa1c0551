"""softmaxkit.jax.dot_product_attention and merge_attention_states: parity with
jax.nn.dot_product_attention, edge rows, float64 finite differences, jit, vmap,
bfloat16, the merge of a key split, the size of the traced program, and the
native kernel (float32 and bfloat16 on the CPU) against the float64 numerics.

Tests marked with the ``jax_path`` fixture run on both paths: the native
kernel through XLA FFI and the ``jax.numpy`` formulas."""

import functools

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp

import softmaxkit as smk
import softmaxkit.jax as smj
from softmaxkit import kernels
from softmaxkit.backends.jax import native
from softmaxkit.numerics import attention as att

U32 = float(np.finfo(np.float32).eps) / 2
NATIVE = native.active()


def _qkv(B=2, T=5, S=7, N=4, K=2, H=8, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, T, N, H)).astype(dtype)
    k = rng.normal(size=(B, S, K, H)).astype(dtype)
    v = rng.normal(size=(B, S, K, H)).astype(dtype)
    return jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)


def _run(attention, q, k, v, bias, *, batched=True, **kw):
    """Compiled once: the output and the gradients of a weighted sum of it in
    ``q``, ``k``, ``v`` (and ``bias``); unbatched inputs go through ``vmap``."""

    def f(q, k, v, bias):
        one = (lambda q, k, v: attention(q, k, v, bias, **kw)) if batched else jax.vmap(lambda q, k, v: attention(q, k, v, **kw))
        out = one(q, k, v)
        w = jnp.linspace(-1.0, 1.0, out.size, dtype=jnp.float32).reshape(out.shape)
        return jnp.sum(out * w), out

    argnums = (0, 1, 2) if bias is None else (0, 1, 2, 3)
    (_, out), grads = jax.jit(jax.value_and_grad(f, argnums=argnums, has_aux=True))(q, k, v, bias)
    return out, grads


@functools.cache
def _parity_case(case):
    """The inputs, options and jax.nn's results of a parity case (computed once for both paths)."""
    rng = np.random.default_rng(2)
    if case == "vmapped_unbatched":
        q, k, v = _qkv(N=4, K=4, seed=1)
        q = q * 3.0  # confident rows too
        bias, kw = None, {"batched": False}
    else:
        # Several chunks of query rows (64 rows per chunk at this size: 70 rows
        # in 2 chunks of 35) and blocks of keys (300 keys: 3 blocks, the last
        # partial): the scans' offsets, padding and mask windows.
        q, k, v = _qkv(T=70, S=300, N=4, K=2, H=8, seed=1)
        bias = jnp.asarray(rng.normal(size=(1, 4, 70, 300)), jnp.float32)
        keep = rng.random((2, 1, 70, 300)) > 0.3
        keep[..., 0] = True  # every row attends somewhere: jax.nn's empty rows differ by design
        kw = {"mask": jnp.asarray(keep), "is_causal": True}
    return q, k, v, bias, kw, _run(jax.nn.dot_product_attention, q, k, v, bias, **kw)


@pytest.mark.parametrize("case", ["vmapped_unbatched", "gqa_mask_bias_causal"])
def test_values_and_gradients_equal_jax_nn(case, jax_path):
    """No mask (through vmap of the unbatched (T, N, H) form), and GQA with a
    boolean mask, a broadcast bias and is_causal together over several query
    chunks and key blocks."""
    q, k, v, bias, kw, (want, g_want) = _parity_case(case)
    got, g_got = _run(smj.dot_product_attention, q, k, v, bias, **kw)
    assert got.dtype == jnp.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_got, g_want):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    if case == "vmapped_unbatched":
        # float32 without x64 runs compensated float32: a few float32
        # roundings of the exact result (NumPy computes in float64).
        ref = smk.attention(*(np.swapaxes(np.asarray(a, np.float64), 1, 2) for a in (q, k, v)))
        bound = 8 * U32 * float(jnp.max(jnp.abs(v)))
        np.testing.assert_allclose(np.swapaxes(np.asarray(got, np.float64), 1, 2), ref, rtol=0, atol=bound)


def test_empty_rows_give_zero_output_and_zero_finite_gradients(jax_path):
    q, k, v = _qkv(B=2, N=2, K=2, seed=4)
    keep = np.ones((2, 2, 5, 7), bool)
    keep[0, 1, 3] = False  # one fully masked row
    v = v.at[1, 6].set(jnp.nan)  # a masked-out key's NaN value is never read
    lengths = jnp.array([7, 6])
    bias = jnp.zeros((2, 2, 5, 7), jnp.float32)

    @jax.jit
    def run(q, k, v, bias):
        def f(q, k, v, bias):
            out, lse = smj.dot_product_attention(q, k, v, bias, jnp.asarray(keep), key_value_seq_lengths=lengths, return_lse=True)
            return jnp.sum(out * out) + jnp.sum(jnp.where(jnp.isfinite(lse), lse, 0.0)), (out, lse)

        return jax.grad(f, argnums=(0, 1, 2, 3), has_aux=True)(q, k, v, bias)

    (dq, dk, dv, dbias), (out, lse) = run(q, k, v, bias)
    assert np.all(np.asarray(out[0, 3, 1]) == 0.0) and float(lse[0, 1, 3]) == -np.inf
    assert np.all(np.isfinite(np.asarray(out)))
    for g in (dq, dk, dv, dbias):
        assert np.all(np.isfinite(np.asarray(g)))
    assert np.all(np.asarray(dq[0, 3, 1]) == 0.0) and np.all(np.asarray(dbias[0, 1, 3]) == 0.0)
    # jax.nn gives the empty row the mean of the values.
    naive = jax.jit(jax.nn.dot_product_attention)(q[:1], k[:1], v[:1], mask=jnp.asarray(keep[:1]))
    np.testing.assert_allclose(naive[0, 3, 1], jnp.mean(v[0, :, 1], axis=0), rtol=1e-5)


def test_float64_finite_differences_with_every_extra():
    """Each argument's gradient against a central difference along a random direction (one compilation)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        args = [jnp.asarray(rng.normal(size=shape)) for shape in [(1, 3, 4, 3), (1, 4, 2, 3), (1, 4, 2, 3), (1, 4, 3, 4), (4,)]]
        keep = jnp.asarray(rng.random((1, 1, 3, 4)) > 0.2)
        w = jnp.asarray(rng.normal(size=(1, 3, 4, 3)))

        def f(q, k, v, bias, sinks):
            out, lse = smj.dot_product_attention(q, k, v, bias, keep, is_causal=True, softcap=2.5, sinks=sinks, return_lse=True)
            return jnp.sum(out * w) + jnp.sum(jnp.sin(lse))

        vg = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3, 4)))
        _, grads = vg(*args)
        assert all(g.dtype == jnp.float64 for g in grads)
        h = 1e-5
        for i, g in enumerate(grads):
            d = jnp.asarray(rng.normal(size=args[i].shape))
            step = [a + h * d if j == i else a for j, a in enumerate(args)]
            back = [a - h * d if j == i else a for j, a in enumerate(args)]
            fd = (vg(*step)[0] - vg(*back)[0]) / (2 * h)
            np.testing.assert_allclose(float(jnp.sum(g * d)), float(fd), rtol=1e-7, atol=1e-8, err_msg=f"argument {i}")


def test_bfloat16_in_bfloat16_out(jax_path):
    q, k, v = (a.astype(jnp.bfloat16) for a in _qkv(seed=7))

    @jax.jit
    def run(q, k, v):
        (out, lse), pull = jax.vjp(lambda q, k, v: smj.dot_product_attention(q, k, v, return_lse=True), q, k, v)
        return out, lse, pull((out, jnp.ones_like(lse)))

    out, lse, grads = run(q, k, v)
    assert out.dtype == jnp.bfloat16 and lse.dtype == jnp.float32
    assert all(g.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(g))) for g in grads)
    # Computed in float32 and rounded once: within a bfloat16 rounding of the exact attention of the rounded inputs.
    ref, ref_lse = smk.attention(*(np.swapaxes(np.asarray(a, np.float64), 1, 2) for a in (q, k, v)), return_lse=True)
    np.testing.assert_allclose(np.swapaxes(np.asarray(out, np.float64), 1, 2), ref, rtol=0, atol=2.0**-8 * np.max(np.abs(ref)))
    np.testing.assert_allclose(np.asarray(lse, np.float64), ref_lse, rtol=1e-6)


def _reference(q, k, v):
    """Plain attention and its log-sum-exp in jax.numpy, (B, T, N, H) layout, no mask."""
    s = jnp.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    return jnp.einsum("bnts,bsnh->btnh", jax.nn.softmax(s, axis=-1), v), jax.nn.logsumexp(s, axis=-1)


def test_merge_of_a_key_split_equals_the_unsplit_attention_with_gradients():
    q, k, v = _qkv(B=1, S=9, N=2, K=2, seed=8)

    def split(q, k, v):
        # Three parts of three keys (one traced attention under vmap), and an
        # empty state with a NaN output: the identity, never read.
        kp, vp = (jnp.moveaxis(a.reshape(1, 3, 3, 2, 8), 1, 0) for a in (k, v))
        o, l = jax.vmap(lambda k, v: smj.dot_product_attention(q, k, v, return_lse=True))(kp, vp)
        o = jnp.concatenate([jnp.swapaxes(o, 2, 3), jnp.full((1, 1, 2, 5, 8), jnp.nan)])  # (parts, B, N, T, H)
        l = jnp.concatenate([l, jnp.full((1, 1, 2, 5), -jnp.inf)])
        o, l = smj.merge_attention_states(o, l, axis=0)
        return jnp.swapaxes(o, 1, 2), l

    def grads(fn):
        def f(q, k, v):
            o, l = fn(q, k, v)
            return jnp.sum(jnp.sin(o)) + jnp.sum(l * l), (o, l)

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(q, k, v)

    (_, (o_s, l_s)), g_s = grads(split)
    (_, (o_w, l_w)), g_w = grads(_reference)
    np.testing.assert_allclose(o_s, o_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(l_s, l_w, rtol=1e-6)
    for a, b in zip(g_s, g_w):
        assert bool(jnp.all(jnp.isfinite(a)))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _equations(jaxpr) -> int:
    """The equations of ``jaxpr`` and of every jaxpr nested in them (scan bodies, custom VJPs, jit calls)."""
    from jax.extend import core

    n = 0
    for eqn in jaxpr.eqns:
        n += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, core.ClosedJaxpr):
                    n += _equations(sub.jaxpr)
                elif isinstance(sub, core.Jaxpr):
                    n += _equations(sub)
    return n


@pytest.mark.parametrize("grad", [False, True], ids=["forward", "grad"])
def test_traced_program_does_not_grow_with_the_lengths(grad):
    """Compile time: the loops over query chunks and key blocks are scans, so
    the traced program is the same size at T = S = 256 (4 chunks of 64 rows,
    2 blocks of 128 keys) and T = S = 2048 (32 chunks, 16 blocks); unrolled,
    it grew with T x S."""

    def size(T, S):
        q = jax.ShapeDtypeStruct((1, T, 4, 16), jnp.float32)
        k = jax.ShapeDtypeStruct((1, S, 2, 16), jnp.float32)
        bias = jax.ShapeDtypeStruct((1, 4, T, S), jnp.float32)
        f = lambda q, k, v, b: smj.dot_product_attention(q, k, v, b, is_causal=True, sinks=jnp.zeros(4)).sum()
        if grad:
            f = jax.grad(f, argnums=(0, 1, 2, 3))
        return _equations(jax.make_jaxpr(f)(q, k, k, bias).jaxpr)

    with kernels.disabled():  # the formulas' program (the native one is a single call)
        assert size(256, 256) == size(2048, 2048)


@pytest.mark.skipif(not NATIVE, reason=f"the native JAX path is not in use: {smj.kernel_path()}")
def test_native_kernel_under_vmap_with_every_extra_equals_the_float64_numerics():
    """GQA, a broadcast bias, a boolean mask, is_causal, a soft cap and sinks
    (a different set per element of the vmapped axis), 200 keys: the output,
    the log-sum-exp and every gradient against ``numerics.attention`` in
    float64 on NumPy (the float32 inputs' exact values), per vmapped element."""
    rng = np.random.default_rng(11)
    V, B, T, S, N, K, H = 2, 2, 6, 200, 4, 2, 8
    q = rng.normal(size=(V, B, T, N, H)).astype(np.float32)
    k = rng.normal(size=(V, B, S, K, H)).astype(np.float32)
    v = rng.normal(size=(V, B, S, K, H)).astype(np.float32)
    bias = rng.normal(size=(V, 1, N, T, S)).astype(np.float32)
    sinks = rng.normal(size=(V, N)).astype(np.float32)
    keep = rng.random((B, 1, T, S)) > 0.2
    keep[0, 0, 2] = False  # an empty row (its sink still counts)
    w_out = rng.normal(size=(B, T, N, H)).astype(np.float32)
    w_lse = rng.normal(size=(B, N, T)).astype(np.float32)

    def loss(q, k, v, bias, sinks):
        out, lse = smj.dot_product_attention(
            q, k, v, bias, jnp.asarray(keep), is_causal=True, softcap=4.0, sinks=sinks, return_lse=True
        )
        return jnp.sum(out * w_out) + jnp.sum(lse * w_lse), (out, lse)

    grad = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True)))
    grads, (out, lse) = grad(*(jnp.asarray(a) for a in (q, k, v, bias, sinks)))
    assert out.dtype == jnp.float32 and lse.dtype == jnp.float32
    for i in range(V):
        heads = [np.swapaxes(a[i].astype(np.float64), 1, 2) for a in (q, k, v)]  # (B, N, T, H)
        options = {"causal": "top_left", "scale": 1 / np.sqrt(H), "softcap": 4.0, "sinks": sinks[i].astype(np.float64)}
        additive = np.where(keep, bias[i].astype(np.float64), -np.inf)
        o, l = smk.attention(*heads, mask=additive, return_lse=True, **options)
        np.testing.assert_allclose(np.swapaxes(out[i], 1, 2), o, rtol=0, atol=4 * U32 * np.abs(o).max())
        np.testing.assert_allclose(lse[i], l, rtol=4 * U32)
        with np.errstate(all="ignore"):  # the numerics select past inf - inf, as the front end does
            want = att.attention_vjp(
                np, *heads, o, l, np.swapaxes(w_out, 1, 2).astype(np.float64), w_lse.astype(np.float64), attend=None,
                bias=additive, widened=False, want_bias=True, **options,
            )
        dq, dk, dv, dsinks, dbias = want
        dbias = np.where(keep, dbias, 0.0).sum(axis=0, keepdims=True)
        for name, g, r in zip(["q", "k", "v", "bias", "sinks"], [a[i] for a in grads], [dq, dk, dv, dbias, dsinks]):
            g = np.asarray(g, np.float64)
            g = np.swapaxes(g, 1, 2) if name in ("q", "k", "v") else g
            np.testing.assert_allclose(g, r, rtol=0, atol=1e-6 * np.abs(r).max(), err_msg=name)


@pytest.mark.parametrize("T, S", [(3, 0), (0, 5)])
def test_zero_length_keys_or_queries(T, S, jax_path):
    """No keys: output 0, the sink as log-sum-exp, zero gradients in query,
    key and value, and the sink's gradient the number of its rows; no
    queries: empty results and zero gradients."""
    q, k, v = jnp.ones((2, T, 2, 4)), jnp.ones((2, S, 1, 4)), jnp.ones((2, S, 1, 3))
    sinks = jnp.array([0.5, -1.0])

    def f(q, k, v, sinks):
        out, lse = smj.dot_product_attention(q, k, v, sinks=sinks, return_lse=True)
        return jnp.sum(out) + jnp.sum(lse), (out, lse)

    (dq, dk, dv, dsinks), (out, lse) = jax.jit(jax.grad(f, argnums=(0, 1, 2, 3), has_aux=True))(q, k, v, sinks)
    assert out.shape == (2, T, 2, 3) and lse.shape == (2, 2, T)
    assert np.all(np.asarray(out) == 0.0)
    np.testing.assert_array_equal(lse, np.broadcast_to(np.asarray(sinks)[None, :, None], (2, 2, T)))
    for g in (dq, dk, dv):
        assert np.all(np.asarray(g) == 0.0)
    # Each row's lse is its sink: d lse / d sink is 1 per row, 2 batch elements x T rows.
    np.testing.assert_array_equal(dsinks, np.full(2, 2.0 * T, np.float32))


def test_a_row_does_not_depend_on_the_batch(jax_path):
    """Bit for bit, the first batch element alone and within four: the
    formulas then run 2 chunks of 105 query rows rather than one of 210 (the
    chunk size follows the batch), the kernel different work items."""
    rng = np.random.default_rng(12)
    q = jnp.asarray(rng.normal(size=(4, 210, 4, 8)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(4, 20, 2, 8)), jnp.float32)

    def f(q, k):
        return smj.dot_product_attention(q, k, k, is_causal=True, return_lse=True)

    whole, alone = jax.jit(f)(q, k), jax.jit(lambda q, k: f(q, k))(q[:1], k[:1])
    for a, b in zip(whole, alone):
        assert np.asarray(a[:1]).tobytes() == np.asarray(b).tobytes()
