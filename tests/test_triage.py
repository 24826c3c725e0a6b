"""TriagePolicy: consistent routes, rare types to review, anomaly rule, JSON round trip."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from seminspect.decision import (
    AUTO_ABNORMAL,
    AUTO_NORMAL,
    REVIEW,
    DecisionError,
    NotFittedError,
    TriagePolicy,
    clopper_pearson_lower,
)

N_TYPES = 5


def _synthetic(seed: int, n: int = 6000, prevalence: float = 0.4):
    """Scores, labels, type probabilities whose accuracy rises with their confidence."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < prevalence
    scores = np.where(y, rng.normal(5.0, 1.0, n), rng.normal(0.0, 1.0, n))
    labels = np.where(y, rng.integers(0, N_TYPES, n), -1)
    # logits: the true type gets a random margin; a small margin often loses to noise
    logits = rng.normal(0.0, 1.0, (n, N_TYPES))
    true = np.clip(labels, 0, None)
    logits[np.arange(n), true] += rng.uniform(0.0, 6.0, n)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return scores, y, probs, labels


@pytest.fixture(scope="module")
def fitted():
    s, y, p, lab = _synthetic(0)
    counts = np.array([500, 500, 500, 500, 40])  # type 4 is rare in training
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policy = TriagePolicy(type_precision=0.95, min_train_samples=80).fit(
            s, y, p, lab, type_train_counts=counts, type_names=list("abcde")
        )
    return policy


def test_routes_are_consistent(fitted):
    s, y, p, lab = _synthetic(1)
    res = fitted.predict(s, p)
    assert set(np.unique(res.route)) == {AUTO_ABNORMAL, AUTO_NORMAL, REVIEW}
    assert np.isfinite(fitted.abnormal_threshold_) and np.isfinite(fitted.normal_threshold_)
    # every auto-abnormal score is above every auto-normal and review score lies between
    abn, nor, rev = (s[res.route == r] for r in (AUTO_ABNORMAL, AUTO_NORMAL, REVIEW))
    assert abn.min() > nor.max()
    assert rev.min() > nor.max() and rev.max() < abn.min()
    # calibrated targets hold on fresh data from the same distribution
    assert y[res.route == AUTO_ABNORMAL].mean() >= 0.99
    assert y[res.route == AUTO_NORMAL].mean() <= 0.005
    assert fitted.abnormal_thresholder_.precision_lower_bound_ >= 0.99
    assert fitted.normal_thresholder_.miss_rate_upper_bound_ <= 0.005
    summ = res.summary()
    assert summ["n_samples"] == len(s) == summ["n_auto_abnormal"] + summ["n_auto_normal"] + summ["n_review"]
    assert summ["binary_automation_rate"] == pytest.approx(1 - summ["n_review"] / len(s))
    assert 0 < summ["automation_rate"] <= summ["binary_automation_rate"]


def test_type_decisions(fitted):
    s, y, p, lab = _synthetic(2)
    res = fitted.predict(s, p)
    # the rare type never gets an automatic decision, and says why
    assert np.isinf(fitted.type_thresholds_[4]) and "min_train_samples" in fitted.type_reasons_[4]
    assert not np.any(res.type_decision == 4)
    rare_top1 = (res.route == AUTO_ABNORMAL) & (res.top_k_types[:, 0] == 4)
    assert rare_top1.sum() > 50 and np.all(res.type_decision[rare_top1] == -1)
    # common types get finite bars whose calibrated lower bound meets the target
    assert np.all(np.isfinite(fitted.type_thresholds_[:4]))
    assert np.all(fitted.type_precision_lower_bounds_[:4] >= 0.95)
    # only auto-abnormal samples get a type; decisions are the top-1 type and clear their bar
    decided = res.type_decision >= 0
    assert decided.sum() > 200 and np.all(res.route[decided] == AUTO_ABNORMAL)
    np.testing.assert_array_equal(res.type_decision[decided], res.top_k_types[decided, 0])
    assert np.all(res.top_k_probs[decided, 0] >= fitted.type_thresholds_[res.type_decision[decided]])
    # realised type precision on fresh data
    assert (res.type_decision[decided] == lab[decided]).mean() >= 0.95
    # top-k: 3 suggestions, most probable first
    assert res.top_k_types.shape == (len(s), 3)
    assert np.all(np.diff(res.top_k_probs, axis=1) <= 0)
    frame = res.to_frame()
    assert list(frame.columns[:4]) == ["route", "abnormal_score", "type_decision", "type_name"]
    assert set(frame.loc[decided, "type_name"]) <= set("abcd")


def test_type_bar_needs_enough_calibration_samples():
    s, y, p, lab = _synthetic(3, n=300)  # ~24 defects per type: a 95 % bound of 0.95 needs >= 59
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policy = TriagePolicy().fit(s, y, p, lab)
    assert np.all(np.isinf(policy.type_thresholds_))
    assert all("calibration defects" in r for r in policy.type_reasons_)
    assert not np.any(policy.predict(s, p).type_decision >= 0)


def test_type_bar_is_lowest_qualifying_bar():
    # one type, 400 calibration defects: confidence above 0.75 is always right, below it half wrong
    rng = np.random.default_rng(4)
    conf = rng.uniform(0.5, 1.0, 400)
    right = np.where(conf >= 0.75, True, rng.random(400) < 0.5)
    probs = np.c_[conf, 1 - conf]
    labels = np.where(right, 0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policy = TriagePolicy(type_precision=0.95, min_train_samples=0).fit(np.ones(400), np.ones(400), probs, labels)
    bar = policy.type_thresholds_[0]
    sel = conf >= bar
    assert clopper_pearson_lower(int(right[sel].sum()), int(sel.sum()), 0.95) >= 0.95
    assert policy.type_precision_lower_bounds_[0] == pytest.approx(
        clopper_pearson_lower(int(right[sel].sum()), int(sel.sum()), 0.95)
    )
    # the next lower bar fails the bound: the bar goes down to where the errors start, no further
    nxt = conf[conf < bar].max()
    sel2 = conf >= nxt
    assert clopper_pearson_lower(int(right[sel2].sum()), int(sel2.sum()), 0.95) < 0.95
    assert 0.65 <= bar <= 0.76
    assert np.isinf(policy.type_thresholds_[1])  # never the arg-max: no calibration data


def test_anomaly_rule_blocks_auto_normal():
    s, y, p, lab = _synthetic(5)
    anomaly = np.where(y, 3.0, 0.0)
    anomaly[:50] = 5.0  # some normal-looking samples flagged by the anomaly model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policy = TriagePolicy(anomaly_threshold=1.0).fit(s, y, anomaly_scores=anomaly)
    res = policy.predict(s, anomaly_scores=anomaly)
    assert res.anomaly_flag is not None and res.anomaly_flag[:50].all()
    assert not np.any(res.route[anomaly > 1.0] == AUTO_NORMAL)
    assert np.any(res.route[anomaly <= 1.0] == AUTO_NORMAL)
    assert res.top_k_types.shape == (len(s), 0) and np.all(res.type_decision == -1)
    with pytest.raises(DecisionError, match="anomaly_scores are required"):
        policy.predict(s)


def test_a_rule_added_after_calibration_recalibrates_the_normal_route():
    """``seminspect join`` adds the rule to a policy fitted without it: the rule here takes the surest normal sites
    out of the auto-normal route, so the defect share among the rest rises above what the old bound allowed."""
    s, y, p, lab = _synthetic(6, n=20000, prevalence=0.1)
    anomaly = np.zeros(len(s))
    anomaly[np.argsort(s)[:4000]] = 5.0  # the 4,000 lowest abnormal scores, all normal sites, flagged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = TriagePolicy(normal_miss_rate=0.002).fit(s, y)
        fresh = TriagePolicy(normal_miss_rate=0.002, anomaly_threshold=1.0).fit(s, y, anomaly_scores=anomaly)
        refit = TriagePolicy.from_dict(old.to_dict()).refit_normal_route(s, y, 1.0, anomaly)

    def miss_rate(policy):
        auto = policy.predict(s, anomaly_scores=anomaly).route == AUTO_NORMAL
        return y[auto].mean()

    assert refit.anomaly_threshold == 1.0 and refit.normal_threshold_ == fresh.normal_threshold_
    assert refit.normal_threshold_ < old.normal_threshold_  # fewer sites auto-normal than before
    assert refit.abnormal_threshold_ == old.abnormal_threshold_  # the other route untouched
    assert miss_rate(refit) < miss_rate(TriagePolicy.from_dict({**old.to_dict()}).set_params(anomaly_threshold=1.0))
    assert refit.normal_thresholder_.miss_rate_upper_bound_ <= 0.002
    with pytest.raises(NotFittedError):
        TriagePolicy().refit_normal_route(s, y, 1.0, anomaly)


def test_json_round_trip_identical_predictions(fitted, tmp_path):
    s, y, p, lab = _synthetic(6)
    path = fitted.save(tmp_path / "sub" / "triage.json")
    data = json.loads(path.read_text())
    assert data["class"] == "TriagePolicy" and data["fitted"]["type_thresholds_"]["__ndarray__"][4] == "inf"
    loaded = TriagePolicy.load(path)
    a, b = fitted.predict(s, p), loaded.predict(s, p)
    for field in ("route", "type_decision", "top_k_types", "top_k_probs"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert loaded.type_names_ == list("abcde") and loaded.describe() == fitted.describe()
    assert not list(tmp_path.joinpath("sub").glob(".*"))  # no temp files left behind


def test_errors():
    s, y, p, lab = _synthetic(7, n=400)
    with pytest.raises(NotFittedError):
        TriagePolicy().predict(s)
    with pytest.raises(DecisionError, match="top_k"):
        TriagePolicy(top_k=0).fit(s, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DecisionError, match="type_labels"):
            TriagePolicy().fit(s, y, p)
        with pytest.raises(DecisionError, match="logits"):
            TriagePolicy().fit(s, y, p - 1.0, lab)
        policy = TriagePolicy().fit(s, y, p, lab)
    with pytest.raises(DecisionError, match="fitted with 5"):
        policy.predict(s, p[:, :3])


def test_normal_coverage_sets_the_quantile_of_calib_normals_and_reports_its_bound(tmp_path):
    """A fixed auto-normal coverage (for types the calibration lacks): the threshold is the quantile of the
    calib normals' scores, the anomaly rule still blocks, and the miss rate there is computed by hand."""
    s, y, p, lab = _synthetic(8, n=2000)
    anomaly = np.zeros(len(s))
    anomaly[:40] = 5.0
    pol = TriagePolicy(normal_coverage=0.55, anomaly_threshold=1.0).fit(s, y, anomaly_scores=anomaly)
    assert pol.normal_threshold_ == pytest.approx(np.quantile(s[~y], 0.55))
    passes = anomaly <= 1.0
    sel = (s <= pol.normal_threshold_) & passes
    b = pol.normal_thresholder_
    assert b.n_selected_ == sel.sum() and b.miss_rate_ == pytest.approx(y[sel].mean())
    assert b.miss_rate_upper_bound_ > b.miss_rate_ and b.feasible_ == (b.miss_rate_upper_bound_ <= 0.005)
    route = pol.predict(s, anomaly_scores=anomaly).route
    np.testing.assert_array_equal(route == AUTO_NORMAL, sel & (s < pol.abnormal_threshold_))
    assert "not certified" in pol.describe()["normal_route"]
    # the certified policy on the same data picks its own threshold; the saved policy keeps the coverage
    cert = TriagePolicy(anomaly_threshold=1.0).fit(s, y, anomaly_scores=anomaly)
    assert cert.normal_coverage is None and cert.describe()["normal_route"] == "certified"
    loaded = TriagePolicy.load(pol.save(tmp_path / "t.json"))
    assert loaded.normal_coverage == 0.55 and loaded.normal_threshold_ == pol.normal_threshold_
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(DecisionError, match="normal_coverage"):
            TriagePolicy(normal_coverage=bad).fit(s, y)
    with pytest.raises(DecisionError, match="needs normal samples"):
        TriagePolicy(normal_coverage=0.5).fit(s[y], y[y])
