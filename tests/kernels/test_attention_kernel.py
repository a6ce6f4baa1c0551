"""The native attention kernel (``kernels.into.attention_forward_into`` and
``attention_backward_into``): results bitwise independent of the thread
count on every instruction set, memory without an ``L x S`` array, masked
NaN never read in the forward or the backward, bfloat16 inputs, and the
kernel against the numerics.  The accuracy contract and the edge table run
on this kernel through tests/frontend/test_attention*.py and
tests/backend_torch/test_torch_attention.py (the ``numeric_path`` fixture)."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import softmaxkit as smk
from softmaxkit import kernels as _native
from softmaxkit.kernels import into
from softmaxkit.numerics import attention as att
from tests.reference import BFLOAT16

pytestmark = pytest.mark.skipif(not _native.active(), reason="native kernels not built or disabled")

THREADS = (1, 2, 3, 8)


def problem(seed, B=2, hq=4, hkv=2, L=150, S=300, D=24, Dv=20, dtype=np.float32):
    """A problem with every option: GQA, a float mask with -inf entries
    broadcast over the batch, bottom-right causal, a soft cap and sinks."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, hq, L, D)).astype(dtype)
    k = rng.normal(size=(B, hkv, S, D)).astype(dtype)
    v = rng.normal(size=(B, hkv, S, Dv)).astype(dtype)
    mask = np.where(rng.random((hq, L, S)) < 0.2, -np.inf, rng.normal(size=(hq, L, S)))
    opts = {"mask": mask, "causal": "bottom_right", "scale": 0.3, "softcap": 4.0, "sinks": rng.normal(size=hq)}
    do = rng.normal(size=(B, hq, L, Dv)).astype(dtype)
    dlse = rng.normal(size=(B, hq, L)).astype(np.float32)
    return q, k, v, do, dlse, opts


def forward(q, k, v, **opts):
    out = np.empty(q.shape[:-1] + v.shape[-1:], dtype=q.dtype)
    lse = np.empty(q.shape[:-1], dtype=np.float32)
    return into.attention_forward_into(q, k, v, out, lse, **opts)


def backward(q, k, v, out, lse, do, dlse, *, mask=None, sinks=None, **opts):
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    dsinks = None if sinks is None else np.empty(sinks.shape)
    dmask = None if mask is None or mask.dtype == bool else np.empty(q.shape[:-1] + k.shape[-2:-1])
    into.attention_backward_into(q, k, v, out, lse, do, dlse, dq, dk, dv, mask=mask, sinks=sinks, dsinks=dsinks, dmask=dmask, **opts)
    return dq, dk, dv, dsinks, dmask


@pytest.fixture
def threads():
    before = _native.get_num_threads()
    yield
    _native.set_num_threads(before)


# 4 key heads: the backward's dq and dk/dv passes; 16: one fused pass per key head
@pytest.mark.parametrize("shape", [{}, {"B": 8, "L": 70, "S": 150}], ids=["two-pass", "fused"])
def test_results_are_bitwise_the_same_for_every_thread_count(isa, threads, shape):
    q, k, v, do, dlse, opts = problem(0, **shape)
    results = []
    for n in THREADS:
        _native.set_num_threads(n)
        out, lse = forward(q, k, v, **opts)
        results.append((out, lse) + backward(q, k, v, out, lse, do, dlse, **opts))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()


def test_fused_and_two_pass_backward_give_the_same_bits(isa):
    """16 key heads take one fused pass per key head, one batch entry (2 key
    heads) the two passes: both add every term in the same order."""
    q, k, v, do, dlse, opts = problem(6, B=8, L=70, S=150)
    out, lse = forward(q, k, v, **opts)
    fused = backward(q, k, v, out, lse, do, dlse, **opts)
    for b in (0, 5):
        alone = backward(q[b : b + 1], k[b : b + 1], v[b : b + 1], out[b : b + 1], lse[b : b + 1], do[b : b + 1], dlse[b : b + 1], **opts)
        for f, a in zip(fused[:3] + fused[4:], alone[:3] + alone[4:]):
            np.testing.assert_array_equal(f[b : b + 1], a)


def test_kernel_matches_the_numerics(isa):
    """Forward against the numerics' float64 attention, backward against
    ``attention_vjp`` at the same float32 output and lse, every option on."""
    q, k, v, do, dlse, opts = problem(1, L=70, S=200)
    out, lse = forward(q, k, v, **opts)
    f64 = [a.astype(np.float64) for a in (q, k, v)]
    ref_out, ref_lse = smk.attention(*f64, return_lse=True, **opts)
    np.testing.assert_allclose(out, ref_out, rtol=2e-6, atol=2e-7)
    np.testing.assert_allclose(lse, ref_lse, rtol=2e-7, atol=2e-7)
    got = backward(q, k, v, out, lse, do, dlse, **opts)
    with np.errstate(all="ignore"):
        want = att.attention_vjp(
            np, *f64, out.astype(np.float64), lse.astype(np.float64), do.astype(np.float64), dlse.astype(np.float64),
            attend=None, bias=opts["mask"], causal=opts["causal"], scale=opts["scale"], softcap=opts["softcap"],
            sinks=opts["sinks"], widened=True, want_bias=True,
        )
    for g, w in zip(got, want):
        scale = np.max(np.abs(w))
        np.testing.assert_allclose(g, w, rtol=0, atol=2e-6 * scale)


def _poison(q, k, v, do):
    """NaN and inf in key 5 and value 5 (masked for every row) and in query
    row 2 and its cotangent (a row with nothing to attend)."""
    k, v, q, do = k.copy(), v.copy(), q.copy(), do.copy()
    k[:, :, 5] = np.nan
    v[:, :, 5] = np.inf
    v[:, :, 5, 0] = np.nan
    q[:, :, 2] = np.nan
    do[:, :, 2] = np.inf
    return q, k, v, do


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_nan_in_masked_keys_values_and_rows_never_leaks(isa, kind):
    q, k, v, do, dlse, _ = problem(2, L=40, S=140, D=8, Dv=8)
    keep = np.ones((40, 140), dtype=bool)
    keep[:, 5] = False
    keep[2] = False
    mask = keep if kind == "bool" else np.where(keep, 0.0, -np.inf).astype(np.float32)
    clean = forward(q, k, v, mask=mask, scale=0.5)
    clean_grads = backward(q, k, v, *clean, do, dlse, mask=mask, scale=0.5)
    pq, pk, pv, pdo = _poison(q, k, v, do)
    out, lse = forward(pq, pk, pv, mask=mask, scale=0.5)
    grads = backward(pq, pk, pv, out, lse, pdo, dlse, mask=mask, scale=0.5)
    np.testing.assert_array_equal(out, clean[0])
    np.testing.assert_array_equal(lse, clean[1])
    assert np.all(out[:, :, 2] == 0) and np.all(lse[:, :, 2] == -np.inf)
    for g, c in zip(grads[:3], clean_grads[:3]):
        assert np.all(np.isfinite(g))
        np.testing.assert_array_equal(g, c)
    assert np.all(grads[1][:, :, 5] == 0) and np.all(grads[2][:, :, 5] == 0)


def test_nan_in_an_attended_value_makes_only_its_column_of_its_rows_nan(isa):
    q, k, v, _, _, _ = problem(3, L=10, S=300, D=8, Dv=4)
    v[0, 0, 200, 1] = np.nan  # key head 0 serves query heads 0 and 1
    out, lse = forward(q, k, v, scale=0.5)
    assert np.all(np.isfinite(lse))
    assert np.all(np.isnan(out[0, :2, :, 1]))
    assert np.all(np.isfinite(np.delete(out[0, :2], 1, axis=-1)))
    assert np.all(np.isfinite(out[0, 2:])) and np.all(np.isfinite(out[1]))
    out, _ = forward(q, k, v, causal="top_left", scale=0.5)  # rows 0 .. 9 never reach key 200
    assert np.all(np.isfinite(out))


@pytest.mark.skipif(BFLOAT16 is None, reason="ml_dtypes is not installed")
def test_bfloat16_inputs(isa):
    """bfloat16 in, bfloat16 out, float32 lse: within one bfloat16 rounding of
    the float64 attention of the same values, and the gradients likewise."""
    q, k, v, do, dlse, opts = problem(4, L=33, S=150, dtype=BFLOAT16)
    out, lse = forward(q, k, v, **opts)
    assert out.dtype == BFLOAT16 and lse.dtype == np.float32
    f64 = [a.astype(np.float64) for a in (q, k, v)]
    ref_out, ref_lse = smk.attention(*f64, return_lse=True, **opts)
    np.testing.assert_allclose(out.astype(np.float64), ref_out, rtol=2**-8, atol=2**-8 * np.max(np.abs(ref_out)) * 1e-2)
    np.testing.assert_allclose(lse, ref_lse, rtol=2e-7, atol=2e-7)
    grads = backward(q, k, v, out, lse, do, dlse, **opts)
    with np.errstate(all="ignore"):
        want = att.attention_vjp(
            np, *f64, out.astype(np.float64), lse.astype(np.float64), do.astype(np.float64), dlse.astype(np.float64),
            attend=None, bias=opts["mask"], causal=opts["causal"], scale=opts["scale"], softcap=opts["softcap"],
            sinks=opts["sinks"], widened=True,
        )
    for g, w in zip(grads[:3], want[:3]):
        assert g.dtype == BFLOAT16
        np.testing.assert_allclose(g.astype(np.float64), w, rtol=2**-8, atol=2**-8 * np.max(np.abs(w)) * 1e-2)
    # the uint16 bits with the flag are the same call
    out_bits = np.empty(out.shape, np.uint16)
    into.attention_forward_into(
        q.view(np.uint16), k.view(np.uint16), v.view(np.uint16), out_bits, np.empty_like(lse), bfloat16=True, **opts
    )
    np.testing.assert_array_equal(out_bits, out.view(np.uint16))


_MEMORY = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from softmaxkit.kernels import into
    L = S = 4096
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(1, 1, n, 8)).astype(np.float32) for n in (L, S, S))
    pad = rng.random((1, S)) < 0.9  # a key-padding mask, broadcast by strides
    out, lse = np.empty_like(q), np.empty(q.shape[:-1], np.float32)
    grads = [np.empty_like(a) for a in (q, k, v)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    into.attention_forward_into(q, k, v, out, lse, mask=pad, causal="top_left", scale=0.3)
    into.attention_backward_into(q, k, v, out, lse, out, None, *grads, mask=pad, causal="top_left", scale=0.3)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """
)


def test_no_scores_sized_allocation():
    """At L = S = 4096 one float32 score array would be 64 MiB: the kernel
    grows the peak memory by a few tiles per thread only."""
    done = subprocess.run([sys.executable, "-c", _MEMORY], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) < 16 * 1024, f"peak memory grew by {int(done.stdout)} KiB"


def test_empty_problems():
    q = np.ones((1, 2, 0, 4), np.float32)
    k = np.ones((1, 1, 3, 4), np.float32)
    v = np.ones((1, 1, 3, 2), np.float32)
    out, lse = forward(q, k, v, scale=1.0)
    assert out.shape == (1, 2, 0, 2) and lse.shape == (1, 2, 0)
    q = np.ones((1, 2, 3, 4), np.float32)
    sinks = np.array([0.5, -np.inf])
    out, lse = forward(q, k[:, :, :0], v[:, :, :0], scale=1.0, sinks=sinks)
    assert np.all(out == 0)
    np.testing.assert_array_equal(lse, np.broadcast_to(np.float32(sinks)[None, :, None], lse.shape))


def test_format_errors_name_the_argument():
    q = np.ones((1, 2, 3, 4), np.float32)
    k = np.ones((1, 1, 5, 4), np.float32)
    v = np.ones((1, 1, 5, 2), np.float32)
    with pytest.raises(TypeError, match="k must be float32"):
        forward(q, k.astype(np.float64), v, scale=1.0)
    with pytest.raises(ValueError, match="out must hold 12 elements"):
        into.attention_forward_into(q, k, v, np.empty((1, 2, 3, 3), np.float32), np.empty((1, 2, 3), np.float32), scale=1.0)
    with pytest.raises(ValueError, match="causal must be"):
        forward(q, k, v, scale=1.0, causal="left")
    with pytest.raises(ValueError, match="dividing"):
        forward(np.ones((1, 3, 3, 4), np.float32), np.ones((1, 2, 5, 4), np.float32), np.ones((1, 2, 5, 2), np.float32), scale=1.0)


def test_a_row_does_not_depend_on_the_batch_or_other_rows(isa):
    """float32 through the kernel: a lone row (its causal keys given as a
    boolean mask) has the bits it has among 150 rows and two batch entries,
    and NaN in another batch entry's queries changes nothing elsewhere."""
    q, k, v, _, _, _ = problem(5, hq=2, hkv=2)
    full, lse = smk.attention(q, k, v, causal="bottom_right", return_lse=True)
    keep = np.arange(300) <= 97 + 300 - 150
    alone, lse1 = smk.attention(q[1:2, :, 97:98], k[1:2], v[1:2], mask=keep, return_lse=True)
    np.testing.assert_array_equal(alone[0, :, 0], full[1, :, 97])
    np.testing.assert_array_equal(lse1[0, :, 0], lse[1, :, 97])
    q2 = q.copy()
    q2[0] = np.nan
    np.testing.assert_array_equal(smk.attention(q2, k, v, causal="bottom_right")[1:], full[1:])
