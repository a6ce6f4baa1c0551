"""The fused linear cross-entropy with the Triton kernel computing each chunk's
loss and logit gradient: against the other path (native or formulas) for
every option and reduction (a soft cap too, applied inside the kernel),
against mpmath on exactly representable logits, with and without the cap,
and under torch.compile.

Without a GPU the kernel runs in Triton's interpreter (see conftest.py);
``wide_rows`` makes the 50 classes four blocks.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import softmaxkit.torch as smt
from tests import reference as ref
from tests.backend_triton._paths import both_paths, other_path
from tests.backend_triton.test_triton_cross_entropy import NP_DTYPE, ULP, _same

V, H = 50, 8


def _inputs(dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(6, H, generator=g).to(dtype).to(device)
    w = (torch.randn(V, H, generator=g) * 2).to(dtype).to(device)
    b = torch.randn(V, generator=g).to(dtype).to(device)
    t = torch.tensor([1, 4, -100, 49, 0, 7], device=device)
    return h, w, b, t


def _run(h, w, b, t, cotangent=2.0, **options):
    """The loss and the gradients of ``cotangent * loss.sum()`` in the hidden states, weight and bias."""
    leaves = [v.detach().requires_grad_(True) for v in (h, w, b)]
    loss = smt.linear_cross_entropy(leaves[0], leaves[1], t, linear_bias=leaves[2], **options)
    grads = torch.autograd.grad(loss.sum() * cotangent, leaves)
    return (loss,) + grads


def _same_sums(g, g0, dtype):
    """Gradients that are sums over tokens (which may cancel): within the
    contract's ULPs of the tensor's largest entry."""
    _same(g.reshape(1, -1), g0.reshape(1, -1), dtype, rowwise=True)


CASES = [
    ("mean", {}, False),
    ("sum", {"label_smoothing": 0.1, "z_loss": 1e-4, "weighted": True}, True),
    ("none", {"label_smoothing": 0.1}, True),
]


@pytest.mark.parametrize(("reduction", "options", "blocks"), CASES, ids=["mean", "sum-options-blocks", "none-blocks"])
def test_linear_loss_matches_the_other_path(request, launches, triton_path, reduction, options, blocks):
    if blocks:
        request.getfixturevalue("wide_rows")
    h, w, b, t = _inputs(torch.float32, triton_path)
    options = dict(options)
    if options.pop("weighted", False):
        options["weight"] = torch.rand(V, generator=torch.Generator().manual_seed(2)).to(triton_path) + 0.5
    # a cotangent of 2 (the forward pass's gradients scaled) and of 3 (recomputed)
    for cotangent in (2.0, 3.0):
        got, other = both_paths(lambda c=cotangent: _run(h, w, b, t, c, reduction=reduction, **options))
        _same(got[0], other[0], torch.float32)
        for g, g0 in zip(got[1:], other[1:]):
            assert g.dtype == torch.float32
            _same_sums(g, g0, torch.float32)
    assert "_ce_kernel" in launches


def test_bfloat16_linear_loss_matches_the_other_path(launches, triton_path):
    h, w, b, t = _inputs(torch.bfloat16, triton_path)
    got, other = both_paths(lambda: _run(h, w, b, t, label_smoothing=0.05))
    assert "_ce_kernel" in launches
    assert all(v.dtype == torch.bfloat16 for v in got)
    _same(got[0], other[0], torch.bfloat16)
    for g, g0 in zip(got[1:], other[1:]):
        _same_sums(g, g0, torch.bfloat16)


def test_linear_loss_rows_are_exact_on_confident_rows(launches, triton_path):
    """Logits that float32 forms exactly (integers times eighths), leading
    by 6 to 60: each token's loss within the contract of the mpmath value."""
    rng = np.random.default_rng(4)
    h = rng.integers(-3, 4, size=(5, H)).astype(np.float32)
    w = (rng.integers(-8, 9, size=(V, H)) / 8).astype(np.float32)
    h[:, 0] = [2, 6, 20, 40, 60]
    w[:, 0] = 0
    w[7, 0] = 1  # class 7 leads by about h[:, 0]
    t = np.array([7, 7, 7, 3, 7])
    loss = smt.linear_cross_entropy(
        torch.tensor(h).to(triton_path), torch.tensor(w).to(triton_path), torch.tensor(t).to(triton_path), reduction="none"
    )
    assert "_ce_kernel" in launches
    logits = h.astype(np.float64) @ w.astype(np.float64).T
    for i, row in enumerate(logits):
        exact, _ = ref.cross_entropy(ref.to_mp(row), ref.hard_coef(V, int(t[i]))[0])
        assert ref.ulp_error([float(loss[i])], [exact], np.float32) <= ULP[torch.float32]


@pytest.mark.parametrize("blocks", [False, True], ids=["one-pass", "blocks"])
def test_soft_cap_in_the_kernel_matches_the_other_path(request, launches, triton_path, blocks):
    """The cap and its slope inside the kernel (float64 there) against the
    float64 cap of the other path: loss and gradients, with smoothing, z-loss,
    a -inf bias entry (a masked class stays masked) and a recomputing cotangent."""
    if blocks:
        request.getfixturevalue("wide_rows")
    h, w, b, t = _inputs(torch.float32, triton_path)
    b = b.clone()
    b[11] = -float("inf")
    for options in ({"softcap": 5.0}, {"softcap": 2.5, "label_smoothing": 0.1, "z_loss": 1e-4, "reduction": "none"}):
        got, other = both_paths(lambda o=options: _run(h, w, b, t, 3.0, **o))
        _same(got[0], other[0], torch.float32)
        for g, g0 in zip(got[1:], other[1:]):
            _same_sums(g, g0, torch.float32)
    assert "_ce_kernel" in launches


def test_soft_cap_edge_rows_match_the_other_path(launches, triton_path):
    """Infinite logits keep their value under the cap, with slope 0: a +inf
    class takes every row's mass (loss 0 on it, +inf elsewhere), a target on
    a -inf class has loss +inf, and the gradients stay finite."""
    h, w, b, _ = _inputs(torch.float32, triton_path)
    b = b.clone()
    b[3] = float("inf")
    b[11] = -float("inf")
    t = torch.tensor([3, 4, -100, 49, 0, 11], device=triton_path)
    got, other = both_paths(lambda: _run(h, w, b, t, 3.0, softcap=4.0, reduction="none"))
    assert "_ce_kernel" in launches
    assert got[0].tolist()[:3] == [0.0, float("inf"), 0.0]
    _same(got[0], other[0], torch.float32)
    for g, g0 in zip(got[1:], other[1:]):
        assert torch.isfinite(g).all()
        _same_sums(g, g0, torch.float32)


def _capped_confident_rows(cap):
    """Hidden states and weights whose float32 logits are exact (integers
    times eighths): class 7 leads by 6 to 90 before the cap, so that after it
    the loss of a row whose target is 7 is a sum of a few ``exp(cap(x_j) -
    cap(x_7))`` below 1e-4, where a float32 rounding of ``cap(x_7)`` would
    show; row 3's target is another class."""
    rng = np.random.default_rng(5)
    h = rng.integers(-3, 4, size=(6, H)).astype(np.float32)
    w = (rng.integers(-8, 9, size=(V, H)) / 8).astype(np.float32)
    h[:, 0] = [6, 20, 40, 60, 90, 45]
    w[:, 0] = 0
    w[7, 0] = 1
    return h, w, np.array([7, 7, 7, 3, 7, 7])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_soft_cap_rows_are_exact_on_confident_rows(launches, triton_path, dtype):
    """Each token's loss within the contract of mpmath's, the cap applied in mpmath."""
    cap = 50.0
    h, w, t = _capped_confident_rows(cap)
    loss = smt.linear_cross_entropy(
        torch.tensor(h).to(dtype).to(triton_path), torch.tensor(w).to(dtype).to(triton_path),
        torch.tensor(t).to(triton_path), reduction="none", softcap=cap,
    )
    assert "_ce_kernel" in launches
    assert loss.dtype == dtype
    logits = h.astype(np.float64) @ w.astype(np.float64).T
    for i, row in enumerate(logits):
        capped = [cap * ref.mp.tanh(v / cap) for v in ref.to_mp(row)]
        exact, _ = ref.cross_entropy(capped, ref.hard_coef(V, int(t[i]))[0])
        assert ref.ulp_error([float(loss[i])], [exact], NP_DTYPE[dtype]) <= ULP[dtype]


def test_compiled_linear_loss_runs_the_kernel(launches, triton_path):
    h, w, b, t = _inputs(torch.float32, triton_path)

    def step(h, w, b):
        return smt.linear_cross_entropy(h, w, t, linear_bias=b, label_smoothing=0.1)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    leaves = [v.detach().requires_grad_(True) for v in (h, w, b)]
    loss = compiled(*leaves)
    grads = torch.autograd.grad(loss, leaves)
    assert "_ce_kernel" in launches
    other = other_path(lambda: _run(h, w, b, t, 1.0, label_smoothing=0.1))
    _same(loss, other[0], torch.float32)
    for g, g0 in zip(grads, other[1:]):
        _same_sums(g, g0, torch.float32)
