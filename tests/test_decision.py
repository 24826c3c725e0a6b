"""Thresholds with confidence-bounded error targets: bounds, selection, validity by simulation, JSON."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy import stats

from seminspect.decision import (
    DecisionError,
    InsufficientDataError,
    NegativePredictiveThreshold,
    NormalQuantileThreshold,
    NotFittedError,
    PrecisionThreshold,
    clopper_pearson_interval,
    clopper_pearson_lower,
    clopper_pearson_upper,
    estimator_from_dict,
    min_samples_for_zero_errors,
)
from seminspect.decision._thresholds import _sweep
from seminspect.errors import SeminspectError


# ----- Clopper-Pearson against known values ----------------------------------------------------
def test_clopper_pearson_known_values():
    # all successes: the lower bound solves p^n = alpha
    assert clopper_pearson_lower(10, 10, 0.95) == pytest.approx(0.05**0.1, rel=1e-12)
    # zero failures: the upper bound solves (1 - p)^n = alpha ("rule of three" ~ 3/n)
    assert clopper_pearson_upper(0, 299, 0.95) == pytest.approx(1 - 0.05 ** (1 / 299), rel=1e-12)
    # textbook two-sided exact 95 % interval for 5 / 10
    lo, hi = clopper_pearson_interval(5, 10, 0.95)
    assert lo == pytest.approx(0.187086, abs=1e-6) and hi == pytest.approx(0.812914, abs=1e-6)
    # one-sided 95 % bounds are the ends of scipy's two-sided 90 % exact interval
    ci = stats.binomtest(37, 50).proportion_ci(confidence_level=0.90, method="exact")
    assert clopper_pearson_lower(37, 50, 0.95) == pytest.approx(ci.low, rel=1e-9)
    assert clopper_pearson_upper(37, 50, 0.95) == pytest.approx(ci.high, rel=1e-9)
    # degenerate counts and vectorisation
    np.testing.assert_allclose(clopper_pearson_lower(np.array([0, 3]), np.array([0, 3]), 0.95), [0.0, 0.05 ** (1 / 3)])
    np.testing.assert_allclose(clopper_pearson_upper(np.array([0, 3]), np.array([0, 3]), 0.95), [1.0, 1.0])
    assert min_samples_for_zero_errors(0.01, 0.95) == 299
    assert min_samples_for_zero_errors(0.005, 0.95) == 598


def test_sweep_keeps_ties_together():
    s = np.array([3.0, 2.0, 2.0, 1.0])
    y = np.array([1, 1, 0, 0], bool)
    thr, n, pos = _sweep(s, y, descending=True)
    np.testing.assert_array_equal(thr, [3.0, 2.0, 1.0])
    np.testing.assert_array_equal(n, [1, 3, 4])
    np.testing.assert_array_equal(pos, [1, 2, 2])


# ----- PrecisionThreshold ----------------------------------------------------------------------
def _two_gaussians(rng, n, prevalence, mu):
    y = rng.random(n) < prevalence
    return np.where(y, rng.normal(mu, 1.0, n), rng.normal(0.0, 1.0, n)), y


def test_precision_threshold_on_perfectly_separated_scores():
    scores = np.r_[np.linspace(0, 1, 500), np.linspace(2, 3, 500)]
    labels = np.r_[np.zeros(500), np.ones(500)]
    t = PrecisionThreshold(target_precision=0.99, confidence=0.95).fit(scores, labels)
    assert t.feasible_ and t.threshold_ == pytest.approx(2.0)
    assert t.recall_ == 1.0 and t.precision_ == 1.0 and t.n_selected_ == 500
    assert t.precision_lower_bound_ == pytest.approx(0.05 ** (1 / 500))
    np.testing.assert_array_equal(t.predict([1.5, 2.0, 2.5]), [False, True, True])


def test_precision_threshold_infeasible_says_so():
    rng = np.random.default_rng(0)
    s, y = _two_gaussians(rng, 200, 0.5, 3.0)  # too few samples for a 99 % bound at 95 %
    with pytest.warns(UserWarning, match="299"):
        t = PrecisionThreshold().fit(s, y)
    assert not t.feasible_ and t.threshold_ == np.inf and "299" in t.reason_
    assert not t.predict(s).any()


def test_precision_threshold_min_recall():
    rng = np.random.default_rng(1)
    s, y = _two_gaussians(rng, 3000, 0.5, 4.0)
    ok = PrecisionThreshold(min_recall=0.3).fit(s, y)
    assert ok.feasible_ and ok.recall_ >= 0.3
    with pytest.warns(UserWarning, match="min_recall"):
        too_high = PrecisionThreshold(min_recall=0.999).fit(s, y)
    assert not too_high.feasible_ and too_high.threshold_ == np.inf


def test_precision_threshold_realised_precision_by_simulation():
    """Over 200 seeded calibration draws, the true precision at the chosen threshold falls below the
    target in at most ~(1 - confidence) of the feasible draws; the point estimate fails ~half the time."""
    mu, prev, n, target, conf = 3.5, 0.5, 1500, 0.99, 0.95

    def true_precision(t):
        tp, fp = prev * stats.norm.sf(t - mu), (1 - prev) * stats.norm.sf(t)
        return tp / (tp + fp)

    fails = feasible = point_fails = 0
    for rep in range(200):
        s, y = _two_gaussians(np.random.default_rng(rep), n, prev, mu)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = PrecisionThreshold(target, conf).fit(s, y)
        if t.feasible_:
            feasible += 1
            fails += true_precision(t.threshold_) < target
        thr, ns, tp = _sweep(s, y, descending=True)
        point = thr[np.flatnonzero(tp / ns >= target)[-1]]
        point_fails += true_precision(point) < target
    assert feasible >= 150
    assert fails / feasible <= (1 - conf) + 0.03
    assert point_fails >= 60  # the simulation is sensitive: the point estimate is not a guarantee


# ----- NegativePredictiveThreshold -------------------------------------------------------------
def test_negative_predictive_threshold_realised_miss_rate_by_simulation():
    mu, prev, n, target, conf = 4.0, 0.3, 3000, 0.005, 0.95
    fails = feasible = 0
    for rep in range(200):
        s, y = _two_gaussians(np.random.default_rng(1000 + rep), n, prev, mu)
        m = NegativePredictiveThreshold(target, conf).fit(s, y)
        if m.feasible_:
            feasible += 1
            miss, ok = prev * stats.norm.cdf(m.threshold_ - mu), (1 - prev) * stats.norm.cdf(m.threshold_)
            fails += miss / (miss + ok) > target
            assert m.miss_rate_upper_bound_ <= target
    assert feasible >= 190
    assert fails / feasible <= (1 - conf) + 0.03
    np.testing.assert_array_equal(m.predict([m.threshold_, m.threshold_ + 1e-9]), [True, False])


def test_negative_predictive_threshold_infeasible():
    with pytest.warns(UserWarning, match="598"):
        m = NegativePredictiveThreshold(0.005).fit(np.arange(100.0), np.zeros(100))
    assert not m.feasible_ and m.threshold_ == -np.inf and not m.predict([-1e9]).any()


def test_negative_predictive_threshold_at_a_given_threshold_counts_by_hand():
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.9])
    y = np.array([0, 0, 1, 0, 0, 1])
    m = NegativePredictiveThreshold(0.05, 0.95).fit_at(s, y, 0.4)  # selects 0.1-0.4: 4 sites, 1 defect
    assert m.threshold_ == 0.4 and m.n_selected_ == 4 and m.miss_rate_ == 0.25
    assert m.miss_rate_upper_bound_ == pytest.approx(stats.beta.ppf(0.95, 2, 3))
    assert m.normal_coverage_ == 0.75 and not m.feasible_ and "upper bound" in m.reason_
    np.testing.assert_array_equal(m.predict([0.4, 0.41]), [True, False])
    clean = NegativePredictiveThreshold(0.9).fit_at(s, y, 0.2)
    assert clean.feasible_ and clean.miss_rate_ == 0.0 and clean.reason_ == ""


# ----- NormalQuantileThreshold -----------------------------------------------------------------
def test_normal_quantile_threshold_order_statistic():
    x = np.arange(1, 1001, dtype=float)  # scores 1..1000
    q = NormalQuantileThreshold(false_alarm_rate=0.01, confidence=0.95).fit(x)
    k = q.order_statistic_
    # k is the smallest order statistic with P(Binomial(n, 0.99) >= k) <= 0.05
    assert stats.binom.sf(k - 1, 1000, 0.99) <= 0.05 < stats.binom.sf(k - 2, 1000, 0.99)
    assert q.threshold_ == float(k) and q.n_ == 1000
    assert q.false_alarm_upper_bound_ <= 0.01
    assert q.false_alarm_upper_bound_ == pytest.approx(clopper_pearson_upper(1000 - k, 1000, 0.95))
    assert q.false_alarm_rate_ == pytest.approx((1000 - k) / 1000)
    np.testing.assert_array_equal(q.predict([k, k + 0.5]), [False, True])


def test_normal_quantile_threshold_realised_false_alarm_by_simulation():
    target, conf = 0.01, 0.95
    exceed = 0
    for rep in range(200):
        x = np.random.default_rng(5000 + rep).normal(0.0, 1.0, 400)
        q = NormalQuantileThreshold(target, conf).fit(x)
        exceed += stats.norm.sf(q.threshold_) > target
    assert exceed / 200 <= (1 - conf) + 0.03
    # and not absurdly conservative: the plain 99 % quantile exceeds the target about half the time
    plain = sum(
        stats.norm.sf(np.quantile(np.random.default_rng(5000 + r).normal(0, 1, 400), 0.99)) > target for r in range(200)
    )
    assert plain >= 60


def test_normal_quantile_threshold_too_few_samples():
    with pytest.raises(InsufficientDataError, match="at least 299"):
        NormalQuantileThreshold(0.01, 0.95).fit(np.zeros(298))
    NormalQuantileThreshold(0.01, 0.95).fit(np.zeros(299))  # exactly enough
    assert NormalQuantileThreshold.min_samples(0.001, 0.99) == 4603


# ----- the estimator contract ------------------------------------------------------------------
@pytest.mark.parametrize(
    "est",
    [PrecisionThreshold(0.9), NegativePredictiveThreshold(0.05), NormalQuantileThreshold(0.05)],
)
def test_json_round_trip_gives_identical_predictions(est, tmp_path):
    rng = np.random.default_rng(3)
    s, y = _two_gaussians(rng, 2000, 0.4, 3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = est.fit(s[~y], None) if isinstance(est, NormalQuantileThreshold) else est.fit(s, y)
    assert fitted is est
    path = est.save(tmp_path / "t.json")
    data = json.loads(path.read_text())  # plain JSON, no pickle
    loaded = type(est).load(path)
    assert estimator_from_dict(data).get_params() == est.get_params()
    assert loaded.threshold_ == est.threshold_
    probe = np.r_[s, est.threshold_, np.nextafter(est.threshold_, np.inf), np.nextafter(est.threshold_, -np.inf)]
    np.testing.assert_array_equal(loaded.predict(probe), est.predict(probe))


def test_validation_and_errors(tmp_path):
    with pytest.raises(DecisionError, match="target_precision"):
        PrecisionThreshold(target_precision=1.0).fit([0.1, 0.2], [0, 1])
    with pytest.raises(DecisionError, match="confidence"):
        NormalQuantileThreshold(confidence="high").fit(np.zeros(400))
    with pytest.raises(DecisionError, match="non-finite"):
        PrecisionThreshold().fit([0.1, np.nan], [0, 1])
    with pytest.raises(DecisionError, match="0/1"):
        PrecisionThreshold().fit([0.1, 0.2], [0, 2])
    with pytest.raises(DecisionError, match="shape"):
        PrecisionThreshold().fit([0.1, 0.2], [0, 1, 1])
    with pytest.raises(NotFittedError):
        PrecisionThreshold().predict([0.1])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SeminspectError, match="bad.json"):
        PrecisionThreshold.load(bad)
    with pytest.raises(DecisionError, match="expected a saved PrecisionThreshold"):
        PrecisionThreshold.from_dict(NormalQuantileThreshold().to_dict())
    assert "target_precision=0.99" in repr(PrecisionThreshold())
