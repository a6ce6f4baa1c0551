"""sample, gumbel_max and gumbel_softmax.

Frequencies are compared with exact probabilities by Pearson's chi-square
test; every test uses a fixed seed and requires p > 1e-4, so a correct
sampler fails one of these checks with probability about 1e-4 per test and,
with fixed seeds, deterministically never.  A wrong distribution (off by a
percent in one class at these draw counts) gives p far below 1e-4.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tests.reference.frequencies import chi_square_p

import softmaxkit as smk
from softmaxkit.frontend import random as _random

ALPHA = 1e-4


def exact_probs(logits, temperature=1.0):
    """softmax by its definition, in float64, for small well-scaled rows."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


def truncated(p, top_k=None, top_p=None, min_p=None):
    """The documented truncations, written out class by class (ties kept)."""
    p = np.asarray(p, dtype=np.float64)
    keep = p > 0
    if top_k is not None:
        kth = sorted(p, reverse=True)[min(top_k, len(p)) - 1]
        keep &= p >= kth
    if top_p is not None:
        q = np.where(keep, p, 0.0)
        q = q / q.sum()
        ranked = sorted(q, reverse=True)
        mass, last = 0.0, ranked[0]
        for value in ranked:
            if mass >= top_p:
                break
            mass += value
            last = value
        keep &= q >= last
    if min_p is not None:
        keep &= p >= min_p * p.max()
    q = np.where(keep, p, 0.0)
    return q / q.sum()


LOGITS = np.array([2.0, 1.2, 0.9, 0.1, -0.4, -1.3, -np.inf])


class TestSampleNumpy:
    def test_frequencies_match_softmax(self):
        draws = smk.sample(LOGITS, num_samples=200_000, rng=0)
        assert chi_square_p(draws, exact_probs(LOGITS)) > ALPHA

    @pytest.mark.parametrize("temperature", [0.5, 3.0])
    def test_frequencies_match_softmax_at_temperature(self, temperature):
        draws = smk.sample(LOGITS, temperature=temperature, num_samples=200_000, rng=1)
        assert chi_square_p(draws, exact_probs(LOGITS, temperature)) > ALPHA

    @pytest.mark.parametrize(
        ("truncation", "seed"),
        [
            ({"top_k": 3}, 21),
            ({"top_p": 0.75}, 22),
            ({"min_p": 0.3}, 23),
            ({"top_k": 5, "top_p": 0.95, "min_p": 0.06}, 24),
            # top_p on the distribution renormalised after top_k keeps 2
            # classes; on the original probabilities it would keep 3.
            ({"top_k": 3, "top_p": 0.8}, 25),
        ],
        ids=repr,
    )
    def test_truncated_frequencies(self, truncation, seed):
        # A seed per case: cases that keep the same classes would otherwise
        # reuse the same noise and give one piece of evidence, not several.
        T = 0.8
        expected = truncated(exact_probs(LOGITS, T), **truncation)
        draws = smk.sample(LOGITS, temperature=T, num_samples=200_000, rng=seed, **truncation)
        assert chi_square_p(draws, expected) > ALPHA

    def test_truncation_actually_truncates(self):
        # Guards the reference: each case above removes something.
        p = exact_probs(LOGITS, 0.8)
        for kw in ({"top_k": 3}, {"top_p": 0.75}, {"min_p": 0.3}):
            assert (truncated(p, **kw) == 0).sum() > 1
        assert (truncated(p, top_k=3, top_p=0.8) > 0).sum() == 2

    def test_batched_rows_are_independent_distributions(self):
        x = np.stack([LOGITS, LOGITS[::-1], np.zeros(7)])
        draws = smk.sample(x, num_samples=100_000, rng=3)
        assert draws.shape == (3, 100_000)
        for row, d in zip(x, draws):
            assert chi_square_p(d, exact_probs(row)) > ALPHA

    def test_plus_inf_entries_share_the_mass(self):
        x = np.array([np.inf, 3.0, np.inf, np.inf, -np.inf])
        draws = smk.sample(x, num_samples=60_000, rng=4)
        assert chi_square_p(draws, [1 / 3, 0, 1 / 3, 1 / 3, 0]) > ALPHA

    def test_shapes_and_dtype(self):
        x = np.zeros((2, 3, 5))
        assert smk.sample(x, rng=0).shape == (2, 3)
        assert smk.sample(x, num_samples=4, rng=0).shape == (2, 3, 4)
        assert smk.sample(x, axis=1, num_samples=4, rng=0).shape == (2, 5, 4)
        assert smk.sample(x, rng=0).dtype.kind == "i"
        assert smk.sample(np.zeros((0, 5)), rng=0).shape == (0,)

    def test_axis_moved_equals_moveaxis(self):
        x = np.random.default_rng(5).normal(size=(6, 4, 3))
        a = smk.sample(x, axis=0, num_samples=3, rng=7)
        b = smk.sample(np.moveaxis(x, 0, -1), num_samples=3, rng=7)
        np.testing.assert_array_equal(a, b)

    def test_seed_reproducible_and_generator_advances(self):
        a = smk.sample(LOGITS, num_samples=50, rng=11)
        np.testing.assert_array_equal(a, smk.sample(LOGITS, num_samples=50, rng=11))
        np.testing.assert_array_equal(a, smk.sample(LOGITS, num_samples=50, rng=np.random.default_rng(11)))
        gen = np.random.default_rng(11)
        first, second = smk.sample(LOGITS, num_samples=50, rng=gen), smk.sample(LOGITS, num_samples=50, rng=gen)
        assert not np.array_equal(first, second)

    def test_list_input(self):
        assert smk.sample([0.0, -np.inf, -np.inf], rng=0) == 0

    def test_no_write_back(self):
        x = LOGITS.copy()
        smk.sample(x, top_k=2, top_p=0.5, min_p=0.1, rng=0)
        np.testing.assert_array_equal(x, LOGITS)

    def test_greedy(self):
        x = np.array([[0.0, 3.0, 3.0, 1.0], [np.inf, 0.0, np.inf, 0.0], [-np.inf, -5.0, -np.inf, -6.0]])
        np.testing.assert_array_equal(smk.sample(x, temperature=0), [1, 0, 1])
        np.testing.assert_array_equal(smk.sample(x, temperature=0, top_k=1, top_p=0.1, min_p=1.0), [1, 0, 1])
        np.testing.assert_array_equal(smk.sample(x, temperature=0, num_samples=3), [[1, 1, 1], [0, 0, 0], [1, 1, 1]])

    @pytest.mark.parametrize("neutral", [{"top_k": 7}, {"top_k": 100}, {"top_p": 1.0}, {"min_p": 0.0}], ids=repr)
    def test_neutral_truncations_change_nothing(self, neutral):
        # Same seed, same noise: identical draws, including the classes of tiny probability.
        x = np.array([5.0, 0.0, -30.0, -60.0, 1.0, 2.0, -np.inf])
        np.testing.assert_array_equal(smk.sample(x, num_samples=500, rng=3, **neutral), smk.sample(x, num_samples=500, rng=3))

    def test_ties_at_top_k_boundary_are_kept(self):
        draws = smk.sample(np.array([1.0, 0.0, 0.0, -1.0]), top_k=2, num_samples=60_000, rng=9)
        p = exact_probs([1.0, 0.0, 0.0, -np.inf])
        assert chi_square_p(draws, p) > ALPHA

    def test_ties_at_top_p_boundary_are_kept(self):
        # Mass 1/3 before the second class is below 0.5, so two are needed; the third ties.
        draws = smk.sample(np.array([0.0, 0.0, 0.0, -1.0]), top_p=0.5, num_samples=60_000, rng=10)
        assert chi_square_p(draws, [1 / 3, 1 / 3, 1 / 3, 0]) > ALPHA

    def test_top_p_keeps_the_class_that_reaches_the_mass(self):
        # p = (0.5, 0.25, 0.125, 0.125): top_p = 0.49 is reached by the first class alone,
        # 0.6 needs the second too.  (At 0.5 itself the rounding of the logits decides:
        # see test_torch_sampling.py's boundary tests.)
        x = np.log(np.array([0.5, 0.25, 0.125, 0.125]))
        assert set(np.unique(smk.sample(x, top_p=0.49, num_samples=2000, rng=0))) == {0}
        assert set(np.unique(smk.sample(x, top_p=0.6, num_samples=2000, rng=0))) == {0, 1}

    def test_ties_at_min_p_boundary_are_kept(self):
        draws = smk.sample(np.array([0.0, 0.0, -1e-9]), min_p=1.0, num_samples=2000, rng=0)
        assert set(np.unique(draws)) == {0, 1}

    def test_fully_masked_row_raises(self):
        x = np.array([[0.0, 1.0], [-np.inf, -np.inf]])
        with pytest.raises(ValueError, match=r"logits row \[1\].*fully masked"):
            smk.sample(x, rng=0)
        with pytest.raises(ValueError, match="fully masked"):
            smk.sample(x, temperature=0)

    def test_empty_class_axis_raises(self):
        with pytest.raises(ValueError, match="fully masked"):
            smk.sample(np.zeros((2, 0)), rng=0)

    def test_nan_raises(self):
        with pytest.raises(ValueError, match=r"logits\[0, 1\] is NaN"):
            smk.sample(np.array([[0.0, np.nan]]), rng=0)

    def test_nan_from_extreme_temperature_is_never_a_draw(self):
        # NaN log-probabilities made from finite logits (an extreme
        # temperature) were drawn as class 0 every time.  The shifted, scaled
        # logits are never NaN: the row is computed right (class 1 at this
        # near-zero temperature, uniform at a huge one).
        x = np.array([0.0, 5.0, 1.0])
        draws = smk.sample(x, temperature=1e-300, num_samples=50, rng=0)
        assert (draws == 1).all(), np.bincount(draws)
        draws = smk.sample(x, temperature=1e300, num_samples=30_000, rng=1)
        assert chi_square_p(draws, [1 / 3] * 3) > ALPHA

    def test_huge_temperature_on_a_row_wider_than_the_largest_float(self):
        # x - max x overflows to -inf for logits 2e308 apart, but
        # (x - max x) / T is -2 at T = 1e308: the halves are subtracted.
        x = np.array([1e308, -1e308, -np.inf])
        draws = smk.sample(x, temperature=1e308, num_samples=30_000, rng=2)
        assert chi_square_p(draws, exact_probs([0.0, -2.0, -np.inf])) > ALPHA
        draws = smk.sample(np.stack([x, x]), temperature=[1e308, 1e307], num_samples=30_000, rng=3)
        assert chi_square_p(draws[0], exact_probs([0.0, -2.0, -np.inf])) > ALPHA
        assert (draws[1] == 0).all()

    def test_huge_num_samples_is_refused_by_name(self):
        # num_samples=2**100 raised NumPy's "Maximum allowed dimension
        # exceeded", which names no argument.
        with pytest.raises(ValueError, match=r"num_samples=1267650600228229401496703205376 .* too many"):
            smk.sample(LOGITS, num_samples=2**100, rng=0)

    @pytest.mark.parametrize(
        ("kwargs", "exc", "pattern"),
        [
            ({"temperature": -1.0}, ValueError, "temperature must be finite and >= 0.*-1.0"),
            ({"temperature": math.inf}, ValueError, "temperature.*inf"),
            ({"temperature": "1"}, TypeError, "temperature must be a real number"),
            ({"top_k": 0}, ValueError, "top_k must be an int >= 1.*got 0"),
            ({"top_k": 2.0}, TypeError, "top_k must be an int >= 1 \\(or None\\); got 2.0"),
            ({"top_p": 0.0}, ValueError, r"top_p must be in \(0, 1\].*0.0"),
            ({"top_p": 1.5}, ValueError, "top_p.*1.5"),
            ({"min_p": -0.1}, ValueError, r"min_p must be in \[0, 1\].*-0.1"),
            ({"num_samples": 0}, ValueError, "num_samples must be an int >= 1.*0"),
            ({"num_samples": True}, TypeError, "num_samples must be an int"),
            ({"rng": "seed"}, TypeError, "rng must be a numpy.random.Generator.*'seed'"),
            ({"rng": -3}, ValueError, "rng as a seed must be >= 0.*-3"),
            ({"rng": np.random.RandomState(0)}, TypeError, "rng must be"),
            ({"axis": 1}, ValueError, "axis=1 is out of range"),
        ],
    )
    def test_invalid_arguments(self, kwargs, exc, pattern):
        with pytest.raises(exc, match=pattern):
            smk.sample(LOGITS, **kwargs)


# One case per row: (temperature, top_k, top_p, min_p); top_k = 7 (all
# classes), top_p = 1 and min_p = 0 leave a row untruncated.
ROW_SETTINGS = [
    (0.5, 7, 1.0, 0.0),
    (0.8, 3, 1.0, 0.0),
    (0.8, 7, 0.75, 0.0),
    (1.0, 7, 1.0, 0.3),
    (0.8, 5, 0.95, 0.06),
    (0.8, 3, 0.8, 0.0),
    (2.0, 2, 0.5, 0.0),
    (0.0, 7, 1.0, 0.0),
]


def per_row_case():
    """LOGITS once per case, its classes rolled by the row number, and the four settings as arrays."""
    x = np.stack([np.roll(LOGITS, r) for r in range(len(ROW_SETTINGS))])
    return x, [np.array(column) for column in zip(*ROW_SETTINGS)]


def truncated_row(row, temperature, top_k, top_p, min_p):
    if temperature == 0:
        return np.eye(len(row))[np.argmax(row)]
    return truncated(exact_probs(row, temperature), top_k=top_k, top_p=top_p, min_p=min_p)


class TestPerRowNumpy:
    def test_frequencies(self):
        x, (T, k, p, m) = per_row_case()
        draws = smk.sample(x, temperature=T, top_k=k, top_p=p, min_p=m, num_samples=100_000, rng=30)
        assert draws.shape == (8, 100_000)
        for r, row in enumerate(x):
            assert chi_square_p(draws[r], truncated_row(row, T[r], k[r], p[r], m[r])) > ALPHA, r

    def test_frequencies_with_an_int_top_k(self):
        x, (T, _, p, m) = per_row_case()
        draws = smk.sample(x, temperature=T, top_k=4, top_p=p, min_p=m, num_samples=100_000, rng=31)
        for r, row in enumerate(x):
            assert chi_square_p(draws[r], truncated_row(row, T[r], 4, p[r], m[r])) > ALPHA, r

    @pytest.mark.parametrize("top_k", [None, 4])
    def test_equals_the_scalar_settings_row_by_row(self, top_k):
        # Same seed, same noise: row r is the draw with row r's settings as numbers.
        x, (T, _, p, m) = per_row_case()
        rows = smk.sample(x, temperature=T, top_k=top_k, top_p=p, min_p=m, num_samples=500, rng=32)
        for r in range(len(x)):
            one = smk.sample(x, temperature=float(T[r]), top_k=top_k, top_p=float(p[r]), min_p=float(m[r]), num_samples=500, rng=32)
            np.testing.assert_array_equal(rows[r], one[r], err_msg=f"row {r}")

    def test_top_k_array_equals_a_constant_array_row_by_row(self):
        # An array top_k sorts whole rows (an int top_k draws from its
        # candidates, with other noise): row r is the draw with k_r everywhere.
        x, (T, k, p, m) = per_row_case()
        rows = smk.sample(x, temperature=T, top_k=k, top_p=p, min_p=m, num_samples=500, rng=33)
        for r in range(len(x)):
            one = smk.sample(x, temperature=T, top_k=np.full(len(x), k[r]), top_p=p, min_p=m, num_samples=500, rng=33)
            np.testing.assert_array_equal(rows[r], one[r], err_msg=f"row {r}")

    def test_neutral_settings_change_nothing(self):
        x = np.stack([np.array([5.0, 0.0, -30.0, -60.0, 1.0, 2.0, -np.inf])] * 3)
        plain = smk.sample(x, num_samples=500, rng=3)
        neutral = {"top_k": np.array([7, 100, 7]), "top_p": np.ones(3), "min_p": np.zeros(3), "temperature": np.ones(3)}
        np.testing.assert_array_equal(smk.sample(x, num_samples=500, rng=3, **neutral), plain)

    def test_top_p_of_one_keeps_classes_below_the_rounding_of_the_mass(self, monkeypatch):
        # Class 3's weight e**-65 does not change the cumulative mass, yet
        # top_p = 1 keeps it, as number and in an array.  Noise that favours
        # it by 100 nats shows whether it was kept.
        from softmaxkit.frontend import sampling

        def favour_class_3(xp, backend, gen, shape, dtype, like):
            noise = np.zeros(shape, dtype=dtype)
            noise[..., 3] = 100.0
            return noise

        monkeypatch.setattr(sampling._random, "gumbel", favour_class_3)
        x = np.array([[5.0, 0.0, -30.0, -60.0, 1.0, 2.0, -np.inf]] * 2)
        for top_p, expected in [(None, [3, 3]), (1.0, [3, 3]), (np.ones(2), [3, 3]), ([1.0, 0.999], [3, 0])]:
            np.testing.assert_array_equal(smk.sample(x, top_p=top_p, rng=0), expected, err_msg=repr(top_p))

    def test_settings_broadcast_to_the_rows(self):
        # Logits (2, 5, 3) with the classes along axis 1: the rows are (2, 3).
        x = np.random.default_rng(4).normal(size=(2, 5, 3))
        T = np.array([[0.5], [2.0]])
        full = smk.sample(x, temperature=np.broadcast_to(T, (2, 3)), axis=1, num_samples=50, rng=5)
        np.testing.assert_array_equal(smk.sample(x, temperature=T, axis=1, num_samples=50, rng=5), full)
        np.testing.assert_array_equal(smk.sample(x, temperature=[0.5, 2.0, 1.0], axis=1, rng=6), smk.sample(x, temperature=np.array([[0.5, 2.0, 1.0]] * 2), axis=1, rng=6))
        np.testing.assert_array_equal(smk.sample(x, temperature=np.array(0.7), axis=1, rng=6), smk.sample(x, temperature=0.7, axis=1, rng=6))

    def test_greedy_rows(self):
        x = np.array([[0.0, 3.0, 3.0, 1.0], [np.inf, 0.0, np.inf, 0.0], [0.0, 0.1, 0.2, 0.3]])
        for top_k in (None, 2, np.array([1, 2, 4])):
            draws = smk.sample(x, temperature=[0.0, 0.0, 1.0], top_k=top_k, num_samples=400, rng=7)
            np.testing.assert_array_equal(draws[:2], [[1] * 400, [0] * 400])
            assert len(np.unique(draws[2])) == (2 if isinstance(top_k, int) else 4)

    @pytest.mark.parametrize(
        ("kwargs", "exc", "pattern"),
        [
            ({"temperature": [1.0, np.inf]}, ValueError, r"temperature must be finite and >= 0; got temperature\[1\] = inf"),
            ({"temperature": np.array([[1.0], [-0.5]])}, ValueError, r"temperature.*got temperature\[1, 0\] = -0.5"),
            ({"temperature": np.array(-1.0)}, ValueError, r"temperature must be finite and >= 0; got -1.0$"),
            ({"temperature": np.array([True, False])}, TypeError, "temperature must be a real floating or integer array; got dtype bool"),
            ({"top_k": np.array([2, 0])}, ValueError, r"top_k must be an int >= 1 \(or None\); got top_k\[1\] = 0"),
            ({"top_k": np.array([2.0, 3.0])}, TypeError, "top_k must be an int >= 1, an integer array or None; got an array of dtype float64"),
            ({"top_p": [0.5, 0.0]}, ValueError, r"top_p must be in \(0, 1\] or None; got top_p\[1\] = 0.0"),
            ({"top_p": [np.nan, 0.5]}, ValueError, r"top_p.*got top_p\[0\] = nan"),
            ({"min_p": [0.5, 1.5]}, ValueError, r"min_p must be in \[0, 1\]; got min_p\[1\] = 1.5"),
            ({"temperature": [1.0, 1.0, 1.0]}, ValueError, r"temperature of shape \(3,\) does not broadcast to the logits without the class axis of shape \(2,\)"),
        ],
    )
    def test_invalid_arrays(self, kwargs, exc, pattern):
        with pytest.raises(exc, match=pattern):
            smk.sample(np.zeros((2, 4)), rng=0, **kwargs)

    def test_array_of_another_kind_is_refused(self):
        torch = pytest.importorskip("torch")
        with pytest.raises(TypeError, match="temperature is a torch.Tensor, but the logits are of another kind"):
            smk.sample(np.zeros((2, 4)), temperature=torch.ones(2), rng=0)

    def test_gumbel_max_per_row_temperature(self):
        x = np.stack([LOGITS, np.roll(LOGITS, 2)])
        g = np.random.default_rng(8).gumbel(size=(100_000, 2, 7))
        draws = smk.gumbel_max(x, g, temperature=[0.7, 1.5])
        for r, T in enumerate((0.7, 1.5)):
            assert chi_square_p(draws[:, r], exact_probs(x[r], T)) > ALPHA
        np.testing.assert_array_equal(draws[:, 0], smk.gumbel_max(x, g, temperature=0.7)[:, 0])
        np.testing.assert_array_equal(smk.gumbel_max(x, g, temperature=[0.0, 1.5])[:, 0], np.zeros(100_000))


class TestGumbelNoise:
    def test_extreme_words_give_finite_noise(self, monkeypatch):
        # The words that would be U = 0 and U = 1 for a plain [0, 1) generator.
        words = np.array([[0, 0], [2**32 - 1, 2**32 - 1], [2**31, 0], [2**31 - 1, 2**32 - 1], [2**30, 0]], dtype=np.uint32)
        monkeypatch.setattr(_random, "_words", lambda backend, rng, shape, like: words)
        import array_api_compat.numpy as xp

        for dtype in (np.float64, np.float32):
            g = _random.gumbel(xp, None, None, (5,), dtype, None)
            assert g.dtype == dtype
            assert np.isfinite(g).all()
            assert g.max() > 43 and g.min() < -3.7

    def test_noise_is_standard_gumbel(self):
        import array_api_compat.numpy as xp

        g = _random.gumbel(xp, None, np.random.default_rng(0), (200_000,), np.float64, None)
        assert stats.kstest(g, stats.gumbel_r.cdf).pvalue > ALPHA


class TestGumbelMax:
    def test_frequencies(self):
        g = np.random.default_rng(0).gumbel(size=(200_000, len(LOGITS)))
        draws = smk.gumbel_max(LOGITS, g, temperature=0.7)
        assert draws.shape == (200_000,)
        assert chi_square_p(draws, exact_probs(LOGITS, 0.7)) > ALPHA

    def test_leading_axes_and_class_axis(self):
        x = np.random.default_rng(1).normal(size=(3, 5))
        g = np.random.default_rng(2).gumbel(size=(4, 3, 5))
        out = smk.gumbel_max(x, g, axis=0)
        assert out.shape == (4, 5)
        np.testing.assert_array_equal(out, np.argmax(smk.log_softmax(x, axis=0) + g, axis=1))

    def test_plus_inf_is_uniform_not_first(self):
        g = np.random.default_rng(3).gumbel(size=(30_000, 3))
        draws = smk.gumbel_max(np.array([np.inf, 0.0, np.inf]), g)
        assert chi_square_p(draws, [0.5, 0, 0.5]) > ALPHA

    def test_greedy_ignores_noise(self):
        g = np.random.default_rng(3).gumbel(size=(4, 3))
        np.testing.assert_array_equal(smk.gumbel_max(np.array([0.0, 2.0, 1.0]), g, temperature=0), [1, 1, 1, 1])

    def test_errors(self):
        x = np.zeros(3)
        with pytest.raises(ValueError, match=r"gumbel must be finite; got gumbel\[1\] = inf"):
            smk.gumbel_max(x, np.array([0.0, np.inf, 0.0]))
        with pytest.raises(ValueError, match=r"gumbel must have the shape of logits \(3,\)"):
            smk.gumbel_max(x, np.zeros((3, 2)))
        with pytest.raises(ValueError, match="fully masked"):
            smk.gumbel_max(np.full(3, -np.inf), np.zeros(3))


class TestGumbelSoftmaxNumpy:
    def test_soft_rows_are_distributions(self):
        x = np.array([[1.0, 2.0, -np.inf, 0.0]] * 100)
        y = smk.gumbel_softmax(x, tau=0.5, rng=0)
        np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-15)
        assert (y[:, 2] == 0).all() and (y >= 0).all()

    def test_hard_is_one_hot_sample_of_softmax(self):
        x = np.tile(LOGITS, (100_000, 1))
        y = smk.gumbel_softmax(x, tau=2.0, hard=True, rng=5)
        assert set(np.unique(y)) == {0.0, 1.0}
        np.testing.assert_array_equal(y.sum(axis=-1), 1.0)
        assert chi_square_p(y.argmax(axis=-1), exact_probs(LOGITS)) > ALPHA

    def test_hard_is_the_argmax_of_soft_with_the_same_noise(self):
        # Same seed, same noise.
        x = np.random.default_rng(0).normal(size=(50, 6))
        soft = smk.gumbel_softmax(x, tau=0.3, rng=9)
        hard = smk.gumbel_softmax(x, tau=0.3, hard=True, rng=9)
        np.testing.assert_array_equal(hard.argmax(-1), soft.argmax(-1))

    def test_edge_rows(self):
        x = np.array([[-np.inf, -np.inf, -np.inf], [np.nan, 0.0, 1.0], [np.inf, 0.0, np.inf]])
        for hard in (False, True):
            y = smk.gumbel_softmax(x, hard=hard, rng=0)
            np.testing.assert_array_equal(y[0], 0.0)
            assert np.isnan(y[1]).all()
            assert y[2, 1] == 0 and y[2].sum() == 1

    def test_dtype_and_axis(self):
        x = np.zeros((4, 3), dtype=np.float32)
        y = smk.gumbel_softmax(x, axis=0, rng=0)
        assert y.dtype == np.float32
        np.testing.assert_allclose(y.sum(axis=0), 1.0, rtol=1e-6)

    @pytest.mark.parametrize(("tau", "exc"), [(0.0, ValueError), (-1.0, ValueError), (math.nan, ValueError), (None, TypeError)])
    def test_invalid_tau(self, tau, exc):
        with pytest.raises(exc, match="tau"):
            smk.gumbel_softmax(np.zeros(3), tau=tau, rng=0)

    def test_invalid_hard(self):
        with pytest.raises(TypeError, match="hard must be True or False; got 1"):
            smk.gumbel_softmax(np.zeros(3), hard=1, rng=0)


class TestTorch:
    torch = pytest.importorskip("torch")

    def test_frequencies_with_truncation(self):
        torch = self.torch
        x = torch.tensor(LOGITS, dtype=torch.float32)
        gen = torch.Generator().manual_seed(0)
        draws = smk.sample(x, temperature=0.8, top_k=5, top_p=0.9, num_samples=50_000, rng=gen)
        assert isinstance(draws, torch.Tensor) and draws.dtype == torch.int64
        expected = truncated(exact_probs(LOGITS, 0.8), top_k=5, top_p=0.9)
        assert chi_square_p(draws.numpy(), expected) > ALPHA

    def test_per_row_settings(self):
        torch = self.torch
        x, (T, k, p, m) = per_row_case()
        draws = smk.sample(torch.tensor(x), temperature=torch.tensor(T), top_k=k, top_p=list(p), min_p=m, num_samples=50_000, rng=8)
        assert isinstance(draws, torch.Tensor) and draws.dtype == torch.int64
        for r, row in enumerate(x):
            assert chi_square_p(draws[r].numpy(), truncated_row(row, T[r], k[r], p[r], m[r])) > ALPHA, r
        with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\] or None; got top_p\[1\] = 1.5"):
            smk.sample(torch.zeros(2, 3), top_p=torch.tensor([0.5, 1.5]), rng=0)

    def test_reproducible_with_seed_and_global_generator(self):
        torch = self.torch
        x = torch.tensor(LOGITS)
        a = smk.sample(x, num_samples=100, rng=3)
        assert torch.equal(a, smk.sample(x, num_samples=100, rng=torch.Generator().manual_seed(3)))
        torch.manual_seed(4)
        b = smk.sample(x, num_samples=100)
        torch.manual_seed(4)
        assert torch.equal(b, smk.sample(x, num_samples=100))

    def test_rng_kind_is_checked(self):
        with pytest.raises(TypeError, match="rng must be a torch.Generator"):
            smk.sample(self.torch.zeros(3), rng=np.random.default_rng(0))

    def test_gumbel_softmax_gradients(self):
        torch = self.torch
        x = torch.tensor([[1.0, 2.0, -float("inf"), 0.5], [0.0, 0.0, 0.0, 3.0]], dtype=torch.float64, requires_grad=True)
        w = torch.tensor([[1.0, -2.0, 3.0, 0.5], [2.0, 1.0, -1.0, 0.0]], dtype=torch.float64)
        hard = smk.gumbel_softmax(x, tau=0.7, hard=True, rng=1)
        assert set(hard.detach().unique().tolist()) == {0.0, 1.0}
        (g_hard,) = torch.autograd.grad((hard * w).sum(), x)
        soft = smk.gumbel_softmax(x, tau=0.7, rng=1)
        (g_soft,) = torch.autograd.grad((soft * w).sum(), x)
        # Straight-through: the hard sample's gradient is the soft sample's.
        torch.testing.assert_close(g_hard, g_soft, rtol=0, atol=0)
        assert torch.isfinite(g_soft).all() and g_soft[0, 2] == 0 and g_soft.abs().sum() > 0
        # The soft gradient is softmax's, at the same noisy logits: y (w - <y, w>) / tau.
        y = soft.detach()
        torch.testing.assert_close(g_soft, y * (w - (y * w).sum(-1, keepdim=True)) / 0.7)


class TestJax:
    jax = pytest.importorskip("jax")
    # One logits shape and draw count throughout: eager JAX compiles each
    # primitive once per shape, and that dominates the run time.

    def draw(self, **kwargs):
        jnp = self.jax.numpy
        return smk.sample(jnp.asarray(LOGITS, dtype=jnp.float32), num_samples=50_000, **kwargs)

    def test_frequencies_with_min_p(self):
        draws = self.draw(min_p=0.15, rng=self.jax.random.key(0))
        assert isinstance(draws, self.jax.Array)
        assert chi_square_p(np.asarray(draws), truncated(exact_probs(LOGITS), min_p=0.15)) > ALPHA

    def test_key_is_required_and_reproducible(self):
        jax = self.jax
        with pytest.raises(TypeError, match="rng must be a jax.random key"):
            self.draw()
        with pytest.raises(TypeError, match="rng must be a jax.random key"):
            self.draw(rng=0)
        a = self.draw(rng=jax.random.key(1))
        np.testing.assert_array_equal(a, self.draw(rng=jax.random.key(1)))
        assert not np.array_equal(a, self.draw(rng=jax.random.key(2)))

    def test_gumbel_softmax_gradients(self):
        jax, jnp = self.jax, self.jax.numpy
        x = jnp.asarray([[1.0, 2.0, -jnp.inf, 0.5]])
        w = jnp.asarray([[1.0, -2.0, 3.0, 0.5]])
        key = jax.random.key(2)

        def loss(x, hard):
            return jnp.sum(smk.gumbel_softmax(x, tau=0.5, hard=hard, rng=key) * w)

        grad = jax.jit(jax.grad(loss), static_argnums=1)
        g_hard, g_soft = grad(x, True), grad(x, False)
        # Straight-through: the hard sample's gradient is the soft sample's.
        np.testing.assert_array_equal(g_hard, g_soft)
        assert np.isfinite(g_soft).all() and float(g_soft[0, 2]) == 0 and float(jnp.abs(g_soft).sum()) > 0
        y = jax.jit(lambda x: smk.gumbel_softmax(x, tau=0.5, hard=True, rng=key))(x)
        assert sorted(np.asarray(y).ravel().tolist()) == [0.0, 0.0, 0.0, 1.0]


class TestTruncate:
    def test_kept_classes_follow_the_documented_rule(self):
        T = 0.8
        for kw in ({"top_k": 3}, {"top_p": 0.75}, {"min_p": 0.3}, {"top_k": 5, "top_p": 0.95, "min_p": 0.06}, {"top_k": 3, "top_p": 0.8}):
            out = smk.truncate(LOGITS, temperature=T, **kw)
            expected = truncated(exact_probs(LOGITS, T), **kw)
            np.testing.assert_array_equal(np.isfinite(out), expected > 0, err_msg=repr(kw))
            # softmax of the result is the truncated distribution
            np.testing.assert_allclose(smk.softmax(out), expected, rtol=1e-13, atol=0, err_msg=repr(kw))

    def test_values_are_shifted_and_scaled_logits(self):
        out = smk.truncate(LOGITS, temperature=0.5)
        np.testing.assert_array_equal(out, (LOGITS - 2.0) / 0.5)

    def test_greedy_keeps_the_first_argmax(self):
        x = np.array([[0.0, 3.0, 3.0, 1.0], [np.inf, 0.0, np.inf, 0.0]])
        np.testing.assert_array_equal(smk.truncate(x, temperature=0), [[-np.inf, 0, -np.inf, -np.inf], [0, -np.inf, -np.inf, -np.inf]])
        out = smk.truncate(x, temperature=[0.0, 1.0])
        np.testing.assert_array_equal(out[0], [-np.inf, 0, -np.inf, -np.inf])
        np.testing.assert_array_equal(out[1], [0, -np.inf, 0, -np.inf])

    def test_dtype_axis_and_errors(self):
        x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
        out = smk.truncate(x, top_k=2, axis=0)
        assert out.dtype == np.float32 and out.shape == (3, 5)
        np.testing.assert_array_equal(out, smk.truncate(x.T, top_k=2).T)
        with pytest.raises(ValueError, match="fully masked"):
            smk.truncate(np.full(3, -np.inf))
        with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
            smk.truncate(x, top_p=0.0)

    def test_index_ties_keep_exactly_k(self):
        x = np.array([[1.0, 2.0, 2.0, 0.0, 2.0], [5.0, 1.0, 1.0, 1.0, -np.inf]])
        np.testing.assert_array_equal(np.isfinite(smk.truncate(x, top_k=2, top_k_ties="index")), [[0, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
        np.testing.assert_array_equal(np.isfinite(smk.truncate(x, top_k=2)), [[0, 1, 1, 0, 1], [1, 1, 1, 1, 0]])
        with pytest.raises(ValueError, match="top_k_ties must be one of 'keep', 'index'; got 'first'"):
            smk.truncate(x, top_k=2, top_k_ties="first")


class TestOptionsNumpy:
    def test_logprobs_are_the_truncated_log_probabilities(self):
        T, kw = 0.8, {"top_k": 5, "top_p": 0.9}
        idx, logq = smk.sample(LOGITS, temperature=T, num_samples=200, rng=5, return_logprobs=True, **kw)
        q = truncated(exact_probs(LOGITS, T), **kw)
        np.testing.assert_allclose(logq, np.log(q[idx]), rtol=1e-14)
        assert logq.dtype == np.float64 and idx.shape == logq.shape == (200,)

    def test_valid_instead_of_raising(self):
        x = np.array([[0.0, 1.0], [-np.inf, -np.inf], [np.nan, 0.0]])
        idx, valid = smk.sample(x, rng=0, return_valid=True)
        np.testing.assert_array_equal(valid, [True, False, False])
        np.testing.assert_array_equal(idx[1:], [-1, -1])
        with pytest.raises(TypeError, match="return_valid must be True or False; got 1"):
            smk.sample(x, rng=0, return_valid=1)

    def test_wide_rows_in_two_steps(self):
        # 200 classes: a block of 16, then a class in it; and the candidates of top_k.
        row = np.random.default_rng(6).normal(size=200) * 0.7
        draws = smk.sample(row, num_samples=50_000, rng=7)
        assert chi_square_p(draws, exact_probs(row)) > ALPHA
        draws = smk.sample(row, top_k=120, num_samples=50_000, rng=8)
        assert chi_square_p(draws, truncated(exact_probs(row), top_k=120)) > ALPHA
