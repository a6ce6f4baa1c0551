"""The fused linear losses' custom operators: opcheck (schema, fake implementation, autograd registration, AOT dispatch)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from softmaxkit.backends.torch import linear, linear_distillation  # noqa: E402


def _rand(*shape, seed=0, dtype=torch.float32, grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_(grad)


CE_CASES = [
    dict(reduction="mean"),
    dict(reduction="none", softcap=3.0),
    dict(reduction="sum", normalizer=4.0, label_smoothing=0.1, z_loss=1e-3, bias=True, weight=True),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CE_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_opcheck_linear_cross_entropy(case, dtype):
    h, w = _rand(6, 4, dtype=dtype, grad=True), _rand(9, 4, seed=1, dtype=dtype, grad=True)
    b = _rand(9, seed=2, dtype=dtype, grad=True) if case.get("bias") else None
    t = torch.tensor([0, 8, -100, 3, 3, 1])
    class_w = torch.linspace(0.5, 2.0, 9, dtype=torch.float64) if case.get("weight") else None
    options = (-100, case.get("label_smoothing", 0.0), case.get("z_loss", 0.0), case.get("softcap"), case["reduction"], case.get("normalizer"))
    torch.library.opcheck(linear.linear_cross_entropy_op, (h, w, b, t, class_w, *options, True, dtype))
    cotangent = _rand(6, seed=3) if case["reduction"] == "none" else torch.tensor(0.5)
    b = None if b is None else b.detach()
    torch.library.opcheck(linear.linear_cross_entropy_backward_op, (h.detach(), w.detach(), b, t, class_w, cotangent, *options))


@pytest.mark.parametrize("divergence", ["forward_kl", "jsd"])
@pytest.mark.parametrize("reduction", ["batchmean", "none"])
def test_opcheck_linear_distillation(divergence, reduction):
    hs, ws = _rand(5, 3, grad=True), _rand(7, 3, seed=1, grad=True)
    ht, wt = _rand(5, 2, seed=2), _rand(7, 2, seed=3)
    t = torch.tensor([0, 6, -100, 2, 2])
    options = (divergence, 0.4, 2.0, True, -100, 0.5, reduction)
    torch.library.opcheck(linear_distillation.linear_distillation_op, (hs, ws, None, ht, wt, None, t, *options, True, torch.float32))
    cotangent = _rand(5, seed=4) if reduction == "none" else torch.tensor(2.0)
    torch.library.opcheck(linear_distillation.linear_distillation_backward_op, (hs.detach(), ws.detach(), None, ht, wt, None, t, cotangent, *options))
