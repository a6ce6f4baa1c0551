"""validate.count and validate.positive_finite: the shared checks of counts and positive numbers."""

import math
import sys

import numpy as np
import pytest

import softmaxkit as smk
from softmaxkit.frontend import validate as v


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(200)])
def test_count_accepts_ints_in_range_as_python_ints(value):
    n = v.count(value, "k", 1, 255)
    assert n == int(value) and type(n) is int


@pytest.mark.parametrize(
    "value, exc, message",
    [
        (True, TypeError, "k must be an int >= 1; got True"),
        (False, TypeError, "k must be an int >= 1; got False"),
        (np.bool_(True), TypeError, f"k must be an int >= 1; got {np.bool_(True)!r}"),
        (2.0, TypeError, "k must be an int >= 1; got 2.0"),
        (math.nan, TypeError, "k must be an int >= 1; got nan"),
        (math.inf, TypeError, "k must be an int >= 1; got inf"),
        ("3", TypeError, "k must be an int >= 1; got '3'"),
        (None, TypeError, "k must be an int >= 1; got None"),
        (0, ValueError, "k must be an int >= 1; got 0"),
        (-5, ValueError, "k must be an int >= 1; got -5"),
        (np.int64(-2), ValueError, "k must be an int >= 1; got -2"),
    ],
)
def test_count_refuses(value, exc, message):
    with pytest.raises(exc) as info:
        v.count(value, "k", 1)
    assert str(info.value) == message


@pytest.mark.parametrize("value", [-1, 11, 2**100])
def test_count_states_both_bounds_and_the_unit(value):
    with pytest.raises(ValueError) as info:
        v.count(value, "size", 0, 10, " (bytes)")
    assert str(info.value) == f"size must be an int in [0, 10] (bytes); got {value}"


def test_count_bounds_are_inclusive():
    assert v.count(0, "size", 0, 10) == 0
    assert v.count(10, "size", 0, 10) == 10
    assert v.count(sys.maxsize, "size", 0, sys.maxsize) == sys.maxsize


@pytest.mark.parametrize("value", [1e-300, 0.5, 3, np.float32(2.0), np.array(4.0)])
def test_positive_finite_accepts(value):
    x = v.positive_finite(value, "tau")
    assert x == float(value) and type(x) is float


@pytest.mark.parametrize(
    "value, exc, message",
    [
        (0.0, ValueError, "tau must be finite and > 0; got 0.0"),
        (-0.0, ValueError, "tau must be finite and > 0; got -0.0"),
        (-1, ValueError, "tau must be finite and > 0; got -1.0"),
        (math.nan, ValueError, "tau must be finite and > 0; got nan"),
        (math.inf, ValueError, "tau must be finite and > 0; got inf"),
        (-math.inf, ValueError, "tau must be finite and > 0; got -inf"),
        (True, TypeError, "tau must be a real number; got True"),
        ("1", TypeError, "tau must be a real number; got '1'"),
    ],
)
def test_positive_finite_refuses(value, exc, message):
    with pytest.raises(exc) as info:
        v.positive_finite(value, "tau")
    assert str(info.value) == message


# Each public argument below is checked by the shared rule, so each refuses
# bool and says what is allowed.
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: smk.sample(np.zeros(3), top_k=True, rng=0), "top_k must be an int >= 1 \\(or None\\); got True"),
        (lambda: smk.sample(np.zeros(3), num_samples=False, rng=0), "num_samples must be an int >= 1; got False"),
        (lambda: smk.expected_calibration_error(np.array([[1.0, 0.0]]), np.array([0]), n_bins=True), r"n_bins must be an int in \[1, 1000000\]; got True"),
        (lambda: smk.set_num_threads(True), r"n must be an int in \[1, 4096\]; got True"),
        (lambda: smk.set_output_cache(False), r"max_bytes must be an int in \[0, \d+\] \(bytes\); got False"),
    ],
)
def test_public_counts_refuse_bool(call, message):
    with pytest.raises(TypeError, match=message):
        call()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: smk.gumbel_softmax(np.zeros(3), tau=math.nan, rng=0), "tau must be finite and > 0; got nan"),
        (lambda: smk.fit_temperature(np.zeros((2, 3)), np.array([0, 1]), tol=math.inf), "tol must be finite and > 0; got inf"),
        (lambda: smk.softmax(np.zeros(3), temperature=-2.0), "temperature must be finite and > 0; got -2.0"),
    ],
)
def test_public_positive_numbers_refuse_nan_inf_and_negative(call, message):
    with pytest.raises(ValueError, match=message):
        call()
