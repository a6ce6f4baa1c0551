"""The one goodness-of-fit check of the samplers' tests: draws against exact probabilities."""

from __future__ import annotations

import numpy as np
from scipy import stats


def chi_square_p(draws, probs) -> float:
    """p-value of the draws (class indices) under ``probs``.

    Classes with probability 0 must not occur, and no draw may be -1 (the
    samplers' "nothing to draw", wrong for a row that has something).
    """
    probs = np.asarray(probs, dtype=np.float64)
    draws = np.asarray(draws).ravel()
    assert draws.min() >= 0, "drew -1 from a row with something to draw"
    counts = np.bincount(draws, minlength=len(probs))
    assert counts[probs == 0].sum() == 0, f"drew a class of probability 0: {counts}"
    live = probs > 0
    if live.sum() == 1:
        return 1.0
    expected = probs[live] * counts.sum()
    assert expected.min() >= 5, "test design: expected counts too small for chi-square"
    return stats.chisquare(counts[live], expected).pvalue
