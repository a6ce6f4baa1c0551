"""sample, gumbel_max and gumbel_softmax under jax.jit and jax.vmap, with per-row settings.

Frequencies of draws made under jit are compared with the exact truncated
distribution, computed here from its definition in 50-digit arithmetic
(mpmath), by Pearson's chi-square test with fixed keys and p > 1e-4 (see
tests/frontend/test_sampling.py).  Each jitted configuration compiles once
and most tests batch several cases as rows of one call, so that compilation
does not dominate the run time.
"""

from __future__ import annotations

import functools
import math

import mpmath
import numpy as np
import pytest
from scipy import stats

from tests.reference.frequencies import chi_square_p

jax = pytest.importorskip("jax")
jnp = jax.numpy

import softmaxkit as smk  # noqa: E402

ALPHA = 1e-4
DRAWS = 40_000
INF = math.inf
LOGITS = np.array([2.0, 1.2, 0.9, 0.1, -0.4, -1.3, -INF])

# One case per row: (temperature, top_k, top_p, min_p); the neutral values
# (top_k = C, top_p = 1, min_p = 0) leave a row untruncated.
C = len(LOGITS)
ROW_SETTINGS = [
    (0.5, C, 1.0, 0.0),
    (0.8, 3, 1.0, 0.0),
    (0.8, C, 0.75, 0.0),
    (1.0, C, 1.0, 0.3),
    (0.8, 5, 0.95, 0.06),
    # top_p on the distribution renormalised after top_k keeps 2 classes; on
    # the original probabilities it would keep 3.
    (0.8, 3, 0.8, 0.0),
    (2.0, 2, 0.5, 0.0),
    (0.0, C, 1.0, 0.0),
]


def rows_and_settings(cases=ROW_SETTINGS):
    """LOGITS once per case, its classes rolled by the row number, and the settings as arrays."""
    x = np.stack([np.roll(LOGITS, r) for r in range(len(cases))])
    columns = [np.array(column) for column in zip(*cases)]
    return x, columns


def reference(row, temperature=1.0, top_k=None, top_p=None, min_p=None):
    """The documented distribution of one row, from its definition in 50-digit arithmetic."""
    with mpmath.workdps(50):
        x = [mpmath.mpf(float(v)) for v in row]
        if temperature == 0:
            q = [mpmath.mpf(0)] * len(x)
            q[int(np.argmax(row))] = mpmath.mpf(1)
            return np.array([float(v) for v in q])
        a = max(x)
        w = [mpmath.exp((v - a) / mpmath.mpf(float(temperature))) for v in x]
        keep = [v > 0 for v in w]
        if top_k is not None:
            kth = sorted(w, reverse=True)[min(int(top_k), len(w)) - 1]
            keep = [k and v >= kth for k, v in zip(keep, w)]
        if top_p is not None:
            kept = sorted((v for k, v in zip(keep, w) if k), reverse=True)
            total, mass, last = sum(kept), mpmath.mpf(0), kept[0]
            for v in kept:
                if mass >= mpmath.mpf(float(top_p)) * total:
                    break
                mass, last = mass + v, v
            keep = [k and v >= last for k, v in zip(keep, w)]
        if min_p is not None:
            keep = [k and v >= mpmath.mpf(float(min_p)) * max(w) for k, v in zip(keep, w)]
        q = [v if k else mpmath.mpf(0) for k, v in zip(keep, w)]
        total = sum(q)
        return np.array([float(v / total) for v in q])


def jitted(**settings):
    """softmaxkit.sample jitted with ``settings`` as Python values (static); called as f(x, rng=key, ...)."""
    return jax.jit(functools.partial(smk.sample, **settings))


@functools.cache
def traced_sample(num_samples):
    """softmaxkit.sample jitted with the four settings as traced arguments."""

    def f(x, key, temperature, top_k, top_p, min_p):
        return smk.sample(x, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, num_samples=num_samples, rng=key)

    return jax.jit(f)


STATIC_SETTINGS = [
    {"temperature": 0.8, "top_k": 3},
    {"temperature": 0.8, "top_p": 0.75},
    {"temperature": 0.8, "top_k": 5, "top_p": 0.95, "min_p": 0.06},
]


class TestDistributionUnderJit:
    def test_static_settings(self):
        # One jitted function for the three configurations (one compilation),
        # a key per configuration so that their noise differs.
        x = jnp.asarray(LOGITS, dtype=jnp.float32)
        keys = jax.random.split(jax.random.key(1), len(STATIC_SETTINGS))
        f = jax.jit(lambda x, keys: [smk.sample(x, num_samples=DRAWS, rng=key, **s) for key, s in zip(keys, STATIC_SETTINGS)])
        for settings, draws in zip(STATIC_SETTINGS, f(x, keys)):
            assert draws.dtype == jnp.int32 and draws.shape == (DRAWS,)
            assert chi_square_p(draws, reference(LOGITS, **settings)) > ALPHA, settings

    def test_per_row_settings_sort_whole_rows(self):
        # An array top_k: every row takes the whole-row path.
        x, (T, k, p, m) = rows_and_settings()
        draws = traced_sample(DRAWS)(jnp.asarray(x, dtype=jnp.float32), jax.random.key(4), T, k, p, m)
        for r, row in enumerate(x):
            assert chi_square_p(draws[r], reference(row, T[r], k[r], p[r], m[r])) > ALPHA, r

    def test_per_row_settings_with_an_int_top_k_use_candidates(self):
        x, (T, _, p, m) = rows_and_settings()
        f = jax.jit(lambda x, key, T, p, m: smk.sample(x, temperature=T, top_k=4, top_p=p, min_p=m, num_samples=DRAWS, rng=key))
        draws = f(jnp.asarray(x, dtype=jnp.float32), jax.random.key(5), T, p, m)
        for r, row in enumerate(x):
            assert chi_square_p(draws[r], reference(row, T[r], 4, p[r], m[r])) > ALPHA, r

    def test_ties_beyond_the_candidates_are_kept(self):
        # Row 0 has four classes tied with the 2nd largest logit: the k = 2
        # candidates cannot hold them, and the call takes the whole-row path
        # (a lax.cond under jit) for both rows.
        x = np.array([[1.0, 0.0, 0.0, 0.0, 0.0, -1.0, -INF], [0.3, -0.2, 1.1, 0.5, -1.0, 0.0, 0.2]])
        draws = jitted(top_k=2, top_p=0.999, num_samples=DRAWS)(jnp.asarray(x, dtype=jnp.float32), rng=jax.random.key(6))
        for r, row in enumerate(x):
            assert chi_square_p(draws[r], reference(row, top_k=2, top_p=0.999)) > ALPHA, r
        assert set(np.unique(draws[0]).tolist()) == {0, 1, 2, 3, 4}

    def test_a_wrong_truncation_is_detected(self):
        # The power of the test above: the renormalisation before top_p
        # changes one class, and the chi-square test sees it.
        x, (T, k, p, m) = rows_and_settings()
        draws = traced_sample(DRAWS)(jnp.asarray(x, dtype=jnp.float32), jax.random.key(4), T, k, p, m)
        wrong_keep = (reference(x[5], T[5], top_k=k[5]) > 0) & (reference(x[5], T[5], top_p=p[5]) > 0)
        assert wrong_keep.sum() == 3 and (reference(x[5], T[5], k[5], p[5]) > 0).sum() == 2
        wrong = np.where(wrong_keep, reference(x[5], T[5]), 0.0)
        counts = np.bincount(np.asarray(draws[5]), minlength=C)
        assert stats.chisquare(counts[wrong_keep], wrong[wrong_keep] / wrong.sum() * DRAWS).pvalue < ALPHA
        # A temperature off by 5 % is seen as well.
        assert chi_square_p(draws[0], reference(x[0], T[0] * 1.05)) < ALPHA

    def test_vmap_over_keys(self):
        keys = jax.random.split(jax.random.key(7), DRAWS)
        x = jnp.asarray(LOGITS, dtype=jnp.float32)
        draws = jax.jit(jax.vmap(lambda key: smk.sample(x, temperature=0.8, top_k=3, top_p=0.9, rng=key)))(keys)
        assert draws.shape == (DRAWS,)
        assert chi_square_p(draws, reference(LOGITS, 0.8, 3, 0.9)) > ALPHA


class TestPerRowEqualsScalar:
    """A row drawn with arrays of settings is the same row drawn with its own settings as Python numbers."""

    X = np.stack([LOGITS, np.roll(LOGITS, 3), np.array([0.5, -0.1, 0.2, 1.5, 1.4, -2.0, 0.0])])
    T = np.array([0.5, 0.8, 1.3])
    TOP_P = np.array([0.6, 0.9, 1.0])
    MIN_P = np.array([0.0, 0.1, 0.05])

    @pytest.mark.parametrize("top_k", [None, 4])
    def test_temperature_top_p_min_p(self, top_k):
        rows = range(len(self.X))

        def per_row_and_scalars(x, key, T, p, m):
            per_row = smk.sample(x, temperature=T, top_k=top_k, top_p=p, min_p=m, num_samples=2000, rng=key)
            scalars = [
                smk.sample(
                    x,
                    temperature=float(self.T[r]),
                    top_k=top_k,
                    top_p=float(self.TOP_P[r]),
                    min_p=float(self.MIN_P[r]),
                    num_samples=2000,
                    rng=key,
                )
                for r in rows
            ]
            return per_row, scalars

        x = jnp.asarray(self.X, dtype=jnp.float32)
        per_row, scalars = jax.jit(per_row_and_scalars)(x, jax.random.key(8), self.T, self.TOP_P, self.MIN_P)
        for r in rows:
            np.testing.assert_array_equal(per_row[r], scalars[r][r], err_msg=f"row {r}")

    def test_top_k_array(self):
        # An array top_k takes the whole-row path: row r equals the draw with
        # top_k = k_r in every row.
        x, key = jnp.asarray(self.X, dtype=jnp.float32), jax.random.key(9)
        f = traced_sample(2000)
        k = np.array([1, 3, 6])
        rows = f(x, key, self.T, k, self.TOP_P, self.MIN_P)
        for r in range(len(self.X)):
            np.testing.assert_array_equal(rows[r], f(x, key, self.T, np.full(3, k[r]), self.TOP_P, self.MIN_P)[r])
        assert set(np.unique(rows[0]).tolist()) == {int(np.argmax(self.X[0]))}


class TestGreedy:
    X = np.array([[0.0, 3.0, 3.0, 1.0], [INF, 0.0, INF, 0.0], [-INF, -5.0, -INF, -6.0]])

    def test_scalar_zero_is_the_argmax(self):
        f = jitted(temperature=0, top_k=1, top_p=0.1, min_p=1.0, num_samples=3)
        np.testing.assert_array_equal(f(jnp.asarray(self.X), rng=jax.random.key(0)), [[1, 1, 1], [0, 0, 0], [1, 1, 1]])
        np.testing.assert_array_equal(jitted(temperature=0)(jnp.asarray(self.X), rng=jax.random.key(0)), [1, 0, 1])

    def test_rows_of_temperature_zero_take_their_argmax(self):
        x = np.concatenate([self.X, np.array([[0.0, 0.1, 0.2, 0.3]])])
        T = np.array([0.0, 0.0, 0.0, 1.0])
        draws = traced_sample(500)(jnp.asarray(x), jax.random.key(1), T, np.full(4, 4), np.ones(4), np.zeros(4))
        np.testing.assert_array_equal(draws[:3], np.broadcast_to(np.array([[1], [0], [1]]), (3, 500)))
        assert len(np.unique(draws[3])) == 4
        # The candidate path: the first candidate is the argmax.
        f = jax.jit(lambda x, key, T: smk.sample(x, temperature=T, top_k=2, num_samples=500, rng=key))
        draws = f(jnp.asarray(x), jax.random.key(1), T)
        np.testing.assert_array_equal(draws[:3], np.broadcast_to(np.array([[1], [0], [1]]), (3, 500)))
        assert set(np.unique(draws[3]).tolist()) == {2, 3}


class TestUndefinedRowsUnderTracing:
    """Under jit, rows with nothing to draw from give -1; concrete arrays raise as before."""

    X = np.array([[0.0, 1.0, 2.0, -1.0], [0.0, np.nan, 1.0, 1.0], [-INF, -INF, -INF, -INF]])

    SETTINGS = ({"temperature": 0}, {}, {"top_k": 2}, {"top_p": 0.9, "num_samples": 3}, {"top_k": 2, "min_p": 0.1, "num_samples": 3})

    def test_nan_and_fully_masked_rows_give_minus_one(self):
        x = jnp.asarray(self.X, dtype=jnp.float32)
        every = jax.jit(lambda x, key: [smk.sample(x, rng=key, **s) for s in self.SETTINGS])(x, jax.random.key(0))
        for settings, draws in zip(self.SETTINGS, every):
            draws = np.asarray(draws)
            assert (draws[1:] == -1).all(), settings
            assert (draws[0] >= 0).all() and (draws[0] < 4).all(), settings
            with pytest.raises(ValueError, match=r"logits\[1, 1\] is NaN"):
                smk.sample(x, rng=jax.random.key(0), **settings)
            with pytest.raises(ValueError, match=r"logits row \[1\] .*fully masked"):
                smk.sample(x[::2], rng=jax.random.key(0), **settings)

    def test_settings_out_of_range_give_minus_one(self):
        x = jnp.asarray(np.tile(self.X[0], (5, 1)), dtype=jnp.float32)
        T = np.array([1.0, -1.0, np.nan, 1.0, 1.0])
        k = np.array([4, 4, 4, 0, 4])
        p = np.array([0.5, 0.5, 0.5, 0.5, 1.5])
        draws = np.asarray(traced_sample(3)(x, jax.random.key(0), T, k, p, np.zeros(5)))
        assert (draws[1:] == -1).all() and (draws[0] >= 0).all()
        with pytest.raises(ValueError, match=r"temperature must be finite and >= 0; got temperature\[1\] = -1.0"):
            smk.sample(x, temperature=T, rng=jax.random.key(0))
        with pytest.raises(ValueError, match=r"top_k must be an int >= 1 \(or None\); got top_k\[3\] = 0"):
            smk.sample(x, top_k=k, rng=jax.random.key(0))

    def test_gumbel_max(self):
        x = jnp.asarray(self.X, dtype=jnp.float32)
        g = np.array(jax.random.gumbel(jax.random.key(1), (5, 3, 4)))
        g[4, 0, 3] = np.inf
        g[3, 0, 1] = np.nan
        f = jax.jit(smk.gumbel_max)
        draws = np.asarray(f(x, jnp.asarray(g)))
        assert (draws[:, 1:] == -1).all()
        np.testing.assert_array_equal(draws[3:, 0], [-1, -1])
        np.testing.assert_array_equal(draws[:3, 0], np.argmax(np.asarray(smk.log_softmax(x[0])) + g[:3, 0], axis=-1))
        # Temperature 0 ignores the noise, finite or not.
        greedy = jax.jit(lambda x, g, T: smk.gumbel_max(x, g, temperature=T))(x, jnp.asarray(g), jnp.array([0.0, 1.0, 1.0]))
        np.testing.assert_array_equal(np.asarray(greedy)[:, 0], np.full(5, 2))
        with pytest.raises(ValueError, match=r"gumbel must be finite; got gumbel\[3, 0, 1\] = nan"):
            smk.gumbel_max(x[:1], jnp.asarray(g[:, :1]))


class TestOtherFunctionsUnderJit:
    def test_gumbel_max_frequencies_with_per_row_temperature(self):
        x = np.stack([LOGITS, np.roll(LOGITS, 2)])
        T = jnp.array([0.7, 1.5])
        g = jax.random.gumbel(jax.random.key(10), (DRAWS, 2, C))
        draws = jax.jit(lambda x, g, T: smk.gumbel_max(x, g, temperature=T))(jnp.asarray(x, dtype=jnp.float32), g, T)
        assert draws.shape == (DRAWS, 2)
        for r in range(2):
            assert chi_square_p(draws[:, r], reference(x[r], float(T[r]))) > ALPHA

    def test_gumbel_softmax_hard_is_a_sample(self):
        key = jax.random.key(11)
        x = jnp.asarray(np.tile(LOGITS, (DRAWS, 1)), dtype=jnp.float32)
        y = np.asarray(jax.jit(lambda x, key: smk.gumbel_softmax(x, tau=0.5, hard=True, rng=key))(x, key))
        np.testing.assert_array_equal(y.sum(axis=-1), 1.0)
        assert set(np.unique(y).tolist()) == {0.0, 1.0}
        assert chi_square_p(y.argmax(axis=-1), reference(LOGITS)) > ALPHA


def test_raw_uint32_keys_and_reproducibility():
    x = jnp.asarray(LOGITS, dtype=jnp.float32)
    f = jitted(temperature=0.8, top_k=3, num_samples=100)
    a = f(x, rng=jax.random.PRNGKey(3))
    np.testing.assert_array_equal(a, f(x, rng=jax.random.PRNGKey(3)))
    assert not np.array_equal(a, f(x, rng=jax.random.PRNGKey(4)))
    with pytest.raises(TypeError, match="rng must be a jax.random key"):
        f(x, rng=3)


def test_random_words_are_threefry_on_counters():
    # One Threefry hash for two words: the words of jax.random.bits with
    # partitionable Threefry off; other key kinds go through jax.random.bits.
    from softmaxkit.backends.jax import entry
    from softmaxkit.frontend import random as _random

    key = jax.random.key(5)
    with jax.threefry_partitionable(False):
        expected = jax.random.bits(key, (3, 7, 2), dtype=jnp.uint32)
    np.testing.assert_array_equal(entry.random_words(key, (3, 7, 2), None), expected)
    rbg = jax.random.key(5, impl="rbg")
    np.testing.assert_array_equal(entry.random_words(rbg, (4,), None), jax.random.bits(rbg, (4,), dtype=jnp.uint32))
    noise = _random.gumbel(jnp, entry.BACKEND, key, (200_000,), jnp.float32, None)
    assert stats.kstest(np.asarray(noise, dtype=np.float64), stats.gumbel_r.cdf).pvalue > ALPHA


class TestOptionsUnderJit:
    """top_k_ties, return_logprobs, return_valid and truncate under jax.jit."""

    def test_wide_rows_and_options(self):
        # 300 classes: the two-step draw of whole rows (plain), the sorted
        # candidates (top_p) and exactly k by index, all in one compilation.
        rng = np.random.default_rng(0)
        row = rng.normal(size=300) * 0.7
        ties = np.concatenate([[3.0], np.full(4, 1.0), np.linspace(-2.0, 0.5, 295)])

        def f(x, t, key):
            k1, k2, k3 = jax.random.split(key, 3)
            plain = smk.sample(x, num_samples=DRAWS, rng=k1)
            nucleus, logq = smk.sample(x, top_p=0.9, num_samples=DRAWS, rng=k2, return_logprobs=True)
            exact_k = smk.sample(t, top_k=3, top_k_ties="index", num_samples=DRAWS, rng=k3)
            return plain, nucleus, logq, exact_k, smk.truncate(t, top_k=3, top_k_ties="index")

        plain, nucleus, logq, exact_k, kept = jax.jit(f)(jnp.asarray(row, dtype=jnp.float32), jnp.asarray(ties, dtype=jnp.float32), jax.random.key(12))
        row32 = np.asarray(row, dtype=np.float32)
        assert chi_square_p(plain, reference(row32)) > ALPHA
        q = reference(row32, top_p=0.9)
        assert chi_square_p(nucleus, q) > ALPHA
        np.testing.assert_allclose(np.asarray(logq[:50]), np.log(q[np.asarray(nucleus[:50])]), rtol=1e-6)
        assert np.isfinite(np.asarray(kept)).sum() == 3 and np.isfinite(np.asarray(kept))[[0, 1, 2]].all()
        counts = np.bincount(np.asarray(exact_k), minlength=300)
        assert set(np.flatnonzero(counts)) == {0, 1, 2}

    def test_valid_flags_rows_with_nothing_to_draw(self):
        x = jnp.asarray([[0.0, 1.0, 2.0], [0.0, jnp.nan, 1.0], [-jnp.inf] * 3])
        idx, logq, valid = jax.jit(lambda x, key: smk.sample(x, top_k=2, rng=key, return_logprobs=True, return_valid=True))(x, jax.random.key(0))
        np.testing.assert_array_equal(valid, [True, False, False])
        np.testing.assert_array_equal(np.asarray(idx)[1:], [-1, -1])
        assert np.isnan(np.asarray(logq)[1:]).all()
        # Concrete arrays: no ValueError with return_valid.
        idx, valid = smk.sample(x, rng=jax.random.key(0), return_valid=True)
        np.testing.assert_array_equal(valid, [True, False, False])
