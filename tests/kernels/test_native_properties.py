"""Property tests: the native path agrees with the generic path on arbitrary rows."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmaxkit as smk
from softmaxkit import kernels as _native

from tests.reference import ulp_distance

ROWS = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64]),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=40),
    elements=st.floats(-1e4, 1e4, allow_nan=False, width=32) | st.sampled_from([-np.inf, np.inf, np.nan, 0.0]),
)
TOL = {np.dtype(np.float32): 1.0, np.dtype(np.float64): 4.0}

pytestmark = pytest.mark.skipif(not _native.active(), reason="native kernels not built or disabled")


@settings(max_examples=60, deadline=None)
@given(x=ROWS, temperature=st.sampled_from([1.0, 0.5, 7.0]))
def test_softmax_family_agrees_with_generic(x, temperature):
    for fn in (smk.softmax, smk.log_softmax):
        got = fn(x, temperature=temperature)
        with _native.disabled():
            want = fn(x, temperature=temperature)
        assert got.dtype == want.dtype
        assert ulp_distance(got, want, x.dtype) <= TOL[x.dtype]
    got = smk.logsumexp(x)
    with _native.disabled():
        want = smk.logsumexp(x)
    assert ulp_distance(got, want, x.dtype) <= TOL[x.dtype]


@settings(max_examples=40, deadline=None)
@given(x=ROWS, data=st.data())
def test_cross_entropy_agrees_with_generic(x, data):
    t = data.draw(hnp.arrays(np.int64, x.shape[:-1], elements=st.integers(0, x.shape[-1] - 1)))
    got = smk.cross_entropy(x, t, return_grad=True, reduction="sum")
    with _native.disabled():
        want = smk.cross_entropy(x, t, return_grad=True, reduction="sum")
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        assert ulp_distance(g, w, x.dtype) <= TOL[x.dtype]
