"""Calibration of the decision layer on the ``calib`` split: precision threshold and triage policy.

    thresholds = calibrate(abnormal, is_abnormal, type_probs, type_labels, type_train_counts, cfg, leaves)

Returns the JSON-ready content of an artefact's ``thresholds.json``. Scores in, thresholds out:
nothing here sees an image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from seminspect.decision import PrecisionThreshold, TriagePolicy
from seminspect.errors import SeminspectError
from seminspect.training.config import ADCConfig


def calibrate(abnormal: np.ndarray, is_abnormal: np.ndarray, type_probs: np.ndarray | None, type_labels: np.ndarray |
              None, type_train_counts: np.ndarray | None, cfg: ADCConfig,
              cfg_type_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Fit the precision threshold and the triage policy on calibration scores (labelled sites only).

    Returns ``{"precision_threshold": ..., "triage": ...}``; when the policy cannot be fitted
    (e.g. no labelled defect in the split) ``triage`` is None and ``triage_error`` says why.
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
    return result


def make_policy(cfg: ADCConfig) -> TriagePolicy:
    """The unfitted triage policy the config's ``triage`` section asks for."""
    tri = cfg.triage
    return TriagePolicy(abnormal_precision=tri.target_precision, confidence=tri.confidence,
                        min_train_samples=tri.min_train_samples, normal_miss_rate=tri.normal_error)
