"""The Triton softmax family through softmaxkit.torch: the accuracy contract
against mpmath, the edge table, gradients, layouts, torch.compile and the
documented CPU switch.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (see
conftest.py), slowly: the rows are few and narrow, and ``wide_rows`` shrinks
the block to 16 entries so that rows of a few dozen take the online path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
triton = pytest.importorskip("triton")

import triton.language as tl  # noqa: E402

import softmaxkit.torch as smt  # noqa: E402
from softmaxkit.kernels.triton import _math  # noqa: E402
from softmaxkit.backends.torch import execution  # noqa: E402
from tests import reference as ref  # noqa: E402
from tests.frontend.test_no_float64_device import FLOAT32_ULP  # noqa: E402

# The interpreter evaluates both sides of every select in NumPy, as a GPU
# does silently: inf - inf on the side not taken warns.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

INF = float("inf")
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
IDS = ["float32", "bfloat16", "float16"]
NP_DTYPE = {torch.float32: np.float32, torch.bfloat16: ref.BFLOAT16, torch.float16: np.float16}
# The contract of a device without float64: float32 within 6 ULP (stated
# with the compensated float32 formulas), the 16-bit types within 2.
ULP = {torch.float32: FLOAT32_ULP, torch.bfloat16: 2.0, torch.float16: 2.0}
# Unit roundoff of each output type, for the gradients' bound.
UNIT = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def _rows(width: int) -> np.ndarray:
    """Random, confident (margins 5 to 90), large-scale, partly masked and constant rows of ``width``."""
    rng = np.random.default_rng(7)
    rows = [rng.normal(scale=4.0, size=width), rng.normal(scale=30.0, size=width), rng.normal(scale=1e4, size=width)]
    for margin in (5.0, 17.0, 40.0, 90.0):
        row = rng.normal(scale=3.0, size=width)
        row[width // 3] = row.max() + margin
        rows.append(row)
    masked = rng.normal(size=width)
    masked[::3] = -INF
    rows += [masked, np.full(width, 7.25)]
    return np.array(rows)


def _wide_rows() -> np.ndarray:
    """Rows of 40 (three blocks of 16): the maximum in the first, middle and
    last block, and maxima rising by more than 64 T in later blocks (the
    sum's reference moves, once past a first block that holds a large share
    of the sum)."""
    x = _rows(40)
    x[0, 37] = x[0].max() + 3.0
    x[1, 20:] += 150.0
    x[2, 33] = x[2].max() + 30.0
    x[8, 30] += 250.0
    return x


def _tensor(x: np.ndarray, dtype, device) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64).to(dtype).to(device)


def _exact(x: torch.Tensor, name: str, temperature: float = 1.0) -> list:
    """mpmath values of the rows of ``x`` as rounded (the kernel's input)."""
    out = []
    for row in x.cpu().double().numpy():
        xs = ref.to_mp(row)
        if name == "lse":
            out.append(ref.lse(xs))
        else:
            out.append(getattr(ref, name)(xs, ref.mp.mpf(temperature)))
    return out


def _ulp(out: torch.Tensor, exact, dtype) -> float:
    values = out.cpu().double().numpy()
    return max(ref.ulp_error(v, e, NP_DTYPE[dtype]) for v, e in zip(values, exact))


def _contract(x: torch.Tensor, temperatures) -> None:
    dtype = x.dtype
    for t in temperatures:
        p = smt.softmax(x, dim=1, temperature=t)
        lp = smt.log_softmax(x, dim=1, temperature=t)
        assert p.dtype == lp.dtype == dtype
        assert _ulp(p, _exact(x, "softmax", t), dtype) <= ULP[dtype], t
        assert _ulp(lp, _exact(x, "log_softmax", t), dtype) <= ULP[dtype], t
    lse = smt.logsumexp(x, dim=1)
    assert lse.dtype == dtype
    assert _ulp(lse[:, None], [[e] for e in _exact(x, "lse")], dtype) <= ULP[dtype]


# --- the accuracy contract ---------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_narrow_rows_meet_the_contract(triton_path, launches, dtype):
    temperatures = [1.0, 0.7, 3.3] if dtype == torch.float32 else [1.0, 0.7]
    x = _tensor(_rows(24), dtype, triton_path)
    _contract(x, temperatures)
    if dtype != torch.float32:
        # the float32 result of the same (widened) input, rounded once to nearest
        assert torch.equal(smt.softmax(x, dim=1), smt.softmax(x.float(), dim=1).to(dtype))
    assert set(launches) == {"_softmax_kernel"}


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_wide_rows_take_the_online_path_and_meet_the_contract(triton_path, launches, wide_rows, dtype):
    temperatures = [3.3] if dtype == torch.float32 else [1.0]
    _contract(_tensor(_wide_rows(), dtype, triton_path), temperatures)
    assert launches and set(launches) == {"_softmax_kernel"}


def test_confident_rows_are_exact_where_the_naive_form_collapses(triton_path):
    # margin 40: p_max rounds to 1 and torch's log_softmax at the argmax is 0,
    # off by 100 %; here it is -log1p(s), within the contract
    x = _tensor(_rows(24)[5:6], torch.float32, triton_path)
    lp = smt.log_softmax(x, dim=1)
    assert torch.log_softmax(x, dim=1)[0, 8] == 0
    assert lp[0, 8] < 0
    assert _ulp(lp, _exact(x, "log_softmax"), torch.float32) <= FLOAT32_ULP


@triton.jit
def _block_sum_kernel(v_ptr, out_ptr, BLOCK: tl.constexpr, B_LOG2: tl.constexpr):
    hi, lo = _math.block_sum(tl.load(v_ptr + tl.arange(0, BLOCK)), B_LOG2)
    tl.store(out_ptr, hi)
    tl.store(out_ptr + 1, lo)


def test_block_sums_are_exact_pairs_where_a_plain_sum_loses_everything(triton_path):
    # 2**24 absorbs each 1 on its own; the sum of the ones survives only in lo
    v = torch.tensor([2.0**24] + [1.0] * 14 + [-(2.0**24)], device=triton_path)
    out = torch.empty(2, device=triton_path)
    _block_sum_kernel[(1,)](v, out, BLOCK=16, B_LOG2=4)
    assert out.double().sum().item() == 14.0
    assert float(v[0] + v[1]) == float(v[0])  # a running float32 sum loses each 1


# --- gradients -----------------------------------------------------------------------


def _vjp_exact(y: torch.Tensor, g: torch.Tensor, log: bool, temperature: float):
    """``(exact VJP, per-entry scale)`` in mpmath from the output ``y`` the
    VJP is given (as rounded): the scale is the sum of the magnitudes of the
    formula's terms, which bounds its rounding errors."""
    out, scale = [], []
    for ys, gs in zip(y.cpu().double().numpy(), g.cpu().double().numpy()):
        p = [ref.mp.exp(v) for v in ref.to_mp(ys)] if log else ref.to_mp(ys)
        gm = ref.to_mp(gs)
        if log:
            # entries with y = -inf are constants: 0, and their g takes no part
            live = [v > -INF for v in ys]
            total = sum(gi for gi, a in zip(gm, live) if a)
            out.append([(gi - pi * total) / temperature if a else 0 for gi, pi, a in zip(gm, p, live)])
            mag = sum(abs(gi) for gi, a in zip(gm, live) if a)
            scale.append([(abs(gi) + pi * mag) / temperature for gi, pi in zip(gm, p)])
        else:
            dot = sum(pi * gi for pi, gi in zip(p, gm))
            out.append([pi * (gi - dot) / temperature for pi, gi in zip(p, gm)])
            mag = sum(pi * abs(gi) for pi, gi in zip(p, gm))
            scale.append([pi * (abs(gi) + mag) / temperature for pi, gi in zip(p, gm)])
    return out, scale


def _vjp_error(got: torch.Tensor, exact, scale) -> float:
    """The largest error in units of ``scale``, less the subnormal spacing of the result's type."""
    tiny = ref.mp.mpf(torch.finfo(got.dtype).smallest_normal) * UNIT[got.dtype] * 2
    worst = 0.0
    for row, e_row, s_row in zip(got.cpu().double().numpy(), exact, scale):
        for v, e, s in zip(row, e_row, s_row):
            d = abs(ref.mp.mpf(float(v)) - e) - tiny
            if d > 0:
                worst = max(worst, float(d / s) if s else INF)
    return worst


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_vjp_within_a_few_roundings_of_the_exact_gradient(triton_path, launches, dtype, log):
    temperature = 0.7
    x = _tensor(_rows(12), dtype, triton_path).requires_grad_()
    g = _tensor(np.random.default_rng(1).normal(size=x.shape), dtype, triton_path)
    y = (smt.log_softmax if log else smt.softmax)(x, dim=1, temperature=temperature)
    (grad,) = torch.autograd.grad(y, x, g)
    assert grad.dtype == dtype
    assert launches == ["_softmax_kernel", "_softmax_vjp_kernel"]
    exact, scale = _vjp_exact(y.detach(), g, log, temperature)
    # a few roundings of the formula's terms, and the result's own
    assert _vjp_error(grad, exact, scale) <= 4 * UNIT[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_wide_row_vjp_and_logsumexp_gradient(triton_path, launches, wide_rows, dtype):
    x = _tensor(_wide_rows(), dtype, triton_path).requires_grad_()
    g = _tensor(np.random.default_rng(2).normal(size=x.shape), dtype, triton_path)
    y = smt.softmax(x, dim=1)
    (grad,) = torch.autograd.grad(y, x, g)
    exact, scale = _vjp_exact(y.detach(), g, False, 1.0)
    assert _vjp_error(grad, exact, scale) <= 4 * UNIT[dtype]
    gl = _tensor(np.random.default_rng(3).normal(size=x.shape[0]), dtype, triton_path)
    (grad,) = torch.autograd.grad(smt.logsumexp(x, dim=1), x, gl)
    p = [[ref.mp.exp(v) for v in row] for row in _exact(x.detach(), "log_softmax")]
    exact = [[pi * ref.mp.mpf(float(gi)) for pi in row] for row, gi in zip(p, gl.cpu().double().numpy())]
    assert _ulp(grad, exact, dtype) <= ULP[dtype]
    assert launches == ["_softmax_kernel", "_softmax_vjp_kernel", "_softmax_kernel", "_softmax_kernel"]


# --- the edge table --------------------------------------------------------------------


def _edge_rows(width: int) -> np.ndarray:
    x = np.random.default_rng(4).normal(size=(4, width))
    x[0] = -INF  # fully masked
    x[1, [1, width - 2]] = INF  # two +inf entries share the mass
    x[2, width // 2] = np.nan  # NaN stays in its row
    return x


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("width", [9, 40], ids=["narrow", "wide"])
def test_edge_table(triton_path, launches, wide_rows, dtype, width):
    x = _tensor(_edge_rows(width), dtype, triton_path).requires_grad_()
    p = smt.softmax(x, dim=1)
    lp = smt.log_softmax(x, dim=1)
    lse = smt.logsumexp(x, dim=1)
    half = torch.zeros(width, dtype=dtype)
    half[[1, width - 2]] = 0.5
    assert torch.equal(p[0].detach().cpu(), torch.zeros(width, dtype=dtype))
    assert torch.equal(p[1].detach().cpu(), half)
    assert torch.isnan(p[2]).all() and not torch.isnan(p[3]).any()
    assert (lp[0] == -INF).all() and torch.equal(lp[1].detach().cpu(), torch.log(half))
    assert torch.isnan(lp[2]).all() and torch.isfinite(lp[3]).all()
    assert lse[0] == -INF and lse[1] == INF and torch.isnan(lse[2]) and torch.isfinite(lse[3])
    # an infinite cotangent where the softmax is 0 (the log-probability
    # -inf) takes no part
    g = torch.ones_like(x)
    g[0, 0] = g[1, 0] = INF
    for out in (p, lp):
        (grad,) = torch.autograd.grad(out, x, g)
        assert (grad[0] == 0).all() and not torch.isnan(grad[1]).any() and not torch.isnan(grad[3]).any()
    (grad,) = torch.autograd.grad(lse, x, torch.ones_like(lse))
    assert (grad[0] == 0).all() and torch.equal(grad[1].detach().cpu(), half)
    assert torch.isnan(grad[2]).all() and not torch.isnan(grad[3]).any()
    assert set(launches) == {"_softmax_kernel", "_softmax_vjp_kernel"}


def test_empty_class_axis(triton_path):
    x = torch.empty(3, 0, device=triton_path)
    assert smt.softmax(x, dim=1).shape == (3, 0)
    assert torch.equal(smt.logsumexp(x, dim=1).cpu(), torch.full((3,), -INF))


# --- layouts, paths and compilation ------------------------------------------------------


def test_any_dim_and_layout_gives_the_last_dim_result(triton_path):
    x = _tensor(np.random.default_rng(5).normal(scale=5.0, size=(3, 7, 4)), torch.float32, triton_path)
    last = smt.log_softmax(x.movedim(1, -1).contiguous(), dim=-1).movedim(-1, 1)
    assert torch.equal(smt.log_softmax(x, dim=1), last)
    assert torch.equal(smt.log_softmax(x.transpose(0, 2), dim=1), last.transpose(0, 2))
    assert torch.equal(smt.logsumexp(x, dim=1), smt.logsumexp(x.movedim(1, -1).contiguous(), dim=-1))


def test_float64_and_double_backward_keep_the_formulas(triton_path, launches):
    x = torch.randn(2, 5, dtype=torch.float64, device=triton_path)
    assert not execution.triton_ready(x)
    smt.softmax(x, dim=1)
    assert launches == []
    # A backward that records a graph (for double backward) runs torch
    # operations; the second backward reaches the softmax's own backward
    # again, with nothing recorded, and takes the kernel there.
    x = torch.randn(2, 5, device=triton_path, requires_grad=True)
    (g,) = torch.autograd.grad(smt.softmax(x, dim=1)[:, 0].sum(), x, create_graph=True)
    assert launches == ["_softmax_kernel"]
    (gg,) = torch.autograd.grad(g.sum(), x)
    assert launches == ["_softmax_kernel", "_softmax_vjp_kernel"] and torch.isfinite(gg).all()


def test_compiled_softmax_runs_the_kernels_with_no_graph_break(triton_path, launches):
    x = _tensor(_rows(12), torch.float32, triton_path).requires_grad_()
    g = torch.randn(x.shape, device=triton_path)

    def step(a):
        return smt.log_softmax(a, dim=1, temperature=0.7)

    compiled = torch.compile(step, fullgraph=True)
    y = compiled(x)
    (grad,) = torch.autograd.grad(y, x, g)
    assert launches == ["_softmax_kernel", "_softmax_vjp_kernel"]
    y_eager = step(x)
    (grad_eager,) = torch.autograd.grad(y_eager, x, g)
    assert torch.equal(y, y_eager) and torch.equal(grad, grad_eager)


_SWITCH = """
import sys
import torch
import softmaxkit.torch as smt
assert "softmaxkit.kernels.triton.softmax" not in sys.modules
from softmaxkit.kernels.triton import launch
names = []
original = launch.launch
def counted(kernel, geometry, *args, **meta):
    names.append(kernel.fn.__name__ if hasattr(kernel, "fn") else kernel.__name__)
    return original(kernel, geometry, *args, **meta)
launch.launch = counted
x = torch.randn(3, 6, requires_grad=True)
smt.softmax(x, dim=1).sum().backward()
eager = len(names)
f = torch.compile(lambda a: smt.logsumexp(a, dim=1), fullgraph=True, backend="aot_eager")
f(x).sum().backward()
print(eager, len(names) - eager)
"""


def test_the_environment_switch_sends_cpu_tensors_through_triton():
    env = dict(os.environ, SOFTMAXKIT_TRITON_ON_CPU="1", TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(_SWITCH)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert list(map(int, run.stdout.split())) == [2, 2]


def test_switch_off_cpu_tensors_take_the_native_kernels(monkeypatch, launches):
    import softmaxkit.kernels.triton as kernels

    monkeypatch.setattr(kernels, "on_cpu", False)
    x = torch.randn(2, 5, requires_grad=True)
    smt.softmax(x, dim=1).sum().backward()
    assert launches == [] and not execution.triton_ready(x.detach())
