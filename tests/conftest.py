import importlib.util
import os

import pytest
from hypothesis import HealthCheck, settings

# Without a GPU the Triton kernels run in Triton's interpreter.  The variable
# is read when a kernel module is first imported, and tests/test_docstrings.py
# imports every module at collection, so it is set here, before any of them.
if "TRITON_INTERPRET" not in os.environ and importlib.util.find_spec("triton") and importlib.util.find_spec("torch"):
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

settings.register_profile(
    "softmaxkit",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", parent=settings.get_profile("softmaxkit"), max_examples=1000)
# CI replays the same examples on every run, so its verdict is about the
# change; the random profiles above are where new counterexamples are found.
settings.register_profile("ci", parent=settings.get_profile("softmaxkit"), derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "softmaxkit"))


@pytest.fixture(scope="module", params=["native", "generic"])
def numeric_path(request):
    """Run a module's tests through the native kernels and through the generic
    formulas (the native kernels take C-contiguous NumPy arrays reduced along
    one axis)."""
    from softmaxkit import kernels as _native

    if request.param == "native":
        if not _native.available():
            pytest.skip("the native extension is not built")
        yield "native"
    else:
        with _native.disabled():
            yield "generic"


@pytest.fixture(autouse=True)
def _seeded_torch():
    """Each test starts from the same global torch generator state, so that a
    test drawing unseeded ``torch.rand`` inputs sees the same ones however the
    tests are ordered or split between workers."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(0)
    yield
