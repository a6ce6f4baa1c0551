"""CUDA tensors through every path of the torch backend and the public functions.

Each case runs on the GPU and is checked against mpmath on the same rows
(float32: within the contract's ULP bounds), or against the CPU result where
the CPU result is itself checked elsewhere.  Skipped without a CUDA device.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

import softmaxkit as smk  # noqa: E402
import softmaxkit.torch as smt  # noqa: E402
from tests import reference as ref  # noqa: E402

INF = float("inf")
# On CUDA float32 is computed in float32 with the compensated formulas
# (exact shift, exp(hi)(1 + lo), cascaded sums): within 6 ULP, as the
# numerics state, where float64 internals give 2.
CUDA_FLOAT32_ULP = 6


def _confident(rows=8, n=257, margin=40.0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, n, generator=gen, dtype=torch.float64) * 3
    x[:, 0] += margin
    return x.to(dtype)


@pytest.mark.parametrize("log", [False, True])
def test_softmax_family_on_cuda_meets_the_contract(log):
    x = _confident()
    y = (smt.log_softmax if log else smt.softmax)(x.cuda(), dim=1).cpu()
    for i in range(x.shape[0]):
        xs = ref.to_mp(x[i].numpy())
        exact = ref.log_softmax(xs) if log else ref.softmax(xs)
        assert ref.ulp_error(y[i].numpy(), exact, np.float32) <= CUDA_FLOAT32_ULP


def test_cross_entropy_on_cuda_meets_the_contract_loss_and_gradient():
    x = _confident().requires_grad_()
    t = torch.zeros(x.shape[0], dtype=torch.int64)
    xc = x.detach().cuda().requires_grad_()
    loss = smt.cross_entropy(xc, t.cuda(), reduction="sum")
    loss.backward()
    grad = xc.grad.cpu()
    total = []
    for i in range(x.shape[0]):
        xs = ref.to_mp(x[i].detach().numpy())
        exact_loss, exact_grad = ref.cross_entropy(xs, ref.hard_coef(x.shape[1], 0)[0])
        total.append(exact_loss)
        assert ref.ulp_error(grad[i].numpy(), exact_grad, np.float32) <= CUDA_FLOAT32_ULP
    assert ref.ulp_error([float(loss)], [sum(total)], np.float32) <= CUDA_FLOAT32_ULP


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"label_smoothing": 0.1},
        {"weight": "w"},
        {"ignore_index": 1},
        {"reduction": "none"},
        {"z_loss": 1e-3},
    ],
)
def test_cross_entropy_options_on_cuda_match_the_cpu(options):
    x = _confident(rows=16, n=33, margin=5.0)
    t = torch.arange(16) % 33
    t[3] = 1
    w = torch.linspace(0.5, 2.0, 33)
    kwargs = {k: (w if v == "w" else v) for k, v in options.items()}
    kwargs_cuda = {k: (w.cuda() if v == "w" else v) for k, v in options.items()}
    xa, xb = x.clone().requires_grad_(), x.cuda().requires_grad_()
    cpu = smt.cross_entropy(xa, t, **kwargs)
    gpu = smt.cross_entropy(xb, t.cuda(), **kwargs_cuda)
    cpu.sum().backward()
    gpu.sum().backward()
    # CPU float64 internals against CUDA's compensated float32: a few float32
    # ULP of each value, and for gradient entries that cancel (smoothing,
    # z-loss) a few ULP of the row's largest term.
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-6, atol=0)
    torch.testing.assert_close(xb.grad.cpu(), xa.grad, rtol=1e-6, atol=2e-9)


def test_probability_targets_and_edges_on_cuda():
    x = torch.tensor([[-INF, -INF, -INF], [1.0, -INF, 2.0], [INF, 0.0, INF]], device="cuda", requires_grad=True)
    p = smt.softmax(x, dim=1)
    assert p[0].tolist() == [0.0, 0.0, 0.0] and p[2].tolist() == [0.5, 0.0, 0.5]
    q = torch.tensor([[0.2, 0.3, 0.5], [0.5, 0.0, 0.5], [0.5, 0.0, 0.5]], device="cuda")
    loss = smt.cross_entropy(x, q, reduction="none")
    (g,) = torch.autograd.grad(loss[1:].sum(), x)
    assert not g.isnan().any()
    ignored = smt.cross_entropy(x[1:], torch.tensor([-100, -100], device="cuda"))
    assert ignored.item() == 0.0


def test_value_checks_on_cuda_name_the_entry():
    x = torch.zeros(3, 4, device="cuda")
    with pytest.raises(ValueError, match=r"target\[1\] = 9 is not a class index"):
        smt.cross_entropy(x, torch.tensor([0, 9, 1], device="cuda"))
    with pytest.raises(ValueError, match=r"weight\[2\] = inf"):
        smt.cross_entropy(x, torch.tensor([0, 1, 1], device="cuda"), weight=torch.tensor([1.0, 1.0, INF, 1.0], device="cuda"))
    with pytest.raises(ValueError, match=r"target must be probabilities in \[0, 1\]"):
        smt.binary_cross_entropy_with_logits(x, torch.full((3, 4), 2.0, device="cuda"))


def test_public_numpy_style_functions_dispatch_cuda_tensors():
    x = _confident(rows=4, n=9).cuda()
    torch.testing.assert_close(smk.softmax(x, axis=(0, 1)).sum().cpu(), torch.tensor(1.0), rtol=1e-6, atol=0)
    lse = smk.logsumexp(x, axis=1)
    assert lse.device.type == "cuda"
    loss, grad = smk.cross_entropy(x, torch.zeros(4, dtype=torch.int64, device="cuda"), return_grad=True)
    assert grad.device.type == "cuda" and torch.isfinite(grad).all()
    assert smk.sparsemax(x).device.type == "cuda"
    assert smk.sample(x, rng=torch.Generator(device="cuda").manual_seed(0)).device.type == "cuda"


def test_bfloat16_and_float16_on_cuda_within_one_unit_of_the_exact_result():
    # On CUDA the working dtype is float32 (compensated); rounding its result
    # to 16 bits lands on the correctly rounded value or its neighbour.
    x = _confident(rows=4, n=65, margin=8.0, dtype=torch.float64)
    for dtype in (torch.bfloat16, torch.float16):
        y = smt.log_softmax(x.to(dtype).cuda(), dim=1)
        assert y.dtype == dtype
        exact = smt.log_softmax(x.to(dtype).double(), dim=1).to(dtype)
        torch.testing.assert_close(y.cpu(), exact, rtol=torch.finfo(dtype).eps, atol=0)


# Regression: when torch.compile traced the cross-entropy Function's backward on
# CUDA, the gradient came out all zeros; compiled code now calls the custom
# operators, whose CUDA implementation runs the formulas eagerly.
def test_compiled_cross_entropy_on_cuda_matches_eager():
    x = _confident(rows=32, n=1000, margin=5.0).cuda()
    t = torch.randint(0, 1000, (32,), generator=torch.Generator().manual_seed(1)).cuda()

    def step(a):
        return smt.cross_entropy(a, t, label_smoothing=0.1)

    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    eager = step(xa)
    eager.backward()
    compiled = torch.compile(step)(xb)
    compiled.backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=0)
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-10)
