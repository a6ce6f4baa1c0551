"""softmaxkit.torch under autograd transforms: batched gradients and forward mode."""

import math

import pytest

torch = pytest.importorskip("torch")
TF = torch.nn.functional

import softmaxkit.torch as smt  # noqa: E402

INF = math.inf
TARGET = torch.tensor([0, 3, 1])
PROBS = torch.softmax(torch.linspace(-2.0, 2.0, 12, dtype=torch.float64).reshape(3, 4), 1)

# name -> (softmaxkit call, torch.nn.functional call) on logits of shape (3, 4)
OPS = {
    "softmax": (lambda x: smt.softmax(x, 1), lambda x: TF.softmax(x, 1)),
    "softmax-dim0": (lambda x: smt.softmax(x, 0), lambda x: TF.softmax(x, 0)),
    "log_softmax": (lambda x: smt.log_softmax(x, 1), lambda x: TF.log_softmax(x, 1)),
    "softmax-T": (lambda x: smt.softmax(x, 1, temperature=0.5), lambda x: TF.softmax(x / 0.5, 1)),
    "log_softmax-T": (lambda x: smt.log_softmax(x, 1, temperature=2.0), lambda x: TF.log_softmax(x / 2.0, 1)),
    "logsumexp": (lambda x: smt.logsumexp(x, 1), lambda x: torch.logsumexp(x, 1)),
    "logsumexp-all": (lambda x: smt.logsumexp(x, (0, 1)), lambda x: torch.logsumexp(x, (0, 1))),
    "ce-none": (
        lambda x: smt.cross_entropy(x, TARGET, reduction="none"),
        lambda x: TF.cross_entropy(x, TARGET, reduction="none"),
    ),
    "ce-mean-weighted-smoothed": (
        lambda x: smt.cross_entropy(x, TARGET, weight=_weight(x), label_smoothing=0.1),
        lambda x: TF.cross_entropy(x, TARGET, weight=_weight(x), label_smoothing=0.1),
    ),
    "ce-sum-ignore": (
        lambda x: smt.cross_entropy(x, torch.tensor([0, -100, 2]), reduction="sum"),
        lambda x: TF.cross_entropy(x, torch.tensor([0, -100, 2]), reduction="sum"),
    ),
    "ce-probs": (
        lambda x: smt.cross_entropy(x, PROBS.to(x.dtype), reduction="none"),
        lambda x: TF.cross_entropy(x, PROBS.to(x.dtype), reduction="none"),
    ),
    "nll": (lambda x: smt.nll_loss(x, TARGET), lambda x: TF.nll_loss(x, TARGET)),
    "bce": (
        lambda x: smt.binary_cross_entropy_with_logits(x, PROBS.to(x.dtype), reduction="none"),
        lambda x: TF.binary_cross_entropy_with_logits(x, PROBS.to(x.dtype), reduction="none"),
    ),
}


def _weight(x):
    return torch.tensor([0.5, 2.0, 1.0, 1.5], dtype=x.dtype)


def _logits(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64).mul_(2.0)
    x[1, 3] = 30.0  # a confident row
    return x.to(dtype)


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)


# --- is_grads_batched -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(OPS))
def test_is_grads_batched_equals_one_backward_per_cotangent(name, dtype):
    # softmax, log_softmax and cross_entropy failed under
    # torch.autograd.grad(..., is_grads_batched=True): their backward reached
    # the native kernels (.numpy()) and Python scalars with a batched cotangent.
    fn = OPS[name][0]
    x = _logits(dtype).requires_grad_(True)
    out = fn(x)
    g = torch.Generator().manual_seed(1)
    cotangents = torch.randn((5,) + tuple(out.shape), generator=g, dtype=torch.float64).to(dtype)
    (batched,) = torch.autograd.grad(out, x, cotangents, is_grads_batched=True, retain_graph=True)
    one_by_one = torch.stack([torch.autograd.grad(out, x, c, retain_graph=True)[0] for c in cotangents])
    assert batched.dtype == dtype
    torch.testing.assert_close(batched, one_by_one, **_tol(dtype))
