"""Native path against the generic path, edge semantics, options and fallbacks.

float16, bfloat16 and float32 agree within 1 ULP (both compute in float64
and round; they may round a near-halfway value differently, and the native
path rounds the 16-bit types through float32).  float64 agrees
within 4 ULP: the two paths use different exp implementations and summation
orders, each within the 4 ULP contract of the exact value, which
test_native_accuracy checks against mpmath.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import softmaxkit as smk
from softmaxkit import kernels as _native

from tests.reference import BFLOAT16, ulp, ulp_distance

DTYPES = [np.float16, np.float32, np.float64] + ([BFLOAT16] if BFLOAT16 is not None else [])


def both(fn, *args, **kwargs):
    """(native result, generic result) of one public call."""
    got = fn(*args, **kwargs)
    with _native.disabled():
        want = fn(*args, **kwargs)
    return got, want


PARITY = {"float16": 1.0, "bfloat16": 1.0, "float32": 1.0, "float64": 4.0}


def close(got, want, dtype, tol=1.0):
    tol = max(tol, PARITY[np.dtype(dtype).name])
    if isinstance(want, tuple):
        for g, w in zip(got, want):
            close(g, w, dtype, tol)
        return
    assert np.asarray(got).dtype == np.asarray(want).dtype
    assert np.shape(got) == np.shape(want)
    assert ulp_distance(got, want, dtype) <= tol


def close_to_row_scale(got, want, dtype, k=4.0):
    """|got - want| <= k eps max|want| per row: for gradients C p_j - c_j that
    may cancel (label smoothing, probability targets).  NaN and infinities
    must match exactly."""
    g, h = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert np.asarray(got).dtype == np.asarray(want).dtype and g.shape == h.shape
    assert np.array_equal(np.isnan(g), np.isnan(h))
    infinite = np.isinf(g) | np.isinf(h)
    assert np.array_equal(g[infinite], h[infinite]), "infinities differ"
    scale = np.max(np.abs(np.where(np.isfinite(h), h, 0.0)), axis=-1, keepdims=True)
    fin = np.isfinite(h)
    eps = float(ulp(1.0, dtype))
    assert np.all(np.abs(g - h)[fin] <= (k * eps * np.broadcast_to(scale, h.shape))[fin])


def edge_rows(dtype, n=19, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((8, n)) * 4).astype(dtype)
    x[1] = -np.inf  # fully masked
    x[2, [3 % n, 7 % n]] = np.inf  # +inf shares the mass
    x[3, 4 % n] = np.nan
    x[4, :5] = -np.inf
    x[5] = 2.5  # all equal: several maxima
    x[6, 0] = 60.0  # confident
    x[7, [2 % n, 9 % n]] = [np.inf, np.nan]
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 7, 19, 2048, 2051, 5000])
def test_softmax_family_matches_generic(isa, dtype, n):
    x = edge_rows(dtype, n, seed=n)
    close(*both(smk.softmax, x), dtype)
    close(*both(smk.log_softmax, x), dtype)
    close(*both(smk.softmax, x, temperature=0.3), dtype)
    close(*both(smk.log_softmax, x, temperature=2.5), dtype)
    close(*both(smk.logsumexp, x), dtype)
    close(*both(smk.logsumexp, x, keepdims=True, return_sign=True), dtype)


def test_edge_semantics(native):
    x = np.array([[-np.inf, -np.inf], [np.inf, np.inf], [np.nan, 0.0], [np.inf, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(smk.softmax(x), [[0, 0], [0.5, 0.5], [np.nan, np.nan], [1, 0]])
    np.testing.assert_array_equal(
        smk.log_softmax(x), [[-np.inf, -np.inf], [-np.log(np.float32(2))] * 2, [np.nan, np.nan], [0, -np.inf]]
    )
    np.testing.assert_array_equal(smk.logsumexp(x), [-np.inf, np.inf, np.nan, np.inf])


def test_empty_shapes(native):
    for shape in [(0, 5), (3, 0), (0,), (2, 0, 4)]:
        x = np.zeros(shape, dtype=np.float32)
        close(*both(smk.softmax, x), np.float32)
        close(*both(smk.log_softmax, x), np.float32)
        close(*both(smk.logsumexp, x), np.float32)
    close(*both(smk.cross_entropy, np.zeros((0, 4)), np.zeros(0, dtype=int)), np.float64)
    with pytest.raises(ValueError, match="empty class axis"):
        smk.cross_entropy(np.zeros((3, 0)), np.zeros(3, dtype=int))


def test_unaligned_and_odd_offsets(isa):
    buf = np.random.default_rng(1).standard_normal(4 * 1031 + 3).astype(np.float32)
    for off in (1, 2, 3):
        x = buf[off : off + 4 * 1031].reshape(4, 1031)
        assert x.flags.c_contiguous
        close(*both(smk.softmax, x), np.float32)
        close(*both(smk.log_softmax, x), np.float32)


CE_CASES = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"weight": "w"},
    {"ignore_index": 2},
    {"ignore_index": 2, "weight": "w", "reduction": "sum"},
    {"label_smoothing": 0.1},
    {"label_smoothing": 0.25, "weight": "w", "ignore_index": 2},
    {"label_smoothing": 1.0, "reduction": "none"},
    {"z_loss": 1e-2},
    {"z_loss": 1e-3, "label_smoothing": 0.1, "weight": "w", "reduction": "none"},
]


def ce_inputs(dtype, n, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((9, n)) * 3).astype(dtype)
    x[1] = -np.inf
    x[2, 1] = np.inf
    x[3, 0] = np.nan
    x[4, 3 % n] = -np.inf
    x[5, 0] = 80.0
    t = rng.integers(0, n, 9)
    t[4] = 3 % n  # a target on a -inf logit
    t[5] = 0  # the target is the argmax of a confident row
    t[7] = 2 % n if n > 2 else 0
    w = rng.uniform(0.1, 2.0, n)
    return x, t, w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CE_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_cross_entropy_class_indices(isa, dtype, case):
    for n in (3, 37, 2100):
        x, t, w = ce_inputs(dtype, n, seed=n)
        kwargs = dict(case)
        if kwargs.get("weight") == "w":
            kwargs["weight"] = w
        got, want = both(smk.cross_entropy, x, t, return_grad=True, **kwargs)
        close(got[0], want[0], dtype)
        if "label_smoothing" in case:
            close_to_row_scale(got[1], want[1], dtype)
        else:
            close(got[1], want[1], dtype)
        close(*both(smk.cross_entropy, x, t, **kwargs), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [{}, {"label_smoothing": 0.2}, {"weight": "w", "z_loss": 1e-2, "reduction": "sum"}])
def test_cross_entropy_probabilities(isa, dtype, case):
    x, _, w = ce_inputs(dtype, 41, seed=1)
    q = np.random.default_rng(2).dirichlet(np.ones(41), size=9).astype(dtype)
    kwargs = dict(case)
    if kwargs.get("weight") == "w":
        kwargs["weight"] = w
    got, want = both(smk.cross_entropy, x, q, return_grad=True, **kwargs)
    close(got[0], want[0], dtype, 2.0)
    close_to_row_scale(got[1], want[1], dtype)


def test_cross_entropy_all_ignored_and_confident(native):
    x = np.array([[30.0, 0.0, -1.0], [1.0, 2.0, 3.0]], dtype=np.float32)
    loss, grad = smk.cross_entropy(x, np.array([-100, -100]), return_grad=True)
    assert loss == 0 and not grad.any()
    loss, grad = smk.cross_entropy(x[:1], np.array([0]), return_grad=True)
    assert grad[0, 0] < 0  # never p_t - 1 == 0
    close(*both(smk.cross_entropy, x[:1], np.array([0]), return_grad=True), np.float32)


def test_cross_entropy_bad_arguments_raise_like_generic(native):
    x = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"targets\[1\] = 5 is not a class index"):
        smk.cross_entropy(x, np.array([0, 5]))
    with pytest.raises(ValueError, match="weight must be finite"):
        smk.cross_entropy(x, np.array([0, 1]), weight=np.array([1.0, np.inf, 1.0]))
    with pytest.raises(ValueError, match="non-negative probabilities"):
        smk.cross_entropy(x, np.array([[0.5, 0.5, 0.0], [1.5, -0.5, 0.0]], dtype=np.float32))
    with pytest.raises(ValueError, match="label_smoothing"):
        smk.cross_entropy(x, np.array([0, 1]), label_smoothing=2.0)
    with pytest.raises(ValueError, match="temperature"):
        smk.softmax(x, temperature=0.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vjps_match_generic(isa, dtype):
    rng = np.random.default_rng(4)
    for n in (1, 5, 2100):
        x = edge_rows(dtype, n, seed=n)
        g = rng.standard_normal(x.shape).astype(dtype)
        p = smk.softmax(x)
        y = smk.log_softmax(x)
        close(*both(smk.softmax_vjp, p, g), dtype, 2.0)
        close(*both(smk.log_softmax_vjp, y, g), dtype, 2.0)


def test_threads_give_identical_results(native):
    rng = np.random.default_rng(6)
    shapes = [(64, 4096), (2, 300_000), (3, 70_001)]
    before = smk.get_num_threads()
    try:
        for shape in shapes:
            for dtype in (np.float32, np.float64):
                x = (rng.standard_normal(shape) * 5).astype(dtype)
                x[0, 100] = np.inf
                t = rng.integers(0, shape[1], shape[0])
                results = []
                for n in (1, 2, 3):
                    smk.set_num_threads(n)
                    results.append(
                        [
                            smk.softmax(x),
                            smk.log_softmax(x),
                            smk.logsumexp(x),
                            *smk.cross_entropy(x, t, return_grad=True, label_smoothing=0.1),
                        ]
                    )
                for other in results[1:]:
                    for a, b in zip(results[0], other):
                        np.testing.assert_array_equal(a, b)
    finally:
        smk.set_num_threads(before)


# Regression: a pool worker that sat out a job and woke only after the job
# had returned read the finished job through a dangling pointer, and crashed
# or hung the process (first seen as a segfault in CI).  It needs many calls
# that alternate between thread counts, so it runs in a child process that a
# timeout can stop.
_ALTERNATING_THREAD_COUNTS = textwrap.dedent(
    '''
    import sys
    import numpy as np
    import softmaxkit as smk
    from softmaxkit import kernels as _native
    _native._kernels.set_isa(sys.argv[1])
    rng = np.random.default_rng(6)
    for _ in range(10):
        for shape in [(64, 4096), (2, 300_000), (3, 70_001)]:
            for dtype in (np.float32, np.float64):
                x = (rng.standard_normal(shape) * 5).astype(dtype)
                x[0, 100] = np.inf
                t = rng.integers(0, shape[1], shape[0])
                for n in (1, 2, 3):
                    smk.set_num_threads(n)
                    smk.softmax(x)
                    smk.log_softmax(x)
                    smk.logsumexp(x)
                    smk.cross_entropy(x, t, return_grad=True, label_smoothing=0.1)
    '''
)


def test_pool_survives_alternating_thread_counts(isa):
    done = subprocess.run(
        [sys.executable, "-c", _ALTERNATING_THREAD_COUNTS, isa], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_thread_settings():
    before = smk.get_num_threads()
    try:
        smk.set_num_threads(3)
        assert smk.get_num_threads() == 3
        with pytest.raises(ValueError, match=r"n must be an int in \[1, 4096\]; got 0"):
            smk.set_num_threads(0)
        with pytest.raises(TypeError, match="n must be an int"):
            smk.set_num_threads(2.0)
    finally:
        smk.set_num_threads(before)
    assert "set_num_threads" in smk.__all__ and "get_num_threads" in smk.__all__


def test_inputs_not_modified(native):
    x, t, w = ce_inputs(np.float32, 33)
    q = np.abs(x.copy()).astype(np.float32)
    q[~np.isfinite(q)] = 0
    copies = [a.copy() for a in (x, t, w, q)]
    smk.softmax(x)
    smk.log_softmax(x, temperature=2.0)
    smk.logsumexp(x)
    smk.cross_entropy(x, t, weight=w, label_smoothing=0.1, return_grad=True)
    smk.cross_entropy(x, q, return_grad=True)
    smk.softmax_vjp(q, x)
    for a, b in zip((x, t, w, q), copies):
        np.testing.assert_array_equal(a, b)


class _Spy:
    def __init__(self, kernels):
        self.kernels = kernels
        self.calls = 0

    def __getattr__(self, name):
        self.calls += 1
        return getattr(self.kernels, name)


@pytest.fixture
def spy(native, monkeypatch):
    s = _Spy(_native._kernels)
    # the adapters hold the C module: the NumPy functions' and the *_into wrappers'
    monkeypatch.setattr(_native.numpy_adapter, "_kernels", s)
    monkeypatch.setattr(_native.into, "_kernels", s)
    return s


def test_disabled_switches_paths(spy):
    x = np.ones((2, 3), dtype=np.float32)
    smk.softmax(x)
    assert spy.calls == 1
    with _native.disabled():
        assert not _native.active()
        smk.softmax(x)
        smk.cross_entropy(x, np.array([0, 1]))
    assert spy.calls == 1
    assert _native.active()


@pytest.mark.parametrize(
    "call",
    [
        lambda x: smk.softmax(np.asfortranarray(x), axis=0),
        lambda x: smk.softmax(x[:, ::2]),
        lambda x: smk.softmax(np.asfortranarray(x)),
        lambda x: smk.softmax(x.astype(">f4")),
        lambda x: smk.softmax(x.tolist()),
        lambda x: smk.softmax(x.astype(np.int32)),
        lambda x: smk.softmax(x, where=x > 0),
        lambda x: smk.logsumexp(x, b=np.ones_like(x)),
        lambda x: smk.logsumexp(x, axis=None),
        lambda x: smk.cross_entropy(np.asfortranarray(x), np.array([0, 1, 2, 0]), axis=0),
        lambda x: smk.softmax_vjp(x, x.astype(np.float64)),
    ],
)
def test_other_layouts_fall_back(spy, call):
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    got = call(x)
    assert spy.calls == 0
    with _native.disabled():
        want = call(x)
    np.testing.assert_array_equal(got, want)


def test_wrappers_write_preallocated_outputs(native):
    x = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    out = np.empty_like(x)
    assert _native.softmax_into(x, out) is out
    np.testing.assert_array_equal(out, smk.softmax(x))
    y = x.copy()
    _native.log_softmax_into(y, y)  # in place
    np.testing.assert_array_equal(y, smk.log_softmax(x))
    for dtype in DTYPES:
        z = edge_rows(dtype, 3000)
        want = smk.softmax(z)
        _native.softmax_into(z, z)
        assert z.dtype == want.dtype and z.tobytes() == want.tobytes()
    loss = np.empty(4)
    grad = np.empty_like(x)
    _native.cross_entropy_into(x, np.array([0, 1, 2, 3]), loss, grad, grad_divisor=4.0)
    want_loss, want_grad = smk.cross_entropy(x, np.array([0, 1, 2, 3]), return_grad=True)
    assert ulp_distance(loss.mean(), want_loss, np.float32) <= 1
    np.testing.assert_array_equal(grad, want_grad)
    with pytest.raises(ValueError, match="class index"):
        _native.cross_entropy_into(x, np.array([0, 1, 2, 10]), loss)
    with pytest.raises(TypeError, match="out must be float32"):
        _native.softmax_into(x, np.empty((4, 10)))
    with pytest.raises(ValueError, match="out must hold 40 elements"):
        _native.softmax_into(x, np.empty(39, dtype=np.float32))
    x64 = x.astype(np.float64)  # only float32 gradients may be written over the logits
    with pytest.raises(ValueError, match="must not overlap"):
        _native.cross_entropy_into(x64, np.array([0, 1, 2, 3]), loss, x64)


def test_streamed_outputs_equal_row_by_row_results(isa):
    """Outputs of SK_STREAM_MIN bytes or more are written around the cache,
    from the first 64-byte boundary of each row on, and a log_softmax row is
    written during the next row's exponential pass (the last one after the
    loop).  Every element must come out as in small, cached calls, wherever
    the row and the boundary fall (odd row length, output starting 12 bytes
    past a line), around rows whose answer is a limit (NaN, masked, +inf,
    two +inf rows in a row), with one thread and two."""
    rng = np.random.default_rng(8)
    shape = (1031, 8195)  # 33.8 MB of float32: above the 32 MiB threshold
    x = (rng.standard_normal(shape) * 6).astype(np.float32)
    x[5] = -np.inf
    x[6, 7] = np.inf
    x[7, [3, 9]] = np.inf
    x[8, 100] = np.nan
    t = rng.integers(0, shape[1], shape[0])
    flat = np.empty(x.size + 16, np.float32)
    start = (-flat.ctypes.data // 4) % 16 + 3
    out = flat[start : start + x.size].reshape(shape)
    loss_rows = np.empty(shape[0])

    def chunked(f):
        # calls on 100 rows at a time are below the threshold: cached stores
        return np.concatenate([f(slice(r, r + 100)) for r in range(0, shape[0], 100)])

    calls = {
        "softmax": (lambda: _native.softmax_into(x, out), lambda r: smk.softmax(x[r])),
        "log_softmax": (lambda: _native.log_softmax_into(x, out), lambda r: smk.log_softmax(x[r])),
        "log_softmax, T = 0.7": (
            lambda: _native.log_softmax_into(x, out, 0.7),
            lambda r: smk.log_softmax(x[r], temperature=0.7),
        ),
        "cross_entropy_grad": (
            lambda: _native.cross_entropy_into(x, t, loss_rows, out, grad_divisor=1.0),
            lambda r: smk.cross_entropy(x[r], t[r], reduction="sum", return_grad=True)[1],
        ),
    }
    before = _native.get_num_threads()
    try:
        for threads in (1, 2):
            _native.set_num_threads(threads)
            for name, (big, small) in calls.items():
                out[...] = np.nan
                big()
                np.testing.assert_array_equal(out, chunked(small), err_msg=f"{name}, {threads} threads")
    finally:
        _native.set_num_threads(before)


# A one-class row holding NaN: its loss and gradient are NaN (NaN stays in
# its row), like every other NaN row; the generic path once gave a 0
# gradient here, and both paths must agree.  Row 1 shows it stays there.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "options",
    [{}, {"label_smoothing": 0.1}, {"weight": np.array([2.0])}, {"z_loss": 0.1}, {"reduction": "sum"}],
    ids=["plain", "smoothing", "weight", "z_loss", "sum"],
)
def test_one_class_nan_row_gives_nan_gradient(isa, dtype, options):
    x = np.array([[np.nan], [1.0]], dtype)
    for targets in (np.array([0, 0]), np.ones((2, 1), dtype)):
        loss_rows = smk.cross_entropy(x, targets, **{**options, "reduction": "none"})
        loss, grad = smk.cross_entropy(x, targets, return_grad=True, **options)
        assert np.isnan(loss_rows[0]) and np.isfinite(loss_rows[1])
        assert np.isnan(loss)
        assert np.isnan(grad[0, 0]) and np.isfinite(grad[1, 0])
        assert grad.dtype == dtype
