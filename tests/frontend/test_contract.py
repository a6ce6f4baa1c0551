"""The accuracy contract: every output within 2 ULP (float16, bfloat16, float32)
or 4 ULP (float64) of an mpmath reference, on random and adversarial rows."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import softmaxkit as smk

from tests import reference as ref
from tests.reference import FLOAT_DTYPES

DTYPE_IDS = [d.name for d in FLOAT_DTYPES]
pytestmark = [pytest.mark.usefixtures("numeric_path"), pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)]


def _limit(dtype):
    # Scales up to 1e4 fit every format; float16 tops out at 65504.
    return 1e4


@st.composite
def logit_rows(draw, dtype, max_width=24, max_rows=3):
    """Rows at scales 1 to 1e4, some with one confident entry (margin up to 90,
    or 700 in float64) and some with -inf entries."""
    rows = draw(st.integers(1, max_rows))
    width = draw(st.integers(1, max_width))
    scale = draw(st.sampled_from([1.0, 30.0, _limit(dtype)]))
    flat = draw(st.lists(st.floats(-scale, scale, allow_nan=False), min_size=rows * width, max_size=rows * width))
    x = np.array(flat, dtype=np.float64).reshape(rows, width)
    if draw(st.booleans()):
        top = 700.0 if dtype == np.float64 else 90.0
        margin = draw(st.floats(5.0, top))
        j = draw(st.integers(0, width - 1))
        x[:, j] = np.max(x, axis=1) + margin
    if width > 1 and draw(st.booleans()):
        x[:, draw(st.integers(0, width - 1))] = -np.inf
    x = x.astype(dtype)
    # Margins beyond the format's range would make the row +inf.
    return np.where(np.isinf(x) & (x > 0), np.asarray(0, dtype=dtype), x)


def _rows(x):
    return [ref.to_mp(row) for row in x]


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data(), temperature=st.sampled_from([1.0, 1.0, 0.5, 0.7, 2.0, 3.3]))
def test_softmax_and_log_softmax(dtype, name, data, temperature):
    x = data.draw(logit_rows(dtype))
    out = getattr(smk, name)(x, temperature=temperature)
    assert out.dtype == dtype
    exact = [v for row in _rows(x) for v in getattr(ref, name)(row, ref.mp.mpf(temperature))]
    assert ref.ulp_error(out, exact, dtype) <= ref.tolerance(dtype)


def _lse_ok(out, exact, rows, dtype):
    err = ref.ulp_error([out], [exact], dtype)
    if err <= ref.tolerance(dtype):
        return True
    # The one documented exception: a float64 result near 0 through
    # cancellation may be off by 4 ULP of max|x|.
    if dtype == np.float64:
        big = max(abs(v) for v in rows if not ref.mp.isinf(v))
        return abs(ref.mp.mpf(float(out)) - exact) <= 4 * ref.ulp(big, dtype)
    return False


@given(data=st.data())
def test_logsumexp(dtype, data):
    x = data.draw(logit_rows(dtype))
    out = smk.logsumexp(x)
    assert out.dtype == dtype
    for value, row in zip(out, _rows(x)):
        assert _lse_ok(value, ref.lse(row), row, dtype)


@given(data=st.data())
def test_logsumexp_with_positive_weights(dtype, data):
    x = data.draw(logit_rows(dtype, max_rows=1))
    b = np.asarray(data.draw(st.lists(st.sampled_from([0.0, 0.25, 1.0, 3.0]), min_size=x.shape[1], max_size=x.shape[1])), dtype=dtype)
    out = smk.logsumexp(x, b=b)[0]
    row = ref.to_mp(x[0])
    exact = ref.lse(row, ref.to_mp(b))
    if dtype == np.float64:
        # Documented: with weights, float64 is within 4 ULP of max(|lse|, max|x|, 1).
        big = max([abs(exact), 1] + [abs(v) for v in row if not ref.mp.isinf(v)]) if not ref.mp.isinf(exact) else exact
        assert ref.ulp_error([out], [exact], dtype) <= 4 or abs(ref.mp.mpf(float(out)) - exact) <= 4 * ref.ulp(big, dtype)
    else:
        assert ref.ulp_error([out], [exact], dtype) <= ref.tolerance(dtype)


# Regression: with float32 inputs the weighted sum S = 1 + 0.25 e^-21 was
# formed in plain float64, whose rounding left log S = 1.9e-10 6.5 ULP off.
def test_logsumexp_with_weights_near_zero(dtype):
    x = np.array([[0.0, -21.0]], dtype=dtype)
    b = np.array([1.0, 0.25], dtype=dtype)
    exact = ref.lse(ref.to_mp(x[0]), ref.to_mp(b))
    assert ref.ulp_error([smk.logsumexp(x, b=b)[0]], [exact], dtype) <= ref.tolerance(dtype)


@given(data=st.data())
def test_entropy(dtype, data):
    x = data.draw(logit_rows(dtype))
    out = smk.entropy(x)
    for value, row in zip(out, _rows(x)):
        lsm = ref.log_softmax(row)
        exact = ref.mp.fsum(-p * lp for p, lp in zip(ref.softmax(row), lsm) if p != 0)
        if exact >= np.finfo(np.float64).tiny:
            assert ref.ulp_error([value], [exact], dtype) <= ref.tolerance(dtype)
        else:
            # Documented: a float64 entropy below the smallest normal number is
            # made of subnormal probabilities, each weighted by -log p_j.
            weight = max([1] + [-v for v in lsm if v != -ref.INF])
            assert abs(ref.mp.mpf(float(value)) - exact) <= ref.tolerance(dtype) * ref.ulp(0, dtype) * weight


def _assert_difference_gradient(grad, exact_grad, row, coef, dtype, zg=0):
    """Documented: with smoothing, probability targets or a z-loss (whose
    term is zg p_j, zg = 2 z w lse) an entry C p_j + zg p_j - c_j is accurate
    to a few ULP of its largest term, max(C p_j, |zg| p_j, c_j)."""
    C = ref.mp.fsum(coef)
    scale = [max(abs(C) * p, abs(zg) * p, abs(c)) for p, c in zip(ref.softmax(row), coef)]
    for g, e, s in zip(grad, exact_grad, scale):
        assert abs(ref.mp.mpf(float(g)) - e) <= ref.difference_tolerance(dtype) * ref.ulp(s, dtype)


def _assert_loss(loss, exact, row, coef, zw, dtype):
    """Within the contract; where the terms c_j (lse - x_j) and the z-loss
    z w lse^2 do not all have one sign (negative class weights with
    smoothing or a z-loss) they can cancel, and the loss is then within the
    contract's ULPs of their absolute sum."""
    signs = {ref.mp.sign(c) for c in coef if c != 0} | ({ref.mp.sign(zw)} if zw else set())
    if len(signs) < 2:
        assert ref.ulp_error([loss], [exact], dtype) <= ref.tolerance(dtype)
        return
    L = ref.lse(row)
    scale = ref.mp.fsum(abs(c) * (L - x) for c, x in zip(coef, row) if c != 0) + abs(zw) * L * L
    assert abs(ref.mp.mpf(float(loss)) - exact) <= ref.tolerance(dtype) * ref.ulp(scale, dtype)


@given(data=st.data(), eps=st.sampled_from([0.0, 0.1]), z=st.sampled_from([0.0, 1e-4]), weighted=st.booleans())
def test_cross_entropy_class_targets(dtype, data, eps, z, weighted):
    x = data.draw(logit_rows(dtype))
    rows, n = x.shape
    finite_cols = [j for j in range(n) if np.isfinite(x[:, j]).all()]
    targets = np.array([data.draw(st.sampled_from(finite_cols or [0])) for _ in range(rows)])
    weight = np.array(data.draw(st.lists(st.sampled_from([-2.0, -0.5, 0.5, 1.0, 2.0]), min_size=n, max_size=n)), dtype=dtype) if weighted else None
    loss, grad = smk.cross_entropy(x, targets, weight=weight, label_smoothing=eps, z_loss=z, reduction="none", return_grad=True)
    assert loss.dtype == dtype and grad.dtype == dtype
    for i, row in enumerate(_rows(x)):
        finite = [v != -ref.INF for v in row]
        coef, w_t = ref.hard_coef(n, int(targets[i]), eps, weight, finite)
        exact_loss, exact_grad = ref.cross_entropy(row, coef, z, w_t)
        _assert_loss(loss[i], exact_loss, row, coef, z * w_t, dtype)
        if eps == 0 and z == 0:
            assert ref.ulp_error(grad[i], exact_grad, dtype) <= ref.tolerance(dtype)
        else:
            L = ref.lse(row)
            zg = 2 * z * w_t * L if z and ref.mp.isfinite(L) else 0
            _assert_difference_gradient(grad[i], exact_grad, row, coef, dtype, zg)


# Regression: the native float64 kernel put this smoothed, weighted gradient
# entry 4.03 ULP of C p_j from the exact value (p_j itself 1.7 ULP off, times
# C = 1.92, with C p_j a binade above p_j); the stated bound is 8.
def test_smoothed_weighted_gradient_of_a_flat_row(dtype):
    hexes = ["0x0.0p+0"] * 8 + [
        "0x1.4b4f824ee9468p-1", "0x1.429578e1292bcp-1", "0x1.fffffffffffffp-1", "0x1.2f8208e996668p-3",
        "0x1.2f8208e996668p-3", "0x1.d4827bdf6a1e8p-3", "-0x1.508c5c8f37820p-1", "-0x1.87fd350d3a7a8p-1",
        "-0x1.9a4f8f6d9d978p-1", "-0x1.7faa3af939834p-1", "-0x1.c839162eff47cp-1", "-0x1.249d6f913ffafp-1",
        "-0x1.05926d78a0d6ep-2", "-0x1.975f4fea9719ep-2", "-0x1.dd7d4332bbc08p-3", "-0x1.4f8b588e368f1p-17",
    ]  # fmt: skip
    x = np.array([[float.fromhex(h) for h in hexes]]).astype(dtype)
    weight = np.array([0.5] * 4 + [1.0] * 6 + [2.0] * 7 + [0.5] * 4 + [1.0, 1.0, 2.0], dtype=dtype)
    _, grad = smk.cross_entropy(x, np.array([10]), weight=weight, label_smoothing=0.1, reduction="none", return_grad=True)
    row = _rows(x)[0]
    coef, w_t = ref.hard_coef(x.shape[1], 10, 0.1, weight, [True] * x.shape[1])
    _assert_difference_gradient(grad[0], ref.cross_entropy(row, coef, 0, w_t)[1], row, coef, dtype)


# Regressions: a z-loss adds a term 2 z lse p_j to every gradient entry, and
# the sum may cancel.  Row 1: at the target, -s/(1 + s) against 2 z lse p_t
# (1.99e-3 against 2.45e-3); float64 came out 5.9 ULP of the result.  Row 2:
# lse = -5244.7, so C + 2 z lse = 1 - 1.049 cancels before it multiplies p_j;
# 23 ULP of the result.  Both are within the contract's 8 ULP of the
# largest term.
@pytest.mark.parametrize("values", [[12.25] + [0.0] * 12 + [6.0], [-5245.0, -5246.0]])
def test_z_loss_gradient_that_cancels(dtype, values):
    x = np.array([values], dtype=dtype)
    _, grad = smk.cross_entropy(x, np.array([0]), z_loss=1e-4, reduction="none", return_grad=True)
    row = _rows(x)[0]
    coef, w_t = ref.hard_coef(len(row), 0, 0.0, None, [True] * len(row))
    zg = 2 * 1e-4 * w_t * ref.lse(row)
    _assert_difference_gradient(grad[0], ref.cross_entropy(row, coef, 1e-4, w_t)[1], row, coef, dtype, zg)


@given(data=st.data())
def test_cross_entropy_mean(dtype, data):
    x = data.draw(logit_rows(dtype))
    rows, n = x.shape
    finite_cols = [j for j in range(n) if np.isfinite(x[:, j]).all()] or [0]
    targets = np.array([data.draw(st.sampled_from(finite_cols)) for _ in range(rows)])
    loss, grad = smk.cross_entropy(x, targets, return_grad=True)
    parts = [ref.cross_entropy(row, ref.hard_coef(n, int(t))[0]) for row, t in zip(_rows(x), targets)]
    exact = ref.mp.fsum(p[0] for p in parts) / rows
    assert ref.ulp_error([loss], [exact], dtype) <= ref.tolerance(dtype)
    exact_grad = [g / rows for p in parts for g in p[1]]
    assert ref.ulp_error(grad, exact_grad, dtype) <= ref.tolerance(dtype)


@given(x=st.lists(st.floats(-800, 800), min_size=1, max_size=30))
def test_elementwise(dtype, x):
    x = np.asarray(x).astype(dtype)
    xs = ref.to_mp(x)
    for fn, exact in [
        (smk.sigmoid, [ref.sigmoid(v) for v in xs]),
        (smk.softplus, [ref.softplus(v) for v in xs]),
        (smk.log_sigmoid, [-ref.softplus(-v) for v in xs]),
    ]:
        out = fn(x)
        assert out.dtype == dtype
        assert ref.ulp_error(out, exact, dtype) <= ref.tolerance(dtype), fn.__name__


@given(x=st.lists(st.floats(-300, 300), min_size=1, max_size=20), data=st.data())
def test_binary_cross_entropy_hard_targets(dtype, x, data):
    x = np.asarray(x).astype(dtype)
    y = np.asarray(data.draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=len(x), max_size=len(x))), dtype=dtype)
    loss, grad = smk.binary_cross_entropy_with_logits(x, y, reduction="none", return_grad=True)
    xs = ref.to_mp(x)
    exact = [ref.softplus(-v) if t else ref.softplus(v) for v, t in zip(xs, y)]
    exact_grad = [-ref.sigmoid(-v) if t else ref.sigmoid(v) for v, t in zip(xs, y)]
    assert ref.ulp_error(loss, exact, dtype) <= ref.tolerance(dtype)
    assert ref.ulp_error(grad, exact_grad, dtype) <= ref.tolerance(dtype)


@given(data=st.data())
def test_kl_div(dtype, data):
    p = data.draw(logit_rows(dtype))
    q = data.draw(logit_rows(dtype)).astype(np.float64)
    q = np.resize(q, p.shape).astype(dtype)
    out = smk.kl_div(p, q)
    assert out.dtype == dtype
    for value, rp, rq in zip(out, _rows(p), _rows(q)):
        P, lp, lq = ref.softmax(rp), ref.log_softmax(rp), ref.log_softmax(rq)
        if any(lpj != -ref.INF and lqj == -ref.INF for lpj, lqj in zip(lp, lq)):
            assert value == np.inf
            continue
        terms = [pj * (a - b) for pj, a, b in zip(P, lp, lq) if pj != 0]
        exact = ref.mp.fsum(terms)
        # Documented: a few ULP of sum_j P_j |log P_j - log Q_j| (cancellation
        # between the terms is the data's, not the algorithm's).
        scale = ref.mp.fsum(abs(v) for v in terms) + ref.mp.fsum(-pj * a for pj, a in zip(P, lp) if pj != 0)
        assert abs(ref.mp.mpf(float(value)) - exact) <= ref.tolerance(dtype) * ref.ulp(scale, dtype)


@given(data=st.data())
def test_nll_loss_is_exact(dtype, data):
    y = data.draw(logit_rows(dtype))
    rows, n = y.shape
    t = np.array([data.draw(st.integers(0, n - 1)) for _ in range(rows)])
    out = smk.nll_loss(y, t, reduction="none")
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, -y[np.arange(rows), t])


@given(data=st.data())
def test_vjps(dtype, data):
    x = data.draw(logit_rows(dtype))
    v = np.asarray(data.draw(st.lists(st.floats(-4, 4), min_size=x.size, max_size=x.size))).reshape(x.shape).astype(dtype)
    p = smk.softmax(x)
    y = smk.log_softmax(x)
    got_sm = smk.softmax_vjp(p, v)
    got_ls = smk.log_softmax_vjp(y, v)
    assert got_sm.dtype == dtype and got_ls.dtype == dtype
    for i in range(len(x)):
        P, V, Y = ref.to_mp(p[i]), ref.to_mp(v[i]), ref.to_mp(y[i])
        dot = ref.mp.fsum(a * b for a, b in zip(P, V))
        dot_scale = ref.mp.fsum(abs(a * b) for a, b in zip(P, V))
        live = [yy != -ref.INF for yy in Y]
        total = ref.mp.fsum(vv for vv, ok in zip(V, live) if ok)
        total_scale = ref.mp.fsum(abs(vv) for vv, ok in zip(V, live) if ok)
        for j in range(x.shape[1]):
            # The VJPs of the given outputs, exact in mpmath; a few ULP of the
            # magnitudes that meet in the subtraction.
            exact_sm = P[j] * (V[j] - dot)
            scale_sm = P[j] * (abs(V[j]) + dot_scale)
            assert abs(ref.mp.mpf(float(got_sm[i, j])) - exact_sm) <= ref.tolerance(dtype) * ref.ulp(scale_sm, dtype)
            exact_ls = V[j] - ref.mp.exp(Y[j]) * total if live[j] else 0
            scale_ls = abs(V[j]) + ref.mp.exp(Y[j]) * total_scale if live[j] else 0
            assert abs(ref.mp.mpf(float(got_ls[i, j])) - exact_ls) <= ref.tolerance(dtype) * ref.ulp(scale_ls, dtype)


# Regression: with a negative class weight the exact argmax form was skipped
# (it was taken only for coefficients > 0), so a confident row's target
# gradient w (p_t - 1) rounded to 0.
def test_negative_class_weight_keeps_the_confident_target_gradient(dtype):
    # Past 37 (float64 working precision) p_t - 1 rounds to 0; float16 gradients underflow past about 16.
    margin = 12.0 if dtype == np.float16 else 60.0
    x = np.array([[margin, 0.0, -1.0]]).astype(dtype)
    weight = np.array([-1.5, 2.0, 1.0], dtype=dtype)
    _, grad = smk.cross_entropy(x, np.array([0]), weight=weight, reduction="sum", return_grad=True)
    coef, w_t = ref.hard_coef(3, 0, 0.0, weight)
    exact = ref.cross_entropy(_rows(x)[0], coef, 0, w_t)[1]
    assert grad[0, 0] != 0
    assert ref.ulp_error(grad[0], exact, dtype) <= ref.tolerance(dtype)
