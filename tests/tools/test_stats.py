"""tools.stats.array_stats: the range and non-finite counts that diagnose and watch report."""

import math

import numpy as np
import pytest

import softmaxkit as smk
from softmaxkit.tools.stats import ArrayStats, array_stats

inf, nan = math.inf, math.nan


@pytest.mark.parametrize(
    "values, expected",
    [
        ([1.0, -3.0, 2.0], ArrayStats(-3.0, 2.0, 3.0, 0, 0, 0)),
        ([[1.0, 5.0], [-2.0, 0.5]], ArrayStats(-2.0, 5.0, 5.0, 0, 0, 0)),
        ([-4.0, -1.0], ArrayStats(-4.0, -1.0, 4.0, 0, 0, 0)),
        ([nan, inf, -inf, inf, -7.0, 2.0], ArrayStats(-7.0, 2.0, 7.0, 1, 2, 1)),
        ([nan, -inf, nan], ArrayStats(None, None, None, 2, 0, 1)),
        ([], ArrayStats(None, None, None, 0, 0, 0)),
        (np.zeros((3, 0)), ArrayStats(None, None, None, 0, 0, 0)),
    ],
)
def test_known_figures(values, expected):
    assert array_stats(np.asarray(values, dtype=np.float64)) == expected


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32])
def test_figures_are_python_numbers_of_the_exact_values(dtype):
    x = np.array([3, -65504, 1, 7], dtype=dtype)
    s = array_stats(x)
    assert (s.min, s.max, s.abs_max) == (-65504.0, 7.0, 65504.0)
    assert all(type(f) is float for f in (s.min, s.max, s.abs_max))
    assert all(type(c) is int for c in (s.nan_count, s.posinf_count, s.neginf_count))


def test_torch_tensors_any_dtype_with_grad():
    torch = pytest.importorskip("torch")
    x = torch.tensor([1.5, -inf, nan, -2.5], dtype=torch.bfloat16, requires_grad=True)
    assert array_stats(x) == ArrayStats(-2.5, 1.5, 2.5, 1, 0, 1)


def test_jax_arrays():
    jnp = pytest.importorskip("jax.numpy")
    assert array_stats(jnp.array([inf, 4.0, -1.0])) == ArrayStats(-1.0, 4.0, 4.0, 0, 1, 0)


def test_diagnose_and_watch_report_the_same_figures():
    torch = pytest.importorskip("torch")
    from softmaxkit.torch import NonFiniteError, watch

    x = np.array([[nan, 2.0, -inf], [inf, -9.0, 1.0]])
    net = torch.nn.Identity()
    with pytest.raises(NonFiniteError) as info, watch(net):
        net(torch.tensor(x))
    (tensor,) = info.value.report.inputs
    report = smk.diagnose(x)
    expected = array_stats(x)
    assert expected == ArrayStats(-9.0, 2.0, 9.0, 1, 1, 1)
    for name in ("min", "max", "abs_max", "nan_count", "posinf_count", "neginf_count"):
        assert getattr(report, name) == getattr(tensor, name) == getattr(expected, name)
