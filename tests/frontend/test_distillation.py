"""softmaxkit.distillation_loss: the accuracy contract against mpmath, gradients
against float64 finite differences, properties, edges and the option checks."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import softmaxkit as smk
from tests import reference as ref
from tests.reference import FLOAT_DTYPES, mp

DIVERGENCES = ["forward_kl", "reverse_kl", "jsd"]
DTYPE_IDS = [d.name for d in FLOAT_DTYPES]
# The contract (docstring): 2 ULP for 16- and 32-bit inputs, 8 for float64,
# of max(|exact|, scale).
TOL = {"float16": 2.0, "bfloat16": 2.0, "float32": 2.0, "float64": 8.0}
INF = math.inf


# --- the mpmath reference, from the definitions ---------------------------------------


def _log_mix(beta, lq, lp):
    """log(beta q + (1 - beta) p) from exact log-probabilities."""
    m = beta * (mp.exp(lq) if lq != -INF else 0) + (1 - beta) * (mp.exp(lp) if lp != -INF else 0)
    return mp.log(m) if m > 0 else -INF


def _kl(lw, lo):
    """KL(W || O) and its terms' log-ratios, 0 log 0 = 0."""
    total, ratio = mp.mpf(0), []
    for a, b in zip(lw, lo):
        if a == -INF:
            ratio.append(None)
            continue
        if b == -INF:
            return INF, None
        ratio.append(a - b)
        total += mp.exp(a) * (a - b)
    return total, ratio


def reference_row(s, t, divergence, beta=0.5, T=1.0, t2=False, w=0.0, target=None):
    """(loss, scale, grad_student, grad_teacher, grad scales) of one row, exactly.

    ``target=None`` means no hard labels; ``"ignore"`` an ignored row.
    """
    n = len(s)
    if target == "ignore":
        zeros = [mp.mpf(0)] * n
        return mp.mpf(0), mp.mpf(0), zeros, zeros, zeros, zeros
    s, t = ref.to_mp(s), ref.to_mp(t)
    T, beta = mp.mpf(T), mp.mpf(beta)
    lp, lq = ref.log_softmax(s, T), ref.log_softmax(t, T)
    p = [mp.exp(v) if v != -INF else mp.mpf(0) for v in lp]
    q = [mp.exp(v) if v != -INF else mp.mpf(0) for v in lq]
    f = T * T if t2 else mp.mpf(1)
    c = T if t2 else 1 / T
    absl = [abs(v) if v != -INF else 0 for v in lp]
    absq = [abs(v) if v != -INF else 0 for v in lq]
    zeros = [mp.mpf(0)] * n
    if divergence == "forward_kl":
        div, ratio = _kl(lq, lp)
        if div == INF:
            gs, gt, ss, stt = zeros, zeros, zeros, zeros
        else:
            gs = [(pj - qj) * c for pj, qj in zip(p, q)]
            ss = [max(pj, qj) * c for pj, qj in zip(p, q)]
            gt = [qj * (r - div) * c if r is not None else mp.mpf(0) for qj, r in zip(q, ratio)]
            stt = [qj * (a + b + abs(div)) * c for qj, a, b in zip(q, absl, absq)]
    elif divergence == "reverse_kl":
        div, ratio = _kl(lp, lq)
        if div == INF:
            gs, gt, ss, stt = zeros, zeros, zeros, zeros
        else:
            gs = [pj * (r - div) * c if r is not None else mp.mpf(0) for pj, r in zip(p, ratio)]
            ss = [pj * (a + b + abs(div)) * c for pj, a, b in zip(p, absl, absq)]
            gt = [(qj - pj) * c for pj, qj in zip(p, q)]
            stt = [max(pj, qj) * c for pj, qj in zip(p, q)]
    else:
        lm = [_log_mix(beta, a, b) for a, b in zip(lq, lp)]
        r = [a - m if a != -INF else 0 for a, m in zip(lp, lm)]
        d = [a - m if a != -INF else 0 for a, m in zip(lq, lm)]
        R = mp.fsum(pj * rj for pj, rj in zip(p, r))
        D = mp.fsum(qj * dj for qj, dj in zip(q, d))
        div = beta * D + (1 - beta) * R
        gs = [(1 - beta) * pj * (rj - R) * c for pj, rj in zip(p, r)]
        gt = [beta * qj * (dj - D) * c for qj, dj in zip(q, d)]
        ss = [(1 - beta) * pj * (a + b + abs(rj) + abs(R)) * c for pj, a, b, rj in zip(p, absl, absq, r)]
        stt = [beta * qj * (a + b + abs(dj) + abs(D)) * c for qj, a, b, dj in zip(q, absl, absq, d)]
    scale = f * mp.fsum((pj + qj) * (1 + a + b) for pj, qj, a, b in zip(p, q, absl, absq))
    loss = f * div
    if w and target is not None:
        ce, g = ref.cross_entropy(s, ref.hard_coef(n, target)[0])
        loss, scale = loss + w * ce, scale + w * ce
        gs = [a + w * b for a, b in zip(gs, g)]
        p1 = ref.softmax(s)
        ss = [a + w * max(pj, 1 if j == target else 0) for j, (a, pj) in enumerate(zip(ss, p1))]
    return loss, scale, gs, gt, ss, stt


def scaled_ulp_error(actual, exact, scale, dtype):
    """Largest |actual - exact| in ULPs of ``dtype`` at max(|exact|, scale); inf/NaN must match."""
    worst = 0.0
    for a, e, s in zip(np.asarray(actual, dtype=np.float64).ravel(), exact, scale):
        e = mp.mpf(e) if not isinstance(e, mp.mpf) else e
        if not (math.isfinite(a) and mp.isfinite(e)):
            if not (a == e or (math.isnan(a) and mp.isnan(e))):
                return math.inf
            continue
        worst = max(worst, float(abs(mp.mpf(a) - e) / ref.ulp(max(abs(e), s), dtype)))
    return worst


def check_contract(s, t, dtype, divergence, reduction="none", targets=None, **kw):
    """Loss and both gradients of ``smk.distillation_loss`` against :func:`reference_row`."""
    T, t2 = kw.get("temperature", 1.0), kw.get("scale_by_temperature_squared", False)
    w, beta = kw.get("hard_label_weight", 0.0), kw.get("beta", 0.5)
    loss, (gs, gt) = smk.distillation_loss(s, t, divergence=divergence, targets=targets, reduction=reduction, return_grad=True, **kw)
    assert loss.dtype == dtype and gs.dtype == dtype and gt.dtype == dtype
    rows = []
    with mp.workdps(400):
        for i in range(s.shape[0]):
            target = None if targets is None else ("ignore" if targets[i] == -100 else int(targets[i]))
            rows.append(reference_row(s[i], t[i], divergence, beta, T, t2, w, target))
    tol = TOL[np.dtype(dtype).name]
    if reduction == "none":
        err = scaled_ulp_error(loss, [r[0] for r in rows], [r[1] for r in rows], dtype)
        assert err <= tol, f"loss: {err} ULP"
    flat = lambda k: [v for r in rows for v in r[k]]  # noqa: E731
    denominator = 1
    if reduction == "batchmean":
        denominator = s.shape[0] if targets is None else max(int(np.sum(targets != -100)), 1)
        total = mp.fsum(r[0] for r in rows) / denominator
        assert scaled_ulp_error(loss[None], [total], [mp.fsum(r[1] for r in rows) / denominator], dtype) <= tol
    for k, scale_k, got, name in ((2, 4, gs, "student"), (3, 5, gt, "teacher")):
        err = scaled_ulp_error(got, [v / denominator for v in flat(k)], [v / denominator for v in flat(scale_k)], dtype)
        assert err <= tol, f"{name} gradient: {err} ULP"
    return loss, gs, gt


def _rows(seed, shape, scale=3.0, dtype=np.float64):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(dtype)


# --- the accuracy contract ------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_contract_random_rows_with_hard_labels(dtype, divergence):
    s, t = _rows(1, (4, 7), dtype=dtype), _rows(2, (4, 7), dtype=dtype)
    y = np.array([0, 3, -100, 6])
    check_contract(s, t, dtype, divergence, targets=y, hard_label_weight=0.7, beta=0.3, temperature=2.0, scale_by_temperature_squared=True)
    check_contract(s, t, dtype, divergence, reduction="batchmean", targets=y, temperature=0.5)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_contract_confident_rows(dtype, divergence):
    """Margins 5 to 90 (700 in float64): p_k rounds to 1 and the gradient at the argmax must not cancel."""
    top = 700.0 if dtype == np.float64 else 90.0
    if np.dtype(dtype).name == "float16":
        top = 9.0  # float16's exp underflows to 0 beyond margins of about 17
    margins = np.linspace(5.0, top, 4)
    s = np.zeros((4, 5))
    s[:, 2] = margins
    t = np.zeros((4, 5))
    t[:, 2] = margins - 1.0
    t[:, 0] = margins / 2
    s, t = s.astype(dtype), t.astype(dtype)
    _, gs, _ = check_contract(s, t, dtype, divergence)
    if divergence == "forward_kl":
        assert np.all(gs[:, 2] != 0)  # p_k - q_k: naive code rounds both to 1 and gives 0


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("temperature", [1e-3, 1e3])
def test_contract_temperature_extremes(dtype, divergence, temperature):
    s, t = _rows(3, (3, 6), dtype=dtype), _rows(4, (3, 6), dtype=dtype)
    check_contract(s, t, dtype, divergence, temperature=temperature, scale_by_temperature_squared=temperature > 1)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_contract_masked_classes(dtype, divergence):
    s, t = _rows(5, (3, 6), dtype=dtype), _rows(6, (3, 6), dtype=dtype)
    s[:, 1] = t[:, 1] = -np.inf
    s[2, 4] = t[2, 4] = -np.inf
    loss, gs, gt = check_contract(s, t, dtype, divergence, targets=np.array([0, 2, 5]), hard_label_weight=0.5)
    assert np.all(np.isfinite(loss)) and np.all(gs[:, 1] == 0) and np.all(gt[:, 1] == 0)


@st.composite
def _pairs(draw):
    rows, width = draw(st.integers(1, 3)), draw(st.integers(1, 9))
    scale = draw(st.sampled_from([1.0, 10.0, 100.0]))
    vals = st.floats(-scale, scale, allow_nan=False)
    s = np.array(draw(st.lists(vals, min_size=rows * width, max_size=rows * width))).reshape(rows, width)
    t = np.array(draw(st.lists(vals, min_size=rows * width, max_size=rows * width))).reshape(rows, width)
    if width > 1 and draw(st.booleans()):
        j = draw(st.integers(0, width - 1))
        s[:, j] = t[:, j] = -np.inf
    return s, t


@given(_pairs(), st.sampled_from(DIVERGENCES), st.sampled_from([np.float32, np.float64]), st.floats(0.01, 0.99), st.sampled_from([0.5, 1.0, 4.0]))
def test_contract_property(pair, divergence, dtype, beta, temperature):
    s, t = (a.astype(dtype) for a in pair)
    check_contract(s, t, np.dtype(dtype), divergence, beta=beta, temperature=temperature)


# --- gradients against finite differences -----------------------------------------------


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none"])
def test_gradients_match_finite_differences(divergence, reduction):
    s, t = _rows(7, (3, 5)), _rows(8, (3, 5))
    s[1, 3] = t[1, 3] = -np.inf
    y = np.array([1, -100, 4])
    kw = dict(divergence=divergence, beta=0.35, temperature=1.7, scale_by_temperature_squared=True, targets=y, hard_label_weight=0.4, reduction=reduction)
    _, (gs, gt) = smk.distillation_loss(s, t, return_grad=True, **kw)

    def f(a, b):
        return float(np.sum(smk.distillation_loss(a, b, **kw)))

    h = 1e-6
    for grad, which in ((gs, 0), (gt, 1)):
        fd = np.zeros_like(s)
        for i in np.ndindex(s.shape):
            if not np.isfinite(s[i]):
                continue
            e = np.zeros_like(s)
            e[i] = h
            args_p, args_m = [s, t], [s, t]
            args_p[which], args_m[which] = args_p[which] + e, args_m[which] - e
            fd[i] = (f(*args_p) - f(*args_m)) / (2 * h)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


# --- edges ------------------------------------------------------------------------------


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_zero_log_zero_and_masked_classes_contribute_nothing(divergence):
    """A class where the weighting distribution has no mass adds 0, also where the other has none."""
    s = np.array([[1.0, 0.5, -np.inf]])
    t = np.array([[0.2, -0.3, -np.inf]])
    full = smk.distillation_loss(s, t, divergence=divergence)
    sliced = smk.distillation_loss(s[:, :2], t[:, :2], divergence=divergence)
    assert full == sliced
    # forward KL: the teacher has no mass at class 1; the student's mass there adds nothing
    one_sided = smk.distillation_loss(np.array([[0.0, 0.0]]), np.array([[0.0, -np.inf]]), divergence="forward_kl")
    assert float(one_sided) == pytest.approx(math.log(2.0), rel=1e-15)


@pytest.mark.parametrize("divergence, student, teacher", [
    ("forward_kl", [[0.0, -np.inf]], [[0.0, 0.0]]),
    ("reverse_kl", [[0.0, 0.0]], [[0.0, -np.inf]]),
    ("forward_kl", [[-np.inf, -np.inf]], [[0.0, 0.0]]),
])
def test_infinite_divergence_has_zero_gradients(divergence, student, teacher):
    s, t = np.array(student), np.array(teacher)
    loss, (gs, gt) = smk.distillation_loss(s, t, divergence=divergence, return_grad=True)
    assert float(loss) == np.inf
    assert np.all(gs == 0) and np.all(gt == 0)
    # JSD is bounded: -beta log beta - (1 - beta) log(1 - beta) at most
    jsd, (gs, gt) = smk.distillation_loss(s, t, divergence="jsd", beta=0.3, return_grad=True)
    assert 0 <= float(jsd) <= -(0.3 * math.log(0.3) + 0.7 * math.log(0.7)) + 1e-15
    assert np.all(np.isfinite(gs)) and np.all(np.isfinite(gt))


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_fully_masked_rows_give_zero_and_zero_gradient(divergence):
    s = np.array([[-np.inf] * 3, [1.0, 2.0, 3.0]])
    t = np.array([[-np.inf] * 3, [0.0, 2.0, 1.0]])
    loss, (gs, gt) = smk.distillation_loss(s, t, divergence=divergence, reduction="none", return_grad=True)
    assert loss[0] == 0 and np.all(gs[0] == 0) and np.all(gt[0] == 0)
    assert np.all(np.isfinite(gs)) and np.all(np.isfinite(gt)) and loss[1] > 0


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_nan_stays_in_its_row(divergence):
    s = np.array([[1.0, np.nan, 0.0], [1.0, 2.0, 3.0]])
    t = np.array([[0.0, 1.0, 2.0], [3.0, np.nan, 1.0]])
    loss, (gs, gt) = smk.distillation_loss(s, t[[1, 0]][[1, 0]], divergence=divergence, reduction="none", return_grad=True)
    assert np.all(np.isnan(loss))  # both rows hold a NaN
    s2 = np.vstack([s, [[0.0, 1.0, 2.0]]])
    t2 = np.vstack([t, [[2.0, 1.0, 0.0]]])
    loss, (gs, gt) = smk.distillation_loss(s2, t2, divergence=divergence, reduction="none", return_grad=True)
    assert np.isnan(loss[0]) and np.isnan(loss[1]) and np.isfinite(loss[2])
    assert np.all(np.isfinite(gs[2])) and np.all(np.isfinite(gt[2]))


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_gradients_finite_wherever_loss_finite(divergence):
    rng = np.random.default_rng(9)
    s = rng.normal(size=(40, 6)) * 50
    t = rng.normal(size=(40, 6)) * 50
    s[rng.random(s.shape) < 0.2] = -np.inf
    t[rng.random(t.shape) < 0.2] = -np.inf
    s[rng.random(s.shape) < 0.05] = np.inf
    loss, (gs, gt) = smk.distillation_loss(s, t, divergence=divergence, reduction="none", return_grad=True)
    finite = np.isfinite(loss)
    assert finite.any()
    assert np.all(np.isfinite(gs[finite])) and np.all(np.isfinite(gt[finite]))
    assert not np.any(np.isnan(loss))


def test_jsd_over_beta_tends_to_the_kl_divergences():
    """JSD/beta -> KL(q || p) as beta -> 0 and JSD/(1 - beta) -> KL(p || q) as beta -> 1,
    to about beta's own size: log m - log p is never formed from m."""
    s, t = _rows(10, (3, 6)), _rows(11, (3, 6))
    fwd = smk.distillation_loss(s, t, divergence="forward_kl", reduction="none")
    rev = smk.distillation_loss(s, t, divergence="reverse_kl", reduction="none")
    for b in (1e-6, 1e-9, 1e-12):
        small = smk.distillation_loss(s, t, divergence="jsd", beta=b, reduction="none") / b
        large = smk.distillation_loss(s, t, divergence="jsd", beta=1 - b, reduction="none") / b
        np.testing.assert_allclose(small, fwd, rtol=1e3 * b + 1e-12)
        if b >= 1e-9:  # 1 - 1e-12 is itself rounded: beta's complement carries 1e-4 relative error
            np.testing.assert_allclose(large, rev, rtol=1e3 * b + 1e-6)


def test_ignored_rows_contribute_nothing_and_are_not_counted():
    s, t = _rows(12, (4, 5)), _rows(13, (4, 5))
    s[1] = np.nan  # an ignored row contributes nothing at all, even NaN
    y = np.array([2, -100, 0, -100])
    loss, (gs, gt) = smk.distillation_loss(s, t, targets=y, hard_label_weight=0.5, return_grad=True)
    keep = y != -100
    expected, (es, et) = smk.distillation_loss(s[keep], t[keep], targets=y[keep], hard_label_weight=0.5, return_grad=True)
    assert loss == expected
    np.testing.assert_array_equal(gs[keep], es)
    np.testing.assert_array_equal(gt[keep], et)
    assert np.all(gs[~keep] == 0) and np.all(gt[~keep] == 0)
    all_ignored, (gs, gt) = smk.distillation_loss(s, t, targets=np.full(4, -100), return_grad=True)
    assert all_ignored == 0 and np.all(gs == 0) and np.all(gt == 0)


def test_reductions_and_hard_label_term():
    s, t = _rows(14, (3, 4)), _rows(15, (3, 4))
    y = np.array([0, 1, 3])
    rows = smk.distillation_loss(s, t, reduction="none")
    assert smk.distillation_loss(s, t, reduction="sum") == pytest.approx(rows.sum(), rel=1e-15)
    assert smk.distillation_loss(s, t) == pytest.approx(rows.sum() / 3, rel=1e-15)
    mixed = smk.distillation_loss(s, t, targets=y, hard_label_weight=0.25, temperature=3.0, scale_by_temperature_squared=True, reduction="none")
    kd = smk.distillation_loss(s, t, temperature=3.0, scale_by_temperature_squared=True, reduction="none")
    ce = smk.cross_entropy(s, y, reduction="none")
    np.testing.assert_allclose(mixed, kd + 0.25 * ce, rtol=1e-14)
    np.testing.assert_allclose(kd, 9.0 * smk.distillation_loss(s, t, temperature=3.0, reduction="none"), rtol=1e-14)


def test_forward_kl_equals_kl_div_of_tempered_logits():
    s, t = _rows(16, (5, 7)), _rows(17, (5, 7))
    np.testing.assert_allclose(smk.distillation_loss(s, t, temperature=2.0, reduction="none"), smk.kl_div(t / 2.0, s / 2.0), rtol=1e-13)
    np.testing.assert_allclose(smk.distillation_loss(s, t, divergence="reverse_kl", reduction="none"), smk.kl_div(s, t), rtol=1e-13)


# --- properties -------------------------------------------------------------------------


@given(_pairs(), st.sampled_from(DIVERGENCES), st.floats(-50, 50), st.floats(-50, 50))
def test_shift_invariance_and_bounds(pair, divergence, cs, ct):
    s, t = pair
    base = smk.distillation_loss(s, t, divergence=divergence, beta=0.25, reduction="none")
    shifted = smk.distillation_loss(s + cs, t + ct, divergence=divergence, beta=0.25, reduction="none")
    scale = np.sum(np.abs(np.where(np.isfinite(s), s, 0)) + np.abs(np.where(np.isfinite(t), t, 0)), axis=-1) + 1
    np.testing.assert_allclose(shifted, base, rtol=0, atol=1e-12 * float(np.max(scale)) * 100)
    assert np.all(base >= -1e-12 * scale)
    if divergence == "jsd":
        assert np.all(base <= -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) + 1e-12)
    assert np.all(smk.distillation_loss(s, s, divergence=divergence, reduction="none") == 0)


@given(_pairs(), st.sampled_from(DIVERGENCES))
def test_axis_moved_equals_moveaxis_and_inputs_untouched(pair, divergence):
    s, t = pair
    s0, t0 = s.copy(), t.copy()
    loss, (gs, gt) = smk.distillation_loss(s, t, divergence=divergence, reduction="none", return_grad=True)
    moved, (ms, mt) = smk.distillation_loss(s.T, t.T, divergence=divergence, reduction="none", axis=0, return_grad=True)
    np.testing.assert_array_equal(loss, moved)
    np.testing.assert_array_equal(gs, ms.T)
    np.testing.assert_array_equal(gt, mt.T)
    np.testing.assert_array_equal(s, s0)
    np.testing.assert_array_equal(t, t0)


def test_chunks_do_not_change_a_bit(monkeypatch):
    from softmaxkit.frontend import layout

    s, t = _rows(18, (64, 33)), _rows(19, (64, 33))
    whole = smk.distillation_loss(s, t, divergence="jsd", return_grad=True)
    monkeypatch.setattr(layout, "CHUNK_BYTES", 33 * 8 * 5)
    chunked = smk.distillation_loss(s, t, divergence="jsd", return_grad=True)
    assert whole[0] == chunked[0]
    np.testing.assert_array_equal(whole[1][0], chunked[1][0])
    np.testing.assert_array_equal(whole[1][1], chunked[1][1])


# --- errors -----------------------------------------------------------------------------

X = np.zeros((2, 3))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(divergence="kl"), ValueError, r"divergence must be one of 'forward_kl', 'reverse_kl', 'jsd'; got 'kl'"),
    (dict(divergence="jsd", beta=0.0), ValueError, r"beta must be in \(0, 1\) for divergence='jsd'; got 0.0 .*'forward_kl'"),
    (dict(divergence="jsd", beta=1.0), ValueError, r"got 1.0 .*'reverse_kl'"),
    (dict(temperature=0.0), ValueError, r"temperature must be finite and > 0; got 0.0"),
    (dict(temperature=np.inf), ValueError, r"temperature must be finite and > 0; got inf"),
    (dict(hard_label_weight=-1.0), ValueError, r"hard_label_weight must be finite and >= 0; got -1.0"),
    (dict(hard_label_weight=0.5), ValueError, r"hard_label_weight=0.5 needs targets"),
    (dict(reduction="mean"), ValueError, r"reduction must be one of 'batchmean', 'sum', 'none'; got 'mean'"),
    (dict(scale_by_temperature_squared=1), TypeError, r"scale_by_temperature_squared must be True or False"),
    (dict(beta="a"), TypeError, r"beta must be a real number"),
    (dict(targets=np.array([0, 3])), ValueError, r"targets\[1\] = 3 is not a class index"),
    (dict(targets=np.array([0.0, 1.0])), TypeError, r"targets must hold integer class indices"),
    (dict(targets=np.array([0, 1, 2])), ValueError, r"targets of class indices must have shape \(2,\)"),
])
def test_errors_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        smk.distillation_loss(X, X, **kwargs)


def test_shape_and_empty_class_errors():
    with pytest.raises(ValueError, match=r"teacher_logits must have the shape of student_logits \(2, 3\); got \(1, 3\)"):
        smk.distillation_loss(X, X[:1])
    with pytest.raises(ValueError, match="empty class axis"):
        smk.distillation_loss(np.zeros((2, 0)), np.zeros((2, 0)))
    # beta is ignored by the KL divergences
    assert smk.distillation_loss(X, X, beta=0.0) == 0
