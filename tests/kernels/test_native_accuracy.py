"""Native kernels against mpmath references, per instruction set.

Tolerances: 2 ULP for float32 and 4 ULP for float64.  The 16-bit types are
computed in float64, rounded to float32 (within 2 ULP of float32) and rounded
again to float16 or bfloat16: their contract is 1 ULP, and this double
rounding keeps them within 0.5 + 2**-10 ULP (2 ULP of float32 are at most
2**-12 ULP of float16), the bound checked here, so that a conversion that
truncates instead of rounding fails.
"""

import mpmath
import numpy as np
import pytest

from softmaxkit import kernels as _native

from tests import reference as ref
from tests.reference import BFLOAT16, ulp_error

TOL = {"float16": 0.5 + 2**-10, "bfloat16": 0.5 + 2**-10, "float32": 2.0, "float64": 4.0}
HALVES = [np.float16] + ([BFLOAT16] if BFLOAT16 is not None else [])
FLOAT32_RANGE = [np.float32] + ([BFLOAT16] if BFLOAT16 is not None else [])


def tol(dtype):
    return TOL[np.dtype(dtype).name]


def _run(x, log=False, temperature=1.0):
    out = np.empty_like(x)
    (_native.log_softmax_into if log else _native.softmax_into)(x, out, temperature)
    return out


def _exact_cross_entropy(x, targets):
    """(per-row losses, gradient rows) of the mpmath reference for class indices."""
    rows = [ref.cross_entropy(ref.to_mp(row), ref.hard_coef(len(row), int(t))[0]) for row, t in zip(x, targets)]
    return [loss for loss, _ in rows], [grad for _, grad in rows]


def _check(x, dtype, temperature=1.0):
    ref_p = ref.rows(ref.softmax, x, temperature)
    ref_l = ref.rows(ref.log_softmax, x, temperature)
    assert ulp_error(_run(x, False, temperature), ref_p, dtype) <= tol(dtype)
    assert ulp_error(_run(x, True, temperature), ref_l, dtype) <= tol(dtype)
    if temperature == 1.0:
        lse = np.empty(x.shape[:-1], dtype=dtype)
        _native.logsumexp_into(x, lse)
        assert ulp_error(lse, ref.rows(ref.lse, x), dtype) <= tol(dtype)


# bfloat16 has the exponent range of float32
@pytest.mark.parametrize("dtype", FLOAT32_RANGE, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("margin", [5.0, 17.0, 30.0, 60.0, 90.0])
def test_confident_rows_float32_range(isa, margin, dtype):
    rng = np.random.default_rng(int(margin))
    x = rng.uniform(-3, 0, size=(3, 37)).astype(dtype)
    x[:, 5] = margin
    _check(x, dtype)


@pytest.mark.parametrize("margin", [5.0, 40.0, 200.0, 700.0])
def test_confident_rows_float64(isa, margin):
    rng = np.random.default_rng(int(margin))
    x = rng.uniform(-3, 0, size=(3, 37))
    x[:, 11] = margin
    _check(x, np.float64)


@pytest.mark.parametrize("dtype", [*HALVES, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_random_rows_and_temperature(isa, dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 53)) * 8).astype(dtype)
    _check(x, dtype)
    _check(x, dtype, temperature=0.37)
    _check(x, dtype, temperature=3.0)


@pytest.mark.parametrize("dtype", [*FLOAT32_RANGE, np.float64], ids=lambda d: np.dtype(d).name)
def test_subnormal_outputs(isa, dtype):
    # exp(x - a) falls into the subnormal range of the output type
    lo = -730.0 if dtype == np.float64 else -95.0
    x = np.linspace(lo, 0.0, 41).astype(dtype)[None, :]
    _check(x, dtype)


@pytest.mark.parametrize("dtype", [*FLOAT32_RANGE, np.float64], ids=lambda d: np.dtype(d).name)
def test_wide_row_by_counts(isa, dtype):
    # a million entries with three distinct values: mpmath works on counts
    n = 10**6
    values = np.array([3.0, -1.25, -20.5], dtype=dtype)
    counts = [1, n // 2, n - n // 2 - 1]
    x = np.repeat(values, counts)[None, :]
    np.random.default_rng(0).shuffle(x[0])
    exact = ref.to_mp(values)
    p_ref, l_ref, lse_ref = ref.softmax(exact, weights=counts), ref.log_softmax(exact, weights=counts), ref.lse(exact, counts)
    p, lp = _run(x), _run(x, True)
    lse = np.empty(1, dtype=dtype)
    _native.logsumexp_into(x, lse)
    for v, pr, lr in zip(values, p_ref, l_ref):
        sel = x[0] == v
        assert ulp_error(p[0, sel][:1], [pr], dtype) <= tol(dtype)
        assert np.all(p[0, sel] == p[0, sel][0])
        assert ulp_error(lp[0, sel][:1], [lr], dtype) <= tol(dtype)
    assert ulp_error(lse, [lse_ref], dtype) <= tol(dtype)


def test_large_logits_scale(isa):
    rng = np.random.default_rng(5)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal((2, 29)) * 1e4).astype(dtype)
        _check(x, dtype)


@pytest.mark.parametrize("dtype", [*HALVES, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_cross_entropy_loss_and_gradient(isa, dtype):
    rng = np.random.default_rng(9)
    margins = {"float16": [4.0, 9.0], "bfloat16": [5.0, 30.0, 90.0], "float32": [5.0, 30.0, 90.0], "float64": [5.0, 200.0, 700.0]}
    margins = margins[np.dtype(dtype).name]
    for margin in margins:
        x = rng.uniform(-3, 0, size=(4, 45)).astype(dtype)
        x[:, 7] = margin
        t = np.array([7, 0, 7, 44])  # the argmax of a confident row, and others
        loss, grad = smk_ce(x, t)
        ref_loss, ref_grad = _exact_cross_entropy(x, t)
        assert ulp_error(loss, ref_loss, dtype) <= tol(dtype)
        assert ulp_error(grad, ref_grad, dtype) <= tol(dtype)


def smk_ce(x, t):
    loss = np.empty(x.shape[0])
    grad = np.empty_like(x)
    _native.cross_entropy_into(x, t, loss, grad)
    return loss.astype(x.dtype), grad


def test_float32_family_exp_relative_error(isa):
    """The float32 family's exp is accurate to 2^-32 (relative) before the
    one rounding to float32 (see simd.h), for every z = x - max that a
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


DMAX = np.finfo(np.float64).max

# float64 rows whose shifted logits (x - a) / T fall far below -746 without
# being exact in float64, so that their low part (TwoSum, or the division's
# remainder) is as large as ulp((x - a) / T); and rows where (x - a) / T is
# finite although q T or x - a overflows.
FAR_ROWS = [
    ([-1000.0, -1e20], 1.0),
    ([-10.0, -DMAX], 1.0),
    ([-1e300, -1e308], 1.0),
    ([0.1, -3e300, 5.0, -1e19, 4.5, -DMAX, 3.0], 1.0),
    ([0.0, -1.0], 1e-18),
    ([0.0, -1.0], 1e-42),
    ([0.0, -1.0], 1e-46),
    ([0.0, -1.0], 1e-200),
    ([0.0, -1e290], 3.0),
    ([-5.0, -1e305], 3.0),
    ([167.0, -DMAX], 3.0),
    ([DMAX, -DMAX], 3.0),
    ([1e308, -1e308], 1e308),
    ([0.0, -DMAX], 1e300),
    ([2.0, 1.0, -7.0, 0.5], 1e-300),
]


def _exact(got, exact, dtype):
    """got within TOL of the mpmath values, finite where they are finite,
    and equal to them where they are not."""
    assert ulp_error(got, exact, dtype) <= tol(dtype), (got, [float(e) for e in np.asarray(exact, dtype=object).ravel()])


# Regression: the float64 exp clamped z at -746 but kept the low part of the
# exact shift, which can be as large as ulp(z): softmax([-1000, -1e20]) gave
# [1, 2.6e-297], softmax([-1e300, -1e308]) NaN, logsumexp of it +inf, and
# small temperatures wrong nonzero probabilities or NaN.  The remainder of
# the division by T overflowed near DBL_MAX (log_softmax([167, -DBL_MAX],
# T=3) gave NaN), and an overflowing x - a gave -inf where (x - a) / T is
# finite.
@pytest.mark.parametrize(("row", "temperature"), FAR_ROWS, ids=[f"{[float(v) for v in r]}-T{t}" for r, t in FAR_ROWS])
def test_far_below_the_maximum_float64(isa, row, temperature):
    x = np.array([row])
    _exact(_run(x, False, temperature), ref.rows(ref.softmax, x, temperature), np.float64)
    _exact(_run(x, True, temperature), ref.rows(ref.log_softmax, x, temperature), np.float64)
    if temperature == 1.0:
        lse = np.empty(1)
        _native.logsumexp_into(x, lse)
        _exact(lse, ref.rows(ref.lse, x), np.float64)
        t = np.array([int(np.argmax(x[0]))])
        loss, grad = smk_ce(x, t)
        ref_loss, ref_grad = _exact_cross_entropy(x, t)
        _exact(loss, ref_loss, np.float64)
        _exact(grad, ref_grad, np.float64)


def test_far_below_the_maximum_in_every_lane(isa):
    # the same values at every position of a vector, between ordinary logits
    rng = np.random.default_rng(13)
    x = rng.uniform(-3.0, 0.0, (4, 37))
    for r, far in enumerate((-1e20, -DMAX, -1e300, -3e305)):
        x[r, r::5] = far
    _exact(_run(x), ref.rows(ref.softmax, x), np.float64)
    _exact(_run(x, True), ref.rows(ref.log_softmax, x), np.float64)
    for temperature in (1e-18, 3.0):
        _exact(_run(x, False, temperature), ref.rows(ref.softmax, x, temperature), np.float64)
        _exact(_run(x, True, temperature), ref.rows(ref.log_softmax, x, temperature), np.float64)
