"""Display objects for evaluation figures: compute once (``from_*``), plot anywhere (``plot(ax=None)``).

The scikit-learn pattern: a display holds the computed curve or table; ``plot`` draws it on a
given or new matplotlib axis and sets ``ax_`` and ``figure_`` (hand ``figure_`` to
:meth:`~seminspect.evaluation.report.HtmlReport.add_figure`). matplotlib is imported only in
``plot``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm

from seminspect.evaluation.metrics import MetricError, RecallAtPrecision, _binary


def _axes(ax: Any, figsize: tuple[float, float] = (4.5, 4.0)) -> Any:
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _operating_point(y: np.ndarray, s: np.ndarray, threshold: float | None) -> dict[str, float] | None:
    if threshold is None or not np.isfinite(threshold):
        return None
    sel = s >= threshold
    tp = float((sel & y).sum())
    return {
        "threshold": float(threshold),
        "recall": tp / y.sum(),
        "precision": tp / sel.sum() if sel.any() else float("nan"),
        "fpr": float((sel & ~y).sum() / (~y).sum()),
    }


def _threshold_of(operating_point: Any) -> float | None:
    if isinstance(operating_point, RecallAtPrecision):
        return operating_point.threshold
    return None if operating_point is None else float(operating_point)


@dataclass
class PRCurveDisplay:
    """Precision-recall curve with an optional operating point (``score >= threshold``) marked."""

    precision: np.ndarray
    recall: np.ndarray
    average_precision: float
    point: dict[str, float] | None = None
    target_precision: float | None = None
    name: str | None = None

    @classmethod
    def from_predictions(
        cls, labels: Any, scores: Any, operating_point: Any = None, target_precision: float | None = None,
        name: str | None = None,
    ) -> PRCurveDisplay:
        """``operating_point``: a threshold, a :class:`RecallAtPrecision`, or None."""
        y, s = _binary(labels, scores, "PRCurveDisplay")
        p, r, _ = skm.precision_recall_curve(y, s)
        if isinstance(operating_point, RecallAtPrecision) and target_precision is None:
            target_precision = operating_point.target_precision
        point = _operating_point(y, s, _threshold_of(operating_point))
        return cls(p, r, float(skm.average_precision_score(y, s)), point, target_precision, name)

    def plot(self, ax: Any = None) -> PRCurveDisplay:
        ax = _axes(ax)
        label = f"{self.name + ' ' if self.name else ''}AP = {self.average_precision:.3f}"
        ax.step(self.recall, self.precision, where="post", label=label)
        if self.target_precision is not None:
            target = f"{100 * self.target_precision:g} %"
            ax.axhline(self.target_precision, color="grey", ls="--", lw=0.8, label=f"target {target}")
        if self.point is not None:
            ax.plot(self.point["recall"], self.point["precision"], "o", color="C3",
                    label=f"operating point: R {self.point['recall']:.3f}, P {self.point['precision']:.3f}")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01), title="precision-recall")
        ax.legend(loc="lower left", fontsize=8)
        self.ax_, self.figure_ = ax, ax.figure
        return self


@dataclass
class ROCCurveDisplay:
    """ROC curve with an optional operating point marked."""

    fpr: np.ndarray
    tpr: np.ndarray
    auroc: float
    point: dict[str, float] | None = None
    name: str | None = None

    @classmethod
    def from_predictions(cls, labels: Any, scores: Any, operating_point: Any = None, name: str | None = None
                         ) -> ROCCurveDisplay:
        y, s = _binary(labels, scores, "ROCCurveDisplay")
        fpr, tpr, _ = skm.roc_curve(y, s)
        return cls(fpr, tpr, float(skm.roc_auc_score(y, s)), _operating_point(y, s, _threshold_of(operating_point)),
                   name)

    def plot(self, ax: Any = None, log_fpr: bool = False) -> ROCCurveDisplay:
        ax = _axes(ax)
        ax.plot(self.fpr, self.tpr, label=f"{self.name + ' ' if self.name else ''}AUROC = {self.auroc:.3f}")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls=":")
        if self.point is not None:
            ax.plot(self.point["fpr"], self.point["recall"], "o", color="C3",
                    label=f"operating point: TPR {self.point['recall']:.3f}, FPR {self.point['fpr']:.4f}")
        if log_fpr:
            ax.set_xscale("log")
        ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC")
        ax.legend(loc="lower right", fontsize=8)
        self.ax_, self.figure_ = ax, ax.figure
        return self


@dataclass
class ConfusionMatrixDisplay:
    """Confusion matrix (rows = true, columns = predicted), counts or row-normalised."""

    matrix: np.ndarray
    labels: list[str]

    @classmethod
    def from_predictions(cls, y_true: Any, y_pred: Any, labels: Sequence[str]) -> ConfusionMatrixDisplay:
        t, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
        keep = t >= 0
        cm = skm.confusion_matrix(t[keep], p[keep], labels=np.arange(len(labels)))
        return cls(cm.astype(np.int64), [str(x) for x in labels])

    @classmethod
    def from_metrics(cls, metrics: Any) -> ConfusionMatrixDisplay:
        """From a :class:`~seminspect.evaluation.metrics.ClassificationMetrics`."""
        return cls(np.asarray(metrics.confusion_matrix), list(metrics.labels))

    def plot(self, ax: Any = None, normalize: bool = True, annotate: bool | None = None) -> ConfusionMatrixDisplay:
        n = len(self.labels)
        ax = _axes(ax, figsize=(max(4.0, 0.42 * n + 2), max(3.5, 0.42 * n + 1.5)))
        m = self.matrix.astype(np.float64)
        if normalize:
            m = m / np.maximum(m.sum(1, keepdims=True), 1)
        im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
        ax.figure.colorbar(im, ax=ax, fraction=0.046)
        ax.set_xticks(range(n), self.labels, rotation=90, fontsize=7)
        ax.set_yticks(range(n), self.labels, fontsize=7)
        if annotate if annotate is not None else n <= 25:
            for i in range(n):
                for j in range(n):
                    if self.matrix[i, j]:
                        ax.text(j, i, f"{m[i, j]:.2f}" if normalize else str(self.matrix[i, j]), ha="center",
                                va="center", fontsize=6, color="white" if m[i, j] > 0.5 * m.max() else "black")
        ax.set(xlabel="predicted", ylabel="true", title="confusion matrix" + (" (row-normalised)" if normalize else ""))
        self.ax_, self.figure_ = ax, ax.figure
        return self


@dataclass
class LevelAccuracyDisplay:
    """Bar per taxonomy level (root-most first): accuracy at that level."""

    accuracies: dict[str, float]

    @classmethod
    def from_predictions(cls, taxonomy: Any, y_true_leaf: Any, y_pred_leaf: Any) -> LevelAccuracyDisplay:
        from seminspect.evaluation.metrics import tree_level_accuracy

        return cls(tree_level_accuracy(taxonomy, y_true_leaf, y_pred_leaf))

    def plot(self, ax: Any = None) -> LevelAccuracyDisplay:
        ax = _axes(ax, figsize=(4.0, 3.0))
        names, vals = list(self.accuracies), list(self.accuracies.values())
        bars = ax.bar(names, vals, color="C0")
        for b, v in zip(bars, vals, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
        ax.set(ylim=(0, 1.08), ylabel="accuracy", title="accuracy per tree level")
        self.ax_, self.figure_ = ax, ax.figure
        return self


@dataclass
class TriageRouteDisplay:
    """Stacked bars: how many samples of each true class went to each route."""

    counts: dict[str, dict[str, int]]  # route -> {true class -> count}

    @classmethod
    def from_result(cls, triage_result: Any, is_abnormal: Any = None) -> TriageRouteDisplay:
        route = np.asarray(triage_result.route)
        routes = ("auto_normal", "review", "auto_abnormal")
        if is_abnormal is None:
            return cls({r: {"all": int((route == r).sum())} for r in routes})
        y = np.asarray(is_abnormal).ravel()
        if y.shape != route.shape:
            raise MetricError(f"TriageRouteDisplay: is_abnormal {y.shape} does not match {route.shape[0]} results")
        return cls({
            r: {"normal": int(((route == r) & (y == 0)).sum()), "abnormal": int(((route == r) & (y == 1)).sum())}
            for r in routes
        })

    def plot(self, ax: Any = None) -> TriageRouteDisplay:
        ax = _axes(ax, figsize=(4.5, 3.2))
        routes = list(self.counts)
        classes = list(next(iter(self.counts.values())))
        bottom = np.zeros(len(routes))
        colours: Mapping[str, str] = {"normal": "C2", "abnormal": "C3", "all": "C0"}
        for c in classes:
            vals = np.array([self.counts[r][c] for r in routes], dtype=float)
            ax.bar(routes, vals, bottom=bottom, label=c, color=colours.get(c))
            bottom += vals
        total = bottom.sum()
        for i, v in enumerate(bottom):
            ax.text(i, v, f"{int(v)} ({v / total:.0%})" if total else "0", ha="center", va="bottom", fontsize=8)
        ax.set(ylabel="samples", title="triage routes")
        ax.legend(fontsize=8)
        self.ax_, self.figure_ = ax, ax.figure
        return self
