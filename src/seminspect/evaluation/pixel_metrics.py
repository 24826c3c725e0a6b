"""Pixel-level metrics of anomaly maps against defect masks: pixel AUROC, the per-region-overlap
curve and AUPRO (the MVTec AD definition).

``masks`` ``(N, H, W)`` bool (True = defect pixel), ``maps`` ``(N, H, W)`` float (higher = more
anomalous, one scale for all images). numpy and scikit-image only; errors are ``MetricError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seminspect.evaluation.metrics import MetricError

__all__ = ["aupro", "pixel_auroc", "pro_curve"]


def _maps_and_masks(masks: Any, maps: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(masks).astype(bool)
    a = np.asarray(maps)
    if a.dtype not in (np.float32, np.float64):  # keep float32 maps as they are: sorting them is cheaper
        a = a.astype(np.float64)
    if m.ndim == 2:
        m, a = m[None], a[None] if a.ndim == 2 else a
    if m.shape != a.shape or m.ndim != 3:
        raise MetricError(f"{name}: masks {m.shape} and maps {a.shape} must both be (N, H, W)")
    if not np.isfinite(a).all():
        raise MetricError(f"{name}: anomaly maps contain NaN/inf")
    return m, a


def pixel_auroc(masks: Any, maps: Any) -> float:
    """AUROC over all pixels of all images. ``masks`` (N, H, W) bool, ``maps`` (N, H, W) float."""
    m, a = _maps_and_masks(masks, maps, "pixel_auroc")
    if m.all() or not m.any():
        raise MetricError("pixel_auroc: needs both defect and normal pixels")
    return _binary_auc(m.ravel(), a.ravel())


def _binary_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC from one unstable sort (ties handled by cutting only between distinct scores).

    Equal to ``roc_auc_score`` and several times faster on millions of pixels.
    """
    order = np.argsort(s)[::-1]
    ss, ys = s[order], y[order]
    last = np.r_[ss[1:] != ss[:-1], True]
    tp = np.cumsum(ys, dtype=np.float64)[last]
    fp = np.cumsum(~ys, dtype=np.float64)[last]
    tpr, fpr = np.r_[0.0, tp / tp[-1]], np.r_[0.0, fp / fp[-1]]
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2.0))


def pro_curve(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-region-overlap curve at every distinct map value.

    Returns ``(fpr, pro, thresholds)``, each ``(T + 1,)`` starting at ``(0, 0, inf)``: at
    threshold ``t`` (pixel anomalous when ``map >= t``), ``fpr`` is the share of normal pixels
    above it and ``pro`` the mean, over every connected defect region of every image
    (8-connectivity, ``skimage.measure.label``), of the share of the region above it.

    Vectorised: each defect pixel carries weight ``1 / (|region| * n_regions)``, so the mean
    overlap at ``t`` is a cumulative sum over pixels sorted by score (one sort, no loop over
    thresholds or regions).
    """
    from skimage.measure import label

    m, a = _maps_and_masks(masks, maps, "pro_curve")
    weights = np.zeros(m.shape, dtype=np.float64)
    sizes = []
    for i in range(m.shape[0]):
        if not m[i].any():
            continue
        lab = label(m[i], connectivity=2)
        size = np.bincount(lab.ravel())
        size[0] = 0
        w = np.zeros(size.shape, dtype=np.float64)
        w[1:] = 1.0 / np.maximum(size[1:], 1)
        weights[i] = w[lab]
        sizes.append(size[1:])
    n_regions = sum(len(s) for s in sizes)
    if n_regions == 0:
        raise MetricError("pro_curve: the masks contain no defect region")
    n_neg = int((~m).sum())
    if n_neg == 0:
        raise MetricError("pro_curve: every pixel is a defect pixel; the false-positive rate is undefined")
    scores = a.ravel()
    # unstable sort is fine: only cumulative sums at the ends of tie groups are used
    order = np.argsort(scores)[::-1]
    s = scores[order]
    pro = np.cumsum(weights.ravel()[order]) / n_regions
    fpr = np.cumsum(~m.ravel()[order]) / n_neg
    last = np.r_[s[1:] != s[:-1], True]
    return np.r_[0.0, fpr[last]], np.r_[0.0, np.minimum(pro[last], 1.0)], np.r_[np.inf, s[last]]


def aupro(masks: Any, maps: Any, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve up to ``fpr_limit``, divided by ``fpr_limit`` (1 = perfect).

    ``masks`` (N, H, W) bool ground-truth defect pixels; ``maps`` (N, H, W) float anomaly maps
    (higher = more anomalous, one scale for all images). Trapezoidal integration, the curve
    interpolated linearly at ``fpr_limit`` (as in the MVTec AD evaluation code).
    """
    if not 0 < fpr_limit <= 1:
        raise MetricError(f"aupro: fpr_limit must lie in (0, 1], got {fpr_limit}")
    fpr, pro, _ = pro_curve(masks, maps)
    return _area_to_limit(fpr, pro, fpr_limit) / fpr_limit


def _area_to_limit(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under the piecewise-linear curve (x non-decreasing) from 0 to ``limit``."""
    inside = x <= limit
    xi, yi = x[inside], y[inside]
    if xi[-1] < limit and inside.sum() < x.size:
        j = int(np.argmax(~inside))  # first point past the limit
        x0, x1, y0, y1 = x[j - 1], x[j], y[j - 1], y[j]
        y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        xi, yi = np.r_[xi, limit], np.r_[yi, y_lim]
    return float(np.sum((xi[1:] - xi[:-1]) * (yi[1:] + yi[:-1]) / 2.0))
