"""[long-tail] Open-set rule for types: low type confidence -> review with reason unknown_type."""

from __future__ import annotations

import numpy as np
import pytest

from seminspect.decision import (
    AUTO_ABNORMAL,
    AUTO_NORMAL,
    REVIEW,
    DecisionError,
    InsufficientDataError,
    NotFittedError,
    OpenSetTypeRule,
    TriageResult,
    estimator_from_dict,
)


def _logits(rng: np.random.Generator, n: int, c: int, known: bool) -> np.ndarray:
    x = rng.normal(0, 1, (n, c))
    if known:
        x[np.arange(n), rng.integers(0, c, n)] += 6.0  # a confident type head on a known type
    return x


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("score", ["max_softmax", "energy"])
def test_threshold_holds_the_stated_rate_and_catches_unknown_types(score):
    rng = np.random.default_rng(0)
    calib, known, unknown = (_logits(rng, n, 10, k) for n, k in ((2000, True), (4000, True), (1000, False)))
    prep = _softmax if score == "max_softmax" else (lambda x: x)
    rule = OpenSetTypeRule(rejection_rate=0.05, score=score).fit(prep(calib))
    assert abs(rule.known_rejection_rate_ - 0.05) < 0.005 and rule.n_ == 2000
    assert abs(rule.predict(prep(known)).mean() - 0.05) < 0.015  # the stated cost on new known-type sites
    assert rule.predict(prep(unknown)).mean() > 0.9
    again = estimator_from_dict(rule.to_dict())
    assert np.array_equal(again.predict(prep(unknown)), rule.predict(prep(unknown)))


def test_apply_routes_unknown_types_to_review_with_the_reason():
    probs = np.array([[0.96, 0.02, 0.02], [0.34, 0.33, 0.33], [0.4, 0.3, 0.3], [0.9, 0.05, 0.05]])
    rule = OpenSetTypeRule(rejection_rate=0.1, min_samples=5).fit(np.tile([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1]], (5, 1)))
    result = TriageResult(route=np.array([AUTO_ABNORMAL, AUTO_ABNORMAL, AUTO_NORMAL, AUTO_NORMAL]),
                          type_decision=np.array([0, 0, -1, -1]), top_k_types=np.zeros((4, 0), np.int64),
                          top_k_probs=np.zeros((4, 0)), abnormal_scores=np.array([0.9, 0.9, 0.1, 0.1]))
    new, reasons = rule.apply(result, probs)
    assert list(new.route) == [AUTO_ABNORMAL, REVIEW, AUTO_NORMAL, AUTO_NORMAL]
    assert list(new.type_decision) == [0, -1, -1, -1]
    assert list(reasons) == ["", "unknown_type", "", ""]
    assert list(result.route)[1] == AUTO_ABNORMAL  # the input is left as it was
    new, reasons = rule.apply(result, probs, include_auto_normal=True)
    assert list(new.route) == [AUTO_ABNORMAL, REVIEW, REVIEW, AUTO_NORMAL]
    with pytest.raises(DecisionError, match="3 type outputs for 4 sites"):
        rule.apply(result, probs[:3])


def test_refusals_are_one_line():
    rule = OpenSetTypeRule()
    with pytest.raises(NotFittedError):
        rule.predict(np.eye(3))
    with pytest.raises(InsufficientDataError, match="min_samples=20"):
        rule.fit(np.eye(3))
    with pytest.raises(DecisionError, match="probabilities"):
        rule.fit(np.ones((30, 3)))
    with pytest.raises(DecisionError, match="score must be one of"):
        OpenSetTypeRule(score="entropy").fit(np.eye(3))
    with pytest.raises(DecisionError, match="rejection_rate"):
        OpenSetTypeRule(rejection_rate=1.5).fit(np.tile(np.eye(3), (10, 1)))


def _clusters(rng: np.random.Generator, centres: np.ndarray, n: int, spread: float = 1.0) -> tuple[np.ndarray, ...]:
    t = rng.integers(0, len(centres), n)
    return centres[t] + rng.normal(0, spread, (n, centres.shape[1])), t


def test_mahalanobis_flags_embeddings_far_from_every_known_type():
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 6, (5, 16)) + 20.0  # off the origin: unit scaling keeps the clusters apart
    e_tr, t_tr = _clusters(rng, centres, 600)
    t_tr[:50] = -1  # normal training sites carry no type: ignored
    calib, _ = _clusters(rng, centres, 1000)
    known, _ = _clusters(rng, centres, 2000)
    unknown, _ = _clusters(rng, rng.normal(0, 6, (3, 16)), 500)
    rule = OpenSetTypeRule(rejection_rate=0.05, score="mahalanobis").fit(calib, train_embeddings=e_tr,
                                                                          train_types=t_tr)
    assert rule.means_.shape == (5, 16) and rule.precision_.shape == (16, 16)
    assert abs(rule.predict(known).mean() - 0.05) < 0.02 and rule.predict(unknown).mean() > 0.95
    # the score is minus the squared Mahalanobis distance to the nearest type mean
    from scipy.spatial.distance import mahalanobis

    x = unknown[0] / np.linalg.norm(unknown[0])  # embeddings are scaled to unit length first
    expect = -min(mahalanobis(x, m, rule.precision_) ** 2 for m in rule.means_)
    assert rule.scores(unknown[:1])[0] == pytest.approx(expect, rel=1e-9)
    again = estimator_from_dict(rule.to_dict())
    assert np.array_equal(again.predict(unknown), rule.predict(unknown))
    with pytest.raises(DecisionError, match="needs train_embeddings and train_types"):
        OpenSetTypeRule(score="mahalanobis").fit(calib)
    with pytest.raises(DecisionError, match="width 8, fitted on width 16"):
        rule.scores(unknown[:, :8])
    with pytest.raises(InsufficientDataError, match="typed training defects"):
        OpenSetTypeRule(score="mahalanobis").fit(calib, train_embeddings=e_tr[:60], train_types=-np.ones(60))
