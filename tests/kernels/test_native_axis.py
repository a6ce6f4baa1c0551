"""Reduction along any axis of a C-contiguous array.

A row whose elements are apart (``inner > 1``, see job.h) is gathered into a
tile of neighbouring rows and computed there: every result must be bitwise
that of the same kernel on ``np.moveaxis(x, axis, -1).copy()``, moved back,
for every thread count and instruction set.  The shapes reach: tiles cut by
the end of an outer index and by a thread's batch, ``inner`` not a multiple
of the vector width nor of a tile, one class, no rows, and rows split across
threads (wide mode, see test_native_threads).
"""

import numpy as np
import pytest

from softmaxkit import kernels as _native
from softmaxkit.kernels import into, numpy_adapter

from tests.reference import BFLOAT16

pytestmark = pytest.mark.skipif(not _native.active(), reason="native kernels not built or disabled")

DTYPES = (np.float16, np.float32, np.float64) + ((BFLOAT16,) if BFLOAT16 is not None else ())
THREADS = (1, 2, 3, 8)

# (shape, axis)
CASES = [
    ((3, 5, 7), 0),
    ((3, 5, 7), 1),
    ((2, 9, 33), 1),  # inner 33: not a multiple of any vector width
    ((3, 50, 40), 1),  # inner 40: more than a tile of 4- and 8-byte rows
    ((4, 300, 70), 1),  # 280 rows: several batches and threads
    ((6, 1, 5), 1),  # one class
    ((0, 4, 3), 1),  # no rows
    ((5, 6), 0),
    ((2, 3, 4, 5), 1),  # inner 20 from two axes
]
WIDE = ((2, 70001, 3), 1)  # 6 rows of 35 blocks: split across 2 and more threads


def _random(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 3).astype(dtype)


def _special_rows(x, axis):
    """Rows (along ``axis``) fully masked, with +inf, with NaN, and with a masked class."""
    x = np.moveaxis(x.copy(), axis, -1)
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] >= 4:
        flat[0] = -np.inf
        flat[1, 0] = np.inf
        flat[2, -1] = np.nan
        flat[3, 0] = -np.inf
    return np.ascontiguousarray(np.moveaxis(x, -1, axis))


def _last(a, axis):
    return np.moveaxis(a, axis, -1).copy()


def _back(a, axis):
    return np.moveaxis(a, -1, axis)


def _ops(x, axis, seed):
    """Every kernel on (x, axis): {name: outputs}."""
    rng = np.random.default_rng(seed)
    n = x.shape[axis]
    rest = numpy_adapter._without(x.shape, axis)
    out = {}
    for name, f in (("softmax", into.softmax_into), ("log_softmax", into.log_softmax_into)):
        o = np.empty_like(x)
        f(x, o, 1.5, axis=axis)
        out[name] = o
    o = np.empty(rest, x.dtype)
    into.logsumexp_into(x, o, axis=axis)
    out["logsumexp"] = o
    finite = np.where(np.isfinite(x), x, 0).astype(x.dtype)
    probs = np.empty_like(x)
    into.softmax_into(finite, probs, axis=axis)
    cot = rng.standard_normal(x.shape).astype(x.dtype)
    for name, f in (("softmax_vjp", into.softmax_vjp_into), ("log_softmax_vjp", into.log_softmax_vjp_into)):
        y = probs if name == "softmax_vjp" else out["log_softmax"]
        o = np.empty_like(x)
        f(y, cot, o, axis=axis)
        out[name] = o
    t = rng.integers(0, max(n, 1), rest)
    t.reshape(-1)[::5] = -100
    w = rng.uniform(0.5, 2, n)
    for name, targets, kw in (
        ("ce_index", t, {}),
        ("ce_index_smoothed", t, {"weight": w, "label_smoothing": 0.1, "z_loss": 0.01, "grad_divisor": 3.0}),
        ("ce_probs", probs, {"label_smoothing": 0.05}),
    ):
        if n == 0:
            continue
        loss = np.empty(rest)
        grad = np.empty_like(x)
        into.cross_entropy_into(x, targets, loss, grad, axis=axis, **kw)
        out[name] = (loss, grad)
    return out


def _reference(x, axis, seed):
    """Every kernel on ``moveaxis(x, axis, -1).copy()``, its inputs moved likewise, the outputs moved back."""
    rng = np.random.default_rng(seed)
    n = x.shape[axis]
    rest = numpy_adapter._without(x.shape, axis)
    xl = _last(x, axis)
    out = {}
    for name, f in (("softmax", into.softmax_into), ("log_softmax", into.log_softmax_into)):
        o = np.empty_like(xl)
        f(xl, o, 1.5)
        out[name] = _back(o, axis)
    o = np.empty(rest, x.dtype)
    into.logsumexp_into(xl, o)
    out["logsumexp"] = o
    finite = np.where(np.isfinite(x), x, 0).astype(x.dtype)
    probs = np.empty_like(x)
    into.softmax_into(finite, probs, axis=axis)
    cot = rng.standard_normal(x.shape).astype(x.dtype)
    for name, f in (("softmax_vjp", into.softmax_vjp_into), ("log_softmax_vjp", into.log_softmax_vjp_into)):
        y = probs if name == "softmax_vjp" else out["log_softmax"]
        o = np.empty_like(xl)
        f(_last(y, axis), _last(cot, axis), o)
        out[name] = _back(o, axis)
    t = rng.integers(0, max(n, 1), rest)
    t.reshape(-1)[::5] = -100
    w = rng.uniform(0.5, 2, n)
    for name, targets, kw in (
        ("ce_index", t, {}),
        ("ce_index_smoothed", t, {"weight": w, "label_smoothing": 0.1, "z_loss": 0.01, "grad_divisor": 3.0}),
        ("ce_probs", _last(probs, axis), {"label_smoothing": 0.05}),
    ):
        if n == 0:
            continue
        loss = np.empty(rest)
        grad = np.empty_like(xl)
        into.cross_entropy_into(xl, targets, loss, grad, **kw)
        out[name] = (loss, _back(grad, axis))
    return out


def _bits(a):
    a = np.asarray(a)
    return a.view(np.dtype(f"u{a.dtype.itemsize}"))


def _assert_same(got, want):
    assert got.keys() == want.keys()
    for name in got:
        g, w = got[name], want[name]
        for ga, wa in zip(g, w) if isinstance(g, tuple) else [(g, w)]:
            assert ga.shape == wa.shape and ga.dtype == wa.dtype, name
            assert np.array_equal(_bits(ga), _bits(wa)), name


@pytest.fixture
def threads():
    before = _native.get_num_threads()
    yield
    _native.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(("shape", "axis"), CASES, ids=str)
def test_any_axis_equals_moved_axis(isa, threads, dtype, shape, axis):
    x = _special_rows(_random(shape, dtype, 1), axis)
    for nt in (1, 3):
        _native.set_num_threads(nt)
        _assert_same(_ops(x, axis, 2), _reference(x, axis, 2))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(("shape", "axis"), [CASES[4], WIDE], ids=["rows", "wide"])
def test_any_axis_thread_independent(threads, dtype, shape, axis):
    x = _special_rows(_random(shape, dtype, 3), axis)
    _native.set_num_threads(1)
    want = _reference(x, axis, 4)
    for nt in THREADS:
        _native.set_num_threads(nt)
        _assert_same(_ops(x, axis, 4), want)


def test_in_place_softmax_along_axis(native):
    x = _random((3, 40, 37), np.float32, 5)
    want = np.empty_like(x)
    into.softmax_into(x, want, axis=1)
    into.softmax_into(x, x, axis=1)
    assert np.array_equal(x, want)


def test_axis_out_of_range_is_an_error(native):
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="axis must be in"):
        into.softmax_into(x, np.empty_like(x), axis=2)
    with pytest.raises(TypeError):
        into.softmax_into(x, np.empty_like(x), axis=1.0)
