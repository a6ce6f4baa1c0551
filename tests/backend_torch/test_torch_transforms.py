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


# --- forward mode -------------------------------------------------------------------

FORWARD_OPS = sorted(set(OPS) - {"nll", "bce"})


def _tangent(shape, dtype, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def _central_difference(fn, x, t, h=1e-6):
    return (fn(x + h * t) - fn(x - h * t)) / (2 * h)


@pytest.mark.parametrize("name", FORWARD_OPS + ["nll", "bce"])
def test_jvp_matches_finite_differences_in_float64(name):
    # softmax, log_softmax, logsumexp and cross_entropy had no jvp, so forward
    # mode (torch.func.jvp, forward_ad, jacfwd) raised NotImplementedError.
    fn = OPS[name][0]
    x, t = _logits(), _tangent((3, 4), torch.float64)
    _, tangent = torch.func.jvp(fn, (x,), (t,))
    fd = _central_difference(fn, x, t)
    torch.testing.assert_close(tangent, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", FORWARD_OPS + ["nll", "bce"])
def test_jvp_matches_torch_func_jvp_of_torch(name, dtype):
    ours, theirs = OPS[name]
    x, t = _logits(dtype), _tangent((3, 4), dtype)
    primal, tangent = torch.func.jvp(ours, (x,), (t,))
    want_primal, want_tangent = torch.func.jvp(theirs, (x,), (t,))
    assert tangent.dtype == want_tangent.dtype == dtype
    torch.testing.assert_close(primal, want_primal, **_tol(dtype))
    torch.testing.assert_close(tangent, want_tangent, **_tol(dtype))


@pytest.mark.parametrize("name", FORWARD_OPS)
def test_forward_ad_dual_tensors(name):
    import torch.autograd.forward_ad as fwAD

    ours, theirs = OPS[name]
    x, t = _logits(), _tangent((3, 4), torch.float64)
    with fwAD.dual_level():
        got = fwAD.unpack_dual(ours(fwAD.make_dual(x, t))).tangent
        want = fwAD.unpack_dual(theirs(fwAD.make_dual(x, t))).tangent
    torch.testing.assert_close(got, want, **_tol(torch.float64))


def test_jvp_exact_formulas_on_a_confident_row():
    # The tangents are the exact formulas, so a confident row keeps the tiny
    # terms that torch's own jvp rounds away (float32: p_k rounds to 1).
    x = torch.tensor([[30.0, 0.0, -1.0]], dtype=torch.float32)
    t = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float32)
    p = torch.softmax(x.double(), 1)
    # d log_softmax_0 / d x_1 = -p_1, d lse = p_1, d CE(target 0) = p_1
    _, d_log = torch.func.jvp(lambda a: smt.log_softmax(a, 1), (x,), (t,))
    _, d_lse = torch.func.jvp(lambda a: smt.logsumexp(a, 1), (x,), (t,))
    _, d_ce = torch.func.jvp(lambda a: smt.cross_entropy(a, torch.tensor([0])), (x,), (t,))
    want = p[0, 1].float()
    assert float(d_log[0, 0]) == -float(want)
    assert float(d_lse[0]) == float(want)
    assert float(d_ce) == float(want)


def test_jvp_with_respect_to_probability_targets():
    x, tx = _logits(), _tangent((3, 4), torch.float64)
    q, tq = PROBS.clone(), _tangent((3, 4), torch.float64, seed=3)

    def ours(a, b):
        return smt.cross_entropy(a, b, weight=torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64), label_smoothing=0.2)

    def theirs(a, b):
        return TF.cross_entropy(a, b, weight=torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64), label_smoothing=0.2)

    _, got = torch.func.jvp(ours, (x, q), (tx, tq))
    _, want = torch.func.jvp(theirs, (x, q), (tx, tq))
    torch.testing.assert_close(got, want, **_tol(torch.float64))


def test_jvp_masked_rows_and_all_ignored_are_zero():
    x = torch.tensor([[-INF, -INF, -INF], [0.0, 1.0, -INF]], dtype=torch.float64)
    t = torch.ones_like(x)
    for fn in (
        lambda a: smt.softmax(a, 1),
        lambda a: smt.log_softmax(a, 1),
        lambda a: smt.logsumexp(a, 1),
        lambda a: smt.cross_entropy(a, torch.tensor([-100, -100])),
    ):
        _, tangent = torch.func.jvp(fn, (x,), (t,))
        assert torch.isfinite(tangent).all()
        # the first row is fully masked; the cross-entropy ignores both rows
        assert not (tangent if tangent.ndim == 0 else tangent[0]).any()


def test_jacfwd_and_forward_over_reverse_hessian():
    x = _logits()[0]
    t = torch.tensor(2)
    jac = torch.func.jacfwd(lambda a: smt.log_softmax(a, 0))(x)
    torch.testing.assert_close(jac, torch.func.jacfwd(lambda a: TF.log_softmax(a, 0))(x), **_tol(torch.float64))
    hess = torch.func.hessian(lambda a: smt.cross_entropy(a, t))(x)
    torch.testing.assert_close(hess, torch.func.hessian(lambda a: TF.cross_entropy(a, t))(x), **_tol(torch.float64))


def test_functions_with_jvps_still_compile_fullgraph():
    # Dynamo refuses autograd.Functions with a custom jvp; torch.compile must
    # keep tracing every function whole (cross_entropy and log_softmax are
    # compiled in test_torch_functions.py).
    def loss(x, q):
        return smt.logsumexp(x, 1).sum() + smt.binary_cross_entropy_with_logits(x, q)

    compiled = torch.compile(loss, fullgraph=True, dynamic=False)
    x, q = _logits().requires_grad_(True), PROBS
    got, (got_grad,) = compiled(x, q), torch.autograd.grad(compiled(x, q), x)
    want, (want_grad,) = loss(x, q), torch.autograd.grad(loss(x, q), x)
    torch.testing.assert_close(got, want, **_tol(torch.float64))
    torch.testing.assert_close(got_grad, want_grad, **_tol(torch.float64))
