"""Conformal prediction sets: LAC, APS and RAPS with guaranteed coverage (see :mod:`softmaxkit.tools.conformal`)."""

from softmaxkit.tools.conformal import (
    SCORES,
    ConformalCalibration,
    calibrate,
    coverage,
    set_sizes,
)

__all__ = [
    "SCORES",
    "ConformalCalibration",
    "calibrate",
    "coverage",
    "set_sizes",
]
