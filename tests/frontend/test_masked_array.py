"""numpy.ma.MaskedArray input.

softmax, log_softmax and logsumexp honour the mask as ``where=~mask`` (AND
with an explicit ``where``) and return plain arrays holding the values that
``where=False`` defines; every other function refuses a masked array, which
``numpy.asarray`` would turn into a plain array with the mask dropped.
"""

import numpy as np
import pytest

import softmaxkit as smk
from softmaxkit import kernels as _native

DATA = np.array([[1.0, 2.0, 3.0, -1.0], [0.5, np.nan, np.inf, 7.0], [4.0, 4.0, -2.0, 0.0]])
# masked entries hold NaN and +inf in the data: they must not reach the result
MASK = np.array([[False, True, False, False], [False, True, True, False], [True, True, True, True]])


@pytest.fixture(params=["native", "generic"])
def path(request):
    if request.param == "generic":
        with _native.disabled():
            yield request.param
    else:
        yield request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("func", [smk.softmax, smk.log_softmax, smk.logsumexp])
def test_mask_is_honoured_as_where(func, dtype, path):
    # the mask was dropped: masked entries took part in the sum
    m = np.ma.masked_array(DATA.astype(dtype), mask=MASK)
    got = func(m)
    want = func(DATA.astype(dtype), where=~MASK)
    assert type(got) is np.ndarray
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)


def test_masked_entry_took_part_in_softmax():
    # Regression: softmax(masked [[1, 2, 3]] with the 2 masked) ignored the mask and gave [0.090, 0.245, 0.665]
    m = np.ma.masked_array([[1.0, 2.0, 3.0]], mask=[[0, 1, 0]])
    p = smk.softmax(m)
    e = np.exp([1.0 - 3.0, 0.0])
    np.testing.assert_allclose(p, [[e[0] / e.sum(), 0.0, e[1] / e.sum()]], rtol=1e-15)


def test_fully_masked_row_has_the_where_false_values():
    m = np.ma.masked_array(DATA, mask=MASK)
    assert np.all(smk.softmax(m)[2] == 0)
    assert np.all(smk.log_softmax(m)[2] == -np.inf)
    assert smk.logsumexp(m)[2] == -np.inf
    out, sign = smk.logsumexp(m, return_sign=True)
    assert out[2] == -np.inf and sign[2] == 0


@pytest.mark.parametrize("func", [smk.softmax, smk.log_softmax, smk.logsumexp])
def test_explicit_where_combines_with_the_mask_by_and(func):
    where = np.array([True, True, False, True])
    m = np.ma.masked_array(DATA, mask=MASK)
    np.testing.assert_array_equal(func(m, where=where), func(DATA, where=~MASK & where))


@pytest.mark.parametrize("func", [smk.softmax, smk.log_softmax, smk.logsumexp])
def test_mask_along_another_axis_and_axis_tuples(func):
    m = np.ma.masked_array(DATA, mask=MASK)
    for axis in (0, (0, 1), None):
        np.testing.assert_array_equal(func(m, axis=axis), func(DATA, axis=axis, where=~MASK))


def test_masked_array_without_masked_entries_equals_plain_input(path):
    x = np.array([[0.0, 1.0, 2.0]], dtype=np.float32)
    m = np.ma.masked_array(x)
    np.testing.assert_array_equal(smk.softmax(m), smk.softmax(x))
    np.testing.assert_array_equal(smk.log_softmax(m, temperature=0.5), smk.log_softmax(x, temperature=0.5))


def test_logsumexp_weights_and_mask_together():
    b = np.array([1.0, 2.0, 0.5, 3.0])
    m = np.ma.masked_array(DATA, mask=MASK)
    np.testing.assert_array_equal(smk.logsumexp(m, b=b), smk.logsumexp(DATA, b=b, where=~MASK))


def test_temperature_with_mask():
    m = np.ma.masked_array(DATA, mask=MASK)
    np.testing.assert_array_equal(smk.softmax(m, temperature=3.0), smk.softmax(DATA, temperature=3.0, where=~MASK))


def test_masked_input_is_not_modified():
    m = np.ma.masked_array(DATA.copy(), mask=MASK.copy())
    smk.softmax(m)
    smk.log_softmax(m, where=np.ones(4, bool))
    smk.logsumexp(m, return_sign=True)
    np.testing.assert_array_equal(m.data, DATA)
    np.testing.assert_array_equal(m.mask, MASK)


def test_where_of_another_shape_is_refused_with_the_mask():
    m = np.ma.masked_array(DATA, mask=MASK)
    with pytest.raises(ValueError, match=r"where of shape \(3,\) does not broadcast to x of shape \(3, 4\)"):
        smk.softmax(m, where=np.ones(3, bool))
    with pytest.raises(TypeError, match="where must be a boolean array"):
        smk.softmax(m, where=np.ones(4))


X = np.array([[2.0, 0.5, -1.0]])
M = np.ma.masked_array(X, mask=[[False, True, False]])
T = np.array([0])
MT = np.ma.masked_array(T, mask=[False])


def _rng():
    return np.random.default_rng(0)


REFUSED = [
    ("logits", lambda: smk.cross_entropy(M, T)),
    ("targets", lambda: smk.cross_entropy(X, MT)),
    ("weight", lambda: smk.cross_entropy(X, T, weight=np.ma.masked_array(np.ones(3)))),
    ("log_probs", lambda: smk.nll_loss(M, T)),
    ("logits", lambda: smk.binary_cross_entropy_with_logits(M, np.zeros((1, 3)))),
    ("targets", lambda: smk.binary_cross_entropy_with_logits(X, np.ma.masked_array(np.zeros((1, 3))))),
    ("logits", lambda: smk.entropy(M)),
    ("p", lambda: smk.kl_div(M, X)),
    ("q", lambda: smk.kl_div(X, M)),
    ("probs", lambda: smk.softmax_vjp(M, X)),
    ("cotangent", lambda: smk.softmax_vjp(X, M)),
    ("log_probs", lambda: smk.log_softmax_vjp(M, X)),
    ("x", lambda: smk.logsumexp_vjp(M, np.ones(1))),
    ("x", lambda: smk.sigmoid(M)),
    ("x", lambda: smk.log_sigmoid(M)),
    ("x", lambda: smk.softplus(M)),
    ("x", lambda: smk.sparsemax(M)),
    ("x", lambda: smk.entmax15(M)),
    ("logits", lambda: smk.sample(M, rng=_rng())),
    ("logits", lambda: smk.gumbel_softmax(M, rng=_rng())),
    ("logits", lambda: smk.gumbel_max(M, np.zeros((1, 3)))),
    ("probs", lambda: smk.expected_calibration_error(M, T)),
    ("labels", lambda: smk.expected_calibration_error(X, MT)),
    ("logits", lambda: smk.fit_temperature(M, T)),
    ("b", lambda: smk.logsumexp(X, b=np.ma.masked_array(np.ones(3)))),
    ("where", lambda: smk.softmax(X, where=np.ma.masked_array(np.ones(3, bool)))),
]


@pytest.mark.parametrize("name, call", REFUSED, ids=[f"{i}-{n}" for i, (n, _) in enumerate(REFUSED)])
def test_functions_without_where_refuse_a_masked_array(name, call):
    # these silently dropped the mask (numpy.asarray) and computed with the masked entries
    with pytest.raises(TypeError, match=rf"^{name} is a numpy\.ma\.MaskedArray.*{name}\.filled\(value\).*where=~mask"):
        call()


def test_masked_array_with_nothing_masked_takes_the_native_path():
    # with no entry masked, the data goes on as a plain array (where=None), which the kernels accept
    from softmaxkit.frontend import validate as _validate

    x = np.ones((2, 3), dtype=np.float32)
    for m in (np.ma.masked_array(x), np.ma.masked_array(x, mask=np.zeros((2, 3), bool))):
        data, where = _validate.unmask(m, None)
        assert type(data) is np.ndarray and where is None
        assert _native.numpy_adapter.eligible(data, -1) == _native.active()
