"""The summary of one array's values that the diagnostic reports print.

``diagnose`` (its :class:`~softmaxkit.tools.report.LogitReport`) and
``watch`` (its :class:`~softmaxkit.tools.watch.TensorStats`) both report the
range of the finite values and the count of each non-finite kind; this is
where those figures are computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ArrayStats:
    """Range of the finite values and counts of the non-finite ones.

    Attributes
    ----------
    min, max, abs_max : float or None
        Smallest, largest and largest-magnitude finite value; None when no
        value is finite.
    nan_count, posinf_count, neginf_count : int
        Entries that are NaN, ``+inf`` and ``-inf``.
    """

    min: float | None
    max: float | None
    abs_max: float | None
    nan_count: int
    posinf_count: int
    neginf_count: int


def host_float64(x: Any) -> np.ndarray:
    """A float64 NumPy copy of a real array of any namespace (no copy for float64 NumPy input)."""
    if hasattr(x, "detach"):
        # torch bfloat16 has no NumPy counterpart; float64 holds every value.
        x = x.detach().cpu().double()
    return np.asarray(x, dtype=np.float64)


def array_stats(x: Any) -> ArrayStats:
    """The :class:`ArrayStats` of a real array of any namespace, computed in float64 on the host."""
    host = host_float64(x)
    finite = np.isfinite(host)
    if finite.all():
        # The usual case: no copy of the finite values, no count to take.
        values, nan, posinf, neginf = host, 0, 0, 0
    else:
        values = host[finite]
        nan = int(np.isnan(host).sum())
        posinf = int((host == math.inf).sum())
        neginf = int((host == -math.inf).sum())
    if values.size == 0:
        low = high = largest = None
    else:
        low, high = float(values.min()), float(values.max())
        # The largest magnitude is at one end of the range.
        largest = max(-low, high)
    return ArrayStats(min=low, max=high, abs_max=largest, nan_count=nan, posinf_count=posinf, neginf_count=neginf)
