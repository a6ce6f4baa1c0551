"""softmaxkit.attention: the accuracy contract against mpmath, the edge
table row by row, invariances, the low-precision P option and the errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import softmaxkit as smk
from softmaxkit import kernels
from tests import reference as ref
from tests.reference import FLOAT_DTYPES
from tests.reference import attention as aref

INF = np.inf
DTYPE_IDS = [d.name for d in FLOAT_DTYPES]
# The contract: lse and P in ULP (the softmax family's), output in units of u * sum_j P_ij |v_j|.
OUT_C = {"float16": 2.0, "bfloat16": 2.0, "float32": 2.0, "float64": 8.0}


@pytest.fixture(autouse=True)
def _both_paths(numeric_path):
    """Every test runs through the native kernel (float32 and bfloat16 NumPy
    inputs) and through the generic formulas."""
    return numeric_path


def _lse_dtype(dtype):
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def check(q, k, v, dtype, **opts):
    """Run softmaxkit.attention and assert the contract against mpmath; returns (lse ULP, output c)."""
    q, k, v = (np.asarray(a).astype(dtype) for a in (q, k, v))
    out, lse = smk.attention(q, k, v, return_lse=True, **opts)
    assert out.dtype == dtype and lse.dtype == _lse_dtype(dtype)
    _, exact_out, exact_lse, bound = aref.attention(q, k, v, **opts)
    lse_err = ref.ulp_error(lse, exact_lse.ravel(), lse.dtype)
    out_err = aref.mixed_error(out, exact_out.ravel(), bound.ravel(), dtype)
    if lse_err > ref.tolerance(lse.dtype) and dtype == np.float64:
        # The softmax family's one exception: a float64 lse near 0 through
        # cancellation (m + log1p(s) with m < 0) is within 4 ULP of the largest |score|.
        scores = np.abs(np.asarray(aref.attention_scores(q, k, **opts), dtype=np.float64))
        big = np.maximum(np.abs(lse), np.max(np.where(np.isfinite(scores), scores, 0), axis=-1, initial=0))
        lse_err = max(float(abs(ref.mp.mpf(float(a)) - e) / (ref.ulp(b, np.float64))) for a, e, b in zip(lse.ravel(), exact_lse.ravel(), big.ravel()) if ref.mp.isfinite(e))
    lse_tol, out_tol = ref.tolerance(lse.dtype), OUT_C[np.dtype(dtype).name]
    if dtype == np.float64 and opts.get("softcap") is not None:
        # float64 scores carry tanh's own rounding, about cap * u: the
        # documented allowance of cap ULP on the lse and cap / 2 on c.
        lse_tol, out_tol = lse_tol + opts["softcap"], out_tol + opts["softcap"] / 2
    assert lse_err <= lse_tol, lse_err
    assert out_err <= out_tol, out_err
    return lse_err, out_err


@st.composite
def problems(draw):
    """Small attention problems with every option drawn."""
    hkv = draw(st.integers(1, 2))
    group = draw(st.integers(1, 2))
    L, S = draw(st.integers(1, 3)), draw(st.integers(1, 9))
    D, dv = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    spread = draw(st.sampled_from([1.0, 4.0, 30.0]))
    q = rng.normal(size=(1, hkv * group, L, D)) * spread
    k = rng.normal(size=(1, hkv, S, D)) * spread
    v = rng.normal(size=(1, hkv, S, dv))
    opts = {}
    kind = draw(st.sampled_from([None, "bool", "float"]))
    if kind == "bool":
        opts["mask"] = rng.random((L, S)) < 0.7
    elif kind == "float":
        opts["mask"] = np.where(rng.random((L, S)) < 0.3, -INF, rng.normal(size=(L, S)) * 3)
    opts["causal"] = draw(st.sampled_from([None, "top_left", "bottom_right"]))
    opts["scale"] = draw(st.sampled_from([None, 0.01, 2.0]))
    opts["softcap"] = draw(st.sampled_from([None, None, 5.0]))
    if draw(st.booleans()):
        opts["sinks"] = rng.normal(size=hkv * group) * 3
    return q, k, v, opts


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@settings(max_examples=12)
@given(problem=problems())
def test_contract_on_random_problems(dtype, problem):
    q, k, v, opts = problem
    check(q, k, v, dtype, **opts)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
def test_probabilities_of_confident_rows(dtype):
    """P through V = I (each output entry is one weight): within the softmax
    ULP contract of the exact scores, at margins up to 90 (700 in float64)."""
    top = 700.0 if dtype == np.float64 else 90.0
    S = 6
    k = np.zeros((1, 1, S, 1))
    k[0, 0, :, 0] = [1.0, 0.0, -0.5, 0.25, -1.0, 0.5]
    q = np.array([[[[0.0], [5.0], [top / 2], [top]]]])
    v = np.eye(S)[None, None]
    q, k, v = (a.astype(dtype) for a in (q, k, v))
    out, lse = smk.attention(q, k, v, scale=1.0, return_lse=True)
    P, _, exact_lse, _ = aref.attention(q, k, v, scale=1.0)
    assert ref.ulp_error(out, P.ravel(), dtype) <= ref.tolerance(dtype)
    assert ref.ulp_error(lse, exact_lse.ravel(), lse.dtype) <= ref.tolerance(lse.dtype)


@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)], ids=["float32", "float64"])
def test_large_key_count(dtype):
    """S = 4096 (32 blocks), one row per head, a sink, GQA."""
    rng = np.random.default_rng(1)
    q = rng.normal(size=(1, 2, 1, 8)) * 2
    k = rng.normal(size=(1, 1, 4096, 8)) * 2
    v = rng.normal(size=(1, 1, 4096, 2))
    check(q, k, v, dtype, sinks=np.array([1.0, 4.0]))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("scale", [1e-6, 300.0])
def test_extreme_scales(dtype, scale):
    rng = np.random.default_rng(2)
    q, k, v = rng.normal(size=(1, 1, 2, 4)), rng.normal(size=(1, 1, 7, 4)), rng.normal(size=(1, 1, 7, 2))
    check(q, k, v, dtype, scale=scale)
    check(q, k, v, dtype, scale=scale, softcap=30.0)


# --- the edge table -------------------------------------------------------------


@pytest.fixture(params=FLOAT_DTYPES, ids=DTYPE_IDS)
def dt(request):
    return request.param


def _qkv(dt, L=2, S=4, D=3, dv=2, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(1, 1, L, D)).astype(dt), rng.normal(size=(1, 1, S, D)).astype(dt), rng.normal(size=(1, 1, S, dv)).astype(dt))


def test_empty_row_gives_zero_and_minus_inf(dt):
    q, k, v = _qkv(dt)
    mask = np.array([[True, False, True, False], [False, False, False, False]])
    out, lse = smk.attention(q, k, v, mask=mask, return_lse=True)
    assert np.all(out[0, 0, 1] == 0) and lse[0, 0, 1] == -INF
    assert np.all(np.isfinite(out[0, 0, 0].astype(np.float64))) and np.isfinite(lse[0, 0, 0])


def test_empty_row_with_a_sink_gives_zero_and_the_sink(dt):
    q, k, v = _qkv(dt)
    out, lse = smk.attention(q, k, v, mask=np.zeros((2, 4), dtype=bool), sinks=np.array([1.5]), return_lse=True)
    assert np.all(out == 0) and np.all(lse == np.float32(1.5))


def test_zero_length_keys_and_queries(dt):
    q, k, v = _qkv(dt, S=0)
    out, lse = smk.attention(q, k, v, return_lse=True)
    assert out.shape == (1, 1, 2, 2) and np.all(out == 0) and np.all(lse == -INF)
    q, k, v = _qkv(dt, L=0)
    out, lse = smk.attention(q, k, v, return_lse=True)
    assert out.shape == (1, 1, 0, 2) and lse.shape == (1, 1, 0)


def test_bottom_right_causal_with_more_queries_than_keys_empties_the_first_rows(dt):
    q, k, v = _qkv(dt, L=5, S=3)
    out, lse = smk.attention(q, k, v, causal="bottom_right", return_lse=True)
    assert np.all(out[0, 0, :2] == 0) and np.all(lse[0, 0, :2] == -INF)
    assert np.all(np.isfinite(lse[0, 0, 2:]))
    top = smk.attention(q, k, v, causal="top_left")
    np.testing.assert_array_equal(top[0, 0, 0], v[0, 0, 0])  # row 0 sees key 0 only


def test_masked_keys_and_values_are_never_read(dt):
    """pytorch #101967: NaN or inf in masked-out keys, values or scores must not leak."""
    q, k, v = _qkv(dt)
    mask = np.array([True, False, True, False])
    clean = smk.attention(q, k, v, mask=mask)
    k2, v2 = k.copy(), v.copy()
    k2[0, 0, 1] = np.nan
    v2[0, 0, 1] = np.nan
    k2[0, 0, 3] = INF
    v2[0, 0, 3] = -INF
    np.testing.assert_array_equal(smk.attention(q, k2, v2, mask=mask), clean)
    bias = np.where(mask, 0.0, -INF)
    np.testing.assert_array_equal(smk.attention(q, k2, v2, mask=bias), smk.attention(q, k, v, mask=bias))


def test_finite_large_negative_mask_is_an_ordinary_score(dt):
    """A finite additive mask never masks.  A row of finfo(float32).min swamps
    the scores in the float64 working precision: uniform weights, the mean
    of V, as in torch.  A boolean mask is the way to mask."""
    q, k, v = _qkv(dt)
    low = np.full((2, 4), np.finfo(np.float32).min)
    out = smk.attention(q, k, v, mask=low).astype(np.float64)
    plain = smk.attention(q, k, v).astype(np.float64)
    mean = (v[0, 0].astype(np.float64).mean(axis=0)).astype(dt).astype(np.float64)
    np.testing.assert_allclose(out[0, 0], np.broadcast_to(mean, (2, 2)), rtol=4 * float(np.finfo(np.float64).eps), atol=0)
    assert not np.allclose(plain[0, 0], mean)


def test_scores_far_below_zero_stay_exact():
    """FlashInfer #4267: a finite sentinel zeroed rows whose logits were all below -5e4."""
    q = np.array([[[[1.0]]]])
    k = np.array([[[[-2.45e5], [-2.45e5 - 1.0]]]])
    v = np.array([[[[1.0], [0.0]]]])
    out, lse = smk.attention(q, k, v, scale=1.0, return_lse=True)
    assert np.isclose(out[0, 0, 0, 0], 1.0 / (1.0 + np.exp(-1.0)), rtol=1e-15)
    assert np.isclose(lse[0, 0, 0], -2.45e5 + np.log1p(np.exp(-1.0)), rtol=1e-15)


def test_nan_in_an_attended_score_or_value_makes_that_row_nan_only(dt):
    q, k, v = _qkv(dt, L=3)
    q2 = q.copy()
    q2[0, 0, 1, 0] = np.nan
    out, lse = smk.attention(q2, k, v, return_lse=True)
    assert np.all(np.isnan(out[0, 0, 1].astype(np.float64))) and np.isnan(lse[0, 0, 1])
    np.testing.assert_array_equal(np.delete(out, 1, axis=2), np.delete(smk.attention(q, k, v), 1, axis=2))
    v2 = v.copy()
    v2[0, 0, 2, 0] = np.nan
    mask = np.array([[True, True, False, True], [True, True, True, True], [True, True, False, False]])
    out = smk.attention(q, k, v2, mask=mask).astype(np.float64)
    assert np.isnan(out[0, 0, 1, 0]) and not np.isnan(out[0, 0, 1, 1])
    assert np.all(np.isfinite(out[0, 0, [0, 2]]))


def test_plus_inf_scores_share_the_mass(dt):
    q, k, v = _qkv(dt)
    bias = np.array([[INF, 0.0, INF, -INF], [0.0, 0.0, 0.0, 0.0]])
    out, lse = smk.attention(q, k, v, mask=bias, return_lse=True)
    expect = (v[0, 0, 0].astype(np.float64) + v[0, 0, 2].astype(np.float64)) / 2
    np.testing.assert_array_equal(out[0, 0, 0], expect.astype(dt))
    assert lse[0, 0, 0] == INF and np.isfinite(lse[0, 0, 1])


def test_plus_inf_across_blocks():
    """A +inf score in a later block of keys takes over the earlier blocks' state."""
    S = 300
    q, k, v = np.ones((1, 1, 1, 1)), np.ones((1, 1, S, 1)), np.arange(S, dtype=float).reshape(1, 1, S, 1)
    bias = np.zeros(S)
    bias[[5, 250]] = INF
    out, lse = smk.attention(q, k, v, mask=bias, return_lse=True)
    assert out[0, 0, 0, 0] == (5 + 250) / 2 and lse[0, 0, 0] == INF


# --- invariances ----------------------------------------------------------------


def test_a_row_does_not_depend_on_the_batch_or_other_rows():
    rng = np.random.default_rng(3)
    q, k, v = rng.normal(size=(3, 2, 40, 8)), rng.normal(size=(3, 2, 300, 8)), rng.normal(size=(3, 2, 300, 4))
    full, lse = smk.attention(q, k, v, causal="bottom_right", return_lse=True)
    # A lone row's causal offset differs; a boolean mask gives it the same keys.
    keep = np.arange(300) <= 17 + 300 - 40
    alone, lse1 = smk.attention(q[1:2, :, 17:18], k[1:2], v[1:2], mask=keep, return_lse=True)
    np.testing.assert_array_equal(alone[0, :, 0], full[1, :, 17])
    np.testing.assert_array_equal(lse1[0, :, 0], lse[1, :, 17])
    q2 = q.copy()
    q2[0] = np.nan
    np.testing.assert_array_equal(smk.attention(q2, k, v, causal="bottom_right")[1:], full[1:])


def test_grouped_query_attention_equals_repeated_keys():
    rng = np.random.default_rng(4)
    q, k, v = rng.normal(size=(2, 6, 3, 4)), rng.normal(size=(2, 2, 5, 4)), rng.normal(size=(2, 2, 5, 3))
    sinks = rng.normal(size=6)
    np.testing.assert_array_equal(
        smk.attention(q, k, v, sinks=sinks), smk.attention(q, np.repeat(k, 3, axis=1), np.repeat(v, 3, axis=1), sinks=sinks)
    )


def test_boolean_mask_equals_slicing_the_keys():
    rng = np.random.default_rng(5)
    q, k, v = rng.normal(size=(1, 1, 2, 4)), rng.normal(size=(1, 1, 6, 4)), rng.normal(size=(1, 1, 6, 3))
    keep = np.array([True, False, True, True, False, True])
    np.testing.assert_allclose(smk.attention(q, k, v, mask=keep), smk.attention(q, k[:, :, keep], v[:, :, keep]), rtol=1e-15, atol=0)


def test_inputs_are_not_written_and_results_match_the_naive_formula():
    rng = np.random.default_rng(6)
    q, k, v = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 6, 5)), rng.normal(size=(2, 3, 6, 2))
    copies = [a.copy() for a in (q, k, v)]
    out = smk.attention(q, k, v, causal="top_left")
    for a, c in zip((q, k, v), copies):
        np.testing.assert_array_equal(a, c)
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(5) + np.where(np.tril(np.ones((4, 6), dtype=bool)), 0.0, -INF)
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(out, (p / p.sum(-1, keepdims=True)) @ v, rtol=1e-12, atol=1e-14)


# --- low-precision P ------------------------------------------------------------


def test_p_dtype_rounds_the_weights_before_pv_but_not_the_normaliser():
    q = np.zeros((1, 1, 1, 1))
    k = np.zeros((1, 1, 3, 1))
    v = np.eye(3)[None, None]
    bias = np.array([0.0, -0.1, -0.2])
    out = smk.attention(q, k, v, mask=bias, p_dtype=np.float16)[0, 0, 0]
    e = np.exp(bias)
    np.testing.assert_array_equal(out, e.astype(np.float16).astype(np.float64) / e.sum())
    assert out.sum() != 1.0
    exact = smk.attention(q, k, v, mask=bias)[0, 0, 0]
    np.testing.assert_allclose(exact, e / e.sum(), rtol=1e-15)


# --- errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"causal": True}, ValueError, ["causal", "True", "top_left"]),
        ({"causal": "lower_right"}, ValueError, ["causal", "lower_right"]),
        ({"scale": 0.0}, ValueError, ["scale", "0.0", "> 0"]),
        ({"scale": np.inf}, ValueError, ["scale", "inf"]),
        ({"softcap": -1.0}, ValueError, ["softcap", "-1.0"]),
        ({"sinks": np.zeros(3)}, ValueError, ["sinks", "(2,)", "(3,)"]),
        ({"mask": np.zeros((2, 5), dtype=np.int64)}, TypeError, ["mask", "int64", "boolean"]),
        ({"mask": np.zeros((3, 5), dtype=bool)}, ValueError, ["mask", "(3, 5)", "(1, 2, 2, 5)"]),
        ({"return_lse": 1}, TypeError, ["return_lse"]),
        ({"p_dtype": np.int8}, TypeError, ["p_dtype", "int8"]),
    ],
)
def test_option_errors_name_the_argument(kwargs, error, words):
    q, k, v = np.zeros((1, 2, 2, 3)), np.zeros((1, 1, 5, 3)), np.zeros((1, 1, 5, 4))
    with pytest.raises(error) as info:
        smk.attention(q, k, v, **kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize(
    "shapes, words",
    [
        (((2, 3), (1, 5, 3), (1, 5, 4)), ["query", "3 dimensions", "(2, 3)"]),
        (((1, 3, 2, 3), (1, 2, 5, 3), (1, 2, 5, 4)), ["Hq=3", "Hkv=2", "multiple"]),
        (((1, 2, 2, 3), (1, 1, 5, 4), (1, 1, 5, 4)), ["key", "D", "3"]),
        (((1, 2, 2, 3), (1, 1, 5, 3), (1, 1, 6, 4)), ["value", "(1, 1, 6, 4)"]),
        (((2, 2, 2, 3), (1, 1, 5, 3), (1, 1, 5, 4)), ["key", "leading", "(2,)"]),
    ],
)
def test_shape_errors_name_the_argument(shapes, words):
    q, k, v = (np.zeros(s) for s in shapes)
    with pytest.raises(ValueError) as info:
        smk.attention(q, k, v)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_array_api_arrays_give_the_numpy_results_bit_for_bit():
    """The generic formulas give the same bits on any array library."""
    xs = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(8)
    for dt in (np.float32, np.float64):
        q, k, v = rng.normal(size=(1, 2, 3, 4)).astype(dt), rng.normal(size=(1, 1, 5, 4)).astype(dt), rng.normal(size=(1, 1, 5, 2)).astype(dt)
        mask, sinks = rng.random((3, 5)) < 0.7, np.array([0.0, 1.0])
        opts = {"causal": "top_left", "return_lse": True, "softcap": 3.0}
        with kernels.disabled():
            out, lse = smk.attention(q, k, v, mask=mask, sinks=sinks, **opts)
        got, got_lse = smk.attention(xs.asarray(q), xs.asarray(k), xs.asarray(v), mask=xs.asarray(mask), sinks=xs.asarray(sinks), **opts)
        assert type(got).__module__.startswith("array_api_strict")
        np.testing.assert_array_equal(np.asarray(got), out)
        np.testing.assert_array_equal(np.asarray(got_lse), lse)
        merged = smk.merge_attention_states(xs.asarray(out[0]), xs.asarray(lse[0]))
        np.testing.assert_array_equal(np.asarray(merged[0]), smk.merge_attention_states(out[0], lse[0])[0])
