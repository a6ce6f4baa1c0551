"""Named adversarial cases for the accuracy contract: confident rows, wide rows,
large scales and subnormal outputs, against mpmath."""

import mpmath as mp
import numpy as np
import pytest

import softmaxkit as smk

from tests import reference as ref
from tests.reference import BFLOAT16

pytestmark = pytest.mark.usefixtures("numeric_path")

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
CONFIDENT = [(F16, m) for m in (5.0, 11.0, 17.0, 90.0)] + [(F32, m) for m in (5.0, 17.0, 20.0, 40.0, 90.0)] + [
    (F64, m) for m in (5.0, 37.0, 40.0, 100.0, 700.0)
]
if BFLOAT16 is not None:
    CONFIDENT += [(BFLOAT16, m) for m in (5.0, 20.0, 90.0)]


@pytest.mark.parametrize("dtype, margin", CONFIDENT, ids=lambda v: getattr(v, "name", v))
def test_confident_rows(dtype, margin):
    """Where p_t rounds to 1, log p_t, the loss and the target gradient stay exact."""
    x = np.array([[margin, 0.0, -1.0, -3.5], [0.0, -margin, -margin, -2 * margin]]).astype(dtype)
    tol = ref.tolerance(dtype)
    rows = [ref.to_mp(r) for r in x]
    assert ref.ulp_error(smk.log_softmax(x), [v for r in rows for v in ref.log_softmax(r)], dtype) <= tol
    assert ref.ulp_error(smk.softmax(x), [v for r in rows for v in ref.softmax(r)], dtype) <= tol
    loss, grad = smk.cross_entropy(x, np.array([0, 0]), reduction="none", return_grad=True)
    for i, r in enumerate(rows):
        exact_loss, exact_grad = ref.cross_entropy(r, ref.hard_coef(4, 0)[0])
        assert ref.ulp_error([loss[i]], [exact_loss], dtype) <= tol
        assert ref.ulp_error(grad[i], exact_grad, dtype) <= tol
        if abs(exact_grad[0]) >= ref.ulp(0, dtype):  # representable: never collapses to 0
            assert grad[i, 0] < 0


def _counts_reference(values, counts):
    """lse and log-softmax per distinct value of a row given as value counts."""
    values = [mp.mpf(float(v)) for v in values]
    a = max(values)
    k = values.index(a)
    s = mp.fsum(c * mp.exp(v - a) for v, c in zip(values, counts)) - 1  # drop one max term
    if counts[k] == 1:
        s = mp.fsum(c * mp.exp(v - a) for i, (v, c) in enumerate(zip(values, counts)) if i != k)
    L = mp.log1p(s)
    return a + L, [(v - a) - L for v in values]


@pytest.mark.parametrize("dtype", [F16, F32, F64], ids=lambda d: d.name)
def test_wide_rows_of_a_million(dtype):
    n = 10**6
    values = [3.0, 2.5, 0.0, -7.0]
    counts = [1, 1, n - 3, 1]
    x = np.zeros(n).astype(dtype)
    x[[10, 500_000, n - 1]] = np.array([3.0, 2.5, -7.0]).astype(dtype)
    exact_lse, exact_ls = _counts_reference(values, counts)
    positions = [10, 500_000, 0, n - 1]
    tol = ref.tolerance(dtype)
    assert ref.ulp_error([smk.logsumexp(x)], [exact_lse], dtype) <= tol
    assert ref.ulp_error(smk.log_softmax(x)[positions], exact_ls, dtype) <= tol
    assert ref.ulp_error(smk.softmax(x)[positions], [mp.exp(v) for v in exact_ls], dtype) <= tol
    _, grad = smk.cross_entropy(x[None, :], np.array([10]), return_grad=True)
    p = [mp.exp(v) for v in exact_ls]
    exact_grad = [p[0] - 1, p[1], p[2], p[3]]
    assert ref.ulp_error(grad[0, positions], exact_grad, dtype) <= tol


def test_wide_random_row_float32():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(1 << 15) * 4).astype(np.float32)
    old = mp.mp.dps
    mp.mp.dps = 30  # ample for float32 and 32768 terms
    try:
        row = ref.to_mp(x)
        exact = ref.softmax(row)
        assert ref.ulp_error(smk.softmax(x), exact, F32) <= 2
        assert ref.ulp_error([smk.logsumexp(x)], [ref.lse(row)], F32) <= 2
    finally:
        mp.mp.dps = old


@pytest.mark.parametrize("dtype", [F16, F32, F64], ids=lambda d: d.name)
def test_scale_1e4(dtype):
    rng = np.random.default_rng(3)
    x = rng.uniform(-1e4, 1e4, size=(4, 16)).astype(dtype)
    rows = [ref.to_mp(r) for r in x]
    tol = ref.tolerance(dtype)
    assert ref.ulp_error(smk.log_softmax(x), [v for r in rows for v in ref.log_softmax(r)], dtype) <= tol
    assert ref.ulp_error(smk.softmax(x), [v for r in rows for v in ref.softmax(r)], dtype) <= tol
    for value, r in zip(smk.logsumexp(x), rows):
        assert ref.ulp_error([value], [ref.lse(r)], dtype) <= tol


SUBNORMAL = [(F16, [0.0, -10.0, -15.0, -16.5]), (F32, [0.0, -90.0, -100.0, -103.0]), (F64, [0.0, -720.0, -740.0, -744.0])]


@pytest.mark.parametrize("dtype, row", SUBNORMAL, ids=lambda v: getattr(v, "name", ""))
def test_subnormal_outputs(dtype, row):
    x = np.array([row]).astype(dtype)
    p = smk.softmax(x)
    tiny = np.finfo(dtype).tiny
    assert 0 < p[0, -1] < tiny  # really subnormal
    exact = ref.softmax(ref.to_mp(x[0]))
    assert ref.ulp_error(p, exact, dtype) <= ref.tolerance(dtype)
    _, grad = smk.cross_entropy(x, np.array([0]), return_grad=True)
    assert ref.ulp_error(grad[0, 1:], exact[1:], dtype) <= ref.tolerance(dtype)


@pytest.mark.skipif(BFLOAT16 is None, reason="needs ml_dtypes")
def test_bfloat16_is_computed_wide_and_rounded_once():
    x = np.array([[3.0, 1.0, -2.0, 0.5], [100.0, 0.0, 1.0, 2.0]]).astype(BFLOAT16)
    for fn, exact_fn in [(smk.softmax, ref.softmax), (smk.log_softmax, ref.log_softmax)]:
        out = fn(x)
        assert out.dtype == BFLOAT16
        exact = [v for r in x for v in exact_fn(ref.to_mp(r))]
        assert ref.ulp_error(out, exact, BFLOAT16) <= 0.5 + 1e-9  # one rounding
