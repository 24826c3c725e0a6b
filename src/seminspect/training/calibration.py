"""Calibration of the decision layer on the ``calib`` split: precision threshold and triage policy.

    thresholds = calibrate(abnormal, is_abnormal, type_probs, type_labels, type_train_counts, cfg, leaves)

Returns the JSON-ready content of an artefact's ``thresholds.json``. Scores in, thresholds out:
nothing here sees an image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from seminspect.decision import OpenSetTypeRule, PrecisionThreshold, TriagePolicy
from seminspect.errors import SeminspectError
from seminspect.training.config import ADCConfig


def calibrate(abnormal: np.ndarray, is_abnormal: np.ndarray, type_probs: np.ndarray | None, type_labels: np.ndarray |
              None, type_train_counts: np.ndarray | None, cfg: ADCConfig,
              cfg_type_names: Sequence[str] | None = None, embeddings: np.ndarray | None = None,
              train_embeddings: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Fit the precision threshold and the triage policy on calibration scores (labelled sites only).

    Returns ``{"precision_threshold": ..., "triage": ...}``; when the policy cannot be fitted
    (e.g. no labelled defect in the split) ``triage`` is None and ``triage_error`` says why.
    With ``triage.open_set`` set, also ``open_set`` (an :class:`OpenSetTypeRule`, fitted on the calib
    defects of types seen in training: their type probabilities, or for ``mahalanobis`` their
    ``embeddings`` against ``train_embeddings = (embeddings, type indices)`` of the training split),
    or ``open_set_error``.
    """
    tri = cfg.triage
    labelled = is_abnormal >= 0
    pt = PrecisionThreshold(target_precision=tri.target_precision, confidence=tri.confidence)
    pt.fit(abnormal[labelled], is_abnormal[labelled])
    result: dict[str, Any] = {"precision_threshold": pt.to_dict(), "triage": None}
    try:
        policy = make_policy(cfg)
        policy.fit(abnormal[labelled], is_abnormal[labelled],
                   type_probs=None if type_probs is None else type_probs[labelled],
                   type_labels=None if type_labels is None else type_labels[labelled],
                   type_train_counts=type_train_counts, type_names=list(cfg_type_names or []) or None)
        result["triage"] = policy.to_dict()
    except SeminspectError as exc:
        result["triage_error"] = str(exc)
    if tri.open_set is not None:
        try:
            result["open_set"] = _open_set(cfg, is_abnormal, type_probs, type_labels, type_train_counts, embeddings,
                                           train_embeddings).to_dict()
        except SeminspectError as exc:
            result["open_set_error"] = str(exc)
    return result


def _open_set(cfg: ADCConfig, is_abnormal: np.ndarray, type_probs: np.ndarray | None, type_labels: np.ndarray | None,
              counts: np.ndarray | None, embeddings: np.ndarray | None,
              train_embeddings: tuple[np.ndarray, np.ndarray] | None) -> OpenSetTypeRule:
    tri = cfg.triage
    if type_labels is None or type_probs is None or counts is None:
        raise CalibrationError("the open-set rule needs the calib split's types and the training type counts")
    seen = np.asarray(counts)[np.maximum(type_labels, 0)] > 0
    known = (is_abnormal == 1) & (type_labels >= 0) & seen
    rule = OpenSetTypeRule(rejection_rate=tri.open_set_rejection, score=tri.open_set)
    if tri.open_set == "mahalanobis":
        if embeddings is None or train_embeddings is None:
            raise CalibrationError("open_set 'mahalanobis' needs the site embeddings of the calib and train splits")
        return rule.fit(embeddings[known], train_embeddings=train_embeddings[0], train_types=train_embeddings[1])
    return rule.fit(type_probs[known])


class CalibrationError(SeminspectError):
    """The calibration split cannot fit what the config asks for."""


def make_policy(cfg: ADCConfig) -> TriagePolicy:
    """The unfitted triage policy the config's ``triage`` section asks for."""
    tri = cfg.triage
    return TriagePolicy(abnormal_precision=tri.target_precision, confidence=tri.confidence,
                        min_train_samples=tri.min_train_samples, normal_miss_rate=tri.normal_error,
                        normal_coverage=tri.normal_coverage)
