"""softmaxkit.torch: gradients, parity with torch.nn.functional, accuracy, edges, errors."""

import contextlib
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
TF = torch.nn.functional

import softmaxkit as smk  # noqa: E402
import softmaxkit.torch as smt  # noqa: E402
from softmaxkit import kernels as _native  # noqa: E402
from softmaxkit.frontend import layout as _layout  # noqa: E402
from softmaxkit.backends.torch import functions as _functions  # noqa: E402

from tests import reference as ref  # noqa: E402

INF = math.inf


def _rand(*shape, dtype=torch.float32, scale=3.0, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64).mul_(scale).to(dtype)
    return x.requires_grad_(grad)


def _grad(fn, *inputs):
    out = fn(*inputs)
    return out, torch.autograd.grad(out.sum(), inputs)


def _close(a, b, rtol=1e-5, atol=1e-7):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=True)


def _close_scaled(a, b):
    """1e-5 relative, where entries that cancel are judged against the largest one.

    torch's ``x - logsumexp(x)`` and ``p * (g - <p, g>)`` lose relative accuracy
    near 0; softmaxkit does not, so the comparison cannot be tighter there.
    """
    _close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


# --- gradcheck (float64) --------------------------------------------------------


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_family_gradcheck_and_gradgradcheck(dim, log):
    x = _rand(3, 4, 2, dtype=torch.float64, grad=True)
    fn = smt.log_softmax if log else smt.softmax
    assert torch.autograd.gradcheck(lambda t: fn(t, dim), (x,))
    assert torch.autograd.gradgradcheck(lambda t: fn(t, dim), (x,))
    assert torch.autograd.gradgradcheck(lambda t: fn(t, dim, temperature=0.7), (x,))


def test_logsumexp_gradcheck():
    x = _rand(3, 4, 2, dtype=torch.float64, grad=True)
    assert torch.autograd.gradcheck(lambda t: smt.logsumexp(t, 1), (x,))
    assert torch.autograd.gradcheck(lambda t: smt.logsumexp(t, (0, 2), keepdim=True), (x,))


@pytest.mark.parametrize(
    "options",
    [{}, {"weight": "w", "ignore_index": 1}, {"label_smoothing": 0.2, "z_loss": 0.01}, {"reduction": "none", "weight": "w", "label_smoothing": 0.1}],
    ids=["plain", "weight-ignore", "smooth-zloss", "none-all"],
)
def test_cross_entropy_gradcheck_class_indices(options):
    x = _rand(5, 4, dtype=torch.float64, grad=True)
    t = torch.tensor([0, 1, 2, 3, 1])
    w = torch.rand(4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.1
    options = {k: (w if val == "w" else val) for k, val in options.items()}
    assert torch.autograd.gradcheck(lambda a: smt.cross_entropy(a, t, **options), (x,))


def test_cross_entropy_gradcheck_probabilities_wrt_logits_and_targets():
    x = _rand(3, 4, 2, dtype=torch.float64, grad=True)
    q = torch.rand(3, 4, 2, dtype=torch.float64, requires_grad=True)
    w = torch.rand(4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: smt.cross_entropy(a, b, w, label_smoothing=0.1), (x, q))


def test_bce_gradcheck_wrt_logits_and_targets():
    x = _rand(3, 4, dtype=torch.float64, grad=True)
    y = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    w, pw = torch.rand(3, 1, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: smt.binary_cross_entropy_with_logits(a, b, w, pos_weight=pw), (x, y))


# --- parity with torch.nn.functional (float32) -------------------------------


CE_OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"weight": True},
    {"weight": True, "reduction": "none"},
    {"ignore_index": 2},
    {"weight": True, "ignore_index": 0, "label_smoothing": 0.3},
    {"label_smoothing": 0.1, "reduction": "sum"},
    {"weight": True, "label_smoothing": 0.25},
]


@pytest.mark.parametrize("options", CE_OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("shape", [(6, 5), (3, 5, 2), (5,)], ids=["2d", "kdim", "1d"])
def test_cross_entropy_matches_torch_class_indices(options, shape):
    x = _rand(*shape, grad=True, seed=1)
    n_classes = shape[0] if len(shape) == 1 else shape[1]
    target_shape = () if len(shape) == 1 else shape[:1] + shape[2:]
    t = torch.randint(0, n_classes, target_shape, generator=torch.Generator().manual_seed(2))
    kw = dict(options)
    if kw.pop("weight", False):
        kw["weight"] = torch.rand(n_classes, generator=torch.Generator().manual_seed(3)) + 0.1
    ours, g_ours = _grad(lambda a: smt.cross_entropy(a, t, **kw), x)
    theirs, g_theirs = _grad(lambda a: TF.cross_entropy(a, t, **kw), x)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    _close(ours, theirs)
    _close_scaled(g_ours[0], g_theirs[0])


@pytest.mark.parametrize("options", [{}, {"reduction": "none"}, {"weight": True, "label_smoothing": 0.2}, {"reduction": "sum"}])
def test_cross_entropy_matches_torch_probabilities(options):
    x = _rand(4, 6, 3, grad=True, seed=4)
    q = torch.softmax(_rand(4, 6, 3, seed=5), 1).requires_grad_()
    kw = dict(options)
    if kw.pop("weight", False):
        kw["weight"] = torch.rand(6) + 0.1
    ours, g_ours = _grad(lambda a, b: smt.cross_entropy(a, b, **kw), x, q)
    theirs, g_theirs = _grad(lambda a, b: TF.cross_entropy(a, b, **kw), x, q)
    _close(ours, theirs)
    for a, b in zip(g_ours, g_theirs):
        _close(a, b)


@pytest.mark.parametrize("options", [{}, {"reduction": "none"}, {"reduction": "sum"}, {"weight": True, "pos_weight": True}])
def test_bce_matches_torch(options):
    x = _rand(5, 4, grad=True, seed=6)
    y = torch.rand(5, 4, generator=torch.Generator().manual_seed(7)).requires_grad_()
    kw = {}
    if options.get("weight"):
        kw["weight"] = torch.rand(5, 1) + 0.1
        kw["pos_weight"] = torch.rand(4) + 0.5
    if "reduction" in options:
        kw["reduction"] = options["reduction"]
    ours, g_ours = _grad(lambda a, b: smt.binary_cross_entropy_with_logits(a, b, **kw), x, y)
    theirs, g_theirs = _grad(lambda a, b: TF.binary_cross_entropy_with_logits(a, b, **kw), x, y)
    _close(ours, theirs)
    for a, b in zip(g_ours, g_theirs):
        _close(a, b)


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_softmax_family_matches_torch(dim):
    x = _rand(3, 4, 5, grad=True, seed=8)
    cotangent = _rand(3, 4, 5, seed=9)
    for ours_fn, theirs_fn in [(smt.softmax, torch.softmax), (smt.log_softmax, torch.log_softmax)]:
        ours, g_ours = _grad(lambda a: ours_fn(a, dim) * cotangent, x)
        theirs, g_theirs = _grad(lambda a: theirs_fn(a, dim) * cotangent, x)
        _close_scaled(ours, theirs)
        _close_scaled(g_ours[0], g_theirs[0])
    ours, g_ours = _grad(lambda a: smt.logsumexp(a, dim, keepdim=True), x)
    theirs, g_theirs = _grad(lambda a: torch.logsumexp(a, dim, keepdim=True), x)
    _close(ours, theirs)
    _close(g_ours[0], g_theirs[0])


def test_temperature_equals_scaled_logits():
    x = _rand(4, 7, dtype=torch.float64, grad=True)
    a, ga = _grad(lambda t: smt.softmax(t, 1, temperature=2.5) * torch.arange(7.0, dtype=torch.float64), x)
    b, gb = _grad(lambda t: torch.softmax(t / 2.5, 1) * torch.arange(7.0, dtype=torch.float64), x)
    _close(a, b, rtol=1e-12, atol=1e-15)
    _close(ga[0], gb[0], rtol=1e-12, atol=1e-15)


# --- accuracy contract ------------------------------------------------------------


def _confident_rows(n_classes=8, margins=(5, 10, 17, 25, 40, 60, 80, 90), seed=0):
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(len(margins), n_classes)).astype(np.float32)
    for i, m in enumerate(margins):
        rows[i, 2] = rows[i].max() + m
    return rows


@pytest.mark.parametrize("path", ["native", "xp"])
@pytest.mark.parametrize("target", ["argmax", "other"])
def test_cross_entropy_confident_rows_within_2_ulp(target, path):
    """torch's gradient at the target is exactly 0 past margin ~17; ours is right."""
    rows = _confident_rows()
    x = torch.tensor(rows, requires_grad=True)
    t = torch.full((len(rows),), 2 if target == "argmax" else 5)
    with contextlib.nullcontext() if path == "native" else _native.disabled():
        loss = smt.cross_entropy(x, t, reduction="none")
        loss.sum().backward()
    for i, r in enumerate(rows):
        coef, _ = ref.hard_coef(r.size, int(t[i]))
        exact_loss, exact_grad = ref.cross_entropy(ref.to_mp(r), coef)
        assert ref.ulp_error([float(loss[i])], [exact_loss], np.float32) <= 2
        assert ref.ulp_error(x.grad[i].numpy(), exact_grad, np.float32) <= 2
    if target == "argmax":
        assert (x.grad[:, 2] < 0).all()


def test_log_softmax_and_softmax_confident_rows_within_2_ulp():
    rows = _confident_rows()
    x = torch.tensor(rows)
    y, p = smt.log_softmax(x, 1), smt.softmax(x, 1)
    for i, r in enumerate(rows):
        xs = ref.to_mp(r)
        assert ref.ulp_error(y[i].numpy(), ref.log_softmax(xs), np.float32) <= 2
        assert ref.ulp_error(p[i].numpy(), ref.softmax(xs), np.float32) <= 2


def test_wide_row_within_2_ulp():
    rng = np.random.default_rng(3)
    r = (rng.normal(size=20000) * 4).astype(np.float32)
    x = torch.tensor(r)
    xs = ref.to_mp(r)
    exact = ref.log_softmax(xs)
    picks = rng.choice(r.size, 200, replace=False)
    y, p = smt.log_softmax(x, 0).numpy(), smt.softmax(x, 0).numpy()
    assert ref.ulp_error(y[picks], [exact[i] for i in picks], np.float32) <= 2
    assert ref.ulp_error(p[picks], [ref.mp.exp(exact[i]) for i in picks], np.float32) <= 2
    assert ref.ulp_error([float(smt.logsumexp(x, 0))], [ref.lse(xs)], np.float32) <= 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_computed_wide_and_rounded_once(dtype):
    np_dtype = np.dtype(np.float16) if dtype == torch.float16 else ref.BFLOAT16
    rows = _confident_rows(margins=(1, 3, 5, 8, 10))
    x = torch.tensor(rows).to(dtype).requires_grad_()
    xs_rows = x.detach().double().numpy()
    t = torch.tensor([2, 0, 2, 1, 2])
    p, y = smt.softmax(x, 1), smt.log_softmax(x, 1)
    loss = smt.cross_entropy(x, t, reduction="none")
    loss.sum().backward()
    assert p.dtype == y.dtype == loss.dtype == x.grad.dtype == dtype
    for i, r in enumerate(xs_rows):
        xs = ref.to_mp(r)
        assert ref.ulp_error(p[i].detach().double().numpy(), ref.softmax(xs), np_dtype) <= 2
        assert ref.ulp_error(y[i].detach().double().numpy(), ref.log_softmax(xs), np_dtype) <= 2
        exact_loss, exact_grad = ref.cross_entropy(xs, ref.hard_coef(r.size, int(t[i]))[0])
        assert ref.ulp_error([float(loss[i])], [exact_loss], np_dtype) <= 2
        assert ref.ulp_error(x.grad[i].double().numpy(), exact_grad, np_dtype) <= 2


def test_accelerator_working_dtype_is_compensated_float32():
    meta = torch.device("meta")
    assert smt.working_dtype(torch.float32, meta) == (torch.float32, False)
    assert smt.working_dtype(torch.bfloat16, meta) == (torch.float32, True)
    assert smt.working_dtype(torch.float64, meta) == (torch.float64, False)
    assert smt.working_dtype(torch.float32, torch.device("cpu")) == (torch.float64, True)


def test_compensated_float32_path_within_2_ulp(monkeypatch):
    """The path CUDA takes for float32, exercised on the CPU."""
    monkeypatch.setattr(_functions, "working_dtype", lambda dtype, device: (torch.float32, dtype != torch.float32))
    rows = _confident_rows(margins=(5, 10, 17, 25, 40, 60, 80))
    x = torch.tensor(rows, requires_grad=True)
    t = torch.tensor([2, 0, 2, 1, 2, 2, 3])
    loss = smt.cross_entropy(x, t, reduction="none")
    loss.sum().backward()
    y = smt.log_softmax(x.detach(), 1)
    for i, r in enumerate(rows):
        xs = ref.to_mp(r)
        exact_loss, exact_grad = ref.cross_entropy(xs, ref.hard_coef(r.size, int(t[i]))[0])
        assert ref.ulp_error([float(loss[i])], [exact_loss], np.float32) <= 2
        assert ref.ulp_error(x.grad[i].numpy(), exact_grad, np.float32) <= 2
        assert ref.ulp_error(y[i].numpy(), ref.log_softmax(xs), np.float32) <= 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x = _rand(64, 1000, grad=True)
    t = torch.randint(0, 1000, (64,))
    cpu, g_cpu = _grad(lambda a: smt.cross_entropy(a, t, label_smoothing=0.1), x)
    xc = x.detach().cuda().requires_grad_()
    gpu, g_gpu = _grad(lambda a: smt.cross_entropy(a, t.cuda(), label_smoothing=0.1), xc)
    _close(gpu.cpu(), cpu, rtol=1e-6, atol=0)
    _close(g_gpu[0].cpu(), g_cpu[0], rtol=1e-5, atol=1e-9)


# --- edge semantics -----------------------------------------------------------------


def test_masked_rows_give_defined_values_and_zero_gradients():
    x = torch.tensor([[-INF, -INF, -INF], [1.0, -INF, 2.0]], requires_grad=True)
    p, y, lse = smt.softmax(x, 1), smt.log_softmax(x, 1), smt.logsumexp(x, 1)
    assert p[0].tolist() == [0.0, 0.0, 0.0] and p[1, 1] == 0
    assert y[0].tolist() == [-INF] * 3 and y[1, 1] == -INF
    assert lse[0] == -INF
    for out in (p, torch.where(torch.isfinite(y), y, 0), lse):
        (g,) = torch.autograd.grad(out.sum(), x)
        assert not g.isnan().any() and g[0].tolist() == [0.0, 0.0, 0.0]
    loss = smt.cross_entropy(x, torch.tensor([0, 2]), reduction="none")
    (g,) = torch.autograd.grad(loss[1], x)
    assert g[0].tolist() == [0.0, 0.0, 0.0] and g[1, 1] == 0


def test_inf_and_nan_rows():
    x = torch.tensor([[INF, 0.0, INF], [math.nan, 0.0, 1.0], [0.0, 0.0, 0.0]], requires_grad=True)
    p = smt.softmax(x, 1)
    assert p[0].tolist() == [0.5, 0.0, 0.5]
    assert p[1].isnan().all() and not p[[0, 2]].isnan().any()
    assert smt.logsumexp(x, 1)[0] == INF
    (g,) = torch.autograd.grad((p * torch.tensor([1.0, 2.0, 3.0])).sum(), x)
    assert not g[[0, 2]].isnan().any()


def test_empty_class_axis():
    x = torch.zeros(3, 0)
    assert smt.softmax(x, 1).shape == (3, 0)
    assert smt.logsumexp(x, 1).tolist() == [-INF] * 3
    with pytest.raises(ValueError, match="empty class"):
        smt.cross_entropy(x, torch.zeros(3, dtype=torch.long))


def test_all_ignored_mean_is_zero_with_zero_gradient():
    """torch gives NaN here."""
    x = _rand(3, 4, grad=True)
    t = torch.full((3,), -100)
    loss = smt.cross_entropy(x, t)
    assert torch.isnan(TF.cross_entropy(x, t))
    loss.backward()
    assert loss.item() == 0.0 and x.grad.abs().max() == 0
    x.grad = None
    smt.cross_entropy(x, t, weight=torch.zeros(4).index_fill(0, torch.tensor([1]), 1.0), label_smoothing=0.2).backward()
    assert x.grad.abs().max() == 0


def test_smoothing_gives_no_mass_to_masked_classes():
    x = torch.tensor([[1.0, -INF, 0.5, 2.0]], requires_grad=True)
    loss = smt.cross_entropy(x, torch.tensor([0]), label_smoothing=0.3)
    assert torch.isfinite(loss)
    loss.backward()
    assert x.grad[0, 1] == 0 and torch.isfinite(x.grad).all()
    expected = smt.cross_entropy(x.detach()[:, [0, 2, 3]], torch.tensor([0]), label_smoothing=0.3)
    _close(loss.detach(), expected, rtol=1e-6, atol=0)


def test_target_on_masked_logit_is_inf_with_finite_gradient():
    x = torch.tensor([[1.0, -INF, 0.5]], requires_grad=True)
    loss = smt.cross_entropy(x, torch.tensor([1]))
    loss.backward()
    assert loss.item() == INF and torch.isfinite(x.grad).all()


def test_inputs_are_not_modified():
    x = _rand(4, 5)
    before = x.clone()
    smt.cross_entropy(x, torch.tensor([0, 1, 2, 3]), label_smoothing=0.1)
    smt.softmax(x, 1)
    assert torch.equal(x, before)


def test_chunked_rows_equal_one_piece(monkeypatch):
    x = _rand(37, 11, grad=True, seed=9)
    t = torch.randint(0, 11, (37,), generator=torch.Generator().manual_seed(1))
    with _native.disabled():
        whole, g_whole = _grad(lambda a: smt.cross_entropy(a, t, label_smoothing=0.1), x)
        p_whole = smt.softmax(x.detach(), 1)
        monkeypatch.setattr(_layout, "CHUNK_BYTES", 40 * 8)
        chunked, g_chunked = _grad(lambda a: smt.cross_entropy(a, t, label_smoothing=0.1), x)
        assert torch.equal(whole, chunked) and torch.equal(g_whole[0], g_chunked[0])
        assert torch.equal(p_whole, smt.softmax(x.detach(), 1))


@pytest.mark.skipif(not _native.available(), reason="the native extension is not built")
@pytest.mark.parametrize("options", [{}, {"reduction": "sum", "weight": True}, {"label_smoothing": 0.2, "z_loss": 1e-3, "ignore_index": 3}])
def test_native_cpu_pass_matches_xp_pass(options):
    x = _rand(12, 9, grad=True, seed=10)
    t = torch.randint(0, 9, (12,), generator=torch.Generator().manual_seed(4))
    kw = dict(options)
    if kw.pop("weight", False):
        kw["weight"] = torch.rand(9) + 0.1
    native, g_native = _grad(lambda a: smt.cross_entropy(a, t, **kw), x)
    with _native.disabled():
        generic, g_generic = _grad(lambda a: smt.cross_entropy(a, t, **kw), x)
    _close(native, generic, rtol=2e-7, atol=0)
    _close(g_native[0], g_generic[0], rtol=2e-7, atol=1e-12)


def test_cross_entropy_keeps_no_rows_by_classes_tensor_for_backward():
    """Memory design: backward recomputes; only the logits, targets and scalars are saved."""
    n, c = 16, 64
    x = _rand(n, c, grad=True)
    t = torch.randint(0, c, (n,))
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = smt.cross_entropy(x, t, weight=torch.rand(c), label_smoothing=0.1)
    large = [s for s in saved if s.numel() >= n * c and s.data_ptr() != x.data_ptr()]
    assert saved and not large
    loss.backward()


# --- bad inputs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda x, t: smt.cross_entropy(x.numpy(), t), TypeError, "torch.Tensor"),
        (lambda x, t: smt.cross_entropy(x > 0, t), TypeError, "real floating"),
        (lambda x, t: smt.cross_entropy(x, t + 10), ValueError, "not a class index"),
        (lambda x, t: smt.cross_entropy(x, t[:2]), ValueError, "must have shape"),
        (lambda x, t: smt.cross_entropy(x, -torch.ones(3, 4)), ValueError, "non-negative"),
        (lambda x, t: smt.cross_entropy(x, t, weight=torch.full((4,), math.nan)), ValueError, "weight must be finite"),
        (lambda x, t: smt.cross_entropy(x, t, weight=torch.ones(3)), ValueError, "weight must have shape"),
        (lambda x, t: smt.cross_entropy(x, t, reduction="avg"), ValueError, "reduction"),
        (lambda x, t: smt.cross_entropy(x, t, label_smoothing=1.5), ValueError, "label_smoothing"),
        (lambda x, t: smt.cross_entropy(x, t, z_loss=-1.0), ValueError, "z_loss"),
        (lambda x, t: smt.cross_entropy(x, t, ignore_index=1.5), TypeError, "ignore_index"),
        (lambda x, t: smt.cross_entropy(x, t > 0), TypeError, "target must hold"),
        (lambda x, t: smt.softmax(x, 2), ValueError, "dim=2 is out of range"),
        (lambda x, t: smt.softmax(x, 1, temperature=0.0), ValueError, "temperature"),
        (lambda x, t: smt.logsumexp(x, "1"), TypeError, "dim must be"),
        (lambda x, t: smt.binary_cross_entropy_with_logits(x, x + 2), ValueError, r"\[0, 1\]"),
        (lambda x, t: smt.binary_cross_entropy_with_logits(x, torch.zeros(3, 4), pos_weight=torch.full((4,), torch.nan)), ValueError, "pos_weight must be finite"),
        (lambda x, t: smt.binary_cross_entropy_with_logits(x, torch.zeros(4)), ValueError, "shape"),
        (lambda x, t: smt.binary_cross_entropy_with_logits(x, torch.zeros(3, 4), weight=torch.ones(2)), ValueError, "broadcast"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, match):
    x = _rand(3, 4)
    t = torch.tensor([0, 1, 3])
    with pytest.raises(error, match=match):
        call(x, t)


# --- modules ------------------------------------------------------------------------


def test_modules_are_drop_in():
    x = _rand(6, 5, grad=True, seed=11)
    t = torch.tensor([0, 1, 2, 3, 4, 1])
    w = torch.rand(5) + 0.1
    ours = smt.CrossEntropyLoss(weight=w, ignore_index=1, label_smoothing=0.1)
    theirs = torch.nn.CrossEntropyLoss(weight=w, ignore_index=1, label_smoothing=0.1)
    _close(ours(x, t), theirs(x, t))
    assert set(ours.state_dict()) == set(theirs.state_dict()) == {"weight"}
    assert smt.CrossEntropyLoss(z_loss=0.5)(x, t) > smt.CrossEntropyLoss()(x, t)
    y = torch.rand(6, 5)
    pw = torch.rand(5) + 0.5
    _close(smt.BCEWithLogitsLoss(pos_weight=pw)(x, y), torch.nn.BCEWithLogitsLoss(pos_weight=pw)(x, y))
    _close(smt.Softmax(dim=0)(x), torch.nn.Softmax(dim=0)(x))
    _close(smt.LogSoftmax(dim=1)(x), torch.nn.LogSoftmax(dim=1)(x))
    with pytest.warns(UserWarning, match="legacy rule"):
        _close(smt.Softmax()(x), torch.softmax(x, 1))
    with pytest.warns(DeprecationWarning):
        legacy = smt.CrossEntropyLoss(reduce=False)
    assert legacy.reduction == "none"
    assert smt.CrossEntropyLoss(ignore_index=0)(torch.zeros(2, 3), torch.tensor([0, 0])).item() == 0.0


# --- torch.func, torch.compile, dispatch --------------------------------------------


def test_vmap_and_grad_transforms():
    x = _rand(4, 3, 5, dtype=torch.float64, seed=12)
    t = torch.randint(0, 5, (4, 3), generator=torch.Generator().manual_seed(3))
    per_batch = torch.func.vmap(lambda a, b: smt.cross_entropy(a, b, label_smoothing=0.1))(x, t)
    expected = torch.stack([smt.cross_entropy(x[i], t[i], label_smoothing=0.1) for i in range(4)])
    _close(per_batch, expected, rtol=1e-12, atol=0)
    grads = torch.func.vmap(torch.func.grad(lambda a, b: smt.cross_entropy(a, b)))(x, t)
    xg = x.clone().requires_grad_()
    smt.cross_entropy(xg.reshape(12, 5), t.reshape(12), reduction="sum").backward()
    _close(grads * 3, xg.grad, rtol=1e-12, atol=1e-15)
    p = torch.func.vmap(lambda a: smt.softmax(a, -1))(x)
    _close(p, torch.softmax(x, -1), rtol=1e-12, atol=1e-15)
    hess = torch.func.jacrev(torch.func.jacrev(lambda a: smt.logsumexp(a, 0)))(x[0, 0])
    pr = torch.softmax(x[0, 0], 0)
    _close(hess, torch.diag(pr) - torch.outer(pr, pr), rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def compiled_loss():
    def loss(x, t):
        return smt.cross_entropy(x, t, label_smoothing=0.1, z_loss=1e-3) + smt.log_softmax(x, 1).mean()

    return loss, torch.compile(loss, fullgraph=True, dynamic=False)


def test_torch_compile_fullgraph_matches_eager(compiled_loss):
    """fullgraph=True raises on any graph break; backward runs through the compiled graph."""
    eager, compiled = compiled_loss
    x = _rand(8, 6, seed=13, grad=True)
    t = torch.tensor([0, 1, 2, 3, 4, 5, -100, 2])
    loss_c, grad_c = _grad(lambda a: compiled(a, t), x)
    loss_e, grad_e = _grad(lambda a: eager(a, t), x)
    _close(loss_c, loss_e, rtol=1e-6, atol=0)
    _close(grad_c[0], grad_e[0], rtol=1e-5, atol=1e-9)
    with pytest.raises(RuntimeError, match="not a class index"):
        compiled(x, torch.tensor([0, 1, 2, 3, 4, 9, -100, 2]))


def test_core_functions_dispatch_torch_tensors_with_autograd():
    x = _rand(4, 6, grad=True, seed=14)
    t = torch.tensor([0, 5, -100, 2])
    p = smk.softmax(x, axis=0, temperature=2.0)
    assert isinstance(p, torch.Tensor) and p.grad_fn is not None
    _close(p, torch.softmax(x / 2.0, 0))
    masked = smk.log_softmax(x, where=torch.arange(6) < 4)
    assert masked[:, 4:].eq(-INF).all() and masked.grad_fn is not None
    _close(smk.logsumexp(x, axis=None), torch.logsumexp(x, (0, 1)))
    loss, grad = smk.cross_entropy(x.T, t, axis=0, label_smoothing=0.1, return_grad=True)
    (expected,) = torch.autograd.grad(TF.cross_entropy(x, t, label_smoothing=0.1), x)
    _close(loss, TF.cross_entropy(x, t, label_smoothing=0.1))
    _close(grad, expected.T)
    assert loss.grad_fn is not None
    np_loss, np_grad = smk.cross_entropy(x.detach().T.numpy(), t.numpy(), axis=0, label_smoothing=0.1, return_grad=True)
    np.testing.assert_allclose(grad.numpy(), np_grad, rtol=1e-6, atol=1e-9)
    y = torch.rand(4, 6)
    bce, g = smk.binary_cross_entropy_with_logits(x.detach(), y, return_grad=True)
    (expected,) = torch.autograd.grad(TF.binary_cross_entropy_with_logits(x, y), x)
    _close(g, expected)
    sign_out = smk.logsumexp(x.detach(), b=torch.ones(6), return_sign=True)
    assert isinstance(sign_out[0], torch.Tensor)


# --- the native kernels on CPU tensors ---------------------------------------------


def _spy(monkeypatch, names):
    calls = []
    for name in names:
        original = getattr(_native.into, name)

        def wrapper(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(_native.into, name, wrapper)
    return calls


@pytest.mark.skipif(not _native.available(), reason="the native extension is not built")
@pytest.mark.parametrize("log", [False, True])
def test_cpu_tensors_take_the_native_kernels_forward_and_backward(monkeypatch, log):
    forward, backward = ("log_softmax_into", "log_softmax_vjp_into") if log else ("softmax_into", "softmax_vjp_into")
    calls = _spy(monkeypatch, [forward, backward])
    fn = smt.log_softmax if log else smt.softmax
    x = _rand(6, 9, grad=True)
    cotangent = _rand(6, 9, seed=1)
    y = fn(x, dim=-1, temperature=0.7)
    (g,) = torch.autograd.grad(y, x, cotangent)
    assert calls == [forward, backward]
    with _native.disabled():
        y_xp = fn(x, dim=-1, temperature=0.7)
        (g_xp,) = torch.autograd.grad(y_xp, x, cotangent)
    # Both paths are exact to float32: they agree within an ULP.
    _close(y, y_xp, rtol=2.4e-7, atol=1e-30)
    _close(g, g_xp, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(not _native.available(), reason="the native extension is not built")
def test_double_backward_does_not_take_the_native_backward(monkeypatch):
    calls = _spy(monkeypatch, ["softmax_vjp_into"])
    x = _rand(3, 4, dtype=torch.float64, grad=True)
    # A backward that records a graph must stay differentiable torch code.
    (g,) = torch.autograd.grad(smt.softmax(x, dim=-1)[:, 0].sum(), x, create_graph=True)
    assert calls == [] and g.requires_grad
