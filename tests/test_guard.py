"""The fp32 check of bf16 / int8: sites near a threshold are judged again, so routes are fp32's."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from seminspect.decision import TriagePolicy
from seminspect.inference.guard import CheckedRuntime, Margins, decide, near_a_threshold

N_TYPES = 4


def _policy_and_sites(seed: int = 0, n: int = 4000):
    """A policy fitted on synthetic calibration sites, and fresh sites' fp32 probabilities."""
    rng = np.random.default_rng(seed)

    def sites(m: int):
        y = rng.random(m) < 0.4
        ab = 1 / (1 + np.exp(-np.where(y, rng.normal(3.0, 1.5, m), rng.normal(-3.0, 1.5, m))))
        labels = np.where(y, rng.integers(0, N_TYPES, m), -1)
        logits = rng.normal(0.0, 1.0, (m, N_TYPES))
        logits[np.arange(m), np.clip(labels, 0, None)] += rng.uniform(0.0, 6.0, m)
        return ab, y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), labels

    ab, y, ty, lab = sites(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policy = TriagePolicy(min_train_samples=0).fit(ab, y, ty, lab)
    return policy, sites(n)


class _Table:
    """A runtime that answers site ``i`` (passed as ``images``) from fixed tables of probabilities."""

    name, precision = "table", "fp32"

    def __init__(self, ab: np.ndarray, ty: np.ndarray) -> None:
        self.ab, self.ty, self.calls = ab, ty, 0

    def probabilities(self, images, roles, indices, view_mask):
        self.calls += 1
        return {"abnormal": self.ab[[images]], "types": self.ty[[images]]}


def test_a_site_next_to_a_threshold_is_near_and_a_far_one_is_not():
    policy, _ = _policy_and_sites()
    t = policy.abnormal_threshold_
    types = np.full(N_TYPES, 1 / N_TYPES)
    m = Margins(abnormal=0.01, types=0.01)
    assert near_a_threshold(policy, t - 0.005, types, m) and near_a_threshold(policy, t + 0.005, types, m)
    assert not near_a_threshold(policy, t - 0.05, types, m)
    low = policy.normal_threshold_
    assert np.isfinite(low) and near_a_threshold(policy, low + 0.005, types, m)
    assert not near_a_threshold(policy, 0.5 * (low + t), types, m)  # mid-review: both thresholds far away


def test_a_type_bar_within_the_margin_counts_as_near_an_undecidable_swap_does_not():
    policy, _ = _policy_and_sites()
    decided = np.flatnonzero(np.isfinite(policy.type_thresholds_))
    assert decided.size, "the synthetic policy should decide some type"
    k = int(decided[0])
    bar, s = policy.type_thresholds_[k], min(1.0, policy.abnormal_threshold_ + 0.1)  # auto-abnormal for sure
    m = Margins(abnormal=0.01, types=0.02)

    def probs(top: float, second: float) -> np.ndarray:
        p = np.full(N_TYPES, (1 - top - second) / (N_TYPES - 2))
        p[k], p[(k + 1) % N_TYPES] = top, second
        return p

    assert near_a_threshold(policy, s, probs(bar + 0.01, 0.0), m)  # just over its bar
    if bar < 0.9:
        assert not near_a_threshold(policy, s, probs(min(1.0, bar + 0.08), 0.0), m)
    if min(bar, policy.type_thresholds_[(k + 1) % N_TYPES]) > 0.52:
        # the top two could swap, but neither would be decided either way: nothing to judge again
        assert not near_a_threshold(policy, s, probs(0.5, 0.49), m)


@pytest.mark.parametrize("noise", [0.003, 0.03])
def test_checked_runtime_keeps_every_fp32_decision_and_rejudges_few(noise):
    policy, (ab, _, ty, _) = _policy_and_sites(seed=1)
    rng = np.random.default_rng(2)
    ab_low = np.clip(ab + rng.uniform(-noise, noise, ab.size), 0, 1)
    ty_low = np.clip(ty + rng.uniform(-noise, noise, ty.shape), 0, 1)
    exact, fast = _Table(ab, ty), _Table(ab_low, ty_low)
    fast.precision = "int8"
    rt = CheckedRuntime(fast, exact, policy, Margins(abnormal=2 * noise, types=2 * noise))
    out = [rt.probabilities(i, None, None, None) for i in range(ab.size)]
    got_ab = np.concatenate([p["abnormal"] for p in out])
    got_ty = np.concatenate([p["types"] for p in out])
    want, got = policy.predict(ab, ty), policy.predict(got_ab, got_ty)
    unchecked = policy.predict(ab_low, ty_low)
    assert (got.route == want.route).all() and (got.type_decision == want.type_decision).all()
    assert (unchecked.route != want.route).any()  # without the check the noise does move routes
    assert rt.judged == ab.size and 0 < rt.checked == exact.calls < 0.5 * ab.size
    assert rt.name == "table" and rt.precision == "int8" and f"{rt.checked} of {ab.size}" in rt.note()


def test_a_policy_with_an_anomaly_rule_is_checked_without_anomaly_scores():
    policy, (ab, y, ty, lab) = _policy_and_sites(seed=3)
    anomaly = np.random.default_rng(4).random(ab.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ruled = TriagePolicy(min_train_samples=0, anomaly_threshold=0.9).fit(ab, y, ty, lab, anomaly_scores=anomaly)
    got = decide(ruled, ab, ty)  # the rule flags nothing here: what the ADC alone decides
    assert (got.route == ruled.predict(ab, ty, anomaly_scores=np.zeros(ab.size)).route).all()
    m = Margins(abnormal=0.01, types=0.01)
    assert near_a_threshold(ruled, ruled.abnormal_threshold_ - 0.005, ty[0], m)


def test_a_third_type_that_could_overtake_the_top_one_counts_as_near():
    policy, _ = _policy_and_sites()
    bars = policy.type_thresholds_
    j = int(np.argmin(bars))  # the type with the lowest bar
    k, second = [t for t in range(N_TYPES) if t != j][:2]
    m = Margins(abnormal=0.01, types=0.02)
    p = np.zeros(N_TYPES)
    # top and second type undecidable even raised by the margin; the third, raised, would overtake the
    # top one (lowered) and clear its own bar
    p[k] = min(bars[k], bars[second]) - 0.05
    p[second], p[j] = p[k] - 0.005, p[k] - 0.02
    assert bars[j] <= p[j] + m.types, "the synthetic policy's lowest bar should sit near its type's score"
    s = min(1.0, policy.abnormal_threshold_ + 0.1)
    assert near_a_threshold(policy, s, p, m)
    p[j] = p[k] - 0.1  # too far behind to overtake
    assert not near_a_threshold(policy, s, p, m)
