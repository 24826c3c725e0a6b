"""Metrics of an anomaly detector: image AUROC/AP, pixel AUROC, AUPRO, false-alarm rate.

Generic metrics come from :mod:`seminspect.evaluation.metrics` (``auroc``, ``average_precision``,
``pixel_auroc``, ``aupro``); this module applies them to an
:class:`~seminspect.models.anomaly.AnomalyResult`, overall and per defect type (each type against
all normal samples).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seminspect.evaluation.metrics import MetricError, auroc, average_precision
from seminspect.evaluation.pixel_metrics import aupro, pixel_auroc


def _safe(out: dict[str, Any], key: str, fn: Any, *args: Any) -> None:
    """``out[key] = fn(*args)``; an undefined metric is NaN with ``out[key + "_note"]`` saying why."""
    try:
        out[key] = float(fn(*args))
    except MetricError as exc:
        out[key] = float("nan")
        out[f"{key}_note"] = f"undefined: {str(exc).split(': ', 1)[-1]}"


def anomaly_metrics(scores: np.ndarray, labels: np.ndarray, maps: np.ndarray | None = None,
                    masks: np.ndarray | None = None, threshold: float | None = None,
                    max_pixels: int = 4_000_000) -> dict[str, Any]:
    """Metrics over one set of samples.

    Args:
        scores: ``(N,)`` image scores; labels: ``(N,)`` 1 abnormal / 0 normal (-1 rows ignored).
        maps, masks: ``(N, H, W)`` anomaly maps and defect masks (pixel metrics need both).
        threshold: decision threshold; gives the false-alarm rate (normals above it) and recall.
        max_pixels: maps are subsampled on a regular grid beyond this many pixels (memory).

    Returns a dict with ``image_auroc``, ``image_ap``, ``pixel_auroc``, ``aupro``, counts and,
    with a threshold, ``false_alarm_rate`` and ``recall``. An undefined value is NaN with a
    ``<name>_note`` string beside it saying why (e.g. ``"undefined: needs both classes, got only
    normal samples"``); written to JSON, the NaN becomes ``null``. ``pixel_note`` says when the
    pixel metrics were computed on a grid subsample.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    keep = labels >= 0
    s, y = scores[keep], labels[keep].astype(bool)
    out: dict[str, Any] = {"n_normal": int((~y).sum()), "n_abnormal": int(y.sum())}
    _safe(out, "image_auroc", auroc, y, s)
    _safe(out, "image_ap", average_precision, y, s)
    if maps is not None and masks is not None and _ragged(maps):
        # images of several native sizes (resize: keep_aspect): every pixel of every kept image, at native size
        kept = np.flatnonzero(keep)
        m = np.concatenate([np.asarray(masks[i], bool).ravel() for i in kept])[None, None]
        a = np.concatenate([np.asarray(maps[i], np.float32).ravel() for i in kept])[None, None]
        _safe(out, "pixel_auroc", pixel_auroc, m, a)
        out["aupro"] = float("nan")
        out["aupro_note"] = "undefined here: images of several sizes (pixel_auroc is over every native pixel)"
    elif maps is not None and masks is not None:
        m, a = np.asarray(masks)[keep].astype(bool), np.asarray(maps)[keep]
        step = 1
        while a.size / (step * step) > max_pixels:
            step += 1
        if step > 1:
            n_all = a.size
            m, a = m[:, ::step, ::step], a[:, ::step, ::step]
            out["pixel_note"] = (f"pixel_auroc and aupro on every {step}th pixel in each direction "
                                 f"({a.size:,} of {n_all:,} pixels; max_pixels {max_pixels:,})")
        _safe(out, "pixel_auroc", pixel_auroc, m, a)
        _safe(out, "aupro", aupro, m, a)
    if threshold is not None:
        flagged = s > threshold
        out["threshold"] = float(threshold)
        out["false_alarm_rate"] = float(flagged[~y].mean()) if (~y).any() else float("nan")
        if not (~y).any():
            out["false_alarm_rate_note"] = "undefined: no normal samples"
        out["recall"] = float(flagged[y].mean()) if y.any() else float("nan")
        if not y.any():
            out["recall_note"] = "undefined: no abnormal samples"
    return out


def _ragged(maps: Any) -> bool:
    """Whether ``maps`` is a list of 2-D maps of more than one size."""
    return isinstance(maps, list) and len({np.shape(m) for m in maps}) > 1


def per_type_metrics(result: Any, threshold: float | None = None) -> dict[str, dict[str, Any]]:
    """``{"all": {...}, type: {...}}``: each defect type scored against all normal samples.

    ``result`` is an :class:`~seminspect.models.anomaly.AnomalyResult`.
    """
    labels = np.asarray(result.labels)
    types = np.array([t or "" for t in result.defect_types], dtype=object)
    report = {"all": anomaly_metrics(result.scores, labels, result.maps, result.masks, threshold)}
    normal = labels == 0
    for t in sorted({t for t, lab in zip(types, labels, strict=True) if lab == 1 and t}):
        sel = normal | ((labels == 1) & (types == t))
        idx = np.flatnonzero(sel)
        maps = [result.maps[i] for i in idx] if isinstance(result.maps, list) else result.maps[sel]
        masks = None if result.masks is None else (
            [result.masks[i] for i in idx] if isinstance(result.masks, list) else result.masks[sel])
        report[t] = anomaly_metrics(result.scores[sel], labels[sel], maps, masks, threshold)
    return report


def metrics_table(report: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows (formatted strings) for a per-type report."""
    cols = ["n_abnormal", "image_auroc", "image_ap", "pixel_auroc", "aupro", "recall", "false_alarm_rate"]
    rows = []
    for name, m in report.items():
        row = [name]
        for c in cols:
            v = m.get(c, float("nan"))
            row.append(str(int(v)) if c == "n_abnormal" else ("-" if v != v else f"{v:.3f}"))
        rows.append(row)
    return ["set", *cols], rows
