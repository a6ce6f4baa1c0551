"""softmax(x, temperature=T) is softmax(x / T): exactly where x / T is exact, within the ULP contract otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import softmaxkit as smk

from tests import reference as ref


def logit_rows(dtype, bound):
    width = 32 if dtype == np.float32 else 64
    # No subnormals and nothing that a power-of-two division would push into
    # them: there x / T rounds and the identity is no longer exact.
    element = st.floats(-bound, bound, width=width, allow_nan=False, allow_subnormal=False).map(lambda v: 0.0 if abs(v) < 1e-30 else v)
    return arrays(dtype, st.tuples(st.integers(1, 3), st.integers(1, 12)), elements=element)


POWERS_OF_TWO = st.sampled_from([2.0**k for k in range(-6, 7)])
GENERAL_T = st.floats(0.05, 20.0, allow_nan=False).filter(lambda t: np.log2(t) % 1 != 0)


@pytest.mark.usefixtures("numeric_path")
@settings(max_examples=60, deadline=None)
@given(x=logit_rows(np.float32, 1e4), T=POWERS_OF_TWO)
def test_float32_power_of_two_is_exact(x, T):
    np.testing.assert_array_equal(smk.softmax(x, temperature=T), smk.softmax(x / np.float32(T)))
    np.testing.assert_array_equal(smk.log_softmax(x, temperature=T), smk.log_softmax(x / np.float32(T)))


@pytest.mark.usefixtures("numeric_path")
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
        assert ref.ulp_error(got, fn(x.astype(np.float64) / T), np.float32) <= 2


@settings(max_examples=30, deadline=None)
@given(x=logit_rows(np.float64, 700.0), T=GENERAL_T)
def test_float64_general_temperature_against_mpmath(x, T):
    assert ref.ulp_error(smk.softmax(x, temperature=T), ref.rows(ref.softmax, x, T), np.float64) <= 4
    assert ref.ulp_error(smk.log_softmax(x, temperature=T), ref.rows(ref.log_softmax, x, T), np.float64) <= 4


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
