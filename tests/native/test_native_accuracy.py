"""Native kernels against mpmath references, per instruction set.

Tolerances: 2 ULP for float16 and float32, 4 ULP for float64.
"""

import numpy as np
import pytest
import mpmath
from mpref import counted_row, cross_entropy, log_softmax, logsumexp, softmax, ulp_error

from softmaxkit import _native

TOL = {np.float16: 2.0, np.float32: 2.0, np.float64: 4.0}


def _run(x, log=False, temperature=1.0):
    out = np.empty_like(x)
    (_native.log_softmax_into if log else _native.softmax_into)(x, out, temperature)
    return out


def _check(x, dtype, temperature=1.0):
    ref_p = softmax(x, temperature)
    ref_l = log_softmax(x, temperature)
    assert ulp_error(_run(x, False, temperature), ref_p, dtype) <= TOL[dtype]
    assert ulp_error(_run(x, True, temperature), ref_l, dtype) <= TOL[dtype]
    if temperature == 1.0:
        lse = np.empty(x.shape[:-1], dtype=dtype)
        _native.logsumexp_into(x, lse)
        assert ulp_error(lse, logsumexp(x), dtype) <= TOL[dtype]


@pytest.mark.parametrize("margin", [5.0, 17.0, 30.0, 60.0, 90.0])
def test_confident_rows_float32(isa, margin):
    rng = np.random.default_rng(int(margin))
    x = rng.uniform(-3, 0, size=(3, 37)).astype(np.float32)
    x[:, 5] = margin
    _check(x, np.float32)


@pytest.mark.parametrize("margin", [5.0, 40.0, 200.0, 700.0])
def test_confident_rows_float64(isa, margin):
    rng = np.random.default_rng(int(margin))
    x = rng.uniform(-3, 0, size=(3, 37))
    x[:, 11] = margin
    _check(x, np.float64)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_random_rows_and_temperature(isa, dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 53)) * 8).astype(dtype)
    _check(x, dtype)
    _check(x, dtype, temperature=0.37)
    _check(x, dtype, temperature=3.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subnormal_outputs(isa, dtype):
    # exp(x - a) falls into the subnormal range of the output type
    lo = -95.0 if dtype == np.float32 else -730.0
    x = np.linspace(lo, 0.0, 41).astype(dtype)[None, :]
    _check(x, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wide_row_by_counts(isa, dtype):
    # a million entries with three distinct values: mpmath works on counts
    n = 10**6
    values = np.array([3.0, -1.25, -20.5], dtype=dtype)
    counts = [1, n // 2, n - n // 2 - 1]
    x = np.repeat(values, counts)[None, :]
    np.random.default_rng(0).shuffle(x[0])
    p_ref, l_ref, lse_ref = counted_row(values, counts)
    p, lp = _run(x), _run(x, True)
    lse = np.empty(1, dtype=dtype)
    _native.logsumexp_into(x, lse)
    for v, pr, lr in zip(values, p_ref, l_ref):
        sel = x[0] == v
        assert ulp_error(p[0, sel][:1], [pr], dtype) <= TOL[dtype]
        assert np.all(p[0, sel] == p[0, sel][0])
        assert ulp_error(lp[0, sel][:1], [lr], dtype) <= TOL[dtype]
    assert ulp_error(lse, [lse_ref], dtype) <= TOL[dtype]


def test_large_logits_scale(isa):
    rng = np.random.default_rng(5)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal((2, 29)) * 1e4).astype(dtype)
        _check(x, dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_cross_entropy_loss_and_gradient(isa, dtype):
    rng = np.random.default_rng(9)
    margins = {np.float16: [4.0, 9.0], np.float32: [5.0, 30.0, 90.0], np.float64: [5.0, 200.0, 700.0]}[dtype]
    for margin in margins:
        x = rng.uniform(-3, 0, size=(4, 45)).astype(dtype)
        x[:, 7] = margin
        t = np.array([7, 0, 7, 44])  # the argmax of a confident row, and others
        loss, grad = smk_ce(x, t)
        ref_loss, ref_grad = cross_entropy(x, t)
        assert ulp_error(loss, ref_loss, dtype) <= TOL[dtype]
        assert ulp_error(grad, ref_grad, dtype) <= TOL[dtype]


def smk_ce(x, t):
    loss = np.empty(x.shape[0])
    grad = np.empty_like(x)
    _native.cross_entropy_into(x, t, loss, grad)
    return loss.astype(x.dtype), grad


def test_float32_family_exp_relative_error(isa):
    """The float32 family's exp is accurate to 2^-32 (relative) before the
    one rounding to float32 (see sk_simd.h), for every z = x - max that a
    float32 row can give.  The float64 per-row loss exposes it: for the row
    [0, z] with target 0 the loss is log1p(exp(z)), whose relative error is
    that of exp(z) (times at most 1), plus a rounding of float64."""
    rng = np.random.default_rng(12)
    z = np.concatenate(
        [
            -np.logspace(-7, np.log10(103.0), 1500),  # every reduction interval
            -rng.uniform(0, 103, 1500),
            -np.arange(1, 65) * np.log(2) / 16,  # reduction boundaries, k/16 ln2
        ]
    ).astype(np.float32)
    x = np.zeros((z.size, 2), np.float32)
    x[:, 1] = z
    loss = np.empty(z.size)
    _native.cross_entropy_into(x, np.zeros(z.size, np.int64), loss)
    with mpmath.workdps(40):
        worst = max(
            abs(mpmath.mpf(float(got)) / mpmath.log1p(mpmath.exp(mpmath.mpf(float(v)))) - 1)
            for got, v in zip(loss, z)
        )
    assert worst < 2.0**-32, float(mpmath.log(worst, 2))
