"""linear_distillation_loss equals distillation_loss on the materialised logits, on every path."""

from __future__ import annotations

import numpy as np
import pytest

import softmaxkit as smk
from softmaxkit import kernels
from softmaxkit.numerics import linear as lin

try:
    import torch

    import softmaxkit.torch as smt
except ImportError:
    torch = smt = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")
PATHS = ["numpy", "numpy-generic", "torch", "torch-compiled"]
OPTIONS = [
    {"divergence": "forward_kl"},
    {"divergence": "reverse_kl", "temperature": 2.0, "scale_by_temperature_squared": True},
    {"divergence": "jsd", "beta": 0.3, "hard_label_weight": 0.5},
    {"divergence": "forward_kl", "reduction": "sum", "hard_label_weight": 1.0},
    {"divergence": "jsd", "beta": 0.7, "reduction": "none"},
]


@pytest.fixture(params=PATHS)
def path(request):
    if request.param.startswith("torch") and torch is None:
        pytest.skip("torch is not installed")
    if request.param == "numpy-generic":
        with kernels.disabled():
            yield request.param
    else:
        yield request.param


def run(path, hs, ws, ht, wt, targets, **options):
    """``(loss, d_student_hidden, d_student_weight)`` as NumPy arrays (gradients of loss.sum())."""
    if path.startswith("numpy"):
        loss, (dh, dw, _) = smk.linear_distillation_loss(hs, ws, ht, wt, targets=targets, return_grad=True, **options)
        return loss, dh, dw
    a, b = torch.tensor(hs, requires_grad=True), torch.tensor(ws, requires_grad=True)
    teacher = torch.tensor(ht), torch.tensor(wt)
    t = None if targets is None else torch.tensor(targets)

    def f(x, w):
        return smt.linear_distillation_loss(x, w, *teacher, t, **options)

    if path == "torch-compiled":
        torch._dynamo.reset()
        f = torch.compile(f, backend="aot_eager", fullgraph=True)
    loss = f(a, b)
    loss.sum().backward()
    return loss.detach().numpy(), a.grad.numpy(), b.grad.numpy()


def heads(rng, n=23, v=11, hs_width=6, ht_width=4, dtype=np.float32):
    """Small-integer heads: the float32 products are exact."""
    hs = rng.integers(-3, 4, size=(n, hs_width)).astype(dtype)
    ws = rng.integers(-3, 4, size=(v, hs_width)).astype(dtype)
    ht = rng.integers(-3, 4, size=(n, ht_width)).astype(dtype)
    wt = rng.integers(-4, 5, size=(v, ht_width)).astype(dtype)
    t = rng.integers(0, v, size=n)
    t[::5] = -100
    return hs, ws, ht, wt, t


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_equals_distillation_loss_on_the_materialised_logits(path, options):
    rng = np.random.default_rng(0)
    hs, ws, ht, wt, t = heads(rng)
    loss, dh, dw = run(path, hs, ws, ht, wt, t, **options)
    ref, (gs, _) = smk.distillation_loss(hs @ ws.T, ht @ wt.T, targets=t, return_grad=True, **options)
    assert loss.dtype == np.float32
    np.testing.assert_array_equal(loss, ref)
    u = np.finfo(np.float32).eps
    np.testing.assert_allclose(dh, gs @ ws, rtol=0, atol=8 * u * float(np.abs(gs).sum(axis=1).max() * np.abs(ws).max()))
    np.testing.assert_allclose(dw, gs.T @ hs, rtol=0, atol=30 * u * float(np.abs(gs).sum(axis=0).max() * np.abs(hs).max()))


def test_without_targets_every_row_counts(path):
    rng = np.random.default_rng(1)
    hs, ws, ht, wt, _ = heads(rng)
    loss, _, _ = run(path, hs, ws, ht, wt, None, divergence="reverse_kl")
    np.testing.assert_array_equal(loss, smk.distillation_loss(hs @ ws.T, ht @ wt.T, divergence="reverse_kl"))


def test_every_row_ignored_gives_zero_and_zero_gradients(path):
    rng = np.random.default_rng(2)
    hs, ws, ht, wt, t = heads(rng)
    loss, dh, dw = run(path, hs, ws, ht, wt, np.full_like(t, -100), hard_label_weight=1.0)
    assert loss == 0 and not np.any(dh) and not np.any(dw)


def test_chunks_split_the_tokens_unevenly(path, monkeypatch):
    rng = np.random.default_rng(3)
    hs, ws, ht, wt, t = heads(rng, n=41)
    whole = run(path, hs, ws, ht, wt, t, divergence="jsd")
    monkeypatch.setattr(lin, "chunk_rows", lambda *args: 6)
    chunked = run(path, hs, ws, ht, wt, t, divergence="jsd")
    np.testing.assert_array_equal(chunked[0], whole[0])
    np.testing.assert_array_equal(chunked[1], whole[1])
    np.testing.assert_allclose(chunked[2], whole[2], rtol=1e-6, atol=1e-7)


def test_float64_and_leading_dimensions():
    rng = np.random.default_rng(4)
    hs, ws, ht, wt = (rng.standard_normal(s) for s in ((2, 3, 5), (7, 5), (2, 3, 4), (7, 4)))
    loss, (dh, dw, db) = smk.linear_distillation_loss(
        hs, ws, ht, wt, student_bias=np.zeros(7), reduction="none", divergence="jsd", return_grad=True
    )
    ref, (gs, _) = smk.distillation_loss(hs @ ws.T, ht @ wt.T, reduction="none", divergence="jsd", return_grad=True)
    assert loss.shape == (2, 3) and dh.shape == hs.shape and db.shape == (7,)
    np.testing.assert_allclose(loss, ref, rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(dh, gs @ ws, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(db, gs.sum(axis=(0, 1)), rtol=1e-12, atol=1e-16)


@needs_torch
def test_gradcheck_float64():
    rng = np.random.default_rng(5)
    hs, ws, ht, wt = (torch.tensor(rng.standard_normal(s)) for s in ((6, 3), (5, 3), (6, 2), (5, 2)))
    bs = torch.tensor(rng.standard_normal(5), requires_grad=True)
    t = torch.tensor([0, 4, -100, 2, 2, 1])
    hs.requires_grad_(True)
    ws.requires_grad_(True)
    for options in ({}, {"divergence": "jsd", "reduction": "none", "hard_label_weight": 0.3}, {"divergence": "reverse_kl", "reduction": "sum", "temperature": 3.0}):
        assert torch.autograd.gradcheck(
            lambda a, b, c: smt.linear_distillation_loss(a, b, ht, wt, t, student_bias=c, **options), (hs, ws, bs)
        )


@needs_torch
def test_a_teacher_that_requires_a_gradient_is_refused():
    hs, ws = torch.ones(2, 3, requires_grad=True), torch.ones(4, 3)
    with pytest.raises(ValueError, match="teacher_weight requires a gradient"):
        smt.linear_distillation_loss(hs, ws, torch.ones(2, 3), torch.ones(4, 3, requires_grad=True))


@needs_torch
def test_bfloat16_student_head():
    rng = np.random.default_rng(6)
    hs, ws, ht, wt, t = heads(rng)
    a = torch.tensor(hs, dtype=torch.bfloat16, requires_grad=True)
    b = torch.tensor(ws, dtype=torch.bfloat16, requires_grad=True)
    loss = smt.linear_distillation_loss(a, b, torch.tensor(ht, dtype=torch.bfloat16), torch.tensor(wt, dtype=torch.bfloat16), torch.tensor(t))
    loss.backward()
    ref, (gs, _) = smk.distillation_loss(hs @ ws.T, ht @ wt.T, targets=t, return_grad=True)
    assert loss.dtype == a.grad.dtype == b.grad.dtype == torch.bfloat16
    assert abs(float(loss.detach()) - float(ref)) <= 2 ** -8 * abs(float(ref))
    np.testing.assert_allclose(a.grad.float().numpy(), gs @ ws, rtol=2 ** -7, atol=1e-3 * np.abs(gs @ ws).max())


def test_errors_name_the_argument():
    h, w = np.ones((2, 3)), np.ones((4, 3))
    with pytest.raises(ValueError, match="teacher_hidden"):
        smk.linear_distillation_loss(h, w, np.ones((3, 3)), w)
    with pytest.raises(ValueError, match="teacher_weight has 5 classes"):
        smk.linear_distillation_loss(h, w, h, np.ones((5, 3)))
    with pytest.raises(ValueError, match="beta"):
        smk.linear_distillation_loss(h, w, h, w, divergence="jsd", beta=0.0)
    with pytest.raises(ValueError, match="targets"):
        smk.linear_distillation_loss(h, w, h, w, targets=np.array([0, 9]))
    with pytest.raises(ValueError, match="hard_label_weight"):
        smk.linear_distillation_loss(h, w, h, w, hard_label_weight=1.0)
