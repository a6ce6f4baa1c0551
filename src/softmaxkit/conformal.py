"""Conformal prediction sets: LAC, APS and RAPS with guaranteed coverage (see :mod:`softmaxkit.tools.conformal`)."""

from softmaxkit.tools.conformal import *  # noqa: F403
from softmaxkit.tools.conformal import __all__  # noqa: F401
