"""Metrics for the ADC, the triage and the anomaly models (scikit-learn where it has them).

Added here: recall at a precision target with exact confidence intervals, per-level accuracy
on a category tree, automation metrics of a triage. Pixel AUROC and AUPRO (anomaly maps against
defect masks) live in :mod:`seminspect.evaluation.pixel_metrics`.
Binary ``labels``: 1 = abnormal. ``scores``: higher = more abnormal. Every function takes
numpy arrays and returns plain numbers, dicts or small dataclasses (``as_dict()`` for JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm

from seminspect.decision._bounds import clopper_pearson_interval, clopper_pearson_lower, clopper_pearson_upper
from seminspect.errors import SeminspectError

__all__ = [
    "ClassificationMetrics",
    "MetricError",
    "RecallAtPrecision",
    "automation_metrics",
    "average_precision",
    "auroc",
    "classification_metrics",
    "recall_at_precision",
    "tree_level_accuracy",
]


class MetricError(SeminspectError, ValueError):
    """Inputs a metric cannot be computed from (shapes, a single class, no defect regions)."""


def _binary(labels: Any, scores: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise MetricError(f"{name}: labels {y.shape} and scores {s.shape} differ in size")
    if not np.isfinite(s).all():
        raise MetricError(f"{name}: scores contain {int((~np.isfinite(s)).sum())} NaN/inf values")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise MetricError(f"{name}: labels must be 0/1 (1 = abnormal); drop unlabelled (-1) samples first")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise MetricError(f"{name}: needs both classes, got only {'abnormal' if y.any() else 'normal'} samples")
    return y, s


def auroc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``)."""
    y, s = _binary(labels, scores, "auroc")
    return float(skm.roc_auc_score(y, s))


def average_precision(labels: Any, scores: Any) -> float:
    """Average precision, the step-wise area under the PR curve (``sklearn``'s definition)."""
    y, s = _binary(labels, scores, "average_precision")
    return float(skm.average_precision_score(y, s))


# ----- recall at precision --------------------------------------------------------------------
@dataclass(frozen=True)
class RecallAtPrecision:
    """The operating point with the highest recall whose precision meets the target.

    ``precision_ci`` and ``recall_ci`` are two-sided exact (Clopper-Pearson) intervals at
    ``confidence``; ``precision_lower_bound`` is the one-sided lower bound at ``confidence``.
    ``threshold`` is ``inf`` and recall 0 when no threshold meets the target.
    """

    recall: float
    threshold: float
    precision: float
    precision_lower_bound: float
    precision_ci: tuple[float, float]
    recall_ci: tuple[float, float]
    target_precision: float
    confidence: float
    n_positive: int
    n_selected: int
    true_positives: int
    criterion: str

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["precision_ci"], d["recall_ci"] = list(self.precision_ci), list(self.recall_ci)
        return d


def recall_at_precision(
    labels: Any, scores: Any, precision: float = 0.99, confidence: float = 0.95, criterion: str = "point"
) -> RecallAtPrecision:
    """Highest recall with precision >= ``precision`` on this set, with confidence intervals.

    ``criterion="point"``: the observed precision meets the target (the usual "recall at 99 %
    precision", an optimistic figure when the threshold is chosen on the same data);
    ``"bound"``: the one-sided lower confidence bound of precision meets it (what
    :class:`~seminspect.decision.PrecisionThreshold` does on a calibration split).
    Predicted abnormal = ``score >= threshold``.
    """
    if criterion not in ("point", "bound"):
        raise MetricError(f"recall_at_precision: criterion must be 'point' or 'bound', got {criterion!r}")
    if not 0 < precision < 1 or not 0 < confidence < 1:
        raise MetricError("recall_at_precision: precision and confidence must lie in (0, 1)")
    y, s = _binary(labels, scores, "recall_at_precision")
    order = np.argsort(-s, kind="stable")
    ss, ys = s[order], y[order]
    last = np.r_[ss[1:] != ss[:-1], True]  # cut only between distinct scores
    tp = np.cumsum(ys)[last]
    n = np.arange(1, s.size + 1)[last]
    thr = ss[last]
    crit = clopper_pearson_lower(tp, n, confidence) if criterion == "bound" else tp / n
    ok = np.flatnonzero(np.asarray(crit) >= precision)
    n_pos = int(y.sum())
    if ok.size == 0:
        lo, hi = clopper_pearson_interval(0, n_pos, confidence)
        return RecallAtPrecision(0.0, float("inf"), float("nan"), 0.0, (float("nan"), float("nan")),
                                 (float(lo), float(hi)), precision, confidence, n_pos, 0, 0, criterion)
    # highest recall; among equal recalls the highest threshold (fewest false positives)
    i = ok[np.argmax(tp[ok])]
    i = int(np.searchsorted(tp, tp[i], side="left"))
    k, m = int(tp[i]), int(n[i])
    p_lo, p_hi = clopper_pearson_interval(k, m, confidence)
    r_lo, r_hi = clopper_pearson_interval(k, n_pos, confidence)
    return RecallAtPrecision(
        recall=k / n_pos, threshold=float(thr[i]), precision=k / m,
        precision_lower_bound=float(clopper_pearson_lower(k, m, confidence)),
        precision_ci=(float(p_lo), float(p_hi)), recall_ci=(float(r_lo), float(r_hi)),
        target_precision=precision, confidence=confidence, n_positive=n_pos, n_selected=m,
        true_positives=k, criterion=criterion,
    )


# ----- classification -------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassificationMetrics:
    """Type-classification metrics. Per-class dicts are keyed by class name.

    ``confusion_matrix`` is ``(C, C)`` int64, rows = true class, columns = predicted class, over
    all ``C`` classes of ``labels``; ``top_k_accuracy`` maps k to accuracy (only with probs).
    ``macro_f1`` averages over the classes present in ``y_true`` or ``y_pred``.
    """

    accuracy: float
    macro_f1: float
    per_class_f1: dict[str, float]
    per_class_precision: dict[str, float]
    per_class_recall: dict[str, float]
    support: dict[str, int]
    top_k_accuracy: dict[int, float]
    confusion_matrix: np.ndarray
    labels: list[str]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["confusion_matrix"] = self.confusion_matrix.tolist()
        d["top_k_accuracy"] = {str(k): v for k, v in self.top_k_accuracy.items()}
        return d

    def per_class_frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame({
            "class": self.labels,
            "precision": [self.per_class_precision[c] for c in self.labels],
            "recall": [self.per_class_recall[c] for c in self.labels],
            "f1": [self.per_class_f1[c] for c in self.labels],
            "support": [self.support[c] for c in self.labels],
        })


def classification_metrics(
    y_true: Any,
    y_pred: Any = None,
    probs: Any = None,
    labels: Sequence[str] | None = None,
    top_k: Sequence[int] = (1, 3),
) -> ClassificationMetrics:
    """Macro and per-class F1, precision, recall, top-k accuracy and the confusion matrix.

    ``y_true`` (N,) int class indices in ``[0, C)`` (rows with -1 are dropped, e.g. normal
    samples); ``y_pred`` (N,) int, or None to use ``probs.argmax(1)``; ``probs`` (N, C) class
    probabilities (needed for top-k); ``labels`` the C class names (default "0".."C-1").
    """
    t = np.asarray(y_true).ravel()
    if y_pred is None and probs is None:
        raise MetricError("classification_metrics: give y_pred or probs")
    p_arr = None if probs is None else np.asarray(probs, dtype=np.float64)
    if p_arr is not None and (p_arr.ndim != 2 or p_arr.shape[0] != t.size):
        raise MetricError(f"classification_metrics: probs must be ({t.size}, C), got {p_arr.shape}")
    yp = p_arr.argmax(1) if y_pred is None else np.asarray(y_pred).ravel()
    if yp.shape != t.shape:
        raise MetricError(f"classification_metrics: y_true {t.shape} and y_pred {yp.shape} differ")
    keep = t >= 0
    t, yp = t[keep].astype(np.int64), yp[keep].astype(np.int64)
    if p_arr is not None:
        p_arr = p_arr[keep]
    if t.size == 0:
        raise MetricError("classification_metrics: no labelled samples (all y_true are -1)")
    if labels is not None:
        c = len(labels)
    else:
        c = int(max(t.max(), yp.max(), -1 if p_arr is None else p_arr.shape[1] - 1)) + 1
    if p_arr is not None and p_arr.shape[1] != c:
        raise MetricError(f"classification_metrics: probs has {p_arr.shape[1]} classes, labels has {c}")
    if t.max() >= c or yp.max() >= c or yp.min() < 0:
        raise MetricError(f"classification_metrics: class indices must lie in [0, {c})")
    names = [str(x) for x in labels] if labels is not None else [str(i) for i in range(c)]
    all_idx = np.arange(c)
    prec, rec, f1, sup = skm.precision_recall_fscore_support(t, yp, labels=all_idx, zero_division=0)
    present = np.union1d(np.unique(t), np.unique(yp))
    macro = float(skm.f1_score(t, yp, labels=present, average="macro", zero_division=0))
    topk: dict[int, float] = {}
    if p_arr is not None:
        ranked = np.argsort(-p_arr, axis=1, kind="stable")
        for k in top_k:
            topk[int(k)] = float((ranked[:, : int(k)] == t[:, None]).any(1).mean())
    return ClassificationMetrics(
        accuracy=float((t == yp).mean()),
        macro_f1=macro,
        per_class_f1={n: float(v) for n, v in zip(names, f1, strict=True)},
        per_class_precision={n: float(v) for n, v in zip(names, prec, strict=True)},
        per_class_recall={n: float(v) for n, v in zip(names, rec, strict=True)},
        support={n: int(v) for n, v in zip(names, sup, strict=True)},
        top_k_accuracy=topk,
        confusion_matrix=skm.confusion_matrix(t, yp, labels=all_idx).astype(np.int64),
        labels=names,
    )


def tree_level_accuracy(taxonomy: Any, y_true_leaf: Any, y_pred_leaf: Any) -> dict[str, float]:
    """Accuracy at every level of the category tree, root-most first (leaf level last).

    A prediction is right at a level when its ancestor there equals the truth's: a wrong leaf in
    the right family still counts at the family level. ``y_*_leaf`` (N,) leaf indices; rows with
    ``y_true_leaf == -1`` are dropped.
    """
    t = np.asarray(y_true_leaf).ravel()
    p = np.asarray(y_pred_leaf).ravel()
    if t.shape != p.shape:
        raise MetricError(f"tree_level_accuracy: y_true {t.shape} and y_pred {p.shape} differ")
    keep = t >= 0
    t, p = t[keep], p[keep]
    if t.size == 0:
        raise MetricError("tree_level_accuracy: no labelled samples")
    if max(t.max(), p.max()) >= taxonomy.num_leaves or p.min() < 0:
        raise MetricError(f"tree_level_accuracy: leaf indices must lie in [0, {taxonomy.num_leaves})")
    out = {}
    for level in taxonomy.levels:
        anc = taxonomy.leaf_to_level(level)
        out[level] = float((anc[t] == anc[p]).mean())
    return out


# ----- triage ---------------------------------------------------------------------------------
def automation_metrics(
    triage_result: Any, is_abnormal: Any, type_labels: Any = None, confidence: float = 0.95
) -> dict[str, Any]:
    """Share of samples decided without a person, and the error rate among automatic decisions.

    ``triage_result``: a :class:`~seminspect.decision.TriageResult`; ``is_abnormal`` (N,) 0/1;
    ``type_labels`` (N,) leaf index, -1 for normal samples. Errors: a normal sample routed
    auto-abnormal, a defect routed auto-normal, a wrong auto-classified type. Each error rate
    comes with its one-sided upper confidence bound (``*_upper``).
    """
    route = np.asarray(triage_result.route)
    y = np.asarray(is_abnormal).ravel()
    if y.shape != route.shape:
        raise MetricError(f"automation_metrics: is_abnormal {y.shape} does not match {route.shape[0]} results")
    y = y.astype(bool)
    n = y.size

    def rate(errors: int, total: int) -> tuple[float, float]:
        return (errors / total if total else float("nan")), float(clopper_pearson_upper(errors, total, confidence))

    abn, nor = route == "auto_abnormal", route == "auto_normal"
    fp, fn = int((abn & ~y).sum()), int((nor & y).sum())
    n_auto = int(abn.sum() + nor.sum())
    out: dict[str, Any] = {
        "n_samples": n,
        "n_auto_abnormal": int(abn.sum()),
        "n_auto_normal": int(nor.sum()),
        "n_review": int(n - n_auto),
        "binary_automation_rate": n_auto / n if n else float("nan"),
        "false_abnormal": fp,
        "missed_defects": fn,
        "confidence": confidence,
    }
    out["auto_abnormal_error"], out["auto_abnormal_error_upper"] = rate(fp, int(abn.sum()))
    out["auto_normal_error"], out["auto_normal_error_upper"] = rate(fn, int(nor.sum()))
    out["binary_error_rate"], out["binary_error_rate_upper"] = rate(fp + fn, n_auto)
    out["recall_auto_abnormal"] = float((abn & y).sum() / y.sum()) if y.any() else float("nan")

    decided = np.asarray(triage_result.type_decision) >= 0
    has_types = np.asarray(triage_result.top_k_types).shape[1] > 0
    if has_types:
        if type_labels is None:
            raise MetricError("automation_metrics: the triage has type decisions; give type_labels")
        lab = np.asarray(type_labels).ravel()
        if lab.shape != route.shape:
            raise MetricError(f"automation_metrics: type_labels {lab.shape} does not match {route.shape[0]} results")
        judged = decided & y & (lab >= 0)  # a type error is only defined on true, labelled defects
        type_err = int((judged & (np.asarray(triage_result.type_decision) != lab)).sum())
        out["n_type_auto"] = int(decided.sum())
        out["type_automation_rate"] = float(decided.sum() / abn.sum()) if abn.any() else float("nan")
        out["type_error_rate"], out["type_error_rate_upper"] = rate(type_err, int(judged.sum()))
        full = nor | (abn & decided)
        wrong = (nor & y) | (abn & decided & (~y | (np.asarray(triage_result.type_decision) != lab)))
    else:
        full, wrong = nor | abn, (nor & y) | (abn & ~y)
    out["automation_rate"] = float(full.mean()) if n else float("nan")
    out["error_rate"], out["error_rate_upper"] = rate(int(wrong.sum()), int(full.sum()))
    return out
