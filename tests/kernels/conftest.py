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

