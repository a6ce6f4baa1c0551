"""Temperatures across the whole float64 range, from the smallest subnormal to
the largest finite number: finite rows never give NaN, and the results match
an exact (mpmath) reference within the ULP contract on every path."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest

import softmaxkit as smk

from tests import reference as ref

DBL_MAX = float(np.finfo(np.float64).max)
TEMPERATURES = [5e-324, 1e-310, 1e-300, 1e-200, 3e-20, 0.3, 1.0, 7.0, 1e10, 1e200, 1e300, 1e301, 1e305, DBL_MAX]
ROWS = [
    [0.0, 1.0],
    [0.0, -5.0],
    [3.0, -2.0, 1.0, 0.5],
    [1e300, -1e300, 0.0],
    [1e-300, 0.0, -1e-300, 5e-324],
    [DBL_MAX, 1e308, 0.0, -1e3],
    [-700.0, -1400.0, 30.0, 29.999999999999996],
    [DBL_MAX, -DBL_MAX, 0.0],  # x - a overflows; (x - a) / T does not for T > 2
    [-1e308, 1.5e308, 5e-324],
]


def _rounded(exact):
    """The reference as float64 would hold it: beyond the range it is infinite."""
    return [mp.mpf(math.copysign(math.inf, e)) if abs(e) > DBL_MAX else e for e in exact]


def _check(got, exact):
    got = np.asarray(got, dtype=np.float64).ravel()
    assert not np.isnan(got).any(), got
    assert ref.ulp_error(got, _rounded(exact), np.float64) <= ref.tolerance(np.float64)


# What broke: on the generic float64 path Dekker's TwoProduct split x/T or T
# with Veltkamp's constant, which overflowed to inf - inf = NaN for |x/T| or T
# above about 1.3e300 (softmax(x, axis=0, temperature=1e301) gave NaN).
@pytest.mark.parametrize("T", TEMPERATURES, ids=lambda t: f"T={t:g}")
def test_extreme_temperature_matches_mpmath(numeric_path, T):
    for row in ROWS:
        x = np.array([row])
        xs = ref.to_mp(row)
        T_mp = mp.mpf(T)
        _check(smk.log_softmax(x, temperature=T), ref.log_softmax(xs, T_mp))
        _check(smk.softmax(x, temperature=T), ref.softmax(xs, T_mp))


# What broke: the generic float64 path formed x - a (here -inf) before dividing
# by T, so a row spanning more than DBL_MAX gave -inf log-probabilities where
# the exact ones, (x - a) / T, are finite.
@pytest.mark.parametrize("T", [1.5, 3.0, 1e10])
def test_shift_beyond_dbl_max_divided_by_temperature(numeric_path, T):
    x = np.array([[DBL_MAX, -1e300, -DBL_MAX]])
    exact = ref.log_softmax(ref.to_mp(x[0]), mp.mpf(T))
    _check(smk.log_softmax(x, temperature=T), exact)


# What broke: the same overflow on the paths every caller reaches whatever the
# native kernels do (a column axis of a Fortran-ordered array, where=, sample).
def test_extreme_temperature_column_axis_and_where():
    x = np.asfortranarray([[0.0, 1.0], [0.0, 1.0]])
    np.testing.assert_array_equal(smk.softmax(x, axis=0, temperature=1e301), np.full((2, 2), 0.5))
    got = smk.softmax(np.array([0.0, -5.0]), temperature=1e-300, where=np.array([True, True]))
    np.testing.assert_array_equal(got, [1.0, 0.0])


# What broke: the NaN probabilities made sample return class 0 for every draw.
def test_extreme_temperature_sample_follows_the_distribution():
    x = np.array([0.0, 5.0, 1.0])
    assert np.all(smk.sample(x, temperature=1e-300, num_samples=200, rng=0) == 1)
    counts = np.bincount(smk.sample(x, temperature=1e301, num_samples=3000, rng=0), minlength=3)
    assert counts.min() > 800, counts
