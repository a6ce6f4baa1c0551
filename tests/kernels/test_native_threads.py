"""Thread-count independence of every native kernel in every mode, and calls
whose inputs another thread changes meanwhile.

How a call is run (``plan`` in pool.c): with ``nt = min(threads,
elements // 32768)`` threads, a call on fewer than ``4 nt`` rows that each
have at least ``4 nt`` blocks of 2048 elements runs in *wide mode* (every row
split into one chunk per thread, with barriers between the phases);
otherwise in *row mode* (whole rows per thread).  A float32 output of 32 MiB
or more is *streamed* (non-temporal stores, and in row mode each log_softmax
row written during the next row's sums).  The shapes below reach each mode.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import softmaxkit as smk
from softmaxkit import kernels as _native

from tests.reference import BFLOAT16

pytestmark = pytest.mark.skipif(not _native.active(), reason="native kernels not built or disabled")

THREADS = (1, 2, 3, 8)
# the 16-bit dtypes share the float32 family and differ in their conversions
HALVES = (np.float16,) + ((BFLOAT16,) if BFLOAT16 is not None else ())

# (shape, dtypes): the mode each thread count gives is in the comment.
MODES = {
    # row mode at every count (64 rows >= 4 * 8)
    "row": ((64, 4097), (*HALVES, np.float32, np.float64)),
    # wide at 2, 3 and 8 threads (35 blocks per row)
    "wide": ((4, 70001), (*HALVES, np.float32, np.float64)),
    # wide at 2 threads; row mode with 3 threads at 3 and 8 (10 blocks < 12)
    "wide or row": ((6, 20000), (np.float32, np.float64)),
    # 33.8 MB of float32: streamed row mode, deferred log_softmax rows
    "streamed rows": ((1031, 8195), (np.float32,)),
    # 33.6 MB of float32 in 2 rows: streamed wide mode at 2, 3 and 8 threads
    "streamed wide": ((2, 4194307), (np.float32,)),
}
# Only softmax, log_softmax and the cross-entropy gradient stream; the other
# kernels run in row or wide mode at every size, which the smaller shapes cover.
STREAMING = (
    "softmax",
    "softmax T",
    "log_softmax",
    "log_softmax T",
    "cross_entropy",
    "cross_entropy options",
    "cross_entropy probabilities",
    "softmax_into in place",
    "log_softmax_into in place",
    "cross_entropy_into",
)


def same_bits(a, b):
    """Whether two results (arrays, scalars or tuples of them) are bitwise equal."""
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(same_bits(u, v) for u, v in zip(a, b))
    a, b = np.asarray(a), np.asarray(b)
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and np.ascontiguousarray(a).view(np.uint8).tobytes() == np.ascontiguousarray(b).view(np.uint8).tobytes()
    )


def logits(shape, dtype, seed):
    """Random rows, with the rows whose answer is a limit among them where
    there is room: +inf entries, a NaN, a fully masked row, a partly masked
    row, a row of ties."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    n = shape[-1]
    x[0, : n // 3] = -np.inf
    x[1, [3, n - 2]] = np.inf
    if shape[0] >= 8:
        x[3, n // 2] = np.nan
        x[4] = -np.inf
        x[5] = 1.5
        x[6, 7] = 60.0
    return x


def kernel_calls(x, seed, smoothing=0.1, z_loss=1e-4, temperature=0.7):
    """Every native kernel on ``x``: name -> call returning its result(s)."""
    rng = np.random.default_rng(seed)
    rows, n = x.shape[:-1], x.shape[-1]
    t = rng.integers(0, n, rows)
    ignore = int(t[-1])
    w = rng.uniform(0.5, 2.0, n)
    q = smk.softmax(rng.standard_normal(x.shape).astype(x.dtype))
    g = rng.standard_normal(x.shape).astype(x.dtype)
    p = smk.softmax(x)
    y = smk.log_softmax(x)

    def in_place(kernel, *args):
        out = x.copy()
        kernel(out, out, *args)
        return out

    def into(kernel, *inputs, out_shape=x.shape):
        out = np.empty(out_shape, x.dtype)
        kernel(*inputs, out)
        return out

    def ce_into(targets, **options):
        loss = np.empty(rows)
        grad = np.empty_like(x)
        _native.cross_entropy_into(x, targets, loss, grad, **options)
        return loss, grad

    return {
        "softmax": lambda: smk.softmax(x),
        "softmax T": lambda: smk.softmax(x, temperature=temperature),
        "log_softmax": lambda: smk.log_softmax(x),
        "log_softmax T": lambda: smk.log_softmax(x, temperature=temperature),
        "logsumexp": lambda: smk.logsumexp(x),
        "cross_entropy": lambda: smk.cross_entropy(x, t, return_grad=True),
        "cross_entropy loss only": lambda: smk.cross_entropy(x, t, reduction="none"),
        "cross_entropy options": lambda: smk.cross_entropy(
            x, t, weight=w, ignore_index=ignore, label_smoothing=smoothing, z_loss=z_loss, reduction="sum",
            return_grad=True,
        ),
        "cross_entropy probabilities": lambda: smk.cross_entropy(
            x, q, weight=w, label_smoothing=smoothing, z_loss=z_loss, return_grad=True
        ),
        "softmax_vjp": lambda: smk.softmax_vjp(p, g),
        "log_softmax_vjp": lambda: smk.log_softmax_vjp(y, g),
        "logsumexp_vjp": lambda: smk.logsumexp_vjp(x, g[..., 0]),
        "softmax_into in place": lambda: in_place(_native.softmax_into, temperature),
        "log_softmax_into in place": lambda: in_place(_native.log_softmax_into),
        "logsumexp_into": lambda: into(_native.logsumexp_into, x, out_shape=rows),
        "cross_entropy_into": lambda: ce_into(t, ignore_index=ignore, label_smoothing=smoothing, grad_divisor=3.0),
        "cross_entropy_into probabilities": lambda: ce_into(q, weight=w, z_loss=z_loss),
        "softmax_vjp_into": lambda: into(_native.softmax_vjp_into, p, g),
        "log_softmax_vjp_into": lambda: into(_native.log_softmax_vjp_into, y, g),
    }


@pytest.fixture
def threads():
    before = smk.get_num_threads()
    yield
    smk.set_num_threads(before)


def assert_thread_independent(calls, label):
    for name, call in calls.items():
        smk.set_num_threads(1)
        want = call()
        for n in THREADS[1:]:
            smk.set_num_threads(n)
            assert same_bits(call(), want), f"{name}, {label}: {n} threads differ from 1"


@pytest.mark.parametrize(
    ("mode", "dtype"), [(m, d) for m, (_, dtypes) in MODES.items() for d in dtypes], ids=lambda v: v if isinstance(v, str) else np.dtype(v).name
)
def test_every_kernel_is_bitwise_independent_of_threads(threads, mode, dtype):
    shape = MODES[mode][0]
    x = logits(shape, dtype, seed=len(mode))
    calls = kernel_calls(x, seed=1)
    if mode.startswith("streamed"):
        calls = {name: calls[name] for name in STREAMING}
    assert_thread_independent(calls, f"{mode} {shape} {np.dtype(dtype).name}")


@settings(max_examples=6, deadline=None)
@given(
    mode=st.sampled_from(["row", "wide", "wide or row"]),
    dtype=st.sampled_from([*HALVES, np.float32, np.float64]),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1.0, 30.0, 1e3]),
    smoothing=st.sampled_from([0.0, 0.3, 1.0]),
    z_loss=st.sampled_from([0.0, 1e-3]),
    temperature=st.sampled_from([0.25, 3.0]),
)
def test_random_rows_and_options_are_thread_independent(mode, dtype, seed, scale, smoothing, z_loss, temperature):
    before = smk.get_num_threads()
    try:
        x = (logits(MODES[mode][0], np.float64, seed) * scale).astype(dtype)
        calls = kernel_calls(x, seed, smoothing=smoothing, z_loss=z_loss, temperature=temperature)
        assert_thread_independent(calls, f"{mode} {np.dtype(dtype).name} seed {seed}")
    finally:
        smk.set_num_threads(before)


# Regression: the VJP row program reused the shared per-block partials of a
# wide-mode call for the next row while other threads were still summing
# them, so softmax_vjp / log_softmax_vjp (and the torch backward) were wrong
# for a few wide rows split across threads, e.g. (4, 32000) with 2 threads.
@pytest.mark.parametrize(("n_threads", "shape"), [(2, (4, 32000)), (8, (16, 65536))])
def test_vjp_of_wide_rows_split_across_threads_is_not_raced(threads, isa, n_threads, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    p = smk.softmax(x)
    y = smk.log_softmax(x)
    # a constant cotangent per row, 1000 on odd rows: the softmax VJP is 0
    g = np.ones(shape) * (1.0 + 999.0 * (np.arange(shape[0]) % 2))[:, None]
    smk.set_num_threads(1)
    want = smk.softmax_vjp(p, g), smk.log_softmax_vjp(y, g)
    smk.set_num_threads(n_threads)
    for _ in range(20):
        assert same_bits(smk.softmax_vjp(p, g), want[0])
        assert same_bits(smk.log_softmax_vjp(y, g), want[1])
    assert np.abs(want[0]).max() < 1e-12


# Regression (torch side of the same race): the backward of
# softmaxkit.torch.log_softmax / softmax on a few wide rows.
def test_torch_backward_of_wide_rows_is_thread_independent(threads):
    torch = pytest.importorskip("torch")
    smt = pytest.importorskip("softmaxkit.torch")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 65536, generator=gen)
    g = torch.randn(16, 65536, generator=gen)

    def grads():
        out = []
        for fn in (smt.log_softmax, smt.softmax):
            xx = x.clone().requires_grad_()
            (got,) = torch.autograd.grad(fn(xx, dim=-1), xx, g)
            out.append(got.numpy())
        return tuple(out)

    smk.set_num_threads(1)
    want = grads()
    smk.set_num_threads(8)
    for _ in range(5):
        assert same_bits(grads(), want)


# --- inputs changed by another thread during a call -------------------------

_CHANGING_TARGETS = textwrap.dedent(
    """
    import sys, threading
    import numpy as np
    import softmaxkit as smk
    from softmaxkit import kernels as _native

    rows, n, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    smk.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, n)).astype(np.float32)
    ta = rng.integers(0, n, rows)
    tb = (ta + 1 + rng.integers(0, n - 1, rows)) % n
    w = rng.uniform(0.5, 2.0, n)
    # out of range just past the end (or before the start) of the weights and
    # of a row, where a sanitizer build sees the read, and far away
    states = [ta, np.full(rows, n), tb, np.full(rows, -1), ta, np.full(rows, 1 << 40)]

    def answer(t):
        loss, grad = np.empty(rows), np.empty_like(x)
        _native.cross_entropy_into(x, t, loss, grad, weight=w, label_smoothing=0.1)
        return loss, grad

    valid = [answer(ta), answer(tb)]
    t = ta.copy()
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            t[:] = states[i % len(states)]
            i += 1

    th = threading.Thread(target=writer)
    th.start()
    raised = answered = 0
    try:
        for _ in range(int(sys.argv[4])):
            loss, grad = np.empty(rows), np.empty_like(x)
            try:
                _native.cross_entropy_into(x, t, loss, grad, weight=w, label_smoothing=0.1)
            except ValueError as e:
                assert "class index" in str(e), e
                raised += 1
                continue
            answered += 1
            # each row took one of the valid targets, consistently in its loss and gradient
            for r in range(rows):
                ok = [
                    loss[r].tobytes() == v[0][r].tobytes() and grad[r].tobytes() == v[1][r].tobytes() for v in valid
                ]
                assert any(ok), f"row {r}: neither valid answer"
            try:
                smk.cross_entropy(x, t, return_grad=True)
            except ValueError:
                pass
    finally:
        stop.set()
        th.join()
    print(raised, answered)
    """
)


# Regression: the native cross-entropy validated the class indices, then the
# row programs read them again from the caller's array and used them
# unchecked, so a thread writing `targets` meanwhile made the kernel read
# out of bounds (a segfault).  Runs in a child process, which a crash ends.
@pytest.mark.parametrize(("rows", "n", "n_threads"), [(64, 1000, 2), (4, 70001, 2), (8, 70001, 8)])
def test_targets_changed_during_cross_entropy_give_a_valid_answer_or_raise(rows, n, n_threads):
    done = subprocess.run(
        [sys.executable, "-c", _CHANGING_TARGETS, str(rows), str(n), str(n_threads), "300"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


_CHANGING_TORCH_TARGETS = textwrap.dedent(
    """
    import sys, threading
    import torch
    import softmaxkit as smk
    import softmaxkit.torch as smt

    rows, n, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    smk.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, n, generator=gen)
    w = torch.rand(n, generator=gen, dtype=torch.float64) + 0.5
    ta = torch.randint(0, n, (rows,), generator=gen)
    tb = (ta + 1) % n
    states = [ta, torch.full((rows,), n), tb, torch.full((rows,), -1), ta, torch.full((rows,), 1 << 40)]

    def loss_and_grad(t):
        xx = x.clone().requires_grad_()
        loss = smt.cross_entropy(xx, t, weight=w, reduction="none", label_smoothing=0.1)
        loss.sum().backward()
        return loss.detach(), xx.grad

    valid = [loss_and_grad(ta), loss_and_grad(tb)]
    t = ta.clone()
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            t.copy_(states[i % len(states)])
            i += 1

    th = threading.Thread(target=writer)
    th.start()
    try:
        for _ in range(int(sys.argv[4])):
            try:
                loss, grad = loss_and_grad(t)
            except (ValueError, IndexError, RuntimeError):
                continue
            # the forward and the backward pass each read the targets once
            # (a change in between may give them different ones)
            for r in range(rows):
                assert any(bool(torch.equal(loss[r], v[0][r])) for v in valid), f"loss row {r}"
                assert any(bool(torch.equal(grad[r], v[1][r])) for v in valid), f"gradient row {r}"
    finally:
        stop.set()
        th.join()
    """
)


# The torch path hands `target` to the kernel without a copy: the same race.
@pytest.mark.parametrize(("rows", "n", "n_threads"), [(64, 1000, 2), (4, 70001, 2)])
def test_torch_targets_changed_during_cross_entropy(rows, n, n_threads):
    pytest.importorskip("torch")
    done = subprocess.run(
        [sys.executable, "-c", _CHANGING_TORCH_TARGETS, str(rows), str(n), str(n_threads), "200"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


_CHANGING_LOGITS = textwrap.dedent(
    """
    import sys, threading
    import numpy as np
    import softmaxkit as smk

    rows, n, threads, hostile = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[5] == "1"
    smk.set_num_threads(threads)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((rows, n)).astype(np.float32)
    t = rng.integers(0, n // 2, rows)
    cols = np.arange(n // 2, n, 7)
    # entries far below every row maximum: -inf or -1e4 leaves every row's
    # maximum, sum and probabilities as they are, so each output element is
    # one of two valid values
    low = [np.float32(-np.inf), np.float32(-1e4)]
    wild = [np.float32(v) for v in (np.nan, np.inf, -np.inf, 3e38, -3e38, 0.0, 80.0)]
    values = wild if hostile else low
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            x[:, cols] = values[i % len(values)]
            i += 1

    calls = {
        "softmax": lambda: smk.softmax(x),
        "log_softmax": lambda: smk.log_softmax(x),
        "logsumexp": lambda: smk.logsumexp(x),
        "cross_entropy": lambda: smk.cross_entropy(x, t, reduction="none", return_grad=True),
    }
    valid = {}
    for v in low:
        x[:, cols] = v
        valid[float(v)] = {k: f() for k, f in calls.items()}
    th = threading.Thread(target=writer)
    th.start()
    try:
        for i in range(int(sys.argv[4])):
            name = list(calls)[i % len(calls)]
            got = calls[name]()
            if hostile:
                continue
            got = got if isinstance(got, tuple) else (got,)
            for j, part in enumerate(got):
                options = [v[name] if isinstance(v[name], tuple) else (v[name],) for v in valid.values()]
                match = np.zeros(part.shape, bool)
                for o in options:
                    match |= (part == o[j]) | (np.isnan(part) & np.isnan(o[j]))
                assert match.all(), f"{name}: an element equal to neither valid answer"
    finally:
        stop.set()
        th.join()
    """
)


# A thread writing the logits during calls: no crash, and where the writes
# cannot change the answer (entries far below the maxima), every element is
# one of the valid values.  Hostile writes (NaN, inf, huge values) may give
# any mixture, but never a crash or a read out of bounds.
@pytest.mark.parametrize("hostile", [False, True], ids=["harmless writes", "hostile writes"])
@pytest.mark.parametrize(("rows", "n", "n_threads"), [(64, 1000, 2), (4, 70001, 2)])
def test_logits_changed_during_calls(rows, n, n_threads, hostile):
    done = subprocess.run(
        [sys.executable, "-c", _CHANGING_LOGITS, str(rows), str(n), str(n_threads), "200", str(int(hostile))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
