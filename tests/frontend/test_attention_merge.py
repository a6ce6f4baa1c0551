"""softmaxkit.merge_attention_states: identity, bitwise commutativity,
associativity within the bound, NaN propagation, empty states never read,
k-way splits of the keys against the mpmath reference, FlashAttention-2's
+inf empty lse, base 2, and the errors."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import softmaxkit as smk
from tests import reference as ref
from tests.reference import FLOAT_DTYPES
from tests.reference import attention as aref

INF = np.inf
DTYPE_IDS = [d.name for d in FLOAT_DTYPES]


def _states(seed, k=3, rows=4, dv=3, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(k, rows, dv)).astype(dtype), (rng.normal(size=(k, rows)) * 5).astype(np.float32 if dtype != np.float64 else dtype)


def test_the_empty_state_is_the_identity():
    o, lse = _states(0, k=1)
    empty_o = np.full_like(o, np.nan)  # never read
    out, l = smk.merge_attention_states(np.concatenate([o, empty_o]), np.concatenate([lse, np.full_like(lse, -INF)]))
    np.testing.assert_array_equal(out, o[0])
    np.testing.assert_array_equal(l, lse[0])
    out, l = smk.merge_attention_states(np.concatenate([empty_o, o]), np.concatenate([np.full_like(lse, -INF), lse]))
    np.testing.assert_array_equal(out, o[0])
    np.testing.assert_array_equal(l, lse[0])


def test_only_empty_states_give_the_empty_state():
    """FlashInfer #4051, vLLM #28181: merging two empty states must not give NaN."""
    out, lse = smk.merge_attention_states(np.full((2, 3, 4), np.nan), np.full((2, 3), -INF))
    assert np.all(out == 0) and np.all(lse == -INF)
    out, lse = smk.merge_attention_states(np.zeros((0, 3, 4)), np.zeros((0, 3)))
    assert out.shape == (3, 4) and np.all(out == 0) and np.all(lse == -INF)


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), tie=st.booleans())
def test_merge_is_bitwise_commutative(seed, tie):
    o, lse = _states(seed, k=4)
    if tie:
        lse[1] = lse[0]
    first_o, first_l = smk.merge_attention_states(o[:2], lse[:2])
    swap_o, swap_l = smk.merge_attention_states(o[1::-1], lse[1::-1])
    np.testing.assert_array_equal(first_o, swap_o)
    np.testing.assert_array_equal(first_l, swap_l)
    if not tie:
        base = smk.merge_attention_states(o, lse)
        for perm in itertools.permutations(range(4)):
            got = smk.merge_attention_states(o[list(perm)], lse[list(perm)])
            np.testing.assert_array_equal(got[0], base[0])
            np.testing.assert_array_equal(got[1], base[1])


@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)], ids=["float32", "float64"])
@settings(max_examples=15)
@given(seed=st.integers(0, 2**32 - 1))
def test_merge_is_associative_within_the_bound(dtype, seed):
    o, lse = _states(seed, k=3, dtype=dtype)
    all3 = smk.merge_attention_states(o, lse)
    left = smk.merge_attention_states(np.stack([*smk.merge_attention_states(o[:2], lse[:2])[:1], o[2]]), np.stack([smk.merge_attention_states(o[:2], lse[:2])[1], lse[2]]))
    ab = smk.merge_attention_states(o[1:], lse[1:])
    right = smk.merge_attention_states(np.stack([o[0], ab[0]]), np.stack([lse[0], ab[1]]))
    u = aref.unit_roundoff(dtype)
    w = np.exp(lse.astype(np.float64) - lse.astype(np.float64).max(axis=0))
    bound = (w[..., None] * np.abs(o.astype(np.float64))).sum(axis=0) / w.sum(axis=0)[..., None]
    for got in (left, right):
        assert np.all(np.abs(got[0].astype(np.float64) - all3[0].astype(np.float64)) <= 8 * u * bound)
        # lse = M + log1p(s) near 0 cancels: measured in ULP of the largest |lse_i|.
        scale = np.maximum(np.abs(all3[1].astype(np.float64)), np.abs(lse.astype(np.float64)).max(axis=0))
        assert np.all(np.abs(got[1].astype(np.float64) - all3[1]) <= 8 * u * 2 * scale)


def test_nan_propagates_to_its_row_only():
    o, lse = _states(1)
    lse[1, 2] = np.nan
    o[2, 0, 1] = np.nan
    out, l = smk.merge_attention_states(o, lse)
    assert np.isnan(l[2]) and np.all(np.isnan(out[2]))
    assert np.isnan(out[0, 1]) and not np.isnan(out[0, 0]) and not np.isnan(l[0])
    assert np.all(np.isfinite(out[[1, 3]])) and np.all(np.isfinite(l[[0, 1, 3]]))


@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)], ids=["float32", "float64"])
@pytest.mark.parametrize("parts", [1, 2, 3, 7, "S"])
def test_a_k_way_split_of_the_keys_merges_to_the_unsplit_attention(dtype, parts):
    """Split-KV: merge of the parts' (output, lse), with empty parts (no key,
    or every key masked), within the mixed bound of the exact attention."""
    rng = np.random.default_rng(7)
    S = 20
    q = rng.normal(size=(1, 2, 3, 4)).astype(dtype)
    k = (rng.normal(size=(1, 2, S, 4)) * 2).astype(dtype)
    v = rng.normal(size=(1, 2, S, 3)).astype(dtype)
    mask = rng.random((3, S)) < 0.8
    mask[:, 5:9] = False  # parts that cover only these keys are empty
    cuts = {1: [0, S], 2: [0, 9, S], 3: [0, 5, 9, S], 7: [0, 0, 5, 9, 12, 12, 16, S], "S": list(range(S + 1))}[parts]
    outs, lses = [], []
    for a, b in zip(cuts[:-1], cuts[1:]):
        o, l = smk.attention(q, k[:, :, a:b], v[:, :, a:b], mask=mask[:, a:b], return_lse=True)
        outs.append(o)
        lses.append(l)
    merged, merged_lse = smk.merge_attention_states(outs, lses)
    _, exact_out, exact_lse, bound = aref.attention(q, k, v, mask=mask)
    assert merged.dtype == dtype
    # Each part within c u of its own normalised output, rounded, then merged: 4 u (float32), 8 u (float64).
    c = 8.0 if dtype == np.float64 else 4.0
    assert aref.mixed_error(merged, exact_out.ravel(), bound.ravel(), dtype) <= c
    assert ref.ulp_error(merged_lse, exact_lse.ravel(), merged_lse.dtype) <= 2 * ref.tolerance(merged_lse.dtype)


def test_flash_attention_2_plus_inf_empty_lse():
    o, lse = _states(2, k=2)
    lse[1, :2] = INF  # FlashAttention-2 writes +inf for a split with no key
    o[1, :2] = np.nan
    out, l = smk.merge_attention_states(o, lse, empty_lse="+inf")
    np.testing.assert_array_equal(out[:2], o[0, :2])
    np.testing.assert_array_equal(l[:2], lse[0, :2])
    out, l = smk.merge_attention_states(np.zeros((2, 1, 2)), np.full((2, 1), INF), empty_lse="+inf")
    assert np.all(out == 0) and l[0] == INF
    out, l = smk.merge_attention_states(np.ones((2, 1, 2)), np.array([[INF], [0.0]]))
    assert l[0] == INF and np.all(out == 1)  # without the option +inf is an infinite lse


def test_base_two_lse():
    """FlashInfer's log2 lse: the same merge, with lse / ln 2 in and out."""
    o, lse = _states(3, k=3)
    out_e, l_e = smk.merge_attention_states(o, lse.astype(np.float64))
    out_2, l_2 = smk.merge_attention_states(o, lse.astype(np.float64) / math.log(2), base=2)
    np.testing.assert_allclose(out_2, out_e, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(l_2 * math.log(2), l_e, rtol=1e-14)
    exact = [ref.mp.log(sum(ref.mp.power(2, ref.mp.mpf(float(x))) for x in col)) / ref.mp.log(2) for col in (lse.astype(np.float64) / math.log(2)).T]
    assert ref.ulp_error(l_2, exact, np.float64) <= 4


def test_states_along_another_axis():
    o, lse = _states(4, k=3)
    out, l = smk.merge_attention_states(np.moveaxis(o, 0, 1), lse.T, axis=1)
    base = smk.merge_attention_states(o, lse)
    np.testing.assert_array_equal(out, base[0])
    np.testing.assert_array_equal(l, base[1])


def test_sixteen_bit_partial_outputs():
    import ml_dtypes

    o, lse = _states(5, k=2)
    ob = o.astype(ml_dtypes.bfloat16)
    out, l = smk.merge_attention_states(ob, lse.astype(np.float32))
    assert out.dtype == ob.dtype and l.dtype == np.float32
    ref64 = smk.merge_attention_states(ob.astype(np.float64), lse.astype(np.float32).astype(np.float64))[0]
    np.testing.assert_array_equal(out, ref64.astype(ob.dtype))


@pytest.mark.parametrize(
    "args, kwargs, error, words",
    [
        ((np.zeros(3), np.zeros(())), {}, ValueError, ["outputs", "2 dimensions"]),
        ((np.zeros((2, 3, 4)), np.zeros((2, 4))), {}, ValueError, ["lses", "(2, 3)", "(2, 4)"]),
        ((np.zeros((2, 3, 4)), np.zeros((2, 3))), {"axis": 2}, ValueError, ["axis=2"]),
        ((np.zeros((2, 3, 4)), np.zeros((2, 3))), {"base": 10}, ValueError, ["base", "10", "'e' or 2"]),
        ((np.zeros((2, 3, 4)), np.zeros((2, 3))), {"empty_lse": "nan"}, ValueError, ["empty_lse", "'nan'", "'+inf'"]),
        ((np.zeros((2, 3, 4), dtype=bool), np.zeros((2, 3))), {}, TypeError, ["outputs", "bool"]),
    ],
)
def test_errors_name_the_argument(args, kwargs, error, words):
    with pytest.raises(error) as info:
        smk.merge_attention_states(*args, **kwargs)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
def test_output_dtypes(dtype):
    o, lse = _states(6, k=2)
    out, l = smk.merge_attention_states(o.astype(dtype), lse.astype(np.float32))
    assert out.dtype == dtype and l.dtype == np.float32
