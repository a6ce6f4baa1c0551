"""Bad input raises an exception whose message names the argument and the value."""

import contextlib
import re

import numpy as np
import pytest

import softmaxkit as smk

pytestmark = pytest.mark.usefixtures("numeric_path")

X = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 2.0]])


def _raises(exc, pattern, fn, *args, **kwargs):
    with pytest.raises(exc, match=pattern):
        fn(*args, **kwargs)


@pytest.mark.parametrize(
    "targets, pattern",
    [
        (np.array([0, 3]), r"targets\[1\] = 3 is not a class index: allowed 0 to 2, or ignore_index=-100"),
        (np.array([-1, 0]), r"targets\[0\] = -1 is not a class index"),
        (np.array([-7, 0]), r"targets\[0\] = -7"),
    ],
)
def test_out_of_range_or_negative_targets(targets, pattern):
    _raises(ValueError, pattern, smk.cross_entropy, X, targets)
    _raises(ValueError, pattern, smk.nll_loss, X, targets)


def test_ignore_index_is_not_an_error():
    smk.cross_entropy(X, np.array([5, 0]), ignore_index=5)


@pytest.mark.parametrize(
    "targets, pattern",
    [
        (np.array([0, 1, 2]), r"targets of class indices must have shape \(2,\).*got \(3,\)"),
        (np.ones((2, 4)), r"targets of probabilities must have the shape of logits \(2, 3\); got \(2, 4\)"),
    ],
)
def test_shape_mismatch(targets, pattern):
    _raises(ValueError, pattern, smk.cross_entropy, X, targets)


def test_other_shape_mismatches():
    _raises(ValueError, r"weight must have shape \(3,\).*got \(2,\)", smk.cross_entropy, X, np.array([0, 1]), weight=np.ones(2))
    _raises(ValueError, r"cotangent must have the shape of probs \(2, 3\); got \(3,\)", smk.softmax_vjp, X, np.ones(3))
    _raises(ValueError, r"cotangent must have shape \(2,\)", smk.logsumexp_vjp, X, np.ones(3))
    _raises(ValueError, r"b of shape \(4,\) does not broadcast to x of shape \(2, 3\)", smk.logsumexp, X, b=np.ones(4))
    _raises(ValueError, r"where of shape \(2,\) does not broadcast to x of shape \(2, 3\)", smk.softmax, X, where=np.ones(2, bool))
    _raises(ValueError, r"targets must have the shape of logits \(2, 3\); got \(3,\)", smk.binary_cross_entropy_with_logits, X, np.ones(3))
    _raises(ValueError, r"q must have the shape of p \(2, 3\); got \(1, 3\)", smk.kl_div, X, X[:1])


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), float("nan")])
def test_bad_temperature(value):
    _raises(ValueError, f"temperature must be finite and > 0; got {re.escape(repr(float(value)))}", smk.softmax, X, temperature=value)
    _raises(ValueError, "temperature must be finite and > 0", smk.log_softmax, X, temperature=value)


def test_temperature_of_the_wrong_type():
    _raises(TypeError, "temperature must be a real number; got 'hot'", smk.softmax, X, temperature="hot")


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_label_smoothing_outside_unit_interval(value):
    _raises(ValueError, rf"label_smoothing must be in \[0, 1\]; got {value}", smk.cross_entropy, X, np.array([0, 1]), label_smoothing=value)


def test_negative_probability_targets():
    q = np.array([[0.5, 0.5, 0.0], [0.2, -0.1, 0.9]])
    _raises(ValueError, r"targets must be non-negative probabilities; got targets\[1, 1\] = -0.1", smk.cross_entropy, X, q)


def test_unknown_reduction_lists_the_choices():
    pattern = "reduction must be one of 'none', 'mean', 'sum'; got 'avg'"
    _raises(ValueError, pattern, smk.cross_entropy, X, np.array([0, 1]), reduction="avg")
    _raises(ValueError, pattern, smk.nll_loss, X, np.array([0, 1]), reduction="avg")
    _raises(ValueError, pattern, smk.binary_cross_entropy_with_logits, X, np.zeros_like(X), reduction="avg")


@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.array([1 + 2j]), np.array([True, False]), [object()], "text"])
def test_non_numeric_input(bad):
    with pytest.raises(TypeError, match=r"^x must be"):
        smk.softmax(bad)
    with pytest.raises(TypeError, match=r"^logits must be"):
        smk.cross_entropy(bad, np.array([0]))


def test_non_numeric_targets():
    _raises(TypeError, "targets must hold integer class indices or floating probabilities; got dtype bool", smk.cross_entropy, X, np.array([True, False]))
    _raises(TypeError, "targets must hold integer class indices; got dtype float64", smk.nll_loss, X, np.array([0.0, 1.0]))


@pytest.mark.parametrize("axis", [2, -3])
def test_axis_out_of_range(axis):
    pattern = rf"axis={axis} is out of range for an array of 2 dimension\(s\); allowed: -2 to 1"
    for fn in (smk.softmax, smk.log_softmax, smk.logsumexp, smk.entropy):
        _raises(ValueError, pattern, fn, X, axis=axis)
    _raises(ValueError, pattern, smk.cross_entropy, X, np.array([0, 1]), axis=axis)


def test_axis_of_the_wrong_type():
    _raises(TypeError, "axis must be an int, a tuple of ints or None; got 1.5", smk.softmax, X, axis=1.5)
    _raises(TypeError, "axis must be an int; got None", smk.cross_entropy, X, np.array([0, 1]), axis=None)
    _raises(ValueError, r"axis has repeated axes: \(1, -1\)", smk.logsumexp, X, axis=(1, -1))


def test_bad_class_weight():
    _raises(ValueError, r"weight must be finite; got weight\[1\] = nan", smk.cross_entropy, X, np.array([0, 1]), weight=np.array([1.0, np.nan, 1.0]))


def test_bad_z_loss_and_flags():
    _raises(ValueError, "z_loss must be finite and >= 0; got -1.0", smk.cross_entropy, X, np.array([0, 1]), z_loss=-1)
    _raises(TypeError, "return_grad must be True or False; got 'yes'", smk.cross_entropy, X, np.array([0, 1]), return_grad="yes")
    _raises(TypeError, "ignore_index must be an int; got 1.0", smk.cross_entropy, X, np.array([0, 1]), ignore_index=1.0)


def test_bad_binary_targets_and_pos_weight():
    _raises(ValueError, r"targets must be probabilities in \[0, 1\]; got targets\[0, 2\] = 1.5", smk.binary_cross_entropy_with_logits, X, np.array([[0, 0, 1.5], [0, 0, 0]]))
    _raises(ValueError, r"pos_weight must be finite; got pos_weight\[0, 1\] = nan", smk.binary_cross_entropy_with_logits, X, np.zeros_like(X), pos_weight=np.array([1.0, np.nan, 1.0]))


def test_where_must_be_boolean():
    _raises(TypeError, "where must be a boolean array; got dtype float64", smk.softmax, X, where=np.ones_like(X))


def test_errors_survive_python_optimise_mode():
    import subprocess
    import sys

    code = "import softmaxkit as s\ntry:\n    s.softmax([1.0], temperature=0)\nexcept ValueError as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, check=True).stdout
    assert "temperature must be finite and > 0" in out


# Regression: a non-negative ignore_index with probability targets was
# silently unused by the NumPy and JAX front ends while softmaxkit.torch
# refused it as torch does; one rule now serves all three.
@pytest.mark.parametrize("route", ["numpy", "list", "generic"])
def test_ignore_index_with_probability_targets_is_refused(route):
    import softmaxkit

    x = np.zeros((2, 3))
    q = np.full((2, 3), 1 / 3)
    targets = q.tolist() if route == "list" else q
    with softmaxkit.kernels.disabled() if route == "generic" else contextlib.nullcontext():
        with pytest.raises(ValueError, match=r"ignore_index=1 cannot be used with probability targets"):
            smk.cross_entropy(x, targets, ignore_index=1)
        assert np.isfinite(smk.cross_entropy(x, targets, ignore_index=-1))


def test_ignore_index_with_probability_labels_is_refused_in_jax():
    jnp = pytest.importorskip("jax.numpy")
    import softmaxkit.jax as smj

    with pytest.raises(ValueError, match=r"ignore_index=0 cannot be used with probability targets"):
        smj.cross_entropy(jnp.zeros((2, 3)), jnp.full((2, 3), 1 / 3), ignore_index=0)
