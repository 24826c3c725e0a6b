"""Score thresholds whose error targets hold with a stated confidence on new data.

Every threshold here is chosen on a calibration split from an exact one-sided binomial
(Clopper-Pearson) bound, never from the point estimate: a point estimate of 99 % precision on
300 samples is below 99 % on new data about half the time.

- :class:`PrecisionThreshold`: "abnormal" when ``score >= threshold_``; the lower bound of
  precision among selected samples >= ``target_precision``; maximises recall.
- :class:`NegativePredictiveThreshold`: "normal" when ``score <= threshold_``; the upper bound of
  the missed-defect rate among those samples <= ``max_miss_rate``; maximises how many are covered.
- :class:`NormalQuantileThreshold`: from normal scores only, "anomalous" when
  ``score > threshold_``; the upper bound of the false-alarm rate <= ``false_alarm_rate``.

Scores: 1-D, higher = more abnormal. Precision and miss rate depend on the abnormal share
(prevalence) of the calibration split: calibrate on data with the prevalence of production.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
from scipy import stats

from seminspect.decision._base import (
    PROBABILITY,
    DecisionEstimator,
    InsufficientDataError,
    Interval,
    check_binary,
    check_scores,
)
from seminspect.decision._bounds import clopper_pearson_lower, clopper_pearson_upper, min_samples_for_zero_errors


def _sweep(scores: np.ndarray, positives: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative counts at every distinct score, walking from the most extreme score inward.

    Returns ``(thresholds, n_selected, n_positive)``, each ``(T,)``: selecting the samples with
    ``score >= thresholds[i]`` (descending) or ``score <= thresholds[i]`` (ascending) picks
    ``n_selected[i]`` samples of which ``n_positive[i]`` are positive. Ties stay together.
    """
    if scores.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros(0), empty, empty
    order = np.argsort(-scores if descending else scores, kind="stable")
    s = scores[order]
    pos = np.cumsum(positives[order].astype(np.int64))
    n = np.arange(1, s.size + 1, dtype=np.int64)
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    return s[last_of_tie], n[last_of_tie], pos[last_of_tie]


def _first_feasible_run(ok: np.ndarray) -> int:
    """Index of the end of the first run of True values in ``ok`` (walking outward); -1 if none.

    Walking from the most extreme threshold inward, the selection starts at the first threshold
    whose bound meets the target and stops at the first one that does not. Stopping at the first
    failure (fixed-sequence testing) rather than taking the farthest threshold that passes keeps
    the chance of a false pass near ``1 - confidence``: taking the farthest of many correlated
    tests would let one lucky dip through.
    """
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return -1
    start = idx[0]
    fails = np.flatnonzero(~ok[start:])
    return int(start + fails[0] - 1) if fails.size else int(ok.size - 1)


def select_precision_threshold(
    scores: np.ndarray, positives: np.ndarray, target: float, confidence: float
) -> tuple[float, int, int, float]:
    """The lowest threshold (widest selection) whose precision lower bound >= ``target``.

    Returns ``(threshold, n_selected, n_true_positive, lower_bound)``; threshold ``+inf`` (and
    zeros) when none qualifies.
    """
    thr, n_sel, tp = _sweep(scores, positives, descending=True)
    lower = np.asarray(clopper_pearson_lower(tp, n_sel, confidence))
    i = _first_feasible_run(lower >= target)
    if i < 0:
        return float("inf"), 0, 0, 0.0
    # Among thresholds with the same recall, the highest admits the fewest false positives.
    i = int(np.searchsorted(tp, tp[i], side="left"))
    return float(thr[i]), int(n_sel[i]), int(tp[i]), float(lower[i])


class PrecisionThreshold(DecisionEstimator):
    """Precision-constrained threshold: call "abnormal" when ``score >= threshold_``.

    ``fit`` picks the threshold that maximises recall subject to the one-sided Clopper-Pearson
    lower confidence bound of precision (at ``confidence``) being >= ``target_precision``.
    Needs at least :func:`min_samples_for_zero_errors` selected positives (299 for 99 % at 95 %).
    When no threshold qualifies (or recall < ``min_recall``), ``feasible_`` is False,
    ``threshold_`` is ``+inf`` (no automatic decisions), ``reason_`` says why and a warning is
    issued.

    Fitted attributes: ``threshold_``, ``precision_``, ``precision_lower_bound_``, ``recall_``,
    ``n_selected_``, ``n_positive_``, ``feasible_``, ``reason_``.
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "target_precision": PROBABILITY,
        "confidence": PROBABILITY,
        "min_recall": Interval(float, 0.0, 1.0, "both"),
    }
    _fitted_attributes = (
        "threshold_", "precision_", "precision_lower_bound_", "recall_",
        "n_selected_", "n_positive_", "feasible_", "reason_",
    )

    def __init__(self, target_precision: float = 0.99, confidence: float = 0.95, min_recall: float = 0.0) -> None:
        self.target_precision = target_precision
        self.confidence = confidence
        self.min_recall = min_recall

    def fit(self, scores: Any, labels: Any) -> PrecisionThreshold:
        """``scores`` (N,) float, higher = more abnormal; ``labels`` (N,) 0/1 or bool (1 = abnormal)."""
        self._validate_params()
        owner = type(self).__name__
        s = check_scores(scores, "scores", owner)
        y = check_binary(labels, s.size, "labels", owner)
        n_pos = int(y.sum())
        thr, n_sel, tp, lower = select_precision_threshold(s, y, self.target_precision, self.confidence)
        self.n_positive_ = n_pos
        recall = tp / n_pos if n_pos else 0.0
        reason = ""
        if not np.isfinite(thr):
            need = min_samples_for_zero_errors(1.0 - self.target_precision, self.confidence)
            reason = (
                f"no threshold reaches a {self.confidence:.0%} lower bound of precision >= {self.target_precision:g} "
                f"({n_pos} positives of {s.size}; even error-free selections need >= {need} samples)"
            )
        elif recall < self.min_recall:
            reason = f"best recall {recall:.3f} at the precision bound is below min_recall={self.min_recall:g}"
        if reason:
            warnings.warn(f"{owner}: {reason}; no automatic decisions (threshold = +inf)", stacklevel=2)
            self.threshold_, self.precision_, self.precision_lower_bound_ = float("inf"), float("nan"), 0.0
            self.recall_, self.n_selected_, self.feasible_ = 0.0, 0, False
        else:
            self.threshold_, self.precision_, self.precision_lower_bound_ = thr, tp / n_sel, lower
            self.recall_, self.n_selected_, self.feasible_ = recall, n_sel, True
        self.reason_ = reason
        return self

    def predict(self, scores: Any) -> np.ndarray:
        """``(N,)`` bool: True = abnormal (``score >= threshold_``)."""
        self._check_fitted()
        return check_scores(scores, "scores", type(self).__name__) >= self.threshold_


class NegativePredictiveThreshold(DecisionEstimator):
    """Auto-normal threshold: call "normal" when ``score <= threshold_``.

    ``fit`` picks the highest threshold (most samples auto-called normal) whose one-sided upper
    confidence bound of the missed-defect rate among the selected samples (abnormal share among
    ``score <= threshold_``) is <= ``max_miss_rate``. Needs at least
    :func:`min_samples_for_zero_errors` selected samples (598 for 0.5 % at 95 %). When none
    qualifies ``threshold_`` is ``-inf`` (nothing auto-normal) and ``feasible_`` is False.

    Fitted attributes: ``threshold_``, ``miss_rate_``, ``miss_rate_upper_bound_``,
    ``n_selected_``, ``normal_coverage_`` (share of calibration normals auto-called normal),
    ``feasible_``, ``reason_``.
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {"max_miss_rate": PROBABILITY, "confidence": PROBABILITY}
    _fitted_attributes = (
        "threshold_", "miss_rate_", "miss_rate_upper_bound_", "n_selected_", "normal_coverage_", "feasible_", "reason_",
    )

    def __init__(self, max_miss_rate: float = 0.005, confidence: float = 0.95) -> None:
        self.max_miss_rate = max_miss_rate
        self.confidence = confidence

    def fit(self, scores: Any, labels: Any) -> NegativePredictiveThreshold:
        """``scores`` (N,) float, higher = more abnormal; ``labels`` (N,) 0/1 (1 = abnormal)."""
        self._validate_params()
        owner = type(self).__name__
        s = check_scores(scores, "scores", owner)
        y = check_binary(labels, s.size, "labels", owner)
        thr, n_sel, misses = _sweep(s, y, descending=False)
        upper = np.asarray(clopper_pearson_upper(misses, n_sel, self.confidence))
        i = _first_feasible_run(upper <= self.max_miss_rate)
        if i >= 0:
            # Among thresholds covering the same normals, the lowest lets the fewest defects through.
            covered = n_sel - misses
            i = int(np.searchsorted(covered, covered[i], side="left"))
        if i < 0:
            need = min_samples_for_zero_errors(self.max_miss_rate, self.confidence)
            self.reason_ = (
                f"no threshold keeps the {self.confidence:.0%} upper bound of missed defects <= {self.max_miss_rate:g} "
                f"({s.size} samples; even miss-free selections need >= {need})"
            )
            warnings.warn(f"{owner}: {self.reason_}; nothing is auto-normal (threshold = -inf)", stacklevel=2)
            self.threshold_, self.miss_rate_, self.miss_rate_upper_bound_ = float("-inf"), float("nan"), 1.0
            self.n_selected_, self.normal_coverage_, self.feasible_ = 0, 0.0, False
            return self
        return self.fit_at(s, y, float(thr[i]))  # the counts and bound there (feasible by construction)

    def fit_at(self, scores: Any, labels: Any, threshold: float) -> NegativePredictiveThreshold:
        """The fitted state at a ``threshold`` chosen elsewhere (e.g. a fixed share of normal scores): the
        missed-defect rate there and its upper bound; ``feasible_`` says whether the bound meets
        ``max_miss_rate`` (the threshold is kept either way)."""
        self._validate_params()
        owner = type(self).__name__
        s = check_scores(scores, "scores", owner)
        y = check_binary(labels, s.size, "labels", owner)
        sel = s <= threshold
        n_sel, misses, n_normal = int(sel.sum()), int(y[sel].sum()), int((~y).sum())
        self.threshold_ = float(threshold)
        self.n_selected_ = n_sel
        self.miss_rate_ = misses / n_sel if n_sel else float("nan")
        self.miss_rate_upper_bound_ = float(clopper_pearson_upper(misses, n_sel, self.confidence))
        self.normal_coverage_ = (n_sel - misses) / n_normal if n_normal else 0.0
        self.feasible_ = self.miss_rate_upper_bound_ <= self.max_miss_rate
        self.reason_ = "" if self.feasible_ else (
            f"at threshold {threshold:.4g} the {self.confidence:.0%} upper bound of missed defects is "
            f"{self.miss_rate_upper_bound_:.3g} > {self.max_miss_rate:g}")
        return self

    def predict(self, scores: Any) -> np.ndarray:
        """``(N,)`` bool: True = auto-normal (``score <= threshold_``)."""
        self._check_fitted()
        return check_scores(scores, "scores", type(self).__name__) <= self.threshold_


class NormalQuantileThreshold(DecisionEstimator):
    """Threshold from normal scores only: call "anomalous" when ``score > threshold_``.

    With ``n`` normal scores sorted ``x(1) <= ... <= x(n)``, the false-alarm rate of ``x(k)`` on
    new normal data, ``1 - F(x(k))``, is Beta(n - k + 1, k) distributed for any continuous score
    distribution (distribution-free; ties only make it smaller). ``fit`` picks the smallest ``k``
    whose ``confidence`` upper bound of that rate is <= ``false_alarm_rate``, i.e. the lowest
    threshold (best sensitivity) with ``P(false-alarm rate > target) <= 1 - confidence``. This
    is the one-sided Clopper-Pearson upper bound for ``n - k`` alarms among ``n`` normals.

    Needs ``n >= log(1 - confidence) / log(1 - false_alarm_rate)`` (299 for 1 % at 95 %); fewer
    raises :class:`InsufficientDataError` saying how many are needed.

    Fitted attributes: ``threshold_``, ``false_alarm_upper_bound_``, ``false_alarm_rate_``
    (share of the fitted normals above the threshold), ``order_statistic_`` (``k``, 1-based), ``n_``.
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {"false_alarm_rate": PROBABILITY, "confidence": PROBABILITY}
    _fitted_attributes = ("threshold_", "false_alarm_upper_bound_", "false_alarm_rate_", "order_statistic_", "n_")

    def __init__(self, false_alarm_rate: float = 0.01, confidence: float = 0.95) -> None:
        self.false_alarm_rate = false_alarm_rate
        self.confidence = confidence

    @staticmethod
    def min_samples(false_alarm_rate: float = 0.01, confidence: float = 0.95) -> int:
        """Fewest normal samples for which the bound can be met at all."""
        return min_samples_for_zero_errors(false_alarm_rate, confidence)

    def fit(self, normal_scores: Any, labels: Any = None) -> NormalQuantileThreshold:
        """``normal_scores`` (N,) float scores of normal samples only. ``labels`` is ignored (API symmetry)."""
        self._validate_params()
        owner = type(self).__name__
        s = np.sort(check_scores(normal_scores, "normal_scores", owner))
        n = s.size
        need = self.min_samples(self.false_alarm_rate, self.confidence)
        if n < need:
            raise InsufficientDataError(
                f"{owner}: {n} normal scores are too few to bound the false-alarm rate at {self.false_alarm_rate:g} "
                f"with {self.confidence:.0%} confidence; at least {need} are needed"
            )
        k = np.arange(1, n + 1)
        # P(false-alarm rate of x(k) > target) = P(Binomial(n, 1 - target) >= k); decreasing in k
        p_exceed = stats.binom.sf(k - 1, n, 1.0 - self.false_alarm_rate)
        k_sel = int(k[np.argmax(p_exceed <= 1.0 - self.confidence)])
        self.order_statistic_ = k_sel
        self.threshold_ = float(s[k_sel - 1])
        self.false_alarm_upper_bound_ = float(stats.beta.ppf(self.confidence, n - k_sel + 1, k_sel))
        self.false_alarm_rate_ = float(np.mean(s > self.threshold_))
        self.n_ = int(n)
        return self

    def predict(self, scores: Any) -> np.ndarray:
        """``(N,)`` bool: True = anomalous (``score > threshold_``)."""
        self._check_fitted()
        return check_scores(scores, "scores", type(self).__name__) > self.threshold_
