"""softmaxkit.conformal: coverage, agreement with the published formulas and MAPIE, edges and errors."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

import softmaxkit as smk
from softmaxkit import conformal
from softmaxkit.tools import conformal as conformal_impl

RAPS = {"lam": 0.2, "k_reg": 1}  # a penalty that changes the sets on 8 classes
CONFIGS = [
    pytest.param("lac", False, {}, id="lac"),
    pytest.param("aps", False, {}, id="aps"),
    pytest.param("aps", True, {}, id="aps-randomized"),
    pytest.param("raps", False, RAPS, id="raps"),
    pytest.param("raps", True, RAPS, id="raps-randomized"),
]


def synthetic(rows, classes=8, seed=0):
    """Labels drawn from the known probabilities softmax(z); the model reports 2 z (over-confident).

    Row scales from 0.3 to 4 mix near-uniform and confident rows.
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(rows, classes)) * rng.uniform(0.3, 4.0, size=(rows, 1))
    return 2.0 * z, smk.sample(z, rng=rng)


def exact_rank(alpha, n):
    """ceil((n + 1)(1 - alpha)) for the decimal alpha, in rational arithmetic."""
    return math.ceil((n + 1) * (1 - Fraction(str(alpha))))


# -- the guarantee ---------------------------------------------------------------

# Per-split tail probability of the exact band, and the z-score of the mean
# test: with about 10^4 split checks and 20 mean checks in this file, a
# correct implementation fails with probability below 1e-5.
BAND_TAIL = 1e-10
Z = 6.0
REGIMES = [
    # n calibration rows, m test rows, splits, alpha.  n = 10 makes the
    # finite-sample correction visible (k/(n+1) = 10/11 against 9/11 without
    # it); n = 99 has k/(n+1) = 1 - alpha exactly.
    pytest.param(10, 50, 1000, 0.1, id="n10"),
    pytest.param(99, 100, 300, 0.2, id="n99"),
]


def covered_counts(score, randomized, kwargs, n, m, splits, alpha, seed=1):
    """Labels covered in each of ``splits`` disjoint calibration/test splits of i.i.d. rows."""
    logits, labels = synthetic(splits * (n + m), seed=seed)
    counts = np.empty(splits, dtype=np.int64)
    for i in range(splits):
        block = slice(i * (n + m), (i + 1) * (n + m))
        x, y = logits[block], labels[block]
        cal = conformal.calibrate(x[:n], y[:n], alpha, score=score, randomized=randomized, rng=2 * i, **kwargs)
        sets = cal.predict_sets(x[n:], rng=2 * i + 1)
        counts[i] = sets[np.arange(m), y[n:]].sum()
    return counts


def assert_exact_coverage(counts, n, m, alpha):
    """The conformal guarantee with its exact distribution.

    With scores almost surely distinct, the coverage given the calibration
    rows is Beta(k, n + 1 - k) with k = ceil((n + 1)(1 - alpha)), so the
    labels covered among m test rows follow BetaBinomial(m, k, n + 1 - k):
    every split must lie in its central band of probability 1 - 2e-10, and
    the mean coverage over the splits (expected k / (n + 1) >= 1 - alpha)
    within Z standard errors of k / (n + 1), hence at least 1 - alpha - Z se.
    The non-randomised APS and RAPS tie every label ranked last at one score,
    which can only raise the coverage; on this data (1.2 % of labels ranked
    last) by about 0.001, a third of the standard error at n = 10.
    """
    k = exact_rank(alpha, n)
    a, b = k, n + 1 - k
    low, high = stats.betabinom.ppf(BAND_TAIL, m, a, b), stats.betabinom.isf(BAND_TAIL, m, a, b)
    assert low <= counts.min() and counts.max() <= high, (low, counts.min(), counts.max(), high)
    mean = counts.mean() / m
    se = math.sqrt(stats.betabinom.var(m, a, b) / len(counts)) / m
    assert abs(mean - k / (n + 1)) <= Z * se, (mean, k / (n + 1), se)
    assert mean >= 1 - alpha - Z * se


@pytest.mark.parametrize("n, m, splits, alpha", REGIMES)
@pytest.mark.parametrize("score, randomized, kwargs", CONFIGS)
def test_coverage_follows_the_exact_distribution(score, randomized, kwargs, n, m, splits, alpha):
    assert_exact_coverage(covered_counts(score, randomized, kwargs, n, m, splits, alpha), n, m, alpha)


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(lambda alpha, n: math.ceil(n * (1 - alpha)), id="no-finite-sample-correction"),
        pytest.param(lambda alpha, n: math.ceil((n + 1) * (1 - alpha / 2)), id="alpha-over-2"),
    ],
)
@pytest.mark.parametrize("score, randomized, kwargs", [CONFIGS[0], CONFIGS[2]])
def test_the_coverage_test_catches_a_wrong_quantile(monkeypatch, wrong, score, randomized, kwargs):
    # The test above has power: under-coverage (9/11) and over-coverage (1) both fail it.
    monkeypatch.setattr(conformal_impl, "_rank", wrong)
    n, m, splits, alpha = REGIMES[0].values
    counts = covered_counts(score, randomized, kwargs, n, m, splits, alpha)
    with pytest.raises(AssertionError):
        assert_exact_coverage(counts, n, m, alpha)


# -- the formulas ----------------------------------------------------------------


def reference_sets(cal_p, cal_y, test_p, alpha, score, u_cal, u_test, lam=0.0, k_reg=0):
    """The published scores, one row and class at a time in Python floats.

    LAC 1 - p_y (Sadinle et al. 2019); APS: the mass ranked before y plus
    U p_y (Romano et al. 2020; U = 1 without randomisation); RAPS adds
    lam (rank - k_reg)^+ (Angelopoulos et al. 2021).  Ranks by decreasing
    probability, ties to the lower index; q is the k-th smallest
    calibration score (inf when k > n); a set is {y : s(x, y) <= q}.
    """

    def score_of(p, y, u):
        if score == "lac":
            return 1.0 - p[y]
        order = sorted(range(len(p)), key=lambda j: (-p[j], j))
        rank = order.index(y)
        return sum(p[j] for j in order[:rank]) + u * p[y] + lam * max(0, rank + 1 - k_reg)

    scores = sorted(score_of(list(p), y, u) for p, y, u in zip(cal_p, cal_y, u_cal))
    k = exact_rank(alpha, len(scores))
    q = scores[k - 1] if k <= len(scores) else math.inf
    return np.array([[score_of(list(p), y, u) <= q for y in range(len(p))] for p, u in zip(test_p, u_test)])


@pytest.mark.parametrize("temperature", [1.0, 0.5])
@pytest.mark.parametrize("alpha", [0.05, 0.3])
@pytest.mark.parametrize("score, randomized, kwargs", CONFIGS)
def test_sets_equal_the_published_formulas(score, randomized, kwargs, alpha, temperature):
    """Against an independent reimplementation: RAPS with a fixed lam and k_reg has no
    counterpart in MAPIE (which tunes both itself), and TorchCP cannot be installed
    beside this project's torch; the reference above states each formula directly."""
    n, m = 300, 300
    logits, labels = synthetic(n + m, seed=7)
    p = smk.softmax(logits, temperature=temperature)
    u_cal = np.random.default_rng(11).random(n) if randomized else np.ones(n)
    u_test = np.random.default_rng(12).random(m) if randomized else np.ones(m)
    cal = conformal.calibrate(logits[:n], labels[:n], alpha, score=score, randomized=randomized, temperature=temperature, rng=11, **kwargs)
    ours = cal.predict_sets(logits[n:], rng=np.random.default_rng(12))
    expected = reference_sets(p[:n], labels[:n], p[n:], alpha, score, u_cal, u_test, **kwargs)
    np.testing.assert_array_equal(ours, expected)
    assert 0 < ours.sum(axis=1).mean() < p.shape[1]


def _mapie():
    pytest.importorskip("mapie")
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Probabilities(ClassifierMixin, BaseEstimator):
        def __init__(self, n_classes=8):
            self.n_classes = n_classes

        def fit(self, X, y=None):
            self.classes_ = np.arange(self.n_classes)
            return self

        def predict_proba(self, X):
            return np.asarray(X, dtype=np.float64)

        def predict(self, X):
            return np.argmax(X, axis=1)

    class Uniforms(np.random.RandomState):
        """MAPIE's random_state: uniform() hands out the given arrays in turn."""

        def __init__(self, *draws):
            super().__init__(0)
            self.draws = list(draws)

        def uniform(self, low=0.0, high=1.0, size=None):
            return np.asarray(self.draws.pop(0), dtype=np.float64).reshape(size)

    from mapie.classification import SplitConformalClassifier
    from mapie.conformity_scores import APSConformityScore

    def sets(p_cal, y_cal, p_test, alpha, score, include_last_label=None, u_cal=None, u_test=None):
        score_object = "lac" if score == "lac" else APSConformityScore()
        model = SplitConformalClassifier(
            Probabilities(p_cal.shape[1]).fit(p_cal),
            confidence_level=1 - alpha,
            conformity_score=score_object,
            prefit=True,
            random_state=None if score == "lac" else Uniforms(u_cal, u_test),
        )
        model.conformalize(p_cal, y_cal)
        params = None if include_last_label is None else {"include_last_label": include_last_label}
        return model.predict_set(p_test, conformity_score_params=params)[1][:, :, 0]

    return sets


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.3])
def test_sets_equal_mapie(alpha):
    """MAPIE (SplitConformalClassifier on prefit probabilities) agrees set for set.

    MAPIE always randomises its APS calibration scores, as cumsum - u p_y; its
    uniforms are handed in, u = 1 - U for softmaxkit's U, and u = 0 for the
    non-randomised score.  Its non-randomised prediction (include_last_label=False)
    adds the top class to a set that would be empty.
    """
    mapie_sets = _mapie()
    n, m = 2000, 2000
    logits, labels = synthetic(n + m, seed=3)
    p = smk.softmax(logits)

    lac = conformal.calibrate(logits[:n], labels[:n], alpha, score="lac").predict_sets(logits[n:])
    np.testing.assert_array_equal(lac, mapie_sets(p[:n], labels[:n], p[n:], alpha, "lac"))

    aps = conformal.calibrate(logits[:n], labels[:n], alpha, score="aps").predict_sets(logits[n:])
    theirs = mapie_sets(p[:n], labels[:n], p[n:], alpha, "aps", False, np.zeros(n), np.zeros(m))
    empty = aps.sum(axis=1) == 0
    assert 0 < empty.sum() < m
    np.testing.assert_array_equal(aps[~empty], theirs[~empty])
    np.testing.assert_array_equal(theirs[empty], np.eye(p.shape[1], dtype=bool)[p[n:][empty].argmax(axis=1)])

    u_cal, u_test = np.random.default_rng(5).random(n), np.random.default_rng(6).random(m)
    randomized = conformal.calibrate(logits[:n], labels[:n], alpha, score="aps", randomized=True, rng=5).predict_sets(logits[n:], rng=6)
    theirs = mapie_sets(p[:n], labels[:n], p[n:], alpha, "aps", "randomized", 1 - u_cal, 1 - u_test)
    np.testing.assert_array_equal(randomized, theirs)


# -- the level k -----------------------------------------------------------------


@pytest.mark.parametrize(
    "n, alpha, k",
    [
        (9, 0.1, 9),
        (10, 0.1, 10),
        (99, 0.2, 80),
        # 10 * (1 - 0.7) is 3.0000000000000004 in floating point: k would be 4.
        (9, 0.7, 3),
        (19, 0.95, 1),
        (1, 0.5, 1),
        (1, 0.49, 2),
        (50, 1e-12, 51),
        (50, 0.999999999999, 1),
    ],
)
def test_rank_is_exact(n, alpha, k):
    logits, labels = synthetic(n)
    cal = conformal.calibrate(logits, labels, alpha, score="lac")
    assert cal.rank == k == exact_rank(alpha, n)
    assert cal.quantile_level == k / n


@pytest.mark.parametrize("score, randomized, kwargs", CONFIGS)
def test_alpha_near_zero_gives_every_class(score, randomized, kwargs):
    # k = n + 1: no calibration score is large enough; every class of every
    # row is in its set, -inf classes and fully masked rows included.
    logits, labels = synthetic(50)
    cal = conformal.calibrate(logits, labels, 1e-12, score=score, randomized=randomized, rng=0, **kwargs)
    assert cal.rank == 51 and cal.conformity_cutoff == -math.inf and cal.threshold == math.inf
    test = np.array([[0.0, -np.inf, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0], [-np.inf] * 8])
    assert cal.predict_sets(test, rng=0).all()


@pytest.mark.parametrize("score, randomized, kwargs", CONFIGS)
def test_alpha_near_one_keeps_the_most_conforming_calibration_row_only(score, randomized, kwargs):
    # k = 1: q is the smallest calibration score, so on the calibration rows
    # themselves (with the same uniforms) exactly the row that attains it is covered.
    logits, labels = synthetic(50)
    cal = conformal.calibrate(logits, labels, 0.999999999999, score=score, randomized=randomized, rng=3, **kwargs)
    assert cal.rank == 1
    sets = cal.predict_sets(logits, rng=3)
    assert sets[np.arange(50), labels].sum() == 1


def test_threshold_is_the_kth_smallest_score():
    logits, labels = synthetic(40)
    p = smk.softmax(logits)
    cal = conformal.calibrate(logits, labels, 0.25, score="lac")
    scores = np.sort(1 - p[np.arange(40), labels])
    assert cal.rank == 31
    assert cal.threshold == scores[30]
    assert cal.conformity_cutoff == np.sort(p[np.arange(40), labels])[::-1][30]


# -- exactness, ties, masks ------------------------------------------------------


def test_lac_keeps_probabilities_that_one_minus_p_would_merge():
    # p = [1, e^-50, e^-60]: 1 - p rounds to 1.0 for both small classes, so a
    # threshold on the rounded score would take class 2 with class 1.
    x = np.array([[0.0, -50.0, -60.0, -np.inf]])
    cal = conformal.calibrate(np.repeat(x, 5, axis=0), np.ones(5, dtype=int), 0.5, score="lac")
    p = smk.softmax(x)[0]
    assert 1 - p[2] == 1 - p[1] == cal.threshold == 1.0
    assert cal.conformity_cutoff == p[1]
    np.testing.assert_array_equal(cal.predict_sets(x), [[True, True, False, False]])


def test_aps_keeps_tail_masses_that_a_cumulative_sum_would_merge():
    # The mass after class 1 is e^-60 + e^-70 and after class 2 e^-70; the
    # cumulative sums up to classes 1, 2 and 3 all round to 1.0.
    x = np.array([[0.0, -50.0, -60.0, -70.0]])
    cal = conformal.calibrate(np.repeat(x, 5, axis=0), np.ones(5, dtype=int), 0.5, score="aps")
    p = smk.softmax(x)[0]
    assert np.cumsum(p)[1] == np.cumsum(p)[3] == 1.0
    assert cal.conformity_cutoff == p[2] + p[3]
    np.testing.assert_array_equal(cal.predict_sets(x), [[True, True, False, False]])


def test_ties_are_ranked_by_class_index():
    # Classes 0 and 1 tie; class 0 ranks first, so with labels on class 0 the
    # non-randomised APS set is {0}, and class 1 comes in only with class 0.
    x = np.array([[1.0, 1.0, 0.0]])
    rows = np.repeat(x, 9, axis=0)
    on_0 = conformal.calibrate(rows, np.zeros(9, dtype=int), 0.5, score="aps")
    on_1 = conformal.calibrate(rows, np.ones(9, dtype=int), 0.5, score="aps")
    np.testing.assert_array_equal(on_0.predict_sets(x), [[True, False, False]])
    np.testing.assert_array_equal(on_1.predict_sets(x), [[True, True, False]])
    # LAC gives tied classes the same score: both in or both out.
    lac = conformal.calibrate(rows, np.ones(9, dtype=int), 0.5, score="lac")
    np.testing.assert_array_equal(lac.predict_sets(x), [[True, True, False]])


@pytest.mark.parametrize("score, randomized, kwargs", [c for c in CONFIGS if c.values[0] != "lac"])
def test_sets_are_nested_in_the_ranking(score, randomized, kwargs):
    logits, labels = synthetic(600, seed=4)
    cal = conformal.calibrate(logits[:300], labels[:300], 0.2, score=score, randomized=randomized, rng=0, **kwargs)
    sets = cal.predict_sets(logits[300:], rng=1)
    p = smk.softmax(logits[300:])
    order = np.lexsort((np.broadcast_to(np.arange(8), p.shape), -p), axis=-1)
    ranked = np.take_along_axis(sets, order, axis=-1)
    # True down to the last class in the set, False after it.
    assert (np.diff(ranked.astype(int), axis=-1) <= 0).all()


@pytest.mark.parametrize("score, kwargs", [("lac", {}), ("aps", {}), ("raps", RAPS)])
def test_sets_grow_as_alpha_falls(score, kwargs):
    logits, labels = synthetic(600, seed=5)
    previous = None
    for alpha in (0.5, 0.3, 0.1, 0.05, 0.01):
        sets = conformal.calibrate(logits[:300], labels[:300], alpha, score=score, **kwargs).predict_sets(logits[300:])
        if previous is not None:
            assert (sets >= previous).all()
        previous = sets


def test_raps_with_no_penalty_is_aps():
    logits, labels = synthetic(400)
    for randomized in (False, True):
        aps = conformal.calibrate(logits[:200], labels[:200], 0.1, score="aps", randomized=randomized, rng=1)
        raps = conformal.calibrate(logits[:200], labels[:200], 0.1, score="raps", randomized=randomized, lam=0.0, k_reg=0, rng=1)
        np.testing.assert_array_equal(aps.predict_sets(logits[200:], rng=2), raps.predict_sets(logits[200:], rng=2))


@pytest.mark.parametrize("score, randomized, kwargs", CONFIGS)
def test_minus_inf_classes_stay_out_of_finite_thresholds(score, randomized, kwargs):
    logits, labels = synthetic(400, seed=6)
    mask = np.random.default_rng(0).random(logits.shape) < 0.3
    mask[np.arange(400), labels] = False
    logits = np.where(mask, -np.inf, logits)
    logits[-1] = -np.inf  # a fully masked test row
    cal = conformal.calibrate(logits[:200], labels[:200], 0.05, score=score, randomized=randomized, rng=0, **kwargs)
    assert math.isfinite(cal.threshold)
    sets = cal.predict_sets(logits[200:], rng=1)
    assert not sets[mask[200:]].any()
    assert not sets[-1].any()
    assert sets.any(axis=1)[:-1].mean() > 0.9


@pytest.mark.parametrize("on_minus_inf, expected_cutoff", [(5, -math.inf), (4, None)])
def test_labels_on_minus_inf_logits(on_minus_inf, expected_cutoff):
    # n = 10, alpha = 0.5: k = 6, so n + 1 - k = 5 labels with score +inf make q infinite.
    logits, labels = synthetic(10)
    logits[:on_minus_inf, labels[:on_minus_inf]] = -np.inf
    cal = conformal.calibrate(logits, labels, 0.5, score="lac")
    assert cal.rank == 6
    if expected_cutoff is None:
        assert math.isfinite(cal.conformity_cutoff)
        assert not cal.predict_sets(logits)[:on_minus_inf, labels[:on_minus_inf]].any()
    else:
        assert cal.conformity_cutoff == expected_cutoff
        assert cal.predict_sets(logits).all()


def test_plus_inf_logits_share_the_mass():
    x = np.array([[np.inf, np.inf, 0.0], [0.0, 1.0, 2.0]])
    cal = conformal.calibrate(np.repeat(x[:1], 5, axis=0), np.zeros(5, dtype=int), 0.5, score="lac")
    assert cal.conformity_cutoff == 0.5
    np.testing.assert_array_equal(cal.predict_sets(x), [[True, True, False], [False, False, True]])


def test_one_class():
    logits = np.random.default_rng(0).normal(size=(20, 1))
    labels = np.zeros(20, dtype=int)
    for score in ("lac", "aps"):
        assert conformal.calibrate(logits, labels, 0.1, score=score).predict_sets(logits).all()
    # Randomised, the one class is in the set when 1 - U reaches the k-th largest 1 - U of calibration.
    cal = conformal.calibrate(logits, labels, 0.1, score="aps", randomized=True, rng=0)
    u = np.random.default_rng(1).random(20)
    expected = 1 - u >= np.sort(1 - np.random.default_rng(0).random(20))[::-1][cal.rank - 1]
    np.testing.assert_array_equal(cal.predict_sets(logits, rng=1)[:, 0], expected)


@pytest.mark.parametrize("alpha, all_classes", [(0.5, False), (0.49, True)])
def test_one_calibration_row(alpha, all_classes):
    x = np.array([[2.0, 1.0, 0.0]])
    cal = conformal.calibrate(x, np.array([1]), alpha, score="aps")
    sets = cal.predict_sets(np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 5.0]]))
    if all_classes:
        assert cal.threshold == math.inf and sets.all()
    else:
        p = smk.softmax(x)[0]
        assert cal.conformity_cutoff == p[2]
        np.testing.assert_array_equal(sets[0], [True, True, False])


# -- inputs ---------------------------------------------------------------------


def test_randomised_draws_follow_the_documented_generator():
    logits, labels = synthetic(200)
    kwargs = dict(score="aps", randomized=True)
    a = conformal.calibrate(logits[:100], labels[:100], 0.1, rng=4, **kwargs)
    b = conformal.calibrate(logits[:100], labels[:100], 0.1, rng=np.random.default_rng(4), **kwargs)
    assert a == b
    np.testing.assert_array_equal(a.predict_sets(logits[100:], rng=9), b.predict_sets(logits[100:], rng=np.random.default_rng(9)))


def test_array_kinds_axes_and_batch_shapes():
    logits, labels = synthetic(120)
    ref = conformal.calibrate(logits[:60], labels[:60], 0.2, score="raps", **RAPS)
    sets = ref.predict_sets(logits[60:])
    # classes along axis 0
    t = conformal.calibrate(logits[:60].T, labels[:60], 0.2, score="raps", axis=0, **RAPS)
    assert t == ref
    np.testing.assert_array_equal(t.predict_sets(logits[60:].T, axis=0), sets.T)
    # rows in a (batch, sequence) grid
    g = conformal.calibrate(logits[:60].reshape(6, 10, 8), labels[:60].reshape(6, 10), 0.2, score="raps", **RAPS)
    assert g == ref
    np.testing.assert_array_equal(g.predict_sets(logits[60:].reshape(3, 20, 8)), sets.reshape(3, 20, 8))
    assert conformal.coverage(sets.T, labels[60:], axis=0) == conformal.coverage(sets, labels[60:])
    np.testing.assert_array_equal(conformal.set_sizes(sets.reshape(3, 20, 8)), sets.sum(axis=1).reshape(3, 20))
    # nested lists
    assert conformal.calibrate(logits[:60].tolist(), labels[:60].tolist(), 0.2, score="raps", **RAPS) == ref


def test_torch_and_jax_arrays():
    logits, labels = synthetic(120)
    ref = conformal.calibrate(logits[:60].astype(np.float32), labels[:60], 0.2, score="aps")
    sets = ref.predict_sets(logits[60:].astype(np.float32))
    torch = pytest.importorskip("torch")
    t = conformal.calibrate(torch.tensor(logits[:60], dtype=torch.float32), torch.tensor(labels[:60]), 0.2, score="aps")
    assert t == ref
    np.testing.assert_array_equal(t.predict_sets(torch.tensor(logits[60:], dtype=torch.float32)), sets)
    assert conformal.coverage(torch.tensor(sets), torch.tensor(labels[60:])) == conformal.coverage(sets, labels[60:])
    # bfloat16 has no NumPy counterpart: its values are read exactly into float64.
    bf = torch.tensor(logits[:60]).to(torch.bfloat16)
    assert conformal.calibrate(bf, torch.tensor(labels[:60]), 0.2) == conformal.calibrate(bf.double().numpy(), labels[:60], 0.2)
    jnp = pytest.importorskip("jax.numpy")
    j = conformal.calibrate(jnp.asarray(logits[:60], dtype=jnp.float32), jnp.asarray(labels[:60]), 0.2, score="aps")
    assert j == ref


def test_inputs_are_not_written():
    logits, labels = synthetic(100)
    before = logits.copy(), labels.copy()
    cal = conformal.calibrate(logits[:50], labels[:50], 0.1, score="aps", randomized=True, rng=0)
    cal.predict_sets(logits[50:], rng=0)
    np.testing.assert_array_equal(logits, before[0])
    np.testing.assert_array_equal(labels, before[1])


def test_result_is_frozen():
    cal = conformal.calibrate(*synthetic(20), 0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cal.alpha = 0.2


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        ({"alpha": 0.0}, ValueError, r"alpha must be in \(0, 1\), exclusive; got 0\.0"),
        ({"alpha": 1.0}, ValueError, r"alpha must be in \(0, 1\), exclusive; got 1\.0"),
        ({"alpha": -0.1}, ValueError, r"alpha .* got -0\.1"),
        ({"alpha": float("nan")}, ValueError, r"alpha .* got nan"),
        ({"alpha": True}, TypeError, r"alpha must be a real number; got True"),
        ({"alpha": "0.1"}, TypeError, r"alpha must be a real number; got '0\.1'"),
        ({"score": "thr"}, ValueError, r"score must be one of 'lac', 'aps', 'raps'; got 'thr'"),
        ({"score": "lac", "randomized": True}, ValueError, r"randomized=True applies to score='aps' and 'raps'"),
        ({"randomized": 1}, TypeError, r"randomized must be True or False; got 1"),
        ({"score": "raps"}, ValueError, r"score='raps' needs lam and k_reg"),
        ({"score": "raps", "lam": 0.1}, ValueError, r"score='raps' needs k_reg:"),
        ({"score": "raps", "lam": -0.1, "k_reg": 1}, ValueError, r"lam must be finite and >= 0; got -0\.1"),
        ({"score": "raps", "lam": float("inf"), "k_reg": 1}, ValueError, r"lam must be finite and >= 0; got inf"),
        ({"score": "raps", "lam": 0.1, "k_reg": -1}, ValueError, r"k_reg must be an int >= 0; got -1"),
        ({"score": "raps", "lam": 0.1, "k_reg": 1.5}, TypeError, r"k_reg must be an int >= 0; got 1\.5"),
        ({"score": "aps", "lam": 0.1}, ValueError, r"lam applies only to score='raps'; got lam=0\.1 with score='aps'"),
        ({"score": "lac", "k_reg": 2}, ValueError, r"k_reg applies only to score='raps'; got k_reg=2 with score='lac'"),
        ({"temperature": 0.0}, ValueError, r"temperature must be finite and > 0; got 0\.0"),
        ({"temperature": float("inf")}, ValueError, r"temperature must be finite and > 0; got inf"),
        ({"randomized": True, "rng": "seed"}, TypeError, r"rng must be a numpy\.random\.Generator, an int seed or None"),
        ({"randomized": True, "rng": -1}, ValueError, r"rng as a seed must be >= 0; got -1"),
        ({"axis": 2}, ValueError, r"axis=2 is out of range"),
    ],
)
def test_invalid_settings_name_the_argument(kwargs, exc, pattern):
    kwargs = {"alpha": 0.1, **kwargs}
    with pytest.raises(exc, match=pattern):
        conformal.calibrate(np.zeros((4, 3)), np.array([0, 1, 2, 0]), **kwargs)


@pytest.mark.parametrize(
    "logits, labels, exc, pattern",
    [
        (np.zeros((3, 4)), np.array([0, 4, 1]), ValueError, r"labels\[1\] \(flattened\) = 4 is not a class index: allowed 0 to 3"),
        (np.zeros((3, 4)), np.array([0, -1, 1]), ValueError, r"labels\[1\] \(flattened\) = -1 is not a class index"),
        (np.zeros((3, 4)), np.array([0.0, 1.0, 1.0]), TypeError, r"labels must hold integer class indices; got dtype float64"),
        (np.zeros((3, 4)), np.array([0, 1]), ValueError, r"labels must have shape \(3,\) .* got \(2,\)"),
        (np.zeros((0, 4)), np.zeros(0, dtype=int), ValueError, r"logits must hold at least one sample and one class"),
        (np.zeros((3, 0)), np.zeros(3, dtype=int), ValueError, r"logits must hold at least one sample and one class"),
        (np.array([[0.0, np.nan], [0.0, 0.0]]), np.array([0, 1]), ValueError, r"logits must not be NaN; got NaN in row 0, class 1"),
        (np.array([[0.0, 1.0], [0.0, 0.0]]) > 0, np.array([0, 1]), TypeError, r"logits"),
    ],
)
def test_invalid_data_is_refused(logits, labels, exc, pattern):
    with pytest.raises(exc, match=pattern):
        conformal.calibrate(logits, labels, 0.1)


def test_predict_sets_refuses_other_class_counts_and_nan():
    cal = conformal.calibrate(*synthetic(20), 0.1)
    with pytest.raises(ValueError, match=r"logits has 5 classes along axis -1; the calibration had 8"):
        cal.predict_sets(np.zeros((2, 5)))
    bad = np.zeros((2, 8))
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"logits must not be NaN; got NaN in row 1, class 3"):
        cal.predict_sets(bad)


def test_coverage_and_set_sizes():
    sets = np.array([[True, True, False], [False, False, True], [False, False, False], [True, True, True]])
    labels = np.array([1, 0, 2, 2])
    assert conformal.coverage(sets, labels) == 0.5
    np.testing.assert_array_equal(conformal.set_sizes(sets), [2, 1, 0, 3])
    assert conformal.set_sizes(sets).dtype == np.int64
    with pytest.raises(TypeError, match=r"sets must be a boolean mask .* got dtype int64"):
        conformal.coverage(sets.astype(np.int64), labels)
    with pytest.raises(ValueError, match=r"labels\[0\] \(flattened\) = 3 is not a class index"):
        conformal.coverage(sets, np.array([3, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"sets must hold at least one sample"):
        conformal.coverage(np.zeros((0, 3), dtype=bool), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match=r"sets must have a class axis"):
        conformal.set_sizes(np.bool_(True))
