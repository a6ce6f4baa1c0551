"""softmax(x, temperature=T) is softmax(x / T): exactly where x / T is exact, within the ULP contract otherwise."""

from __future__ import annotations

import mpmath
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import softmaxkit as smk

mpmath.mp.dps = 60


def logit_rows(dtype, bound):
    width = 32 if dtype == np.float32 else 64
    # No subnormals and nothing that a power-of-two division would push into
    # them: there x / T rounds and the identity is no longer exact.
    element = st.floats(-bound, bound, width=width, allow_nan=False, allow_subnormal=False).map(lambda v: 0.0 if abs(v) < 1e-30 else v)
    return arrays(dtype, st.tuples(st.integers(1, 3), st.integers(1, 12)), elements=element)


POWERS_OF_TWO = st.sampled_from([2.0**k for k in range(-6, 7)])
GENERAL_T = st.floats(0.05, 20.0, allow_nan=False).filter(lambda t: np.log2(t) % 1 != 0)


def ulp_distance(got, ref):
    """Distance in units of the output dtype's spacing at the reference."""
    ref_rounded = ref.astype(got.dtype)
    scale = np.spacing(np.abs(ref_rounded)).astype(np.float64)
    diff = np.abs(got.astype(np.float64) - ref)
    same_inf = np.isinf(ref) & (got == ref)
    return np.where(same_inf, 0.0, diff / scale)


@settings(max_examples=60, deadline=None)
@given(x=logit_rows(np.float32, 1e4), T=POWERS_OF_TWO)
def test_float32_power_of_two_is_exact(x, T):
    np.testing.assert_array_equal(smk.softmax(x, temperature=T), smk.softmax(x / np.float32(T)))
    np.testing.assert_array_equal(smk.log_softmax(x, temperature=T), smk.log_softmax(x / np.float32(T)))


@settings(max_examples=60, deadline=None)
@given(x=logit_rows(np.float64, 1e4), T=POWERS_OF_TWO)
def test_float64_power_of_two_is_exact(x, T):
    np.testing.assert_array_equal(smk.softmax(x, temperature=T), smk.softmax(x / T))
    np.testing.assert_array_equal(smk.log_softmax(x, temperature=T), smk.log_softmax(x / T))


@settings(max_examples=60, deadline=None)
@given(x=logit_rows(np.float32, 1e3), T=GENERAL_T)
def test_float32_general_temperature_within_contract(x, T):
    # The reference divides in float64, where x / T is exact to far below a
    # float32 ULP; dividing in float32 first would add |x / T| ULPs of error
    # that temperature= does not have.
    for fn in (smk.softmax, smk.log_softmax):
        got = fn(x, temperature=T)
        assert got.dtype == np.float32
        ref = fn(x.astype(np.float64) / T)
        assert ulp_distance(got, ref).max() <= 2


def mp_log_softmax(row, T):
    """``(z_i - m) - log1p(s)`` with the max term left out of ``s``: the digits
    needed do not grow with the margin, unlike ``log(1 + s)``."""
    z = [mpmath.mpf(float(v)) / mpmath.mpf(T) for v in row]
    k = max(range(len(z)), key=z.__getitem__)
    s = mpmath.fsum(mpmath.exp(v - z[k]) for i, v in enumerate(z) if i != k)
    return [v - z[k] - mpmath.log1p(s) for v in z]


@settings(max_examples=30, deadline=None)
@given(x=logit_rows(np.float64, 700.0), T=GENERAL_T)
def test_float64_general_temperature_against_mpmath(x, T):
    ref_log = np.array([[float(v) for v in mp_log_softmax(row, T)] for row in x])
    ref = np.array([[float(mpmath.exp(v)) for v in mp_log_softmax(row, T)] for row in x])
    assert ulp_distance(smk.softmax(x, temperature=T), ref).max() <= 4
    assert ulp_distance(smk.log_softmax(x, temperature=T), ref_log).max() <= 4


def test_temperature_on_probabilities_is_not_temperature_on_logits():
    # docs/temperature.md: dividing probabilities by T changes nothing after
    # renormalising; the tempered distribution is p**(1/T) renormalised.
    logits = np.array([2.0, 1.0, 0.0])
    p = smk.softmax(logits)
    tempered = smk.softmax(logits, temperature=2.0)
    np.testing.assert_allclose((p / 2.0) / (p / 2.0).sum(), p)
    np.testing.assert_allclose(tempered, np.sqrt(p) / np.sqrt(p).sum(), rtol=1e-15)
    np.testing.assert_allclose(smk.softmax(np.log(p), temperature=2.0), tempered, rtol=1e-15)
    np.testing.assert_allclose(tempered, [0.50648039, 0.30719589, 0.18632372], rtol=1e-7)
