"""Any single axis of a C-contiguous NumPy array goes to the native kernels.

The kernels reduce along the axis in place (see ``softmaxkit.kernels``), so
the front end hands them the axis instead of moving it.  Every result must be
bitwise that of the native path on ``np.moveaxis(x, axis, -1)`` (a
C-contiguous copy), moved back, and agree with the generic path within the
accuracy contract: softmax, log_softmax, logsumexp (keepdims, return_sign),
cross-entropy (class indices, probabilities, every reduction, the gradient)
and the softmax and log_softmax VJPs, in float16, bfloat16, float32 and
float64.
"""

import numpy as np
import pytest

import softmaxkit as smk
from softmaxkit import kernels as _native
from softmaxkit.kernels import numpy_adapter

from tests import reference as ref
from tests.reference import FLOAT_DTYPES
from tests.reference.ulps import _spacing

pytestmark = pytest.mark.skipif(not _native.active(), reason="native kernels not built or disabled")

DTYPE_IDS = [d.name for d in FLOAT_DTYPES]
# (shape, axis): first and middle axes, negative spellings, several axes
# after the reduced one, one class, rows wider than a tile; the last axis
# as a control.
CASES = [
    ((6, 5), 0),
    ((6, 5), -2),
    ((3, 5, 7), 0),
    ((3, 5, 7), 1),
    ((3, 5, 7), -2),
    ((2, 3, 4, 5), 1),
    ((2, 3, 4, 5), -2),
    ((4, 1, 6), 1),
    ((2, 40, 37), 1),
    ((3, 5, 7), -1),
]
CASE_IDS = [f"{'x'.join(map(str, s))}-axis{a}" for s, a in CASES]


def _inputs(shape, axis, dtype, seed=0):
    """Logits with IEEE specials along ``axis``, and what the calls below need besides."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    rows = np.moveaxis(x, axis, -1).reshape(-1, shape[axis])  # a view: rows along axis
    if rows.shape[0] >= 5 and rows.shape[1] >= 2:
        rows[0] = -np.inf  # fully masked
        rows[1, 0] = -np.inf  # one masked class
        rows[2, -1] = np.inf
        rows[3, 1] = np.nan
    rest = numpy_adapter._without(shape, axis)
    t = rng.integers(0, shape[axis], rest)
    t.reshape(-1)[::4] = -100
    finite = np.where(np.isfinite(x), x, 0).astype(dtype)
    with _native.disabled():
        # C-contiguous, as the kernels take them (the generic path's may be views)
        q = np.ascontiguousarray(smk.softmax(rng.standard_normal(shape).astype(dtype), axis=axis))
        p = np.ascontiguousarray(smk.softmax(finite, axis=axis))
        y = np.ascontiguousarray(smk.log_softmax(x, axis=axis))
    return {
        "x": x,
        "finite": finite,
        "q": q,
        "p": p,
        "y": y,
        "cot": rng.standard_normal(shape).astype(dtype),
        "t": t,
        "w": rng.uniform(0.5, 2.0, shape[axis]),
    }


# name: (call on the inputs and an axis, adapter entry it must reach)
CALLS = {
    "softmax": (lambda a, k: smk.softmax(a["x"], axis=k, temperature=1.5), "softmax"),
    "log_softmax": (lambda a, k: smk.log_softmax(a["x"], axis=k, temperature=0.7), "log_softmax"),
    "logsumexp": (lambda a, k: smk.logsumexp(a["x"], axis=k), "logsumexp"),
    "logsumexp_keepdims_sign": (lambda a, k: smk.logsumexp(a["x"], axis=k, keepdims=True, return_sign=True), "logsumexp"),
    "logsumexp_sign": (lambda a, k: smk.logsumexp(a["x"], axis=k, return_sign=True), "logsumexp"),
    "ce_index_none": (lambda a, k: smk.cross_entropy(a["x"], a["t"], axis=k, reduction="none", return_grad=True), "cross_entropy"),
    "ce_index_mean": (lambda a, k: smk.cross_entropy(a["finite"], a["t"], axis=k, weight=a["w"], return_grad=True), "cross_entropy"),
    "ce_index_sum": (
        lambda a, k: smk.cross_entropy(a["finite"], a["t"], axis=k, label_smoothing=0.1, z_loss=1e-3, reduction="sum", return_grad=True),
        "cross_entropy",
    ),
    "ce_index_loss": (lambda a, k: smk.cross_entropy(a["finite"], a["t"], axis=k), "cross_entropy"),
    "ce_probs_none": (lambda a, k: smk.cross_entropy(a["x"], a["q"], axis=k, reduction="none", return_grad=True), "cross_entropy"),
    "ce_probs_mean": (lambda a, k: smk.cross_entropy(a["finite"], a["q"], axis=k, return_grad=True), "cross_entropy"),
    "ce_probs_sum": (lambda a, k: smk.cross_entropy(a["finite"], a["q"], axis=k, reduction="sum", return_grad=True), "cross_entropy"),
    "softmax_vjp": (lambda a, k: smk.softmax_vjp(a["p"], a["cot"], axis=k), "softmax_vjp"),
    "log_softmax_vjp": (lambda a, k: smk.log_softmax_vjp(a["y"], a["cot"], axis=k), "log_softmax_vjp"),
}
ARRAYS_ALONG_AXIS = ("x", "finite", "q", "p", "y", "cot")


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


def _moved_reference(name, inputs, shape, axis):
    """``name`` through the native path on the inputs with ``axis`` moved last (C-contiguous copies), the outputs moved back."""
    moved = {k: np.moveaxis(v, axis, -1).copy() if k in ARRAYS_ALONG_AXIS else v for k, v in inputs.items()}
    out = _outputs(CALLS[name][0](moved, -1))
    # Outputs of the logits' rank (full arrays, keepdims) carry the axis last; per-row ones keep their order.
    return tuple(np.moveaxis(o, -1, axis) if np.ndim(o) == len(shape) else o for o in out)


@pytest.fixture
def adapter_calls(monkeypatch):
    """The adapter entries the front end calls, with the axis each one was given."""
    seen = []
    for entry in ("softmax", "log_softmax", "logsumexp", "softmax_vjp", "log_softmax_vjp", "cross_entropy"):
        real = getattr(numpy_adapter, entry)

        def spy(*args, _entry=entry, _real=real, **kwargs):
            seen.append((_entry, kwargs.get("axis", args[-1])))
            return _real(*args, **kwargs)

        monkeypatch.setattr(numpy_adapter, entry, spy)
    return seen


@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize("shape, axis", CASES, ids=CASE_IDS)
def test_the_native_kernels_get_the_axis(name, shape, axis, adapter_calls):
    inputs = _inputs(shape, axis, np.dtype(np.float32))
    CALLS[name][0](inputs, axis)
    assert adapter_calls == [(CALLS[name][1], axis % len(shape))]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape, axis", CASES, ids=CASE_IDS)
def test_bitwise_the_moved_axis(dtype, shape, axis):
    inputs = _inputs(shape, axis, dtype)
    for name, (call, _) in CALLS.items():
        got = _outputs(call(inputs, axis))
        want = _moved_reference(name, inputs, shape, axis)
        assert len(got) == len(want), name
        for g, w in zip(got, want):
            g, w = np.asarray(g), np.asarray(w)
            assert g.dtype == w.dtype and g.shape == w.shape, (name, g.shape, w.shape)
            assert g.tobytes() == w.tobytes(), name


def _same_specials(a, b, name):
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
    np.testing.assert_array_equal(a == np.inf, b == np.inf, err_msg=name)
    np.testing.assert_array_equal(a == -np.inf, b == -np.inf, err_msg=name)


def _within_scale(a, b, scale, dtype, name):
    """``|a - b|`` within twice the contract for a difference, in ULP of ``scale`` (the magnitudes that meet in it)."""
    a, b, scale = (np.asarray(v, dtype=np.float64) for v in np.broadcast_arrays(a, b, scale))
    _same_specials(a, b, name)
    finite = np.isfinite(a) & np.isfinite(b)
    bound = 2 * ref.difference_tolerance(dtype) * _spacing(np.abs(scale[finite]), dtype)
    assert np.all(np.abs(a[finite] - b[finite]) <= bound), name


def _gradient_scales(name, inputs, axis, reduction_divisor):
    """The magnitudes that meet in each gradient or VJP entry (float64, from the inputs)."""
    with _native.disabled():
        if name == "softmax_vjp":
            p, v = inputs["p"].astype(np.float64), inputs["cot"].astype(np.float64)
            return p * (np.abs(v) + np.sum(np.abs(p * v), axis=axis, keepdims=True))
        if name == "log_softmax_vjp":
            p, v = np.exp(inputs["y"].astype(np.float64)), inputs["cot"].astype(np.float64)
            return np.abs(v) + p * np.sum(np.abs(v), axis=axis, keepdims=True)
        # probability targets: max(C p_j, c_j), C = sum_j q_j
        x = inputs["finite"] if name != "ce_probs_none" else inputs["x"]
        p = smk.softmax(x.astype(np.float64), axis=axis)
        q = inputs["q"].astype(np.float64)
        return np.maximum(np.sum(q, axis=axis, keepdims=True) * p, q) / reduction_divisor


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape, axis", CASES, ids=CASE_IDS)
def test_the_generic_path_agrees_within_the_contract(dtype, shape, axis):
    inputs = _inputs(shape, axis, dtype)
    rows = inputs["x"].size // shape[axis]
    for name, (call, _) in CALLS.items():
        native = _outputs(call(inputs, axis))
        with _native.disabled():
            generic = _outputs(call(inputs, axis))
        assert len(native) == len(generic), name
        for i, (a, b) in enumerate(zip(native, generic)):
            a, b = np.asarray(a), np.asarray(b)
            assert a.dtype == b.dtype and a.shape == b.shape, (name, a.shape, b.shape)
            cancels = name in ("softmax_vjp", "log_softmax_vjp") or (name.startswith("ce_probs") and i == 1)
            if cancels:
                divisor = rows if name == "ce_probs_mean" else 1
                _within_scale(a, b, _gradient_scales(name, inputs, axis, divisor), dtype, name)
            elif name == "ce_index_sum" and i == 1:
                # smoothing and z-loss: a difference, of at most the row weight (1) times p or the coefficient
                _within_scale(a, b, 1.0, dtype, name)
            else:
                _same_specials(a.astype(np.float64), b.astype(np.float64), name)
                assert ref.ulp_distance(a, b, dtype) <= 2 * ref.tolerance(dtype), (name, i)


FAMILY = ("softmax", "log_softmax", "logsumexp", "logsumexp_keepdims_sign")


# An empty class axis and no rows, for the entries that take them (cross-entropy
# needs a class and goes to the generic path's error).
@pytest.mark.parametrize("shape, axis", [((0, 3), 0), ((2, 0, 3), 1), ((3, 0, 4), 0), ((2, 3, 0), -2)])
def test_empty_axes(shape, axis, adapter_calls):
    x = np.zeros(shape, np.float32)
    inputs = {"x": x, "p": x, "y": x, "cot": x}
    for name in FAMILY + ("softmax_vjp", "log_softmax_vjp"):
        adapter_calls.clear()
        got = _outputs(CALLS[name][0](inputs, axis))
        assert adapter_calls == [(CALLS[name][1], axis % len(shape))], name
        with _native.disabled():
            want = _outputs(CALLS[name][0](inputs, axis))
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape and g.tobytes() == w.tobytes(), name


@pytest.mark.parametrize("axis", [1, -1, 2, 0])
def test_eligible_takes_one_int_axis_in_range(axis):
    x = np.zeros((2, 3), np.float32)
    assert numpy_adapter.eligible(x, axis) == (-2 <= axis < 2)


@pytest.mark.parametrize("axis", [True, False, (0,), (0, 1), None, 0.0])
def test_eligible_refuses_other_axes(axis):
    assert not numpy_adapter.eligible(np.zeros((2, 3), np.float32), axis)


def test_eligible_refuses_a_scalar_and_other_layouts():
    x = np.zeros((4, 6), np.float32)
    assert not numpy_adapter.eligible(np.float32(1.0)[()], 0)
    assert not numpy_adapter.eligible(np.zeros((), np.float32), 0)
    assert not numpy_adapter.eligible(np.asfortranarray(x), 0)
    assert not numpy_adapter.eligible(x[:, ::2], 0)
    assert numpy_adapter.eligible(x[1:3], 0)


def test_cross_entropy_inputs_follow_the_class_axis():
    logits = np.zeros((4, 3, 5), np.float32)
    # class indices: the logits' shape without the class axis
    assert numpy_adapter.cross_entropy_inputs(logits, np.zeros((3, 5), int), 0, None, -100) is not None
    assert numpy_adapter.cross_entropy_inputs(logits, np.zeros((4, 5), int), 1, None, -100) is not None
    assert numpy_adapter.cross_entropy_inputs(logits, np.zeros((4, 5), int), 0, None, -100) is None
    # probabilities: the logits' shape (and dtype)
    q = np.full(logits.shape, 0.25, np.float32)
    assert numpy_adapter.cross_entropy_inputs(logits, q, 0, None, -100) is not None
    assert numpy_adapter.cross_entropy_inputs(logits, q[:, :2], 0, None, -100) is None
    # class weights: one per class along the axis
    assert numpy_adapter.cross_entropy_inputs(logits, np.zeros((3, 5), int), 0, np.ones(4), -100) is not None
    assert numpy_adapter.cross_entropy_inputs(logits, np.zeros((3, 5), int), 0, np.ones(5), -100) is None


def test_errors_along_an_axis_are_the_generic_paths():
    # a bad axis or a bad target still raises the generic path's error
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"axis=2 is out of range"):
        smk.softmax(x, axis=2)
    for weight in (None, np.ones(4)):
        with pytest.raises(ValueError, match=r"^targets\[2\] = 4 is not a class index: allowed 0 to 3"):
            smk.cross_entropy(x, np.array([0, 1, 4]), axis=0, weight=weight)
