"""Exact references in mpmath, and ULP measurement.

``exact`` holds the mpmath formulas (60 digits, in the log1p form whose
working precision does not grow with the logit margin); ``ulp`` measures
results against them, or two results against each other, in ULPs of a
float format.  Nothing here calls softmaxkit or another array library's
softmax.
"""

import mpmath as mp

from .exact import INF, cross_entropy, hard_coef, log_softmax, lse, rows, sigmoid, softmax, softplus, to_mp
from .ulps import BFLOAT16, FLOAT_DTYPES, TOL, difference_tolerance, tolerance, ulp, ulp_distance, ulp_error

__all__ = [
    "BFLOAT16",
    "FLOAT_DTYPES",
    "INF",
    "TOL",
    "cross_entropy",
    "difference_tolerance",
    "hard_coef",
    "log_softmax",
    "lse",
    "mp",
    "rows",
    "sigmoid",
    "softmax",
    "softplus",
    "to_mp",
    "tolerance",
    "ulp",
    "ulp_distance",
    "ulp_error",
]
