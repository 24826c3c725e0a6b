"""Anomaly metrics (image/pixel AUROC, AUPRO, false-alarm rate) and fixed-scale overlays."""

from __future__ import annotations

import numpy as np
import pytest

from seminspect.evaluation.anomaly_figures import colour_scale, overlay, overlay_grid
from seminspect.evaluation.anomaly_metrics import anomaly_metrics, metrics_table, per_type_metrics
from seminspect.models.anomaly import AnomalyResult


def _result() -> AnomalyResult:
    rng = np.random.default_rng(0)
    n, size = 12, 16
    labels = np.array([0] * 6 + [1] * 6)
    masks = np.zeros((n, size, size), bool)
    maps = rng.random((n, size, size)).astype(np.float32) * 0.5
    for i in range(6, 12):
        masks[i, 4:8, 4:8] = True
        maps[i, 4:8, 4:8] += 1.0
    scores = maps.reshape(n, -1).max(1)
    types = [None] * 6 + ["a", "b"] * 3
    return AnomalyResult([f"s{i}" for i in range(n)], scores, maps, labels, types, masks)


def test_metrics_perfect_separation() -> None:
    res = _result()
    m = anomaly_metrics(res.scores, res.labels, res.maps, res.masks, threshold=0.9)
    assert m["image_auroc"] == 1.0 and m["image_ap"] == 1.0
    assert m["pixel_auroc"] == 1.0 and m["aupro"] > 0.95
    assert m["false_alarm_rate"] == 0.0 and m["recall"] == 1.0
    m = anomaly_metrics(res.scores, res.labels, threshold=0.3)
    assert m["false_alarm_rate"] == 1.0 and "pixel_auroc" not in m
    rep = per_type_metrics(res, threshold=0.9)
    assert set(rep) == {"all", "a", "b"} and rep["a"]["n_abnormal"] == 3 and rep["a"]["n_normal"] == 6
    header, rows = metrics_table(rep)
    assert len(rows) == 3 and len(header) == len(rows[0])


def test_metrics_ignore_unlabelled_and_nan_when_one_class() -> None:
    m = anomaly_metrics(np.array([0.1, 0.2, 0.3]), np.array([0, 0, -1]))
    assert m["n_normal"] == 2 and np.isnan(m["image_auroc"])


def test_fixed_colour_scale() -> None:
    assert colour_scale(threshold=0.5) == (0.0, 1.0)
    assert colour_scale(normal_range=(0.2, 0.4)) == pytest.approx((0.2, 0.6))
    img = np.full((8, 8), 0.5, np.float32)
    low = np.full((8, 8), 0.1, np.float32)
    low[0, 0] = 0.2
    # the same score gets the same colour in every image (no per-image min-max)
    a = overlay(img, low, 0.0, 1.0)
    b = overlay(img, np.full((8, 8), 0.1, np.float32), 0.0, 1.0)
    assert np.array_equal(a[1:, 1:], b[1:, 1:])
    # a weak map on a fixed scale stays close to the grey image
    assert np.abs(a.astype(int) - 127).max() < 40
    fig = overlay_grid([img, img], [low, low], ["x", "y"], 0.0, 1.0, masks=[None, low > 0.15])
    assert len(fig.axes) >= 2
