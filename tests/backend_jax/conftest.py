"""Fixtures shared by the JAX backend's tests."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["native", "formulas"])
def jax_path(request):
    """Run the test through the native XLA custom calls and through the
    ``jax.numpy`` formulas.  The path is read when a function is traced, so
    the tests trace new functions (``jax.jit`` caches traces by function)."""
    import softmaxkit.jax as smj
    from softmaxkit import kernels
    from softmaxkit.backends.jax import native

    if request.param == "native":
        if not native.active():
            pytest.skip(smj.kernel_path())
        yield "native"
    else:
        with kernels.disabled():
            yield "formulas"
