import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

settings.register_profile(
    "softmaxkit",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("softmaxkit")

try:
    import ml_dtypes

    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes comes with the test extra
    BFLOAT16 = None

FLOAT_DTYPES = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)] + ([BFLOAT16] if BFLOAT16 is not None else [])


@pytest.fixture(params=FLOAT_DTYPES, ids=lambda d: d.name)
def dtype(request):
    return request.param

settings.register_profile("thorough", parent=settings.get_profile("softmaxkit"), max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "softmaxkit"))
