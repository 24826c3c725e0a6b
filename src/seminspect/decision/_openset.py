"""Open-set rule for types: "none of the known types" from the type head or the site embedding.

A type head trained on known types still puts its probability somewhere when a site shows a
type it never saw. :class:`OpenSetTypeRule` scores each site by the max-softmax probability
(``score="max_softmax"``, input: probabilities), by the negative energy ``logsumexp(logits)``
(``score="energy"``, input: logits) or by minus the Mahalanobis distance of the site embedding,
scaled to unit length, to the nearest known type's mean (``score="mahalanobis"``, input:
embeddings; the means and a shared Ledoit-Wolf covariance come from the training defects given
to ``fit``; on the long-tail fab it separates unseen types with AUROC 0.734 against 0.615 for
max-softmax, ``benchmarks/results/longtail_triage.md``); higher = more like a known type. ``fit`` takes the
scores of *held-out known-type* defects (calibration split, types seen in training) and sets
the threshold at their ``rejection_rate`` quantile, so about that share of known-type defects
is rejected (the stated cost); the fitted share is reported as ``known_rejection_rate_``.
:meth:`apply` sends flagged sites to review with the reason ``unknown_type``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
from scipy.special import logsumexp

from seminspect.decision._base import PROBABILITY, DecisionError, DecisionEstimator, InsufficientDataError
from seminspect.decision._triage import AUTO_ABNORMAL, AUTO_NORMAL, REVIEW, TriageResult

UNKNOWN_TYPE = "unknown_type"
SCORES = ("max_softmax", "energy", "mahalanobis")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class OpenSetTypeRule(DecisionEstimator):
    """Flag sites whose type confidence is below the ``rejection_rate`` quantile of known types.

    Fitted attributes: ``threshold_`` (flag when score < threshold), ``known_rejection_rate_``
    (share of the fitted known-type scores below it), ``n_``; with ``score="mahalanobis"`` also
    ``means_ (K, D)`` (one per known type) and ``precision_ (D, D)``.
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {"rejection_rate": PROBABILITY}
    _fitted_attributes = ("threshold_", "known_rejection_rate_", "n_", "means_", "precision_")

    def __init__(self, rejection_rate: float = 0.05, score: str = "max_softmax", min_samples: int = 20) -> None:
        self.rejection_rate = rejection_rate
        self.score = score
        self.min_samples = min_samples

    def scores(self, type_outputs: Any) -> np.ndarray:
        """``(N,)`` known-type confidence from ``(N, C)`` probabilities (max_softmax), logits (energy)
        or site embeddings (mahalanobis, after ``fit``)."""
        owner = type(self).__name__
        if self.score not in SCORES:
            raise DecisionError(f"{owner}: score must be one of {SCORES}, got {self.score!r}")
        x = np.asarray(type_outputs, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] < 2 or not np.isfinite(x).all():
            raise DecisionError(f"{owner}: type outputs must be a finite (N, C>=2) array, got shape {x.shape}")
        if self.score == "mahalanobis":
            if getattr(self, "means_", None) is None:
                raise DecisionError(f"{owner}: score='mahalanobis' needs fit(..., train_embeddings, train_types) first")
            if x.shape[1] != self.means_.shape[1]:
                raise DecisionError(f"{owner}: embeddings of width {x.shape[1]}, "
                                    f"fitted on width {self.means_.shape[1]}")
            x = _unit(x)
            d = np.stack([np.einsum("ij,jk,ik->i", x - m, self.precision_, x - m) for m in self.means_], axis=1)
            return -d.min(axis=1)
        if self.score == "energy":
            return logsumexp(x, axis=1)
        if (x < -1e-6).any() or np.abs(x.sum(axis=1) - 1.0).max() > 1e-3:
            raise DecisionError(f"{owner}: max_softmax needs probabilities (rows >= 0 summing to 1); "
                                "pass logits with score='energy'")
        return x.max(axis=1)

    def fit(self, known_type_outputs: Any, train_embeddings: Any = None, train_types: Any = None) -> OpenSetTypeRule:
        """``(N, C)`` outputs of held-out defects of known (trained) types.

        ``score="mahalanobis"``: the outputs are site embeddings, and ``train_embeddings (M, D)`` with
        ``train_types (M,)`` (the training split's defects; type -1 = none, ignored) set the type
        means and the shared covariance.
        """
        self._validate_params()
        self.means_: np.ndarray | None = None
        self.precision_: np.ndarray | None = None
        if self.score == "mahalanobis":
            self._fit_means(train_embeddings, train_types)
        s = self.scores(known_type_outputs)
        if s.size < self.min_samples:
            raise InsufficientDataError(f"{type(self).__name__}: {s.size} known-type sites are too few to set "
                                        f"the threshold; at least min_samples={self.min_samples} are needed")
        self.threshold_ = float(np.quantile(s, self.rejection_rate, method="lower"))
        self.known_rejection_rate_ = float(np.mean(s < self.threshold_))
        self.n_ = int(s.size)
        return self

    def _fit_means(self, embeddings: Any, types: Any) -> None:
        from sklearn.covariance import LedoitWolf

        owner = type(self).__name__
        if embeddings is None or types is None:
            raise DecisionError(f"{owner}: score='mahalanobis' needs train_embeddings and train_types")
        e, t = np.asarray(embeddings, dtype=np.float64), np.asarray(types).astype(np.int64)
        if e.ndim != 2 or t.shape != (e.shape[0],) or not np.isfinite(e).all():
            raise DecisionError(f"{owner}: train_embeddings must be a finite (M, D) array with one type each, "
                                f"got {e.shape} and {t.shape}")
        keep = t >= 0
        kinds = np.unique(t[keep])
        if keep.sum() < self.min_samples or kinds.size < 1:
            raise InsufficientDataError(f"{owner}: {int(keep.sum())} typed training defects are too few for the "
                                        f"type means; at least min_samples={self.min_samples} are needed")
        e, t = _unit(e[keep]), t[keep]
        self.means_ = np.stack([e[t == k].mean(axis=0) for k in kinds])
        self.precision_ = LedoitWolf().fit(e - self.means_[np.searchsorted(kinds, t)]).precision_

    def predict(self, type_outputs: Any) -> np.ndarray:
        """``(N,)`` bool: True = not one of the known types."""
        self._check_fitted()
        return self.scores(type_outputs) < self.threshold_

    def apply(self, result: TriageResult, type_outputs: Any,
              include_auto_normal: bool = False) -> tuple[TriageResult, np.ndarray]:
        """Route flagged sites to review; returns the new result and ``(N,)`` reasons ("" = none).

        Flagged ``auto_abnormal`` sites go to review with their type undecided (the binary call
        needs a person once the type is unknown); ``auto_normal`` sites only when
        ``include_auto_normal`` (a type head's confidence on normal sites says little).
        """
        flag = self.predict(type_outputs)
        if flag.shape[0] != len(result):
            raise DecisionError(f"{type(self).__name__}: {flag.shape[0]} type outputs for {len(result)} sites")
        routes = (AUTO_ABNORMAL, AUTO_NORMAL) if include_auto_normal else (AUTO_ABNORMAL,)
        hit = flag & np.isin(result.route, routes)
        route = result.route.copy()
        route[hit] = REVIEW
        decision = result.type_decision.copy()
        decision[hit] = -1
        reasons = np.where(hit, UNKNOWN_TYPE, "").astype(object)
        return replace(result, route=route, type_decision=decision), reasons
