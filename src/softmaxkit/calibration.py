"""Calibration: temperature scaling, expected calibration error and reliability diagrams (see :mod:`softmaxkit.tools.calibration`)."""

from softmaxkit.tools.calibration import (
    TemperatureFit,
    expected_calibration_error,
    fit_temperature,
    reliability_diagram,
)

__all__ = [
    "TemperatureFit",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_diagram",
]
