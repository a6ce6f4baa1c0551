"""softmaxkit.torch against torch.nn.functional: nll_loss, dtype=, class weights, targets."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
TF = torch.nn.functional

import softmaxkit as smk  # noqa: E402
import softmaxkit.torch as smt  # noqa: E402

INF = math.inf


def _rand(*shape, dtype=torch.float64, scale=3.0, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64).mul_(scale).to(dtype)
    return x.requires_grad_(grad)


def _value_and_grad(fn, x):
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    cot = torch.linspace(-1.0, 2.0, out.numel(), dtype=out.dtype).reshape(out.shape)
    (g,) = torch.autograd.grad(out, x, cot)
    return out.detach(), g


def _close(a, b, rtol=1e-12, atol=1e-12):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=True)


# --- class weights ----------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_negative_class_weights_are_accepted_like_torch(reduction, smoothing):
    # softmaxkit rejected negative class weights, which torch accepts (its own
    # OpInfo samples use them).
    x = _rand(5, 4)
    t = torch.tensor([0, 1, 2, 3, 1])
    w = torch.tensor([1.5, -0.5, 2.0, -1.25], dtype=torch.float64)

    def ours(a):
        return smt.cross_entropy(a, t, weight=w, reduction=reduction, label_smoothing=smoothing)

    def theirs(a):
        return TF.cross_entropy(a, t, weight=w, reduction=reduction, label_smoothing=smoothing)

    got, want = _value_and_grad(ours, x), _value_and_grad(theirs, x)
    _close(got[0], want[0])
    _close(got[1], want[1])
    q = torch.softmax(_rand(5, 4, seed=1), 1)
    _close(smt.cross_entropy(x, q, weight=w, reduction=reduction), TF.cross_entropy(x, q, weight=w, reduction=reduction))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_negative_class_weights_native_and_xp_paths_agree(dtype):
    # The CPU kernels and the xp formulas share the class-weight rule; a
    # negative weight must not send either one down another road.
    x = _rand(6, 5, dtype=dtype)
    x[0, 2] = 40.0  # a confident row whose target is its argmax
    t = torch.tensor([2, 1, 0, 4, 3, 2])
    w = torch.tensor([-1.0, 2.0, -0.25, 0.5, 3.0], dtype=dtype)
    got = _value_and_grad(lambda a: smt.cross_entropy(a, t, weight=w, reduction="sum"), x)
    from softmaxkit import kernels as _native

    with _native.disabled():
        xp_path = _value_and_grad(lambda a: smt.cross_entropy(a, t, weight=w, reduction="sum"), x)
    want = _value_and_grad(lambda a: TF.cross_entropy(a.double(), t, weight=w.double(), reduction="sum"), x)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else {}
    _close(got[0], xp_path[0], **tol)
    _close(got[1], xp_path[1], **tol)
    _close(got[0].double(), want[0], **tol)
    _close(got[1], want[1], **tol)


def test_negative_class_weights_numpy_path_matches_torch():
    x = _rand(4, 3)
    t = torch.tensor([0, 1, 2, 1])
    w = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    loss, grad = smk.cross_entropy(x.numpy(), t.numpy(), weight=w.numpy(), return_grad=True)
    want, want_grad = _value_and_grad(lambda a: TF.cross_entropy(a, t, weight=w), x)
    np.testing.assert_allclose(loss, want.numpy(), rtol=1e-12)
    # _value_and_grad uses a cotangent of -1 for a scalar
    np.testing.assert_allclose(-grad, want_grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("bad", [math.nan, INF, -INF])
def test_non_finite_class_weights_raise(bad):
    w = torch.tensor([1.0, bad, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"weight must be finite; got weight\[1\]"):
        smt.cross_entropy(_rand(2, 3), torch.tensor([0, 1]), weight=w)
    with pytest.raises(ValueError, match=r"weight must be finite; got weight\[1\]"):
        smk.cross_entropy(_rand(2, 3).numpy(), np.array([0, 1]), weight=w.numpy())


@pytest.mark.parametrize("path", ["torch", "numpy"])
def test_zero_total_class_weight_mean_is_zero_with_zero_gradient(path):
    # Weights of both signs can sum to 0 over the batch: torch divides by it
    # (inf or NaN); softmaxkit's mean over a total weight of 0 is 0, as for an
    # all-ignored batch.
    x = _rand(2, 3)
    t = torch.tensor([0, 1])
    w = torch.tensor([1.0, -1.0, 5.0], dtype=torch.float64)
    assert not math.isfinite(float(TF.cross_entropy(x, t, weight=w)))
    if path == "torch":
        loss, grad = _value_and_grad(lambda a: smt.cross_entropy(a, t, weight=w), x)
    else:
        loss, grad = smk.cross_entropy(x.numpy(), t.numpy(), weight=w.numpy(), return_grad=True)
        loss, grad = torch.as_tensor(loss), torch.as_tensor(grad)
    assert float(loss) == 0.0
    assert not grad.any()


# --- ignore_index with probability targets ------------------------------------------


@pytest.mark.parametrize("ignore_index", [0, 1, 7])
def test_ignore_index_with_probability_targets_raises_like_torch(ignore_index):
    # softmaxkit silently ignored a non-negative ignore_index given with
    # probability targets, where torch refuses it.
    x, q = _rand(2, 3), torch.softmax(_rand(2, 3, seed=1), 1)
    with pytest.raises(RuntimeError, match="ignore_index"):
        TF.cross_entropy(x, q, ignore_index=ignore_index)
    with pytest.raises(ValueError, match=rf"ignore_index={ignore_index} .*probability targets"):
        smt.cross_entropy(x, q, ignore_index=ignore_index)
    with pytest.raises(ValueError, match="ignore_index"):
        smt.CrossEntropyLoss(ignore_index=ignore_index)(x, q)


@pytest.mark.parametrize("ignore_index", [-100, -1, -5])
def test_negative_ignore_index_with_probability_targets_is_unused_like_torch(ignore_index):
    x, q = _rand(2, 3), torch.softmax(_rand(2, 3, seed=1), 1)
    _close(smt.cross_entropy(x, q, ignore_index=ignore_index), TF.cross_entropy(x, q, ignore_index=ignore_index))


# --- dtype= on softmax and log_softmax ------------------------------------------------


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize(
    ("in_dtype", "dtype"),
    [(torch.float16, torch.float32), (torch.float32, torch.float64), (torch.float64, torch.float32), (torch.bfloat16, torch.float64)],
)
def test_dtype_casts_the_input_before_the_op_like_torch(name, in_dtype, dtype):
    # softmaxkit.torch had no dtype= (torch's way to compute a half-precision
    # softmax in float32 and get the gradient back in half precision).
    x = _rand(3, 5, dtype=in_dtype)
    got, got_grad = _value_and_grad(lambda a: getattr(smt, name)(a, 1, dtype=dtype), x)
    want, want_grad = _value_and_grad(lambda a: getattr(TF, name)(a, 1, dtype=dtype), x)
    assert got.dtype == want.dtype == dtype
    assert got_grad.dtype == want_grad.dtype == in_dtype
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    _close(got, want, **tol)
    # the gradient is rounded to the input's dtype on the way back
    grad_tol = {torch.float16: 1e-3, torch.bfloat16: 1e-2}.get(in_dtype)
    _close(got_grad, want_grad, **(tol if grad_tol is None else dict(rtol=grad_tol, atol=grad_tol)))


def test_dtype_promotes_integer_input():
    x = torch.tensor([[1, 2, 3]])
    _close(smt.softmax(x, 1, dtype=torch.float32), TF.softmax(x, 1, dtype=torch.float32))
    assert smt.log_softmax(x, 1, dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64, "float32", np.float32])
def test_dtype_must_be_a_floating_torch_dtype(dtype):
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype"):
        smt.softmax(_rand(2, 3), 1, dtype=dtype)


# --- nll_loss and NLLLoss -------------------------------------------------------------

NLL_LAYOUTS = [((5, 4), (5,)), ((4,), ()), ((3, 4, 2, 3), (3, 2, 3)), ((2, 4, 5), (2, 5))]


def _targets(shape, n_classes, seed=0, ignore_index=None):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, n_classes, shape, generator=g)
    if ignore_index is not None and t.numel() > 1:
        t.view(-1)[::3] = ignore_index
    return t


@pytest.mark.parametrize(("shape", "target_shape"), NLL_LAYOUTS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [{}, {"weight": True}, {"ignore_index": 2}, {"weight": True, "ignore_index": -1}])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nll_loss_matches_torch_in_every_layout(shape, target_shape, reduction, options, dtype):
    # softmaxkit.torch had no nll_loss.
    n_classes = shape[0] if len(shape) == 1 else shape[1]
    ignore_index = options.get("ignore_index", -100)
    t = _targets(target_shape, n_classes, ignore_index=ignore_index if "ignore_index" in options else None)
    w = torch.tensor([0.5, -1.0, 2.0, 1.5], dtype=dtype) if options.get("weight") else None
    x = torch.log_softmax(_rand(*shape, dtype=dtype), 0 if len(shape) == 1 else 1)
    kw = dict(weight=w, ignore_index=ignore_index, reduction=reduction)
    got = _value_and_grad(lambda a: smt.nll_loss(a, t, **kw), x)
    want = _value_and_grad(lambda a: TF.nll_loss(a, t, **kw), x)
    assert got[0].dtype == want[0].dtype and got[0].shape == want[0].shape
    assert got[1].dtype == dtype
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else {}
    _close(got[0], want[0], **tol)
    _close(got[1], want[1], **tol)


def test_nll_loss_gradient_is_exact():
    # d loss / d y[i, t_i] = -w_t / (sum of the kept weights), one rounding.
    y = torch.log_softmax(_rand(4, 3), 1).requires_grad_(True)
    t = torch.tensor([0, 2, -100, 2])
    w = torch.tensor([0.3, 7.0, 1.1], dtype=torch.float64)
    (g,) = torch.autograd.grad(smt.nll_loss(y, t, w), y)
    want = torch.zeros_like(y)
    for i, c in enumerate(t.tolist()):
        if c >= 0:
            want[i, c] = -w[c] / (0.3 + 1.1 + 1.1)
    assert torch.equal(g, want)
    loss = smt.nll_loss(y, t, w, reduction="none")
    assert torch.equal(loss, torch.stack([-w[c] * y[i, c] if c >= 0 else y.new_zeros(()) for i, c in enumerate(t.tolist())]))


def test_nll_loss_all_ignored_mean_is_zero_with_zero_gradient():
    y = torch.log_softmax(_rand(2, 3), 1)
    t = torch.tensor([-100, -100])
    assert math.isnan(float(TF.nll_loss(y, t)))
    loss, grad = _value_and_grad(lambda a: smt.nll_loss(a, t), y)
    assert float(loss) == 0.0 and not grad.any()


def test_nll_loss_module_is_drop_in():
    y = torch.log_softmax(_rand(5, 4), 1)
    t = _targets((5,), 4)
    w = torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64)
    ours, theirs = smt.NLLLoss(w, ignore_index=1, reduction="sum"), torch.nn.NLLLoss(w, ignore_index=1, reduction="sum")
    _close(ours(y, t), theirs(y, t))
    assert "weight" in dict(ours.named_buffers())
    with pytest.warns(DeprecationWarning):
        legacy = smt.NLLLoss(size_average=False)
    assert legacy.reduction == "sum"


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda y, t: smt.nll_loss(y, t.float()), TypeError, "target must hold integer class indices"),
        (lambda y, t: smt.nll_loss(y, t[:2]), ValueError, "must have shape"),
        (lambda y, t: smt.nll_loss(y, torch.tensor([0, 1, 9])), ValueError, r"target\[2\] = 9 is not a class index"),
        (lambda y, t: smt.nll_loss(y[0, 0], t[0]), ValueError, "class dimension"),
        (lambda y, t: smt.nll_loss(y, t, weight=torch.ones(2)), ValueError, "weight must have shape"),
        (lambda y, t: smt.nll_loss(y, t, reduction="avg"), ValueError, "reduction"),
        (lambda y, t: smt.nll_loss(y.numpy(), t), TypeError, "input must be a torch.Tensor"),
        (lambda y, t: smt.nll_loss(y, t.numpy()), TypeError, "target must be a torch.Tensor"),
        (lambda y, t: smt.nll_loss(y, t, ignore_index=1.5), TypeError, "ignore_index must be an int"),
    ],
)
def test_nll_loss_bad_inputs_raise_clear_errors(call, error, match):
    y = torch.log_softmax(_rand(3, 4), 1)
    with pytest.raises(error, match=match):
        call(y, torch.tensor([0, 1, 2]))


# Regression: pos_weight had to be >= 0 in every front end, while torch
# accepts any value; the rule is now the class weights' (finite, any sign).
def test_negative_pos_weight_matches_torch():
    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.rand(4, 3, dtype=torch.float64)
    beta = torch.tensor([1.5, -0.5, 0.0], dtype=torch.float64)
    ours = smt.binary_cross_entropy_with_logits(x, y, pos_weight=beta)
    (g_ours,) = torch.autograd.grad(ours, x)
    theirs = torch.nn.functional.binary_cross_entropy_with_logits(x, y, pos_weight=beta)
    (g_theirs,) = torch.autograd.grad(theirs, x)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(g_ours, g_theirs)
    numpy_loss = smk.binary_cross_entropy_with_logits(x.detach().numpy(), y.numpy(), pos_weight=beta.numpy())
    np.testing.assert_allclose(numpy_loss, theirs.item(), rtol=1e-13)
