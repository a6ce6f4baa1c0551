"""Regression: float64 rows whose other terms all lie below the normal range.

Each exp(x_i - a) was rounded to a subnormal on its own, so their sum, and
with it log_softmax at the maximum (-log1p(s)), logsumexp near 0 and the
cross-entropy of the maximum, was off by up to half a subnormal spacing per
term: 7 ULP (native) and 15 ULP (generic) for 22 terms at temperature 0.7.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np

import softmaxkit as smk
from tests.reference.ulps import tolerance, ulp_error

mp.mp.dps = 60


def test_log_softmax_at_the_maximum_of_a_row_of_subnormal_terms(numeric_path):
    x = np.array([[499.0] + [0.0] * 22])
    for temperature in (0.7, 0.6):
        exact = -mp.log1p(22 * mp.exp(-mp.mpf(499) / mp.mpf(temperature)))
        got = smk.log_softmax(x, temperature=temperature)[0, 0]
        assert ulp_error(got, [exact], np.float64) <= tolerance(np.float64)


def test_logsumexp_and_cross_entropy_of_many_subnormal_terms(numeric_path):
    x = np.array([[0.0] + [-712.0] * 1000 + [-713.5] * 700])
    exact = mp.log1p(1000 * mp.exp(-712) + 700 * mp.exp(mp.mpf(-713.5)))
    assert ulp_error(smk.logsumexp(x), [exact], np.float64) <= tolerance(np.float64)
    loss = smk.cross_entropy(x, np.array([0]), reduction="none")
    assert ulp_error(loss, [exact], np.float64) <= tolerance(np.float64)
