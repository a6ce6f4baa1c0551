"""Peak memory of the generic (array-API) path: bounded row chunks.

Each case runs in a fresh interpreter and measures the growth of the peak
resident set (``VmHWM``, reset just before) over one call, the inputs
already in memory.
The generic path may hold its output, one copy of the input where the
layout needs it, and a few chunks of working-precision temporaries: the
bound is 2.5 times the output plus a fixed allowance for the chunks.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from softmaxkit.frontend import layout as _layout

MiB = 1 << 20
ROWS, COLS = 128, 65536  # 32 MiB of float32 logits: large next to the chunks
# The chunks' temporaries (about a dozen live at once, each at most
# CHUNK_BYTES; measured 16 to 40 MiB) and allocator slack.
ALLOWANCE = 24 * _layout.CHUNK_BYTES + 16 * MiB

CODE = r"""
import sys
import numpy as np
import softmaxkit as smk

op, dtype_name, rows, cols = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
SECOND_INPUT = {"cross_entropy_probs", "kl_div", "softmax_vjp", "log_softmax_vjp", "logsumexp_vjp", "bce", "bce_1d", "bce_grad"}
shape = (cols, rows) if op.endswith("axis0") else (rows, cols)
if dtype_name.startswith("torch-"):
    # torch tensors down the generic path, as any other array-API array
    # (the public functions would hand them to softmaxkit.torch).
    import torch
    from softmaxkit.frontend import registry as _dispatch
    _dispatch.backend_for = lambda x: None
    m, dtype = torch, getattr(torch, dtype_name[len("torch-"):])
elif dtype_name == "bfloat16":
    import ml_dtypes
    m, dtype = np, np.dtype(ml_dtypes.bfloat16)
else:
    m, dtype = np, np.dtype(dtype_name)
x = m.zeros(shape, dtype=dtype)
x[..., ::3] = 1
x[..., 1::7] = -2
t = m.arange(rows) % cols
mask = m.arange(cols) % 5 != 0
# A second input of x's shape (targets, the other distribution, cotangents).
probs = m.full(shape, 1.0 / cols, dtype=dtype) if op in SECOND_INPUT else None
CALLS = {
    "softmax": lambda x, t, q: smk.softmax(x, temperature=0.7),
    "softmax_axis0": lambda x, t, q: smk.softmax(x, axis=0),
    "log_softmax": lambda x, t, q: smk.log_softmax(x),
    "log_softmax_where": lambda x, t, q: smk.log_softmax(x, where=mask),
    "logsumexp": lambda x, t, q: smk.logsumexp(x),
    "logsumexp_b_sign": lambda x, t, q: smk.logsumexp(x, b=-mask.astype(x.dtype), return_sign=True),
    "cross_entropy": lambda x, t, q: smk.cross_entropy(x, t),
    "cross_entropy_grad": lambda x, t, q: smk.cross_entropy(x, t, label_smoothing=0.1, return_grad=True),
    "cross_entropy_probs": lambda x, t, q: smk.cross_entropy(x, q, return_grad=True),
    "entropy": lambda x, t, q: smk.entropy(x),
    "kl_div": lambda x, t, q: smk.kl_div(x, q),
    "softmax_vjp": lambda x, t, q: smk.softmax_vjp(q, x),
    "log_softmax_vjp": lambda x, t, q: smk.log_softmax_vjp(q, x),
    "logsumexp_vjp": lambda x, t, q: smk.logsumexp_vjp(x, q[..., 0]),
    "nll_loss": lambda x, t, q: smk.nll_loss(x, t),
    "nll_loss_grad": lambda x, t, q: smk.nll_loss(x, t, weight=m.ones(cols, dtype=dtype), return_grad=True),
    "bce": lambda x, t, q: smk.binary_cross_entropy_with_logits(x, q),
    "bce_1d": lambda x, t, q: smk.binary_cross_entropy_with_logits(m.reshape(x, (-1,)), m.reshape(q, (-1,))),
    "bce_grad": lambda x, t, q: smk.binary_cross_entropy_with_logits(x, q, pos_weight=m.ones(cols, dtype=dtype), return_grad=True),
}
# Imports and first-call set-up are not counted.
if op.endswith("axis0"):
    CALLS[op](x[:, :2], t[:2], None)
else:
    CALLS[op](x[:2], t[:2], None if probs is None else probs[:2])
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) * 1024
# This process's own peak from here on (VmHWM, reset): ru_maxrss would carry
# the parent's peak (a large test runner's) across exec.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
out = CALLS[op](x, t, probs)
peak = status("VmHWM")
outs = out if isinstance(out, tuple) else (out,)
print(peak - before, sum(o.nbytes for o in outs))
"""


def peak_growth(op: str, dtype: str, rows: int = ROWS, cols: int = COLS) -> tuple[int, int]:
    """(peak RSS growth, output bytes) of one generic-path call in a fresh process."""
    env = dict(os.environ, SOFTMAXKIT_DISABLE_NATIVE="1")
    done = subprocess.run(
        [sys.executable, "-c", CODE, op, dtype, str(rows), str(cols)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    growth, out_bytes = (int(v) for v in done.stdout.split())
    return growth, out_bytes


CASES = [
    ("softmax", "float32"),
    ("softmax_axis0", "float32"),
    ("log_softmax", "float16"),
    ("log_softmax_where", "float32"),
    ("logsumexp", "float32"),
    ("logsumexp_b_sign", "float32"),
    ("cross_entropy", "float32"),
    ("cross_entropy_grad", "float32"),
    ("cross_entropy_probs", "float32"),
    ("softmax", "bfloat16"),
    ("cross_entropy_grad", "bfloat16"),
    ("softmax", "torch-bfloat16"),
    ("cross_entropy_grad", "torch-float32"),
    ("entropy", "float32"),
    ("kl_div", "float32"),
    ("softmax_vjp", "float32"),
    ("log_softmax_vjp", "float16"),
    ("logsumexp_vjp", "float32"),
    ("nll_loss", "float32"),
    ("nll_loss_grad", "float32"),
    ("bce", "float32"),
    ("bce_1d", "float32"),
    ("bce_grad", "float32"),
]


# What broke: the generic path converted the whole input to float64 and kept a
# dozen full-size temporaries: cross_entropy with its gradient peaked at about
# 21 times the gradient (42 times for bfloat16), softmax at 12 times; then
# logsumexp, entropy, kl_div, the VJPs, nll_loss and the binary cross-entropy
# still did (6 to 19 times the input).
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("op, dtype", CASES)
def test_generic_path_peak_memory_is_bounded(op, dtype):
    if dtype.startswith("torch-"):
        pytest.importorskip("torch")
    elif dtype == "bfloat16":
        pytest.importorskip("ml_dtypes")
    growth, out_bytes = peak_growth(op, dtype)
    bound = 2.5 * out_bytes + ALLOWANCE
    assert growth <= bound, f"peak growth {growth / MiB:.0f} MiB for {out_bytes / MiB:.0f} MiB of output (bound {bound / MiB:.0f} MiB)"


def test_chunk_rows_splits_rows_never_a_row():
    assert _layout.chunk_rows(10, 1) >= 10
    assert _layout.chunk_rows(_layout.CHUNK_BYTES, 8) == 1  # a row wider than the budget is one chunk
    assert _layout.chunk_rows(0, 8) >= 1
    step = _layout.chunk_rows(1000, 8)
    assert step * 1000 * 8 <= max(_layout.CHUNK_BYTES, 1000 * 8)


def _calls():
    import ml_dtypes

    import softmaxkit as smk

    rng = np.random.default_rng(7)
    x = rng.normal(scale=8.0, size=(5, 3, 7))
    x[1, 2, :] = -np.inf
    x[2, 0, 3] = np.inf
    x[3, 1, 2] = np.nan
    t = rng.integers(0, 7, size=(5, 3))
    t[0, 0] = -100
    t_axis1 = rng.integers(0, 3, size=(5, 7))
    q = rng.random((5, 3, 7))
    mask = rng.random((3, 7)) > 0.3
    return [
        ("softmax", lambda a: smk.softmax(a, temperature=0.3)),
        ("softmax_axis0", lambda a: smk.softmax(a, axis=0)),
        ("softmax_axes", lambda a: smk.softmax(a, axis=(0, 2))),
        ("log_softmax_where", lambda a: smk.log_softmax(a, where=mask, temperature=3.0)),
        ("logsumexp", lambda a: smk.logsumexp(a, axis=1)),
        ("logsumexp_axes", lambda a: smk.logsumexp(a, axis=(0, 2), keepdims=True, where=mask)),
        ("logsumexp_b", lambda a: smk.logsumexp(a, b=q[0] - 0.5, return_sign=True)),
        ("logsumexp_b_grows", lambda a: smk.logsumexp(a[0, 0], b=q[:, 0], axis=0)),
        ("entropy", lambda a: smk.entropy(a, axis=1)),
        ("kl_div", lambda a: smk.kl_div(a, a[::-1], axis=1)),
        ("kl_div_log_probs", lambda a: smk.kl_div(smk.log_softmax(a), smk.log_softmax(a[::-1]), log_probs=True)),
        ("softmax_vjp", lambda a: smk.softmax_vjp(smk.softmax(a, axis=0), a, axis=0)),
        ("log_softmax_vjp", lambda a: smk.log_softmax_vjp(smk.log_softmax(a), a[::-1])),
        ("logsumexp_vjp", lambda a: smk.logsumexp_vjp(a, a[:, 0, :], axis=1)),
        ("ce_mean", lambda a: smk.cross_entropy(a, t, label_smoothing=0.2, z_loss=1e-3, return_grad=True)),
        ("ce_axis1", lambda a: smk.cross_entropy(a, t_axis1, axis=1, reduction="sum", return_grad=True)),
        ("ce_probs", lambda a: smk.cross_entropy(a, q.astype(a.dtype), weight=np.arange(1.0, 8.0), return_grad=True)),
        ("nll_mean", lambda a: smk.nll_loss(a, t, weight=np.arange(1.0, 8.0), return_grad=True)),
        ("nll_none", lambda a: smk.nll_loss(a, t_axis1, axis=1, reduction="none", return_grad=True)),
        ("bce_mean", lambda a: smk.binary_cross_entropy_with_logits(a, q.astype(a.dtype), weight=q[0, :, :1], pos_weight=np.arange(7.0), return_grad=True)),
        ("bce_sum_1d", lambda a: smk.binary_cross_entropy_with_logits(a[1:, 0, 0], q[1:, 0, 0], reduction="sum", return_grad=True)),
        # Sums over several blocks and chunks, and a partial block.
        ("bce_long_1d", lambda a: smk.binary_cross_entropy_with_logits(np.tile(a.ravel(), 100)[:10000], np.tile(q.ravel(), 100)[:10000])),
        ("bce_none", lambda a: smk.binary_cross_entropy_with_logits(a[:, 0], q[:, 1], reduction="none", return_grad=True)),
        ("ce_none", lambda a: smk.cross_entropy(a, t, reduction="none", return_grad=True)),
    ], x, ml_dtypes


def _bits(a):
    return np.ascontiguousarray(np.atleast_1d(np.asarray(a))).view(np.uint8)


# Chunking must only split rows: any chunk size gives the same bits.
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_chunked_results_are_bitwise_identical(dtype, monkeypatch):
    pytest.importorskip("ml_dtypes")
    from softmaxkit import kernels as _native

    calls, x, ml_dtypes = _calls()
    dt = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    x = x.astype(dt)
    with _native.disabled():
        whole = [call(x) for _, call in calls]
        # One row per chunk: every chunk boundary is exercised.
        monkeypatch.setattr(_layout, "CHUNK_BYTES", 1)
        split = [call(x) for _, call in calls]
    for (name, _), a, b in zip(calls, whole, split):
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert u.dtype == v.dtype and u.shape == v.shape, name
            np.testing.assert_array_equal(_bits(u), _bits(v), err_msg=name)


def test_torch_tensors_through_the_generic_path(monkeypatch):
    # The chunked generic path is written against the array API: torch
    # tensors sent down it (the public functions hand them to
    # softmaxkit.torch) come back as tensors, bitwise the same at any chunk
    # size, and equal to NumPy's results for float32.
    torch = pytest.importorskip("torch")
    import softmaxkit as smk
    from softmaxkit import kernels as _native
    from softmaxkit.frontend import registry as _dispatch

    monkeypatch.setattr(_dispatch, "backend_for", lambda x: None)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, 7, generator=gen) * 5
    t = torch.randint(0, 7, (6, 5), generator=gen)

    def run(a):
        return [
            smk.softmax(a, temperature=0.3),
            smk.log_softmax(a, axis=0),
            smk.softmax(a, axis=(0, 2)),
            *smk.cross_entropy(a, t, label_smoothing=0.1, return_grad=True),
        ]

    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        a = x.to(dtype)
        whole = run(a)
        with monkeypatch.context() as m:
            m.setattr(_layout, "CHUNK_BYTES", 1)
            split = run(a)
        for u, v in zip(whole, split):
            assert isinstance(u, torch.Tensor) and u.dtype == dtype
            assert torch.equal(u, v)
    with _native.disabled():
        expected = [
            smk.softmax(x.numpy(), temperature=0.3),
            smk.log_softmax(x.numpy(), axis=0),
            smk.softmax(x.numpy(), axis=(0, 2)),
            *smk.cross_entropy(x.numpy(), t.numpy(), label_smoothing=0.1, return_grad=True),
        ]
    for u, v in zip(run(x), expected):
        np.testing.assert_array_equal(u.numpy(), v)


# What broke: softmaxkit.torch split its rows by an element count of its own,
# so the library had two chunk sizes and _layout.CHUNK_BYTES did not govern it.
def test_torch_rows_follow_the_one_chunk_rule(monkeypatch):
    torch = pytest.importorskip("torch")
    import softmaxkit.torch as smt
    from softmaxkit import kernels as _native
    from softmaxkit.backends.torch import execution

    seen = []

    def compute(rows):
        seen.append(rows.shape[0])
        return (rows * 2,)

    monkeypatch.setattr(_layout, "CHUNK_BYTES", 3 * 4 * 8)  # three rows of 4 float64 entries
    with torch.no_grad():
        out = execution.by_rows(compute, torch.ones(10, 4, dtype=torch.float32))[0]
    assert seen == [3, 3, 3, 1] and torch.equal(out, torch.full((10, 4), 2.0))

    gen = torch.Generator().manual_seed(9)
    x = torch.randn(37, 11, generator=gen)
    t = torch.randint(0, 11, (37,), generator=gen)

    def run():
        a = x.clone().requires_grad_()
        loss = smt.cross_entropy(a, t, label_smoothing=0.1)
        loss.backward()
        with torch.no_grad():
            return loss.detach(), a.grad, smt.softmax(x, 1)

    with _native.disabled():
        split = run()
        monkeypatch.setattr(_layout, "CHUNK_BYTES", 1 << 30)
        whole = run()
    for u, v in zip(split, whole):
        assert torch.equal(u, v)


# What broke: the chunked functions write each chunk into a preallocated
# output, which JAX arrays (immutable) refuse: logsumexp with b or
# return_sign, entropy, kl_div, the VJPs and nll_loss raised TypeError.
def test_jax_arrays_through_the_chunked_functions():
    jnp = pytest.importorskip("jax.numpy")
    import softmaxkit as smk

    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 5)).astype(np.float32)
    t = rng.integers(0, 5, size=6)
    calls = [
        lambda a, t: smk.logsumexp(a, b=a[0] * 0 - 1, return_sign=True),
        lambda a, t: smk.logsumexp(a, axis=0, return_sign=True),
        lambda a, t: smk.entropy(a),
        lambda a, t: smk.kl_div(a, a[::-1]),
        lambda a, t: smk.softmax_vjp(a, a[::-1]),
        lambda a, t: smk.log_softmax_vjp(a, a[::-1], axis=0),
        lambda a, t: smk.logsumexp_vjp(a, a[:, 0]),
        lambda a, t: smk.nll_loss(a, t, return_grad=True),
    ]
    for call in calls:
        got, want = call(jnp.asarray(x), jnp.asarray(t)), call(x, t)
        for u, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            assert not isinstance(u, np.ndarray)
            np.testing.assert_allclose(np.asarray(u), w, rtol=2e-6, atol=0)
