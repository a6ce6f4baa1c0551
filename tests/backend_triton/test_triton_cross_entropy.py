"""The Triton cross-entropy kernel through softmaxkit.torch: the accuracy
contract against mpmath for every option, the edge table, reductions and
cotangents, layouts, probability-target gradients and torch.compile.

Without a GPU the kernel runs in Triton's interpreter on CPU tensors (see
conftest.py); ``wide_rows`` shrinks the block to 16 entries so that rows of
a few dozen take the online (multi-block) path.  The rows come from the
contract suite's strategy (``tests/frontend/test_contract.py``) and the
references from ``tests/reference``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import softmaxkit.torch as smt
from tests import reference as ref
from tests.backend_triton._paths import both_paths, other_path
from tests.frontend.test_contract import logit_rows
from tests.frontend.test_no_float64_device import FLOAT32_ULP

INF = float("inf")
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
IDS = ["float32", "bfloat16", "float16"]
NP_DTYPE = {torch.float32: np.float32, torch.bfloat16: ref.BFLOAT16, torch.float16: np.float16}
# The contract of a device without float64: float32 within 6 ULP, the 16-bit types within 2.
ULP = {torch.float32: FLOAT32_ULP, torch.bfloat16: 2.0, torch.float16: 2.0}


@pytest.fixture(params=["one_pass", "blocks"])
def rows_path(request, launches):
    """Rows in one block, or (``blocks``) in blocks of 16 with the online rule; yields the launches."""
    if request.param == "blocks":
        request.getfixturevalue("wide_rows")
    yield launches
    assert "_ce_kernel" in launches


def _tensor(x: np.ndarray, dtype, device) -> torch.Tensor:
    return torch.tensor(np.asarray(x, dtype=np.float64), dtype=torch.float64).to(dtype).to(device)


def _loss_and_grad(x, target, **options):
    """Per-row losses and the gradient of their sum, as float64 NumPy arrays (dtypes checked)."""
    x = x.detach().requires_grad_(True)
    loss = smt.cross_entropy(x, target, reduction="none", **options)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    assert loss.dtype == x.dtype and grad.dtype == x.dtype
    return loss.detach().double().cpu().numpy(), grad.double().cpu().numpy()


def _assert_loss(value, exact, row, coef, zw, dtype):
    """Within the contract; of the absolute terms' sum where the terms' signs differ (negative weights)."""
    tol = ULP[dtype]
    signs = {ref.mp.sign(c) for c in coef if c != 0} | ({ref.mp.sign(zw)} if zw else set())
    if len(signs) < 2:
        assert ref.ulp_error([value], [exact], NP_DTYPE[dtype]) <= tol
        return
    L = ref.lse(row)
    scale = ref.mp.fsum(abs(c) * (L - x) for c, x in zip(coef, row) if c != 0) + abs(zw) * L * L
    assert abs(ref.mp.mpf(float(value)) - exact) <= tol * ref.ulp(scale, NP_DTYPE[dtype])


def _assert_difference_gradient(grad, exact, row, coef, dtype, zg=0):
    """Each entry ``C p_j + zg p_j - c_j`` within the contract's ULPs of its largest term."""
    C = ref.mp.fsum(coef)
    for g, e, p, c in zip(grad, exact, ref.softmax(row), coef):
        scale = max(abs(C) * p, abs(zg) * p, abs(c))
        assert abs(ref.mp.mpf(float(g)) - e) <= ULP[dtype] * ref.ulp(scale, NP_DTYPE[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
# The fixtures choose the path once; every example runs through it.
@settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), eps=st.sampled_from([0.0, 0.1]), z=st.sampled_from([0.0, 1e-4]), weighted=st.booleans())
def test_class_targets_meet_the_contract(rows_path, triton_path, dtype, data, eps, z, weighted):
    x = data.draw(logit_rows(NP_DTYPE[dtype], max_width=40))
    n_rows, n = x.shape
    finite_cols = [j for j in range(n) if np.isfinite(x[:, j]).all()] or [0]
    targets = np.array([data.draw(st.sampled_from(finite_cols)) for _ in range(n_rows)])
    weight = None
    if weighted:
        weight = np.array(data.draw(st.lists(st.sampled_from([-2.0, -0.5, 0.5, 1.0, 2.0]), min_size=n, max_size=n)))
        weight = weight.astype(NP_DTYPE[dtype])
    options = {"label_smoothing": eps, "z_loss": z}
    if weight is not None:
        options["weight"] = _tensor(weight, dtype, triton_path)
    loss, grad = _loss_and_grad(_tensor(x, dtype, triton_path), torch.tensor(targets, device=triton_path), **options)
    for i, row in enumerate(ref.to_mp(r) for r in x):
        coef, w_t = ref.hard_coef(n, int(targets[i]), eps, weight, [v != -ref.INF for v in row])
        exact_loss, exact_grad = ref.cross_entropy(row, coef, z, w_t)
        _assert_loss(loss[i], exact_loss, row, coef, z * w_t, dtype)
        if eps == 0 and z == 0:
            assert ref.ulp_error(grad[i], exact_grad, NP_DTYPE[dtype]) <= ULP[dtype]
        else:
            lse = ref.lse(row)
            zg = 2 * z * w_t * lse if z and ref.mp.isfinite(lse) else 0
            _assert_difference_gradient(grad[i], exact_grad, row, coef, dtype, zg)


def _confident_rows(width: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose maximum leads by 5 to 90 (12 in float16, whose gradients
    underflow beyond), the target on the maximum or beside it."""
    rng = np.random.default_rng(3)
    margins = [5.0, 12.0] if dtype == torch.float16 else [5.0, 17.0, 40.0, 90.0]
    rows, targets = [], []
    for margin in margins:
        row = rng.normal(scale=2.0, size=width)
        k = int(rng.integers(width))
        row[k] = row.max() + margin
        rows += [row, row]
        targets += [k, (k + 1) % width]
    return np.array(rows).astype(NP_DTYPE[dtype]), np.array(targets)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_confident_rows_keep_their_target_gradient(rows_path, triton_path, dtype):
    x, targets = _confident_rows(37, dtype)
    loss, grad = _loss_and_grad(_tensor(x, dtype, triton_path), torch.tensor(targets, device=triton_path))
    for i, row in enumerate(ref.to_mp(r) for r in x):
        exact_loss, exact_grad = ref.cross_entropy(row, ref.hard_coef(len(row), int(targets[i]))[0])
        assert ref.ulp_error([loss[i]], [exact_loss], NP_DTYPE[dtype]) <= ULP[dtype]
        assert ref.ulp_error(grad[i], exact_grad, NP_DTYPE[dtype]) <= ULP[dtype]
        # p_t - 1 would round to 0 here; -s / (1 + s) does not
        assert grad[i, targets[i]] < 0


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_probability_targets_meet_the_contract(rows_path, triton_path, dtype):
    """Loss, logit gradient and target gradient ``(1 - eps) w_j (-log p_j)``,
    with smoothing over the unmasked classes and class weights."""
    x, _ = _confident_rows(29, dtype)
    x[1, 4] = -INF
    rng = np.random.default_rng(5)
    q = rng.dirichlet(np.ones(x.shape[1]), size=x.shape[0]).astype(NP_DTYPE[dtype])
    weight = rng.uniform(0.5, 2.0, size=x.shape[1]).astype(NP_DTYPE[dtype])
    eps = 0.1
    xt = _tensor(x, dtype, triton_path).requires_grad_(True)
    qt = _tensor(q, dtype, triton_path).requires_grad_(True)
    loss = smt.cross_entropy(xt, qt, weight=_tensor(weight, dtype, triton_path), label_smoothing=eps, reduction="none")
    gx, gq = torch.autograd.grad(loss.sum(), (xt, qt))
    assert loss.dtype == gx.dtype == gq.dtype == dtype
    loss, gx, gq = (t.detach().double().cpu().numpy() for t in (loss, gx, gq))
    for i, row in enumerate(ref.to_mp(r) for r in x):
        finite = [v != -ref.INF for v in row]
        K = sum(finite)
        w = ref.to_mp(weight)
        coef = [w[j] * ((1 - ref.mp.mpf(eps)) * ref.mp.mpf(float(q[i, j])) + (ref.mp.mpf(eps) / K if finite[j] else 0))
                for j in range(len(row))]
        exact_loss, exact_grad = ref.cross_entropy(row, coef)
        assert ref.ulp_error([loss[i]], [exact_loss], NP_DTYPE[dtype]) <= ULP[dtype]
        _assert_difference_gradient(gx[i], exact_grad, row, coef, dtype)
        exact_dq = [(1 - ref.mp.mpf(eps)) * w[j] * -v for j, v in enumerate(ref.log_softmax(row))]
        assert ref.ulp_error(gq[i], exact_dq, NP_DTYPE[dtype]) <= ULP[dtype]


def _edge_batch(device, dtype):
    """Edge rows: fully masked, two ``+inf``, a NaN, a target on a ``-inf``
    logit, an ignored target, a masked class under smoothing, a plain row, a
    fully masked row with its target ignored."""
    x = torch.tensor([
        [-INF, -INF, -INF, -INF, -INF],
        [1.0, INF, 0.0, INF, -2.0],
        [1.0, float("nan"), 0.0, 2.0, -1.0],
        [1.0, -INF, 0.0, 2.0, -1.0],
        [3.0, 1.0, 0.0, 2.0, -1.0],
        [0.5, -INF, 2.0, 1.0, -1.0],
        [0.25, 1.5, -3.0, 2.0, 0.0],
        [-INF, -INF, -INF, -INF, -INF],
    ], dtype=torch.float64).to(dtype).to(device)  # fmt: skip
    return x, torch.tensor([2, 1, 3, 1, -100, 0, 4, -100], device=device)


def _same(a, b, dtype, rowwise=False):
    """Equal NaN and infinity patterns; finite entries within twice the
    contract's ULPs of each other, or (``rowwise``, for gradients whose
    entries ``C p_j - c_j`` may cancel) of the row's largest entry."""
    a, b = (np.asarray(t.detach().double().cpu()) for t in (a, b))
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(a[np.isinf(a)], b[np.isinf(b)])
    live = np.isfinite(a)
    if not rowwise:
        assert ref.ulp_distance(a[live], b[live], NP_DTYPE[dtype]) <= 2 * ULP[dtype]
        return
    a2, b2 = a.reshape(len(a), -1), b.reshape(len(b), -1)
    for ra, rb in zip(a2, b2):
        fin = np.isfinite(rb)
        if fin.any():
            scale = ref.ulp(ref.mp.mpf(float(np.abs(rb[fin]).max())), NP_DTYPE[dtype])
            assert np.abs(ra[fin] - rb[fin]).max() <= 2 * ULP[dtype] * float(scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.2, "z_loss": 1e-3, "weighted": True}], ids=["plain", "all-options"])
def test_edge_rows_follow_the_table(rows_path, triton_path, dtype, options):
    x, t = _edge_batch(triton_path, dtype)
    options = dict(options)
    if options.pop("weighted", False):
        options["weight"] = torch.tensor([0.5, 2.0, 1.0, 1.5, 0.25], device=triton_path).to(dtype)

    def run():
        return _loss_and_grad(x, t, **options)

    (loss, grad), (loss0, grad0) = both_paths(run)
    _same(torch.tensor(loss), torch.tensor(loss0), dtype)
    _same(torch.tensor(grad), torch.tensor(grad0), dtype, rowwise=True)
    assert loss[0] == INF and (grad[0] == 0).all()  # fully masked, target kept
    # +inf shares the mass (smoothing's mass on the other classes and a z-loss make the loss +inf)
    assert np.isfinite(grad[1]).all() and (np.isfinite(loss[1]) or "z_loss" in options)
    assert np.isnan(loss[2]) and np.isnan(grad[2]).all() and not np.isnan(grad[3:]).any()  # NaN stays in its row
    assert loss[3] == INF and np.isfinite(grad[3]).all()  # target on a -inf logit
    assert loss[4] == 0 and (grad[4] == 0).all()  # ignored
    assert loss[7] == 0 and (grad[7] == 0).all()  # ignored, on a masked row
    assert grad[5, 1] == 0  # smoothing gives a masked class no mass


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_all_targets_ignored_give_zero_and_zero_gradient(rows_path, triton_path, reduction):
    x = torch.randn(3, 7, device=triton_path, requires_grad=True)
    loss = smt.cross_entropy(x, torch.full((3,), -100, device=triton_path), label_smoothing=0.1, reduction=reduction)
    (grad,) = torch.autograd.grad(loss, x)
    assert float(loss.detach()) == 0 and not grad.any()


@pytest.mark.parametrize(
    ("reduction", "dtype", "blocks"),
    [("mean", torch.float32, False), ("sum", torch.bfloat16, True), ("none", torch.float32, True), ("none", torch.float16, False)],
    ids=["mean-float32", "sum-bfloat16-blocks", "none-float32-blocks", "none-float16"],
)
def test_reductions_and_cotangents_match_the_other_path(request, launches, triton_path, reduction, dtype, blocks):
    """Classes along dim 1 of a 3-D tensor (rows ``inner`` apart); a
    cotangent of 3 (not a power of two: backward recomputes) or one per row."""
    if blocks:
        request.getfixturevalue("wide_rows")
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 21, 3, generator=g) * 4).to(dtype).to(triton_path)
    t = torch.randint(0, 21, (2, 3), generator=g).to(triton_path)
    t[0, 0] = -100
    w = torch.rand(21, generator=g).to(dtype).to(triton_path) + 0.5
    cot = torch.rand(2, 3, generator=g).to(triton_path) + 0.5 if reduction == "none" else torch.tensor(3.0)

    def run():
        xr = x.detach().requires_grad_(True)
        loss = smt.cross_entropy(xr, t, weight=w, reduction=reduction, label_smoothing=0.05)
        (grad,) = torch.autograd.grad(loss, xr, cot.to(loss.dtype).to(triton_path))
        return loss, grad

    (loss, grad), (loss0, grad0) = both_paths(run)
    assert "_ce_kernel" in launches
    assert loss.dtype == loss0.dtype and grad.dtype == dtype
    _same(loss, loss0, dtype)
    _same(grad, grad0, dtype, rowwise=True)


def test_compiled_cross_entropy_runs_the_kernel(triton_path, launches):
    x = (torch.randn(4, 9) * 3).to(triton_path).requires_grad_(True)
    t = torch.tensor([1, 8, -100, 0], device=triton_path)

    def step(x, t):
        return smt.cross_entropy(x, t, label_smoothing=0.1)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(x, t)
    (grad,) = torch.autograd.grad(loss, x)
    assert "_ce_kernel" in launches

    def uncompiled():
        loss0 = step(x, t)
        return loss0, torch.autograd.grad(loss0, x)[0]

    loss0, grad0 = other_path(uncompiled)
    _same(loss, loss0, torch.float32)
    _same(grad, grad0, torch.float32, rowwise=True)
