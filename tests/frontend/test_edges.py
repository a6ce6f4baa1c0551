"""The README's table of edge semantics, row by row."""

import numpy as np
import pytest

import softmaxkit as smk

from tests.reference import FLOAT_DTYPES

pytestmark = pytest.mark.usefixtures("numeric_path")

INF = np.inf


@pytest.fixture(params=FLOAT_DTYPES, ids=lambda d: d.name)
def dt(request):
    return request.param


def _arr(rows, dt):
    return np.array(rows, dtype=np.float64).astype(dt)


# --- fully masked rows ----------------------------------------------------------


def test_fully_masked_row_by_neg_inf(dt):
    x = _arr([[-INF, -INF, -INF], [1.0, 2.0, 3.0]], dt)
    p = smk.softmax(x)
    assert np.all(p[0] == 0) and np.isclose(float(p[1].astype(np.float64).sum()), 1.0, atol=1e-2)
    assert np.all(smk.log_softmax(x)[0] == -INF)
    assert smk.logsumexp(x)[0] == -INF
    assert smk.entropy(x)[0] == 0


def test_fully_masked_row_by_where(dt):
    x = _arr([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dt)
    where = np.array([[False, False, False], [True, False, True]])
    p = smk.softmax(x, where=where)
    assert np.all(p[0] == 0) and p[1, 1] == 0
    assert np.all(smk.log_softmax(x, where=where)[0] == -INF)
    assert smk.log_softmax(x, where=where)[1, 1] == -INF
    assert smk.logsumexp(x, where=where)[0] == -INF


def test_fully_masked_row_gradients_are_zero():
    x = np.array([[-INF, -INF, -INF], [0.0, 1.0, 2.0]])
    assert np.all(smk.softmax_vjp(smk.softmax(x), np.ones_like(x))[0] == 0)
    assert np.all(smk.log_softmax_vjp(smk.log_softmax(x), np.ones_like(x))[0] == 0)
    assert np.all(smk.logsumexp_vjp(x, np.ones(2))[0] == 0)
    probs = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    _, grad = smk.cross_entropy(x, probs, return_grad=True)
    assert np.all(grad[0] == 0) and np.all(np.isfinite(grad))


def test_where_false_entries_take_no_part():
    x = np.array([1.0, np.nan, 3.0, np.inf])
    where = np.array([True, False, True, False])
    np.testing.assert_allclose(smk.softmax(x, where=where)[[0, 2]], smk.softmax(np.array([1.0, 3.0])), rtol=0, atol=0)
    assert smk.logsumexp(x, where=where) == smk.logsumexp(np.array([1.0, 3.0]))


# --- +inf ----------------------------------------------------------------------


def test_plus_inf_shares_the_mass(dt):
    x = _arr([[INF, 1.0, INF, -INF], [INF, 5.0, 0.0, 0.0]], dt)
    p = smk.softmax(x).astype(np.float64)
    np.testing.assert_array_equal(p, [[0.5, 0, 0.5, 0], [1, 0, 0, 0]])
    ls = smk.log_softmax(x).astype(np.float64)
    assert ls[0, 0] == ls[0, 2] == np.float64(np.log(0.5).astype(dt))
    assert ls[0, 1] == -INF and ls[1, 0] == 0
    assert np.all(smk.logsumexp(x) == INF)


def test_plus_inf_gradients_are_defined():
    x = np.array([[INF, 1.0, INF]])
    _, grad = smk.cross_entropy(x, np.array([0]), return_grad=True)
    np.testing.assert_array_equal(grad, [[-0.5, 0.0, 0.5]])
    np.testing.assert_array_equal(smk.logsumexp_vjp(x, np.array([2.0])), [[1.0, 0.0, 1.0]])


# --- NaN -----------------------------------------------------------------------


def test_nan_poisons_only_its_row(dt):
    x = _arr([[np.nan, 1.0, 2.0], [0.0, 1.0, 2.0], [np.nan, INF, -INF]], dt)
    for fn in (smk.softmax, smk.log_softmax):
        out = fn(x)
        assert np.all(np.isnan(out[0])) and np.all(np.isnan(out[2]))
        assert not np.any(np.isnan(out[1]))
    lse = smk.logsumexp(x)
    assert np.isnan(lse[0]) and np.isnan(lse[2]) and np.isfinite(lse[1])
    loss = smk.cross_entropy(x, np.array([1, 1, 1]), reduction="none")
    assert np.isnan(loss[0]) and np.isfinite(loss[1])


# --- empty class axis -------------------------------------------------------------


def test_empty_class_axis():
    x = np.zeros((3, 0))
    assert smk.softmax(x).shape == (3, 0)
    assert smk.log_softmax(x).shape == (3, 0)
    np.testing.assert_array_equal(smk.logsumexp(x), [-INF] * 3)
    lse, sign = smk.logsumexp(x, return_sign=True)
    np.testing.assert_array_equal(sign, [0, 0, 0])
    with pytest.raises(ValueError, match="empty class axis"):
        smk.cross_entropy(x, np.zeros(3, dtype=int))


def test_empty_batch():
    x = np.zeros((0, 4))
    assert smk.softmax(x).shape == (0, 4)
    assert smk.logsumexp(x).shape == (0,)
    loss, grad = smk.cross_entropy(x, np.zeros(0, dtype=int), return_grad=True)
    assert loss == 0 and grad.shape == (0, 4)


# --- cross-entropy -----------------------------------------------------------------


def test_all_targets_ignored_gives_zero_and_zero_gradient():
    x = np.array([[1.0, 2.0], [3.0, -1.0]])
    t = np.array([-100, -100])
    for reduction in ("mean", "sum", "none"):
        loss, grad = smk.cross_entropy(x, t, reduction=reduction, return_grad=True)
        assert np.all(loss == 0) and np.all(grad == 0)
    loss, grad = smk.nll_loss(smk.log_softmax(x), t, return_grad=True)
    assert loss == 0 and np.all(grad == 0)


def test_ignored_rows_contribute_nothing():
    x = np.array([[1.0, 2.0, 0.5], [3.0, -1.0, 0.0]])
    loss, grad = smk.cross_entropy(x, np.array([0, 7]), ignore_index=7, return_grad=True)
    alone, alone_grad = smk.cross_entropy(x[:1], np.array([0]), return_grad=True)
    assert loss == alone
    np.testing.assert_array_equal(grad[0], alone_grad[0])
    assert np.all(grad[1] == 0)


def test_label_smoothing_gives_no_mass_to_masked_classes():
    x = np.array([[2.0, -INF, 0.0, -INF]])
    loss, grad = smk.cross_entropy(x, np.array([0]), label_smoothing=0.2, return_grad=True)
    assert np.isfinite(loss)
    expected = smk.cross_entropy(x[:, [0, 2]], np.array([0]), label_smoothing=0.2)
    np.testing.assert_allclose(loss, expected, rtol=1e-15)
    assert np.all(np.isfinite(grad)) and grad[0, 1] == 0 and grad[0, 3] == 0


def test_target_on_neg_inf_logit_gives_inf_with_finite_gradient():
    x = np.array([[0.0, -INF, 1.0]])
    loss, grad = smk.cross_entropy(x, np.array([1]), return_grad=True)
    assert loss == INF
    assert np.all(np.isfinite(grad)) and grad[0, 1] == -1.0
    assert smk.cross_entropy(x, np.array([[0.5, 0.5, 0.0]])) == INF


def test_probability_target_on_masked_row_gives_inf_and_zero_gradient():
    x = np.array([[-INF, -INF]])
    loss, grad = smk.cross_entropy(x, np.array([1]), return_grad=True)
    assert loss == INF and np.all(grad == 0)


# --- no write-back, promotion ---------------------------------------------------------


def test_inputs_are_never_modified():
    x = np.array([[1.0, -INF, np.nan, INF], [3.0, 2.0, 1.0, 0.0]])
    t = np.array([0, 1])
    w = np.array([1.0, 2.0, 3.0, 4.0])
    keep = (x.copy(), t.copy(), w.copy())
    smk.softmax(x)
    smk.log_softmax(x, temperature=2.0)
    smk.logsumexp(x, b=w)
    smk.cross_entropy(x, t, weight=w, label_smoothing=0.1, z_loss=1e-3, return_grad=True)
    smk.softmax_vjp(smk.softmax(x), x)
    np.testing.assert_array_equal(x, keep[0])
    np.testing.assert_array_equal(t, keep[1])
    np.testing.assert_array_equal(w, keep[2])


def test_integer_input_is_promoted_to_float64():
    assert smk.softmax(np.array([1, 2, 3])).dtype == np.float64
    assert smk.logsumexp([1, 2, 3]).dtype == np.float64
    assert smk.cross_entropy(np.array([[1, 2]]), np.array([0])).dtype == np.float64
    assert smk.sigmoid(np.array([1, 2], dtype=np.int8)).dtype == np.float64


# --- the demonstration batch ---------------------------------------------------------


def test_tutorial_batch_gives_the_true_values():
    x = np.array([[2, 1, 0.1], [1000, 1, -1000], [3, 2, 1]])
    loss, grad = smk.cross_entropy(x, np.array([0, 2, 1]), return_grad=True)
    assert round(float(loss), 4) == 667.2749
    np.testing.assert_allclose(grad[1], [1 / 3, 0, -1 / 3], rtol=1e-15, atol=0)


def test_confident_float32_row_keeps_its_target_gradient():
    # p_t - 1 rounds to 0 in float32 at margin 20; the true value is -2.06e-9.
    x = np.array([[20.0, 0.0]], dtype=np.float32)
    _, grad = smk.cross_entropy(x, np.array([0]), return_grad=True)
    assert grad[0, 0] == np.float32(-2.0611537e-09)
