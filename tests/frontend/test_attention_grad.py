"""The attention VJP against float64 central finite differences of
``softmaxkit.attention``, and its edge rows: the numerics
(``numerics.attention.attention_vjp``) at float64 inputs, and the native
kernel (``kernels.into.attention_backward_into``) at float32 inputs, whose
float64 values the finite differences then differentiate exactly."""

import numpy as np
import pytest

import softmaxkit as smk
from softmaxkit import kernels
from softmaxkit.numerics import attention as att

INF = np.inf


@pytest.fixture(autouse=True)
def _both_paths(numeric_path):
    """Every test runs through the native kernel and through the numerics."""
    return numeric_path


def tol():
    """float32 results from float32 output and lse (native), or float64 throughout."""
    return {"rtol": 1e-5, "atol": 1e-6} if kernels.active() else {"rtol": 1e-6, "atol": 1e-8}


def native_vjp(q, k, v, do, dlse, *, mask=None, causal=None, scale=None, softcap=None, sinks=None):
    """The native kernel's gradients at the float32 values of the inputs, as float64."""
    q, k, v, do, dlse = (np.asarray(a, dtype=np.float32) for a in (q, k, v, do, dlse))
    o, lse = smk.attention(q, k, v, mask=mask, causal=causal, scale=scale, softcap=softcap, sinks=sinks, return_lse=True)
    tau = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    dsinks = None if sinks is None else np.empty(sinks.shape)
    float_mask = mask is not None and mask.dtype != bool
    dbias = np.empty(q.shape[:-1] + k.shape[-2:-1]) if float_mask else None
    kernels.into.attention_backward_into(
        q, k, v, o, lse, do, dlse, dq, dk, dv, mask=mask, causal=causal, scale=tau, softcap=softcap, sinks=sinks,
        dsinks=dsinks, dmask=dbias,
    )
    return dq.astype(np.float64), dk.astype(np.float64), dv.astype(np.float64), dsinks, dbias


def vjp(q, k, v, do, dlse, *, mask=None, causal=None, scale=None, softcap=None, sinks=None, rows_per_chunk=None):
    """The gradients from the forward's output and lse: the native kernel's
    while it is active (unless row chunks are asked for), else the numerics'."""
    if kernels.active() and rows_per_chunk is None:
        return native_vjp(q, k, v, do, dlse, mask=mask, causal=causal, scale=scale, softcap=softcap, sinks=sinks)
    o, lse = smk.attention(q, k, v, mask=mask, causal=causal, scale=scale, softcap=softcap, sinks=sinks, return_lse=True)
    bool_mask = mask is not None and mask.dtype == bool
    tau = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    with np.errstate(all="ignore"):
        return att.attention_vjp(
            np, q, k, v, o, lse, do, dlse, attend=mask if bool_mask else None, bias=None if bool_mask else mask,
            causal=causal, scale=tau, softcap=softcap, sinks=sinks, widened=False, want_bias=not bool_mask and mask is not None,
            rows_per_chunk=rows_per_chunk,
        )


def numeric_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        keep = x[i]
        x[i] = keep + h
        up = f()
        x[i] = keep - h
        down = f()
        x[i] = keep
        g[i] = (up - down) / (2 * h)
    return g


def _f32(a):
    """float64 values that float32 holds exactly: the native path's inputs."""
    return a.astype(np.float32).astype(np.float64)


def problem(seed, *, mask_kind=None, causal=None, softcap=None, sinks=False, scale=None):
    rng = np.random.default_rng(seed)
    q = _f32(rng.normal(size=(2, 4, 3, 3)))
    k = _f32(rng.normal(size=(2, 2, 5, 3)))
    v = _f32(rng.normal(size=(2, 2, 5, 2)))
    opts = {"causal": causal, "softcap": softcap, "scale": scale}
    if mask_kind == "bool":
        m = rng.random((3, 5)) < 0.7
        m[1] = False  # an empty row
        opts["mask"] = m
    elif mask_kind == "float":
        opts["mask"] = np.where(rng.random((4, 3, 5)) < 0.3, -INF, rng.normal(size=(4, 3, 5)))
    if sinks:
        opts["sinks"] = rng.normal(size=4)
    do = _f32(rng.normal(size=(2, 4, 3, 2)))
    dlse = _f32(rng.normal(size=(2, 4, 3)))
    return q, k, v, do, dlse, opts


CASES = [
    {},
    {"mask_kind": "bool"},
    {"mask_kind": "float"},
    {"causal": "top_left"},
    {"causal": "bottom_right", "sinks": True},
    {"softcap": 2.0, "scale": 0.8},
    {"mask_kind": "bool", "sinks": True, "softcap": 3.0},
]


@pytest.mark.parametrize("case", CASES, ids=[",".join(f"{a}={b}" for a, b in c.items()) or "plain" for c in CASES])
def test_gradients_match_finite_differences(case):
    q, k, v, do, dlse, opts = problem(3, **case)

    def loss():
        with np.errstate(invalid="ignore"):
            o, lse = smk.attention(q, k, v, return_lse=True, **opts)
        return float(np.sum(o * do) + np.sum(np.where(np.isfinite(lse), lse * dlse, 0.0)))

    dq, dk, dv, dsinks, dbias = vjp(q, k, v, do, dlse, **opts)
    checks = [(dq, q), (dk, k), (dv, v)]
    if opts.get("sinks") is not None:
        checks.append((dsinks, opts["sinks"]))
    if dbias is not None:
        mask = opts["mask"]
        reduced = dbias.sum(axis=0)  # the mask (Hq, L, S) broadcast over the batch
        finite = np.isfinite(mask)
        fd = numeric_grad(loss, mask)
        np.testing.assert_allclose(np.where(finite, reduced, 0), np.where(finite, fd, 0), **tol())
        assert np.all(reduced[~finite] == 0)
    for g, x in checks:
        assert g.shape == x.shape
        np.testing.assert_allclose(g, numeric_grad(loss, x), **tol())


def test_row_chunks_give_the_same_gradients():
    q, k, v, do, dlse, opts = problem(5, mask_kind="float", sinks=True)
    whole = vjp(q, k, v, do, dlse, rows_per_chunk=3, **opts)
    chunked = vjp(q, k, v, do, dlse, rows_per_chunk=2, **opts)
    # A row's own gradients (dq, dbias) do not depend on the other rows; the
    # sums over rows (dk, dv, dsinks) only group their terms differently.
    for i in (0, 4):
        np.testing.assert_array_equal(whole[i], chunked[i])
    for i in (1, 2, 3):
        np.testing.assert_allclose(whole[i], chunked[i], rtol=1e-13, atol=1e-15)


def test_empty_rows_and_masked_nan_give_finite_zero_gradients():
    q, k, v, do, dlse, _ = problem(7)
    mask = np.ones((3, 5), dtype=bool)
    mask[0] = False  # row 0 attends to nothing
    mask[:, 4] = False  # key 4 is masked everywhere: its NaN is never read
    k[:, :, 4] = np.nan
    v[:, :, 4] = np.inf
    dq, dk, dv, _, _ = vjp(q, k, v, do, dlse, mask=mask)
    assert np.all(np.isfinite(dq)) and np.all(np.isfinite(dk)) and np.all(np.isfinite(dv))
    assert np.all(dq[:, :, 0] == 0)
    assert np.all(dk[:, :, 4] == 0) and np.all(dv[:, :, 4] == 0)


def test_empty_row_with_a_sink_passes_dlse_to_the_sink():
    q, k, v, do, dlse, _ = problem(8)
    mask = np.zeros((3, 5), dtype=bool)
    sinks = np.zeros(4)
    dq, dk, dv, dsinks, _ = vjp(q, k, v, do, dlse, mask=mask, sinks=sinks)
    assert np.all(dq == 0) and np.all(dk == 0) and np.all(dv == 0)
    np.testing.assert_allclose(dsinks, dlse.sum(axis=(0, 2)), **tol())


def test_nan_in_an_attended_value_stays_in_its_rows():
    q, k, v, do, dlse, _ = problem(9)
    mask = np.ones((3, 5), dtype=bool)
    mask[0, 2] = False  # only row 0 skips key 2
    v[0, 0, 2, 0] = np.nan
    dq, _, _, _, _ = vjp(q, k, v, do, dlse, mask=mask)
    assert np.all(np.isfinite(dq[0, :2, 0])) and np.all(np.isnan(dq[0, :2, 1:]))
    assert np.all(np.isfinite(dq[1]))


def test_merge_vjp_matches_finite_differences():
    rng = np.random.default_rng(1)
    outs, lses = rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4)) * 3
    lses[1, 0] = -INF  # an empty state
    outs[1, 0] = np.nan  # never read: the merge and its gradients stay finite
    dout, dl = rng.normal(size=(4, 2)), rng.normal(size=4)
    for base, base2 in (("e", False), (2, True)):
        o, l = smk.merge_attention_states(outs, lses, base=base)

        def loss(base=base):
            oo, ll = smk.merge_attention_states(outs, lses, base=base)
            return float(np.sum(oo * dout) + np.sum(ll * dl))

        with np.errstate(invalid="ignore"):
            dm, da = att.merge_vjp(np, lses, outs, l, o, dout, dl, base2)
        assert np.all(np.isfinite(dm)) and np.all(np.isfinite(da))
        live = np.isfinite(lses)
        np.testing.assert_allclose(dm[live], numeric_grad(loss, lses)[live], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(da, numeric_grad(loss, outs), rtol=1e-6, atol=1e-8)
        assert np.all(dm[~live] == 0) and np.all(da[~live] == 0)


def test_rows_with_an_attended_inf_score_get_zero_gradients():
    # The output is the mean of the +inf keys' values whatever the finite scores.
    q, k, v, do, dlse, _ = problem(10)
    bias = np.zeros((3, 5))
    bias[1, 2] = INF
    dq, dk, dv, _, dbias = vjp(q, k, v, do, dlse, mask=bias)
    assert np.all(np.isfinite(dq)) and np.all(np.isfinite(dk)) and np.all(np.isfinite(dv)) and np.all(np.isfinite(dbias))
    assert np.all(dq[:, :, 1] == 0) and np.all(dbias[:, :, 1] == 0)
    assert np.all(dq[:, :, 0] != 0)
