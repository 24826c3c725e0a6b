"""The anomaly detector's decision threshold from held-out normal scores alone (bounded false-alarm rate).

:func:`fit_normal_threshold` uses ``seminspect.decision.NormalQuantileThreshold`` and falls back to
an order statistic with a Clopper-Pearson bound when that refuses (too few normals to *guarantee*
the target) or is absent. Pure NumPy/SciPy; no model code.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _fallback_quantile_threshold(scores: np.ndarray, far: float, confidence: float) -> dict[str, Any]:
    """Order-statistic threshold with a Clopper-Pearson bound (used when seminspect.decision is absent)."""
    from scipy import stats

    s = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(s)
    # largest number m of calibration scores allowed above the threshold with upper bound <= far
    best_m = -1
    for m in range(n):
        upper = 1.0 if m >= n else float(stats.beta.ppf(confidence, m + 1, n - m))
        if upper <= far:
            best_m = m
        else:
            break
    if best_m < 0:
        thr = float(s[-1]) if n else math.inf
        upper = 1.0 if n == 0 else float(stats.beta.ppf(confidence, 1, n))
    else:
        thr = float(s[n - 1 - best_m])
        upper = float(stats.beta.ppf(confidence, best_m + 1, n - best_m))
    return {"kind": "normal_quantile", "threshold": thr, "false_alarm_upper_bound": upper,
            "false_alarm_rate": far, "confidence": confidence, "n": n, "implementation": "fallback"}


def fit_normal_threshold(scores: np.ndarray, far: float = 0.01, confidence: float = 0.95) -> dict[str, Any]:
    """Threshold from normal scores only: ``seminspect.decision.NormalQuantileThreshold`` when present."""
    try:
        from seminspect.decision import InsufficientDataError, NormalQuantileThreshold
    except ImportError:
        return _fallback_quantile_threshold(scores, far, confidence)
    try:
        t = NormalQuantileThreshold(false_alarm_rate=far, confidence=confidence).fit(np.asarray(scores))
    except InsufficientDataError as exc:
        # Too few held-out normals to *guarantee* the target: use the largest normal score and say
        # what bound it actually gives, rather than refusing to produce a model.
        out = _fallback_quantile_threshold(scores, far, confidence)
        out["warning"] = str(exc)
        return out
    out = {"kind": "normal_quantile", "threshold": float(t.threshold_),
           "false_alarm_upper_bound": float(t.false_alarm_upper_bound_), "false_alarm_rate": far,
           "confidence": confidence, "n": len(scores), "implementation": "seminspect.decision"}
    if hasattr(t, "to_dict"):
        out["decision"] = t.to_dict()
    return out
