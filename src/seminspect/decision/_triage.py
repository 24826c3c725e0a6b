"""Triage: which samples a person must look at, and which the machine may decide alone.

Binary route per sample, from the abnormal score (higher = more likely a defect):
``auto_abnormal`` (score >= the precision-bounded threshold), ``auto_normal`` (score <= the
miss-bounded threshold, below the abnormal one, and, when an anomaly rule is set, anomaly
score <= ``anomaly_threshold``), else ``review``.

Type per sample: among ``auto_abnormal`` samples, the predicted type (arg-max of ``type_probs``)
is auto-classified when its probability clears that type's calibrated bar; otherwise the type
goes to review with the ``top_k`` most probable types as suggestions. A type's bar is the
lowest max-probability at which the lower confidence bound of precision among calibration
defects predicted as that type is >= ``type_precision``; types with fewer than
``min_train_samples`` training samples, or too few calibration samples to reach the bound,
have an infinite bar (never auto-classified).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from seminspect.decision._base import (
    PROBABILITY,
    DecisionError,
    DecisionEstimator,
    Interval,
    Optional_,
    check_binary,
    check_scores,
)
from seminspect.decision._thresholds import (
    NegativePredictiveThreshold,
    PrecisionThreshold,
    select_precision_threshold,
)

AUTO_ABNORMAL = "auto_abnormal"
AUTO_NORMAL = "auto_normal"
REVIEW = "review"
ROUTES = (AUTO_ABNORMAL, AUTO_NORMAL, REVIEW)


@dataclass
class TriageResult:
    """Per-sample decisions of :meth:`TriagePolicy.predict` (N samples, C types, k suggestions).

    ``route`` (N,) str in ``ROUTES``; ``type_decision`` (N,) int64 leaf index, -1 = review (or no
    type: not auto-abnormal, or no type probabilities); ``top_k_types`` (N, k) int64 and
    ``top_k_probs`` (N, k) float64, most probable first (k = 0 without type probabilities);
    ``abnormal_scores`` (N,); ``anomaly_flag`` (N,) bool or None (anomaly score above the rule).
    """

    route: np.ndarray
    type_decision: np.ndarray
    top_k_types: np.ndarray
    top_k_probs: np.ndarray
    abnormal_scores: np.ndarray
    anomaly_flag: np.ndarray | None = None
    type_names: list[str] | None = field(default=None)

    def __len__(self) -> int:
        return int(self.route.shape[0])

    @property
    def automated(self) -> np.ndarray:
        """(N,) bool: the binary decision was made without a person."""
        return self.route != REVIEW

    @property
    def type_automated(self) -> np.ndarray:
        """(N,) bool: the type was auto-classified."""
        return self.type_decision >= 0

    @property
    def fully_automated(self) -> np.ndarray:
        """(N,) bool: no person needed at all (auto-normal, or auto-abnormal with its type decided).

        Without type probabilities the type is not part of the job, so auto-abnormal counts.
        """
        has_types = self.top_k_types.shape[1] > 0
        abnormal_done = (self.route == AUTO_ABNORMAL) & (self.type_automated if has_types else True)
        return (self.route == AUTO_NORMAL) | abnormal_done

    def summary(self) -> dict[str, Any]:
        """Counts per route and the automation rates (shares of all samples)."""
        n = len(self)
        counts = {r: int(np.sum(self.route == r)) for r in ROUTES}
        n_auto_abn = counts[AUTO_ABNORMAL]
        out: dict[str, Any] = {
            "n_samples": n,
            **{f"n_{r}": c for r, c in counts.items()},
            "binary_automation_rate": (n - counts[REVIEW]) / n if n else float("nan"),
            "n_type_auto": int(self.type_automated.sum()),
            "type_automation_rate": float(self.type_automated.sum() / n_auto_abn) if n_auto_abn else float("nan"),
            "automation_rate": float(self.fully_automated.mean()) if n else float("nan"),
        }
        if self.anomaly_flag is not None:
            out["n_anomaly_flagged"] = int(self.anomaly_flag.sum())
        return out

    def to_frame(self) -> Any:
        """A pandas DataFrame, one row per sample (type names when known)."""
        import pandas as pd

        cols: dict[str, Any] = {"route": self.route, "abnormal_score": self.abnormal_scores}
        cols["type_decision"] = self.type_decision
        if self.type_names is not None:
            names = np.array([*self.type_names, ""], dtype=object)
            cols["type_name"] = names[self.type_decision]  # -1 picks the trailing ""
        for j in range(self.top_k_types.shape[1]):
            cols[f"top{j + 1}_type"] = self.top_k_types[:, j]
            cols[f"top{j + 1}_prob"] = self.top_k_probs[:, j]
        if self.anomaly_flag is not None:
            cols["anomaly_flag"] = self.anomaly_flag
        return pd.DataFrame(cols)


def _check_probs(probs: Any, n: int, owner: str, n_types: int | None = None) -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise DecisionError(f"{owner}: type_probs must have shape ({n}, C), got {arr.shape}")
    if n_types is not None and arr.shape[1] != n_types:
        raise DecisionError(f"{owner}: type_probs has {arr.shape[1]} types, the policy was fitted with {n_types}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise DecisionError(f"{owner}: type_probs must be finite and >= 0 (probabilities, not logits)")
    return arr


class TriagePolicy(DecisionEstimator):
    """Three-way binary routing plus per-type auto-classification, calibrated with confidence bounds.

    Parameters
    ----------
    abnormal_precision: lower bound of precision among auto-abnormal samples.
    normal_miss_rate: upper bound of the defect share among auto-normal samples.
    confidence: one-sided confidence of every bound.
    type_precision: lower bound of type precision among auto-classified samples of each type.
    min_train_samples: types with fewer training samples are never auto-classified.
    top_k: type suggestions kept for review.
    anomaly_threshold: optional rule; a sample whose anomaly score exceeds it is never auto-normal
        (e.g. ``NormalQuantileThreshold(...).fit(normal_anomaly_scores).threshold_``).
    normal_coverage: optional; the auto-normal threshold is the ``normal_coverage`` quantile of the
        calibration normals' scores instead of the certified one (not certified: the missed-defect rate
        there and its bound are still computed, ``normal_thresholder_.feasible_`` says whether the bound meets
        ``normal_miss_rate``). For defect types the calibration split lacks, which no bound covers.

    Fitted attributes: ``abnormal_threshold_``, ``normal_threshold_`` (floats; +inf / -inf when
    a route is infeasible), ``abnormal_thresholder_`` (:class:`PrecisionThreshold`),
    ``normal_thresholder_`` (:class:`NegativePredictiveThreshold`), ``n_types_`` (0 without
    types), ``type_thresholds_`` (C,) float64 bars (+inf = never auto), ``type_precision_lower_bounds_``
    (C,), ``type_calibration_counts_`` (C,) int64, ``type_train_counts_`` (C,) int64 or None,
    ``type_reasons_`` (C,) str (why a type is never auto-classified), ``type_names_``.
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "abnormal_precision": PROBABILITY,
        "normal_miss_rate": PROBABILITY,
        "confidence": PROBABILITY,
        "type_precision": PROBABILITY,
        "min_train_samples": Interval(int, 0, None, "left"),
        "top_k": Interval(int, 1, None, "left"),
        "anomaly_threshold": Optional_(Interval(float, None, None)),
        "normal_coverage": Optional_(Interval(float, 0.0, 1.0, "neither")),
    }
    _fitted_attributes = (
        "abnormal_threshold_", "normal_threshold_", "abnormal_thresholder_", "normal_thresholder_",
        "n_types_", "type_thresholds_", "type_precision_lower_bounds_", "type_calibration_counts_",
        "type_train_counts_", "type_reasons_", "type_names_",
    )

    def __init__(
        self,
        abnormal_precision: float = 0.99,
        normal_miss_rate: float = 0.005,
        confidence: float = 0.95,
        type_precision: float = 0.95,
        min_train_samples: int = 80,
        top_k: int = 3,
        anomaly_threshold: float | None = None,
        normal_coverage: float | None = None,
    ) -> None:
        self.abnormal_precision = abnormal_precision
        self.normal_miss_rate = normal_miss_rate
        self.confidence = confidence
        self.type_precision = type_precision
        self.min_train_samples = min_train_samples
        self.top_k = top_k
        self.anomaly_threshold = anomaly_threshold
        self.normal_coverage = normal_coverage

    # ------------------------------------------------------------------------------------------
    def fit(
        self,
        abnormal_scores: Any,
        is_abnormal: Any,
        type_probs: Any = None,
        type_labels: Any = None,
        type_train_counts: Any = None,
        anomaly_scores: Any = None,
        type_names: list[str] | None = None,
    ) -> TriagePolicy:
        """Calibrate on a held-out split (never the training split).

        ``abnormal_scores`` (N,) float; ``is_abnormal`` (N,) 0/1; ``type_probs`` (N, C) type
        probabilities (rows of normal samples are ignored); ``type_labels`` (N,) int leaf index,
        -1 for normal or unlabelled samples; ``type_train_counts`` (C,) training samples per
        type; ``anomaly_scores`` (N,) needed when ``anomaly_threshold`` is set: the auto-normal
        bound is then calibrated on the samples the anomaly rule lets through.
        """
        self._validate_params()
        owner = type(self).__name__
        s = check_scores(abnormal_scores, "abnormal_scores", owner)
        y = check_binary(is_abnormal, s.size, "is_abnormal", owner)
        passes_rule = ~self._anomaly_flag(anomaly_scores, s.size)

        self.abnormal_thresholder_ = PrecisionThreshold(self.abnormal_precision, self.confidence).fit(s, y)
        self.abnormal_threshold_ = float(self.abnormal_thresholder_.threshold_)
        self._fit_normal(s, y, passes_rule)
        self._fit_types(s.size, y, type_probs, type_labels, type_train_counts, type_names)
        return self

    def _fit_normal(self, s: np.ndarray, y: np.ndarray, passes_rule: np.ndarray) -> None:
        """The auto-normal route on the samples the anomaly rule lets through (all of them without a rule)."""
        npv = NegativePredictiveThreshold(self.normal_miss_rate, self.confidence)
        if self.normal_coverage is None:
            self.normal_thresholder_ = npv.fit(s[passes_rule], y[passes_rule])
        elif not (~y).any():
            raise DecisionError(f"{type(self).__name__}: normal_coverage needs normal samples in the calibration split")
        else:
            thr = float(np.quantile(s[~y], self.normal_coverage))
            self.normal_thresholder_ = npv.fit_at(s[passes_rule], y[passes_rule], thr)
        self.normal_threshold_ = float(self.normal_thresholder_.threshold_)

    def refit_normal_route(self, abnormal_scores: Any, is_abnormal: Any, anomaly_threshold: float | None,
                           anomaly_scores: Any = None) -> TriagePolicy:
        """Adopt a new anomaly rule and calibrate the auto-normal route again on the samples it lets through.

        For a fitted policy that gains (or changes) its anomaly rule after calibration (``seminspect join``): the
        rule removes samples from the auto-normal route, so the bound on the defect share among the rest is computed
        again, on held-out samples scored like ``fit``'s. The auto-abnormal route and the type bars are unchanged.
        """
        self._check_fitted()
        owner = type(self).__name__
        s = check_scores(abnormal_scores, "abnormal_scores", owner)
        y = check_binary(is_abnormal, s.size, "is_abnormal", owner)
        self.anomaly_threshold = None if anomaly_threshold is None else float(anomaly_threshold)
        self._validate_params()
        self._fit_normal(s, y, ~self._anomaly_flag(anomaly_scores, s.size))
        return self

    def _anomaly_flag(self, anomaly_scores: Any, n: int) -> np.ndarray:
        """(n,) bool: anomaly score above the rule's threshold (all False without a rule)."""
        if self.anomaly_threshold is None:
            return np.zeros(n, dtype=bool)
        if anomaly_scores is None:
            raise DecisionError(f"{type(self).__name__}: anomaly_threshold is set, so anomaly_scores are required")
        a = check_scores(anomaly_scores, "anomaly_scores", type(self).__name__)
        if a.size != n:
            raise DecisionError(f"{type(self).__name__}: anomaly_scores has {a.size} values, expected {n}")
        return a > self.anomaly_threshold

    def _fit_types(
        self, n: int, y: np.ndarray, type_probs: Any, type_labels: Any, type_train_counts: Any, type_names: Any
    ) -> None:
        owner = type(self).__name__
        if type_probs is None:
            if type_labels is not None:
                raise DecisionError(f"{owner}: type_labels given without type_probs")
            self.n_types_ = 0
            self.type_thresholds_ = np.zeros(0)
            self.type_precision_lower_bounds_ = np.zeros(0)
            self.type_calibration_counts_ = np.zeros(0, dtype=np.int64)
            self.type_train_counts_ = None
            self.type_reasons_ = []
            self.type_names_ = None
            return
        probs = _check_probs(type_probs, n, owner)
        c = probs.shape[1]
        if type_labels is None:
            raise DecisionError(f"{owner}: type_probs need type_labels (leaf index, -1 for normal samples)")
        labels = np.asarray(type_labels)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise DecisionError(f"{owner}: type_labels must be ({n},) integers, got {labels.shape} {labels.dtype}")
        if labels.max(initial=-1) >= c or labels.min(initial=0) < -1:
            raise DecisionError(f"{owner}: type_labels must lie in [-1, {c - 1}]")
        counts = None
        if type_train_counts is not None:
            counts = np.asarray(type_train_counts)
            if counts.shape != (c,) or not np.issubdtype(counts.dtype, np.integer):
                raise DecisionError(f"{owner}: type_train_counts must be ({c},) integers, got {counts.shape}")
            counts = counts.astype(np.int64)
        if type_names is not None and len(type_names) != c:
            raise DecisionError(f"{owner}: {len(type_names)} type_names for {c} types")

        use = y & (labels >= 0)  # type bars are calibrated on labelled defects
        pred = probs[use].argmax(axis=1)
        conf = probs[use].max(axis=1)
        truth = labels[use]
        bars = np.full(c, np.inf)
        lower = np.zeros(c)
        n_cal = np.bincount(pred, minlength=c).astype(np.int64)
        reasons = [""] * c
        for t in range(c):
            if counts is not None and counts[t] < self.min_train_samples:
                reasons[t] = f"{counts[t]} training samples < min_train_samples={self.min_train_samples}"
                continue
            sel = pred == t
            bar, _, _, lb = select_precision_threshold(conf[sel], truth[sel] == t, self.type_precision, self.confidence)
            if not np.isfinite(bar):
                reasons[t] = (
                    f"{int(sel.sum())} calibration defects predicted as this type do not reach a "
                    f"{self.confidence:.0%} lower bound of precision >= {self.type_precision:g}"
                )
                continue
            bars[t], lower[t] = bar, lb
        self.n_types_ = int(c)
        self.type_thresholds_ = bars
        self.type_precision_lower_bounds_ = lower
        self.type_calibration_counts_ = n_cal
        self.type_train_counts_ = counts
        self.type_reasons_ = reasons
        self.type_names_ = [str(x) for x in type_names] if type_names is not None else None

    # ------------------------------------------------------------------------------------------
    def predict(self, abnormal_scores: Any, type_probs: Any = None, anomaly_scores: Any = None) -> TriageResult:
        """Route ``abnormal_scores`` (N,) and, with ``type_probs`` (N, C), decide or suggest types."""
        self._check_fitted()
        owner = type(self).__name__
        s = check_scores(abnormal_scores, "abnormal_scores", owner)
        n = s.size
        flag = self._anomaly_flag(anomaly_scores, n)
        auto_abn = s >= self.abnormal_threshold_
        # auto-abnormal wins any overlap, so auto-abnormal scores always exceed auto-normal ones
        auto_norm = (s <= self.normal_threshold_) & ~auto_abn & ~flag
        route = np.full(n, REVIEW, dtype="<U13")
        route[auto_abn] = AUTO_ABNORMAL
        route[auto_norm] = AUTO_NORMAL

        type_decision = np.full(n, -1, dtype=np.int64)
        if type_probs is None or self.n_types_ == 0:
            top_types = np.zeros((n, 0), dtype=np.int64)
            top_probs = np.zeros((n, 0), dtype=np.float64)
        else:
            probs = _check_probs(type_probs, n, owner, self.n_types_)
            k = min(self.top_k, self.n_types_)
            # stable sort on -p: ties keep the lower index first, the same as argmax
            top_types = np.argsort(-probs, axis=1, kind="stable")[:, :k].astype(np.int64)
            top_probs = np.take_along_axis(probs, top_types, axis=1)
            best, best_p = top_types[:, 0], top_probs[:, 0]
            decide = auto_abn & (best_p >= self.type_thresholds_[best])
            type_decision[decide] = best[decide]
        return TriageResult(
            route=route,
            type_decision=type_decision,
            top_k_types=top_types,
            top_k_probs=top_probs,
            abnormal_scores=s,
            anomaly_flag=flag if self.anomaly_threshold is not None else None,
            type_names=self.type_names_,
        )

    def describe(self) -> dict[str, Any]:
        """The calibrated operating point in plain numbers (for reports and logs)."""
        self._check_fitted()
        a, b = self.abnormal_thresholder_, self.normal_thresholder_
        out: dict[str, Any] = {
            "abnormal_threshold": self.abnormal_threshold_,
            "abnormal_precision_calib": a.precision_,
            "abnormal_precision_lower_bound": a.precision_lower_bound_,
            "abnormal_recall_calib": a.recall_,
            "normal_threshold": self.normal_threshold_,
            "normal_miss_rate_calib": b.miss_rate_,
            "normal_miss_rate_upper_bound": b.miss_rate_upper_bound_,
            "normal_coverage_calib": b.normal_coverage_,
            "normal_route": ("certified" if self.normal_coverage is None
                             else f"fixed coverage {self.normal_coverage:g} of calibration normals (not certified)"),
        }
        if self.n_types_:
            names = self.type_names_ or [str(i) for i in range(self.n_types_)]
            out["types"] = [
                {
                    "type": names[t],
                    "bar": float(self.type_thresholds_[t]),
                    "precision_lower_bound": float(self.type_precision_lower_bounds_[t]),
                    "calibration_predicted": int(self.type_calibration_counts_[t]),
                    "train_count": None if self.type_train_counts_ is None else int(self.type_train_counts_[t]),
                    "never_auto_because": self.type_reasons_[t],
                }
                for t in range(self.n_types_)
            ]
        return out
