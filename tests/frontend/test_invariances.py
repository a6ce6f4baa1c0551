"""Invariances: shift, normalisation, log/softmax agreement, masks, axes,
and class indices against one-hot probabilities (temperature: test_temperature.py)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import softmaxkit as smk
from softmaxkit import kernels as _native

from tests.reference import ulp_distance

pytestmark = pytest.mark.usefixtures("numeric_path")

finite = st.floats(-50, 50, allow_nan=False, width=32)


def rows(min_width=1, max_width=20):
    return st.tuples(st.integers(1, 4), st.integers(min_width, max_width)).flatmap(
        lambda shape: arrays(np.float32, shape, elements=finite)
    )


@given(x=rows(), shift=st.integers(-1000, 1000))
def test_shift_invariance(x, shift):
    # Integers up to 1000 added to floats in [-50, 50] with a 2^-8 grid stay exact.
    x = np.round(x * 256) / 256
    shifted = x + np.float32(shift)
    assert np.array_equal(x + np.float32(shift) - np.float32(shift), x)
    np.testing.assert_array_equal(smk.softmax(shifted), smk.softmax(x))
    np.testing.assert_array_equal(smk.log_softmax(shifted), smk.log_softmax(x))
    np.testing.assert_array_equal(smk.cross_entropy(shifted, np.zeros(len(x), int), reduction="none"), smk.cross_entropy(x, np.zeros(len(x), int), reduction="none"))


@given(x=rows())
def test_rows_sum_to_one(x):
    p = smk.softmax(x).astype(np.float64)
    n = x.shape[1]
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=n * 2 * np.finfo(np.float32).eps)


@given(x=rows())
def test_log_softmax_is_log_of_softmax_where_representable(x):
    p = smk.softmax(x)
    ls = smk.log_softmax(x)
    normal = p >= np.finfo(np.float32).tiny
    # log of a correctly rounded p is within about eps of the exact log p.
    err = np.abs(np.log(p[normal].astype(np.float64)) - ls[normal].astype(np.float64))
    assert np.all(err <= 2 * np.finfo(np.float32).eps + 2 * np.spacing(np.abs(ls[normal])))


@given(x=rows(min_width=2), data=st.data())
def test_mask_equals_slice(x, data):
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=x.shape[1], max_size=x.shape[1])))
    keep[data.draw(st.integers(0, x.shape[1] - 1))] = True
    # x[:, keep] comes out column-major; C order keeps both sides of the
    # last comparison on the same path (native or generic), whose results are
    # each bitwise invariant.  The two paths may round a value within 2^-7 ULP of a
    # halfway point differently (regression: a float32 row [6, 10, 0 x 7]).
    sliced = np.ascontiguousarray(x[:, keep])
    # where= runs the generic formulas
    with _native.disabled():
        want = [smk.softmax(sliced), smk.log_softmax(sliced), smk.logsumexp(sliced)]
    np.testing.assert_array_equal(smk.softmax(x, where=keep)[:, keep], want[0])
    np.testing.assert_array_equal(smk.log_softmax(x, where=keep)[:, keep], want[1])
    np.testing.assert_array_equal(smk.logsumexp(x, where=keep), want[2])
    masked = np.where(keep, x, -np.inf)
    np.testing.assert_array_equal(smk.softmax(masked)[:, keep], smk.softmax(sliced))


@given(x=arrays(np.float64, (3, 4, 5), elements=st.floats(-30, 30)), axis=st.integers(-3, 2))
def test_axis_moved_equals_moveaxis(x, axis):
    # A C-contiguous copy of the moved array: both sides on the same path
    # (the native kernels take any axis of a C-contiguous array).
    last = np.ascontiguousarray(np.moveaxis(x, axis, -1))
    for fn in (smk.softmax, smk.log_softmax):
        expected = np.moveaxis(fn(last), -1, axis)
        np.testing.assert_array_equal(fn(x, axis=axis), expected)
    np.testing.assert_array_equal(smk.logsumexp(x, axis=axis), smk.logsumexp(last))
    np.testing.assert_array_equal(smk.logsumexp(x, axis=axis, keepdims=True), np.expand_dims(smk.logsumexp(last), axis))
    t = np.zeros(np.delete(x.shape, axis % 3), dtype=int)
    np.testing.assert_array_equal(
        smk.cross_entropy(x, t, axis=axis, reduction="none"),
        smk.cross_entropy(last, t, reduction="none"),
    )


@given(x=arrays(np.float64, (2, 3, 4), elements=st.floats(-30, 30)))
def test_several_axes_equal_the_flattened_axis(x):
    # Several axes take the generic path; the flattened last axis may take the
    # native kernels.  Each is within 4 ULP of the exact value, so they are
    # within 8 ULP of each other (regression: 5 ULP apart on a row of -2.75s).
    flat = x.reshape(2, 12)
    assert ulp_distance(smk.softmax(x, axis=(1, 2)), smk.softmax(flat).reshape(2, 3, 4), np.float64) <= 8
    assert ulp_distance(smk.logsumexp(x, axis=(1, 2)), smk.logsumexp(flat), np.float64) <= 8
    assert ulp_distance(smk.logsumexp(x, axis=None), smk.logsumexp(x.reshape(-1)), np.float64) <= 8


@given(x=rows(), data=st.data(), eps=st.sampled_from([0.0, 0.3]))
def test_class_indices_equal_one_hot_probabilities(x, data, eps):
    n = x.shape[1]
    t = np.array([data.draw(st.integers(0, n - 1)) for _ in range(len(x))])
    one_hot = np.eye(n, dtype=np.float32)[t]
    a_loss, a_grad = smk.cross_entropy(x, t, label_smoothing=eps, return_grad=True)
    b_loss, b_grad = smk.cross_entropy(x, one_hot, label_smoothing=eps, return_grad=True)
    np.testing.assert_allclose(a_loss, b_loss, rtol=2e-7)
    np.testing.assert_allclose(a_grad, b_grad, rtol=2e-7, atol=1e-30)


@given(x=rows())
def test_nll_of_log_softmax_equals_cross_entropy(x):
    t = np.zeros(len(x), dtype=int)
    np.testing.assert_allclose(smk.nll_loss(smk.log_softmax(x), t), smk.cross_entropy(x, t), rtol=2e-7)


@given(x=rows())
def test_kl_of_a_distribution_with_itself_is_zero_and_entropy_is_bounded(x):
    assert np.all(smk.kl_div(x, x) == 0)
    h = smk.entropy(x)
    assert np.all(h >= 0) and np.all(h <= np.log(x.shape[1]) * (1 + 1e-6))
