"""softmaxkit.torch.distillation_loss: gradcheck in both logits, equality with the
NumPy path, torch.compile, the module and dispatch from softmaxkit.distillation_loss."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import softmaxkit as smk  # noqa: E402
import softmaxkit.torch as smt  # noqa: E402

DIVERGENCES = ["forward_kl", "reverse_kl", "jsd"]
REDUCTIONS = ["batchmean", "sum", "none"]


def _pair(shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(shape, generator=g, dtype=torch.float64) * 3).to(dtype)
    t = (torch.randn(shape, generator=g, dtype=torch.float64) * 3).to(dtype)
    return s, t


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_student_and_teacher(divergence, reduction):
    s, t = _pair((4, 5))
    s[1, 2] = t[1, 2] = -float("inf")
    s.requires_grad_(True)
    t.requires_grad_(True)
    y = torch.tensor([0, 1, -100, 4])

    def f(a, b):
        return smt.distillation_loss(
            a, b, divergence=divergence, beta=0.3, temperature=1.5, scale_by_temperature_squared=True,
            target=y, hard_label_weight=0.5, reduction=reduction,
        )

    assert torch.autograd.gradcheck(f, (s, t))
    assert torch.autograd.gradcheck(lambda a: f(a, t.detach()), (s,))
    assert torch.autograd.gradcheck(lambda b: f(s.detach(), b), (t,))


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_equals_the_numpy_path(divergence, reduction, dtype):
    s, t = _pair((3, 6, 4), dtype=dtype, seed=1)
    y = torch.tensor([[0, 5, -100, 2], [1, 1, 1, -100], [3, 4, 5, 0]])
    kw = dict(divergence=divergence, beta=0.7, temperature=2.0, hard_label_weight=0.25, reduction=reduction)
    sg, tg = s.clone().requires_grad_(True), t.clone().requires_grad_(True)
    loss = smt.distillation_loss(sg, tg, target=y, dim=1, **kw)
    gs, gt = torch.autograd.grad(loss.sum(), (sg, tg))
    as_np = lambda a: a.numpy()  # noqa: E731
    if dtype == torch.bfloat16:
        ml_dtypes = pytest.importorskip("ml_dtypes")
        as_np = lambda a: a.float().numpy().astype(ml_dtypes.bfloat16)  # noqa: E731
    nl, (ns, nt) = smk.distillation_loss(as_np(s), as_np(t), targets=y.numpy(), axis=1, return_grad=True, **kw)
    assert loss.dtype == dtype and gs.dtype == dtype and gt.dtype == dtype
    # The same formulas; torch's and NumPy's exp and log may differ by an ULP.
    eps = torch.finfo(dtype).eps
    for got, want in ((loss.detach(), nl), (gs, ns), (gt, nt)):
        want = np.asarray(want, dtype=np.float64)
        np.testing.assert_allclose(got.double().numpy(), want, rtol=4 * eps, atol=4 * eps * float(np.max(np.abs(want))))


def test_only_the_logits_that_require_grad_get_one():
    s, t = _pair((3, 4), seed=2)
    s.requires_grad_(True)
    smt.distillation_loss(s, t).backward()
    assert s.grad is not None and t.grad is None
    s2, t2 = _pair((3, 4), seed=2)
    t2.requires_grad_(True)
    smt.distillation_loss(s2, t2, divergence="reverse_kl").backward()
    assert t2.grad is not None and s2.grad is None


def test_cotangent_scales_the_saved_gradients():
    s, t = _pair((3, 4), seed=3)
    s.requires_grad_(True)
    rows = smt.distillation_loss(s, t, divergence="jsd", reduction="none")
    w = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    (g,) = torch.autograd.grad(rows, s, w, retain_graph=True)
    (g1,) = torch.autograd.grad((rows * w).sum(), s)
    torch.testing.assert_close(g, g1, rtol=0, atol=0)
    loss = smt.distillation_loss(s, t, divergence="jsd")
    (g2,) = torch.autograd.grad(loss * 4.0, s, retain_graph=True)
    (g3,) = torch.autograd.grad(loss, s)
    torch.testing.assert_close(g2, 4.0 * g3, rtol=0, atol=0)


def test_confident_row_keeps_its_gradient():
    """p - q at the argmax from the other classes: torch's softmax(s) - q is exactly 0 here."""
    s = torch.tensor([[30.0, 0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[0.0, -float("inf"), -float("inf")]])
    smt.distillation_loss(s, t).backward()
    naive = torch.softmax(s.detach(), -1) - torch.softmax(t, -1)
    assert naive[0, 0] == 0 and s.grad[0, 0] < 0
    torch.testing.assert_close(s.grad[0, 0], -2.0 * torch.exp(torch.tensor(-30.0)), rtol=1e-6, atol=0)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_torch_compile_fullgraph_matches_eager(divergence):
    s, t = _pair((5, 7), dtype=torch.float32, seed=4)
    y = torch.tensor([0, 6, -100, 2, 3])

    def f(a, b):
        return smt.distillation_loss(a, b, divergence=divergence, temperature=2.0, target=y, hard_label_weight=0.3)

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    results = []
    for fn in (f, compiled):
        a, b = s.clone().requires_grad_(True), t.clone().requires_grad_(True)
        loss = fn(a, b)
        loss.backward()
        results.append((loss.detach(), a.grad, b.grad))
    for e, c in zip(*results):
        torch.testing.assert_close(c, e, rtol=0, atol=0)


def test_module_and_errors():
    s, t = _pair((2, 3, 5), seed=5)
    module = smt.DistillationLoss(divergence="jsd", beta=0.2, temperature=3.0, dim=1, reduction="sum")
    torch.testing.assert_close(
        module(s, t), smt.distillation_loss(s, t, divergence="jsd", beta=0.2, temperature=3.0, dim=1, reduction="sum"), rtol=0, atol=0
    )
    with pytest.raises(ValueError, match=r"beta must be in \(0, 1\) for divergence='jsd'"):
        smt.DistillationLoss(divergence="jsd", beta=1.0)
    with pytest.raises(ValueError, match="hard_label_weight=0.5 needs target"):
        smt.distillation_loss(s, t, hard_label_weight=0.5)
    with pytest.raises(ValueError, match=r"target\[0\] = 7 is not a class index"):
        smt.distillation_loss(s[0], t[0], target=torch.tensor([7, 0, 1]))
    with pytest.raises(ValueError, match="teacher_logits must have the shape of student_logits"):
        smt.distillation_loss(s, t[:1])


def test_dispatch_from_the_numpy_api_keeps_autograd():
    s, t = _pair((4, 6), seed=6)
    s.requires_grad_(True)
    loss, (gs, gt) = smk.distillation_loss(s, t, divergence="reverse_kl", return_grad=True)
    assert isinstance(loss, torch.Tensor) and loss.grad_fn is not None
    (expected,) = torch.autograd.grad(smt.distillation_loss(s, t, divergence="reverse_kl"), s)
    torch.testing.assert_close(gs, expected, rtol=0, atol=0)
    nl, (ns, nt) = smk.distillation_loss(s.detach().numpy(), t.numpy(), divergence="reverse_kl", return_grad=True)
    np.testing.assert_array_equal(gt.numpy(), nt)
