"""The kernels compute in IEEE arithmetic whatever the caller's floating-point mode.

A caller may flush subnormals to zero (``torch.set_flush_denormal(True)``;
XLA on the threads that run its custom calls).  The kernels set rounding to
nearest with subnormals kept on every thread of a job and restore the
caller's mode after it, so results and the caller's own arithmetic are both
unchanged.  (NumPy's own arithmetic around them follows the caller's mode.)
"""

import contextlib

import numpy as np
import pytest

import softmaxkit as smk
from softmaxkit import kernels

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(not kernels.available(), reason="the native extension is not built")

TINY32 = np.finfo(np.float32).tiny


@contextlib.contextmanager
def flushing():
    """Subnormals flushed to zero in the block (checks must run after it: NumPy
    then reads subnormals as 0 too)."""
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@pytest.mark.parametrize("threads", [1, 2])
def test_subnormal_results_survive_a_flushing_caller(threads):
    x = np.array([[100.0, 0.0, -3.0]] * 64, dtype=np.float32)
    before = kernels.get_num_threads()
    kernels.set_num_threads(threads)
    try:
        grad = np.empty_like(x)
        with flushing():
            p = smk.softmax(x)
            kernels.into.cross_entropy_into(x, np.ones(64, np.int64), np.empty(64), grad)
    finally:
        kernels.set_num_threads(before)
    assert np.all((0 < p[:, 1]) & (p[:, 1] < TINY32))
    assert np.all((0 < grad[:, 2]) & (grad[:, 2] < TINY32))


def test_the_callers_mode_is_restored():
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    with flushing():
        smk.softmax(np.array([1.0, 2.0], np.float32))
        product = tiny * 1.0
    assert float(product) == 0.0  # still flushing after the kernel ran
