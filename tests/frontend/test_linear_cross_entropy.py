"""linear_cross_entropy: the contract against mpmath, on every path (NumPy native and generic, torch eager and compiled).

The inputs are small integers and powers of two, so the float32 product
``h @ W.T`` is exact and the reference sees the very logits the loss sees.
With ``W`` the identity the hidden-state gradient is the logit gradient
itself, checked in ULP; with a general ``W`` the gradients are products of
it, checked against the normwise bound of a float32 product.
"""

from __future__ import annotations

import numpy as np
import pytest

import mpmath as mp
import softmaxkit as smk
from softmaxkit import kernels
from softmaxkit.numerics import linear as lin
from tests.reference import exact
from tests.reference.ulps import tolerance, ulp_error

try:
    import torch

    import softmaxkit.torch as smt
except ImportError:
    torch = smt = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

PATHS = ["numpy", "numpy-generic", "torch", "torch-compiled"]


@pytest.fixture(params=PATHS)
def path(request):
    if request.param.startswith("torch") and torch is None:
        pytest.skip("torch is not installed")
    if request.param == "numpy-generic":
        with kernels.disabled():
            yield request.param
    else:
        if request.param == "numpy" and not kernels.available():
            pytest.skip("the native extension is not built")
        yield request.param


def _compiled(fn):
    torch._dynamo.reset()
    return torch.compile(fn, backend="aot_eager", fullgraph=True)


def run(path, h, w, t, *, bias=None, **options):
    """``(loss, d_hidden, d_weight, d_bias)`` as NumPy arrays (the gradients of loss.sum())."""
    if path.startswith("numpy"):
        loss, (dh, dw, db) = smk.linear_cross_entropy(h, w, t, linear_bias=bias, return_grad=True, **options)
        return loss, dh, dw, db
    leaves = [torch.tensor(a, requires_grad=True) for a in (h, w) + (() if bias is None else (bias,))]
    target = torch.tensor(t)
    options = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}

    def f(*args):
        return smt.linear_cross_entropy(args[0], args[1], target, linear_bias=args[2] if len(args) > 2 else None, **options)

    fn = _compiled(f) if path == "torch-compiled" else f
    loss = fn(*leaves)
    loss.sum().backward()
    grads = [a.grad.numpy() for a in leaves]
    return loss.detach().numpy(), grads[0], grads[1], (grads[2] if bias is not None else None)


def confident_rows(rng, n, v, dtype=np.float32):
    """Integer logits with margins from 0 to 90 between the largest and the rest."""
    x = rng.integers(-4, 5, size=(n, v)).astype(dtype)
    margins = np.linspace(0, 90, n).round()
    top = rng.integers(0, v, size=n)
    x[np.arange(n), top] = x.max(axis=1) + margins
    return x, top


def reference_rows(x, t, eps=0.0, z=0.0, class_w=None):
    """Exact per-row losses and logit gradients of logits ``x`` (an mpmath list per row)."""
    losses, grads = [], []
    for row, target in zip(x, t):
        xs = exact.to_mp(row)
        if target == -100:
            losses.append(mp.mpf(0))
            grads.append([mp.mpf(0)] * len(xs))
            continue
        finite = [v != -exact.INF for v in xs]
        coef, row_w = exact.hard_coef(len(xs), int(target), eps, class_w, finite)
        loss, grad = exact.cross_entropy(xs, coef, z, row_w)
        losses.append(loss)
        grads.append(grad)
    return losses, grads


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_identity_head_meets_the_cross_entropy_contract(path, reduction):
    """With W = I the logits are the hidden states and d_hidden is the logit gradient: both in ULP."""
    rng = np.random.default_rng(0)
    n, v = 24, 7
    x, top = confident_rows(rng, n, v)
    t = np.where(rng.random(n) < 0.5, top, rng.integers(0, v, size=n))
    t[3] = -100
    loss, dh, _, _ = run(path, x, np.eye(v, dtype=np.float32), t, reduction=reduction)
    losses, grads = reference_rows(x, t)
    count = int(np.sum(t != -100))
    if reduction == "none":
        expected_loss = losses
    else:
        expected_loss = mp.fsum(losses) / (count if reduction == "mean" else 1)
    assert loss.dtype == np.float32
    assert ulp_error(loss, expected_loss, np.float32) <= tolerance(np.float32)
    scale = count if reduction == "mean" else 1
    assert ulp_error(dh, [[g / scale for g in row] for row in grads], np.float32) <= tolerance(np.float32)


def test_confident_target_gradient_is_not_zero(path):
    """Regression: p_t - 1 rounds to 0 in float32 once the margin passes about 17."""
    h = np.array([[1.0, 0.0]], dtype=np.float32)
    w = np.array([[40.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    _, dh, dw, _ = run(path, h, w, np.array([0]))
    assert dh[0, 0] < 0 and dw[0, 0] < 0


def test_general_head_gradients_are_float32_products_of_the_exact_gradient(path):
    rng = np.random.default_rng(1)
    n, v, width = 20, 11, 6
    h = rng.integers(-3, 4, size=(n, width)).astype(np.float32)
    w = rng.integers(-4, 5, size=(v, width)).astype(np.float32)
    b = rng.integers(-8, 9, size=v).astype(np.float32)
    b[2] = -np.inf  # a masked class
    t = rng.integers(0, v, size=n)
    t[t == 2] = 0
    t[5] = -100
    loss, dh, dw, db = run(path, h, w, t, bias=b, label_smoothing=0.1, z_loss=1e-3)
    x = h.astype(np.float64) @ w.T.astype(np.float64) + b
    losses, grads = reference_rows(x, t, eps=0.1, z=1e-3)
    count = int(np.sum(t != -100))
    assert ulp_error(loss, mp.fsum(losses) / count, np.float32) <= tolerance(np.float32)
    g = np.array([[float(e) / count for e in row] for row in grads])
    u = np.finfo(np.float32).eps / 2
    for got, ref, bound in (
        (dh, g @ w, np.abs(g) @ np.abs(w) * (v + 2) * u),
        (dw, g.T @ h, np.abs(g.T) @ np.abs(h) * (n + 2) * u),
        (db, g.sum(axis=0), np.abs(g).sum(axis=0) * (n + 2) * u),
    ):
        assert got.dtype == np.float32
        assert np.all(np.abs(got - ref) <= bound + np.finfo(np.float32).tiny)
    assert np.all(dw[2] == 0) and db[2] == 0  # the masked class takes no gradient


def test_equals_cross_entropy_on_the_materialised_logits(path):
    rng = np.random.default_rng(2)
    h = rng.integers(-3, 4, size=(33, 8)).astype(np.float32)
    w = rng.integers(-4, 5, size=(13, 8)).astype(np.float32)
    t = rng.integers(0, 13, size=33)
    weight = rng.uniform(0.5, 2.0, size=13)
    loss, dh, _, _ = run(path, h, w, t, weight=weight, label_smoothing=0.2)
    ref, g = smk.cross_entropy(h @ w.T, t, weight=weight, label_smoothing=0.2, return_grad=True)
    assert loss == ref
    np.testing.assert_allclose(dh, g @ w, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cap", [2.0, 30.0])
def test_softcap_is_exact_and_keeps_masked_classes_masked(path, cap):
    rng = np.random.default_rng(3)
    n, v = 10, 6
    x, _ = confident_rows(rng, n, v)
    b = np.zeros(v, dtype=np.float32)
    b[4] = -np.inf
    t = rng.integers(0, 4, size=n)
    loss, dh, _, _ = run(path, x, np.eye(v, dtype=np.float32), t, bias=b, softcap=cap, reduction="none")
    losses, grads = [], []
    for row, target in zip(x + b, t):
        xs = [cap * mp.tanh(e / cap) if e != -exact.INF else e for e in exact.to_mp(row)]
        coef, row_w = exact.hard_coef(v, int(target), 0.0, None)
        value, grad = exact.cross_entropy(xs, coef, 0, row_w)
        slope = [1 / mp.cosh(e / cap) ** 2 if e != -exact.INF else 0 for e in exact.to_mp(row)]
        losses.append(value)
        grads.append([gj * sj for gj, sj in zip(grad, slope)])
    assert ulp_error(loss, losses, np.float32) <= tolerance(np.float32)
    assert ulp_error(dh, grads, np.float32) <= tolerance(np.float32)
    assert np.all(dh[:, 4] == 0)


def test_every_target_ignored_gives_zero_and_zero_gradients(path):
    h = np.ones((4, 3), dtype=np.float32)
    w = np.ones((5, 3), dtype=np.float32)
    b = np.zeros(5, dtype=np.float32)
    loss, dh, dw, db = run(path, h, w, np.full(4, -100), bias=b)
    assert loss == 0 and not np.any(dh) and not np.any(dw) and not np.any(db)


def test_target_on_a_masked_class_gives_inf_with_finite_gradients(path):
    h = np.eye(3, dtype=np.float32)
    b = np.array([0.0, -np.inf, 0.0], dtype=np.float32)
    loss, dh, dw, db = run(path, h, np.eye(3, dtype=np.float32), np.array([1, 0, 2]), bias=b, reduction="none")
    assert loss[0] == np.inf and np.isfinite(loss[1:]).all()
    assert np.isfinite(dh).all() and np.isfinite(dw).all() and np.isfinite(db).all()


def test_normalizer_divides_the_sum(path):
    rng = np.random.default_rng(4)
    h = rng.integers(-3, 4, size=(9, 4)).astype(np.float32)
    w = rng.integers(-3, 4, size=(6, 4)).astype(np.float32)
    t = rng.integers(0, 6, size=9)
    t[0] = -100
    mean = run(path, h, w, t)
    normed = run(path, h, w, t, reduction="sum", normalizer=8)
    assert mean[0] == normed[0]
    np.testing.assert_array_equal(mean[1], normed[1])
    np.testing.assert_array_equal(mean[2], normed[2])
    zero = run(path, h, w, t, reduction="sum", normalizer=0)
    assert zero[0] == 0 and not np.any(zero[1])


def test_probability_targets(path):
    if path == "torch-compiled":
        pytest.skip("covered in eager; compiled probability targets take the same operator")
    rng = np.random.default_rng(5)
    h = rng.integers(-3, 4, size=(7, 5)).astype(np.float32)
    w = rng.integers(-3, 4, size=(4, 5)).astype(np.float32)
    q = rng.dirichlet(np.ones(4), size=7).astype(np.float32)
    loss, dh, _, _ = run(path, h, w, q)
    ref, g = smk.cross_entropy(h @ w.T, q, return_grad=True)
    assert ulp_error(loss, float(ref), np.float32) <= 1
    np.testing.assert_allclose(dh, g @ w, rtol=1e-5, atol=1e-7)


def test_chunks_split_the_tokens_unevenly(path, monkeypatch):
    """Many small chunks (the last one short, some tokens ignored) give the
    one-chunk loss and hidden-state gradient; the weight gradient differs only
    by the accumulation's rounding."""
    rng = np.random.default_rng(6)
    h = rng.standard_normal((101, 16)).astype(np.float32)
    w = rng.standard_normal((37, 16)).astype(np.float32)
    t = rng.integers(0, 37, size=101)
    t[::7] = -100
    whole = run(path, h, w, t)
    monkeypatch.setattr(lin, "chunk_rows", lambda *args: 9)
    chunked = run(path, h, w, t)
    assert chunked[0] == whole[0]
    np.testing.assert_array_equal(chunked[1], whole[1])
    np.testing.assert_allclose(chunked[2], whole[2], rtol=1e-5, atol=1e-6)


def test_inputs_are_not_modified(path):
    rng = np.random.default_rng(7)
    h = rng.standard_normal((8, 4)).astype(np.float32)
    w = rng.standard_normal((5, 4)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    t = rng.integers(0, 5, size=8)
    copies = [a.copy() for a in (h, w, b, t)]
    run(path, h, w, t, bias=b, softcap=3.0, label_smoothing=0.1)
    for a, c in zip((h, w, b, t), copies):
        np.testing.assert_array_equal(a, c)


def test_leading_dimensions_and_float64():
    rng = np.random.default_rng(8)
    h = rng.standard_normal((2, 3, 4))
    w = rng.standard_normal((5, 4))
    t = rng.integers(0, 5, size=(2, 3))
    loss, (dh, dw, db) = smk.linear_cross_entropy(h, w, t, reduction="none", return_grad=True)
    ref, g = smk.cross_entropy(h @ w.T, t, reduction="none", return_grad=True)
    assert loss.shape == (2, 3) and dh.shape == h.shape and db is None
    np.testing.assert_allclose(loss, ref, rtol=1e-14)
    np.testing.assert_allclose(dh, g @ w, rtol=1e-13, atol=1e-15)


@needs_torch
@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_results_do_not_depend_on_the_thread_count(threads):
    rng = np.random.default_rng(9)
    h = rng.standard_normal((300, 64)).astype(np.float32)
    w = rng.standard_normal((500, 64)).astype(np.float32)
    t = rng.integers(0, 500, size=300)
    ht, wt = torch.tensor(h, requires_grad=True), torch.tensor(w, requires_grad=True)
    before = torch.get_num_threads(), smk.get_num_threads()

    def once():
        ht.grad = wt.grad = None
        smt.linear_cross_entropy(ht, wt, torch.tensor(t)).backward()
        return ht.grad.clone(), wt.grad.clone()

    base = once()
    try:
        torch.set_num_threads(threads)
        smk.set_num_threads(threads)
        other = once()
    finally:
        torch.set_num_threads(before[0])
        smk.set_num_threads(before[1])
    assert torch.equal(base[0], other[0]) and torch.equal(base[1], other[1])


@needs_torch
def test_bfloat16_is_computed_from_widened_logits():
    rng = np.random.default_rng(10)
    n, v = 16, 9
    x, _ = confident_rows(rng, n, v)
    x = np.clip(x, -128, 128)  # exact in bfloat16
    t = rng.integers(0, v, size=n)
    h = torch.tensor(x, dtype=torch.bfloat16, requires_grad=True)
    w = torch.eye(v, dtype=torch.bfloat16, requires_grad=True)
    loss = smt.linear_cross_entropy(h, w, torch.tensor(t), reduction="sum")
    loss.backward()
    losses, grads = reference_rows(x, t)
    assert loss.dtype == torch.bfloat16 and h.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.bfloat16
    assert ulp_error(loss.float().item(), mp.fsum(losses), "bfloat16") <= tolerance("bfloat16")
    assert ulp_error(h.grad.float().numpy(), grads, "bfloat16") <= tolerance("bfloat16")


@needs_torch
def test_gradcheck_float64():
    rng = np.random.default_rng(11)
    h = torch.tensor(rng.standard_normal((6, 3)), requires_grad=True)
    w = torch.tensor(rng.standard_normal((5, 3)), requires_grad=True)
    b = torch.tensor(rng.standard_normal(5), requires_grad=True)
    t = torch.tensor([0, 4, -100, 2, 2, 1])
    for options in ({}, {"reduction": "none", "softcap": 1.5}, {"reduction": "sum", "label_smoothing": 0.2, "z_loss": 0.01}):
        assert torch.autograd.gradcheck(
            lambda h, w, b: smt.linear_cross_entropy(h, w, t, linear_bias=b, **options), (h, w, b)
        )


@needs_torch
def test_second_backward_recomputes_the_same_gradients():
    rng = np.random.default_rng(12)
    h = torch.tensor(rng.standard_normal((7, 3)), dtype=torch.float32, requires_grad=True)
    w = torch.tensor(rng.standard_normal((4, 3)), dtype=torch.float32, requires_grad=True)
    loss = smt.linear_cross_entropy(h, w, torch.tensor([0, 1, 2, 3, 0, 1, 2]))
    first = torch.autograd.grad(loss, (h, w), retain_graph=True)
    second = torch.autograd.grad(loss, (h, w))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@needs_torch
def test_module_and_no_grad():
    loss_fn = smt.LinearCrossEntropyLoss(reduction="sum", softcap=5.0)
    h, w = torch.randn(4, 3), torch.randn(6, 3)
    t = torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        value = loss_fn(h, w, t)
    assert value == smt.linear_cross_entropy(h, w, t, reduction="sum", softcap=5.0)


def test_numpy_peak_memory_is_within_the_model(monkeypatch):
    """Peak allocation beyond the inputs: 1.25 times the gradients, plus the loss rows."""
    import tracemalloc

    if not kernels.available():
        pytest.skip("the native extension is not built")
    monkeypatch.setattr(lin, "_MIN_CHUNK_BYTES", 0)
    rng = np.random.default_rng(13)
    n, width, v = 512, 32, 4096
    h = rng.standard_normal((n, width)).astype(np.float32)
    w = rng.standard_normal((v, width)).astype(np.float32)
    t = rng.integers(0, v, size=n)
    tracemalloc.start()
    try:
        smk.linear_cross_entropy(h, w, t, return_grad=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    grads = lin.grad_bytes(n, v, width, 4, False)
    assert peak <= 1.25 * grads + 64 * n + (1 << 16)
    naive = n * v * 4 * 3
    assert peak < naive / 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"reduction": "mean", "normalizer": 3}, ValueError, "normalizer"),
        ({"softcap": -1.0}, ValueError, "softcap"),
        ({"softcap": float("inf")}, ValueError, "softcap"),
        ({"reduction": "avg"}, ValueError, "reduction"),
        ({"label_smoothing": 2.0}, ValueError, "label_smoothing"),
        ({"reduction": "sum", "normalizer": -1}, ValueError, "normalizer"),
    ],
)
def test_bad_options_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        smk.linear_cross_entropy(np.ones((2, 3)), np.ones((4, 3)), np.array([0, 1]), **kwargs)


@needs_torch
def test_bad_shapes_and_targets_name_the_argument():
    h, w = np.ones((2, 3)), np.ones((4, 3))
    with pytest.raises(ValueError, match="hidden size"):
        smk.linear_cross_entropy(h, np.ones((4, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="linear_bias"):
        smk.linear_cross_entropy(h, w, np.array([0, 1]), linear_bias=np.ones(3))
    with pytest.raises(ValueError, match="targets"):
        smk.linear_cross_entropy(h, w, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="targets"):
        smk.linear_cross_entropy(h, w, np.array([0, 4]))
    with pytest.raises(ValueError, match="target"):
        smt.linear_cross_entropy(torch.ones(2, 3), torch.ones(4, 3), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="no classes"):
        smk.linear_cross_entropy(h, np.ones((0, 3)), np.array([0, 1]))


@pytest.mark.parametrize("threads", [1, 3, 8])
def test_numpy_results_do_not_depend_on_the_kernel_thread_count(threads):
    """The chunks depend on the shapes alone, and the kernels' threads change
    no bit.  (NumPy's products are OpenBLAS's, which rounds some products
    differently on one thread than on several: docs/large-vocabulary.md.)"""
    rng = np.random.default_rng(14)
    h = rng.standard_normal((300, 64)).astype(np.float32)
    w = rng.standard_normal((500, 64)).astype(np.float32)
    t = rng.integers(0, 500, size=300)
    base = smk.linear_cross_entropy(h, w, t, return_grad=True)
    before = smk.get_num_threads()
    try:
        smk.set_num_threads(threads)
        other = smk.linear_cross_entropy(h, w, t, return_grad=True)
    finally:
        smk.set_num_threads(before)
    assert base[0] == other[0]
    for a, b in zip(base[1][:2], other[1][:2]):
        np.testing.assert_array_equal(a, b)
