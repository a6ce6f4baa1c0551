"""Fixtures that SciPy's own test modules expect, for running them here.

SciPy's test modules take an ``xp`` fixture (the array namespace under test)
and a ``devices`` fixture from SciPy's top-level conftest, which pytest does
not load for modules collected from this tree.  These restate the two for
NumPy, the namespace SciPy's tests use by default.

A test module here may define ``EXPECTED_FAILURES``, a mapping from test name
(``Class::test`` or ``Class::test[params]``) to the reason: those tests are
marked as strict expected failures, so each deliberate difference from the
peer is listed by name and the mark fails as soon as the test passes.
"""

import pytest


def pytest_configure(config):
    for marker in ("skip_xp_backends", "xfail_xp_backends", "array_api_backends"):
        config.addinivalue_line("markers", f"{marker}: a SciPy test marker (array backends other than NumPy are not run here)")


@pytest.fixture(params=["numpy"])
def xp(request):
    array_api_compat = pytest.importorskip("array_api_compat")
    import numpy as np

    return array_api_compat.array_namespace(np.empty(0))


@pytest.fixture
def devices(xp):
    return list(xp.__array_namespace_info__().devices()) + [None]


def pytest_collection_modifyitems(config, items):
    for item in items:
        table = getattr(item.module, "EXPECTED_FAILURES", None) if hasattr(item, "module") else None
        if not table:
            continue
        name = "::".join(item.nodeid.split("::")[1:])
        reason = table.get(name) or table.get(name.split("[")[0])
        if reason is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
