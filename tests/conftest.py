import os
import sys

from hypothesis import HealthCheck, settings

# The mpmath references in reference.py are imported by the test modules.
sys.path.insert(0, os.path.dirname(__file__))

settings.register_profile(
    "softmaxkit",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", parent=settings.get_profile("softmaxkit"), max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "softmaxkit"))
