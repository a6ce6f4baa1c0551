"""softmaxkit.torch's custom operators: opcheck, torch.compile without graph breaks, autocast dtypes."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
TF = torch.nn.functional

import softmaxkit as smk  # noqa: E402
import softmaxkit.torch as smt  # noqa: E402
from softmaxkit import kernels as _native  # noqa: E402
from softmaxkit.backends.torch import ops  # noqa: E402

from tests import reference as ref  # noqa: E402

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
DTYPE_IDS = ["float32", "float64", "bfloat16", "float16"]


def _rand(*shape, dtype=torch.float32, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * 3).to(dtype).requires_grad_(grad)


# --- opcheck: schema, fake implementation, autograd registration, AOT dispatch ----------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dim", [1, 0])
def test_opcheck_softmax(dtype, log, dim):
    x = _rand(5, 7, dtype=dtype, grad=True)
    torch.library.opcheck(ops.softmax, (x, dim, 0.7, log))
    y = ops.softmax(x.detach(), dim, 1.0, log).requires_grad_()
    torch.library.opcheck(ops.softmax_backward, (y, _rand(5, 7, dtype=dtype, seed=1, grad=True), dim, 0.7, log))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("dim", [1, 0])
def test_opcheck_logsumexp(dtype, dim):
    x = _rand(5, 7, dtype=dtype, grad=True)
    torch.library.opcheck(ops.logsumexp, (x, dim))
    grad = _rand(7 if dim == 0 else 5, dtype=dtype, seed=1, grad=True)
    torch.library.opcheck(ops.logsumexp_backward, (x, grad, dim))


CE_CASES = [
    dict(hard=True, reduction="mean"),
    dict(hard=True, reduction="none", label_smoothing=0.1),
    dict(hard=True, reduction="sum", weight=True, z_loss=1e-3),
    dict(hard=True, reduction="mean", weight=True, ignore_index=2),
    dict(hard=False, reduction="mean"),
    dict(hard=False, reduction="none", weight=True, label_smoothing=0.2),
]


def _ce_args(case, dtype, grad=True):
    """Logits (3, 5, 2): classes at dim 1, as torch's (N, C, d) layout."""
    x = _rand(3, 5, 2, dtype=dtype, grad=grad)
    if case["hard"]:
        t = torch.tensor([[0, 4], [2, 1], [2, 3]])
    else:
        t = torch.softmax(_rand(3, 5, 2, seed=2), 1).to(dtype).requires_grad_(grad)
    w = torch.tensor([1.0, 0.5, 2.0, 1.5, 0.25]) if case.get("weight") else None
    return (
        x, t, 1, w, case.get("ignore_index", -100), case.get("label_smoothing", 0.0), case.get("z_loss", 0.0),
        case["reduction"], case["hard"], dtype,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CE_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_opcheck_cross_entropy(case, dtype):
    args = _ce_args(case, dtype)
    torch.library.opcheck(ops.cross_entropy, args)
    x, t, cdim, w, ignore_index, eps, z, reduction, hard, _ = args
    loss, denominator = ops.cross_entropy(*_ce_args(case, dtype, grad=False))
    grad = torch.ones_like(loss)
    torch.library.opcheck(
        ops.cross_entropy_backward,
        (x.detach(), t.detach(), cdim, w, denominator, grad, ignore_index, eps, z, reduction, hard, not hard),
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("factors", [False, True])
def test_opcheck_binary_cross_entropy(dtype, reduction, factors):
    x = _rand(4, 3, dtype=dtype, grad=True)
    y = torch.sigmoid(_rand(4, 3, seed=1)).to(dtype).requires_grad_()
    w = torch.tensor([1.0, 2.0, 0.5]) if factors else None
    pw = torch.tensor([3.0, 1.0, 0.5]) if factors else None
    torch.library.opcheck(ops.binary_cross_entropy_with_logits, (x, y, w, pw, reduction, dtype))
    grad = torch.ones(x.shape if reduction == "none" else (), dtype=dtype)
    torch.library.opcheck(ops.binary_cross_entropy_with_logits_backward, (x.detach(), y.detach(), w, pw, grad, reduction))


# --- torch.compile: one opaque node per operation, no graph break -----------------------


class _Recorder:
    """A torch.compile backend that keeps the FX graphs Dynamo hands it."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return gm.forward


def _every_operation(x, t, q):
    return (
        smt.cross_entropy(x, t, label_smoothing=0.1)
        + smt.cross_entropy(x, q, reduction="sum")
        + smt.softmax(x, 1).square().sum()
        + smt.log_softmax(x, 0, temperature=0.5).mean()
        + smt.logsumexp(x, 1).sum()
        + smt.binary_cross_entropy_with_logits(x, q)
        + smk.cross_entropy(x, t, axis=-1)
        + smk.softmax(x, axis=0).square().sum()
        + smk.logsumexp(x, axis=1).sum()
        + smk.log_softmax(x, axis=-1).mean()
        + smk.binary_cross_entropy_with_logits(x, q)
    )


def _inputs(rows=6, classes=5, grad=True):
    x = _rand(rows, classes, grad=grad)
    t = torch.arange(rows) % classes
    q = torch.softmax(_rand(rows, classes, seed=1), 1)
    return x, t, q


def test_compiled_graph_is_one_graph_of_custom_operators():
    torch._dynamo.reset()
    recorder = _Recorder()
    compiled = torch.compile(_every_operation, backend=recorder, fullgraph=True)
    x, t, q = _inputs()
    compiled(x, t, q)
    assert len(recorder.graphs) == 1
    code = recorder.graphs[0].code
    for name in ("softmax", "logsumexp", "cross_entropy", "binary_cross_entropy_with_logits"):
        assert f"torch.ops.softmaxkit.{name}.default" in code, name
    # no exponential, maximum or sum over the logits is traced: the operators do the work
    assert "torch.exp" not in code and "amax" not in code


def test_compiled_values_and_gradients_match_eager():
    torch._dynamo.reset()
    compiled = torch.compile(_every_operation, fullgraph=True)
    x, t, q = _inputs()
    (g_eager,) = torch.autograd.grad(_every_operation(x, t, q), x)
    out = compiled(x, t, q)
    (g_compiled,) = torch.autograd.grad(out, x)
    torch.testing.assert_close(out, _every_operation(x, t, q), rtol=1e-6, atol=0)
    torch.testing.assert_close(g_compiled, g_eager, rtol=1e-6, atol=1e-9)


def test_compiled_backward_runs_the_backward_operators():
    torch._dynamo.reset()
    graphs = []

    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def keep(gm, example_inputs):
        graphs.append(gm.code)
        return make_boxed_func(gm.forward)

    compiled = torch.compile(lambda x, t: smt.cross_entropy(x, t) + smt.softmax(x, 1)[:, 0].sum(), backend=aot_autograd(fw_compiler=keep, bw_compiler=keep), fullgraph=True)
    x, t, _ = _inputs()
    compiled(x, t).backward()
    backward = graphs[-1]
    assert "softmaxkit.cross_entropy_backward" in backward and "softmaxkit.softmax_backward" in backward
    assert "aten.exp." not in backward and "aten.amax." not in backward


def test_compiled_batch_sizes_recompile_no_more_than_torch():
    from torch._dynamo.testing import CompileCounter

    counts = []
    for loss in (TF.cross_entropy, smt.cross_entropy):
        torch._dynamo.reset()
        counter = CompileCounter()
        compiled = torch.compile(loss, backend=counter, fullgraph=True)
        for rows in (4, 7, 9, 12):
            x, t, _ = _inputs(rows=rows)
            compiled(x, t).backward()
        counts.append(counter.frame_count)
    assert counts[1] <= counts[0]


def test_compile_prints_no_warnings():
    """A fresh interpreter, user warnings made errors (Dynamo's are): compiling every operation must not warn."""
    script = textwrap.dedent(
        """
        import warnings
        import torch
        import softmaxkit as smk
        import softmaxkit.torch as smt
        from tests.backend_torch.test_torch_ops import _every_operation, _inputs
        warnings.simplefilter("error", UserWarning)
        x, t, q = _inputs()
        torch.compile(_every_operation, fullgraph=True)(x, t, q).backward()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Warning" not in done.stderr, done.stderr[-3000:]


def test_compiled_value_checks_raise_at_run_time():
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, t: smt.cross_entropy(x, t), fullgraph=True)
    x, _, _ = _inputs()
    with pytest.raises(RuntimeError, match="not a class index"):
        compiled(x, torch.tensor([0, 1, 2, 3, 9, 1]))


# --- the compiled path is one more path of the accuracy suite ---------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_compiled_confident_rows_within_2_ulp(dtype):
    np_dtype = np.float32 if dtype == torch.float32 else ref.BFLOAT16
    margins = (5, 20, 40, 80) if dtype == torch.float32 else (1, 3, 5, 8)
    rng = np.random.default_rng(5)
    rows = rng.normal(size=(len(margins), 9))
    for i, m in enumerate(margins):
        rows[i, 2] = rows[i].max() + m
    x = torch.tensor(rows).to(dtype).requires_grad_()
    t = torch.tensor([2, 5, 2, 5])

    def step(x, t):
        return smt.cross_entropy(x, t, reduction="none"), smt.log_softmax(x, 1)

    torch._dynamo.reset()
    loss, y = torch.compile(step, fullgraph=True)(x, t)
    loss.sum().backward()
    for i, r in enumerate(x.detach().double().numpy()):
        xs = ref.to_mp(r)
        exact_loss, exact_grad = ref.cross_entropy(xs, ref.hard_coef(r.size, int(t[i]))[0])
        assert ref.ulp_error([float(loss[i].detach())], [exact_loss], np_dtype) <= 2
        assert ref.ulp_error(x.grad[i].double().numpy(), exact_grad, np_dtype) <= 2
        assert ref.ulp_error(y[i].detach().double().numpy(), ref.log_softmax(xs), np_dtype) <= 2


# --- autocast -----------------------------------------------------------------------------


AUTOCAST_CASES = {
    "softmax": (lambda x, t: smt.softmax(x, 1), lambda x, t: TF.softmax(x, 1)),
    "log_softmax": (lambda x, t: smt.log_softmax(x, 1), lambda x, t: TF.log_softmax(x, 1)),
    "logsumexp": (lambda x, t: smt.logsumexp(x, 1), lambda x, t: torch.logsumexp(x, 1)),
    "cross_entropy": (lambda x, t: smt.cross_entropy(x, t), lambda x, t: TF.cross_entropy(x, t)),
    "cross_entropy_none": (lambda x, t: smt.cross_entropy(x, t, reduction="none"), lambda x, t: TF.cross_entropy(x, t, reduction="none")),
    "nll_loss": (lambda x, t: smt.nll_loss(x, t), lambda x, t: TF.nll_loss(x, t)),
    "bce": (
        lambda x, t: smt.binary_cross_entropy_with_logits(x, torch.sigmoid(x.detach())),
        lambda x, t: TF.binary_cross_entropy_with_logits(x, torch.sigmoid(x.detach())),
    ),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("name", list(AUTOCAST_CASES))
def test_autocast_result_dtypes_are_torchs(name, dtype):
    ours, theirs = AUTOCAST_CASES[name]
    x = _rand(4, 6, dtype=dtype, grad=True)
    t = torch.tensor([0, 5, 2, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = ours(x, t), theirs(x, t)
    assert got.dtype == want.dtype
    (g,) = torch.autograd.grad(got.float().sum(), x)
    assert g.dtype == dtype


def test_autocast_loss_is_the_float32_rounding_of_the_exact_loss():
    """torch.autocast keeps losses in float32; rounding the loss to bfloat16 would log 8.6875 for 8.6849."""
    x = (_rand(16, 3000, seed=7) * 0.5).to(torch.bfloat16).requires_grad_()
    t = torch.arange(16) * 61 % 3000
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = smt.cross_entropy(x, t)
    assert loss.dtype == torch.float32
    rows = x.detach().double().numpy()
    exact = sum(ref.cross_entropy(ref.to_mp(r), ref.hard_coef(r.size, int(t[i]))[0])[0] for i, r in enumerate(rows)) / 16
    assert ref.ulp_error([float(loss)], [exact], np.float32) <= 2


def test_autocast_under_compile_gives_torchs_dtype():
    torch._dynamo.reset()
    x = _rand(4, 6, dtype=torch.bfloat16, grad=True)
    t = torch.tensor([0, 5, 2, 1])

    def step(x, t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return smt.cross_entropy(x, t)

    loss = torch.compile(step, fullgraph=True)(x, t)
    assert loss.dtype == torch.float32
    loss.backward()
    assert x.grad.dtype == torch.bfloat16 and bool(torch.isfinite(x.grad).all())


# --- the native kernels take 16-bit tensors -----------------------------------------------


@pytest.mark.skipif(not _native.available(), reason="the native extension is not built")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_16_bit_tensors_take_the_native_kernels(monkeypatch, dtype):
    calls = []
    for name in ("softmax_into", "cross_entropy_into", "logsumexp_into"):
        original = getattr(_native.into, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(_native.into, name, spy)
    x = _rand(3, 5, dtype=dtype, grad=True)
    smt.softmax(x.detach(), 1)
    smt.logsumexp(x.detach(), 1)
    smt.cross_entropy(x, torch.tensor([0, 1, 4])).backward()
    # one kernel call for the loss and its gradient: forward writes both
    assert calls == ["softmax_into", "logsumexp_into", "cross_entropy_into"]
    with _native.disabled():
        x2 = x.detach().clone().requires_grad_()
        smt.cross_entropy(x2, torch.tensor([0, 1, 4])).backward()
    # both paths round the exact gradient once: they agree to an ULP of the 16-bit type
    torch.testing.assert_close(x.grad, x2.grad)


# --- double backward through the operators ----------------------------------------------


@pytest.mark.parametrize("log", [False, True])
def test_operators_gradgradcheck(log):
    x = _rand(3, 4, dtype=torch.float64, grad=True)
    torch.autograd.gradgradcheck(lambda a: ops.softmax(a, 0, 0.7, log), (x,))
    torch.autograd.gradgradcheck(lambda a: ops.logsumexp(a, 1), (x,))


# --- eager cross-entropy: the gradient written by the forward pass ------------------------


@pytest.mark.skipif(not _native.available(), reason="the native extension is not built")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["float64", "float32", "bfloat16"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("scale", [1.0, 4.0, 0.25, 3.0])
@pytest.mark.parametrize("rows", [7, 50])
def test_fused_gradient_equals_the_recomputed_one(reduction, scale, dtype, rows):
    """Forward writes the gradient for a cotangent of 1; backward hands it over (scaled
    exactly by a power of two) or recomputes.  A second backward (retain_graph) always
    recomputes: both must agree bit for bit.  With 50 rows the "mean" denominator is 49,
    for which 1 / (1 / 49) is not 49 in float64."""
    x = _rand(rows, 33, dtype=dtype, grad=True)
    t = torch.tensor([0, 32, 5, -100, 7, 7, 1] * (rows // 7) + [2] * (rows % 7))
    loss = smt.cross_entropy(x, t, reduction=reduction, label_smoothing=0.05)
    cotangent = torch.full_like(loss, scale)
    (first,) = torch.autograd.grad(loss, x, cotangent, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x, cotangent)
    assert torch.equal(first, second)
    assert float(first[3].abs().max()) == 0.0  # the ignored row


@pytest.mark.skipif(not _native.available(), reason="the native extension is not built")
def test_weighted_fused_gradient_equals_the_recomputed_one():
    """A weighted "mean" divides by the total weight, here 49, as in the forward pass."""
    x = _rand(5, 4, dtype=torch.float64, grad=True)
    t = torch.tensor([0, 1, 2, 3, 1])
    w = torch.tensor([12.0, 100.0, 30.0, 7.0], dtype=torch.float64)
    loss = smt.cross_entropy(x, t, w, ignore_index=1)
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x)
    assert torch.equal(first, second)


# --- layouts: any dim, permuted memory, (N, C, d) cross-entropy, without a copy ----------


def _spy_arrays(monkeypatch, name):
    """The NumPy arrays handed to the kernel wrapper ``name``, call by call."""
    seen = []
    original = getattr(_native.into, name)

    def spy(*args, **kwargs):
        seen.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(_native.into, name, spy)
    return seen


def _layouts():
    base = _rand(4, 6, 5, seed=11)
    return {
        "contiguous": base,
        "transposed": base.transpose(0, 2),
        "permuted": base.permute(1, 2, 0),
        "sliced": base[:, ::2, :],
    }


@pytest.mark.skipif(not _native.available(), reason="the native extension is not built")
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "permuted", "sliced"])
@pytest.mark.parametrize("dim", [0, 1, 2])
@pytest.mark.parametrize("log", [False, True])
def test_any_dim_and_layout_equals_the_moved_last_result(monkeypatch, layout, dim, log):
    """Bitwise the result of moving ``dim`` last first, forward and backward; dense
    layouts reach the kernel without a copy of the input."""
    x = _layouts()[layout].detach().requires_grad_()
    assert x.is_contiguous() == (layout == "contiguous")
    fn = smt.log_softmax if log else smt.softmax
    seen = _spy_arrays(monkeypatch, "log_softmax_into" if log else "softmax_into")
    y = fn(x, dim)
    cotangent = _rand(*x.shape, seed=12)
    (g,) = torch.autograd.grad(y, x, cotangent)
    xm = x.detach().movedim(dim, -1).contiguous().requires_grad_()
    ym = fn(xm, -1)
    (gm,) = torch.autograd.grad(ym, xm, cotangent.movedim(dim, -1).contiguous())
    assert torch.equal(y, ym.movedim(-1, dim)) and torch.equal(g, gm.movedim(-1, dim))
    if layout != "sliced":
        assert np.shares_memory(seen[0][0][0], x.detach().numpy())
        assert y.stride() == x.stride()


@pytest.mark.skipif(not _native.available(), reason="the native extension is not built")
@pytest.mark.parametrize("dim", [0, 1, 2])
def test_logsumexp_any_dim_without_a_copy(monkeypatch, dim):
    x = _rand(4, 6, 5, seed=13).transpose(0, 1).requires_grad_()
    seen = _spy_arrays(monkeypatch, "logsumexp_into")
    out = smt.logsumexp(x, dim)
    (g,) = torch.autograd.grad(out.sum(), x)
    xm = x.detach().movedim(dim, -1).contiguous().requires_grad_()
    om = smt.logsumexp(xm, -1)
    (gm,) = torch.autograd.grad(om.sum(), xm)
    assert torch.equal(out, om) and torch.equal(g, gm.movedim(-1, dim))
    assert np.shares_memory(seen[0][0][0], x.detach().numpy())


@pytest.mark.skipif(not _native.available(), reason="the native extension is not built")
@pytest.mark.parametrize("targets", ["indices", "probabilities"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_classes_at_dim_1_without_a_copy(monkeypatch, targets, reduction):
    """(N, C, d1, d2) logits go to the kernel as they lie; values and gradients equal
    the (rows, C) computation bit for bit."""
    x = _rand(3, 7, 4, 2, seed=14, grad=True)
    if targets == "indices":
        t = torch.randint(0, 7, (3, 4, 2), generator=torch.Generator().manual_seed(1))
        t_rows = t.reshape(-1)
    else:
        t = torch.softmax(_rand(3, 7, 4, 2, seed=15), 1)
        t_rows = t.movedim(1, -1).reshape(-1, 7)
    seen = _spy_arrays(monkeypatch, "cross_entropy_into")
    loss = smt.cross_entropy(x, t, reduction=reduction, label_smoothing=0.1)
    (g,) = torch.autograd.grad(loss.sum(), x)
    assert np.shares_memory(seen[0][0][0], x.detach().numpy())
    xr = x.detach().movedim(1, -1).reshape(-1, 7).requires_grad_()
    loss_r = smt.cross_entropy(xr, t_rows, reduction=reduction, label_smoothing=0.1)
    (gr,) = torch.autograd.grad(loss_r.sum(), xr)
    assert torch.equal(loss.reshape(-1), loss_r.reshape(-1))
    assert torch.equal(g, gr.reshape(3, 4, 2, 7).movedim(-1, 1))


@pytest.mark.skipif(not _native.available(), reason="the native extension is not built")
def test_fused_backward_hands_over_without_filling_or_copying():
    """Regression: autograd filled a zero cotangent as large as the logits for the
    gradient output of the Function on every backward (68 ms at 2048 x 32768)."""
    x = _rand(64, 1000, grad=True)
    loss = smt.cross_entropy(x, torch.arange(64) * 7)
    with torch.profiler.profile() as prof:
        loss.backward()
    names = {event.key for event in prof.key_averages()}
    # (the one aten::fill_ is backward()'s own cotangent of 1, a scalar)
    assert not names & {"aten::zeros", "aten::zero_", "aten::copy_", "aten::clone"}, names


@pytest.mark.skipif(not _native.available(), reason="the native extension is not built")
def test_no_gradient_is_written_under_no_grad(monkeypatch):
    """Evaluating a loss under torch.no_grad() on logits that require a gradient
    (validation on a model's output) must not write one."""
    seen = _spy_arrays(monkeypatch, "cross_entropy_into")
    x = _rand(6, 9, grad=True)
    with torch.no_grad():
        smt.cross_entropy(x, torch.arange(6))
    args, kwargs = seen[0]
    assert args[3] is None
