"""Evaluation: metrics (``metrics``), display objects for figures (``displays``) and the HTML report
(``report``). Metric names are re-exported here; displays and the report import matplotlib, so they
are loaded on first use (``from seminspect.evaluation import HtmlReport`` works without cost until then).
"""

from __future__ import annotations

from typing import Any

from seminspect.evaluation.metrics import (
    ClassificationMetrics,
    MetricError,
    RecallAtPrecision,
    auroc,
    automation_metrics,
    average_precision,
    classification_metrics,
    recall_at_precision,
    tree_level_accuracy,
)
from seminspect.evaluation.pixel_metrics import aupro, pixel_auroc, pro_curve

_LAZY = {
    "HtmlReport": "seminspect.evaluation.report",
    "ReportError": "seminspect.evaluation.report",
    "PRCurveDisplay": "seminspect.evaluation.displays",
    "ROCCurveDisplay": "seminspect.evaluation.displays",
    "ConfusionMatrixDisplay": "seminspect.evaluation.displays",
    "LevelAccuracyDisplay": "seminspect.evaluation.displays",
    "TriageRouteDisplay": "seminspect.evaluation.displays",
}

__all__ = [
    "ClassificationMetrics",
    "MetricError",
    "RecallAtPrecision",
    "aupro",
    "auroc",
    "automation_metrics",
    "average_precision",
    "classification_metrics",
    "pixel_auroc",
    "pro_curve",
    "recall_at_precision",
    "tree_level_accuracy",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'seminspect.evaluation' has no attribute {name!r}")
