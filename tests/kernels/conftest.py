import numpy as np
import pytest

from softmaxkit import kernels as _native

ISAS = [name for name in ("baseline", "avx2", "avx512") if _native.available()]


def _isa_available(name: str) -> bool:
    try:
        _native._kernels.set_isa(name)
    except ValueError:
        return False
    finally:
        _native._kernels.set_isa("best")
    return True


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test once per instruction set this machine has."""
    if not _native.active():
        pytest.skip("native kernels not built or disabled")
    if not _isa_available(request.param):
        pytest.skip(f"{request.param} not supported by this CPU")
    _native._kernels.set_isa(request.param)
    yield request.param
    _native._kernels.set_isa("best")


@pytest.fixture
def native():
    if not _native.active():
        pytest.skip("native kernels not built or disabled")


def ulps(got, want, dtype):
    """Largest distance in ULP of ``dtype`` between two arrays.

    NaN must sit at the same places and infinities must match exactly; +0 and
    -0 count as equal.
    """
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want)), "NaN positions differ"
    inf = np.isinf(want) | np.isinf(got)
    assert np.array_equal(got[inf], want[inf]), "infinities differ"
    fin = np.isfinite(want) & np.isfinite(got)
    if not fin.any():
        return 0.0
    big = np.maximum(np.abs(got[fin]), np.abs(want[fin])).astype(dtype)
    spacing = np.spacing(big).astype(np.float64)
    return float(np.max(np.abs(got[fin] - want[fin]) / spacing))
